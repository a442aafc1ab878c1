"""The version every service reports in ServerMetadata: the installed `maas` distribution's."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def server_version() -> str:
    """The installed maas version, or 0.0.0 when running from a source tree."""
    try:
        return metadata.version("maas")
    except metadata.PackageNotFoundError:
        return "0.0.0"
