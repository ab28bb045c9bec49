"""`AsyncToolRuntime`: the per-session registry of background calls, `attach`, events."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from livekit.agents import Agent, AgentSession, RunContext, llm

from . import _compat, _policy
from ._log import logger
from .context import AsyncRunContext
from .control import ControlTools
from .delivery import DeliveryQueue, FollowUpMode
from .events import ReplyUpdated, TaskEnded, TaskInfo, TaskStarted, TaskUpdated
from .options import AsyncToolOptions
from .steering import Steering
from .task import Acknowledged, AsyncCall, Finished, render_message

if TYPE_CHECKING:
    from .tool import ToolSpec

CONFIRM_PARAM = "confirm_duplicate"
"""The boolean parameter ``on_duplicate="confirm"`` adds to a tool's schema."""


def duplicate_key(spec: ToolSpec, arguments: dict[str, object]) -> str:
    """What makes two calls the same: the name, plus canonical JSON of the arguments."""
    if spec.duplicate_scope == "name":
        return spec.name
    return spec.name + json.dumps(arguments, sort_keys=True, default=str, ensure_ascii=False)


__all__ = ["AsyncToolRuntime", "attach", "runtime_of"]

_T = TypeVar("_T")
_EVENTS = ("task_started", "task_updated", "task_ended", "reply_updated")
_SESSION_EVENTS = ("agent_state_changed", "function_tools_executed")

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


class AsyncToolRuntime:
    """Background calls of one `AgentSession`: registry, events, delivery, cancel.

    Create it with `attach`; do not instantiate it directly.
    """

    def __init__(self, session: AgentSession[Any], options: AsyncToolOptions) -> None:
        self._session = session
        self._options = options
        self._calls: dict[str, AsyncCall] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: dict[str, list[Callable[[Any], object]]] = {e: [] for e in _EVENTS}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self.delivery = DeliveryQueue(self, session)
        self.control = ControlTools(self)
        self._steering = Steering(self)
        self._session_handlers: list[tuple[str, Callable[[Any], None]]] = [
            (name, self._on_session_event) for name in _SESSION_EVENTS
        ]
        self._session_handlers += [
            ("user_state_changed", self._on_user_state),
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
        return tuple(call.info() for call in self._calls.values())

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
        return await self.stop(call, "cancelled")

    @property
    def has_live_calls(self) -> bool:
        """True while at least one call runs (cheaper than ``bool(tasks)``)."""
        return bool(self._calls)

    def find_call(self, call_id: str) -> AsyncCall | None:
        """The live call with ``call_id`` (internal)."""
        return self._calls.get(call_id)

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
        self._steering.steer(text, origin=None)

    def steer_from(self, text: str, *, origin: Agent, on_handoff: str) -> None:
        """`steer` aimed at a call's origin agent (internal; used by the context)."""
        self._steering.steer(text, origin=origin, on_handoff=on_handoff)

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
        return self.queue_follow_up(text, origin=None, on_handoff=None, mode=mode)

    def queue_follow_up(
        self, text: str, *, origin: Agent | None, on_handoff: str | None, mode: FollowUpMode
    ) -> str:
        """`follow_up` for a given origin agent (internal; used by the context)."""
        if mode not in ("one_at_a_time", "all"):
            raise ValueError(f"mode must be 'one_at_a_time' or 'all', got {mode!r}")
        if self._closed:
            raise RuntimeError("the session is closed; the follow-up was not queued")
        target = origin or self.delivery.gate.current()
        if target is None:
            raise RuntimeError("the session has no current agent; start it first")
        _compat.notify_lifecycle(target, self.delivery.gate.on_lifecycle)
        return self.delivery.add_follow_up(
            text, origin=target, on_handoff=on_handoff or self._options.on_handoff, mode=mode
        )

    def describe(self) -> list[str]:
        """Human-readable lines naming what is running or pending."""
        lines = [
            f"{c.tool_name} ({c.call_id}) {c.state} for {c.elapsed:.1f}s"
            for c in self._calls.values()
        ]
        lines += self.delivery.describe()
        if not lines and self._tasks:
            lines.append(f"{len(self._tasks)} internal task(s) finishing")
        return lines

    async def aclose(self) -> None:
        """Cancel every call, drop pending replies and wait for all tasks. Idempotent."""
        self._close()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internal: used by tool.py, task.py and delivery.py ----------------------------

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("internal task failed", exc_info=exc, extra={"task": task.get_name()})
        self.check_idle()

    def emit(self, event: str, payload: object) -> None:
        for callback in list(self._listeners[event]):
            try:
                callback(payload)
            except Exception:
                logger.exception("event callback raised", extra={"event": event})

    def forget(self, call: AsyncCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        self.control.schedule()

    def _is_idle(self) -> bool:
        return not self._calls and not self._tasks and self.delivery.idle

    def check_idle(self) -> None:
        if self._idle_waiters and self._is_idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def stop(self, call: AsyncCall, reason: Literal["cancelled", "timed_out"]) -> bool:
        """Ask ``call`` to stop and wait until it has ended. True if it ended with
        ``reason`` (this or an earlier request of the same kind stopped it)."""
        call.request_stop(reason)
        await call.wait_ended()
        return call.status == reason

    def apply_handoff_policies(self) -> None:
        """Cancel the calls whose origin was handed off for good under ``cancel``."""
        gate = self.delivery.gate
        for call in list(self._calls.values()):
            if _policy.cancel_at_handoff(
                gate.origin_state(call.origin), call.on_handoff
            ) and call.request_stop("cancelled"):
                self.delivery.drop_for(call, "origin_closed")

    async def dispatch(
        self,
        spec: ToolSpec,
        run_ctx: RunContext[Any],
        body: Callable[[AsyncRunContext[Any]], Coroutine[Any, Any, object]],
        arguments: dict[str, object],
        origin: Agent,
        *,
        confirmed: bool = False,
    ) -> object:
        """Start a background call and return what the LLM sees now."""
        call_id = run_ctx.function_call.call_id
        while True:  # after any await, every check is made again
            if self._closed:
                raise llm.ToolError(
                    self._options.session_closing_template.format(tool_name=spec.name)
                )
            if call_id in self._calls:
                raise llm.ToolError(self._options.call_id_in_use_template.format(call_id=call_id))
            duplicate = self._find_duplicate(spec, arguments)
            if duplicate is None or spec.on_duplicate == "allow":
                break
            fmt = {"tool_name": spec.name, "call_id": duplicate.call_id}
            if spec.on_duplicate == "reject":
                return self._options.duplicate_running_template.format(**fmt)
            if spec.on_duplicate == "confirm":
                if confirmed:
                    break
                return self._options.duplicate_confirm_template.format(**fmt, param=CONFIRM_PARAM)
            await self.stop(duplicate, "cancelled")  # replace
        if len(self._calls) >= self._options.max_tasks_per_session:
            logger.warning("async tool cap reached", extra={"function": spec.name})
            raise llm.ToolError(
                self._options.too_many_tasks_template.format(count=len(self._calls))
            )
        call = AsyncCall(
            runtime=self,
            spec=spec,
            call_id=call_id,
            arguments=arguments,
            raw_arguments=run_ctx.function_call.arguments,
            origin=origin,
            extra=getattr(run_ctx.function_call, "extra", None),
        )
        ctx = AsyncRunContext(run_ctx, call)
        self._calls[call_id] = call
        _compat.notify_lifecycle(origin, self.delivery.gate.on_lifecycle)
        self.control.schedule()
        gate = self.delivery.gate
        gate.track(run_ctx.speech_handle, origin)
        call.log_started()
        self.emit(
            "task_started",
            TaskStarted(call_id=call_id, tool_name=spec.name, arguments=dict(arguments)),
        )
        gate.dispatch_started(origin)
        try:
            call.start(lambda: body(ctx))
            if spec.ack_after is None:
                await asyncio.shield(call.outcome)
            else:
                await asyncio.wait_for(asyncio.shield(call.outcome), spec.ack_after)
        except asyncio.TimeoutError:
            call.acknowledge()
        except asyncio.CancelledError:
            # the dispatch was cut (e.g. the turn was interrupted): the work goes on
            # and its result is delivered later
            call.acknowledge()
            raise
        finally:
            gate.dispatch_ended(origin)
        outcome = call.outcome.result()
        if isinstance(outcome, Finished):
            if outcome.status == "succeeded":
                return outcome.result
            raise llm.ToolError(outcome.error_text or "")
        return self._ack_text(call, outcome)

    def _find_duplicate(self, spec: ToolSpec, arguments: dict[str, object]) -> AsyncCall | None:
        if spec.on_duplicate == "allow":
            return None
        key = duplicate_key(spec, arguments)
        for call in self._calls.values():
            if call.spec.name == spec.name and duplicate_key(call.spec, call.arguments) == key:
                return call
        return None

    def _ack_text(self, call: AsyncCall, ack: Acknowledged) -> str:
        if ack.automatic:
            return self._options.ack_pending_template.format(
                tool_name=call.tool_name, call_id=call.call_id, seconds=call.elapsed
            )
        return self._options.ack_update_template.format(
            tool_name=call.tool_name, call_id=call.call_id, message=render_message(ack.message)
        )

    # -- session events ----------------------------------------------------------------

    def _on_session_event(self, ev: object) -> None:
        self.control.schedule()
        self._steering.on_session_event(ev)
        self.delivery.evaluate()

    def _on_user_state(self, ev: Any) -> None:
        self.delivery.gate.on_user_state(ev)

    def _on_item_added(self, ev: Any) -> None:
        self.control.schedule()
        self._steering.on_agent_maybe_changed()
        self.delivery.gate.on_item_added(ev)

    def _on_speech_created(self, ev: Any) -> None:
        self.delivery.gate.track(ev.speech_handle)
        self.delivery.evaluate()

    def _on_session_close(self, _ev: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name, handler in self._session_handlers:
            self._session.off(name, handler)  # type: ignore[arg-type]
        self.delivery.close()
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            call.request_stop("cancelled")
        if _runtimes.get(self._session) is self:
            del _runtimes[self._session]
        self.check_idle()
