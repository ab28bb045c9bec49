"""Deferred items, the delivery queue per session and target, coalescing, re-delivery."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from livekit.agents import Agent, AgentSession, llm

from . import _compat, _policy
from ._log import logger
from .events import ReplyStatus, ReplyUpdated
from .gate import Gate
from .options import Delivery

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

    from .runtime import AsyncToolRuntime
    from .task import AsyncCall

__all__ = ["DeliveryQueue", "FollowUpMode", "PendingItem"]

ItemKind: TypeAlias = Literal["update", "final", "follow_up"]
FollowUpMode: TypeAlias = Literal["one_at_a_time", "all"]


@dataclass(eq=False)
class PendingItem:
    """Something waiting to be spoken: a call's update or result (a function_call +
    function_call_output pair in the target's context), or a follow-up instruction."""

    call_id: str
    kind: ItemKind
    origin: Agent
    on_handoff: str
    delivery: Delivery
    item_id: str
    tool_name: str = ""
    chat_items: list[llm.ChatItem] = field(default_factory=list)
    text: str = ""
    mode: FollowUpMode = "one_at_a_time"
    call: AsyncCall | None = None
    inserted_into: list[Agent] = field(default_factory=list)
    attempts: int = 0
    write_failures: int = 0
    recording: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Reply:
    items: list[PendingItem]
    handle: SpeechHandle


@dataclass(frozen=True)
class _Batch:
    target: Agent
    items: list[PendingItem]
    urgent: bool


def _said(handle: SpeechHandle) -> bool:
    """True if the reply put any assistant text into the conversation."""
    return any(
        isinstance(item, llm.ChatMessage)
        and item.role == "assistant"
        and (item.text_content or "").strip()
        for item in handle.chat_items
    )


def _failed(handle: SpeechHandle) -> bool:
    """True if the reply ended with an error (``SpeechHandle.exception``, livekit >= 1.8)."""
    exception = getattr(handle, "exception", None)
    return callable(exception) and exception() is not None


def select(batch: list[PendingItem]) -> list[PendingItem]:
    """The items of ``batch`` one reply speaks: every result and update, every ``all``
    follow-up and the oldest ``one_at_a_time`` one."""
    speak: list[PendingItem] = []
    one_taken = False
    for p in batch:
        if p.kind != "follow_up" or p.mode == "all":
            speak.append(p)
        elif not one_taken:
            speak.append(p)
            one_taken = True
    return speak


_MAX_DECISIONS = 8
"""Decide-act rounds of one delivery: every await (a context write, cutting the agent)
is followed by a fresh decision; a world that keeps changing ends the round."""


class DeliveryQueue:
    """Pending items of one session, grouped by target agent, spoken through the `Gate`.

    All items pending for the current agent are spoken in one ``generate_reply``
    once the gate has been quiet for ``settle_delay`` (``"interrupt"`` items go as
    soon as the caller is done, cutting the agent's own speech). The decision to
    speak is taken with no ``await`` between it and ``generate_reply``.
    """

    def __init__(self, runtime: AsyncToolRuntime, session: AgentSession[Any]) -> None:
        self._runtime = runtime
        self._session = session
        self.gate = Gate(session, self.evaluate)
        self._pending: list[PendingItem] = []
        self._replies: dict[str, _Reply] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._refusals = 0
        self._delivering = False
        self._closed = False
        self._follow_up_ids = itertools.count(1)
        # the newest spoken-or-final item of each call: older updates are superseded
        self._latest: dict[str, PendingItem] = {}
        self._inserted: weakref.WeakKeyDictionary[Agent, list[llm.ChatItem]] = (
            weakref.WeakKeyDictionary()
        )
        self._locks: weakref.WeakKeyDictionary[Agent, asyncio.Lock] = weakref.WeakKeyDictionary()

    @property
    def idle(self) -> bool:
        """No pending item, no reply being scheduled or spoken."""
        return not self._pending and not self._replies and not self._delivering

    def describe(self) -> list[str]:
        lines = [f"pending {p.kind} {p.item_id}" for p in self._pending]
        for reply in self._replies.values():
            ids = ", ".join(dict.fromkeys(p.call_id for p in reply.items))
            lines.append(f"reply {reply.handle.id} being spoken for {ids}")
        if self._delivering:
            lines.append("a reply is being scheduled")
        return lines

    # -- adding ------------------------------------------------------------------------

    def add(
        self,
        call: AsyncCall,
        *,
        kind: Literal["update", "final"],
        suffix: str,
        output: str,
        is_error: bool,
        delivery: Delivery,
    ) -> PendingItem | None:
        """Queue a call's item and start recording it in the target's context.

        Returns the item (await `recorded` for the write), or ``None`` once the session
        is closed (a spoken item is then reported dropped).
        """
        item_id = _policy.derived_call_id(call.call_id, suffix)
        pending = PendingItem(
            call_id=call.call_id,
            kind=kind,
            origin=call.origin,
            on_handoff=call.on_handoff,
            delivery=delivery,
            item_id=item_id,
            tool_name=call.tool_name,
            chat_items=[
                _compat.function_call(
                    call_id=item_id,
                    name=call.tool_name,
                    arguments=call.raw_arguments,
                    extra=call.extra,
                ),
                llm.FunctionCallOutput(
                    call_id=item_id, name=call.tool_name, output=output, is_error=is_error
                ),
            ],
            call=call,
        )
        if self._closed:
            if delivery != "silent":
                self._emit([pending], "dropped", reason="session_closed")
            return None
        if delivery != "silent" or kind == "final":
            previous = self._latest.get(call.call_id)
            self._latest[call.call_id] = pending
            if previous is not None and previous in self._pending:
                self._remove([previous])
                self._emit([previous], "skipped", reason="superseded")
        pending.recording = self._runtime.spawn(self._record(pending), name="async-tool:record")
        if delivery != "silent":
            self._pending.append(pending)
        self.evaluate()
        return pending

    @staticmethod
    async def recorded(item: PendingItem) -> None:
        """Wait until ``item`` is written into its record target's context."""
        if item.recording is not None:
            await asyncio.shield(item.recording)

    async def _record(self, item: PendingItem) -> None:
        origin = self.gate.origin_state(item.origin)
        if _policy.record_in_origin(origin, item.on_handoff):
            target: Agent | None = item.origin
        else:
            target = self.gate.current()
        if target is not None:
            await self._insert(target, [item])

    def add_follow_up(
        self, text: str, *, origin: Agent, on_handoff: str, mode: FollowUpMode
    ) -> str:
        """Queue an instruction spoken at the next quiet moment; returns its id."""
        if self._closed:
            raise RuntimeError("the session is closed; the follow-up was not queued")
        follow_up_id = f"follow_up_{next(self._follow_up_ids)}"
        self._pending.append(
            PendingItem(
                call_id=follow_up_id,
                kind="follow_up",
                origin=origin,
                on_handoff=on_handoff,
                delivery="when_idle",
                item_id=follow_up_id,
                text=text,
                mode=mode,
            )
        )
        self.evaluate()
        return follow_up_id

    def record_target(self, origin: Agent, on_handoff: str) -> Agent | None:
        """Where something for ``origin`` is recorded now: the origin (also when paused),
        or, once it is closed and ``forward`` applies, the current agent."""
        if _policy.record_in_origin(self.gate.origin_state(origin), on_handoff):
            return origin
        return self.gate.current()

    # -- writing into contexts -------------------------------------------------------------

    async def _insert(self, agent: Agent, items: list[PendingItem]) -> None:
        new = [p for p in items if p.chat_items and agent not in p.inserted_into]
        if not new:
            return
        async with self._lock(agent):
            new = [p for p in new if agent not in p.inserted_into]
            chat_items = [item for p in new for item in p.chat_items]
            await self._write_unlocked(agent, chat_items)
            self._inserted.setdefault(agent, []).extend(chat_items)
            for p in new:
                p.inserted_into.append(agent)

    async def restore(self, agent: Agent) -> None:
        """Re-insert this package's items that a context rewrite (update_tools) dropped."""
        await self.write(agent, self._inserted.get(agent, []))

    async def write(self, agent: Agent, items: list[llm.ChatItem]) -> None:
        """Insert those of ``items`` that ``agent``'s context does not hold yet."""
        async with self._lock(agent):
            await self._write_unlocked(agent, items)

    def _lock(self, agent: Agent) -> asyncio.Lock:
        lock = self._locks.get(agent)
        if lock is None:
            lock = self._locks[agent] = asyncio.Lock()
        return lock

    @staticmethod
    async def _write_unlocked(agent: Agent, items: list[llm.ChatItem]) -> None:
        # Copy, filter and replace run with no await in between, so nothing livekit
        # adds meanwhile is lost, and no item id or call id lands twice in a context
        # (whatever copied it there before: a new agent built with `chat_ctx=`).
        chat_ctx = agent.chat_ctx.copy()
        ids = {item.id for item in chat_ctx.items}
        calls = {
            (item.type, item.call_id)
            for item in chat_ctx.items
            if isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput))
        }
        missing = [
            item
            for item in items
            if item.id not in ids
            and not (
                isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput))
                and (item.type, item.call_id) in calls
            )
        ]
        if not missing:
            return
        chat_ctx.insert(missing)
        await _compat.update_agent_chat_ctx(agent, chat_ctx)

    # -- the decision ----------------------------------------------------------------

    def _route(self, item: PendingItem) -> _policy.Route:
        return _policy.route(
            self.gate.origin_state(item.origin),
            item.on_handoff,
            current_ready=self.gate.current_ready(),
        )

    def _sweep(self) -> None:
        """Drop the items nobody may ever speak (origin handed off under ``cancel``)."""
        dropped = [p for p in self._pending if self._route(p) == "drop"]
        if dropped:
            self._remove(dropped)
            self._emit(dropped, "dropped", reason="origin_closed")

    def _decide(self) -> _Batch | None:
        """What to speak right now, and to whom, from a fresh look at the session."""
        if self._closed or not self._pending:
            return None
        if self._retry is not None:
            return None  # a refused reply waits for its backoff
        current = self.gate.current()
        if current is None or not self.gate.current_ready():
            return None
        batch = select([p for p in self._pending if self._route(p) != "wait"])
        if not batch:
            return None
        if any(p.delivery == "interrupt" for p in batch) and self.gate.may_cut_in(current):
            return _Batch(current, batch, urgent=True)
        if not self.gate.quiet(current, replying=bool(self._replies)):
            return None
        return _Batch(current, batch, urgent=False)

    def evaluate(self) -> None:
        """Re-check the gate; called on every session event and state change."""
        if self._closed:
            return
        self._runtime.apply_handoff_policies()
        self._sweep()
        self.gate.watch_closing(self._runtime.options.settle_delay)
        if not self._delivering:
            batch = self._decide()
            if batch is None:
                self._cancel_timer()
            elif batch.urgent:
                self._cancel_timer()
                self._start()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self._runtime.options.settle_delay, self._on_settled
                )
        self._runtime.check_idle()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_settled(self) -> None:
        self._timer = None
        if not self._delivering and self._decide() is not None:
            self._start()

    def _start(self) -> None:
        self._delivering = True
        self._runtime.spawn(self._deliver(), name="async-tool:deliver")

    def drop_for(self, call: AsyncCall, reason: str) -> None:
        """Drop the pending items of one call (e.g. it was cancelled at handoff)."""
        dropped = [p for p in self._pending if p.call is call]
        if dropped:
            self._remove(dropped)
            self._emit(dropped, "dropped", reason=reason)

    # -- speaking ----------------------------------------------------------------------

    async def _deliver(self) -> None:
        try:
            await self._deliver_once()
        finally:
            self._delivering = False
            self.evaluate()

    async def _deliver_once(self) -> None:
        cut = False
        for _ in range(_MAX_DECISIONS):
            batch = self._decide()
            if batch is None:
                return
            target, speak = batch.target, batch.items
            unwritten = [p for p in speak if p.chat_items and target not in p.inserted_into]
            if unwritten:
                try:
                    await self._insert(target, unwritten)
                except Exception:
                    self._write_failed(target, unwritten)
                    return
                continue  # the world may have changed: decide again
            busy = self._replies or self._session.agent_state == "speaking"
            if batch.urgent and busy and not cut:
                cut = True
                try:
                    await self._session.interrupt()
                except RuntimeError:
                    logger.debug("could not interrupt the agent's speech")
                continue
            self._speak(target, speak)
            return

    def _speak(self, target: Agent, speak: list[PendingItem]) -> None:
        """Issue the reply (called right after a decision, with no await in between)."""
        try:
            handle = self._session.generate_reply(instructions=self._instructions(target, speak))
        except RuntimeError:
            # e.g. scheduling is draining right after an AgentTask completed: keep the
            # items pending and retry after a growing delay (the refused reply's own
            # events must not retry it at once)
            logger.debug("generate_reply refused", extra={"target": target.id})
            self._back_off()
            return
        self._refusals = 0
        self._remove(speak)
        self._replies[handle.id] = _Reply(items=speak, handle=handle)
        self.gate.track(handle, target)
        self._emit(speak, "scheduled", speech_id=handle.id)
        handle.add_done_callback(self._on_reply_done)

    def _write_failed(self, target: Agent, items: list[PendingItem]) -> None:
        """A context write raised: retry later, a bounded number of times, then drop."""
        logger.warning(
            "could not write a deferred item into the agent's context",
            exc_info=True,
            extra={"target": target.id, "items": [p.item_id for p in items]},
        )
        exhausted: list[PendingItem] = []
        for p in items:
            if target not in p.inserted_into:
                p.write_failures += 1
                if p.write_failures > self._runtime.options.max_redeliveries:
                    exhausted.append(p)
        if exhausted:
            self._remove(exhausted)
            self._emit(exhausted, "dropped", reason="context_update_failed")
        self._back_off()

    def _back_off(self) -> None:
        self._refusals += 1
        delay = _policy.retry_delay(self._refusals, self._runtime.options.settle_delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._on_retry)

    def _on_retry(self) -> None:
        self._retry = None
        self.evaluate()

    def _instructions(self, target: Agent, items: list[PendingItem]) -> str:
        opts = self._runtime.options
        results = [p for p in items if p.kind != "follow_up"]
        parts: list[str] = []
        if results:
            fmt = {
                "tool_names": ", ".join(dict.fromkeys(p.tool_name for p in results)),
                "items": ", ".join(p.item_id for p in results),
            }
            if any(p.attempts for p in results):
                parts.append(opts.redeliver_template.format(**fmt))
            elif self._covered_later(target, results):
                parts.append(opts.deliver_maybe_covered_template.format(**fmt))
            else:
                parts.append(opts.deliver_template.format(**fmt))
        parts += [
            opts.follow_up_template.format(text=p.text) for p in items if p.kind == "follow_up"
        ]
        return "\n".join(parts)

    @staticmethod
    def _covered_later(target: Agent, items: list[PendingItem]) -> bool:
        """True if a said message follows the earliest of ``items`` in the context.

        An interrupted agent message does not count: the caller did not hear it all.
        """
        ids = {p.item_id for p in items}
        seen = False
        for item in target.chat_ctx.items:
            if isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput)):
                seen = seen or item.call_id in ids
                continue
            if not seen or not isinstance(item, llm.ChatMessage):
                continue
            if item.role == "user" or (item.role == "assistant" and not item.interrupted):
                return True
        return False

    def _on_reply_done(self, handle: SpeechHandle) -> None:
        reply = self._replies.pop(handle.id, None)
        if reply is None:
            return
        outcome = _policy.reply_outcome(
            closed=self._closed,
            interrupted=handle.interrupted,
            failed=_failed(handle),
            said=_said(handle),
        )
        if outcome == "closed":
            self._emit(reply.items, "dropped", reason="session_closed", speech_id=handle.id)
        elif outcome in ("interrupted", "failed"):
            if outcome == "interrupted":
                self._emit(reply.items, "interrupted", speech_id=handle.id)
            else:
                logger.warning(
                    "deferred reply failed",
                    exc_info=handle.exception(),
                    extra={"speech_id": handle.id},
                )
            self._requeue(reply.items, handle.id, failed=outcome == "failed")
        elif outcome == "empty":
            self._emit(reply.items, "skipped", reason="empty", speech_id=handle.id)
        else:
            self._emit(reply.items, "delivered", speech_id=handle.id)
        self.evaluate()

    def _requeue(self, items: list[PendingItem], speech_id: str, *, failed: bool) -> None:
        """Put a cut or failed reply's items back, unless superseded or out of attempts."""
        again: list[PendingItem] = []
        for p in items:
            if p.kind != "follow_up" and self._latest.get(p.call_id) is not p:
                self._emit([p], "skipped", reason="superseded", speech_id=speech_id)
                continue
            p.attempts += 1
            if p.attempts > self._runtime.options.max_redeliveries:
                reason = "reply_failed" if failed else "max_redeliveries"
                self._emit([p], "dropped", reason=reason, speech_id=speech_id)
            else:
                again.append(p)
        self._pending[:0] = again

    def _remove(self, items: list[PendingItem]) -> None:
        self._pending = [p for p in self._pending if p not in items]

    def _emit(
        self,
        items: list[PendingItem],
        status: ReplyStatus,
        *,
        reason: str | None = None,
        speech_id: str | None = None,
    ) -> None:
        call_ids = tuple(dict.fromkeys(p.call_id for p in items))
        if status == "dropped":
            logger.warning("deferred reply dropped", extra={"call_ids": call_ids, "reason": reason})
        self._runtime.emit(
            "reply_updated",
            ReplyUpdated(call_ids=call_ids, status=status, reason=reason, speech_id=speech_id),
        )

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Drop everything pending: ``origin_closed`` for held items, else ``session_closed``."""
        if self._closed:
            return
        reasons = [
            (p, _policy.close_reason(self.gate.origin_state(p.origin), p.on_handoff))
            for p in self._pending
        ]
        self._closed = True
        self._cancel_timer()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.gate.close()
        self._pending = []
        for reason in ("origin_closed", "session_closed"):
            items = [p for p, r in reasons if r == reason]
            if items:
                self._emit(items, "dropped", reason=reason)
