"""The smoke run's record: one entry per section (ok, failed or skipped, with why)."""

from __future__ import annotations

import json
import logging
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

_log = logging.getLogger("gpu_smoke")
Status = Literal["ok", "failed", "skipped"]


class Skip(Exception):  # noqa: N818 - a section's outcome, not an error
    """Raised by a section that cannot run here; the message is the reason."""


class Failed(Exception):  # noqa: N818 - a section's outcome
    """Raised by a section whose check did not hold; the message says what."""


@dataclass
class Section:
    name: str
    status: Status
    reason: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    quick: bool
    sections: list[Section] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    host: str = field(default_factory=platform.node)

    def run(self, name: str, section: Callable[[dict[str, Any]], None]) -> Section:
        """Run one section; what it puts in `data` is kept even when it fails."""
        data: dict[str, Any] = {}
        began = time.perf_counter()
        _log.info("== %s", name)
        try:
            section(data)
            status: Status = "ok"
            reason = ""
        except Skip as exc:
            status, reason = "skipped", str(exc)
        except Failed as exc:
            status, reason = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - one section's crash must not end the run
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            _log.error("%s crashed:\n%s", name, traceback.format_exc())
        result = Section(name, status, reason, round(time.perf_counter() - began, 2), data)
        _log.info("%s: %s%s", name, status, f" ({reason})" if reason else "")
        self.sections.append(result)
        return result

    @property
    def failed(self) -> bool:
        return any(s.status == "failed" for s in self.sections)

    def write(self, path: Path) -> None:
        counts = {
            s: sum(1 for x in self.sections if x.status == s) for s in ("ok", "failed", "skipped")
        }
        document = {**asdict(self), "summary": counts}
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
