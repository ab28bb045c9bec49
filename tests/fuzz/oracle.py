"""The fuzzer's oracle: invariants checked from runtime events and public state only.

Invariants (numbers as reported):

1. Per call: ``task_started`` → ``task_updated``\\* → exactly one ``task_ended``; nothing
   but ``reply_updated`` after ``task_ended``; every started call leaves
   ``runtime.tasks``; ``on_cancel`` hooks run (to completion, before ``task_ended``)
   exactly for calls that were cancelled or timed out.
2. Every non-silent item (later update, final result, follow-up) is queued after it is
   produced and its call's ``reply_updated`` events end in a terminal status;
   ``runtime.settle`` returns while the session is open.
3. When a deferred reply is scheduled: the caller is not speaking, no user turn is
   pending, no tool dispatch of the target is in flight (for a ``when_idle`` reply: no
   speech of the target in flight at all, agent listening), each call's origin is the
   current agent (or closed, under ``forward``); the agent that speaks it holds the
   call's items.
4. No context (each agent's ``chat_ctx``, ``session.history``) holds an item id twice or
   a function call id twice.
5. After close: every pending item reported (dropped), no ``async-tool*`` task alive
   after ``runtime.aclose()``, no reply ``scheduled`` after close, and the session
   can be garbage-collected once the app lets go of it.
6. No sensitive argument value in any log record of ``livekit_async_tools`` (message,
   arguments, extras; under ``lk.pii.*`` keys the values must be redacted).
7. No "Task exception was never retrieved", no "coroutine ... was never awaited", no
   other error reported to the event loop's exception handler.

Q. Questions (``ctx.ask``): every ask ends exactly once: answered (with exactly the
   answer the LLM passed to the one ``answer_question`` for it that succeeded), expired
   (``AskTimeout`` naming its question id, not before its timeout, no answer accepted)
   or stopped with its call; ``answer_question`` for a question already closed when the
   LLM called it is a tool error; a question is put to the caller only while no other
   question of the session is open after being put (one at a time); a question put to
   the caller is spoken or closed (a call never waits for an answer to a question the
   caller was never asked).
T. ``on_timeout="ask"``: an overdue call ends by finishing, by a cancel, or as
   ``timed_out`` once its decision window passed with no extension (not before, and at
   most the hooks' bound later); a successful ``extend_task`` moves its deadline.
H. Handoff from a call's result: the returned agent takes over at most once, only if
   the origin was current when the result was delivered, and then holds the call's
   result pair (``<call_id>_result`` call and output) exactly once.
L. Holding lines (``hold_after``; a line is a follow-up the app and the tools did not
   make, seen in its first ``reply_updated``):

   a. a line's reply is scheduled only while some call whose result the current (the
      speaking) agent will speak has no ``task_ended`` yet: one it started, or one
      forwarded to it (``on_handoff="forward"``, its origin closed);
   b. ... and not while a question is open: a ``ctx.ask`` that has not returned, or an
      overdue call (``on_timeout="ask"``) surely past its deadline and still running,
      within its decision window, with no ``extend_task`` for it on its way;
   c. with ``hold_after`` unset there is no line, and the LLM is never asked for one;
      the LLM is asked for one only while a line's reply is under way (scheduled);
   d. a line is never scheduled (again) once the caller spoke (``user_state``
      ``speaking``, a user message, a user turn the app started) after it was queued:
      not after the caller talked past it, not after the caller cut it off;
   e. no poke (``agent_state_changed``, ``user_state_changed``,
      ``function_tools_executed``, ``task_started``, ``task_ended``: the events that
      start the silence over) at an instant in the ``hold_after`` seconds before a
      line's first event: the line was queued ``hold_after`` after the last of them,
      and any of them later withdraws it (``skipped``) before it is scheduled.

   The oracle cannot see when a line is queued (no event says so). (e) needs none:
   every poke from ``hold_after`` before the queueing to its first event would have
   re-armed the timer or withdrawn it. (d) bounds the queueing by the last poke or
   line end (which also restarts the silence) before the line's first event, plus
   ``hold_after``; it is checked only after that bound, so it judges no speech the
   engine may not have seen. Events at the very instant of a line event are not
   judged (on livekit < 1.5 session handlers run in no set order). (b) is checked
   when the reply is scheduled, where the docs promise it ("no line is said"), not
   only when the line is queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livekit.agents import Agent, llm

from livekit_async_tools import ReplyUpdated, TaskEnded, TaskStarted, TaskUpdated

if TYPE_CHECKING:
    from livekit.agents import AgentSession
    from livekit.agents.voice import SpeechHandle

    from livekit_async_tools import AsyncToolRuntime

TERMINAL = ("delivered", "skipped", "dropped")
HOLD_MARKER = "keep them company"
"""Text of the default ``hold_template``: the instructions of a holding line's reply."""
EPS = 1e-6
HOOKS_WITHIN = 4.0
"""``on_cancel`` hooks taking this long in all must complete before ``task_ended``
(the engine may cut longer ones: they are bounded)."""
_STD_ATTRS = frozenset(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
}


def is_closed(agent: Agent) -> bool:
    """``agent.session`` raises once the agent's activity is closed (public contract)."""
    try:
        agent.session  # noqa: B018
    except RuntimeError:
        return True
    return False


@dataclass(frozen=True)
class Violation:
    """One broken invariant."""

    invariant: str
    message: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.message}"


@dataclass(eq=False)
class Item:
    """A non-silent item the oracle expects a reply event for."""

    name: str
    produced: int  # log index of the event that produced it
    delivery: str


@dataclass(eq=False)
class CallRec:
    call_id: str
    tool: str
    policy: str
    origin: Agent | None
    started: int
    acked: bool = False
    updates: int = 0
    ended: int | None = None
    status: str | None = None
    items: list[Item] = field(default_factory=list)
    replies: list[tuple[int, str]] = field(default_factory=list)
    hooks_registered: int = 0
    hook_seconds: float = 0.0
    hooks_started: int = 0
    hooks_done: int = 0
    hooks_at_end: int = 0
    none_result: bool = False
    follow_up: bool = False
    unsent: int = 0  # non-silent items produced since the last scheduled/dropped reply
    # on_timeout="ask"
    deadline: float | None = None  # when the engine marks it overdue next (virtual time)
    deadline_lo: float | None = None  # the earliest that may be (extension time unknown)
    overdue: int = 0  # overdue items so far
    overdue_open: bool = False  # asked whether to wait, no decision yet
    window_lo: float | None = None  # the decision window ends no earlier than this
    # a result that hands off
    handoff_end: str | None = None
    deliveries: list[tuple[float, bool]] = field(default_factory=list)
    entered: int = 0
    # a holding line (a follow-up the engine made)
    line: bool = False
    queued_by: float = 0.0  # the line was queued no later than this (virtual time)


@dataclass(eq=False)
class AskRec:
    """One ``await ctx.ask(...)``."""

    call_id: str
    question_id: str
    timeout: float | None
    started_at: float
    started: int
    put: bool = False  # the engine put it to the caller (its item is queued)
    spoken: bool = False  # a reply named it
    outcome: str | None = None  # answered / timeout / cancelled / refused
    detail: object = None
    ended_at: float | None = None


@dataclass(eq=False)
class PassRec:
    """An ``answer_question`` / ``extend_task`` / ``cancel_task`` the scripted LLM made."""

    tool: str
    target: str  # question id or call id
    value: object
    decided_at: float
    closed: bool  # the question (or decision) was already closed when the LLM decided
    ok: bool | None = None  # the tool's output: None until known
    output: str = ""
    shared: bool = False  # other tools ran in the same response (the event may be late)


@dataclass(eq=False)
class HandleRec:
    handle: SpeechHandle
    owner: Agent | None
    user_turn: bool = False


class Oracle:
    """Subscribes to a session and its runtime and records violations."""

    def __init__(
        self,
        session: AgentSession[Any],
        runtime: AsyncToolRuntime,
        *,
        policy_of: Callable[[str], str],
        result_delivery: Callable[[str], str],
        none_result: Callable[[str], bool],
        agents: Callable[[], list[Agent]],
        is_task: Callable[[Agent], bool],
        overdue_timeout: Callable[[str], float | None] = lambda _t: None,
        decision_window: float = 60.0,
        job_end: Callable[[str], str | None] = lambda _c: None,
        hold_after: float | None = None,
    ) -> None:
        self.session = session
        self.runtime = runtime
        self._policy_of = policy_of
        self._result_delivery = result_delivery
        self._none_result = none_result
        self._agents = agents
        self._is_task = is_task
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.log: list[str] = []
        self._tick_time, self._tick_start = -1.0, 0  # the first log entry of this instant
        self.violations: list[Violation] = []
        self.calls: dict[str, CallRec] = {}
        self.handles: dict[str, HandleRec] = {}
        self.expected_speaker: dict[str, Agent] = {}
        self.closed = False
        self.livekit_stuck = False
        self.secrets: set[str] = set()
        self.agent_names: dict[int, str] = {}
        self.orphans: dict[str, list[tuple[int, str]]] = {}
        self.voice_turn_until: float | None = None
        self.voice_turn_text = ""
        self.on_event: Callable[[str], None] = lambda _name: None
        self._overdue_timeout = overdue_timeout
        self.decision_window = decision_window
        self._job_end = job_end
        self.asks: dict[str, AskRec] = {}
        self.queue: list[AskRec] = []
        self.passes: list[PassRec] = []
        self.pass_by_call: dict[str, PassRec] = {}
        self.hold_after = hold_after
        self.making_follow_up = 0  # the app or a tool is inside follow_up()
        self.pokes: list[float] = []  # times of events that start the silence over
        self.line_ends: list[float] = []  # times a line's reply reached a final status
        self.caller_spoke: list[float] = []  # times the caller spoke (or a turn began)
        for name in ("task_started", "task_updated", "task_ended", "reply_updated"):
            runtime.on(name, getattr(self, f"_on_{name}"))  # type: ignore[call-overload]
        session.on("speech_created", self._on_speech_created)
        session.on("agent_state_changed", self._on_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("conversation_item_added", self._on_item)
        session.on("close", self._on_close)
        session.on("function_tools_executed", self._on_tools_executed)

    # -- bookkeeping ----------------------------------------------------------------------

    def note(self, text: str) -> int:
        now = self.loop.time()
        if now != self._tick_time:
            self._tick_time, self._tick_start = now, len(self.log)
        self.log.append(f"{now - self.t0:8.3f} {text}")
        return len(self.log) - 1

    def fail(self, invariant: str, message: str) -> None:
        key = (invariant, message)
        if any((v.invariant, v.message) == key for v in self.violations):
            return
        self.note(f"VIOLATION [{invariant}] {message}")
        self.violations.append(Violation(invariant, message))

    def name(self, agent: Agent | None) -> str:
        if agent is None:
            return "None"
        return self.agent_names.get(id(agent), type(agent).__name__)

    def current(self) -> Agent | None:
        try:
            return self.session.current_agent
        except RuntimeError:
            return None

    # -- runtime events -------------------------------------------------------------------

    def _on_task_started(self, ev: TaskStarted) -> None:
        idx = self.note(f"task_started {ev.call_id} {ev.tool_name}")
        self.pokes.append(self.loop.time())
        if ev.call_id in self.calls:
            self.fail("1", f"task_started twice for {ev.call_id}")
            return
        origin = next((t.origin for t in self.runtime.tasks if t.call_id == ev.call_id), None)
        if origin is None:
            self.fail("1", f"{ev.call_id} started but is not in runtime.tasks")
        self.calls[ev.call_id] = CallRec(
            call_id=ev.call_id,
            tool=ev.tool_name,
            policy=self._policy_of(ev.tool_name),
            origin=origin,
            started=idx,
        )
        rec = self.calls[ev.call_id]
        timeout = self._overdue_timeout(ev.tool_name)
        if timeout is not None:
            rec.deadline = rec.deadline_lo = self.loop.time() + timeout
            self._arm_deadline(rec)
        self.on_event("started")

    def _on_task_updated(self, ev: TaskUpdated) -> None:
        idx = self.note(f"task_updated {ev.call_id} {ev.delivery} {ev.message!r}")
        rec = self.calls.get(ev.call_id)
        if rec is None:
            self.fail("1", f"task_updated for {ev.call_id} before task_started")
            return
        if rec.ended is not None:
            self.fail("1", f"task_updated for {ev.call_id} after task_ended")
            return
        if ev.message is None and not rec.acked:
            rec.acked = True  # the automatic acknowledgement
            return
        rec.updates += 1
        if not rec.acked:
            rec.acked = True  # the first update is the ack: the tool output, no item
            return
        if ev.delivery != "silent":
            rec.items.append(Item(f"update_{rec.updates}", idx, ev.delivery))
            rec.unsent += 1
        self.on_event("updated")

    def _on_task_ended(self, ev: TaskEnded) -> None:
        idx = self.note(f"task_ended {ev.call_id} {ev.status} {ev.error!r}")
        self.pokes.append(self.loop.time())
        rec = self.calls.get(ev.call_id)
        if rec is None:
            self.fail("1", f"task_ended for {ev.call_id} before task_started")
            return
        if rec.ended is not None:
            self.fail("1", f"task_ended twice for {ev.call_id}")
            return
        if rec.deadline is not None and ev.status == "timed_out":
            self._flush_overdue()
            self._check_overdue_end(rec)
        rec.ended = idx
        rec.status = ev.status
        rec.hooks_at_end = rec.hooks_done
        rec.handoff_end = self._job_end(ev.call_id)  # the job is known once it ran
        if any(t.call_id == ev.call_id for t in self.runtime.tasks):
            self.fail("1", f"{ev.call_id} still in runtime.tasks at task_ended")
        rec.none_result = ev.status == "succeeded" and self._none_result(ev.call_id)
        # no item for an inline result, a recorded cancellation, or a None result
        if rec.acked and ev.status != "cancelled" and not rec.none_result:
            delivery = self._result_delivery(rec.tool)
            if delivery != "silent":
                rec.items.append(Item("final", idx, delivery))
                rec.unsent += 1
            elif rec.handoff_end is not None:
                rec.unsent += 1  # a silent tool's handoff waits for the gate, unspoken
        self.on_event("ended")

    def add_follow_up(self, follow_up_id: str, origin: Agent | None, policy: str) -> None:
        idx = self.note(f"follow_up {follow_up_id} for {self.name(origin)}")
        rec = CallRec(
            call_id=follow_up_id,
            tool="follow_up",
            policy=policy,
            origin=origin,
            started=idx,
            acked=True,
            follow_up=True,
        )
        rec.replies = self.orphans.pop(follow_up_id, [])
        produced = min([idx, *(i for i, _s in rec.replies)]) - 1
        rec.items.append(Item("follow_up", produced, "when_idle"))
        rec.unsent = 1
        self.calls[follow_up_id] = rec
        self.adopt_lines()

    def adopt_lines(self) -> None:
        """The app's or a tool's ``follow_up()`` returned: the other follow-ups reported
        meanwhile are holding lines (e.g. dropped by a lifecycle check it made)."""
        for cid in [c for c in self.orphans if c.startswith("follow_up_")]:
            replies = self.orphans.pop(cid)
            rec = self._line(cid, replies[0][0], judge=False)
            rec.replies = replies
            if any(s == "scheduled" for _i, s in replies) or replies[-1][1] not in TERMINAL:
                rec.unsent = 0
            if any(s in TERMINAL for _i, s in replies):
                self.line_ends.append(self.loop.time())

    def _on_reply_updated(self, ev: ReplyUpdated) -> None:
        idx = self.note(
            f"reply_updated {','.join(ev.call_ids)} {ev.status} {ev.reason or ''} "
            f"{ev.speech_id or ''}"
        )
        self._flush_overdue()
        for cid in ev.call_ids:
            rec = self.calls.get(cid)
            if (
                rec is not None
                and rec.handoff_end
                and rec.ended is not None
                and (ev.status == "scheduled" or (ev.status == "delivered" and not ev.speech_id))
            ):
                rec.deliveries.append((self.loop.time(), rec.origin is self.current()))
            if rec is None and cid.startswith("follow_up_") and not self.making_follow_up:
                rec = self._line(cid, idx, judge=True)
            if rec is None:
                # a follow-up's id is known once follow_up() returns
                self.orphans.setdefault(cid, []).append((idx, ev.status))
                continue
            if rec.line and ev.status == "scheduled":
                if rec.origin is None:
                    rec.origin = self.current()  # only its origin may speak it
                self._check_line_scheduled(rec)
            # a cut reply's items are re-delivered, even if other replies of the call
            # were reported since (e.g. an overdue question withdrawn by an extension)
            since = [st for _i, st in reversed(rec.replies)]
            cut = next((st for st in since if st in ("scheduled", "interrupted")), None)
            before = "interrupted" if cut == "interrupted" else None
            rec.replies.append((idx, ev.status))
            if ev.status == "scheduled" and rec.unsent == 0 and before != "interrupted":
                self.fail(
                    "2",
                    f"reply scheduled for {cid} with nothing to speak: its items since the "
                    "last reply are silent (a silent update, a None result or a "
                    "cancellation: recorded, not spoken)",
                )
            if (
                ev.status == "scheduled"
                # a cut reply's items dropped were counted when it was scheduled: items
                # produced since (e.g. the result of a call whose question it carried)
                # are still to be spoken
                or (ev.status == "dropped" and ev.speech_id is None)
                or (ev.status == "delivered" and ev.speech_id is None)
            ):
                rec.unsent = 0  # a bare handoff is delivered without a speech
        if ev.status in TERMINAL and any(
            (r := self.calls.get(c)) is not None and r.line for c in ev.call_ids
        ):
            self.line_ends.append(self.loop.time())
        if ev.status == "scheduled":
            self._check_scheduled(ev)
        elif ev.status == "delivered":
            self._check_delivered(ev)
        if ev.status in ("scheduled", "delivered"):
            self.check_contexts()
            self.on_event(ev.status)

    # -- invariant 3 ----------------------------------------------------------------------

    def _urgent(self, call_ids: tuple[str, ...]) -> bool:
        """True if the reply may carry an ``interrupt`` item (then it may cut the agent)."""
        for cid in call_ids:
            rec = self.calls.get(cid)
            if rec is None:
                continue
            if any(it.delivery == "interrupt" for it in rec.items):
                return True
            if not rec.follow_up and self._result_delivery(rec.tool) == "interrupt":
                return True
        return False

    def _check_scheduled(self, ev: ReplyUpdated) -> None:
        ids = ",".join(ev.call_ids)
        if self.closed:
            self.fail("5", f"reply for {ids} scheduled after the session closed")
        if ev.speech_id is None:
            self.fail("3", f"reply for {ids} scheduled without a speech_id")
            return
        urgent = self._urgent(ev.call_ids)
        current = self.current()
        state = self.session.agent_state
        if self.session.user_state == "speaking":
            self.fail("3", f"reply for {ids} scheduled while the caller speaks")
        elif self.voice_turn_until is not None and self.loop.time() < self.voice_turn_until - 1e-6:
            self.fail(
                "3",
                f"reply for {ids} scheduled while the caller's turn "
                f"{self.voice_turn_text!r} is not committed yet",
            )
        if state == "thinking" or (not urgent and state not in ("listening", "idle")):
            kind = "interrupt" if urgent else "when_idle"
            self.fail("3", f"{kind} reply for {ids} scheduled while the agent is {state}")
        self._check_handles(ids, ev.speech_id, current, urgent)
        speaker: Agent | None = None
        for cid in ev.call_ids:
            rec = self.calls.get(cid)
            if rec is None or rec.origin is None:
                continue
            if rec.origin is current:
                speaker = current
                continue
            closed = is_closed(rec.origin)
            if closed and rec.policy == "forward":
                continue
            why = "closed" if closed else "paused"
            self.fail(
                "3",
                f"reply for {cid} (on_handoff={rec.policy}) scheduled while its origin "
                f"{self.name(rec.origin)} is {why} and {self.name(current)} is current",
            )
        if speaker is not None:
            self.expected_speaker[ev.speech_id] = speaker

    def _check_handles(self, ids: str, speech_id: str, current: Agent | None, urgent: bool) -> None:
        live = [
            h
            for sid, h in self.handles.items()
            if sid != speech_id and not h.handle.done() and not h.handle.interrupted
        ]
        speaking_one = (
            min(live, key=lambda h: self._order(h), default=None)
            if self.session.agent_state == "speaking"
            else None
        )
        for h in live:
            mine = h.owner is not None and (h.owner is current or is_closed(h.owner))
            if mine and _has_calls(h.handle):
                self.fail(
                    "3",
                    f"reply for {ids} scheduled while tool dispatch {h.handle.id} of "
                    f"{self.name(h.owner)} is in flight",
                )
                return
            if not urgent and mine:
                self.fail(
                    "3",
                    f"when_idle reply for {ids} scheduled while speech {h.handle.id} of "
                    f"{self.name(h.owner)} is in flight",
                )
                return
            if h.user_turn and not h.handle.chat_items and h is not speaking_one:
                self.fail(
                    "3", f"reply for {ids} scheduled while user turn {h.handle.id} is unanswered"
                )
                return

    def _order(self, h: HandleRec) -> int:
        return list(self.handles).index(h.handle.id)

    def _check_delivered(self, ev: ReplyUpdated) -> None:
        ids = ",".join(ev.call_ids)
        if ev.speech_id is None and all(
            (r := self.calls.get(c)) is not None
            and r.handoff_end is not None
            and (r.handoff_end == "agent" or self._result_delivery(r.tool) == "silent")
            for c in ev.call_ids
        ):
            # a bare handoff, or one by a silent tool: nothing to say, the agent takes over
            return
        rec_h = self.handles.get(ev.speech_id or "")
        if rec_h is None:
            self.fail("3", f"reply for {ids} delivered by unknown speech {ev.speech_id}")
            return
        said = {
            it.id
            for it in rec_h.handle.chat_items
            if isinstance(it, llm.ChatMessage) and it.role == "assistant"
        }
        holders = [a for a in self._agents() if any(it.id in said for it in a.chat_ctx.items)]
        if not said or not holders:
            self.fail("3", f"delivered reply for {ids} is in no agent's context")
            return
        expected = self.expected_speaker.get(ev.speech_id or "")
        if expected is not None and expected not in holders:
            self.fail(
                "3",
                f"reply for {ids} scheduled for {self.name(expected)} was spoken by "
                f"{', '.join(self.name(a) for a in holders)}",
            )
        for cid in ev.call_ids:
            rec = self.calls.get(cid)
            if rec is None or rec.follow_up:
                continue
            prefixes = (
                f"{cid}_result",
                f"{cid}_progress_",
                f"{cid}_question_",
                f"{cid}_overdue_",
            )
            for agent in holders:
                if not any(
                    isinstance(it, llm.FunctionCallOutput) and it.call_id.startswith(prefixes)
                    for it in agent.chat_ctx.items
                ):
                    self.fail(
                        "3",
                        f"{self.name(agent)} spoke the reply for {cid} without its items "
                        "in its context",
                    )

    # -- invariant 4 ----------------------------------------------------------------------

    def check_contexts(self) -> None:
        contexts: list[tuple[str, list[llm.ChatItem]]] = [
            (self.name(a), list(a.chat_ctx.items)) for a in self._agents()
        ]
        contexts.append(("session.history", list(self.session.history.items)))
        for where, items in contexts:
            seen: set[str] = set()
            calls: set[str] = set()
            for it in items:
                if it.id in seen:
                    self.fail("4", f"{where} holds item id {it.id} twice ({it.type})")
                seen.add(it.id)
                if isinstance(it, llm.FunctionCall):
                    if it.call_id in calls:
                        self.fail("4", f"{where} holds function call {it.call_id} twice")
                    calls.add(it.call_id)

    # -- session events -------------------------------------------------------------------

    def track_user_turn(self, handle: SpeechHandle) -> None:
        rec = self.handles.get(handle.id)
        if rec is not None:
            rec.user_turn = True

    def _on_speech_created(self, ev: Any) -> None:
        handle = ev.speech_handle
        owner = self.current()
        # livekit's own replies to a committed caller turn are not user_initiated
        self.handles[handle.id] = HandleRec(handle, owner, user_turn=not ev.user_initiated)
        self.note(f"speech_created {handle.id} {ev.source} by {self.name(owner)}")

    def _on_state(self, ev: Any) -> None:
        self.note(f"agent_state {ev.old_state} -> {ev.new_state}")
        self.pokes.append(self.loop.time())
        if ev.new_state == "listening":
            self.on_event("listening")

    def _on_user_state(self, ev: Any) -> None:
        self.note(f"user_state {ev.old_state} -> {ev.new_state}")
        self.pokes.append(self.loop.time())
        if ev.new_state == "speaking":
            self.caller_spoke.append(self.loop.time())

    def voice_turn(self, text: str, allowance: float) -> None:
        """The caller stopped speaking after saying ``text``: their turn is pending
        until livekit commits it (a user message), ``allowance`` seconds at most."""
        self.note(f"caller said {text!r}")
        self.voice_turn_until = self.loop.time() + allowance
        self.voice_turn_text = text

    def _on_item(self, ev: Any) -> None:
        it = ev.item
        if isinstance(it, llm.ChatMessage) and it.role == "user":
            self.voice_turn_until = None
            self.caller_spoke.append(self.loop.time())
        text = (getattr(it, "text_content", None) or "")[:60]
        self.note(f"item {getattr(it, 'role', it.type)}: {text!r}")

    def _on_close(self, ev: Any) -> None:
        self.note(f"session close ({getattr(ev, 'reason', '')})")
        self.closed = True

    # -- hooks ----------------------------------------------------------------------------

    def hook_registered(self, call_id: str, seconds: float) -> None:
        if (rec := self.calls.get(call_id)) is not None:
            rec.hooks_registered += 1
            rec.hook_seconds += seconds

    def hook_started(self, call_id: str) -> None:
        self.note(f"on_cancel hook of {call_id} runs")
        if (rec := self.calls.get(call_id)) is not None:
            rec.hooks_started += 1

    def hook_done(self, call_id: str) -> None:
        if (rec := self.calls.get(call_id)) is not None:
            rec.hooks_done += 1

    # -- questions (invariant Q) ----------------------------------------------------------

    def ask_started(
        self, call_id: str, question_id: str, timeout: float | None, queued: bool
    ) -> None:
        idx = self.note(f"ask {question_id} (timeout {timeout})")
        rec = AskRec(call_id, question_id, timeout, self.loop.time(), idx)
        if question_id in self.asks:
            self.fail("Q", f"question id {question_id} asked twice")
        self.asks[question_id] = rec
        if queued:
            self.queue.append(rec)
            self._put_next(idx)

    def _put_next(self, produced: int) -> None:
        """The engine puts the oldest open question to the caller (one at a time)."""
        if not self.queue or self.queue[0].put:
            return
        head = self.queue[0]
        head.put = True
        call = self.calls.get(head.call_id)
        if call is not None:
            call.items.append(Item(head.question_id, produced, "when_idle"))
            call.unsent += 1

    def ask_ended(self, question_id: str, outcome: str, detail: object) -> None:
        self.note(f"ask {question_id} ended: {outcome} {detail!r}")
        rec = self.asks.get(question_id)
        if rec is None:
            return
        if rec.outcome is not None:
            self.fail("Q", f"ask {question_id} ended twice ({rec.outcome}, then {outcome})")
            return
        rec.outcome, rec.detail, rec.ended_at = outcome, detail, self.loop.time()
        if rec in self.queue:
            self.queue.remove(rec)
            # the next question was put inside the engine before this returned: it is
            # produced no later than this ask started
            self._put_next(rec.started)

    def question_spoken(self, question_id: str) -> None:
        """A reply's instructions (the LLM's request) name this question."""
        rec = self.asks.get(question_id)
        if rec is None:
            self.fail("Q", f"a reply names question {question_id}, which no call asked")
            return
        if not rec.spoken:
            self.note(f"question {question_id} put to the caller")
        for other in self.asks.values():
            if other is not rec and other.spoken and other.outcome is None:
                self.fail(
                    "Q",
                    f"question {question_id} put to the caller while question "
                    f"{other.question_id} is open and unanswered",
                )
        rec.spoken = True

    def open_question(self) -> AskRec | None:
        """The question put to the caller last that is still open."""
        spoken = [a for a in self.asks.values() if a.spoken and a.outcome is None]
        return spoken[-1] if spoken else None

    def closed_question(self) -> AskRec | None:
        closed = [a for a in self.asks.values() if a.outcome is not None]
        return closed[-1] if closed else None

    def passed(self, tool: str, target: str, value: object, fc_id: str) -> None:
        """The scripted LLM calls a control tool (``fc_id``) about ``target``."""
        closed = False
        if tool == "answer_question":
            ask = self.asks.get(target)
            closed = ask is not None and ask.outcome is not None
        elif tool in ("extend_task", "cancel_task"):
            rec = self.calls.get(target)
            closed = rec is None or rec.ended is not None or not rec.overdue_open
        rec_p = PassRec(tool, target, value, self.loop.time(), closed)
        self.passes.append(rec_p)
        self.pass_by_call[fc_id] = rec_p
        self.note(f"LLM {tool} {target} {value!r}")

    def _on_tools_executed(self, ev: Any) -> None:
        self.pokes.append(self.loop.time())
        outputs = list(ev.function_call_outputs)
        for i, fc in enumerate(ev.function_calls):
            rec_p = self.pass_by_call.get(fc.call_id)
            out = outputs[i] if i < len(outputs) else None
            if rec_p is None or out is None:
                continue
            rec_p.ok = not out.is_error
            rec_p.output = str(out.output)
            rec_p.shared = len(ev.function_calls) > 1
            self.note(f"{rec_p.tool} {rec_p.target} -> {'ok' if rec_p.ok else 'error'}")
            if rec_p.tool == "extend_task" and rec_p.ok:
                call = self.calls.get(rec_p.target)
                if call is not None and call.overdue_open:
                    rec_p.closed = False  # overdue by the time the tool ran (LLM delay)
                self._extended(rec_p)
            if rec_p.tool == "cancel_task" and not rec_p.ok:
                call = self.calls.get(rec_p.target)
                if (
                    call is not None
                    and not rec_p.closed  # overdue from the LLM's decision to its event
                    and not rec_p.shared
                    and call.ended is None
                    and call.overdue_open
                    and "cannot be cancelled" in rec_p.output
                ):
                    self.fail("T", f"cancel_task refused for overdue call {rec_p.target}")

    def check_asks(self) -> None:
        for ask in self.asks.values():
            qid = ask.question_id
            call = self.calls.get(ask.call_id)
            passes = [p for p in self.passes if p.tool == "answer_question" and p.target == qid]
            ok = [p for p in passes if p.ok]
            if ask.outcome is None:
                if call is not None and call.ended is not None:
                    self.fail("Q", f"ask {qid} never returned, yet its call ended")
                continue
            if ask.outcome == "answered":
                if ask.detail not in [p.value for p in passes]:
                    self.fail("Q", f"ask {qid} returned {ask.detail!r}, which the LLM never passed")
                if len(ok) > 1 or (ok and ok[0].value != ask.detail):
                    self.fail(
                        "Q",
                        f"ask {qid} returned {ask.detail!r}; answer_question accepted "
                        f"{[p.value for p in ok]!r}",
                    )
            elif ask.outcome == "timeout":
                if ask.detail != qid:
                    self.fail("Q", f"AskTimeout of {qid} names question {ask.detail!r}")
                assert ask.ended_at is not None and ask.timeout is not None
                if ask.ended_at - ask.started_at < ask.timeout - 0.01:
                    self.fail(
                        "Q",
                        f"ask {qid} raised AskTimeout after "
                        f"{ask.ended_at - ask.started_at:.2f} s, before its timeout",
                    )
                if ok:
                    self.fail("Q", f"ask {qid} raised AskTimeout, yet answer_question accepted")
            elif ask.outcome == "cancelled" and ok:
                self.note(f"{qid}: answer accepted, then its call stopped before it resumed")
            elif ask.outcome == "refused" and not self.closed and ask.put:
                self.fail("Q", f"ask {qid} raised RuntimeError: {ask.detail}")
            elif ask.outcome == "not_asked" and ok:
                self.fail("Q", f"ask {qid} raised QuestionNotAsked, yet answer_question accepted")
            if len(ok) > 1:
                self.fail("Q", f"answer_question accepted {len(ok)} answers for {qid}")
        for p in self.passes:
            if p.tool == "answer_question" and p.closed and p.ok:
                self.fail("Q", f"answer_question for {p.target}, already closed, succeeded")
            if p.tool == "extend_task" and p.closed and p.ok:
                self.fail("T", f"extend_task for {p.target}, not overdue, succeeded")

    # -- overdue calls (invariant T) -------------------------------------------------------

    def _arm_deadline(self, rec: CallRec) -> None:
        assert rec.deadline is not None
        target = rec.deadline
        self.loop.call_at(target, self._deadline_due, rec, target)

    def _deadline_due(self, rec: CallRec, target: float) -> None:
        if rec.deadline == target:
            self._flush_overdue()

    def _flush_overdue(self) -> None:
        """Calls whose deadline passed are overdue now: the engine queued an item."""
        now = self.loop.time()
        for rec in self.calls.values():
            if (
                rec.deadline_lo is None
                or rec.ended is not None
                or rec.overdue_open
                or rec.deadline_lo > now + 1e-6
            ):
                continue
            rec.overdue += 1
            rec.overdue_open = True
            self.note(f"{rec.call_id} overdue ({rec.overdue})")
            # the engine's timer fired first at this instant: its item (and a reply event
            # for it, e.g. dropped at close) may precede this note
            rec.items.append(Item(f"overdue_{rec.overdue}", self._tick_start - 1, "when_idle"))
            rec.unsent += 1
            assert rec.deadline is not None
            rec.window_lo = rec.deadline_lo + self.decision_window
            limit = rec.deadline + self.decision_window + min(rec.hook_seconds, 6.0) + 1.0
            self.loop.call_at(limit, self._window_due, rec, rec.overdue)

    def _window_due(self, rec: CallRec, n: int) -> None:
        if self.closed or rec.ended is not None or not rec.overdue_open or rec.overdue != n:
            return
        self.fail(
            "T",
            f"overdue call {rec.call_id} still runs {self.decision_window:g} s after its "
            "deadline with no decision",
        )

    def _extended(self, p: PassRec) -> None:
        rec = self.calls.get(p.target)
        if rec is None or rec.deadline is None:
            return
        assert isinstance(p.value, (int, float))
        now = self.loop.time()
        if any(t.call_id == p.target and t.state == "stopping" for t in self.runtime.tasks):
            self.fail("T", f"extend_task accepted for {p.target} while it is being stopped")
            rec.deadline = rec.deadline_lo = None  # it ends as stopped: nothing to time
            return
        rec.overdue_open = False
        rec.deadline = now + p.value
        # the tool ran just before its event, unless other tools of the same response
        # ran after it (then only the LLM's decision bounds it)
        rec.deadline_lo = (p.decided_at if p.shared else now) + p.value
        self._arm_deadline(rec)

    def _check_overdue_end(self, rec: CallRec) -> None:
        now = self.loop.time()
        if not rec.overdue_open:
            self.fail("T", f"{rec.call_id} (on_timeout=ask) timed out without being overdue")
            return
        if rec.window_lo is not None and now < rec.window_lo - 0.01:
            self.fail(
                "T",
                f"{rec.call_id} (on_timeout=ask) timed out "
                f"{rec.window_lo - now:.2f} s before its decision window passed",
            )

    # -- holding lines (invariant L) -------------------------------------------------------

    def _line(self, cid: str, idx: int, *, judge: bool) -> CallRec:
        """A holding line, seen first in the event logged at ``idx`` (now, if ``judge``)."""
        now = self.loop.time()
        rec = CallRec(
            call_id=cid,
            tool="hold",
            policy="cancel",  # the engine queues lines with on_handoff="cancel"
            origin=None,
            started=idx,
            acked=True,
            follow_up=True,
            line=True,
        )
        rec.items.append(Item("line", idx - 1, "when_idle"))
        rec.unsent = 1
        self.calls[cid] = rec
        self.note(f"{cid} is a holding line")
        rec.queued_by = now
        h = self.hold_after
        if h is None:
            self.fail("L", f"holding line {cid} although hold_after is unset")
            return rec
        if not judge:
            return rec
        # (e) every poke from hold_after before the queueing on re-armed the timer, and
        # every one after it withdrew the line: none in the hold_after before now
        recent = [t for t in self.pokes if now - h + EPS < t < now - EPS]
        if recent:
            self.fail(
                "L",
                f"holding line {cid} first reported {now - max(recent):.3f} s after a poke "
                f"(hold_after={h:g})",
            )
        # (d) queued hold_after after the last poke or line end (either restarts the
        # silence), no later than now
        last = max((t for t in (*self.pokes, *self.line_ends) if t < now - EPS), default=None)
        if last is not None:
            rec.queued_by = min(now, last + h)
        return rec

    def _check_line_scheduled(self, rec: CallRec) -> None:
        now = self.loop.time()
        cid = rec.call_id
        current = self.current()
        live = [
            r
            for r in self.calls.values()
            if not r.follow_up
            and r.ended is None
            and r.origin is not None
            and (
                r.origin is current
                # forwarded to the speaking agent: its origin is handed off for good
                or (r.policy == "forward" and is_closed(r.origin))
            )
        ]
        if not live:
            self.fail(
                "L",
                f"holding line {cid} scheduled for {self.name(current)}, none of whose "
                "calls still runs",
            )
        open_now = self._open_questions()
        if open_now:
            self.fail(
                "L", f"holding line {cid} scheduled while a question is open ({','.join(open_now)})"
            )
        spoke = [t for t in self.caller_spoke if rec.queued_by + EPS < t < now - EPS]
        if spoke:
            self.fail(
                "L",
                f"holding line {cid} scheduled {now - max(spoke):.3f} s after the caller "
                f"spoke, which was after the line was queued (by {rec.queued_by - self.t0:.3f})",
            )

    def _open_questions(self) -> list[str]:
        """Questions surely open in the engine now: asks that have not returned, and
        overdue calls surely past their deadline (the latest it may be), running, within
        their decision window, with no extend_task on its way."""
        now = self.loop.time()
        found = [a.question_id for a in self.asks.values() if a.outcome is None]
        running = {t.call_id for t in self.runtime.tasks if t.state == "running"}
        for rec in self.calls.values():
            if (
                rec.overdue_open
                and rec.ended is None
                and rec.call_id in running
                and rec.deadline is not None
                and now > rec.deadline + EPS
                and rec.window_lo is not None
                and now < rec.window_lo - EPS
                and not any(
                    p.tool == "extend_task" and p.target == rec.call_id and p.ok is None
                    for p in self.passes
                )
            ):
                found.append(f"{rec.call_id}_overdue_{rec.overdue}")
        return found

    def line_requested(self) -> None:
        """The LLM was asked for a holding line (the reply's instructions hold the
        rendered ``hold_template``)."""
        self.note("the LLM is asked for a holding line")
        if self.hold_after is None:
            self.fail("L", "the LLM was asked for a holding line although hold_after is unset")
            return
        if not any(
            r.line and r.replies and r.replies[-1][1] == "scheduled" for r in self.calls.values()
        ):
            self.fail("L", "the LLM was asked for a holding line, yet no line's reply is under way")

    def caller_turn(self) -> None:
        """The app started a caller turn (text)."""
        self.caller_spoke.append(self.loop.time())

    # -- handoffs from results (invariant H) -----------------------------------------------

    def handoff_entered(self, call_id: str, agent: Agent) -> None:
        rec = self.calls.get(call_id)
        self.note(f"{self.name(agent)} (returned by {call_id}) takes over")
        if rec is None:
            return
        rec.entered += 1
        if rec.entered > 1:
            self.fail("H", f"the agent returned by {call_id} took over twice")
            return
        if not rec.acked:
            return  # an inline result: livekit hands off itself
        if not rec.deliveries or not rec.deliveries[-1][1]:
            self.fail(
                "H",
                f"the agent returned by {call_id} took over although its origin "
                f"{self.name(rec.origin)} was not current when the result was delivered",
            )
        self.check_result_pair(call_id, agent)

    def check_result_pair(self, call_id: str, agent: Agent) -> None:
        rid = f"{call_id}_result"
        items = list(agent.chat_ctx.items)
        calls = sum(1 for it in items if isinstance(it, llm.FunctionCall) and it.call_id == rid)
        outs = sum(
            1 for it in items if isinstance(it, llm.FunctionCallOutput) and it.call_id == rid
        )
        if (calls, outs) != (1, 1):
            self.fail(
                "H",
                f"the agent returned by {call_id} holds {calls} call(s) and {outs} output(s) "
                f"{rid} (expected one pair)",
            )

    # -- the end --------------------------------------------------------------------------

    def release(self) -> None:
        """Drop every reference to the session, its agents and handles (the records
        of what happened stay), so the run's objects can be collected."""
        self.session = None  # type: ignore[assignment]
        self.runtime = None  # type: ignore[assignment]
        self.handles.clear()
        self.expected_speaker.clear()
        self._agents = list
        self._policy_of = self._result_delivery = str
        self._none_result = self._is_task = bool
        self._overdue_timeout = self._job_end = lambda _x: None
        for rec in self.calls.values():
            rec.origin = None
        self.agent_names.clear()
        self.on_event = lambda _name: None

    def check_items(self, invariant: str, *, settled: bool) -> None:
        """Every non-silent item was queued and its call's replies end terminal."""
        for cid in self.orphans:
            self.fail("1", f"reply_updated for {cid}, which no call or follow-up has")
        for rec in self.calls.values():
            if not rec.items:
                continue
            what = "follow-up" if rec.follow_up else "call"
            for item in rec.items:
                if not any(i > item.produced and s != "interrupted" for i, s in rec.replies):
                    self.fail(
                        invariant,
                        f"{what} {rec.call_id}: item {item.name} never got a reply event"
                        + (" (after settle)" if settled else " (after close)"),
                    )
            if rec.replies and rec.replies[-1][1] not in TERMINAL:
                self.fail(
                    invariant,
                    f"{what} {rec.call_id}: last reply status is {rec.replies[-1][1]}"
                    + (" after settle" if settled else " after close"),
                )

    def check_calls(self, *, final: bool) -> None:
        for rec in self.calls.values():
            if rec.follow_up:
                continue
            if rec.ended is None:
                if final:
                    self.fail("1", f"{rec.call_id} never got task_ended")
                continue
            stopped = rec.status in ("cancelled", "timed_out")
            # hooks run to completion unless they exceed the engine's bound in all
            # (DESIGN section 7: "hooks run to completion, shielded, bounded")
            within_bound = rec.hook_seconds <= HOOKS_WITHIN
            if stopped and within_bound and rec.hooks_at_end < rec.hooks_registered:
                self.fail(
                    "1",
                    f"{rec.call_id} {rec.status}: {rec.hooks_at_end} of "
                    f"{rec.hooks_registered} on_cancel hooks completed before task_ended",
                )
            if not stopped and rec.hooks_started:
                self.fail("1", f"{rec.call_id} {rec.status}: its on_cancel hooks ran")
        live = [t.call_id for t in self.runtime.tasks]
        if live:
            self.fail("1", f"calls still in runtime.tasks: {live}")

    def check_records(self, records: list[logging.LogRecord]) -> None:
        for record in records:
            try:
                text = record.getMessage()
            except Exception:
                text = f"{record.msg} {record.args}"
            plain = [text]
            pii = []
            for key, value in record.__dict__.items():
                if key in _STD_ATTRS:
                    continue
                (pii if key.startswith("lk.pii.") else plain).append(repr(value))
            for secret in self.secrets:
                if any(secret in s for s in plain):
                    self.fail("6", f"secret argument in log record {record.msg!r}")
                elif any(secret in s for s in pii):
                    self.fail("6", f"unredacted secret under lk.pii.* in {record.msg!r}")


def _has_calls(handle: SpeechHandle) -> bool:
    """The speech dispatched function calls (it is a tool dispatch until it is done)."""
    return any(isinstance(it, llm.FunctionCall) for it in handle.chat_items)
