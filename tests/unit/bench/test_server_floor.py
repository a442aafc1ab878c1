"""The server-floor bench's pure parts: the gRPC framing, the ASGI app's messages, the
medians and ratios, the table, the port line. No server is started here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from tools.bench.server_floor import LISTENING, Figures, Row, servers, summarize, table
from tools.bench.server_floor_app import PAYLOAD, app, grpc_frame


def figures(server_cpu_us: float, calls_per_s: float = 1000.0, errors: int = 0) -> Figures:
    return Figures(1000, errors, calls_per_s, server_cpu_us, client_cpu_us=2 * server_cpu_us)


def test_grpc_frame_is_flag_then_big_endian_length() -> None:
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert grpc_frame(bytes(300))[:5] == b"\x00\x00\x00\x01\x2c"
    assert grpc_frame(b"") == bytes(5)


async def test_app_reads_the_body_and_answers_with_trailers() -> None:
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"x" * 5, "more_body": True},
        {"type": "http.request", "body": b"y", "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "http"}, receive, send)
    assert incoming == []
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.trailers",
    ]
    assert sent[0]["trailers"] is True
    assert (b"content-type", b"application/grpc") in sent[0]["headers"]
    assert sent[1]["body"] == b"\x00\x00\x00\x00\x40" + PAYLOAD
    assert sent[2]["headers"] == [(b"grpc-status", b"0")]


def test_summarize_takes_medians_sums_errors_and_divides_by_grpc_aio() -> None:
    runs = {
        "grpc.aio": {1: [figures(300), figures(310), figures(290)], 16: [figures(100)]},
        "pyvoy": {
            1: [figures(150, 900, 1), figures(600, 800), figures(140, 700, 2)],
            16: [figures(50), figures(30)],
        },
    }
    rows = {(r.server, r.c): r for r in summarize(runs)}
    assert [(r.server, r.c) for r in summarize(runs)] == [
        ("grpc.aio", 1),
        ("pyvoy", 1),
        ("grpc.aio", 16),
        ("pyvoy", 16),
    ]
    pyvoy = rows["pyvoy", 1]
    assert (pyvoy.server_cpu_us, pyvoy.client_cpu_us, pyvoy.calls_per_s) == (150, 300, 800)
    assert (pyvoy.errors, pyvoy.rounds) == (3, 3)
    assert pyvoy.ratio == pytest.approx(0.5)
    assert rows["grpc.aio", 1].ratio == pytest.approx(1.0)
    assert rows["pyvoy", 16].server_cpu_us == 40
    assert rows["pyvoy", 16].ratio == pytest.approx(0.4)


def test_summarize_without_grpc_aio_has_no_ratio() -> None:
    (row,) = summarize({"grpclib": {1: [figures(280)]}})
    assert row.ratio is None
    assert "| grpclib | 1 | 1000 | 280 | 560 | 0 | – |" in table([row])


def test_table_rows() -> None:
    row = Row("hypercorn", 16, 3, 3456.7, 289.4, 120.6, 2, 1.914)
    lines = table([row])
    assert lines[0].startswith("| server | c | calls/s | server CPU µs/call |")
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2] == "| hypercorn | 16 | 3457 | 289 | 121 | 2 | 1.91 |"


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("pyvoy listening on 127.0.0.1:40123", 40123),
        ("[INFO] Running on http://127.0.0.1:39999 (CTRL + C to quit)", 39999),
        ("listening on 127.0.0.1:8001\n", 8001),
    ],
)
def test_listening_line_gives_the_port(line: str, port: int) -> None:
    match = LISTENING.search(f"some start-up noise\n{line}")
    assert match is not None and int(match.group(1)) == port


def test_servers_run_from_the_venv_and_hypercorns_config_resolves() -> None:
    chosen = {s.name: s.command for s in servers(Path("/venv"))}
    assert list(chosen) == ["grpc.aio", "grpclib", "pyvoy", "hypercorn"]
    assert all(command[0].startswith("/venv/bin/") for command in chosen.values())
    hypercorn = chosen["hypercorn"]
    config = hypercorn[hypercorn.index("--config") + 1].removeprefix("python:")
    module, name = config.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name).keep_alive_max_requests > 10**6
    assert "127.0.0.1:0" in hypercorn
