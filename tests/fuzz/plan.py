"""Fuzz plans: what one randomized session does, and how plans are drawn.

A `Plan` is plain data with a ``repr`` that is valid Python, so a failing plan
printed by the fuzzer can be pasted back into `tests.fuzz.harness.run_plan`.

The same generator (`draw_plan`) serves hypothesis (`plans()`, with shrinking)
and the CLI (`random_plan`, a seeded `random.Random`, much cheaper per plan).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")

# -- plan data ---------------------------------------------------------------------------

Op = tuple[Any, ...]
"""One step of a job: ``("sleep", s)``, ``("update", delivery)``,
``("follow_up", mode)``, ``("steer",)``, ``("ask", timeout)``: ``await ctx.ask(...)``
(``timeout`` seconds or ``None``)."""

Hook = tuple[str, float]
"""An ``on_cancel`` hook: ``("sync" | "async", seconds the async one takes)``."""

Part = tuple[Any, ...]
"""One part of a scripted LLM response:

- ``("text",)``: a short sentence
- ``("tool", tool_index, job_index, secret, confirm)``: call an async tool
- ``("block", seconds)``: call the ordinary (blocking) tool ``wait_a_bit``
- ``("cancel", action_index, part_index)``: call ``cancel_task`` on the call id
  that part of that action got most recently
- ``("list",)``: call ``get_running_tasks``
- ``("transfer", agent_index)``: hand off by returning that agent from a tool
- ``("task",)``: call ``collect_info``, which awaits an `AgentTask`
- ``("finish",)``: complete the current `AgentTask` from its own tool
- ``("answer", which)``: call ``answer_question`` for the open question put to the
  caller last (``"open"``), a question already closed (``"stale"``), or an unknown id
  (``"bogus"``)
- ``("extend", action_index, part_index, seconds)``: call ``extend_task`` on the call id
  that part of that action got most recently
"""

Step = tuple[Any, ...]
"""One timed app step, ``(at, kind, *args)``:

- ``(at, "user", action)``: ``session.generate_reply(user_input="u<action>")``
- ``(at, "run", action)``: ``session.run(user_input=...)`` (falls back to
  ``generate_reply`` while a run of ours is still going)
- ``(at, "barge", action)``: ``session.interrupt()`` then a user turn
- ``(at, "cancel", action, part)``: ``await runtime.cancel(call id)``
- ``(at, "steer",)`` / ``(at, "follow_up", mode)``: ``runtime.steer`` / ``runtime.follow_up``
- ``(at, "update_agent", agent_index)``: ``session.update_agent(agents[i])``
- ``(at, "complete_task",)``: complete the current `AgentTask` from the app
- ``(at, "close",)``: ``session.aclose()``; the run ends there
- ``(at, "say", action, seconds)``: (voice plans) the caller speaks "u<action>" for
  that long; livekit commits the turn after its endpointing delay
- ``(at, "noise", seconds)``: (voice plans) the caller makes a sound without words
- ``(at, "on", event, delay, (kind, *args))``: from ``at`` on, the next time ``event``
  happens (``"started"``, ``"updated"``, ``"ended"`` for a call, ``"scheduled"``,
  ``"delivered"`` for a deferred reply, ``"listening"`` for the agent), run the
  step ``(kind, *args)`` ``delay`` seconds later: races aimed at the engine's moments
"""


@dataclass(frozen=True)
class ToolDef:
    """Options of one async tool (``t<index>``), as given to ``function_tool``."""

    ack_after: float | None = 1.0
    cancellable: bool = False
    on_duplicate: str = "reject"
    duplicate_scope: str = "name_and_args"
    timeout: float | None = None
    on_handoff: str | None = None
    result_delivery: str = "when_idle"
    on_timeout: str = "cancel"


@dataclass(frozen=True)
class Job:
    """What an async tool call does: ``ops`` in order, then ``end``.

    ``end``: ``"return"`` (a text result), ``"none"`` (returns ``None``),
    ``"tool_error"`` (raises ``ToolError``), ``"error"`` (raises ``RuntimeError``),
    ``"agent"`` (returns a new agent: the session is handed to it when the result is
    delivered), ``"agent_output"`` (returns that agent and a text result).
    """

    ops: tuple[Op, ...] = ()
    end: str = "return"
    hooks: tuple[Hook, ...] = ()


@dataclass(frozen=True)
class Plan:
    """One randomized session."""

    seed: int = 0
    settle_delay: float = 0.05
    max_redeliveries: int = 2
    on_handoff: str = "forward"
    control_tools: str = "auto"
    llm_delay: float = 0.0
    word_time: float = 0.0
    empty_rate: float = 0.0
    n_agents: int = 1
    voice: bool = False
    tools: tuple[ToolDef, ...] = (ToolDef(),)
    jobs: tuple[Job, ...] = (Job(),)
    actions: tuple[tuple[Part, ...], ...] = ((("text",),),)
    steps: tuple[Step, ...] = ()
    decision_window: float = 60.0
    """``AsyncToolOptions.timeout_decision_window``."""
    answer_delay: float | None = None
    """Seconds after the LLM puts a question to the caller until the caller answers
    (the LLM then calls ``answer_question``); ``None``: never by itself (only ``answer``
    parts, and settling, answer)."""
    overdue_choice: str = "wait"
    """What the caller decides when asked whether to keep waiting for an overdue call:
    ``"wait"`` (no decision), ``"extend"``, ``"cancel"``, ``"mixed"`` (either, seeded)."""
    overdue_delay: float = 1.0
    """Seconds after the overdue question until the caller decides."""
    extend_seconds: float = 5.0
    """Seconds each ``extend_task`` of the caller's decision adds."""
    hold_after: float | None = None
    """``AsyncToolOptions.hold_after``: seconds of silence while a call of the current
    agent runs before that agent says a holding line (``None``: never)."""

    def policy(self, tool_index: int) -> str:
        """The effective ``on_handoff`` policy of tool ``tool_index``."""
        return self.tools[tool_index].on_handoff or self.on_handoff


# -- drawing -----------------------------------------------------------------------------


class Draw(Protocol):
    """The few primitive draws the generator needs (hypothesis or `random`)."""

    def int(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[_T]) -> _T: ...

    def flag(self, p: float) -> bool: ...


class RandomDraw:
    """`Draw` on a seeded `random.Random`."""

    def __init__(self, seed: int) -> None:
        self._rnd = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self._rnd.randint(lo, hi)

    def choice(self, options: Sequence[_T]) -> _T:
        return options[self._rnd.randrange(len(options))]

    def flag(self, p: float) -> bool:
        return self._rnd.random() < p


class HypothesisDraw:
    """`Draw` on hypothesis' ``draw``; every draw shrinks towards the first option,
    the low end of a range, and ``False``."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies as st

        self._draw = draw
        self._st = st

    def int(self, lo: int, hi: int) -> int:
        return int(self._draw(self._st.integers(lo, hi)))

    def choice(self, options: Sequence[_T]) -> _T:
        return options[self.int(0, len(options) - 1)]

    def flag(self, p: float) -> bool:
        return self.int(0, 999) >= round((1 - p) * 1000)


DELIVERIES = ("when_idle", "interrupt", "silent")
SLEEPS = (0.1, 0.5, 1.5, 4.0, 12.0)
HOLD_FRACTIONS = (0.1, 0.25, 0.05, 0.5)
"""``hold_after`` as a share of the longest job's sleeps (then kept within 0.5 to 5 s)."""


def _tool_def(d: Draw) -> ToolDef:
    on_duplicate = d.choice(("reject", "allow", "replace", "confirm"))
    timeout = d.choice((None, 2.0, 9.0))
    return ToolDef(
        ack_after=d.choice((1.0, None, 0.2, 3.0)),
        cancellable=on_duplicate == "replace" or d.flag(0.6),
        on_duplicate=on_duplicate,
        duplicate_scope=d.choice(("name_and_args", "name")),
        timeout=timeout,
        on_handoff=d.choice((None, "forward", "hold", "cancel")),
        result_delivery=d.choice(("when_idle", "interrupt", "silent")),
        on_timeout="ask" if timeout is not None and d.flag(0.4) else "cancel",
    )


def _job(d: Draw) -> Job:
    ops: list[Op] = []
    for _ in range(d.int(0, 5)):
        kind = d.choice(("sleep", "update", "sleep", "update", "follow_up", "steer", "ask"))
        if kind == "ask":
            ops.append(("ask", d.choice((None, 3.0, 15.0))))
        elif kind == "sleep":
            ops.append(("sleep", d.choice(SLEEPS)))
        elif kind == "update":
            ops.append(("update", d.choice(DELIVERIES)))
        elif kind == "follow_up":
            ops.append(("follow_up", d.choice(("one_at_a_time", "all"))))
        else:
            ops.append(("steer",))
    end = d.choice(("return", "none", "tool_error", "error", "return"))
    if d.flag(0.1):
        end = d.choice(("agent_output", "agent"))
    hooks = tuple(
        (d.choice(("sync", "async")), d.choice((0.0, 0.5, 3.0))) for _ in range(d.int(0, 2))
    )
    return Job(ops=tuple(ops), end=end, hooks=hooks)


def _part(d: Draw, n_tools: int, n_jobs: int, n_agents: int, action: int) -> Part:
    kind = d.choice(
        (
            *("tool", "tool", "text", "block", "cancel", "tool", "transfer", "task", "finish"),
            *("list", "answer", "extend"),
        )
    )
    if kind == "tool":
        return ("tool", d.int(0, n_tools - 1), d.int(0, n_jobs - 1), d.flag(0.3), d.flag(0.3))
    if kind == "block":
        return ("block", d.choice((0.2, 1.0, 3.0)))
    if kind == "cancel":
        return ("cancel", d.int(0, max(action - 1, 0)), d.int(0, 2))
    if kind == "transfer":
        return ("transfer", d.int(0, n_agents - 1))
    if kind == "answer":
        return ("answer", d.choice(("open", "stale", "bogus")))
    if kind == "extend":
        return ("extend", d.int(0, max(action - 1, 0)), d.int(0, 2), d.choice((5.0, 0.5, 30.0)))
    return (kind,)


def _action(d: Draw, n_tools: int, n_jobs: int, n_agents: int, index: int) -> tuple[Part, ...]:
    parts: list[Part] = []
    for _ in range(d.int(1, 3)):
        if parts and parts[-1][0] == "tool" and d.flag(0.3):
            parts.append(parts[-1])  # the same call twice in one response
        else:
            parts.append(_part(d, n_tools, n_jobs, n_agents, index))
    return tuple(parts)


_STEP_KINDS = (
    *("user",) * 6,
    "run",
    "barge",
    "barge",
    "cancel",
    "steer",
    "follow_up",
    "update_agent",
    "update_agent",
    "complete_task",
)


_VOICE_STEP_KINDS = (*_STEP_KINDS, *("say",) * 6, "noise", "noise")


TRIGGER_EVENTS = ("ended", "scheduled", "updated", "started", "delivered", "listening")
_TRIGGERED_KINDS = (
    "user",
    "barge",
    "cancel",
    "update_agent",
    "complete_task",
    "follow_up",
    "steer",
    "close",
)
_VOICE_TRIGGERED_KINDS = (*_TRIGGERED_KINDS, "say", "say", "say", "noise")


def _step(d: Draw, n_actions: int, n_agents: int, voice: bool) -> Step:
    at = d.int(0, 300) / 10
    if d.flag(0.3):
        event = d.choice(TRIGGER_EVENTS)
        delay = d.choice((0.0, 0.02, 0.1, 0.3, 1.0))
        kind = d.choice(_VOICE_TRIGGERED_KINDS if voice else _TRIGGERED_KINDS)
        return (at, "on", event, delay, _args(d, kind, n_actions, n_agents)[1:])
    kind = d.choice(_VOICE_STEP_KINDS if voice else _STEP_KINDS)
    return _args(d, kind, n_actions, n_agents, at)


def _args(d: Draw, kind: str, n_actions: int, n_agents: int, at: float = 0.0) -> Step:
    if kind == "say":
        return (at, kind, d.int(0, n_actions - 1), d.choice((0.6, 0.2, 1.5, 3.0)))
    if kind == "noise":
        return (at, kind, d.choice((0.2, 0.6, 1.5)))
    if kind in ("user", "run", "barge"):
        return (at, kind, d.int(0, n_actions - 1))
    if kind == "cancel":
        return (at, kind, d.int(0, n_actions - 1), d.int(0, 2))
    if kind == "follow_up":
        return (at, kind, d.choice(("one_at_a_time", "all")))
    if kind == "update_agent":
        return (at, kind, d.int(0, n_agents - 1))
    return (at, kind)


def _holding(
    d: Draw,
    jobs: tuple[Job, ...],
    actions: tuple[tuple[Part, ...], ...],
    steps: list[Step],
    voice: bool,
) -> tuple[float | None, tuple[Job, ...]]:
    """``hold_after`` for 30% of plans, and their jobs (``steps`` may get one more).

    A holding line needs a call that runs a while: most of those plans get a long sleep
    in a job some response calls, and a caller turn asking for that response early on.
    ``hold_after`` (0.5 to 5 virtual seconds) is a share of the longest called job's
    sleeps, so lines are said, withdrawn and cut within the plan."""
    if not d.flag(0.3):
        return None, jobs
    calls = [
        (a, part[2] % len(jobs))
        for a, action in enumerate(actions)
        for part in action
        if part[0] == "tool"
    ]
    if calls and d.flag(0.7):
        a, j = d.choice(calls)
        ops = jobs[j].ops
        at = d.int(0, len(ops))
        long = (*ops[:at], ("sleep", d.choice((4.0, 12.0))), *ops[at:])
        jobs = (*jobs[:j], dataclasses.replace(jobs[j], ops=long), *jobs[j + 1 :])
        when = d.int(0, 100) / 10
        steps.append((when, "say", a, 0.6) if voice else (when, d.choice(("user", "run")), a))
    called = sorted({j for _a, j in calls}) or range(len(jobs))
    longest = max(sum(op[1] for op in jobs[j].ops if op[0] == "sleep") for j in called)
    return min(max(round(d.choice(HOLD_FRACTIONS) * longest, 1), 0.5), 5.0), jobs


def draw_plan(d: Draw) -> Plan:
    """Draw one plan."""
    seed = d.int(0, 2**16)
    settle_delay = d.choice((0.05, 0.0, 0.3, 1.0))
    max_redeliveries = d.int(0, 2)
    on_handoff = d.choice(("forward", "hold", "cancel"))
    control_tools = d.choice(("auto", "dynamic", "always", "never"))
    llm_delay = d.choice((0.0, 0.1, 0.5))
    word_time = d.choice((0.0, 0.05, 0.3))
    empty_rate = d.choice((0.0, 0.2, 0.6))
    n_agents = d.int(1, 3)
    voice = d.flag(0.35)
    tools = tuple(_tool_def(d) for _ in range(d.int(1, 4)))
    jobs = tuple(_job(d) for _ in range(d.int(1, 4)))
    n_actions = d.int(1, 8)
    actions = tuple(_action(d, len(tools), len(jobs), n_agents, i) for i in range(n_actions))
    steps = [_step(d, n_actions, n_agents, voice) for _ in range(d.int(1, 10))]
    if d.flag(0.15):
        steps.append((d.int(0, 350) / 10, "close"))
    steps.sort(key=lambda s: s[0])
    decision_window = d.choice((60.0, 5.0, 20.0))
    answer_delay = d.choice((0.5, None, 3.0, 15.0, 0.0))
    overdue_choice = d.choice(("extend", "cancel", "wait", "mixed"))
    overdue_delay = d.choice((1.0, 0.0, 4.0))
    extend_seconds = d.choice((5.0, 1.0, 30.0))
    # drawn last, so a seed's plan without hold_after is what it was before holding
    # lines were fuzzed
    hold_after, jobs = _holding(d, jobs, actions, steps, voice)
    steps.sort(key=lambda s: s[0])
    return Plan(
        seed=seed,
        settle_delay=settle_delay,
        max_redeliveries=max_redeliveries,
        on_handoff=on_handoff,
        control_tools=control_tools,
        llm_delay=llm_delay,
        word_time=word_time,
        empty_rate=empty_rate,
        n_agents=n_agents,
        voice=voice,
        tools=tools,
        jobs=jobs,
        actions=actions,
        steps=tuple(steps),
        decision_window=decision_window,
        answer_delay=answer_delay,
        overdue_choice=overdue_choice,
        overdue_delay=overdue_delay,
        extend_seconds=extend_seconds,
        hold_after=hold_after,
    )


def random_plan(seed: int) -> Plan:
    """The plan drawn from ``random.Random(seed)``."""
    return draw_plan(RandomDraw(seed))


def plans() -> Any:
    """A hypothesis strategy of plans."""
    from hypothesis import strategies as st

    @st.composite
    def _plans(draw: Callable[[Any], Any]) -> Plan:
        return draw_plan(HypothesisDraw(draw))

    return _plans()
