"""Deferred items, the per-target delivery queue, the wait-for-idle gate, re-delivery."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from livekit.agents import Agent, AgentSession, llm

from . import _compat
from ._log import logger
from .events import ReplyUpdated
from .options import Delivery

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

    from .runtime import AsyncToolRuntime
    from .task import AsyncCall

__all__ = ["DeliveryQueue", "PendingItem"]

_QUIET_AGENT_STATES = ("listening", "idle")


@dataclass(eq=False)
class PendingItem:
    """A function_call + function_call_output pair waiting to be spoken."""

    call: AsyncCall
    kind: Literal["update", "final"]
    fnc_call: llm.FunctionCall
    output: llm.FunctionCallOutput
    delivery: Delivery
    inserted_into: list[Agent] = field(default_factory=list)
    attempts: int = 0

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(eq=False)
class _Reply:
    items: list[PendingItem]
    handle: SpeechHandle
    target: Agent


def _said(handle: SpeechHandle) -> bool:
    """True if the reply put any assistant text into the conversation."""
    for item in handle.chat_items:
        if (
            isinstance(item, llm.ChatMessage)
            and item.role == "assistant"
            and (item.text_content or "").strip()
        ):
            return True
    return False


class DeliveryQueue:
    """Pending deferred items of one session, grouped by target, and the gate.

    The gate opens for the current agent when it is the target of pending items,
    the agent is listening, the user is not speaking, every speech handle created
    while that agent was current (tool dispatch included) is done, and all of it
    has lasted ``settle_delay``. Handles of a paused agent (e.g. the tool call that
    awaits an `AgentTask`) do not block the agent on top.
    """

    def __init__(self, runtime: AsyncToolRuntime, session: AgentSession[Any]) -> None:
        self._runtime = runtime
        self._session = session
        self._pending: list[PendingItem] = []
        self._handles: dict[str, tuple[SpeechHandle, Agent]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._exiting: weakref.WeakSet[Agent] = weakref.WeakSet()
        # the caller's turn: pending from the end of their speech until it is committed
        # (a user message lands) or the bounded wait derived from endpointing passes
        self._turn_pending = False
        self._committed_since_speech = False
        self._turn_deadline: asyncio.TimerHandle | None = None
        self._reply: _Reply | None = None
        self._delivering = False
        self._closed = False
        self._inserted: weakref.WeakKeyDictionary[Agent, list[llm.ChatItem]] = (
            weakref.WeakKeyDictionary()
        )

    # -- state -----------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No pending item, no reply being scheduled or spoken."""
        return not self._pending and self._reply is None and not self._delivering

    def describe(self) -> list[str]:
        lines = [f"pending {p.kind} of {p.call.tool_name} ({p.call_id})" for p in self._pending]
        if self._reply is not None:
            ids = ", ".join(sorted({p.call_id for p in self._reply.items}))
            lines.append(f"reply {self._reply.handle.id} being spoken for {ids}")
        if self._delivering:
            lines.append("a reply is being scheduled")
        return lines

    def track(self, handle: SpeechHandle, owner: Agent | None = None) -> None:
        """Count ``handle`` against ``owner`` (default: the current agent) until done."""
        if handle.done() or handle.id in self._handles:
            return
        if owner is None:
            owner = self._current()
            if owner is None:
                return
        self._handles[handle.id] = (handle, owner)
        handle.add_done_callback(self._on_handle_done)

    def _on_handle_done(self, handle: SpeechHandle) -> None:
        self._handles.pop(handle.id, None)
        self.evaluate()

    def _current(self) -> Agent | None:
        try:
            return self._session.current_agent
        except RuntimeError:
            return None

    # -- adding items ------------------------------------------------------------------

    async def add(
        self,
        call: AsyncCall,
        *,
        kind: Literal["update", "final"],
        suffix: str,
        output: str,
        is_error: bool,
        delivery: Delivery,
    ) -> None:
        """Record an item in the target's context at once and queue it for speech."""
        if self._closed:
            return
        item_call_id = f"{call.call_id}_{suffix}"
        pending = PendingItem(
            call=call,
            kind=kind,
            fnc_call=llm.FunctionCall(
                call_id=item_call_id, name=call.tool_name, arguments=call.raw_arguments
            ),
            output=llm.FunctionCallOutput(
                call_id=item_call_id, name=call.tool_name, output=output, is_error=is_error
            ),
            delivery=delivery,
        )
        target = self._record_target(call)
        if target is not None:
            await self._insert(target, [pending])
        if delivery == "silent":
            return
        self._pending.append(pending)
        self.evaluate()

    def _record_target(self, call: AsyncCall) -> Agent | None:
        """Where an item is recorded now: the origin, unless it is gone and forwarded."""
        if not _compat.agent_is_closed(call.origin):
            return call.origin
        if call.on_handoff == "forward":
            return self._current()
        return call.origin

    async def _insert(self, agent: Agent, items: list[PendingItem]) -> None:
        new = [p for p in items if agent not in p.inserted_into]
        if not new:
            return
        chat_items: list[llm.ChatItem] = [item for p in new for item in (p.fnc_call, p.output)]
        self._inserted.setdefault(agent, []).extend(chat_items)
        for p in new:
            p.inserted_into.append(agent)
        await self._write(agent, chat_items)

    async def restore(self, agent: Agent) -> None:
        """Re-insert this package's items that a context rewrite (update_tools) dropped."""
        present = {item.id for item in agent.chat_ctx.items}
        missing = [item for item in self._inserted.get(agent, []) if item.id not in present]
        if missing:
            await self._write(agent, missing)

    @staticmethod
    async def _write(agent: Agent, items: list[llm.ChatItem]) -> None:
        # copy, insert and replace with no await in between: nothing livekit adds
        # to the context meanwhile can be lost
        chat_ctx = agent.chat_ctx.copy()
        chat_ctx.insert(items)
        await _compat.update_agent_chat_ctx(agent, chat_ctx)

    # -- the gate ----------------------------------------------------------------------

    def _deliverable(self, item: PendingItem, current: Agent) -> bool:
        origin = item.call.origin
        if origin is current:
            return True
        if not _compat.agent_is_closed(origin):
            return False  # paused under a task, or still draining
        return item.call.on_handoff == "forward"

    def on_user_state(self, ev: Any) -> None:
        """The caller started or stopped speaking (``user_state_changed``)."""
        if ev.new_state == "speaking":
            self._committed_since_speech = False
            self._set_turn_pending(False)
        elif ev.old_state == "speaking" and not self._committed_since_speech:
            self._set_turn_pending(True)
        self.evaluate()

    def on_item_added(self, ev: Any) -> None:
        """A conversation item landed; a user message commits the caller's turn."""
        item = ev.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            self._committed_since_speech = True
            self._set_turn_pending(False)
        self.evaluate()

    def _set_turn_pending(self, pending: bool) -> None:
        self._turn_pending = pending
        if self._turn_deadline is not None:
            self._turn_deadline.cancel()
            self._turn_deadline = None
        if pending:
            self._turn_deadline = asyncio.get_running_loop().call_later(
                _compat.caller_turn_wait(self._session), self._on_turn_deadline
            )

    def _on_turn_deadline(self) -> None:
        self._turn_deadline = None
        self._turn_pending = False  # the speech never became a turn
        self.evaluate()

    def _quiet(self, current: Agent) -> bool:
        session = self._session
        if session.agent_state not in _QUIET_AGENT_STATES:
            return False
        if session.user_state == "speaking" or self._turn_pending:
            return False
        for handle, owner in self._handles.values():
            if handle.done():
                continue
            if owner is current or _compat.agent_is_closed(owner):
                return False
        return True

    def _batch(self) -> tuple[Agent, list[PendingItem]] | None:
        if self._closed or self._reply is not None or self._delivering or not self._pending:
            return None
        current = self._current()
        if current is None:
            return None
        batch = [p for p in self._pending if self._deliverable(p, current)]
        if not batch or not self._quiet(current):
            return None
        return current, batch

    def evaluate(self) -> None:
        """Re-check the gate; called on every session event and state change."""
        if self._closed:
            return
        self._runtime.apply_handoff_policies()
        self._watch_closing_origins()
        if self._batch() is None:
            self._cancel_timer()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._runtime.options.settle_delay, self._on_settled
            )
        self._runtime.check_idle()

    def on_lifecycle(self, agent: Agent, which: Literal["enter", "exit"]) -> None:
        """livekit-agents < 1.5 only (see `_compat.notify_lifecycle`): an origin
        entered or exited; an exited one closes shortly after its ``on_exit``."""
        if which == "exit":
            self._exiting.add(agent)
        else:
            self._exiting.discard(agent)  # handed back to: running again
        self.evaluate()

    def _watch_closing_origins(self) -> None:
        """An origin whose ``on_exit`` ran is still closing: look again after
        ``settle_delay`` until it is closed, so its handoff policy applies without
        waiting for an unrelated event (only before 1.5, where no event follows)."""
        if self._recheck is not None:
            return
        if any(not _compat.agent_is_closed(a) for a in self._exiting):
            self._recheck = asyncio.get_running_loop().call_later(
                max(self._runtime.options.settle_delay, 0.05), self._on_recheck
            )

    def _on_recheck(self) -> None:
        self._recheck = None
        self.evaluate()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_settled(self) -> None:
        self._timer = None
        batch = self._batch()
        if batch is None:
            return
        self._delivering = True
        target, items = batch
        self._runtime.spawn(self._deliver(target, items), name="async-tool:deliver")

    def drop_for(self, call: AsyncCall, reason: str) -> None:
        """Drop the pending items of one call (e.g. it was cancelled at handoff)."""
        dropped = [p for p in self._pending if p.call is call]
        if dropped:
            self._pending = [p for p in self._pending if p.call is not call]
            self._emit(dropped, "dropped", reason=reason)

    # -- speaking ----------------------------------------------------------------------

    async def _deliver(self, target: Agent, batch: list[PendingItem]) -> None:
        try:
            await self._deliver_batch(target, batch)
        finally:
            self._delivering = False
            self.evaluate()

    async def _deliver_batch(self, target: Agent, batch: list[PendingItem]) -> None:
        # a progress update superseded by a newer item of its own call is not spoken
        latest: dict[str, PendingItem] = {}
        for p in batch:
            prev = latest.get(p.call_id)
            if prev is None or prev.kind != "final":
                latest[p.call_id] = p
        speak = [p for p in batch if latest[p.call_id] is p]
        superseded = [p for p in batch if latest[p.call_id] is not p]
        if superseded:
            self._remove(superseded)
            self._emit(superseded, "skipped", reason="superseded")
        if not speak:
            return
        await self._insert(target, speak)
        instructions = self._instructions(target, speak)
        try:
            handle = self._session.generate_reply(instructions=instructions)
        except RuntimeError:
            # e.g. scheduling is draining right after an AgentTask completed: keep the
            # items pending and try again at the next gate event (or after settle_delay)
            logger.debug("generate_reply refused, retrying", extra={"target": target.id})
            asyncio.get_running_loop().call_later(self._runtime.options.settle_delay, self.evaluate)
            return
        self._remove(speak)
        self._reply = _Reply(items=speak, handle=handle, target=target)
        self.track(handle, target)
        self._emit(speak, "scheduled", speech_id=handle.id)
        handle.add_done_callback(self._on_reply_done)

    def _instructions(self, target: Agent, items: list[PendingItem]) -> str:
        opts = self._runtime.options
        fmt = {
            "tool_names": ", ".join(dict.fromkeys(p.call.tool_name for p in items)),
            "items": ", ".join(p.fnc_call.call_id for p in items),
        }
        if any(p.attempts for p in items):
            text = opts.redeliver_template.format(**fmt)
        elif self._covered_later(target, items):
            text = opts.deliver_maybe_covered_template.format(**fmt)
        else:
            text = opts.deliver_template.format(**fmt)
        return text

    @staticmethod
    def _covered_later(target: Agent, items: list[PendingItem]) -> bool:
        """True if a said message follows the earliest of ``items`` in the context."""
        ids = {p.fnc_call.call_id for p in items}
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
        reply, self._reply = self._reply, None
        if reply is None or reply.handle is not handle:
            return
        if self._closed:
            self._emit(reply.items, "dropped", reason="session_closed", speech_id=handle.id)
        elif handle.interrupted:
            self._emit(reply.items, "interrupted", speech_id=handle.id)
            again: list[PendingItem] = []
            for p in reply.items:
                p.attempts += 1
                if p.attempts > self._runtime.options.max_redeliveries:
                    self._emit([p], "dropped", reason="max_redeliveries", speech_id=handle.id)
                else:
                    again.append(p)
            self._pending[:0] = again
        elif not _said(handle):
            self._emit(reply.items, "skipped", reason="empty", speech_id=handle.id)
        else:
            self._emit(reply.items, "delivered", speech_id=handle.id)
        self.evaluate()

    def _remove(self, items: list[PendingItem]) -> None:
        self._pending = [p for p in self._pending if p not in items]

    def _emit(
        self,
        items: list[PendingItem],
        status: Literal["scheduled", "delivered", "interrupted", "skipped", "dropped"],
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
        self._closed = True
        self._cancel_timer()
        for timer in (self._recheck, self._turn_deadline):
            if timer is not None:
                timer.cancel()
        self._recheck = self._turn_deadline = None
        pending, self._pending = self._pending, []
        current = self._current()
        held = [
            p
            for p in pending
            if p.call.on_handoff == "hold"
            and p.call.origin is not current
            and _compat.agent_is_closed(p.call.origin)
        ]
        rest = [p for p in pending if p not in held]
        if held:
            self._emit(held, "dropped", reason="origin_closed")
        if rest:
            self._emit(rest, "dropped", reason="session_closed")
        self._handles.clear()
