"""One background call: its state machine, acknowledgement, timeout and cancel hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from livekit.agents import Agent, AgentTask, llm

from ._deadline import Deadline
from ._hooks import CANCEL_HOOKS_TIMEOUT, run_cancel_hooks
from ._log import logger, pii_extra
from ._policy import CallEvent, CallPhase, step
from ._ports import (
    Asker,
    CallIdentity,
    CancelCallback,
    ItemSink,
    Notes,
    Services,
)
from ._spec import DELIVERIES, FollowUpMode, ToolSpec
from ._texts import error_text, render_message
from .events import TaskEnded, TaskInfo, TaskState, TaskStatus, TaskUpdated
from .options import Delivery

__all__ = [
    "CANCEL_HOOKS_TIMEOUT",
    "Acknowledged",
    "AsyncCall",
    "Finished",
    "Outcome",
]


@dataclass(frozen=True)
class Acknowledged:
    """The call was acknowledged: by its first update, or automatically (``None``)."""

    message: object | None
    automatic: bool
    released: bool = False
    """livekit answered the call itself (see `_compat.released_call_id`)."""


@dataclass(frozen=True)
class Finished:
    """The call ended before it was acknowledged: its result is returned inline."""

    status: TaskStatus
    result: object
    error_text: str | None


Outcome: TypeAlias = "Acknowledged | Finished"


"""Seconds the ``on_cancel`` hooks of one call may run in all. They run to completion,
shielded from further stop requests and session close, but never longer than this."""


class AsyncCall:
    """The runtime's record of one background call (internal; see `TaskInfo`).

    Its lifecycle is the state machine of `_policy.step`: ``starting`` → ``running`` →
    ``stopping`` → ``ended``. Whatever happens (a stop before its first step included),
    a started call ends exactly once: one ``task_ended``, then its final item.
    """

    def __init__(
        self,
        *,
        services: Services,
        sink: ItemSink,
        notes: Notes,
        asker: Asker,
        on_ended: Callable[[AsyncCall], None],
        spec: ToolSpec,
        call_id: str,
        arguments: dict[str, object],
        raw_arguments: str,
        origin: Agent,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._services = services
        self._sink = sink
        self._notes = notes
        self._asker = asker
        self._on_ended = on_ended
        self.spec = spec
        self.arguments = arguments
        self.identity = CallIdentity(
            call_id=call_id,
            tool_name=spec.name,
            raw_arguments=raw_arguments,
            extra=dict(extra or {}),
            origin=origin,
            on_handoff=spec.on_handoff or services.options.on_handoff,
        )
        self.duplicate_key = spec.duplicate_key(arguments)
        self.loop = asyncio.get_running_loop()
        self.started_at = self.loop.time()
        self.phase: CallPhase = "starting"
        self.status: TaskStatus | None = None
        self.last_message: object = None
        self.outcome: asyncio.Future[Outcome] = self.loop.create_future()
        self.ended_future: asyncio.Future[None] = self.loop.create_future()
        self.task: asyncio.Task[None] | None = None
        self._updates = 0
        self._hooks: list[CancelCallback] = []
        self._stop_reason: Literal["cancelled", "timed_out"] | None = None
        self.deadline = Deadline(
            services,
            sink,
            self.identity,
            spec,
            elapsed=lambda: self.elapsed,
            stop=lambda: self.request_stop("timed_out"),
        )

    # -- properties ------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self.identity.call_id

    @property
    def origin(self) -> Agent:
        return self.identity.origin

    @property
    def tool_name(self) -> str:
        return self.spec.name

    @property
    def elapsed(self) -> float:
        return self.loop.time() - self.started_at

    @property
    def ended(self) -> bool:
        return self.phase == "ended"

    @property
    def state(self) -> TaskState:
        """The public state of a live call (`TaskInfo.state`)."""
        return (
            "starting"
            if self.phase == "starting"
            else ("stopping" if self.phase in ("stopping", "ended") else "running")
        )

    @property
    def cancellable(self) -> bool:
        """The tool is cancellable, or the caller is being asked whether to wait."""
        return self.spec.cancellable or self.deadline.overdue

    @property
    def on_handoff(self) -> str:
        return self.identity.on_handoff

    def info(self) -> TaskInfo:
        return TaskInfo(
            call_id=self.call_id,
            tool_name=self.tool_name,
            arguments=dict(self.arguments),
            origin=self.origin,
            state=self.state,
            started_at=self.started_at,
            cancellable=self.cancellable,
            last_message=self.last_message,
        )

    def _transition(self, event: CallEvent) -> bool:
        nxt = step(self.phase, event)
        if nxt is None:
            return False
        self.phase = nxt
        return True

    # -- lifecycle -------------------------------------------------------------------

    def start(self, body: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Spawn the background task and arm the timeout.

        ``body`` makes the tool's coroutine; it is called in the task's first step, so
        a call stopped before that step never creates it ("never awaited").
        """
        self.task = self._services.spawn(
            self._run(body), name=f"async-tool:{self.tool_name}:{self.call_id}"
        )
        self.task.add_done_callback(self._on_task_done)
        self.deadline.arm()

    def acknowledge(self, *, released: bool = False) -> None:
        """Acknowledge automatically (``ack_after`` expired, the dispatch was cut, or
        livekit answered the call itself: ``released``)."""
        if self.outcome.done():
            return
        self._transition("acknowledged")
        self.outcome.set_result(Acknowledged(message=None, automatic=True, released=released))
        self._services.emit(TaskUpdated(call_id=self.call_id, message=None, delivery="when_idle"))

    def request_stop(self, reason: Literal["cancelled", "timed_out"]) -> bool:
        """Ask the call to stop; False (and nothing happens) unless this is the first
        stop request of a call that has not ended."""
        if not self._transition("stop_requested"):
            return False
        self._stop_reason = reason
        assert self.task is not None
        self.task.cancel()
        return True

    async def wait_ended(self) -> None:
        """Return once the call has ended (its hooks ran, ``task_ended`` was emitted)."""
        await asyncio.shield(self.ended_future)

    def _check_running(self, what: str) -> None:
        if self.phase in ("stopping", "ended"):
            when = "ended" if self.ended else "was being stopped"
            raise RuntimeError(
                f"{what}() called after {self.tool_name} (call id {self.call_id}) {when}; "
                f"{what} only while the tool is running"
            )

    async def ask(self, question: str, *, timeout: float | None) -> str:
        self._check_running("ask")
        self.acknowledge()  # the question follows the acknowledgement
        return await self._asker.ask(self.identity, question, timeout)

    async def update(self, message: object, *, delivery: Delivery) -> None:
        if delivery not in DELIVERIES:
            raise TypeError(f"delivery must be one of {DELIVERIES}, got {delivery!r}")
        self._check_running("update")
        text = render_message(message)
        self._updates += 1
        self.last_message = message
        self._services.emit(TaskUpdated(call_id=self.call_id, message=message, delivery=delivery))
        if not self.outcome.done():
            self._transition("acknowledged")
            self.outcome.set_result(Acknowledged(message=message, automatic=False))
            return
        output = self._services.options.update_template.format(
            tool_name=self.tool_name, call_id=self.call_id, message=text
        )
        item = self._sink.add(
            self.identity,
            kind="update",
            suffix=f"progress_{self._updates}",
            output=output,
            is_error=False,
            delivery=delivery,
        )
        if item is not None:
            await self._sink.recorded(item)

    def on_cancel(self, callback: CancelCallback) -> None:
        if not callable(callback):
            raise TypeError("on_cancel() needs a callable")
        self._hooks.append(callback)

    def steer(self, text: str) -> None:
        self._notes.steer(text, origin=self.origin, on_handoff=self.on_handoff)

    def follow_up(self, text: str, *, mode: FollowUpMode) -> str:
        return self._notes.follow_up(
            text, origin=self.origin, on_handoff=self.on_handoff, mode=mode
        )

    async def _run(self, body: Callable[[], Coroutine[Any, Any, object]]) -> None:
        try:
            result = await body()
        except asyncio.CancelledError:
            if self._transition("stop_requested"):  # cancelled by someone else
                self._stop_reason = "cancelled"
            await self._run_hooks()
            self._end(self._stop_reason or "cancelled", None, None)
            raise
        except Exception as e:
            self._end("failed", None, e)
            return
        self._end("succeeded", result, None)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        # a task cancelled before its first step never ran `_run`: end the call here
        if not self.ended:
            self._end(self._stop_reason or "cancelled", None, None)

    async def _run_hooks(self) -> None:
        hooks, self._hooks = self._hooks, []
        await run_cancel_hooks(
            self._services, hooks, call_id=self.call_id, tool_name=self.tool_name
        )

    def _error_text(self, status: TaskStatus, error: BaseException | None) -> str | None:
        return error_text(
            self._services.options,
            tool_name=self.tool_name,
            call_id=self.call_id,
            status=status,
            timeout=self.deadline.allowed,
            tool_error=error.message if isinstance(error, llm.ToolError) else None,
        )

    def _end(self, status: TaskStatus, result: object, error: BaseException | None) -> None:
        """The one place a call ends: ``task_ended``, then the final item (once)."""
        if not self._transition("finished"):
            return
        self.deadline.disarm()
        self.status = status
        self._hooks.clear()
        text = event_error = self._error_text(status, error)
        if status == "failed" and error is not None and not isinstance(error, llm.ToolError):
            event_error = type(error).__name__  # details go to the log, not the event
            logger.error(
                "async tool raised",
                exc_info=error,
                extra={
                    "call_id": self.call_id,
                    "function": self.tool_name,
                    **pii_extra(self.arguments),
                },
            )
        self._on_ended(self)
        self._services.emit(TaskEnded(call_id=self.call_id, status=status, error=event_error))
        if not self.ended_future.done():
            self.ended_future.set_result(None)
        if not self.outcome.done():
            self.outcome.set_result(Finished(status=status, result=result, error_text=text))
        else:
            self._add_final(status, result, text)
        self._services.changed()

    def _add_final(self, status: TaskStatus, result: object, text: str | None) -> None:
        handoff: Agent | None = None
        if status == "succeeded":
            result, handoff, problem = split_handoff(result)
            if problem is not None:
                logger.error(problem, extra={"call_id": self.call_id, "function": self.tool_name})
                status, result, text = "failed", None, problem
        if status == "succeeded":
            try:
                output = "" if result is None else render_message(result)
            except TypeError:
                output = str(result)
        else:
            output = text or ""
        # recorded, not spoken: a cancellation (whoever cancelled knows) and a None result
        # (livekit files no reply for a tool returning None either); a handoff is made at
        # the gate, so it is never silent
        silent = handoff is None and (
            status == "cancelled" or (status == "succeeded" and result is None)
        )
        delivery: Delivery = "silent" if silent else self.spec.result_delivery
        self._sink.add(
            self.identity,
            kind="final",
            suffix="result",
            output=output,
            is_error=status != "succeeded",
            delivery=delivery,
            handoff=handoff,
        )

    def log_started(self) -> None:
        logger.debug(
            "async tool started",
            extra={
                "call_id": self.call_id,
                "function": self.tool_name,
                **pii_extra(self.arguments),
            },
        )


def split_handoff(result: object) -> tuple[object, Agent | None, str | None]:
    """A result as livekit's tools return a handoff: an `Agent`, or a list or tuple
    holding one `Agent` and the output. Returns (output, agent, problem); ``problem``
    says why a returned agent cannot be handed off to."""
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    agents = [r for r in items if isinstance(r, Agent)]
    if not agents:
        return result, None, None
    rest = [r for r in items if not isinstance(r, Agent)]
    output: object = rest[0] if len(rest) == 1 else (rest or None)
    if len(agents) > 1:
        return None, None, "the background call returned more than one agent to hand off to"
    if isinstance(agents[0], AgentTask):
        return (
            None,
            None,
            ("the background call returned an AgentTask; await it inside the tool to run it"),
        )
    return output, agents[0], None
