"""Run INSIDE the image (mounted read-only, `python /probe/image_probe.py MODE ...`): what
the image's programs read and where its files are, printed as one JSON line.

The image tests never import services.* themselves (they test the image from outside, in
a pytest process that tritonclient shares); this script does, in the image's own venv.

  facts PROGRAMS PATHS   PROGRAMS and PATHS are JSON lists: per console script, the
                         settings class its entry module builds (env names, defaults) or,
                         without one, the MAAS_* names its package's code spells out;
                         per path, its stat.
  dryrun ARGV...         run ARGV as far as its argparse parse and, for a service, its
                         settings from this environment (argv and env as the chart sets
                         them), then stop: a flag, value or env value the program would
                         refuse fails here, with its own message.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import runpy
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

ENV_NAME = re.compile(r"MAAS_[A-Z0-9_]+")
PORT_FIELDS = ("port", "metrics_port", "http_port")


class _Parsed(BaseException):
    """Raised from the patched parse_args: the program got as far as its parsed argv."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


def _entry(name: str) -> importlib.metadata.EntryPoint:
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=name)
    return entry


def _settings_class(module: Any) -> type[BaseSettings] | None:
    """The most derived pydantic-settings class the entry module uses, if any."""
    found = [
        v
        for v in vars(module).values()
        if inspect.isclass(v) and issubclass(v, BaseSettings) and v is not BaseSettings
    ]
    leaves = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if len(leaves) > 1:
        raise SystemExit(f"{module.__name__}: more than one settings class: {leaves}")
    return leaves[0] if leaves else None


def _env_names(cls: type[BaseSettings]) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names = []
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        names.append(alias if isinstance(alias, str) else f"{prefix}{name}")
    return sorted(n.upper() for n in names)


def _spelled_names(package: str) -> list[str]:
    """MAAS_* string constants anywhere in a package's modules (os.environ keys)."""
    spec = importlib.util.find_spec(package)
    assert spec and spec.origin, package
    root = Path(spec.origin).parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.fullmatch(node.value):
                    names.add(node.value)
    return sorted(names)


def program_facts(name: str) -> dict[str, Any]:
    entry = _entry(name)
    module = importlib.import_module(entry.module)
    cls = _settings_class(module)
    if cls is None:
        package = entry.module.split(".")[0]
        return {"entry": entry.value, "settings": None, "env": _spelled_names(package)}
    fields = cls.model_fields
    return {
        "entry": entry.value,
        "settings": f"{cls.__module__}.{cls.__qualname__}",
        "env": _env_names(cls),
        "prefix": cls.model_config.get("env_prefix", "").upper(),
        "defaults": {f: fields[f].default for f in PORT_FIELDS if f in fields},
    }


def path_facts(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return {"exists": False, "error": exc.strerror}
    return {
        "exists": True,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mode": st.st_mode & 0o7777,
        "dir": os.path.isdir(path),
        "file": os.path.isfile(path),
        "size": st.st_size,
    }


def dry_run(argv: list[str]) -> dict[str, Any]:
    """Run argv until argparse has parsed it (then its settings, for a service)."""
    original = argparse.ArgumentParser.parse_args

    def parse_only(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_only  # type: ignore[method-assign]
    cls = None
    try:
        if argv[0] == "python":
            sys.argv = argv[1:]
            # As `python SCRIPT` does: the script's directory first on the import path,
            # where the chart's scripts find their shared module (tls_channel.py).
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
            runpy.run_path(argv[1], run_name="__main__")
        else:
            entry = _entry(argv[0])
            cls = _settings_class(importlib.import_module(entry.module))
            sys.argv = argv
            entry.load()()
    except _Parsed as parsed:
        values = vars(parsed.namespace)
        if cls is not None:
            cls.from_args(values)  # type: ignore[attr-defined]  # ServiceSettings'
        return {"parsed": {k: str(v) for k, v in values.items()}, "settings": cls is not None}
    raise SystemExit(f"{argv}: ran to the end without parsing a command line")


def _or_error(facts: Any, name: str) -> dict[str, Any]:
    """A program's facts, or why its entry module does not import in this image."""
    try:
        result: dict[str, Any] = facts(name)
    except Exception as exc:  # reported to the test, which names the program
        return {"error": f"{type(exc).__name__}: {exc}", "env": [], "defaults": {}}
    return result


def main() -> None:
    mode, *rest = sys.argv[1:]
    if mode == "facts":
        programs, paths = json.loads(rest[0]), json.loads(rest[1])
        out = {
            "programs": {p: _or_error(program_facts, p) for p in programs},
            "paths": {p: path_facts(p) for p in paths},
            "uid": os.getuid(),
            "gid": os.getgid(),
        }
    elif mode == "dryrun":
        out = dry_run(rest)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
