"""The leak detector of the hostile suite: what counts as internals in a client's message."""

from __future__ import annotations

import pytest

from tools.hostile.leaks import find_leaks


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Unexpected <class 'google.protobuf.message.DecodeError'>: Error parsing", "marker"),
        ("Traceback (most recent call last):\n  boom", "marker"),
        ('  File "/srv/maas/services/inference/convert.py", line 40', "marker"),
        ("KeyError: 'input'", "class name"),
        ("MemoryError", "class name"),
        ("Unable to allocate: DecodeError in field 5", "class name"),
        ("[ONNXRuntimeError] : 1 : FAIL : Load model failed", "class name"),
        ("Load model from /tmp/pytest-1/cache/model.onnx failed", "path"),
        ("import failed in /usr/lib/python3/site-packages/onnx", "path"),
    ],
)
def test_internals_in_a_message_are_found(message: str, kind: str) -> None:
    found = find_leaks(message, ["/tmp/", "site-packages"])
    assert any(f.startswith(kind) for f in found), found


@pytest.mark.parametrize(
    "message",
    [
        "",
        "invalid model name 'digits ': expected [A-Za-z0-9_.-], 1 to 128 characters",
        "model_version: expected a canonical decimal version or an alias, got '01'",
        "Error parsing the request: expected a ModelInferRequest",
        "input 'input': shape [258048, 1, 8, 8]: dimension 0 is over max_batch_size 32",
        "API key 'hostile-limited' may not use model 'digits'",
    ],
)
def test_clear_client_errors_are_not_leaks(message: str) -> None:
    assert find_leaks(message, ["/tmp/", "/srv/maas/data"]) == []


def test_the_data_dir_is_a_leak_wherever_it_appears() -> None:
    found = find_leaks("cannot open /srv/maas/data/blobs/ab/cd", ["/srv/maas/data"])
    assert found == ["path '/srv/maas/data'"]
