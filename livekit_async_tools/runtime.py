"""`AsyncToolRuntime`: the public face of one session's background calls, and `attach`.

The parts are wired together in `_core.Core`; this module holds the documented API.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, Literal, overload

from livekit.agents import Agent, AgentSession, RunContext

from . import _compat
from ._calls import Body
from ._core import EVENTS, Core
from ._spec import FollowUpMode, ToolSpec
from .events import ReplyUpdated, TaskEnded, TaskInfo, TaskStarted, TaskUpdated
from .options import AsyncToolOptions

__all__ = ["AsyncToolRuntime", "AttachError", "attach", "dispatch", "runtime_of"]

_runtimes: weakref.WeakKeyDictionary[AgentSession[Any], AsyncToolRuntime] = (
    weakref.WeakKeyDictionary()
)


class AttachError(ValueError):
    """`attach` was called again for a session with different options."""


def attach(session: AgentSession[Any], options: AsyncToolOptions | None = None) -> AsyncToolRuntime:
    """Get or create the async tool runtime of ``session``.

    Idempotent: later calls return the same runtime. The first async tool call of
    a session creates it with default options if the app never called `attach`.

    Args:
        session: The session whose background calls the runtime manages.
        options: Settings; ``None`` means the defaults (or the existing runtime's).

    Returns:
        The session's runtime.

    Raises:
        AttachError: The runtime already exists with different options (call
            `attach` with your options before the first async tool call).

    Example::

        session = AgentSession(llm=..., stt=..., tts=...)
        runtime = attach(session, AsyncToolOptions(settle_delay=0.5))
        runtime.on("task_ended", lambda ev: print(ev.call_id, ev.status))
        await session.start(MyAgent())
    """
    runtime = _runtimes.get(session)
    if runtime is not None and not runtime.closed:
        if options is not None and options != runtime.options:
            raise AttachError(
                "attach() was already called for this session (or an async tool created "
                "its runtime with default options) and the options differ; call "
                "attach(session, options) once, before session.start()"
            )
        return runtime
    runtime = AsyncToolRuntime(session, options or AsyncToolOptions())
    _runtimes[session] = runtime
    return runtime


def runtime_of(session: AgentSession[Any]) -> AsyncToolRuntime | None:
    """The live runtime of ``session``, if one was attached."""
    runtime = _runtimes.get(session)
    return runtime if runtime is not None and not runtime.closed else None


async def dispatch(
    spec: ToolSpec,
    run_ctx: RunContext[Any],
    body: Body,
    arguments: dict[str, object],
    origin: Agent,
    *,
    confirmed: bool,
) -> object:
    """Start a background call in ``run_ctx``'s session (used by the tool wrapper)."""
    core = attach(run_ctx.session)._core
    _compat.notify_lifecycle(origin, core.gate.on_lifecycle)
    return await core.calls.dispatch(spec, run_ctx, body, arguments, origin, confirmed=confirmed)


class AsyncToolRuntime:
    """Background calls of one `AgentSession`: registry, events, delivery, cancel.

    Create it with `attach`; do not instantiate it directly.
    """

    def __init__(self, session: AgentSession[Any], options: AsyncToolOptions) -> None:
        self._core = Core(session, options, on_closed=self._forget)

    def _forget(self) -> None:
        if _runtimes.get(self._core.session) is self:
            del _runtimes[self._core.session]

    # -- public ------------------------------------------------------------------------

    @property
    def session(self) -> AgentSession[Any]:
        """The session this runtime serves."""
        return self._core.session

    @property
    def options(self) -> AsyncToolOptions:
        """The runtime's settings."""
        return self._core.options

    @property
    def closed(self) -> bool:
        """True once the session closed (or `aclose` ran)."""
        return self._core.closed

    @property
    def tasks(self) -> tuple[TaskInfo, ...]:
        """Snapshots of the live background calls, oldest first."""
        return self._core.tasks

    @overload
    def on(
        self, event: Literal["task_started"], callback: Callable[[TaskStarted], object]
    ) -> Callable[[TaskStarted], object]: ...
    @overload
    def on(
        self, event: Literal["task_updated"], callback: Callable[[TaskUpdated], object]
    ) -> Callable[[TaskUpdated], object]: ...
    @overload
    def on(
        self, event: Literal["task_ended"], callback: Callable[[TaskEnded], object]
    ) -> Callable[[TaskEnded], object]: ...
    @overload
    def on(
        self, event: Literal["reply_updated"], callback: Callable[[ReplyUpdated], object]
    ) -> Callable[[ReplyUpdated], object]: ...
    def on(self, event: str, callback: Callable[[Any], object]) -> Callable[[Any], object]:
        """Subscribe to an event; returns ``callback``.

        Events per call are ordered ``task_started`` → ``task_updated`` (the first is
        the acknowledgement) → ``task_updated``\\* → ``task_ended``; every
        ``reply_updated`` comes after the event that produced its items.

        Raises:
            ValueError: ``event`` is not one of the four event names.
        """
        if event not in self._core.listeners:
            raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
        self._core.listeners[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[[Any], object]) -> None:
        """Unsubscribe ``callback`` from ``event`` (no error if not subscribed)."""
        listeners = self._core.listeners.get(event, [])
        if callback in listeners:
            listeners.remove(callback)

    async def cancel(self, call_id: str) -> bool:
        """Cancel a running call and wait until it has stopped.

        Args:
            call_id: The call's id (see `tasks`).

        Returns:
            True if this request cancelled it; False if it ended on its own first
            (its real outcome stands).

        Raises:
            livekit.agents.llm.ToolError: The id is unknown or the call is not
                cancellable (the message says which, for the LLM to relay).
        """
        return await self._core.cancel(call_id) == "cancelled"

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until no call is running and no deferred reply is pending.

        Every reply is then delivered, skipped or dropped. Tests use this to wait
        for background work.

        Args:
            timeout: Seconds to wait at most (event-loop time); ``None`` waits forever.

        Raises:
            TimeoutError: The timeout passed; the message lists what is still running
                or pending.
        """
        core = self._core
        if core.is_idle():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        core.idle_waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"settle() timed out after {timeout}s; still busy: " + "; ".join(self.describe())
            ) from None
        finally:
            if fut in core.idle_waiters:
                core.idle_waiters.remove(fut)

    def steer(self, text: str) -> None:
        """Give the current agent a note the LLM sees before its next request.

        The note goes into the agent's context at once as a system message (the
        caller never hears it); if the agent changes before the LLM was asked
        again, the note moves to the new agent too.

        Raises:
            RuntimeError: The session is closed or has no current agent.
        """
        self._core.steer(text, origin=None)

    def follow_up(self, text: str, *, mode: FollowUpMode = "one_at_a_time") -> str:
        """Queue an instruction for the current agent, spoken at the next quiet moment.

        It goes through the same gate as results: with ``mode="one_at_a_time"`` at
        most one such follow-up is spoken per quiet moment, with ``"all"`` every
        pending one goes into the next reply. It follows the runtime's
        ``on_handoff`` policy if the agent is handed off.

        Args:
            text: The instruction for the LLM (e.g. "Ask whether they need a hotel").
            mode: ``"one_at_a_time"`` or ``"all"``.

        Returns:
            The follow-up's id, used as its ``call_ids`` in `ReplyUpdated` events.

        Raises:
            RuntimeError: The session is closed or has no current agent.
        """
        return self._core.follow_up(text, origin=None, on_handoff=None, mode=mode)

    def describe(self) -> list[str]:
        """Human-readable lines naming what is running or pending."""
        return self._core.describe()

    async def aclose(self) -> None:
        """Cancel every call, drop pending replies and wait for all tasks. Idempotent."""
        self._core.close()
        await self._core.wait_tasks()
