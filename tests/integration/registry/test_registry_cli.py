"""`maas models ...` against a live registry process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry.conftest import ADMIN, READER
from tests.servers import ServiceProcess
from tests.unit.registry.registry_onnx import add_model, save, save_external
from tools import cli
from tools.cli import CliError
from tools.models import upload_file


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("registry-cli")
    env = {"MAAS_REGISTRY_ADMIN_TOKEN": ADMIN, "MAAS_REGISTRY_READER_TOKEN": READER}
    proc = ServiceProcess("registry", ["--data-dir", str(work / "data")], work, env=env)
    yield proc
    proc.stop()


def maas(
    capsys: pytest.CaptureFixture[str], live: ServiceProcess, *args: str, token: str = ADMIN
) -> tuple[int, str, str]:
    code = cli.main(["models", *args, "--registry", live.address, "--token", token])
    out, err = capsys.readouterr()
    return code, out, err


def test_register_list_versions_alias_archive_download(
    capsys: pytest.CaptureFixture[str], live: ServiceProcess, tmp_path: Path
) -> None:
    src = save_external(tmp_path / "src", name="net.onnx", location="net.onnx.data")
    config = tmp_path / "model.yaml"
    config.write_text("dynamic_batching:\n  max_batch_size: 8\n")
    code, out, _ = maas(
        capsys,
        live,
        "register",
        "cli-net",
        str(src),
        "--alias",
        "production",
        "--config",
        str(config),
        "--description",
        "a net",
        "--label",
        "team=ml",
    )
    assert code == 0
    assert out.startswith("registered cli-net version 1 (sha256 ")
    assert "cli-net: production -> 1" in out

    code, out, _ = maas(capsys, live, "register", "cli-net", str(src))
    assert (code, out.split("(")[0]) == (0, "registered cli-net version 2 ")

    code, out, _ = maas(capsys, live, "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "LATEST", "ALIASES", "DESCRIPTION"]
    assert any(line.split()[:3] == ["cli-net", "2", "production=1"] for line in lines)

    code, out, _ = maas(capsys, live, "alias", "cli-net", "staging", "2")
    assert out.strip() == "cli-net: staging -> 2"
    code, out, _ = maas(capsys, live, "alias", "cli-net", "staging", "1")
    assert out.strip() == "cli-net: staging -> 1 (was 2)"
    code, out, _ = maas(capsys, live, "archive", "cli-net", "2")
    assert out.strip() == "cli-net version 2 is ARCHIVED"

    code, out, _ = maas(capsys, live, "versions", "cli-net")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:5] == ["VERSION", "STATE", "SIZE", "SHA256", "ALIASES"]
    assert rows[1][0:2] == ["1", "ACTIVE"] and rows[1][5] == "production,staging"
    assert rows[2][0:2] == ["2", "ARCHIVED"]

    out_dir = tmp_path / "download"
    code, out, _ = maas(capsys, live, "download", "cli-net", "production", "-o", str(out_dir))
    assert code == 0 and "downloaded cli-net version 1" in out
    assert (out_dir / "model.onnx").read_bytes() == src.read_bytes()
    data = src.parent / "net.onnx.data"
    assert (out_dir / "net.onnx.data").read_bytes() == data.read_bytes()


def test_register_attaches_more_files_beside_external_data(
    capsys: pytest.CaptureFixture[str], live: ServiceProcess, tmp_path: Path
) -> None:
    """--file adds a file to the version (an explanation background, say) and the
    model's external data is still found."""
    src = save_external(tmp_path / "src", name="net.onnx", location="net.onnx.data")
    background = tmp_path / "rows.npz"
    background.write_bytes(b"background rows")
    notes = tmp_path / "notes.txt"
    notes.write_text("named by its own name")
    code, out, err = maas(
        capsys,
        live,
        "register",
        "cli-files",
        str(src),
        "--file",
        f"background.npz={background}",
        "--file",
        str(notes),
    )
    assert code == 0, err
    assert "4 file(s)" in out, out
    out_dir = tmp_path / "download"
    code, out, _ = maas(capsys, live, "download", "cli-files", "1", "-o", str(out_dir))
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "background.npz",
        "model.onnx",
        "net.onnx.data",
        "notes.txt",
    ]
    assert (out_dir / "background.npz").read_bytes() == b"background rows"
    assert (out_dir / "net.onnx.data").read_bytes() == (src.parent / "net.onnx.data").read_bytes()

    code, _, err = maas(capsys, live, "register", "cli-files", str(src), "--file", "/nope.npz")
    assert code != 0 and "--file /nope.npz: no such file" in err, err


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["versions", "nope"], ADMIN, "maas models: NOT_FOUND: model 'nope' not found"),
        (["list"], "wrong", "maas models: UNAUTHENTICATED: invalid token"),
        (["alias", "x", "production", "1"], READER, "maas models: PERMISSION_DENIED: token"),
        (["register", "x", "/does/not/exist.onnx"], ADMIN, "maas models: /does/not/exist.onnx"),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
    live: ServiceProcess,
    args: list[str],
    token: str,
    message: str,
) -> None:
    code, out, err = maas(capsys, live, *args, token=token)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith(message), err


def test_unreachable_registry(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.main(["models", "list", "--registry", "localhost:1", "--token", "x"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("maas models: UNAVAILABLE: ") and err.count("\n") == 1


def test_upload_file_function(live: ServiceProcess, tmp_path: Path) -> None:
    path = save(add_model(bias=7), tmp_path / "m.onnx")
    version = upload_file(
        live.address,
        ADMIN,
        "fn-model",
        path,
        alias="canary",
        config="instances: 3\n",
        aliases=["staging"],
    )
    assert (version.model, version.version) == ("fn-model", 1)
    assert version.aliases == ("canary", "staging")
    assert version.config == "instances: 3\n"
    with pytest.raises(CliError, match="INVALID_ARGUMENT: invalid model name"):
        upload_file(live.address, ADMIN, "Bad Name", path)
