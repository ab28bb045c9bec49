"""What waits to be spoken: items in arrival order, superseding, routing by the handoff
table, and their writes into contexts. When and how they are spoken is `delivery`."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from livekit.agents import Agent, llm

from . import _compat, _policy
from ._chat_store import ChatStore
from ._log import logger
from ._ports import CallIdentity, PendingItem, Services
from ._spec import FollowUpMode
from .events import ReplyStatus
from .gate import Gate
from .options import Delivery

__all__ = ["Pending", "Report"]


class Report(Protocol):
    """Reports a status of items (``ReplyUpdated``); terminal ones end their tracking."""

    def __call__(
        self,
        items: list[PendingItem],
        status: ReplyStatus,
        *,
        reason: str | None = None,
        speech_id: str | None = None,
    ) -> None: ...


class Pending:
    """The items of one session that wait to be spoken, oldest first.

    A newer spoken item of a call (or its final, even silent) supersedes the call's
    pending progress at once: superseded items never reach a reply, never make one
    urgent and are never re-delivered. Implements `_ports.ItemSink` for the calls.
    """

    def __init__(
        self,
        services: Services,
        gate: Gate,
        store: ChatStore,
        report: Report,
        wake: Callable[[], None],
    ) -> None:
        self._services = services
        self._gate = gate
        self._store = store
        self._report = report
        self._wake = wake
        self._items: list[PendingItem] = []
        self._latest: dict[str, PendingItem] = {}
        self._follow_up_ids = itertools.count(1)
        self._follow_ups: weakref.WeakValueDictionary[str, PendingItem] = (
            weakref.WeakValueDictionary()
        )
        self.closed = False

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[PendingItem]:
        return iter(list(self._items))

    def describe(self) -> list[str]:
        return [f"pending {p.kind} {p.item_id}" for p in self._items]

    # -- adding ------------------------------------------------------------------------

    def add(
        self,
        call: CallIdentity,
        *,
        kind: Literal["update", "final", "question"],
        suffix: str,
        output: str,
        is_error: bool,
        delivery: Delivery,
        handoff: Agent | None = None,
        on_end: Callable[[str, str | None], None] | None = None,
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
            handoff=handoff,
            on_end=on_end,
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
        if self.closed:
            if delivery != "silent":
                self._report([item], "dropped", reason="session_closed")
            return None
        # a handing-off result waits for the gate even when silent (nothing is said)
        waits = delivery != "silent" or handoff is not None
        if kind != "question" and (waits or kind == "final"):
            previous = self._latest.pop(call.call_id, None)
            if waits:
                self._latest[call.call_id] = item
            if previous is not None and previous in self._items:
                self.remove([previous])
                self._report([previous], "skipped", reason="superseded")
        item.recording = self._services.spawn(self._record(item), name="async-tool:record")
        if waits:
            self._admit(item)
        self._wake()
        return item

    @staticmethod
    async def recorded(item: PendingItem) -> None:
        """Wait until ``item`` is written into its record target's context."""
        if item.recording is not None:
            await asyncio.shield(item.recording)

    async def _record(self, item: PendingItem) -> None:
        target = self._gate.record_target(item.origin, item.on_handoff)
        if target is None:
            return
        if self._store.traits(target).auto_reply:
            self._store.hold(target, item)  # written when spoken: the write is the reply
            return
        try:
            await self._store.insert(target, [item])
        except Exception:
            # e.g. the realtime session of an origin paused under an AgentTask on another
            # model is closed: the next write into that agent (its delivery, at the
            # latest) carries the item. Never raised into the tool's update().
            logger.warning(
                "could not record a deferred item yet; it is written with the next one",
                exc_info=True,
                extra={"target": target.id, "item": item.item_id},
            )
            self._store.hold(target, item)

    def add_follow_up(
        self, text: str, *, origin: Agent, on_handoff: str, mode: FollowUpMode
    ) -> str:
        """Queue an instruction spoken at the next quiet moment; returns its id."""
        if self.closed:
            raise RuntimeError("the session is closed; the follow-up was not queued")
        follow_up_id = f"follow_up_{next(self._follow_up_ids)}"
        item = PendingItem(
            call_id=follow_up_id,
            kind="follow_up",
            origin=origin,
            on_handoff=on_handoff,
            delivery="when_idle",
            item_id=follow_up_id,
            text=text,
            mode=mode,
        )
        self._follow_ups[follow_up_id] = item
        self._admit(item)
        self._wake()
        return follow_up_id

    def _admit(self, item: PendingItem) -> None:
        route = self.route(item)
        if route == "drop":
            self._report([item], "dropped", reason="origin_closed")
            return
        if route == "wait":
            self._gate.wait_for(item.origin, self._services.options.settle_delay)
        self._items.append(item)

    def put_back(self, items: list[PendingItem]) -> None:
        """Items of a cut or failed reply go back to the front, in their order, through
        the same admission as new ones (their origin may have been handed off since)."""
        dropped = [p for p in items if self.route(p) == "drop"]
        if dropped:
            self._report(dropped, "dropped", reason="origin_closed")
        self._items[:0] = [p for p in items if p not in dropped]

    # -- routing -----------------------------------------------------------------------

    def route(self, item: PendingItem) -> _policy.Route:
        """Who may speak ``item`` now (the handoff table, `_policy.route`)."""
        return _policy.route(
            self._gate.origin_state(item.origin),
            item.on_handoff,
            current_ready=self._gate.current_ready(),
        )

    def _cached_route(
        self, item: PendingItem, routes: dict[tuple[int, str], _policy.Route]
    ) -> _policy.Route:
        """`route`, computed once per origin and policy within one look."""
        key = (id(item.origin), item.on_handoff)
        route = routes.get(key)
        if route is None:
            route = routes[key] = self.route(item)
        return route

    def speakable(self) -> list[PendingItem]:
        """The items the current agent may speak now (each origin looked up once)."""
        routes: dict[tuple[int, str], _policy.Route] = {}
        return [p for p in self._items if self._cached_route(p, routes) in ("origin", "current")]

    def sweep(self) -> None:
        """Drop what nobody may ever speak (origin handed off under ``cancel``)."""
        routes: dict[tuple[int, str], _policy.Route] = {}
        dropped = [p for p in self._items if self._cached_route(p, routes) == "drop"]
        if dropped:
            self.remove(dropped)
            self._report(dropped, "dropped", reason="origin_closed")

    # -- removing ----------------------------------------------------------------------

    def gone(self, item: PendingItem) -> str | None:
        """Why ``item``, cut off or failed, must not be said again: its owner took it
        back (``withdrawn``'s reason), or a newer item of its call exists
        (``superseded``; follow-ups and questions never are: their owners withdraw
        them); ``None`` if it may be re-delivered."""
        if item.withdrawn is not None:
            return item.withdrawn
        newer = (
            item.kind not in ("follow_up", "question")
            and self._latest.get(item.call_id) is not item
        )
        return "superseded" if newer else None

    def remove(self, items: list[PendingItem]) -> None:
        gone = set(map(id, items))
        self._items = [p for p in self._items if id(p) not in gone]

    def withdraw(self, items: list[PendingItem], reason: str) -> None:
        """Take back ``items``: what they say no longer holds (a question was answered).
        Those that still wait are reported ``skipped`` with ``reason`` now; one a reply
        carries is never re-delivered (if that reply is cut off, it is skipped then)."""
        for p in items:
            p.withdrawn = reason
        waiting = [p for p in items if p in self._items]
        if waiting:
            self.remove(waiting)
            self._report(waiting, "skipped", reason=reason)

    def withdraw_id(self, follow_up_id: str, reason: str) -> None:
        """`withdraw` the follow-up with this id, waiting or being said."""
        item = self._follow_ups.get(follow_up_id)
        if item is not None:
            self.withdraw([item], reason)

    def drop_call(self, call_id: str, reason: str) -> None:
        """Drop the pending items of one call (e.g. it was cancelled at handoff)."""
        dropped = [p for p in self._items if p.call_id == call_id]
        if dropped:
            self.remove(dropped)
            self._report(dropped, "dropped", reason=reason)

    def finished(self, items: list[PendingItem]) -> None:
        """``items`` reached a terminal status: forget their calls' finals."""
        for p in items:
            if p.kind == "final" and self._latest.get(p.call_id) is p:
                del self._latest[p.call_id]

    def close(self) -> None:
        """Drop everything: ``origin_closed`` for held items, else ``session_closed``."""
        if self.closed:
            return
        reasons = [
            (p, _policy.close_reason(self._gate.origin_state(p.origin), p.on_handoff))
            for p in self._items
        ]
        self.closed = True
        self._items = []
        for reason in ("origin_closed", "session_closed"):
            items = [p for p, r in reasons if r == reason]
            if items:
                self._report(items, "dropped", reason=reason)
