"""The README's "## Explanations" examples work as printed: its curl commands (the
REST explain route) and its grpcurl command (maas.explain.v1.Explainer through the
gateway's reflection) run with the real binaries against a gateway in front of
inference serving `digits` (the test CNN, same I/O) and the MiniLM demo. Only the
ports are rewritten."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.gateway.conftest import StartGateway, backend_address
from tests.integration.gateway.test_readme_curl import section
from tests.integration.inference.embedding_models import repository_with
from tools.demo import minilm

README = Path(__file__).resolve().parents[3] / "README.md"
HEADING = "## Explanations"
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")


def commands(program: str) -> list[str]:
    """The section's `program` commands, lines joined while a single quote is open."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", section(README.read_text(), HEADING), re.S):
        current = ""
        for line in block.splitlines():
            current = f"{current}\n{line}" if current else line
            if current.endswith("\\") or current.count("'") % 2:
                continue
            if current.lstrip().startswith(f"{program} "):
                found.append(current)
            current = ""
    return found


async def run(command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, (command, err.decode())
    return out.decode()


@pytest.fixture
async def inference(
    test_models: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> InferenceServer:
    root = repository_with(tmp_path / "repository", minilm.CONFIG)
    shutil.copytree(test_models / "cnn", root / "digits")
    return await start_inference_at(root)


def test_the_section_has_the_commands_this_test_checks() -> None:
    urls = [re.findall(r"localhost:8000(\S+)", c) for c in commands("curl")]
    assert urls == [["/v2/models/digits/explain"], ["/v2/models/minilm/explain"]]
    assert len(commands("grpcurl")) == 1


async def test_the_curl_commands_explain_as_printed(
    inference: InferenceServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(backends=backend_address(inference))
    answers = []
    for command in commands("curl"):
        quiet = command.replace("curl ", "curl -sS --fail-with-body ", 1)
        out = await run(quiet.replace("localhost:8000", f"localhost:{gateway.http_port}"))
        answers.append(orjson.loads(out))
    digits, text = answers
    assert digits["method"] == "occlusion" and digits["output"] == "probabilities"
    assert digits["attributions"][0]["name"] == "input"
    assert digits["attributions"][0]["shape"] == [1, 1, 8, 8]
    assert digits["evaluations"] > 0
    tensors = {t["name"]: t for t in text["attributions"]}
    tokens, values = tensors["text.tokens"]["data"], tensors["text"]["data"]
    assert tokens == ["the", "cat", "sat", "on", "the", "mat"]
    assert tokens[values.index(max(values))] == "cat"


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl comes with the dev extra")
async def test_the_grpcurl_command_explains_through_reflection(
    inference: InferenceServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(backends=backend_address(inference))
    (command,) = commands("grpcurl")
    command = command.replace("grpcurl ", f"{GRPCURL} ", 1)
    out = await run(command.replace("localhost:8001", f"localhost:{gateway.grpc.port}"))
    answer = orjson.loads(out)
    assert answer["model_name"] == "digits" and answer["method"] == "occlusion"
    assert answer["attributions"][0]["shape"] == ["1", "1", "8", "8"]
    assert int(answer["evaluations"]) > 0
