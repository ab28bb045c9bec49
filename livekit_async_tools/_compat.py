"""Every livekit-agents version difference the package depends on, in one place."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

import livekit.agents as lk
from livekit.agents import llm, telemetry
from livekit.agents.version import __version__ as LIVEKIT_AGENTS_VERSION

if TYPE_CHECKING:
    from livekit.agents import Agent, AgentSession
    from livekit.agents.voice import SpeechHandle
    from opentelemetry import context as otel_context

__all__ = [
    "HANDOFF_ITEMS",
    "LIVEKIT_AGENTS_VERSION",
    "SILENT_AGENT_CLOSE",
    "VERSION",
    "agent_is_closed",
    "caller_turn_wait",
    "function_call",
    "notify_lifecycle",
    "quiet_result",
    "released_call_id",
    "reply_failed",
    "reset_away_timer",
    "session_history",
    "session_trace_root",
    "tool_arguments_traceable",
    "update_agent_chat_ctx",
    "user_away_timeout",
]


def _parse(version: str) -> tuple[int, int, int]:
    parts: list[int] = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


VERSION = _parse(LIVEKIT_AGENTS_VERSION)

SILENT_AGENT_CLOSE = VERSION < (1, 5, 0)
"""Before 1.5 the handoff item is not emitted in ``conversation_item_added``, so no
session event follows a handoff, the close of a handed-off agent or a hand-back."""

HANDOFF_ITEMS = not SILENT_AGENT_CLOSE
"""From 1.5 every activity switch (handoff, `AgentTask` start and end, hand-back) emits
an ``agent_handoff`` item through ``conversation_item_added`` the moment livekit starts
routing replies to the new agent's activity."""


@functools.cache
def _accepts_keyword(fn: object, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


_Hook = Callable[[], Coroutine[Any, Any, None]]
LifecycleCallback = Callable[["Agent", Literal["enter", "exit"]], None]
_lifecycle_callbacks: weakref.WeakKeyDictionary[Agent, list[LifecycleCallback]] = (
    weakref.WeakKeyDictionary()
)


def notify_lifecycle(agent: Agent, callback: LifecycleCallback) -> None:
    """On livekit-agents < 1.5 call ``callback(agent, "enter" | "exit")`` after
    ``agent.on_enter()`` or ``agent.on_exit()`` ran.

    Those versions emit no session event when an agent is handed off, closes or is
    handed back to; the agent's own public hooks are the one signal. The wrappers
    call the original hooks first and are installed once per agent instance.
    """
    if not SILENT_AGENT_CLOSE:
        return
    callbacks = _lifecycle_callbacks.get(agent)
    if callbacks is not None:
        if callback not in callbacks:
            callbacks.append(callback)
        return
    callbacks = _lifecycle_callbacks[agent] = [callback]

    def wrap(hook: _Hook, which: Literal["enter", "exit"]) -> _Hook:
        async def wrapped() -> None:
            try:
                await hook()
            finally:
                for cb in list(callbacks):
                    cb(agent, which)

        return wrapped

    agent.on_enter = wrap(agent.on_enter, "enter")  # type: ignore[method-assign]
    agent.on_exit = wrap(agent.on_exit, "exit")  # type: ignore[method-assign]


TRANSCRIPTION_ALLOWANCE = 1.0
"""Seconds allowed for transcribing a caller's turn after endpointing gave up."""


def caller_turn_wait(session: AgentSession[Any]) -> float:
    """How long after the caller stops speaking a turn may still be committed:
    the session's maximum endpointing delay plus a transcription allowance."""
    opts = session.options
    max_delay: object = 3.0
    endpointing = getattr(opts, "endpointing", None)  # >= 1.5: a TypedDict
    if isinstance(endpointing, dict):
        max_delay = endpointing.get("max_delay", 3.0)
    else:  # 1.4: a flat option
        max_delay = getattr(opts, "max_endpointing_delay", 3.0)
    try:
        return float(max_delay) + TRANSCRIPTION_ALLOWANCE  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 3.0 + TRANSCRIPTION_ALLOWANCE


def agent_is_closed(agent: Agent) -> bool:
    """True once the agent's activity is closed (not merely paused under a task)."""
    try:
        agent.session  # noqa: B018 - raises RuntimeError once the activity is closed
    except RuntimeError:
        return True
    return False


async def update_agent_chat_ctx(agent: Agent, chat_ctx: llm.ChatContext) -> None:
    """Replace the agent's context, keeping calls to tools the agent does not have."""
    if _accepts_keyword(type(agent).update_chat_ctx, "exclude_invalid_function_calls"):
        await agent.update_chat_ctx(chat_ctx, exclude_invalid_function_calls=False)
    else:
        await agent.update_chat_ctx(chat_ctx)


def function_call(
    *, call_id: str, name: str, arguments: str, extra: dict[str, Any]
) -> llm.FunctionCall:
    """A synthesized function call carrying the original call's provider ``extra``
    (e.g. Google thought signatures; the field exists from livekit-agents 1.5)."""
    if extra:
        return llm.FunctionCall(call_id=call_id, name=name, arguments=arguments, extra=dict(extra))
    return llm.FunctionCall(call_id=call_id, name=name, arguments=arguments)


def reply_failed(handle: SpeechHandle) -> bool:
    """True if a finished reply ended with an error (``SpeechHandle.exception``, 1.8+;
    earlier releases report no failure)."""
    exception = getattr(handle, "exception", None)
    return callable(exception) and exception() is not None


def user_away_timeout(session: AgentSession[Any]) -> float | None:
    """The session's ``user_away_timeout`` where livekit lets the package hold it off
    (`AgentSession.reset_away_timer`, 1.8), else ``None``."""
    if not callable(getattr(session, "reset_away_timer", None)):
        return None
    timeout = getattr(session.options, "user_away_timeout", None)
    return float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None


def reset_away_timer(session: AgentSession[Any]) -> None:
    """Restart livekit's user-away countdown (see `user_away_timeout`)."""
    reset = getattr(session, "reset_away_timer", None)
    if callable(reset):
        reset()


def session_history(session: AgentSession[Any]) -> llm.ChatContext | None:
    """The session's history (`AgentSession.history`), or ``None`` before it exists."""
    try:
        return session.history
    except RuntimeError:
        return None


def released_call_id(ev: object) -> str | None:
    """The call id livekit answered by itself, from a ``tool_execution_updated`` event.

    From 1.8, when an interrupted turn stops waiting for a tool that has not returned,
    livekit answers the call with its own first update (a "still running" placeholder,
    under the call's own id) and treats the tool's return as a later final result.
    The package never sends livekit such an update itself, so one for a background
    call means livekit released it. ``None`` for any other event or version.
    """
    update = getattr(ev, "update", None)
    updated = getattr(lk, "ToolCallUpdated", None)
    if updated is None or not isinstance(update, updated):
        return None
    call_id = getattr(update, "call_id", None)
    return call_id if isinstance(call_id, str) and update.id == call_id else None


def quiet_result(text: str) -> object:
    """A tool output livekit records without starting a reply (`ToolResult` with
    ``reply_required=False``, 1.8+); the plain text where that does not exist."""
    result = getattr(lk, "ToolResult", None)
    if result is None:
        return text
    return result(text, reply_required=False)


def tool_arguments_traceable() -> bool:
    """livekit's switches for tool arguments on spans: content capture (1.8+:
    ``telemetry.gen_ai.set_capture_content`` or the
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` variable) and the project's
    mandated redaction (1.8+). livekit 1.4 records arguments always."""
    capture = getattr(getattr(telemetry, "gen_ai", None), "capture_content_enabled", None)
    if capture is not None and not capture():
        return False
    redaction = getattr(getattr(telemetry, "utils", None), "redaction_enabled", None)
    return not (redaction is not None and redaction())


def session_trace_root(session: AgentSession[Any]) -> otel_context.Context | None:
    """livekit's ``agent_session`` span (1.8+, in a job whose primary session this is)."""
    helpers = getattr(telemetry, "session_context", None)
    if helpers is None or helpers.primary_session() is not session:
        return None
    root: otel_context.Context | None = helpers.session_root_context()
    return root
