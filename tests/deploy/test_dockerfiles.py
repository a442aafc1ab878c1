"""The Dockerfile, read without Docker: what it COPYs is in the build context (the
repository root, or made there by `make image-context`) and let through by the root
.dockerignore, the classic builder can build it, the image stages are non-root and
labelled, and the GPU image's onnxruntime-gpu is the `gpu` extra's, on no CUDA base.
tests/images builds and runs the image for real (`make test-images`)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helm_chart import ROOT

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# The stages that end up in an image; the others only build what they copy.
IMAGE_STAGES = ("runtime-base", "cpu", "gpu")
# What `make image-context` writes into the build context before a build.
GENERATED = "build/image/"


@dataclass
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """A FROM and the instructions under it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages of a Dockerfile."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        keyword, _, rest = text.partition(" ")
        ins = Instruction(keyword.upper(), rest.strip(), start)
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if ins.keyword == "ARG":
                key, _, default = ins.args.partition("=")
                args[key] = default.strip('"')
        else:
            stages[-1].instructions.append(ins)
    return args, stages


def copy_sources(ins: Instruction) -> list[str]:
    """The source paths of a COPY/ADD from the build context ([] for --from= copies)."""
    if ins.args.startswith("["):
        words = json.loads(ins.args)
    else:
        words = shlex.split(ins.args)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return []
    paths = [w for w in words if not w.startswith("--")]
    assert len(paths) >= 2, f"line {ins.line}: COPY needs a source and a destination"
    return paths[:-1]


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def stages_by_name() -> dict[str, Stage]:
    _, stages = parse(DOCKERFILE)
    return {s.name: s for s in stages if s.name}


def stage_text(stage: Stage) -> str:
    return "\n".join(f"{i.keyword} {i.args}" for i in stage.instructions)


def test_one_dockerfile_a_target_per_image() -> None:
    assert sorted(p.name for p in DOCKERFILE.parent.iterdir()) == ["Dockerfile"]
    stages = stages_by_name()
    assert {"cpu", "gpu"} <= set(stages)
    # The classic builder builds every stage before its target: the GPU venv comes
    # after the CPU image, so `--target cpu` never installs the CUDA wheels.
    order = list(stages)
    assert order.index("cpu") < order.index("venv-gpu") < order.index("gpu")


def test_the_classic_builder_can_build_it() -> None:
    """No BuildKit frontend (`# syntax=`), no BuildKit-only flags, no per-Dockerfile
    .dockerignore (the classic builder reads only the context root's)."""
    text = DOCKERFILE.read_text()
    assert not [line for line in text.splitlines() if line.startswith("# syntax=")]
    for flag in ("--mount=", "--chmod=", "--link", "<<"):
        assert flag not in text, flag
    assert not list(DOCKERFILE.parent.glob("*.dockerignore"))
    makefile = (ROOT / "Makefile").read_text()
    assert "DOCKER_BUILDKIT=0" in makefile and "--network host" in makefile
    assert "-f deploy/docker/Dockerfile" in makefile
    for target in ("cpu", "gpu"):
        assert f"--target {target}" in makefile


def test_copy_sources_exist_in_the_build_context() -> None:
    makefile = (ROOT / "Makefile").read_text()
    missing, checked = [], 0
    for stage in parse(DOCKERFILE)[1]:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(ins):
                checked += 1
                if source.startswith(GENERATED):
                    # Made by `make image-context`, not in the repository.
                    name = source.removeprefix(GENERATED).rstrip("/")
                    if f"$(IMAGE_CONTEXT)/{name}" not in makefile:
                        missing.append(f"{ins.line}: {source} (not made by image-context)")
                elif not list(ROOT.glob(source.rstrip("/"))):
                    missing.append(f"{ins.line}: {source}")
    assert checked, "no COPY from the build context at all?"
    assert not missing, "COPY sources missing from the context:\n" + "\n".join(missing)


def test_root_dockerignore_lets_every_copy_source_through() -> None:
    ignore = ROOT / ".dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing, then allow"

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    for stage in parse(DOCKERFILE)[1]:
        for ins in stage.instructions:
            if ins.keyword in ("COPY", "ADD"):
                for source in copy_sources(ins):
                    assert included(source.rstrip("/")), f".dockerignore drops {source}"
    for heavy in (".venv", ".bench", ".git", ".data", "bench", "tests"):
        assert not included(heavy), heavy
    # The stubs come from the host's `make proto`, so they go into the context.
    assert included("services/_proto")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_image_is_small_non_root_and_labelled(target: str) -> None:
    args, _ = parse(DOCKERFILE)
    stages = stages_by_name()
    image = stages[target]
    assert image.base == "runtime-base"
    text = stage_text(image)
    labels = stage_text(stages["runtime-base"]) + "\n" + text
    (user,) = [i.args for i in image.instructions if i.keyword == "USER"]
    assert user == "10001:10001", f"the chart's runAsUser/runAsGroup, got {user!r}"
    for label in ("title", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels, label
    assert 'org.opencontainers.image.title="maas' in text, "each image its own title"
    assert "HEALTHCHECK" not in text, "Kubernetes probes do that"
    # No build tools in what the image holds: they stay in the venv stages.
    for name in IMAGE_STAGES:
        held = stage_text(stages[name])
        for tool in (
            "grpcio-tools",
            "apt-get install",
            "make proto",
            "gcc",
            "torch",
            "pip install",
        ):
            assert tool not in held, f"{tool} in {name}"
    # The demo model for the seed Job (values.yaml seed.model.path).
    assert "/opt/maas/models/digits.onnx" in stage_text(stages["runtime-base"])
    # The base image pinned: an explicit version tag, never latest.
    base = args["BASE_IMAGE"]
    assert re.search(r":\d[\w.-]*$", base), f"unpinned base {base}"


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_gpu_image_takes_cuda_from_the_gpu_extra_not_a_cuda_base() -> None:
    """onnxruntime-gpu 1.31+ (CUDA 13 + cuDNN 9; what onnxruntime-genai-cuda needs) with
    CUDA and cuDNN from its own nvidia wheels, the `gpu` extra's one pin. A mismatch
    loads no CUDA provider and ORT quietly runs on the CPU, hence REQUIRE_CUDA."""
    _, all_stages = parse(DOCKERFILE)
    assert not [s.base for s in all_stages if "nvidia/cuda" in s.base]
    assert "nvidia/cuda" not in DOCKERFILE.read_text()
    stages = stages_by_name()
    venv = stage_text(stages["venv-gpu"])
    assert '"/src[gpu,' in venv and "onnxruntime==" not in venv
    extra = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"onnxruntime-gpu\[cuda,cudnn\]==(\d+\.\d+\.\d+)"', extra)
    assert pin, "the gpu extra pins onnxruntime-gpu with its cuda,cudnn extras"
    assert version_tuple(pin.group(1))[:2] >= (1, 31), pin.group(1)
    gpu = stage_text(stages["gpu"])
    assert "MAAS_INFERENCE_REQUIRE_CUDA=true" in gpu
    assert "COPY --from=venv-gpu" in gpu
    assert "MAAS_INFERENCE_REQUIRE_CUDA" not in stage_text(stages["cpu"])


def test_gpu_extra_pins_the_cuda_wheels_exactly() -> None:
    """onnxruntime-gpu's own extras ask for any CUDA 13.x and cuDNN 9.x (~=): the extra
    pins each nvidia wheel to the set the GPU image was built with, one major each."""
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "gpu"
    ]
    pins = dict(
        (m.group(1), m.group(2))
        for m in (re.fullmatch(r"(nvidia-[\w-]+)==([\d.]+)", d) for d in gpu)
        if m
    )
    majors = {"nvidia-cuda-runtime": 13, "nvidia-cuda-nvrtc": 13, "nvidia-cudnn-cu13": 9}
    for name, major in majors.items():
        assert name in pins, f"{name} is not pinned (==) in the gpu extra"
        assert version_tuple(pins[name])[0] == major, (name, pins[name])
    for name in ("nvidia-cublas", "nvidia-cufft", "nvidia-curand", "nvidia-nvjitlink"):
        assert name in pins, f"{name} is not pinned (==) in the gpu extra"
