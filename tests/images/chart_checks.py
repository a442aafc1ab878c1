"""The chart-versus-image comparisons, as functions from what was collected (the chart's
containers, the image's config, what image_probe.py read in the image) to a list of
problems, each naming the chart's value and the image's: the tests assert the list is
empty, and feed them wrong values to show that each one can fail."""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tests.images.chart_containers import ChartContainer

MAAS_ENV = re.compile(r"MAAS_[A-Z0-9_]+")
# containerPort name -> the settings field that is that port's default.
PORT_FIELDS = {"grpc": "port", "metrics": "metrics_port", "http": "http_port"}
# Data dirs the image sets in Config.Env and the chart sets again on its volumes.
PATH_ENVS = ("MAAS_REGISTRY_DATA_DIR", "MAAS_INFERENCE_CACHE_DIR")

Facts = Mapping[str, Any]


def spelled_env_names(source: str) -> set[str]:
    """MAAS_* string constants a script spells out (the env names it can read)."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and MAAS_ENV.fullmatch(node.value)
    }


def script_source(c: ChartContainer) -> str | None:
    """The text of the ConfigMap script a `python /path.py` container runs, if mounted."""
    for mount in c.mounts:
        for name, text in mount.files:
            if f"{mount.path.rstrip('/')}/{name}" == c.program:
                return text
    return None


def env_names_read(c: ChartContainer, programs: Facts) -> set[str] | None:
    """The MAAS_* names the container's program reads, or None when unknown."""
    if c.program in programs:
        return set(programs[c.program]["env"])
    source = script_source(c)
    return spelled_env_names(source) if source is not None else None


def env_problems(containers: Iterable[ChartContainer], programs: Facts) -> list[str]:
    """MAAS_* env names the chart sets that the container's program does not read."""
    problems = []
    for c in containers:
        if "error" in programs.get(c.program, {}):
            problems.append(
                f"{c.where}: {c.program!r} fails in the image: {programs[c.program]['error']}"
            )
            continue
        known = env_names_read(c, programs)
        if known is None:
            problems.append(f"{c.where}: no env names known for program {c.program!r}")
            continue
        for name, _ in c.env:
            if name.startswith("MAAS_") and name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {near[0]}? " if near else ""
                problems.append(
                    f"{c.where}: env {name} is read by no setting of {c.program!r}; "
                    f"{hint}expected one of {sorted(known)}"
                )
    return problems


def exposed_port_problems(
    containers: Iterable[ChartContainer], exposed: Iterable[str]
) -> list[str]:
    """containerPorts the image does not EXPOSE."""
    ports = set(exposed)
    return [
        f"{c.where}: containerPort {name}={port} is not EXPOSEd by the image; "
        f"image exposes {sorted(ports)}"
        for c in containers
        for name, port in c.ports
        if f"{port}/tcp" not in ports
    ]


def default_port_problems(containers: Iterable[ChartContainer], programs: Facts) -> list[str]:
    """containerPorts (and their MAAS_*_PORT env) unlike the program's own defaults."""
    problems = []
    for c in containers:
        defaults = programs.get(c.program, {}).get("defaults", {})
        env = dict(c.env)
        settings = programs.get(c.program, {}).get("settings")
        for name, port in c.ports:
            field = PORT_FIELDS.get(name)
            if field is None or field not in defaults:
                problems.append(f"{c.where}: port {name!r} has no default in {settings}")
                continue
            if defaults[field] != port:
                problems.append(
                    f"{c.where}: containerPort {name}: chart {port}, "
                    f"image's {settings}.{field} default {defaults[field]}"
                )
            env_name = f"{programs[c.program]['prefix']}{field.upper()}"
            if env_name in env and env[env_name] != str(port):
                problems.append(
                    f"{c.where}: {env_name}={env[env_name]} but containerPort {name}={port}"
                )
    return problems


def path_env_problems(
    containers: Iterable[ChartContainer], env_in_image: Mapping[str, str]
) -> list[str]:
    """Data-dir env values unlike the image's, or not on a writable data volume."""
    problems = []
    for c in containers:
        env = dict(c.env)
        mounted = {m.path.rstrip("/") for m in c.data_mounts()}
        for name in PATH_ENVS:
            if name not in env:
                continue
            if env[name] != env_in_image.get(name):
                problems.append(
                    f"{c.where}: {name}: chart {env[name]!r}, image {env_in_image.get(name)!r}"
                )
            if (env[name] or "").rstrip("/") not in mounted:
                problems.append(
                    f"{c.where}: {name}={env[name]!r} is on no data volume "
                    f"(the root is read-only); data mounts {sorted(mounted)}"
                )
    return problems


def writable_path_problems(
    containers: Iterable[ChartContainer], paths: Facts, uid: int, gid: int
) -> list[str]:
    """Data mount paths missing from the image, or not writable by the chart's user."""
    problems = []
    for c in containers:
        for mount in c.data_mounts():
            st = paths.get(mount.path)
            if st is None or not st["exists"] or not st["dir"]:
                problems.append(
                    f"{c.where}: data mount {mount.path} is not a directory in the image ({st})"
                )
                continue
            world_writable = st["mode"] & 0o1002 == 0o1002  # /tmp: sticky and o+w
            if st["uid"] != uid and not world_writable:
                problems.append(
                    f"{c.where}: {mount.path} owned by {st['uid']}:{st['gid']} mode "
                    f"{st['mode']:o} in the image; expected owner {uid}:{gid}"
                )
    return problems


def user_problems(containers: Iterable[ChartContainer], image_user: str) -> list[str]:
    """runAsUser/runAsGroup/fsGroup unlike the image's USER."""
    user, _, group = image_user.partition(":")
    problems = []
    for c in containers:
        got = (c.run_as_user, c.run_as_group, c.fs_group)
        want = (int(user), int(group), int(group))
        if got != want:
            problems.append(
                f"{c.where}: runAsUser/runAsGroup/fsGroup {got}, image USER {image_user} "
                f"means {want}"
            )
    return problems


def seed_model_problems(
    model_path: str, containers: Iterable[ChartContainer], paths: Facts
) -> list[str]:
    """The seed Job's model (values seed.model.path): used by the chart, a file in the image."""
    problems = []
    seeds = [c for c in containers if c.workload.startswith("Job/") and not c.init]
    if not any(model_path in c.argv for c in seeds):
        problems.append(
            f"no seed Job container registers {model_path!r}: {[c.argv for c in seeds]}"
        )
    st = paths.get(model_path) or {}
    if not (st.get("file") and st.get("size")):
        problems.append(f"seed model {model_path!r} is not a non-empty file in the image: {st}")
    return problems
