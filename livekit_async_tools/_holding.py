"""Keeps a caller company while a result is pending (``AsyncToolOptions.hold_after``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentSession

from ._pending import Pending
from ._ports import Services
from ._texts import render_message
from .events import TaskInfo
from .gate import Gate

__all__ = ["Holding"]


class Holding:
    """After ``hold_after`` seconds in which neither the caller nor the agent spoke
    while background calls of the current agent run, that agent says one short holding
    line (a follow-up from ``hold_template``, through the gate like any other). Any
    speech, the line itself included, starts the silence over, so a call gets at most
    one line per interval. A line not spoken yet is withdrawn when the calls it is
    about have all ended (their results are what the caller waits for)."""

    def __init__(
        self,
        services: Services,
        session: AgentSession[Any],
        gate: Gate,
        pending: Pending,
        live: Callable[[], tuple[TaskInfo, ...]],
    ) -> None:
        self._services = services
        self._session = session
        self._gate = gate
        self._pending = pending
        self._live = live
        self._timer: asyncio.TimerHandle | None = None
        self._queued: dict[str, set[str]] = {}  # follow-up id -> the calls it is about
        self._closed = False

    def poke(self) -> None:
        """Something happened (speech, a state change, a call started or ended): the
        silence starts over, if there is anything to wait for."""
        after = self._services.options.hold_after
        if after is None or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting():
            self._timer = asyncio.get_running_loop().call_later(after, self._silent)

    def call_ended(self, call_id: str) -> None:
        """Withdraw a holding line not spoken yet once none of its calls still runs."""
        for follow_up_id, calls in list(self._queued.items()):
            calls.discard(call_id)
            if not calls:
                del self._queued[follow_up_id]
                self._pending.withdraw_id(follow_up_id, "result_ready")
        self.poke()

    def spoken(self, follow_up_ids: tuple[str, ...]) -> None:
        """A reply carried (or dropped) these follow-ups: they are no longer queued."""
        for follow_up_id in follow_up_ids:
            self._queued.pop(follow_up_id, None)

    def _waiting(self) -> list[TaskInfo]:
        current = self._gate.current()
        busy = {c for calls in self._queued.values() for c in calls}
        return [
            t
            for t in self._live()
            if t.origin is current and t.state == "running" and t.call_id not in busy
        ]

    def _silent(self) -> None:
        self._timer = None
        after = self._services.options.hold_after
        calls = self._waiting()
        if (
            after is None
            or not calls
            or self._session.user_state != "listening"
            or self._session.agent_state != "listening"
        ):
            return
        origin = calls[0].origin
        progress = [render_message(t.last_message) for t in calls if t.last_message is not None]
        text = self._services.options.hold_template.format(
            tool_names=", ".join(dict.fromkeys(t.tool_name for t in calls)),
            seconds=after,
            progress=f" (last progress: {'; '.join(progress)})" if progress else "",
        )
        follow_up_id = self._pending.add_follow_up(
            text, origin=origin, on_handoff="cancel", mode="all"
        )
        self._queued[follow_up_id] = {t.call_id for t in calls}

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
