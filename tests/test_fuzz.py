"""The interleaving fuzzer (tests/fuzz) in the test suite: a bounded hypothesis run
with a fixed seed and one derived from today's date, and checks that the oracle
notices a gate that opens too early and holding lines that break their rules.

Each example is a random plan run in a real text- or voice-mode `AgentSession` on
a virtual clock; a violated invariant fails the test with the minimal plan
hypothesis found (a ready-to-paste ``Plan(...)``) and its event log. Longer runs:
``make fuzz`` (see ``python -m tests.fuzz --help``).

``FUZZ_TEST_SECONDS`` sets the generation budget per seed (default 28 s); shrinking
a failure gets at most ``FUZZ_SHRINK_SECONDS`` more (default 15 s).
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from livekit_async_tools import _holding, gate

from .fuzz.harness import Outcome, run_plan
from .fuzz.plan import Plan, plans, random_plan

GENERATE_SECONDS = float(os.environ.get("FUZZ_TEST_SECONDS", "28"))
SHRINK_SECONDS = float(os.environ.get("FUZZ_SHRINK_SECONDS", "15"))
FIXED_SEED = 20_240_601


def _today() -> int:
    return int(datetime.date.today().strftime("%Y%m%d"))


def _fuzz(seed_value: int) -> int:
    """Run hypothesis over plans until the time budget; returns the examples run.

    Past the generation budget new plans pass without running, so hypothesis
    finishes its quota quickly; past the shrink budget only plans already seen
    failing run again, so the minimal failure found so far is the one reported
    (and replays deterministically).
    """
    start = time.monotonic()
    failing: set[str] = set()
    first_failure: list[float] = []
    runs = [0]

    @settings(
        # about what the budget allows at 20 runs/s; examples past the budget pass
        # at once, but hypothesis still draws them (about 10 ms each)
        max_examples=int(GENERATE_SECONDS * 20),
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @seed(seed_value)
    @given(plan=plans())
    def check(plan: Plan) -> None:
        key = repr(plan)
        now = time.monotonic()
        if key not in failing:
            if not first_failure and now - start > GENERATE_SECONDS:
                return
            if first_failure and now - first_failure[0] > SHRINK_SECONDS:
                return
        outcome = run_plan(plan)
        runs[0] += 1
        if outcome.violations:
            failing.add(key)
            if not first_failure:
                first_failure.append(now)
            raise AssertionError(
                f"invariants {', '.join(outcome.invariants)} violated "
                f"(seed {seed_value}, after {runs[0]} runs)\n{outcome.report()}"
            )

    check()
    return runs[0]


@pytest.mark.parametrize("seed_value", [FIXED_SEED, _today()], ids=["fixed-seed", "date-seed"])
def test_fuzz_invariants(seed_value: int) -> None:
    runs = _fuzz(seed_value)
    assert runs > 0


def _first_caught(
    monkeypatch: pytest.MonkeyPatch, verdict: str, budget: int
) -> tuple[int, Outcome] | None:
    """The first seed whose plan violates invariant 3 with ``Gate.<verdict>`` always
    true but not with the real gate."""
    always: Callable[..., bool] = lambda *_a, **_k: True  # noqa: E731
    for s in range(budget):
        plan = random_plan(s)
        with monkeypatch.context() as m:
            m.setattr(gate.Gate, verdict, always)
            opened = run_plan(plan)
        if "3" in opened.invariants and "3" not in run_plan(plan).invariants:
            return s, opened
    return None


@pytest.mark.parametrize("verdict", ["quiet", "may_cut_in"])
def test_oracle_sees_a_gate_that_opens_too_early(
    monkeypatch: pytest.MonkeyPatch, verdict: str
) -> None:
    assert hasattr(gate.Gate, verdict), f"Gate.{verdict} is gone: update this test"
    caught = _first_caught(monkeypatch, verdict, budget=300)
    assert caught is not None, (
        f"with Gate.{verdict} always true, 300 plans showed no new violation of invariant 3"
    )
    _seed, outcome = caught
    assert any(v.invariant == "3" for v in outcome.violations)


def _never_asking(self: Any, *args: Any, **kwargs: Any) -> None:
    """`Holding.__init__` with a question check that always says no question is open."""
    bound = inspect.signature(_REAL_HOLDING_INIT).bind(self, *args, **kwargs)
    bound.arguments["asking"] = lambda: False
    _REAL_HOLDING_INIT(*bound.args, **bound.kwargs)


def _poke_without_withdrawal(self: Any) -> None:
    """`Holding.poke` that starts the silence over but leaves a queued line in place."""
    if self._services.options.hold_after is None or self._closed:
        return
    self._arm()


_REAL_HOLDING_INIT = _holding.Holding.__init__
_HOLDING_BREAKS: dict[str, tuple[str, Callable[..., Any]]] = {
    "question-check": ("__init__", _never_asking),
    "withdrawal": ("poke", _poke_without_withdrawal),
}


@pytest.mark.parametrize("broken", sorted(_HOLDING_BREAKS))
def test_oracle_sees_a_holding_line_that_breaks_its_rules(
    monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """Invariant L can fail: with `Holding`'s question check always saying no (lines
    while a question is open), or its pokes no longer withdrawing a queued line (lines
    after the caller spoke, too soon after a poke, after their calls ended), some plan
    of the first few hundred shows a violation of L the real engine does not."""
    name, fake = _HOLDING_BREAKS[broken]
    assert "asking" in inspect.signature(_REAL_HOLDING_INIT).parameters
    assert hasattr(_holding.Holding, "poke") and hasattr(_holding.Holding, "_arm")
    budget = 400
    for s in range(budget):
        plan = random_plan(s)
        if plan.hold_after is None:
            continue
        with monkeypatch.context() as m:
            m.setattr(_holding.Holding, name, fake)
            broken_run = run_plan(plan)
        if "L" in broken_run.invariants and "L" not in run_plan(plan).invariants:
            assert any(v.invariant == "L" for v in broken_run.violations)
            return
    pytest.fail(f"with Holding.{name} broken ({broken}), {budget} plans showed no new L violation")
