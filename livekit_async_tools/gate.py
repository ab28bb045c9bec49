"""The wait-for-idle gate: is the session quiet enough for a deferred reply?"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from livekit.agents import Agent, AgentSession, llm

from . import _compat, _policy
from ._policy import Floor, OriginState

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

__all__ = ["Gate"]


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

    def __init__(
        self,
        session: AgentSession[Any],
        wake: Callable[[], None],
        lifecycle: Callable[[], None],
    ) -> None:
        self._session = session
        self._wake = wake
        self._lifecycle = lifecycle
        self._handles: dict[str, tuple[SpeechHandle, Agent]] = {}
        self._turn_pending = False
        self._committed_since_speech = False
        self._turn_deadline: asyncio.TimerHandle | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._exiting: weakref.WeakSet[Agent] = weakref.WeakSet()
        self._waiting: weakref.WeakSet[Agent] = weakref.WeakSet()
        self._dispatching: dict[int, tuple[Agent, int]] = {}
        # the agent livekit routes replies to: set when its activity took over (the
        # handoff item); a handoff in progress leaves `current_agent` ahead of it
        self._routed: weakref.ref[Agent] | None = None
        current = self.current()
        if current is not None and not _compat.agent_is_closed(current):
            self._routed = weakref.ref(current)

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
        if (
            isinstance(item, llm.ChatMessage)
            and item.role == "user"
            and self._session.user_state != "speaking"
        ):
            # a turn is committed after the caller stopped; a message that lands while
            # they still speak (typed text) is not the transcript of this speech
            self._committed_since_speech = True
            self._set_turn_pending(False)
        elif getattr(item, "type", None) == "agent_handoff":
            current = self.current()
            ok = current is not None and current.id == getattr(item, "new_agent_id", None)
            self._routed = weakref.ref(current) if ok and current is not None else None
            # livekit attaches the new activity to its agent right after this event,
            # before it yields: look again then
            self._soon = asyncio.get_running_loop().call_soon(self._on_recheck_soon)
        self._wake()

    def _on_recheck_soon(self) -> None:
        self._soon = None
        self._lifecycle()

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
        self._lifecycle()

    def watch_closing(self, settle_delay: float) -> None:
        """An origin whose ``on_exit`` ran is still closing: look again after
        ``settle_delay`` until it is closed, so its handoff policy applies without
        waiting for an unrelated event (only before 1.5, where no event follows)."""
        if self._recheck is not None:
            return
        current = self.current()
        waiting = [a for a in self._waiting if a is not current]
        if any(not _compat.agent_is_closed(a) for a in [*self._exiting, *waiting]):
            self._recheck = asyncio.get_running_loop().call_later(
                max(settle_delay, 0.05), self._on_recheck
            )

    def wait_for(self, agent: Agent, settle_delay: float) -> None:
        """Items wait for ``agent`` (paused or draining). Before 1.5 no event says when it
        closes or comes back, so look again every ``settle_delay`` while it is neither
        (from 1.5 livekit's handoff item does). Forgotten once it is closed or current."""
        if _compat.HANDOFF_ITEMS:
            return
        self._waiting.add(agent)
        self.watch_closing(settle_delay)

    def _on_recheck(self) -> None:
        self._recheck = None
        self._lifecycle()

    # -- own tool dispatches ---------------------------------------------------------

    def dispatch_started(self, agent: Agent) -> None:
        """One of the package's tool dispatches of ``agent`` is in flight (until
        `dispatch_ended`), also if livekit already gave up on its speech handle."""
        _, count = self._dispatching.get(id(agent), (agent, 0))
        self._dispatching[id(agent)] = (agent, count + 1)

    def dispatch_ended(self, agent: Agent) -> None:
        _, count = self._dispatching.get(id(agent), (agent, 1))
        if count <= 1:
            self._dispatching.pop(id(agent), None)
        else:
            self._dispatching[id(agent)] = (agent, count - 1)
        self._wake()

    # -- the snapshot ------------------------------------------------------------------

    def current_ready(self) -> bool:
        """The current agent is the one livekit routes replies to (no handoff in flight)."""
        current = self.current()
        if current is None or _compat.agent_is_closed(current):
            return False
        if not _compat.HANDOFF_ITEMS:
            return True  # < 1.5: no handoff event; the activity check above is all we have
        routed = self._routed() if self._routed is not None else None
        return routed is current

    def origin_state(self, agent: Agent) -> OriginState:
        """Where ``agent`` stands for the handoff table (see `_policy.OriginState`)."""
        if agent is self.current():
            return "current" if self.current_ready() else "entering"
        return "closed" if _compat.agent_is_closed(agent) else "paused"

    def record_target(self, origin: Agent, on_handoff: str) -> Agent | None:
        """Where something for ``origin`` is recorded now: the origin (also when paused),
        or, once it is closed and ``forward`` applies, the current agent."""
        if _policy.record_in_origin(self.origin_state(origin), on_handoff):
            return origin
        return self.current()

    def floor(self, agent: Agent, *, replying: bool) -> Floor:
        """What the session is doing, as seen for ``agent`` (see `_policy.Floor`)."""
        busy = 0
        dispatch_busy = id(agent) in self._dispatching
        for handle, owner in self._handles.values():
            if handle.done() or handle.interrupted:
                continue
            if owner is agent or _compat.agent_is_closed(owner):
                busy += 1
                dispatch_busy = dispatch_busy or _has_open_tool_call(handle)
        return Floor(
            agent_state=self._session.agent_state,
            caller_speaking=self._session.user_state == "speaking",
            turn_pending=self._turn_pending,
            speech_busy=busy > 0,
            busy_speeches=busy,
            dispatch_busy=dispatch_busy,
            replying=replying,
        )

    def quiet(self, agent: Agent, *, replying: bool = False) -> bool:
        """Quiet enough for ``agent`` to start a deferred reply (see the class doc)."""
        return _policy.quiet(self.floor(agent, replying=replying))

    def may_cut_in(self, agent: Agent) -> bool:
        """For ``"interrupt"`` delivery: the caller is done and no tool dispatch or LLM
        request of ``agent`` is in flight (its own speech may be cut)."""
        return _policy.may_cut_in(self.floor(agent, replying=False))

    def close(self) -> None:
        """Cancel the gate's timers and forget its handles."""
        for timer in (self._recheck, self._turn_deadline, self._soon):
            if timer is not None:
                timer.cancel()
        self._recheck = self._turn_deadline = self._soon = None
        self._handles.clear()


def _has_open_tool_call(handle: SpeechHandle) -> bool:
    """True while a tool of ``handle`` runs (a call without its output yet)."""
    calls = {i.call_id for i in handle.chat_items if isinstance(i, llm.FunctionCall)}
    if not calls:
        return False
    outs = {i.call_id for i in handle.chat_items if isinstance(i, llm.FunctionCallOutput)}
    return not calls <= outs
