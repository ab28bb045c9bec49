"""Deferred items, the delivery queue per session and target, coalescing, re-delivery."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from livekit.agents import Agent, AgentSession, llm

from . import _compat
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


@dataclass(eq=False)
class _Reply:
    items: list[PendingItem]
    handle: SpeechHandle


def _said(handle: SpeechHandle) -> bool:
    """True if the reply put any assistant text into the conversation."""
    return any(
        isinstance(item, llm.ChatMessage)
        and item.role == "assistant"
        and (item.text_content or "").strip()
        for item in handle.chat_items
    )


class DeliveryQueue:
    """Pending items of one session, grouped by target agent, spoken through the `Gate`.

    All items pending for the current agent are spoken in one ``generate_reply``
    once the gate has been quiet for ``settle_delay`` (``"interrupt"`` items go as
    soon as the caller is done, cutting the agent's own speech).
    """

    def __init__(self, runtime: AsyncToolRuntime, session: AgentSession[Any]) -> None:
        self._runtime = runtime
        self._session = session
        self.gate = Gate(session, self.evaluate)
        self._pending: list[PendingItem] = []
        self._replies: dict[str, _Reply] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._delivering = False
        self._closed = False
        self._follow_up_ids = itertools.count(1)
        self._inserted: weakref.WeakKeyDictionary[Agent, list[llm.ChatItem]] = (
            weakref.WeakKeyDictionary()
        )

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
        """Record a call's item in the target's context at once and queue it."""
        if self._closed:
            return
        item_id = f"{call.call_id}_{suffix}"
        pending = PendingItem(
            call_id=call.call_id,
            kind=kind,
            origin=call.origin,
            on_handoff=call.on_handoff,
            delivery=delivery,
            item_id=item_id,
            tool_name=call.tool_name,
            chat_items=[
                llm.FunctionCall(
                    call_id=item_id, name=call.tool_name, arguments=call.raw_arguments
                ),
                llm.FunctionCallOutput(
                    call_id=item_id, name=call.tool_name, output=output, is_error=is_error
                ),
            ],
            call=call,
        )
        target = self.record_target(call.origin, call.on_handoff)
        if target is not None:
            await self._insert(target, [pending])
        if delivery != "silent":
            self._pending.append(pending)
        self.evaluate()

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
        if not _compat.agent_is_closed(origin):
            return origin
        if on_handoff == "forward":
            return self.gate.current()
        return origin

    async def _insert(self, agent: Agent, items: list[PendingItem]) -> None:
        new = [p for p in items if p.chat_items and agent not in p.inserted_into]
        if not new:
            return
        chat_items = [item for p in new for item in p.chat_items]
        self._inserted.setdefault(agent, []).extend(chat_items)
        for p in new:
            p.inserted_into.append(agent)
        await self.write(agent, chat_items)

    async def restore(self, agent: Agent) -> None:
        """Re-insert this package's items that a context rewrite (update_tools) dropped."""
        present = {item.id for item in agent.chat_ctx.items}
        missing = [item for item in self._inserted.get(agent, []) if item.id not in present]
        if missing:
            await self.write(agent, missing)

    @staticmethod
    async def write(agent: Agent, items: list[llm.ChatItem]) -> None:
        """Insert ``items`` into ``agent``'s context.

        Copy, insert and replace run with no await in between, so nothing livekit
        adds to the context meanwhile can be lost.
        """
        chat_ctx = agent.chat_ctx.copy()
        chat_ctx.insert(items)
        await _compat.update_agent_chat_ctx(agent, chat_ctx)

    # -- the decision ----------------------------------------------------------------

    def _deliverable(self, item: PendingItem, current: Agent) -> bool:
        if item.origin is current:
            return True
        if not _compat.agent_is_closed(item.origin):
            return False  # paused under a task, or still draining
        return item.on_handoff == "forward"

    def _batch(self) -> tuple[Agent, list[PendingItem], bool] | None:
        """(target, items, urgent) when something can be delivered now."""
        if self._closed or self._delivering or not self._pending:
            return None
        current = self.gate.current()
        if current is None:
            return None
        batch = [p for p in self._pending if self._deliverable(p, current)]
        if not batch:
            return None
        if any(p.delivery == "interrupt" for p in batch) and self.gate.may_cut_in():
            return current, batch, True
        if self._replies or not self.gate.quiet(current):
            return None
        return current, batch, False

    def evaluate(self) -> None:
        """Re-check the gate; called on every session event and state change."""
        if self._closed:
            return
        self._runtime.apply_handoff_policies()
        self.gate.watch_closing(self._runtime.options.settle_delay)
        batch = self._batch()
        if batch is None:
            self._cancel_timer()
        elif batch[2]:
            self._cancel_timer()
            self._start(*batch)
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
        batch = self._batch()
        if batch is not None:
            self._start(*batch)

    def _start(self, target: Agent, items: list[PendingItem], urgent: bool) -> None:
        self._delivering = True
        self._runtime.spawn(self._deliver(target, items, urgent), name="async-tool:deliver")

    def drop_for(self, call: AsyncCall, reason: str) -> None:
        """Drop the pending items of one call (e.g. it was cancelled at handoff)."""
        dropped = [p for p in self._pending if p.call is call]
        if dropped:
            self._remove(dropped)
            self._emit(dropped, "dropped", reason=reason)

    # -- speaking ----------------------------------------------------------------------

    async def _deliver(self, target: Agent, batch: list[PendingItem], urgent: bool) -> None:
        try:
            await self._deliver_batch(target, batch, urgent)
        finally:
            self._delivering = False
            self.evaluate()

    @staticmethod
    def _select(batch: list[PendingItem]) -> tuple[list[PendingItem], list[PendingItem]]:
        """(items to speak, progress updates superseded by a newer item of their call).

        Follow-ups: every ``all`` one, and the oldest ``one_at_a_time`` one.
        """
        latest: dict[str, PendingItem] = {}
        for p in batch:
            prev = latest.get(p.call_id)
            if p.kind != "follow_up" and (prev is None or prev.kind != "final"):
                latest[p.call_id] = p
        speak: list[PendingItem] = []
        superseded: list[PendingItem] = []
        one_taken = False
        for p in batch:
            if p.kind == "follow_up":
                if p.mode == "all" or not one_taken:
                    speak.append(p)
                    one_taken = one_taken or p.mode == "one_at_a_time"
            elif latest[p.call_id] is p:
                speak.append(p)
            else:
                superseded.append(p)
        return speak, superseded

    async def _deliver_batch(self, target: Agent, batch: list[PendingItem], urgent: bool) -> None:
        speak, superseded = self._select(batch)
        if superseded:
            self._remove(superseded)
            self._emit(superseded, "skipped", reason="superseded")
        if not speak:
            return
        await self._insert(target, speak)
        if urgent and (self._replies or self._session.agent_state == "speaking"):
            try:
                await self._session.interrupt()
            except RuntimeError:
                logger.debug("could not interrupt the agent's speech")
        try:
            handle = self._session.generate_reply(instructions=self._instructions(target, speak))
        except RuntimeError:
            # e.g. scheduling is draining right after an AgentTask completed: keep the
            # items pending and try again at the next gate event (or after settle_delay)
            logger.debug("generate_reply refused, retrying", extra={"target": target.id})
            asyncio.get_running_loop().call_later(self._runtime.options.settle_delay, self.evaluate)
            return
        self._remove(speak)
        self._replies[handle.id] = _Reply(items=speak, handle=handle)
        self.gate.track(handle, target)
        self._emit(speak, "scheduled", speech_id=handle.id)
        handle.add_done_callback(self._on_reply_done)

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
        self._closed = True
        self._cancel_timer()
        current = self.gate.current()
        self.gate.close()
        pending, self._pending = self._pending, []
        held = [
            p
            for p in pending
            if p.on_handoff == "hold"
            and p.origin is not current
            and _compat.agent_is_closed(p.origin)
        ]
        rest = [p for p in pending if p not in held]
        if held:
            self._emit(held, "dropped", reason="origin_closed")
        if rest:
            self._emit(rest, "dropped", reason="session_closed")
