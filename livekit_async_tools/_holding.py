"""Keeps a caller company while a result is pending (``AsyncToolOptions.hold_after``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from livekit.agents import Agent, AgentSession

from ._pending import Pending
from ._ports import Services
from ._texts import render_message
from .events import ReplyUpdated, TaskInfo
from .gate import Gate

__all__ = ["Holding"]

_TERMINAL = ("delivered", "skipped", "dropped")


class Holding:
    """After ``hold_after`` seconds in which nobody spoke (not the caller, not the
    agent, no reply under way) while background calls whose results the current agent
    will speak run (its own, or calls forwarded to it from an origin handed off for
    good), that agent says one short holding line: a follow-up from ``hold_template``
    about every such call, spoken through the gate like any other.

    A line belongs to the silence it was queued in. Anything that happens before its
    reply starts (the caller or the agent speaking, a reply, a call starting or ending:
    every `poke`) withdraws it (``skipped``, reason ``superseded``), so it is never
    said after a result it was waiting for, nor after the caller spoke; a line cut off
    by the caller is withdrawn the same way instead of being said again. Every poke
    also starts the silence over: a call gets at most one line per interval. No line
    while a question a call asks the caller is open, ``ctx.ask``'s or an overdue
    call's (the caller is the one expected to speak). A caller livekit marked
    ``away`` is silent too: a line is for them."""

    def __init__(
        self,
        services: Services,
        session: AgentSession[Any],
        gate: Gate,
        pending: Pending,
        serving: Callable[[Agent | None], tuple[TaskInfo, ...]],
        asking: Callable[[], bool],
    ) -> None:
        self._services = services
        self._session = session
        self._gate = gate
        self._pending = pending
        self._serving = serving
        self._asking = asking
        self._timer: asyncio.TimerHandle | None = None
        # follow-up id -> the calls it is about, until its reply reached a final status
        self._lines: dict[str, frozenset[str]] = {}
        self._closed = False

    def poke(self) -> None:
        """Something happened (speech, a state change, a call started or ended): a line
        not spoken yet is withdrawn, and the silence starts over if a call runs."""
        if self._services.options.hold_after is None or self._closed:
            return
        for follow_up_id in list(self._lines):
            self._pending.withdraw_id(follow_up_id, "superseded")  # never said (again)
        self._arm()

    def recheck(self) -> None:
        """The session's state changed: a line queued before a question to the caller
        opened (``ctx.ask``, an overdue call) is withdrawn, not said with it."""
        if self._lines and self._asking():
            self.poke()

    def on_reply(self, event: ReplyUpdated) -> None:
        """A line's reply ended (or the line was withdrawn): its calls may get the next
        one after a new interval of silence."""
        if event.status in _TERMINAL and any(i in self._lines for i in event.call_ids):
            for follow_up_id in event.call_ids:
                self._lines.pop(follow_up_id, None)
            self._arm()

    def _arm(self) -> None:
        """Start the silence over: ``hold_after`` from now, if a call waits for a line."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        after = self._services.options.hold_after
        if after is not None and not self._closed and self._waiting(self._gate.current()):
            self._timer = asyncio.get_running_loop().call_later(after, self._silent)

    def _waiting(self, current: Agent | None) -> list[TaskInfo]:
        """The running calls whose results ``current`` will speak (its own, or calls
        forwarded to it) that no line is about yet."""
        held = {c for calls in self._lines.values() for c in calls}
        return [t for t in self._serving(current) if t.state == "running" and t.call_id not in held]

    def _silent(self) -> None:
        self._timer = None
        after = self._services.options.hold_after
        current = self._gate.current()
        calls = self._waiting(current)
        if (
            after is None
            or current is None
            or not calls
            or self._asking()
            or self._session.user_state == "speaking"
            or self._session.agent_state not in ("listening", "idle")
        ):
            return  # the next poke (any change of state) arms the timer again
        text = self._services.options.hold_template.format(
            tool_names=", ".join(dict.fromkeys(t.tool_name for t in calls)),
            seconds=after,
            progress=_progress(calls),
        )
        follow_up_id = self._pending.add_follow_up(
            text, origin=current, on_handoff="cancel", mode="all"
        )
        self._lines[follow_up_id] = frozenset(t.call_id for t in calls)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _progress(calls: list[TaskInfo]) -> str:
    """``{progress}``: the calls' last update messages (each named by its tool when
    there are several), or empty when none has one."""
    said = [
        render_message(t.last_message)
        if len(calls) == 1
        else f"{t.tool_name}: {render_message(t.last_message)}"
        for t in calls
        if t.last_message is not None
    ]
    return f" (last progress: {'; '.join(said)})" if said else ""
