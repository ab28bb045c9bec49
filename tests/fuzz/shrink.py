"""Minimize a failing plan (for the CLI; the pytest run lets hypothesis shrink).

Greedy passes, repeated while one helps and the time budget lasts: drop steps,
drop action parts / job ops / hooks, drop trailing tools, jobs and actions, reset
plan and tool options to their defaults (``hold_after`` to ``None``: no holding
lines), round ``hold_after`` to whole seconds, shorten sleeps. A candidate is kept if
it still shows a violation with the same signature (invariant + message shape).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from .harness import Outcome, run_plan
from .oracle import Violation
from .plan import Job, Plan, ToolDef

_IDS = re.compile(
    r"\b(c\d+(_question_\d+|_overdue_\d+)?|speech_[0-9a-f]+|follow_up_\d+|[ATR]\d+|\d+(\.\d+)?)\b"
)


def signature(v: Violation) -> str:
    """The violation's class: its invariant and its message with ids and numbers blanked."""
    text = re.sub(r" \(direct referrers: [^)]*\)", "", v.message)
    text = re.sub(r"(?<=\s)'[^']*'", "'…'", text)
    text = _IDS.sub("#", text)
    text = re.sub(r"#(,#)+", "#", text)
    return f"[{v.invariant}] {text[:90]}"


def _replace_at(seq: tuple[Any, ...], i: int, value: Any) -> tuple[Any, ...]:
    return (*seq[:i], value, *seq[i + 1 :])


def _drop_at(seq: tuple[Any, ...], i: int) -> tuple[Any, ...]:
    return (*seq[:i], *seq[i + 1 :])


def _candidates(plan: Plan) -> Iterator[Plan]:
    rep = dataclasses.replace
    # whole steps, last first (later steps often only add noise)
    for i in reversed(range(len(plan.steps))):
        yield rep(plan, steps=_drop_at(plan.steps, i))
    # trailing tools / jobs / actions (indices are taken modulo the count)
    for name in ("tools", "jobs", "actions"):
        seq = getattr(plan, name)
        if len(seq) > 1:
            yield rep(plan, **{name: seq[:-1]})
    if plan.n_agents > 1:
        yield rep(plan, n_agents=plan.n_agents - 1)
    # parts of actions, ops and hooks of jobs
    for a, action in enumerate(plan.actions):
        for p in reversed(range(len(action))):
            if len(action) > 1:
                yield rep(plan, actions=_replace_at(plan.actions, a, _drop_at(action, p)))
    for j, job in enumerate(plan.jobs):
        for o in reversed(range(len(job.ops))):
            yield rep(plan, jobs=_replace_at(plan.jobs, j, rep(job, ops=_drop_at(job.ops, o))))
        for h in reversed(range(len(job.hooks))):
            yield rep(plan, jobs=_replace_at(plan.jobs, j, rep(job, hooks=_drop_at(job.hooks, h))))
        for o, op in enumerate(job.ops):
            if op[0] == "ask" and op[1] is not None:
                untimed = rep(job, ops=_replace_at(job.ops, o, ("ask", None)))
                yield rep(plan, jobs=_replace_at(plan.jobs, j, untimed))
        if job.end != "return":
            yield rep(plan, jobs=_replace_at(plan.jobs, j, rep(job, end="return")))
        for o, op in enumerate(job.ops):
            if op[0] == "sleep" and op[1] > 0.1:
                shorter = rep(job, ops=_replace_at(job.ops, o, ("sleep", 0.1)))
                yield rep(plan, jobs=_replace_at(plan.jobs, j, shorter))
    # options back to their defaults
    default = Plan()
    for f in dataclasses.fields(Plan):
        if f.name in ("tools", "jobs", "actions", "steps", "n_agents"):
            continue
        if getattr(plan, f.name) != getattr(default, f.name):
            yield rep(plan, **{f.name: getattr(default, f.name)})
    base = ToolDef()
    for t, td in enumerate(plan.tools):
        for f in dataclasses.fields(ToolDef):
            value = getattr(base, f.name)
            if getattr(td, f.name) == value:
                continue
            try:
                simpler = rep(td, **{f.name: value})
            except (TypeError, ValueError):
                continue
            if simpler.on_duplicate == "replace" and not simpler.cancellable:
                continue
            if simpler.on_timeout == "ask" and simpler.timeout is None:
                continue
            yield rep(plan, tools=_replace_at(plan.tools, t, simpler))
    # a rounder hold_after
    if plan.hold_after is not None and plan.hold_after > 1.0 and plan.hold_after % 1:
        yield rep(plan, hold_after=float(round(plan.hold_after)))
    # step times earlier (rounded)
    for i, step in enumerate(plan.steps):
        if step[0] >= 1.0 and step[0] != round(step[0]):
            yield rep(plan, steps=_replace_at(plan.steps, i, (float(round(step[0])), *step[1:])))


def shrink(
    plan: Plan,
    target: str,
    *,
    seconds: float = 60.0,
    run: Callable[[Plan], Outcome] = run_plan,
    progress: Callable[[str], None] | None = None,
) -> tuple[Plan, Outcome | None, int]:
    """The smallest plan found (within ``seconds``) that still shows ``target``
    (a `signature`), its outcome, and how many runs it took."""
    deadline = time.monotonic() + seconds
    best, best_outcome, runs = plan, None, 0
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for candidate in _candidates(best):
            if time.monotonic() >= deadline:
                break
            outcome = run(candidate)
            runs += 1
            if any(signature(v) == target for v in outcome.violations):
                best, best_outcome, improved = candidate, outcome, True
                if progress is not None:
                    progress(f"  shrunk: {len(best.steps)} steps, {_size(best)} parts")
                break
    if best_outcome is None:
        best_outcome = run(best)
        runs += 1
    return best, best_outcome, runs


def _size(plan: Plan) -> int:
    return sum(len(a) for a in plan.actions) + sum(len(j.ops) for j in plan.jobs)


def snippet(plan: Plan) -> str:
    """A ready-to-paste reproduction."""
    return (
        "from tests.fuzz.harness import run_plan\n"
        "from tests.fuzz.plan import Job, Plan, ToolDef\n\n"
        f"outcome = run_plan({plan!r})\n"
        "print(outcome.report())\n"
    )


__all__ = ["Job", "shrink", "signature", "snippet"]
