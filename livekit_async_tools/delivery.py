"""The delivery queue: pending items per session, spoken through the gate, re-delivered."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from livekit.agents import Agent, AgentSession, llm

from . import _compat, _policy
from ._chat_store import ChatStore
from ._log import logger
from ._ports import CallIdentity, PendingItem, Services
from ._spec import FollowUpMode
from ._texts import instructions
from .events import ReplyStatus, ReplyUpdated
from .gate import Gate
from .options import Delivery

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

__all__ = ["DeliveryQueue", "select"]


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
    """Pending items of one session, spoken through the `Gate`.

    All items the current agent may speak go into one ``generate_reply`` once the
    gate has been quiet for ``settle_delay`` (``"interrupt"`` items go as soon as the
    caller is done, cutting the agent's own speech). The decision to speak is taken
    with no ``await`` between it and ``generate_reply``.
    """

    def __init__(
        self, services: Services, session: AgentSession[Any], gate: Gate, store: ChatStore
    ) -> None:
        self._services = services
        self._session = session
        self.gate = gate
        self._store = store
        self._pending: list[PendingItem] = []
        self._replies: dict[str, _Reply] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._refusals = 0
        self._delivering = False
        self._closed = False
        self._follow_up_ids = itertools.count(1)
        # the newest spoken item of each call still in play: older updates are superseded
        self._latest: dict[str, PendingItem] = {}

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
        call: CallIdentity,
        *,
        kind: Literal["update", "final"],
        suffix: str,
        output: str,
        is_error: bool,
        delivery: Delivery,
    ) -> PendingItem | None:
        """Queue a call's item and start writing it into its record target's context.

        Returns the item (await `recorded` for the write), or ``None`` once the session
        is closed (a spoken item is then reported dropped).
        """
        item_id = _policy.derived_call_id(call.call_id, suffix)
        item = PendingItem(
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
        )
        if self._closed:
            if delivery != "silent":
                self._emit([item], "dropped", reason="session_closed")
            return None
        if delivery != "silent" or kind == "final":
            previous = self._latest.pop(call.call_id, None)
            if delivery != "silent":
                self._latest[call.call_id] = item
            if previous is not None and previous in self._pending:
                self._remove([previous])
                self._emit([previous], "skipped", reason="superseded")
        item.recording = self._services.spawn(self._record(item), name="async-tool:record")
        if delivery != "silent":
            self._admit(item)
        self.evaluate()
        return item

    @staticmethod
    async def recorded(item: PendingItem) -> None:
        """Wait until ``item`` is written into its record target's context."""
        if item.recording is not None:
            await asyncio.shield(item.recording)

    async def _record(self, item: PendingItem) -> None:
        target = self.gate.record_target(item.origin, item.on_handoff)
        if target is not None:
            await self._store.insert(target, [item])

    def add_follow_up(
        self, text: str, *, origin: Agent, on_handoff: str, mode: FollowUpMode
    ) -> str:
        """Queue an instruction spoken at the next quiet moment; returns its id."""
        if self._closed:
            raise RuntimeError("the session is closed; the follow-up was not queued")
        follow_up_id = f"follow_up_{next(self._follow_up_ids)}"
        self._admit(
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

    def _admit(self, item: PendingItem) -> None:
        if self._route(item) == "drop":
            self._finish([item], "dropped", reason="origin_closed")
        else:
            self._pending.append(item)

    # -- the decision ----------------------------------------------------------------

    def _route(self, item: PendingItem) -> _policy.Route:
        return _policy.route(
            self.gate.origin_state(item.origin),
            item.on_handoff,
            current_ready=self.gate.current_ready(),
        )

    def on_lifecycle(self) -> None:
        """An agent was handed off, closed or handed back to: drop what nobody may ever
        speak (origin handed off under ``cancel``), then look again."""
        if self._closed:
            return
        routes: dict[int, _policy.Route] = {}
        dropped = [
            p for p in self._pending if routes.setdefault(id(p.origin), self._route(p)) == "drop"
        ]
        if dropped:
            self._remove(dropped)
            self._finish(dropped, "dropped", reason="origin_closed")
        self.evaluate()

    def _decide(self) -> _Batch | None:
        """What to speak right now, and to whom, from a fresh look at the session."""
        if self._closed or not self._pending or self._retry is not None:
            return None  # (a refused reply waits for its backoff)
        current = self.gate.current()
        if current is None or not self.gate.current_ready():
            return None
        routes: dict[int, _policy.Route] = {}
        batch = select(
            [p for p in self._pending if routes.setdefault(id(p.origin), self._route(p)) != "wait"]
        )
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

    def drop_call(self, call_id: str, reason: str) -> None:
        """Drop the pending items of one call (e.g. it was cancelled at handoff)."""
        dropped = [p for p in self._pending if p.call_id == call_id]
        if dropped:
            self._remove(dropped)
            self._finish(dropped, "dropped", reason=reason)

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
                    await self._store.insert(target, unwritten)
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
                if p.write_failures > self._services.options.max_redeliveries:
                    exhausted.append(p)
        if exhausted:
            self._remove(exhausted)
            self._finish(exhausted, "dropped", reason="context_update_failed")
        self._back_off()

    def _back_off(self) -> None:
        self._refusals += 1
        delay = _policy.retry_delay(self._refusals, self._services.options.settle_delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._on_retry)

    def _on_retry(self) -> None:
        self._retry = None
        self.evaluate()

    def _instructions(self, target: Agent, items: list[PendingItem]) -> str:
        results = [p for p in items if p.kind != "follow_up"]
        return instructions(
            self._services.options,
            tool_names=[p.tool_name for p in results],
            item_ids=[p.item_id for p in results],
            redelivery=any(p.attempts for p in results),
            maybe_covered=bool(results) and self._covered_later(target, results),
            follow_ups=[p.text for p in items if p.kind == "follow_up"],
        )

    @staticmethod
    def _covered_later(target: Agent, items: list[PendingItem]) -> bool:
        """True if a said message follows the earliest of ``items`` in the context.

        Walks back from the end to the items, so it only reads what came after them.
        An interrupted agent message does not count: the caller did not hear it all.
        """
        ids = {p.item_id for p in items}
        said_after = False
        for item in reversed(target.chat_ctx.items):
            if isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput)):
                if item.call_id in ids:
                    ids.discard(item.call_id)
                    if not ids or said_after:
                        return said_after
                continue
            if isinstance(item, llm.ChatMessage) and (
                item.role == "user" or (item.role == "assistant" and not item.interrupted)
            ):
                said_after = True
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
        elif outcome == "empty":
            self._finish(reply.items, "skipped", reason="empty", speech_id=handle.id)
        else:
            self._finish(reply.items, "delivered", speech_id=handle.id)
        self.evaluate()

    def _requeue(self, items: list[PendingItem], speech_id: str, *, failed: bool) -> None:
        """Put a cut or failed reply's items back, unless superseded or out of attempts."""
        again: list[PendingItem] = []
        for p in items:
            if p.kind != "follow_up" and self._latest.get(p.call_id) is not p:
                self._emit([p], "skipped", reason="superseded", speech_id=speech_id)
                continue
            p.attempts += 1
            if p.attempts > self._services.options.max_redeliveries:
                reason = "reply_failed" if failed else "max_redeliveries"
                self._finish([p], "dropped", reason=reason, speech_id=speech_id)
            else:
                again.append(p)
        self._pending[:0] = again

    def _remove(self, items: list[PendingItem]) -> None:
        gone = set(map(id, items))
        self._pending = [p for p in self._pending if id(p) not in gone]

    def _finish(
        self,
        items: list[PendingItem],
        status: ReplyStatus,
        *,
        reason: str | None = None,
        speech_id: str | None = None,
    ) -> None:
        """Report a terminal status; the items' calls stop being tracked here."""
        for p in items:
            if self._latest.get(p.call_id) is p and p.kind == "final":
                del self._latest[p.call_id]
        self._emit(items, status, reason=reason, speech_id=speech_id)

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
        self._services.emit(
            ReplyUpdated(call_ids=call_ids, status=status, reason=reason, speech_id=speech_id)
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
        self._pending = []
        for reason in ("origin_closed", "session_closed"):
            items = [p for p, r in reasons if r == reason]
            if items:
                self._finish(items, "dropped", reason=reason)
