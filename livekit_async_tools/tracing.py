"""OpenTelemetry spans for background calls and deferred replies (docs/tracing.md).

`SpanObserver` listens to the runtime's events: one span per background call, from
its dispatch to its end, and one per deferred reply, from ``scheduled`` to its
outcome. It never raises into the session; with no tracer provider configured each
call and reply costs one no-op span and nothing is kept.

Spans are made with livekit's own tracer (``livekit.agents.telemetry.tracer``), so
they go wherever livekit's go, unless `set_tracer_provider` names another provider.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from livekit.agents import telemetry
from opentelemetry import context as otel_context
from opentelemetry import trace

from . import _compat
from ._log import logger, redact
from ._ports import PendingItem
from .events import ReplyStatus, ReplyUpdated, TaskEnded, TaskStarted

if TYPE_CHECKING:
    from livekit.agents import AgentSession
    from livekit.agents.voice import SpeechHandle

__all__ = ["CALL_SPAN", "REPLY_SPAN", "SpanObserver", "reply_timing", "set_tracer_provider"]

CALL_SPAN = "async_tool"
"""The name of a background call's span."""
REPLY_SPAN = "async_tool_reply"
"""The name of a deferred reply's span."""

# attribute keys (docs/tracing.md lists them)
CALL_ID = "async_tool.call_id"
TOOL_NAME = "async_tool.name"
ARGUMENTS = "lk.pii.async_tool.arguments"  # livekit's marker for personal data: `pii`
STATUS = "async_tool.status"
DURATION = "async_tool.duration"
RESULT_STATUS = "async_tool.result.status"
RESULT_REASON = "async_tool.result.reason"
RESULT_WAIT = "async_tool.result.wait"
REPLY_CALL_IDS = "async_tool.reply.call_ids"
REPLY_STATUS = "async_tool.reply.status"
REPLY_REASON = "async_tool.reply.reason"
REPLY_WAIT = "async_tool.reply.wait"
REPLY_DURATION = "async_tool.reply.duration"
SPEECH_ID = "lk.speech_id"  # the key livekit's own spans carry the speech id under

_CONTEXTS_KEPT = 1024
"""Span contexts of recent calls kept to parent their later replies (re-deliveries)."""

_tracer: trace.Tracer | None = None


def set_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Make the package's spans with ``provider`` instead of livekit's tracer.

    By default the spans are made with ``livekit.agents.telemetry.tracer``: the
    provider given to ``livekit.agents.telemetry.set_tracer_provider``, else
    OpenTelemetry's global one. Process-wide, and read at each span, so it applies to
    running sessions too.

    Args:
        provider: The provider to use, or ``None`` to go back to livekit's tracer.

    Example::

        from opentelemetry.sdk.trace import TracerProvider
        from livekit_async_tools import tracing

        tracing.set_tracer_provider(TracerProvider())
    """
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("livekit_async_tools")


def _get_tracer() -> trace.Tracer:
    return _tracer if _tracer is not None else telemetry.tracer


# -- reply timing ----------------------------------------------------------------------


def reply_timing(
    items: Sequence[PendingItem], status: ReplyStatus, speech_id: str | None
) -> tuple[float | None, float | None]:
    """`ReplyUpdated.ready_at` and ``scheduled_at`` for a status of ``items``; a
    ``scheduled`` status stamps the items with the current loop time first."""
    if status == "scheduled":
        now = asyncio.get_running_loop().time()
        for p in items:
            p.scheduled_at = now
    ready = min((p.ready_at for p in items if p.ready_at is not None), default=None)
    if speech_id is None:
        return ready, None
    return ready, max((p.scheduled_at for p in items if p.scheduled_at is not None), default=None)


# -- the observer ----------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., None])


def _guarded(fn: _F) -> _F:
    """Tracing never raises into the session."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            logger.debug("tracing failed", exc_info=True)

    return wrapper  # type: ignore[return-value]


@dataclass(eq=False)
class _Call:
    span: trace.Span
    started_at: float
    ended_ns: int | None = None
    looked: bool = False
    """Looked for the call's final item (the loop iteration after its end)."""
    result: PendingItem | None = None
    dropped: str | None = None
    """Why the final was dropped before it was looked for (e.g. the session closed)."""


@dataclass(eq=False)
class _Reply:
    span: trace.Span
    scheduled_at: float


class SpanObserver:
    """Creates and ends the spans of one session from the runtime's events.

    Args:
        listeners: The runtime's event listeners, by event name.
        session: The session (its speech handles tell when a reply is over).
        pending: The session's pending items, where a call's final waits.
    """

    def __init__(
        self,
        listeners: Mapping[str, list[Callable[[Any], object]]],
        session: AgentSession[Any],
        pending: Iterable[PendingItem],
    ) -> None:
        self._session = session
        self._pending = pending
        self._calls: dict[str, _Call] = {}
        self._contexts: dict[str, trace.SpanContext] = {}
        self._replies: dict[str, _Reply] = {}
        self._handles: weakref.WeakValueDictionary[str, SpeechHandle] = (
            weakref.WeakValueDictionary()
        )
        listeners["task_started"].append(self._on_started)
        listeners["task_ended"].append(self._on_ended)
        listeners["reply_updated"].append(self._on_reply)
        session.on("speech_created", self._on_speech_created)
        session.on("close", self._on_session_close)

    @_guarded
    def _on_speech_created(self, ev: Any) -> None:
        handle = ev.speech_handle
        self._handles[handle.id] = handle

    @_guarded
    def _on_session_close(self, _ev: object) -> None:
        self._session.off("speech_created", self._on_speech_created)
        self._session.off("close", self._on_session_close)

    # -- calls -------------------------------------------------------------------------

    @_guarded
    def _on_started(self, ev: TaskStarted) -> None:
        # the current context is the dispatch's: livekit's function_tool span
        span = _get_tracer().start_span(
            CALL_SPAN, attributes={TOOL_NAME: ev.tool_name, CALL_ID: ev.call_id}
        )
        if not span.is_recording():
            return
        if _compat.tool_arguments_traceable():
            arguments = json.dumps(redact(ev.arguments), default=str, ensure_ascii=False)
            span.set_attribute(ARGUMENTS, arguments)
        if ev.call_id in self._calls:  # a reused call id: the earlier call is done with
            self._end_call(ev.call_id)
        self._calls[ev.call_id] = _Call(span, asyncio.get_running_loop().time())
        self._contexts.pop(ev.call_id, None)
        self._contexts[ev.call_id] = span.get_span_context()
        if len(self._contexts) > _CONTEXTS_KEPT:
            del self._contexts[next(iter(self._contexts))]

    @_guarded
    def _on_ended(self, ev: TaskEnded) -> None:
        call = self._calls.get(ev.call_id)
        if call is None or call.ended_ns is not None:
            return
        loop = asyncio.get_running_loop()
        call.ended_ns = time.time_ns()
        call.span.set_attributes({STATUS: ev.status, DURATION: loop.time() - call.started_at})
        if ev.status in ("failed", "timed_out"):
            call.span.set_status(trace.StatusCode.ERROR)
        # the final item is queued right after `task_ended`: look for it next iteration
        loop.call_soon(self._find_result, ev.call_id)

    @_guarded
    def _find_result(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.looked:
            return
        call.looked = True
        call.result = next(
            (p for p in self._pending if p.call_id == call_id and p.kind == "final"), None
        )
        if call.result is None:  # an inline or silent result, or one already dropped
            if call.dropped is not None:
                call.span.set_attributes({RESULT_STATUS: "dropped", RESULT_REASON: call.dropped})
            self._end_call(call_id)

    def _check_result(self, call: _Call, ev: ReplyUpdated) -> None:
        """An event names an ended call: did it concern the call's final item?"""
        if not call.looked:
            if ev.status == "dropped":
                call.dropped = ev.reason
            return
        item = call.result
        if item is None:
            return
        if ev.status == "scheduled" and item.scheduled_at is not None:
            wait = item.scheduled_at - item.ready_at if item.ready_at is not None else None
        elif ev.status in ("delivered", "skipped", "dropped") and not any(
            p is item for p in self._pending
        ):
            wait = None
            if ev.status == "delivered" and item.ready_at is not None:  # a bare handoff
                wait = asyncio.get_running_loop().time() - item.ready_at
        else:
            return  # another item of the call (its progress), or the final still waits
        call.span.set_attribute(RESULT_STATUS, ev.status)
        if ev.reason is not None:
            call.span.set_attribute(RESULT_REASON, ev.reason)
        if wait is not None:
            call.span.set_attribute(RESULT_WAIT, wait)
        self._end_call(item.call_id)

    def _end_call(self, call_id: str) -> None:
        call = self._calls.pop(call_id)
        call.span.end(end_time=call.ended_ns)

    # -- replies -----------------------------------------------------------------------

    @_guarded
    def _on_reply(self, ev: ReplyUpdated) -> None:
        if ev.speech_id is not None:
            if ev.status == "scheduled":
                self._start_reply(ev, ev.speech_id)
            else:
                self._end_reply(ev.speech_id, ev.status, ev.reason)
        for call_id in ev.call_ids:
            call = self._calls.get(call_id)
            if call is not None and call.ended_ns is not None:
                self._check_result(call, ev)

    def _start_reply(self, ev: ReplyUpdated, speech_id: str) -> None:
        contexts = [self._contexts[c] for c in ev.call_ids if c in self._contexts]
        if contexts:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
        else:  # follow-ups only: under livekit's session span, else a trace of its own
            parent = _compat.session_trace_root(self._session) or otel_context.Context()
        span = _get_tracer().start_span(
            REPLY_SPAN,
            context=parent,
            links=[trace.Link(c) for c in contexts],
            attributes={REPLY_CALL_IDS: list(ev.call_ids), SPEECH_ID: speech_id},
        )
        if not span.is_recording():
            return
        if ev.ready_at is not None and ev.scheduled_at is not None:
            span.set_attribute(REPLY_WAIT, ev.scheduled_at - ev.ready_at)
        now = asyncio.get_running_loop().time()
        self._replies[speech_id] = _Reply(span, now if ev.scheduled_at is None else ev.scheduled_at)
        handle = self._handles.get(speech_id)
        if handle is not None:
            handle.add_done_callback(self._on_handle_done)

    @_guarded
    def _on_handle_done(self, handle: SpeechHandle) -> None:
        # the delivery reports the outcome from its own done callback: a reply still
        # open after it failed and went back to wait (no status is reported for that)
        asyncio.get_running_loop().call_soon(self._end_reply, handle.id, "failed", None)

    @_guarded
    def _end_reply(self, speech_id: str, status: str, reason: str | None) -> None:
        reply = self._replies.pop(speech_id, None)
        if reply is None:
            return
        span = reply.span
        span.set_attributes(
            {
                REPLY_STATUS: status,
                REPLY_DURATION: asyncio.get_running_loop().time() - reply.scheduled_at,
            }
        )
        if reason is not None:
            span.set_attribute(REPLY_REASON, reason)
        if status == "failed" or reason == "reply_failed":
            span.set_status(trace.StatusCode.ERROR)
        span.end()
