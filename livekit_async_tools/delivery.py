"""The delivery queue: pending items per session, spoken through the gate, re-delivered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livekit.agents import Agent, AgentSession

from . import _compat, _policy
from ._chat_store import ChatStore
from ._log import logger
from ._pending import Pending
from ._ports import PendingItem, Services
from ._reply import handoff_of, output_of, reply_instructions, said
from .events import ReplyStatus, ReplyUpdated
from .gate import Gate
from .tracing import reply_timing

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

__all__ = ["DeliveryQueue"]


@dataclass(eq=False)
class _Reply:
    items: list[PendingItem]
    handle: SpeechHandle


@dataclass(frozen=True)
class _Batch:
    target: Agent
    items: list[PendingItem]
    urgent: bool


AUTO_REPLY_WAIT = 5.0
"""Seconds a delivery waits for the reply a model that answers tool outputs by itself
starts after the results were written; then it asks for one with ``generate_reply``."""

_MAX_DECISIONS = 8
"""Decide-act rounds of one delivery: every await (a context write, cutting the agent)
is followed by a fresh decision; a world that keeps changing ends the round."""


class DeliveryQueue:
    """When and how pending items are spoken, through the `Gate`.

    All items the current agent may speak go into one ``generate_reply`` once the
    gate has been quiet for ``settle_delay`` (``"interrupt"`` items go as soon as the
    caller is done, cutting the agent's own speech). The decision to speak is taken
    with no ``await`` between it and ``generate_reply``, and taken again after every
    ``await``. A refused reply is retried after a growing delay.
    """

    def __init__(
        self, services: Services, session: AgentSession[Any], gate: Gate, store: ChatStore
    ) -> None:
        self._services = services
        self._session = session
        self.gate = gate
        self._store = store
        self.pending = Pending(services, gate, store, self._finish, self._evaluate_soon)
        self._soon: asyncio.Handle | None = None
        self._replies: dict[str, _Reply] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._refusals = 0
        self._delivering = False
        self._auto_reply: asyncio.Future[SpeechHandle] | None = None

    @property
    def _closed(self) -> bool:
        return self.pending.closed

    @property
    def idle(self) -> bool:
        """No pending item, no reply being scheduled or spoken."""
        return not self.pending and not self._replies and not self._delivering

    def describe(self) -> list[str]:
        lines = self.pending.describe()
        for reply in self._replies.values():
            ids = ", ".join(dict.fromkeys(p.call_id for p in reply.items))
            lines.append(f"reply {reply.handle.id} being spoken for {ids}")
        if self._delivering:
            lines.append("a reply is being scheduled")
        return lines

    # -- the decision ----------------------------------------------------------------

    def on_lifecycle(self) -> None:
        """An agent was handed off, closed or handed back to: drop what nobody may ever
        speak (origin handed off under ``cancel``), then look again."""
        if self._closed:
            return
        self.pending.sweep()
        self.evaluate()

    def _decide(self) -> _Batch | None:
        """What to speak right now, and to whom, from a fresh look at the session."""
        if self._closed or not self.pending or self._retry is not None:
            return None  # (a refused reply waits for its backoff)
        current = self.gate.current()
        if current is None or not self.gate.current_ready():
            return None
        batch = _policy.select(self.pending.speakable())
        if not batch:
            return None
        if any(p.delivery == "interrupt" for p in batch) and self.gate.may_cut_in(current):
            return _Batch(current, batch, urgent=True)
        if not self.gate.quiet(current, replying=bool(self._replies)):
            return None
        return _Batch(current, batch, urgent=False)

    def _evaluate_soon(self) -> None:
        """New items: look once in the next loop iteration, however many arrived (N
        results finishing together cost one look, not N)."""
        if self._soon is None and not self._closed:
            self._soon = asyncio.get_running_loop().call_soon(self._on_soon)

    def _on_soon(self) -> None:
        self._soon = None
        self.evaluate()

    def evaluate(self) -> None:
        """Re-check the gate; called on every session event and state change."""
        if self._closed:
            return
        if not self._delivering:
            batch = self._decide()
            if batch is None:
                self._cancel_timer()
            elif batch.urgent:
                self._cancel_timer()
                self._start()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self._services.options.settle_delay, self._on_settled
                )
        self._services.changed()

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
        self._services.spawn(self._deliver(), name="async-tool:deliver")

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
            if (
                unwritten
                and self._store.traits(target).auto_reply
                and self._store.lacks(target, unwritten)
            ):
                await self._write_as_reply(target, unwritten)
                return
            if unwritten:
                try:
                    await self._store.insert(target, unwritten)
                except Exception:
                    self._write_failed(target, unwritten)
                    return
                continue  # the world may have changed: decide again
            if await self._brief_handoff(target, speak):
                continue  # the new agent got the result in its context: decide again
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

    async def _write_as_reply(self, target: Agent, items: list[PendingItem]) -> None:
        """For a model that answers every tool output by itself: the write (made only
        now that the gate is open) starts the reply; adopt it as this delivery's."""
        loop = asyncio.get_running_loop()
        self._auto_reply = waiting = loop.create_future()
        try:
            try:
                await self._store.insert(target, items)
            except Exception:
                self._write_failed(target, items)
                return
            try:
                handle = await asyncio.wait_for(asyncio.shield(waiting), AUTO_REPLY_WAIT)
            except asyncio.TimeoutError:
                logger.debug("no automatic reply to the results", extra={"target": target.id})
                return  # written now: the next round asks for a reply itself
        finally:
            self._auto_reply = None
        if not self._closed:
            self._issued(target, items, handle)

    def on_speech_created(self, ev: Any) -> None:
        """A reply the model started by itself is the one a results write asked for."""
        waiting = self._auto_reply
        if waiting is not None and not waiting.done() and not getattr(ev, "user_initiated", True):
            waiting.set_result(ev.speech_handle)

    async def _brief_handoff(self, target: Agent, speak: list[PendingItem]) -> bool:
        """Write a handing-off result into the agent it hands to; True if written."""
        new = handoff_of(target, speak)
        if new is None:
            return False
        items = [p for p in speak if p.handoff is new and new not in p.inserted_into]
        if not items:
            return False
        try:
            await self._store.insert(new, items)
        except Exception:
            self._write_failed(new, items)
        return True

    def _speak(self, target: Agent, speak: list[PendingItem]) -> None:
        """Issue the reply (called right after a decision, with no await in between),
        then hand off if a result asks for it (livekit plays the reply first)."""
        new = handoff_of(target, speak)
        say = [p for p in speak if p.delivery != "silent" and (p.handoff is None or output_of(p))]
        if say:
            try:
                handle = self._session.generate_reply(
                    instructions=reply_instructions(self._services.options, target, say)
                )
            except RuntimeError:
                # e.g. scheduling is draining right after an AgentTask completed: keep
                # the items pending and retry after a growing delay (the refused reply's
                # own events must not retry it at once)
                logger.debug("generate_reply refused", extra={"target": target.id})
                self._back_off()
                return
            self._issued(target, say, handle)
        quiet = [p for p in speak if p not in say]
        if quiet:  # a bare or silent handoff: nothing to say, the new agent takes over
            self.pending.remove(quiet)
            self._finish(quiet, "delivered")
        if new is not None:
            for p in speak:  # made once: a re-delivery after a cut only speaks
                p.handoff = None
            self._session.update_agent(new)

    def _issued(self, target: Agent, speak: list[PendingItem], handle: SpeechHandle) -> None:
        self._refusals = 0
        self.pending.remove(speak)
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
                if p.write_failures > self._services.options.max_redeliveries:
                    exhausted.append(p)
        if exhausted:
            self.pending.remove(exhausted)
            self._finish(exhausted, "dropped", reason="context_update_failed")
        self._back_off()

    def _back_off(self) -> None:
        self._refusals += 1
        delay = _policy.retry_delay(self._refusals, self._services.options.settle_delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._on_retry)

    def _on_retry(self) -> None:
        self._retry = None
        self.evaluate()

    def _on_reply_done(self, handle: SpeechHandle) -> None:
        reply = self._replies.pop(handle.id, None)
        if reply is None:
            return
        outcome = _policy.reply_outcome(
            closed=self._closed,
            interrupted=handle.interrupted,
            failed=_compat.reply_failed(handle),
            said=said(handle),
        )
        if outcome == "closed":
            self._finish(reply.items, "dropped", reason="session_closed", speech_id=handle.id)
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
        elif outcome == "empty":  # a question not put to the caller is asked again
            if unasked := [p for p in reply.items if p.kind == "question"]:
                self._emit(unasked, "interrupted", reason="empty", speech_id=handle.id)
                self._requeue(unasked, handle.id, failed=False)  # its call waits for it
            if rest := [p for p in reply.items if p.kind != "question"]:
                self._finish(rest, "skipped", reason="empty", speech_id=handle.id)
        else:
            self._finish(reply.items, "delivered", speech_id=handle.id)
        self.evaluate()

    def _requeue(self, items: list[PendingItem], speech_id: str, *, failed: bool) -> None:
        """Put a cut or failed reply's items back, unless withdrawn, superseded or out of
        attempts."""
        again: list[PendingItem] = []
        for p in items:
            if (gone := self.pending.gone(p)) is not None:
                self._finish([p], "skipped", reason=gone, speech_id=speech_id)
                continue
            p.attempts += 1
            if p.attempts > self._services.options.max_redeliveries:
                reason = "reply_failed" if failed else "max_redeliveries"
                self._finish([p], "dropped", reason=reason, speech_id=speech_id)
            else:
                again.append(p)
        self.pending.put_back(again)

    def _finish(
        self,
        items: list[PendingItem],
        status: ReplyStatus,
        *,
        reason: str | None = None,
        speech_id: str | None = None,
    ) -> None:
        """Report a status; a terminal one ends the items' tracking (and is told to
        their owners)."""
        terminal = status != "interrupted" and status != "scheduled"
        if terminal:
            self.pending.finished(items)
        self._emit(items, status, reason=reason, speech_id=speech_id)
        for p in items if terminal else ():
            if p.on_end is not None:
                p.on_end(status, reason)

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
        ready_at, scheduled_at = reply_timing(items, status, speech_id)
        self._services.emit(
            ReplyUpdated(call_ids, status, reason, speech_id, ready_at, scheduled_at)
        )

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Drop everything pending: ``origin_closed`` for held items, else ``session_closed``."""
        if self._closed:
            return
        self._cancel_timer()
        for handle in (self._retry, self._soon):
            if handle is not None:
                handle.cancel()
        self._retry = self._soon = None
        self.pending.close()
