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
        for name in ("task_started", "task_updated", "task_ended", "reply_updated"):
            runtime.on(name, getattr(self, f"_on_{name}"))  # type: ignore[call-overload]
        session.on("speech_created", self._on_speech_created)
        session.on("agent_state_changed", self._on_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("conversation_item_added", self._on_item)
        session.on("close", self._on_close)

    # -- bookkeeping ----------------------------------------------------------------------

    def note(self, text: str) -> int:
        self.log.append(f"{self.loop.time() - self.t0:8.3f} {text}")
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
        rec = self.calls.get(ev.call_id)
        if rec is None:
            self.fail("1", f"task_ended for {ev.call_id} before task_started")
            return
        if rec.ended is not None:
            self.fail("1", f"task_ended twice for {ev.call_id}")
            return
        rec.ended = idx
        rec.status = ev.status
        rec.hooks_at_end = rec.hooks_done
        if any(t.call_id == ev.call_id for t in self.runtime.tasks):
            self.fail("1", f"{ev.call_id} still in runtime.tasks at task_ended")
        rec.none_result = ev.status == "succeeded" and self._none_result(ev.call_id)
        # no item for an inline result, a recorded cancellation, or a None result
        if rec.acked and ev.status != "cancelled" and not rec.none_result:
            delivery = self._result_delivery(rec.tool)
            if delivery != "silent":
                rec.items.append(Item("final", idx, delivery))
                rec.unsent += 1
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

    def _on_reply_updated(self, ev: ReplyUpdated) -> None:
        idx = self.note(
            f"reply_updated {','.join(ev.call_ids)} {ev.status} {ev.reason or ''} "
            f"{ev.speech_id or ''}"
        )
        for cid in ev.call_ids:
            rec = self.calls.get(cid)
            if rec is None:
                # a follow-up's id is known once follow_up() returns
                self.orphans.setdefault(cid, []).append((idx, ev.status))
                continue
            before = rec.replies[-1][1] if rec.replies else None
            rec.replies.append((idx, ev.status))
            if ev.status == "scheduled" and rec.unsent == 0 and before != "interrupted":
                self.fail(
                    "2",
                    f"reply scheduled for {cid} with nothing to speak: its items since the "
                    "last reply are silent (a silent update, a None result or a "
                    "cancellation: recorded, not spoken)",
                )
            if ev.status in ("scheduled", "dropped"):
                rec.unsent = 0
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
        elif self.voice_turn_until is not None and self.loop.time() < self.voice_turn_until:
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
            prefixes = (f"{cid}_result", f"{cid}_progress_")
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
        if ev.new_state == "listening":
            self.on_event("listening")

    def _on_user_state(self, ev: Any) -> None:
        self.note(f"user_state {ev.old_state} -> {ev.new_state}")

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
