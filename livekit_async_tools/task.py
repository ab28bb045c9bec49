"""One background call: its state machine, acknowledgement, timeout and cancel hooks."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from livekit.agents import Agent, llm

from ._log import logger, pii_extra
from .context import CancelCallback
from .events import TaskEnded, TaskInfo, TaskState, TaskStatus, TaskUpdated
from .options import Delivery

if TYPE_CHECKING:
    from .runtime import AsyncToolRuntime
    from .tool import ToolSpec

__all__ = ["Acknowledged", "AsyncCall", "Finished", "Outcome", "render_message"]

_DELIVERIES: tuple[Delivery, ...] = ("when_idle", "interrupt", "silent")


def render_message(message: object) -> str:
    """The text form of an update message or a result: ``str`` as is, else JSON.

    Raises:
        TypeError: ``message`` is not JSON-serialisable.
    """
    if isinstance(message, str):
        return message
    try:
        return json.dumps(message, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"an async tool message must be a str or JSON-serialisable, "
            f"got {type(message).__name__}"
        ) from e


@dataclass(frozen=True)
class Acknowledged:
    """The call was acknowledged: by its first update, or automatically (``None``)."""

    message: object | None
    automatic: bool


@dataclass(frozen=True)
class Finished:
    """The call ended before it was acknowledged: its result is returned inline."""

    status: TaskStatus
    result: object
    error_text: str | None


Outcome: TypeAlias = "Acknowledged | Finished"


class AsyncCall:
    """The runtime's record of one background call (internal; see `TaskInfo`)."""

    def __init__(
        self,
        *,
        runtime: AsyncToolRuntime,
        spec: ToolSpec,
        call_id: str,
        arguments: dict[str, object],
        raw_arguments: str,
        origin: Agent,
    ) -> None:
        self.runtime = runtime
        self.spec = spec
        self.call_id = call_id
        self.arguments = arguments
        self.raw_arguments = raw_arguments
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.started_at = self.loop.time()
        self.state: TaskState = "starting"
        self.status: TaskStatus | None = None
        self.last_message: object = None
        self.outcome: asyncio.Future[Outcome] = self.loop.create_future()
        self.task: asyncio.Task[None] | None = None
        self._updates = 0
        self._hooks: list[CancelCallback] = []
        self._stop_reason: Literal["cancelled", "timed_out"] | None = None
        self._timeout: asyncio.TimerHandle | None = None

    # -- properties ------------------------------------------------------------------

    @property
    def tool_name(self) -> str:
        return self.spec.name

    @property
    def elapsed(self) -> float:
        return self.loop.time() - self.started_at

    @property
    def ended(self) -> bool:
        return self.status is not None

    @property
    def on_handoff(self) -> str:
        return self.spec.on_handoff or self.runtime.options.on_handoff

    def info(self) -> TaskInfo:
        return TaskInfo(
            call_id=self.call_id,
            tool_name=self.tool_name,
            arguments=dict(self.arguments),
            origin=self.origin,
            state=self.state,
            started_at=self.started_at,
            cancellable=self.spec.cancellable,
            last_message=self.last_message,
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self, body: Coroutine[Any, Any, object]) -> None:
        """Spawn the background task running ``body`` and arm the timeout."""
        self.task = self.runtime.spawn(
            self._run(body), name=f"async-tool:{self.tool_name}:{self.call_id}"
        )
        if self.spec.timeout is not None:
            self._timeout = self.loop.call_later(self.spec.timeout, self._on_timeout)

    def acknowledge(self) -> None:
        """Acknowledge automatically (``ack_after`` expired or the dispatch was cut)."""
        if self.outcome.done():
            return
        self.state = "running"
        self.outcome.set_result(Acknowledged(message=None, automatic=True))
        self.runtime.emit(
            "task_updated", TaskUpdated(call_id=self.call_id, message=None, delivery="when_idle")
        )

    def request_stop(self, reason: Literal["cancelled", "timed_out"]) -> bool:
        """Cancel the task; False if it had already ended."""
        if self.ended or self.task is None or self.task.done():
            return False
        if self._stop_reason is None:
            self._stop_reason = reason
        self.task.cancel()
        return True

    def _on_timeout(self) -> None:
        self._timeout = None
        if self.request_stop("timed_out"):
            logger.warning(
                "async tool timed out",
                extra={"call_id": self.call_id, "function": self.tool_name},
            )

    async def update(self, message: object, *, delivery: Delivery) -> None:
        if delivery not in _DELIVERIES:
            raise TypeError(f"delivery must be one of {_DELIVERIES}, got {delivery!r}")
        if self.ended:
            raise RuntimeError(
                f"update() called after {self.tool_name} (call id {self.call_id}) ended; "
                "report progress only while the tool is running"
            )
        text = render_message(message)
        self._updates += 1
        self.last_message = message
        self.runtime.emit(
            "task_updated", TaskUpdated(call_id=self.call_id, message=message, delivery=delivery)
        )
        if not self.outcome.done():
            self.state = "running"
            self.outcome.set_result(Acknowledged(message=message, automatic=False))
            return
        output = self.runtime.options.update_template.format(
            tool_name=self.tool_name, call_id=self.call_id, message=text
        )
        await self.runtime.delivery.add(
            self,
            kind="update",
            suffix=f"update_{self._updates}",
            output=output,
            is_error=False,
            delivery=delivery,
        )

    def on_cancel(self, callback: CancelCallback) -> None:
        if not callable(callback):
            raise TypeError("on_cancel() needs a callable")
        self._hooks.append(callback)

    async def _run(self, body: Coroutine[Any, Any, object]) -> None:
        try:
            result = await body
        except asyncio.CancelledError:
            status: TaskStatus = self._stop_reason or "cancelled"
            await self._run_hooks()
            await self._end(status, None, None)
            raise
        except Exception as e:
            await self._end("failed", None, e)
            return
        await self._end("succeeded", result, None)

    async def _run_hooks(self) -> None:
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                res = hook()
                if inspect.isawaitable(res):
                    await res
            except Exception:
                logger.exception(
                    "on_cancel hook raised",
                    extra={"call_id": self.call_id, "function": self.tool_name},
                )

    def _error_text(self, status: TaskStatus, error: BaseException | None) -> str | None:
        opts = self.runtime.options
        fmt = {"tool_name": self.tool_name, "call_id": self.call_id}
        if status == "succeeded":
            return None
        if status == "cancelled":
            return opts.cancelled_template.format(**fmt)
        if status == "timed_out":
            return opts.timed_out_template.format(**fmt, seconds=self.spec.timeout or 0)
        if isinstance(error, llm.ToolError):
            return error.message
        return opts.failure_template.format(**fmt)

    async def _end(self, status: TaskStatus, result: object, error: BaseException | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
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
        self.runtime.forget(self)
        self.runtime.emit(
            "task_ended", TaskEnded(call_id=self.call_id, status=status, error=event_error)
        )
        if not self.outcome.done():
            self.outcome.set_result(Finished(status=status, result=result, error_text=text))
            return
        if status == "succeeded":
            try:
                output = render_message(result)
            except TypeError:
                output = str(result)
        else:
            output = text or ""
        delivery: Delivery = "silent" if status == "cancelled" else self.spec.result_delivery
        await self.runtime.delivery.add(
            self,
            kind="final",
            suffix="final",
            output=output,
            is_error=status != "succeeded",
            delivery=delivery,
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
