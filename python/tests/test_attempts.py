"""The shared attempt-policy vectors (tests/vectors/attempt_policy.txt at the repository root),
through ``Balancer.attempts``, ``Attempts.pick`` and ``Attempts.decide``; and the adapters'
use of the engine's budget."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

import sidekick

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "attempt_policy.txt"


def _cases() -> List[Tuple[str, List[str]]]:
    cases = []
    for line in VECTORS.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        assert len(fields) >= 8, f"case {fields[0]}: {len(fields)} fields, need 8 or more"
        cases.append((fields[0], fields))
    assert cases, "no vector found"
    return cases


CASES = _cases()


def test_vectors_are_many() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("fields", [f for _, f in CASES], ids=[n for n, _ in CASES])
def test_attempt_policy_vector(fields: List[str]) -> None:
    name, site, max_attempts, budget, method, key, replayable = fields[:7]
    options = {"health_check": False, "max_attempts": int(max_attempts)}
    if budget == "exhausted":
        options["retry_budget"] = (0.0, 0)
    balancer = sidekick.Balancer(site, **options)
    attempts = balancer.attempts(method, key == "1", replayable == "1")
    lease = attempts.pick()
    for i, step in enumerate(fields[7:], 1):
        lhs, want = step.split("=", 1)
        word, intact = lhs.split("/", 1)
        outcome = int(word) if word.isdigit() else word
        assert lease is not None, f"{name}: step {i}: no lease left"
        decision, reason, nxt = attempts.decide(lease, outcome, intact=intact == "1")
        got = "done" if decision == "done" else f"{decision}:{reason}"
        assert got == want, f"{name}: step {i}"
        lease = None
        if decision == "retry":
            assert nxt is not None and nxt.id not in attempts.tried
            lease = nxt
        elif decision == "done":
            assert nxt is not None and not nxt.finished
            assert nxt.finish(outcome)
        else:
            assert nxt is None
    assert lease is None, f"{name}: the steps left a retry open"
    assert attempts.count == len(fields) - 7


def test_decide_refuses_a_finished_lease_and_a_bad_outcome() -> None:
    balancer = sidekick.Balancer("http://127.0.0.1:{9001...9002}", health_check=False)
    attempts = balancer.attempts("GET")
    lease = attempts.pick()
    with pytest.raises(sidekick.ConfigError, match="outcome"):
        attempts.decide(lease, "exploded")
    lease.finish(200)
    with pytest.raises(sidekick.ConfigError, match="already finished"):
        attempts.decide(lease, 200)
