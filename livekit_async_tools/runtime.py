"""`AsyncToolRuntime`: one session's background calls, `attach`, events; the composition root.

The runtime is the only module that wires the parts together: each part below gets
the narrow port it needs (`_ports.Services` and friends), never the runtime itself.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, overload

from livekit.agents import Agent, AgentSession, RunContext, llm

from . import _compat
from ._calls import Body, Calls
from ._chat_store import ChatStore
from ._log import logger
from ._ports import CONTROLS, Event
from ._spec import FollowUpMode, ToolSpec
from .control import ControlTools
from .delivery import DeliveryQueue
from .events import ReplyUpdated, TaskEnded, TaskInfo, TaskStarted, TaskStatus, TaskUpdated
from .gate import Gate
from .options import AsyncToolOptions
from .steering import Steering

__all__ = ["AsyncToolRuntime", "AttachError", "attach", "dispatch", "runtime_of"]

_T = TypeVar("_T")
_EVENT_NAMES: dict[type, str] = {
    TaskStarted: "task_started",
    TaskUpdated: "task_updated",
    TaskEnded: "task_ended",
    ReplyUpdated: "reply_updated",
}
_EVENTS = tuple(_EVENT_NAMES.values())

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
    runtime = attach(run_ctx.session)
    _compat.notify_lifecycle(origin, runtime._gate.on_lifecycle)
    return await runtime._calls.dispatch(
        spec, run_ctx, body, arguments, origin, confirmed=confirmed
    )


class _Services:
    """The `_ports.Services` the parts get: settings, events out, tasks, a nudge."""

    def __init__(self, runtime: AsyncToolRuntime) -> None:
        self._runtime = runtime
        self.options = runtime.options

    def emit(self, event: Event) -> None:
        self._runtime._emit(event)

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        return self._runtime._spawn(coro, name=name)

    def changed(self) -> None:
        self._runtime._check_idle()


class _Notes:
    """`_ports.Notes`: steering notes and follow-ups aimed at a call's origin."""

    def __init__(self, runtime: AsyncToolRuntime) -> None:
        self._runtime = runtime

    def steer(self, text: str, *, origin: Agent, on_handoff: str) -> None:
        self._runtime._steer(text, origin=origin, on_handoff=on_handoff)

    def follow_up(self, text: str, *, origin: Agent, on_handoff: str, mode: FollowUpMode) -> str:
        return self._runtime._follow_up(text, origin=origin, on_handoff=on_handoff, mode=mode)


class _Control:
    """`_ports.SessionControl` for the LLM-facing control tools."""

    def __init__(self, runtime: AsyncToolRuntime) -> None:
        self._runtime = runtime
        self._ended: dict[str, TaskStatus] = {}

    @property
    def options(self) -> AsyncToolOptions:
        return self._runtime.options

    @property
    def tasks(self) -> tuple[TaskInfo, ...]:
        return self._runtime.tasks

    async def cancel(self, call_id: str) -> bool:
        call = self._runtime._calls.get(call_id)
        cancelled = await self._runtime.cancel(call_id)
        if call is not None and call.status is not None and not cancelled:
            self._ended[call_id] = call.status
        return cancelled

    def status_of(self, call_id: str) -> str | None:
        return self._ended.pop(call_id, None)


class AsyncToolRuntime:
    """Background calls of one `AgentSession`: registry, events, delivery, cancel.

    Create it with `attach`; do not instantiate it directly.
    """

    def __init__(self, session: AgentSession[Any], options: AsyncToolOptions) -> None:
        self._session = session
        self._options = options
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: dict[str, list[Callable[[Any], object]]] = {e: [] for e in _EVENTS}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        services = _Services(self)
        store = ChatStore()
        self._gate = Gate(session, self._wake, self._on_lifecycle)
        self._delivery = DeliveryQueue(services, session, self._gate, store)
        self._steering = Steering(services, self._gate, store)
        self._calls = Calls(services, self._gate, self._delivery, _Notes(self), self._call_ended)
        self._control_tools = ControlTools(services, session, store, lambda: len(self._calls) > 0)
        CONTROLS.set(session, _Control(self))
        self._session_handlers: list[tuple[str, Callable[[Any], None]]] = [
            ("agent_state_changed", self._on_state_event),
            ("function_tools_executed", self._on_state_event),
            ("user_state_changed", self._gate.on_user_state),
            ("conversation_item_added", self._on_item_added),
            ("speech_created", self._on_speech_created),
            ("close", self._on_session_close),
        ]
        for name, handler in self._session_handlers:
            session.on(name, handler)  # type: ignore[arg-type]

    # -- public ------------------------------------------------------------------------

    @property
    def session(self) -> AgentSession[Any]:
        """The session this runtime serves."""
        return self._session

    @property
    def options(self) -> AsyncToolOptions:
        """The runtime's settings."""
        return self._options

    @property
    def closed(self) -> bool:
        """True once the session closed (or `aclose` ran)."""
        return self._closed

    @property
    def tasks(self) -> tuple[TaskInfo, ...]:
        """Snapshots of the live background calls, oldest first."""
        return self._calls.infos()

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
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; expected one of {_EVENTS}")
        self._listeners[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[[Any], object]) -> None:
        """Unsubscribe ``callback`` from ``event`` (no error if not subscribed)."""
        listeners = self._listeners.get(event, [])
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
        call = self._calls.get(call_id)
        if call is None:
            raise llm.ToolError(self._options.cancel_unknown_template.format(call_id=call_id))
        if not call.spec.cancellable:
            raise llm.ToolError(
                self._options.cancel_refused_template.format(
                    tool_name=call.tool_name, call_id=call_id
                )
            )
        return await self._calls.stop(call, "cancelled")

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
        if self._is_idle():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"settle() timed out after {timeout}s; still busy: " + "; ".join(self.describe())
            ) from None
        finally:
            if fut in self._idle_waiters:
                self._idle_waiters.remove(fut)

    def steer(self, text: str) -> None:
        """Give the current agent a note the LLM sees before its next request.

        The note goes into the agent's context at once as a system message (the
        caller never hears it); if the agent changes before the LLM was asked
        again, the note moves to the new agent too.

        Raises:
            RuntimeError: The session is closed or has no current agent.
        """
        if self._closed:
            raise RuntimeError("the session is closed; the steering note was not recorded")
        self._steering.steer(text, origin=None)

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
        return self._follow_up(text, origin=None, on_handoff=None, mode=mode)

    def describe(self) -> list[str]:
        """Human-readable lines naming what is running or pending."""
        lines = self._calls.describe() + self._delivery.describe()
        if not lines and self._tasks:
            lines.append(f"{len(self._tasks)} internal task(s) finishing")
        return lines

    async def aclose(self) -> None:
        """Cancel every call, drop pending replies and wait for all tasks. Idempotent."""
        self._close()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internal ------------------------------------------------------------------------

    def _steer(self, text: str, *, origin: Agent, on_handoff: str) -> None:
        if self._closed:
            raise RuntimeError("the session is closed; the steering note was not recorded")
        self._steering.steer(text, origin=origin, on_handoff=on_handoff)

    def _follow_up(
        self, text: str, *, origin: Agent | None, on_handoff: str | None, mode: FollowUpMode
    ) -> str:
        if mode not in ("one_at_a_time", "all"):
            raise ValueError(f"mode must be 'one_at_a_time' or 'all', got {mode!r}")
        if self._closed:
            raise RuntimeError("the session is closed; the follow-up was not queued")
        target = origin or self._gate.current()
        if target is None:
            raise RuntimeError("the session has no current agent; start it first")
        _compat.notify_lifecycle(target, self._gate.on_lifecycle)
        return self._delivery.add_follow_up(
            text, origin=target, on_handoff=on_handoff or self._options.on_handoff, mode=mode
        )

    def _spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("internal task failed", exc_info=exc, extra={"task": task.get_name()})
        self._check_idle()

    def _emit(self, event: Event) -> None:
        name = _EVENT_NAMES[type(event)]
        for callback in list(self._listeners[name]):
            try:
                callback(event)
            except Exception:
                logger.exception("event callback raised", extra={"event": name})

    def _call_ended(self) -> None:
        self._control_tools.schedule()

    def _is_idle(self) -> bool:
        return not len(self._calls) and not self._tasks and self._delivery.idle

    def _check_idle(self) -> None:
        if self._idle_waiters and self._is_idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- session events ----------------------------------------------------------------

    def _wake(self) -> None:
        self._delivery.evaluate()

    def _on_lifecycle(self) -> None:
        """Agents may have been handed off, closed or handed back to."""
        if self._closed:
            return
        self._calls.cancel_handed_off(self._delivery.drop_call)
        self._gate.watch_closing(self._options.settle_delay)
        self._delivery.on_lifecycle()

    def _on_state_event(self, ev: object) -> None:
        self._control_tools.schedule()
        self._steering.on_session_event(ev)
        self._delivery.evaluate()

    def _on_item_added(self, ev: Any) -> None:
        self._control_tools.schedule()
        self._steering.on_agent_maybe_changed()
        self._gate.on_item_added(ev)

    def _on_speech_created(self, ev: Any) -> None:
        self._gate.track(ev.speech_handle)
        self._delivery.evaluate()

    def _on_session_close(self, _ev: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name, handler in self._session_handlers:
            self._session.off(name, handler)  # type: ignore[arg-type]
        self._delivery.close()
        self._gate.close()
        self._control_tools.close()
        self._calls.close()
        CONTROLS.set(self._session, None)
        if _runtimes.get(self._session) is self:
            del _runtimes[self._session]
        self._check_idle()
