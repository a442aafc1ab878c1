"""Register a built model directory (`config.yaml` + `1/`) in the registry, every file.

A text model's version is more than model.onnx: its external weights, tokenizer,
chat template and labels travel with it, so inference finds them beside the model.
The directory's config.yaml becomes the version's serving config.
"""

from __future__ import annotations

from pathlib import Path

from services.common.tls_client import ClientTLS
from services.registry.domain import MAIN_FILE, Version
from services.registry.transfer import LocalFile, plan_upload
from tools.demo.stamp import STAMP_FILE

VERSION_DIR = "1"


def version_files(model_dir: Path) -> list[LocalFile]:
    """model.onnx first, then every other file of `model_dir/1/` (dot-files left out)."""
    version = model_dir / VERSION_DIR
    extra = {
        str(p.relative_to(version)): p
        for p in sorted(version.rglob("*"))
        if p.is_file()
        and p.name != MAIN_FILE
        and not p.name.startswith(".")
        and p.name != STAMP_FILE
    }
    return plan_upload(version / MAIN_FILE, extra)


def check_accepted(model_dir: Path) -> None:
    """Raise InvalidArgument unless the registry's upload check (defaults) passes the version."""
    from services.registry.settings import RegistrySettings
    from services.registry.validation import validate_model

    fields = RegistrySettings.model_fields
    files = version_files(model_dir)
    validate_model(
        model_dir / VERSION_DIR,
        {f.path: f.size_bytes for f in files},
        opset_min=int(fields["opset_min"].default),
        opset_max=int(fields["opset_max"].default),
    )


def upload_model_dir(
    registry: str,
    token: str | None,
    name: str,
    model_dir: Path,
    *,
    aliases: tuple[str, ...] = ("production",),
    description: str = "",
    progress: bool | None = None,
    tls: ClientTLS | None = None,
) -> Version:
    """Upload `model_dir` as a new version of `name`, with a progress bar on a terminal."""
    import asyncio

    from services.common.errors import ServiceError
    from services.registry.client import RegistryClient
    from tools.cli import CliError
    from tools.progress import ProgressBar

    files = version_files(model_dir)
    config = (
        (model_dir / "config.yaml").read_text() if (model_dir / "config.yaml").is_file() else ""
    )
    total = sum(f.size_bytes for f in files)

    async def run() -> Version:
        async with RegistryClient(registry, token, tls=tls) as client:
            bar = ProgressBar(total, f"upload {name}", enabled=progress)
            try:
                version = await client.upload_files(
                    name,
                    files,
                    alias=aliases[0] if aliases else "",
                    config=config,
                    description=description,
                    progress=bar.update,
                )
            finally:
                bar.close()
            for extra in aliases[1:]:
                await client.set_alias(name, extra, version.version)
            return version

    try:
        return asyncio.run(run())
    except ServiceError as exc:
        raise CliError(f"{name}: {exc.status}: {exc.message}") from None
