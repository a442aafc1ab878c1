"""The README's curl commands for the gateway's HTTP front door work as printed.

The commands of the README's "### HTTP" and "### OpenAI-compatible API" sections
are read from its bash blocks and run with the real `curl` binary against a system
like `maas up --auth` starts: a registry holding `digits` (the test CNN, same I/O),
`minilm` and `smollm2` with alias `production`, an inference server following it,
and a gateway with an API key. Only `localhost:8000` is rewritten (to the gateway's
bound port), `$KEY` is the key, and a command without an authorization header gets
the one the README says to add under `--auth`; each answer must be 200 with the
field its route answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import StartGateway, backend_address, registry_address
from tests.integration.inference.embedding_models import minilm_dir
from tests.integration.inference.generate_models import smollm2_dir
from tools.demo.upload import version_files

README = Path(__file__).resolve().parents[3] / "README.md"
SECTIONS = ("### HTTP", "### OpenAI-compatible API")
KEY = "key-readme"
AUTH = '-H "authorization: Bearer $KEY"'
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")


def section(text: str, heading: str) -> str:
    """The README's text under `heading`, up to the next heading of any level <= 3."""
    start = text.index(f"\n{heading}\n")
    end = re.search(r"\n#{1,3} ", text[start + len(heading) + 2 :])
    return text[start : start + len(heading) + 2 + (end.start() if end else len(text))]


def commands(text: str) -> list[str]:
    """The curl commands of the bash blocks in `text`: lines joined while a line ends
    in a backslash or a single-quoted string is open."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        current = ""
        for line in block.splitlines():
            current = f"{current}\n{line}" if current else line
            if current.endswith("\\") or current.count("'") % 2:
                continue
            if current.lstrip().startswith("curl "):
                found.append(current)
            current = ""
    return found


def readme_commands() -> list[str]:
    text = README.read_text()
    return [c for heading in SECTIONS for c in commands(section(text, heading))]


def _json(body: str) -> Any:
    return orjson.loads(body)


def _events(body: str) -> list[Any]:
    lines = [line for line in body.splitlines() if line.strip()]
    assert lines and all(line.startswith("data: ") for line in lines), body[:500]
    return [orjson.loads(line[len("data: ") :]) for line in lines]


def _stream_text(body: str) -> None:
    events = _events(body)
    assert len(events) > 1 and all("text_output" in e for e in events)
    assert "".join(e["text_output"] for e in events).strip()


# What each route's answer must hold (the URL's path, the check of the body).
EXPECTED: list[tuple[str, Callable[[str], None]]] = [
    (r"/v2/health/ready$", lambda body: None),
    (r"/v2$", lambda body: _check(_json(body)["name"] == "maas", body)),
    (r"/v2/models/digits$", lambda body: _check(_json(body)["name"] == "digits", body)),
    (r"/versions/production/config$", lambda body: _check("input" in body, body)),
    (r"/v2/models/stats$", lambda body: _check("model_stats" in _json(body), body)),
    (
        r"/v2/repository/index$",
        lambda body: _check("digits" in {r["name"] for r in _json(body)}, body),
    ),
    (
        r"/v2/models/digits/infer$",
        lambda body: _check(len(_json(body)["outputs"][0]["data"]) == 10, body),
    ),
    (
        r"/v2/models/minilm/infer$",
        lambda body: _check(_json(body)["outputs"][0]["shape"] == [1, 384], body),
    ),
    (
        r"/v2/models/smollm2/generate$",
        lambda body: _check("Paris" in _json(body)["text_output"], body),
    ),
    (r"/v2/models/smollm2/generate_stream$", _stream_text),
    (
        r"/v1/chat/completions$",
        lambda body: _check(bool(_json(body)["choices"][0]["message"]["content"]), body),
    ),
]


def _check(ok: bool, body: str) -> None:
    assert ok, body[:1000]


def test_the_readme_has_the_commands_this_test_checks() -> None:
    found = readme_commands()
    urls = [_url(c) for c in found]
    for pattern, _ in EXPECTED:
        assert any(re.search(pattern, u) for u in urls), pattern
    for url in urls:
        assert any(re.search(p, url) for p, _ in EXPECTED), f"no check for {url}"


def _url(command: str) -> str:
    match = re.search(r"localhost:8000(/[^\s'\"]*)", command)
    assert match, command
    return match.group(1)


@pytest.fixture
async def gateway(
    registry: RegistryServer,
    admin: RegistryClient,
    test_models: Path,
    start_following: Callable[..., Awaitable[InferenceServer]],
    start_gateway: StartGateway,
    tmp_path: Path,
) -> GatewayServer:
    await admin.upload("digits", test_models / "cnn" / "1" / "model.onnx", alias="production")
    for name, built in (("minilm", minilm_dir()), ("smollm2", smollm2_dir())):
        config = (built / "config.yaml").read_text()
        await admin.upload_files(name, version_files(built), alias="production", config=config)
    backend = await start_following()
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{id: readme, key: {KEY}}}\n")
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        api_keys_file=str(keys),
    )
    return gateway


async def _run(command: str) -> tuple[int, str]:
    """Run a curl command with bash, quiet but for errors and with its status written
    last (options put first, so a trailing comment stays one); its HTTP status and
    body (headers dropped)."""
    quiet = command.replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        quiet,
        env={**os.environ, "KEY": KEY},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, (command, err.decode())
    text, _, code = out.decode().rpartition("\n")
    if " -i " in command:
        text = text.split("\r\n\r\n", 1)[-1]
    return int(code), text


async def test_readme_curl_commands_work_as_printed(gateway: GatewayServer) -> None:
    port = f"localhost:{gateway.http_port}"
    for model in ("digits", "minilm", "smollm2"):
        ready = f"curl {AUTH} {port}/v2/models/{model}/ready"

        async def is_ready(command: str = ready) -> bool:
            return (await _run(command))[0] == 200

        await _until_async(is_ready)
    for command in readme_commands():
        url = _url(command)
        run = command.replace("localhost:8000", port)
        if "authorization" not in run:
            run = run.replace("curl ", f"curl {AUTH} ", 1)
        status, body = await _run(run)
        assert status == 200, (command, body[:1000])
        for pattern, check in EXPECTED:
            if re.search(pattern, url):
                check(body)


async def _until_async(condition: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    """Poll an async condition until it holds, failing after `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not await condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.1)
