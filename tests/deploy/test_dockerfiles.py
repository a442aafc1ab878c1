"""The Dockerfiles, read without Docker: what they COPY exists in the build context (the
repository root), the runtime stage is non-root and labelled, and the GPU image's CUDA,
cuDNN and onnxruntime-gpu versions belong together."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helm_chart import ROOT

DOCKER_DIR = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))


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


def test_there_is_a_cpu_and_a_gpu_image() -> None:
    assert {p.name for p in DOCKERFILES} == {"cpu.Dockerfile", "gpu.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    missing = []
    checked = 0
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(ins):
                checked += 1
                if not list(ROOT.glob(source.rstrip("/"))):
                    missing.append(f"{dockerfile.name}:{ins.line}: {source}")
    assert checked, "no COPY from the build context at all?"
    assert not missing, "COPY sources missing from the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerignore_lets_every_copy_source_through(dockerfile: Path) -> None:
    """BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile (an allow-list)."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
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

    _, stages = parse(dockerfile)
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword in ("COPY", "ADD"):
                for source in copy_sources(ins):
                    assert included(source.rstrip("/")), f"{ignore.name} drops {source}"
    assert not included(".venv") and not included(".git") and not included("services/_proto")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_is_small_non_root_and_labelled(dockerfile: Path) -> None:
    args, stages = parse(dockerfile)
    assert len(stages) >= 3, "multi-stage: build stages, then the runtime"
    runtime = stages[-1]
    text = "\n".join(f"{i.keyword} {i.args}" for i in runtime.instructions)

    (user,) = [i.args for i in runtime.instructions if i.keyword == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"numeric non-root USER, got {user!r}"
    assert user == "10001:10001", "the chart's runAsUser/runAsGroup"
    for label in ("title", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text, label
    # No build tools at run time: they stay in the build stages.
    for tool in ("grpcio-tools", "apt-get install", "make proto", "gcc", "torch"):
        assert tool not in text, f"{tool} in the runtime stage"
    # The demo model for the seed Job (values.yaml seed.model.path).
    assert "/opt/maas/models/digits.onnx" in text
    # Base images pinned: an explicit version tag, never latest.
    for stage in stages:
        image = resolve(stage.base, args)
        if stage.base.startswith("${") or ":" in image:
            assert re.search(r":\d[\w.-]*$", image), f"unpinned base {image}"
            assert not image.endswith(":latest")


def test_stubs_are_made_by_make_proto_in_a_build_stage() -> None:
    for dockerfile in DOCKERFILES:
        _, stages = parse(dockerfile)
        (source,) = [s for s in stages if s.name == "source"]
        runs = [i.args for i in source.instructions if i.keyword == "RUN"]
        assert any("make proto" in r for r in runs), dockerfile.name
        assert any("grpcio-tools==" in r for r in runs), dockerfile.name


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_gpu_versions_belong_together() -> None:
    """One pairing end to end: onnxruntime-gpu 1.31+ (CUDA 13 + cuDNN 9; what
    onnxruntime-genai-cuda needs) with CUDA and cuDNN from its own nvidia wheels, the
    same pin as the `gpu` extra, on a CUDA 13 base that only checks the driver. A
    mismatch loads no CUDA provider and ORT quietly runs on the CPU."""
    path = DOCKER_DIR / "gpu.Dockerfile"
    args, stages = parse(path)
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    assert cuda, f"a CUDA base image, got {args['CUDA_IMAGE']}"
    text = path.read_text()
    ort = re.search(r"ARG ORT_GPU_VERSION=(\S+)", text)
    assert ort, "onnxruntime-gpu pinned"
    assert cuda.group(1) == "13" and version_tuple(ort.group(1))[:2] >= (1, 31), ort.group(1)
    assert "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}" in text
    extra = (ROOT / "pyproject.toml").read_text()
    assert f'"onnxruntime-gpu[cuda,cudnn]=={ort.group(1)}"' in extra
    assert stages[-1].base == "${CUDA_IMAGE}"
    runtime = "\n".join(i.args for i in stages[-1].instructions)
    assert "MAAS_INFERENCE_REQUIRE_CUDA=true" in runtime
    assert "maas[gpu" in text


def test_makefile_builds_these_dockerfiles() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for dockerfile in DOCKERFILES:
        assert f"-f deploy/docker/{dockerfile.name}" in makefile
