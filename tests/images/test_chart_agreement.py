"""The chart and the image agree: every container the Helm chart renders (for each value
set `make helm-check` renders) runs its command line in the image, and the ports, env
names, data paths and user the chart uses are the image's.

The GPU value sets' inference containers name the -gpu image; they are run against the
CPU image here, since both images install the same programs (the GPU one differs only in
its onnxruntime wheels), and the GPU image can only run where there is a GPU.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.helm_chart import get_helm
from tests.images import chart_checks as checks
from tests.images.chart_containers import CHART, ChartContainer, Mount, all_containers
from tests.images.chart_docker import ImageRunner, image_env, inspect_config


def _fail(problems: list[str]) -> None:
    assert not problems, f"{len(problems)} disagreement(s):\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def chart() -> list[ChartContainer]:
    found = all_containers(get_helm())
    assert found, "the chart rendered no containers"
    missing = [c.where for c in found if not c.argv]
    assert not missing, f"containers without a command (the image's default would run): {missing}"
    return found


@pytest.fixture(scope="module")
def defaults(chart: list[ChartContainer]) -> list[ChartContainer]:
    """The containers of the chart's default values alone."""
    return [c for c in chart if c.value_set == "values.yaml"]


@pytest.fixture(scope="module")
def config(docker: str, image: str) -> dict[str, Any]:
    return inspect_config(docker, image)


@pytest.fixture(scope="module")
def runner(docker: str, image: str, tmp_path_factory: pytest.TempPathFactory) -> ImageRunner:
    workdir = tmp_path_factory.mktemp("chart-agreement")
    workdir.chmod(0o755)  # the image's user reads the ConfigMap files under it
    return ImageRunner(docker, image, workdir)


@pytest.fixture(scope="module")
def seed_model_path() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    path: str = values["seed"]["model"]["path"]
    return path


@pytest.fixture(scope="module")
def facts(
    runner: ImageRunner, chart: list[ChartContainer], config: dict[str, Any], seed_model_path: str
) -> dict[str, Any]:
    """What image_probe.py reads in the image: its programs' settings, the paths' stat."""
    programs = sorted({c.program for c in chart if not c.program.startswith("/")})
    paths = {m.path for c in chart for m in c.data_mounts()}
    paths |= {image_env(config).get(name, "/") for name in checks.PATH_ENVS}
    paths.add(seed_model_path)
    flags = ["--network", "host", "--read-only", "--user", config["User"], "--tmpfs", "/tmp"]
    proc = runner.probe(flags, "facts", json.dumps(programs), json.dumps(sorted(paths)))
    assert proc.returncode == 0, f"image_probe.py facts failed in the image:\n{proc.stderr}"
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def distinct(containers: list[ChartContainer], with_env: bool) -> Iterator[ChartContainer]:
    """One container per distinct command line (and env), so each runs once."""
    seen = set()
    for c in containers:
        files = tuple((m.path, m.files) for m in c.mounts if m.files)
        key = (c.argv, c.run_as_user, c.run_as_group, files, c.env if with_env else ())
        if key not in seen:
            seen.add(key)
            yield c


def test_chart_collects_every_pod_template(chart: list[ChartContainer]) -> None:
    """Each value set yields the three services, the seed Job's two and the test Pod's."""
    by_set: dict[str, set[str]] = {}
    for c in chart:
        by_set.setdefault(c.value_set, set()).add(f"{c.workload.split('/')[1]}/{c.name}")
    want = {
        "maas-gateway/gateway",
        "maas-inference/inference",
        "maas-registry/registry",
        "maas-seed/wait-for-registry",
        "maas-seed/register",
        "maas-test/smoke-test",
    }
    _fail([f"[{s}] missing {sorted(want - got)}" for s, got in by_set.items() if not want <= got])
    assert len(by_set) >= 8, f"value sets rendered: {sorted(by_set)}"


def test_every_command_line_runs_with_help(
    runner: ImageRunner, chart: list[ChartContainer]
) -> None:
    """command[0] is the entrypoint, as the user the chart runs it as, and `<argv> --help`
    exits 0: the program is on the image's PATH and accepts how it is called."""
    problems = []
    for c in distinct(chart, with_env=False):
        proc = runner.help(c)
        if proc.returncode != 0 or "usage:" not in proc.stdout:
            problems.append(
                f"{c.where}: {' '.join(c.argv)} --help: exit {proc.returncode}, expected 0 "
                f"with a usage line\n{(proc.stderr or proc.stdout)[-1500:]}"
            )
    _fail(problems)


def test_every_command_line_parses_with_the_charts_env(
    runner: ImageRunner, chart: list[ChartContainer]
) -> None:
    """Each argv (and each service's settings, from the env the chart sets) is accepted as
    the program itself parses it: an unknown flag, a bad value or a refused setting fails."""
    problems = []
    for c in distinct(chart, with_env=True):
        proc = runner.dry_run(c)
        if proc.returncode != 0 or '"parsed"' not in proc.stdout:
            problems.append(
                f"{c.where}: dry run of {' '.join(c.argv)}: exit {proc.returncode}, expected 0\n"
                f"{(proc.stderr or proc.stdout)[-1500:]}"
            )
    _fail(problems)


def test_container_ports_are_exposed(
    defaults: list[ChartContainer], config: dict[str, Any]
) -> None:
    _fail(checks.exposed_port_problems(defaults, config.get("ExposedPorts") or {}))


def test_default_ports_are_the_programs_defaults(
    defaults: list[ChartContainer], facts: dict[str, Any]
) -> None:
    _fail(checks.default_port_problems(defaults, facts["programs"]))


def test_env_names_are_read_by_the_programs(
    chart: list[ChartContainer], facts: dict[str, Any]
) -> None:
    _fail(checks.env_problems(chart, facts["programs"]))


def test_data_paths_agree(
    chart: list[ChartContainer], config: dict[str, Any], facts: dict[str, Any]
) -> None:
    """Data dirs: the chart's env equals the image's, sits on a volume, and the volume's
    mount path is a directory of the image its user may write."""
    uid, _, gid = config["User"].partition(":")
    problems = checks.path_env_problems(chart, image_env(config))
    problems += checks.writable_path_problems(chart, facts["paths"], int(uid), int(gid))
    for name in checks.PATH_ENVS:
        if name not in image_env(config):
            problems.append(f"the image sets no {name} in Config.Env")
    _fail(problems)


def test_seed_model_is_in_the_image(
    chart: list[ChartContainer], facts: dict[str, Any], seed_model_path: str
) -> None:
    _fail(checks.seed_model_problems(seed_model_path, chart, facts["paths"]))


def test_user_is_the_images(
    chart: list[ChartContainer], config: dict[str, Any], facts: dict[str, Any]
) -> None:
    """runAsUser/runAsGroup are the image's USER, and its data dirs are that user's."""
    image_user = config.get("User") or ""
    assert image_user.count(":") == 1, f"image USER {image_user!r}, expected UID:GID"
    problems = checks.user_problems(chart, image_user)
    uid = int(image_user.split(":")[0])
    for name in checks.PATH_ENVS:
        path = image_env(config).get(name, "")
        st = facts["paths"].get(path) or {}
        if st.get("uid") != uid:
            problems.append(
                f"{name}={path!r} owned by {st.get('uid')} in the image, expected {uid}"
            )
    _fail(problems)


# The checks can fail: each is fed one deliberately wrong value.


def _gateway(defaults: list[ChartContainer]) -> ChartContainer:
    (gateway,) = [c for c in defaults if c.name == "gateway"]
    return gateway


def test_checks_report_wrong_values(
    defaults: list[ChartContainer], config: dict[str, Any], facts: dict[str, Any]
) -> None:
    gw = _gateway(defaults)
    (registry,) = [c for c in defaults if c.name == "registry"]
    typo = dataclasses.replace(gw, env=(*gw.env, ("MAAS_GATEWAY_PROT", "8001")))
    problems = checks.env_problems([typo], facts["programs"])
    assert len(problems) == 1 and "MAAS_GATEWAY_PROT" in problems[0], problems

    moved = dataclasses.replace(gw, ports=(("grpc", 8002),))
    problems = checks.default_port_problems([moved], facts["programs"])
    assert any("chart 8002" in p and "default 8001" in p for p in problems), problems
    assert checks.exposed_port_problems([moved], config["ExposedPorts"]), "8002 is not exposed"

    root = dataclasses.replace(gw, run_as_user=0)
    problems = checks.user_problems([root], config["User"])
    assert len(problems) == 1 and "(0, 10001, 10001)" in problems[0], problems

    env = tuple((n, "/data" if n == "MAAS_REGISTRY_DATA_DIR" else v) for n, v in registry.env)
    problems = checks.path_env_problems([dataclasses.replace(registry, env=env)], image_env(config))
    assert any("chart '/data', image '/var/lib/maas/registry'" in p for p in problems), problems

    assert checks.seed_model_problems("/opt/maas/models/nope.onnx", defaults, facts["paths"])

    (smoke,) = [c for c in defaults if c.name == "smoke-test"]
    typo = dataclasses.replace(smoke, env=(("MAAS_APIKEY", None),))
    problems = checks.env_problems([typo], facts["programs"])
    assert len(problems) == 1 and "MAAS_APIKEY" in problems[0], problems

    opt = Mount("/opt/maas", "data", "emptyDir", False)
    paths = {
        **facts["paths"],
        "/opt/maas": {"exists": True, "dir": True, "uid": 0, "gid": 0, "mode": 0o755},
    }
    problems = checks.writable_path_problems(
        [dataclasses.replace(gw, mounts=(opt,))], paths, 10001, 10001
    )
    assert len(problems) == 1 and "owned by 0:0" in problems[0], problems


def test_runs_report_wrong_command_lines(
    runner: ImageRunner, defaults: list[ChartContainer]
) -> None:
    """A flag the program lacks, and a setting it refuses, fail the dry run; an unknown
    program fails --help."""
    (seed,) = [c for c in defaults if c.name == "register"]
    proc = runner.dry_run(dataclasses.replace(seed, argv=(*seed.argv, "--registy", "x:1")))
    assert proc.returncode != 0 and "--registy" in proc.stderr, proc

    gw = _gateway(defaults)
    bad_port = tuple((n, "80o1" if n == "MAAS_GATEWAY_PORT" else v) for n, v in gw.env)
    proc = runner.dry_run(dataclasses.replace(gw, env=bad_port))
    assert proc.returncode != 0 and "80o1" in proc.stderr, proc

    proc = runner.help(dataclasses.replace(gw, argv=("maas-gatewy",)))
    assert proc.returncode != 0, proc
