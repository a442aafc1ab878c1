"""Print, as JSON, every message's fields and every service's methods of some modules.

Run as a script in a process of its own, since tritonclient's stubs and ours
cannot share one protobuf descriptor pool.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def _message(m: Any, out: dict[str, Any]) -> None:
    out[m.full_name] = {
        f.name: [
            f.number,
            f.type,
            f.is_repeated,
            (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else "",
        ]
        for f in m.fields
    }
    for nested in m.nested_types:
        _message(nested, out)
    for enum in m.enum_types:
        out[enum.full_name] = {v.name: v.number for v in enum.values}


def describe(module_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in module_names:
        fd = importlib.import_module(name).DESCRIPTOR
        for m in fd.message_types_by_name.values():
            _message(m, out)
        for e in fd.enum_types_by_name.values():
            out[e.full_name] = {v.name: v.number for v in e.values}
        for s in fd.services_by_name.values():
            out[s.full_name] = {
                m.name: [
                    m.input_type.full_name,
                    m.output_type.full_name,
                    m.client_streaming,
                    m.server_streaming,
                ]
                for m in s.methods
            }
    return out


if __name__ == "__main__":
    json.dump(describe(sys.argv[1:]), sys.stdout)
