"""The wait-for-idle gate: is the session quiet enough for a deferred reply?"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from livekit.agents import Agent, AgentSession, llm

from . import _compat

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

__all__ = ["Gate"]

_QUIET_AGENT_STATES = ("listening", "idle")


class Gate:
    """Tracks what makes a session busy, and calls ``wake`` whenever it may change.

    Quiet for an agent means: it is listening, the caller is not speaking, no
    caller turn is pending (after the caller stops, until the turn is committed
    or the bounded wait derived from the session's endpointing passes), and every
    speech handle created while that agent was current (tool dispatch included)
    is done. Handles of a paused agent (e.g. the tool call that awaits an
    `AgentTask`) do not block the agent on top; those of a closed agent still
    draining do.
    """

    def __init__(self, session: AgentSession[Any], wake: Callable[[], None]) -> None:
        self._session = session
        self._wake = wake
        self._handles: dict[str, tuple[SpeechHandle, Agent]] = {}
        self._turn_pending = False
        self._committed_since_speech = False
        self._turn_deadline: asyncio.TimerHandle | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._exiting: weakref.WeakSet[Agent] = weakref.WeakSet()

    def current(self) -> Agent | None:
        """The session's current agent, or ``None`` before start / after close."""
        try:
            return self._session.current_agent
        except RuntimeError:
            return None

    # -- speech handles ------------------------------------------------------------

    def track(self, handle: SpeechHandle, owner: Agent | None = None) -> None:
        """Count ``handle`` against ``owner`` (default: the current agent) until done."""
        if handle.done() or handle.id in self._handles:
            return
        if owner is None:
            owner = self.current()
            if owner is None:
                return
        self._handles[handle.id] = (handle, owner)
        handle.add_done_callback(self._on_handle_done)

    def _on_handle_done(self, handle: SpeechHandle) -> None:
        self._handles.pop(handle.id, None)
        self._wake()

    # -- the caller's turn -----------------------------------------------------------

    def on_user_state(self, ev: Any) -> None:
        """The caller started or stopped speaking (``user_state_changed``)."""
        if ev.new_state == "speaking":
            self._committed_since_speech = False
            self._set_turn_pending(False)
        elif ev.old_state == "speaking" and not self._committed_since_speech:
            self._set_turn_pending(True)
        self._wake()

    def on_item_added(self, ev: Any) -> None:
        """A conversation item landed; a user message commits the caller's turn."""
        item = ev.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            self._committed_since_speech = True
            self._set_turn_pending(False)
        self._wake()

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
        self._wake()

    # -- closing origins (livekit-agents < 1.5) ----------------------------------------

    def on_lifecycle(self, agent: Agent, which: Literal["enter", "exit"]) -> None:
        """An origin entered or exited (see `_compat.notify_lifecycle`)."""
        if which == "exit":
            self._exiting.add(agent)
        else:
            self._exiting.discard(agent)  # handed back to: running again
        self._wake()

    def watch_closing(self, settle_delay: float) -> None:
        """An origin whose ``on_exit`` ran is still closing: look again after
        ``settle_delay`` until it is closed, so its handoff policy applies without
        waiting for an unrelated event (only before 1.5, where no event follows)."""
        if self._recheck is not None:
            return
        if any(not _compat.agent_is_closed(a) for a in self._exiting):
            self._recheck = asyncio.get_running_loop().call_later(
                max(settle_delay, 0.05), self._on_recheck
            )

    def _on_recheck(self) -> None:
        self._recheck = None
        self._wake()

    # -- the verdicts ----------------------------------------------------------------

    def caller_done(self) -> bool:
        """The caller is not speaking and no turn of theirs is pending."""
        return self._session.user_state != "speaking" and not self._turn_pending

    def quiet(self, agent: Agent) -> bool:
        """Quiet enough for ``agent`` to start a deferred reply (see the class doc)."""
        if self._session.agent_state not in _QUIET_AGENT_STATES or not self.caller_done():
            return False
        for handle, owner in self._handles.values():
            if handle.done():
                continue
            if owner is agent or _compat.agent_is_closed(owner):
                return False
        return True

    def may_cut_in(self) -> bool:
        """For ``"interrupt"`` delivery: the caller is done and the agent is not in
        the middle of a tool dispatch or LLM request (its own speech may be cut)."""
        return self.caller_done() and self._session.agent_state in (
            *_QUIET_AGENT_STATES,
            "speaking",
        )

    def close(self) -> None:
        """Cancel the gate's timers and forget its handles."""
        for timer in (self._recheck, self._turn_deadline):
            if timer is not None:
                timer.cancel()
        self._recheck = self._turn_deadline = None
        self._handles.clear()
