"""Per-request backend choice and ejection with exponential backoff."""

from __future__ import annotations

import collections
import random

from services.gateway.balancer import (
    BackendState,
    Health,
    choose,
    least_loaded,
    power_of_two,
)


def healthy(address: str, inflight: int = 0) -> BackendState:
    return BackendState(address, inflight=inflight, health=Health.HEALTHY)


def test_least_loaded_takes_the_fewest_in_flight_and_spreads_ties() -> None:
    rng = random.Random(1)
    backends = [healthy("a", 3), healthy("b", 1), healthy("c", 2)]
    assert least_loaded(backends, rng).address == "b"
    tied = [healthy("a"), healthy("b"), healthy("c")]
    counts = collections.Counter(least_loaded(tied, rng).address for _ in range(3000))
    assert set(counts) == {"a", "b", "c"} and min(counts.values()) > 800


def test_power_of_two_prefers_the_less_loaded_of_its_pair() -> None:
    rng = random.Random(2)
    backends = [healthy("idle", 0), healthy("busy", 10), healthy("busier", 20)]
    counts = collections.Counter(power_of_two(backends, rng).address for _ in range(3000))
    # "busier" never wins a pair; "idle" wins every pair it is drawn in (2 of 3).
    assert counts["busier"] == 0
    assert 1800 < counts["idle"] < 2200
    assert power_of_two([healthy("only")], rng).address == "only"


def test_choose_skips_unhealthy_and_tried_backends() -> None:
    rng = random.Random(3)
    backends = [
        healthy("a"),
        healthy("b"),
        BackendState("c", health=Health.EJECTED),
        BackendState("d", health=Health.PROBING),
    ]
    assert {choose(backends, {"a"}, least_loaded, rng).address for _ in range(50)} == {"b"}  # type: ignore[union-attr]
    # Every healthy one was tried: any healthy one may be tried again.
    assert choose(backends, {"a", "b"}, least_loaded, rng).address in {"a", "b"}  # type: ignore[union-attr]
    assert choose(backends[2:], set(), least_loaded, rng) is None


def test_ejection_backs_off_exponentially_up_to_the_cap() -> None:
    state = healthy("a")
    backoffs = [state.eject(100.0, 1.0, 30.0) for _ in range(7)]
    assert backoffs == [1, 2, 4, 8, 16, 30, 30]
    assert state.health is Health.EJECTED and state.ejected_until == 130.0
    assert not state.probe_due(129.9) and state.probe_due(130.0)


def test_a_probe_decides_return_and_a_success_resets_the_backoff() -> None:
    state = healthy("a")
    state.eject(0.0, 1.0, 30.0)
    state.probed(False, 1.0, 1.0, 30.0)  # still down: ejected for 2 s now
    assert (state.health, state.ejected_until) == (Health.EJECTED, 3.0)
    state.probed(True, 3.0, 1.0, 30.0)
    assert state.health is Health.HEALTHY and state.failures == 2
    state.succeeded()
    assert state.failures == 0 and state.served == 1
    assert state.eject(10.0, 1.0, 30.0) == 1.0
    assert BackendState("new").probe_due(0.0)  # new backends are checked first


def test_choose_takes_only_backends_with_the_model_version_ready() -> None:
    rng = random.Random(4)
    a, b, quiet = healthy("a"), healthy("b"), healthy("quiet")
    a.catalog([("pair", "1", "READY"), ("pair", "2", "LOADING"), ("cnn", "1", "READY")], 1.0)
    b.catalog([("pair", "1", "READY"), ("pair", "2", "READY")], 1.0)
    backends = [a, b, quiet]  # `quiet` has no RepositoryIndex: it is asked about anything
    assert {choose(backends, set(), least_loaded, rng, "pair", 2).address for _ in range(50)} == {  # type: ignore[union-attr]
        "b",
        "quiet",
    }
    assert choose([a, b], set(), least_loaded, rng, "cnn", None).address == "a"  # type: ignore[union-attr]
    assert choose([a, b], set(), least_loaded, rng, "nope", None) is None
    # A model that stops serving on one backend leaves its other models there.
    a.unready("cnn", None)
    assert choose([a, b], set(), least_loaded, rng, "cnn", None) is None
    assert a.serves("pair", 1) and a.catalog_wanted and a.health is Health.HEALTHY
    b.unready("pair", 2)
    assert not b.serves("pair", 2) and b.serves("pair", 1)
    assert set(a.known or ()) == {"pair", "cnn"}
