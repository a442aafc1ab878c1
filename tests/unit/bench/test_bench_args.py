"""`maas bench` flags that shape what the servers it starts run."""

from __future__ import annotations

import argparse

import pytest

from tools.bench import add_arguments, plan_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_model_config_keys_reach_the_plan() -> None:
    plan = plan_from_args(parse("--model-config", "{inline_run_us: 0, instances: 2}"))
    assert plan.model_config == {"inline_run_us": 0, "instances": 2}
    assert plan_from_args(parse()).model_config == {}


@pytest.mark.parametrize("text", ["[1, 2]", "just words", "{unclosed: "])
def test_model_config_that_is_no_mapping_is_refused(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--model-config", text)
    assert exited.value.code == 2
    assert "--model-config" in capsys.readouterr().err
