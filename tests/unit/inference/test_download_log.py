"""A large download from the registry logs its progress; a small one stays quiet."""

from __future__ import annotations

import logging

import pytest

from services.inference.registry_source import DownloadLog


def test_large_download_logs_each_quarter_and_the_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.inference.registry_source")
    log = DownloadLog("smollm2", 1, 64 << 20)
    for _ in range(64):
        log.update(1 << 20)
    log.done()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(": ")[1].split(" of")[0] for line in lines[:3]] == [
        "downloaded 25%",
        "downloaded 50%",
        "downloaded 75%",
    ]
    assert "downloaded 64.0 MiB in" in lines[3] and "MiB/s" in lines[3]
    assert len(lines) == 4


def test_small_download_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.inference.registry_source")
    log = DownloadLog("digits", 1, 100_000)
    log.update(100_000)
    log.done()
    assert caplog.records == []
