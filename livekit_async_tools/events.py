"""Event payloads emitted by `AsyncToolRuntime.on` and the `TaskInfo` snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from .options import Delivery

if TYPE_CHECKING:
    from livekit.agents import Agent

__all__ = [
    "ReplyStatus",
    "ReplyUpdated",
    "TaskEnded",
    "TaskInfo",
    "TaskStarted",
    "TaskState",
    "TaskStatus",
    "TaskUpdated",
]

TaskStatus: TypeAlias = Literal["succeeded", "failed", "cancelled", "timed_out"]
"""How a background call ended."""

TaskState: TypeAlias = Literal["starting", "running", "stopping"]
"""A live call: ``starting`` until it is acknowledged or returns, then ``running``;
``stopping`` once it is being cancelled (its ``on_cancel`` hooks run)."""

ReplyStatus: TypeAlias = Literal["scheduled", "delivered", "interrupted", "skipped", "dropped"]
"""What happened to a deferred reply."""


@dataclass(frozen=True)
class TaskStarted:
    """A background call was spawned.

    Attributes:
        call_id: The LLM's call id.
        tool_name: The tool's name.
        arguments: The validated arguments, by parameter name.
    """

    call_id: str
    tool_name: str
    arguments: dict[str, object]


@dataclass(frozen=True)
class TaskUpdated:
    """A call reported progress. The first one per call is its acknowledgement.

    Attributes:
        call_id: The LLM's call id.
        message: The message passed to `AsyncRunContext.update`, or ``None`` for the
            automatic acknowledgement when ``ack_after`` expired.
        delivery: How the update is delivered.
    """

    call_id: str
    message: object
    delivery: Delivery


@dataclass(frozen=True)
class TaskEnded:
    """A call ended.

    Attributes:
        call_id: The LLM's call id.
        status: How it ended.
        error: For ``failed``, the `ToolError` message or the exception's type name
            (details are logged); for ``cancelled``/``timed_out``, what the LLM is
            told; ``None`` on success.
    """

    call_id: str
    status: TaskStatus
    error: str | None


@dataclass(frozen=True)
class ReplyUpdated:
    """A deferred reply changed status.

    Attributes:
        call_ids: The original call ids whose items the reply carried.
        status: The new status.
        reason: Why, for ``interrupted`` (``None``: the caller cut the reply off;
            ``empty``: a reply meant to ask a question said nothing, so the question
            is asked again), ``dropped`` (``session_closed``, ``origin_closed``,
            ``max_redeliveries``, ``reply_failed``, ``context_update_failed``) and
            ``skipped`` (``superseded``, ``empty``, ``question_closed``: a question
            of `AsyncRunContext.ask` or of an overdue call was answered, expired or its
            call stopped before it was asked; ``extended``: the LLM extended an overdue
            call before its question was asked).
        speech_id: The id of the reply's speech handle, once there is one.
        ready_at: Event-loop time (``loop.time()``, like `TaskInfo.started_at`) when
            the earliest of the items was queued: a call's result or update was
            ready, a follow-up was asked for. A re-delivered item keeps its first
            time. ``None`` only for items queued outside a running loop.
        scheduled_at: Event-loop time when the reply ``speech_id`` was issued (the
            gate opened and ``generate_reply`` was called, or the model's own reply
            to the written results was taken as the reply): the current time on
            ``scheduled``, the same value on that reply's later statuses. ``None``
            when the event names no reply (``speech_id`` is ``None``). The event
            itself is emitted when the change happens: ``loop.time()`` in the
            callback is the time of ``delivered``. ``ready_at`` and ``scheduled_at``
            are left out of ``==``.
    """

    call_ids: tuple[str, ...]
    status: ReplyStatus
    reason: str | None = None
    speech_id: str | None = None
    ready_at: float | None = field(default=None, compare=False)
    scheduled_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one live background call.

    Attributes:
        call_id: The LLM's call id.
        tool_name: The tool's name.
        arguments: The validated arguments, by parameter name.
        origin: The agent that dispatched the call.
        state: ``starting``, ``running``, or ``stopping`` while it is being cancelled.
        started_at: Event-loop time (``loop.time()``) when it started.
        cancellable: Whether the LLM and the app may cancel it.
        last_message: The last update message, if any.
    """

    call_id: str
    tool_name: str
    arguments: dict[str, object]
    origin: Agent
    state: TaskState
    started_at: float
    cancellable: bool
    last_message: object = None
