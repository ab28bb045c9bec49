"""`AsyncToolOptions`: runtime settings and every LLM-facing string, as named templates."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, TypeAlias

__all__ = ["AsyncToolOptions", "ControlTools", "Delivery", "OnHandoff"]

OnHandoff: TypeAlias = Literal["forward", "hold", "cancel"]
"""What happens to a call when its origin agent is handed off for good."""

Delivery: TypeAlias = Literal["when_idle", "interrupt", "silent"]
"""How an update or a final result reaches the caller."""

ControlTools: TypeAlias = Literal["dynamic", "always", "never"]
"""When the LLM-facing control tools are offered."""

_ON_HANDOFF: tuple[OnHandoff, ...] = ("forward", "hold", "cancel")
_CONTROL_TOOLS: tuple[ControlTools, ...] = ("dynamic", "always", "never")


@dataclass(frozen=True, kw_only=True)
class AsyncToolOptions:
    """Per-session settings of the async tool runtime.

    Pass an instance to `attach`. All fields are keyword-only; the templates are
    `str.format` strings whose placeholders are listed in each comment.

    Attributes:
        settle_delay: Seconds of continuous quiet before a deferred reply starts.
        max_tasks_per_session: Live background calls allowed at once per session.
        max_redeliveries: How often an interrupted deferred reply is re-delivered.
        on_handoff: Default `OnHandoff` policy for tools that do not set one.
        control_tools: When `get_running_tasks`/`cancel_task` are offered.
    """

    settle_delay: float = 0.3
    max_tasks_per_session: int = 32
    max_redeliveries: int = 2
    on_handoff: OnHandoff = "forward"
    control_tools: ControlTools = "dynamic"

    # {tool_name} {call_id} {message}. The first update is what the LLM hears now:
    # it must say the work goes on, so the LLM neither waits nor calls again.
    ack_update_template: str = (
        "{tool_name} is now running in the background (call id {call_id}) and reported: "
        "{message}. Its result will come to you later; do not call it again for this. "
        "Tell the caller briefly and keep the conversation going."
    )
    # {tool_name} {call_id} {seconds}. Said when a call neither updated nor returned
    # within ack_after; phrased so the LLM tells the caller it is still working.
    ack_pending_template: str = (
        "{tool_name} is still working in the background (call id {call_id}); the result "
        "will come to you later, so do not call it again for this. Tell the caller briefly "
        "that you are on it and keep the conversation going."
    )
    # {tool_name} {call_id} {message}. The output of a later progress item.
    update_template: str = "Progress from {tool_name}: {message}"
    # {tool_name} {call_id}. A generic failure: the exception text may hold private
    # data or internals, so the LLM only hears that the call failed.
    failure_template: str = (
        "{tool_name} failed because of an unexpected internal error, so there is no result. "
        "Apologise briefly; do not guess a result."
    )
    # {tool_name} {call_id}. Recorded, never spoken: whoever cancelled already knows.
    # Worded so "cancelled" is not mistaken for the subject of the tool (a flight).
    cancelled_template: str = "{tool_name} was cancelled before it returned a result."
    # {tool_name} {call_id} {seconds}. Says which tool and after how long.
    timed_out_template: str = "{tool_name} was stopped after {seconds:g} seconds without a result."
    # {tool_names} {items}. Items at the end of the conversation: speak them now. The
    # item call ids tell the LLM exactly which outputs to announce (not superseded ones).
    deliver_template: str = (
        "Background results just arrived from {tool_names}: the tool outputs with call ids "
        "{items}. Tell the caller about them now, briefly and naturally."
    )
    # {tool_names} {items}. Newer conversation followed the items: the LLM may have
    # covered them already, and an empty answer is then the right one.
    deliver_maybe_covered_template: str = (
        "Background results arrived earlier in the conversation from {tool_names}: the "
        "tool outputs with call ids {items}. If you have not told the caller about them "
        "yet, do so now, briefly; if you already have, reply with nothing."
    )
    # {tool_names} {items}. A previous telling was cut off before it finished.
    redeliver_template: str = (
        "You were cut off while telling the caller about background results from "
        "{tool_names} (tool outputs with call ids {items}). If they are still relevant, "
        "finish telling the caller briefly; otherwise reply with nothing."
    )
    # {count}. The cap is reached: tell the LLM what the caller can do about it.
    too_many_tasks_template: str = (
        "Too many background tasks are running ({count}); wait for one to finish or "
        "cancel one before starting another."
    )

    # {tool_name} {call_id}. on_duplicate="reject": nothing new starts; the LLM should
    # tell the caller the same request is already being worked on, not retry.
    duplicate_running_template: str = (
        "{tool_name} with the same request is already running (call id {call_id}); its "
        "result will come to you. Do not call it again; tell the caller it is in progress."
    )
    # {tool_name} {call_id} {param}. on_duplicate="confirm": ask the caller first.
    duplicate_confirm_template: str = (
        "{tool_name} with the same request is already running (call id {call_id}). Ask the "
        "caller whether they want to run it a second time; only if they say yes, call it "
        "again with {param} set to true."
    )
    # {tool_name} {call_id}. cancel_task succeeded.
    cancel_done_template: str = "{tool_name} (call id {call_id}) was cancelled."
    # {tool_name} {call_id} {status}. cancel_task lost the race: the call had ended, so
    # its real outcome stands and its result still comes.
    cancel_too_late_template: str = (
        "{tool_name} (call id {call_id}) had already finished ({status}) before it could be "
        "cancelled; its result stands."
    )
    # {call_id}. Unknown or finished id: name it so the LLM can check get_running_tasks.
    cancel_unknown_template: str = (
        "There is no running background task with call id {call_id}; it may have finished "
        "already. Call get_running_tasks to see what is running."
    )
    # {tool_name} {call_id}. Not cancellable: the LLM must not promise the caller a stop.
    cancel_refused_template: str = (
        "{tool_name} (call id {call_id}) cannot be cancelled once started; its result will "
        "come when it is ready."
    )
    # {tool_name}. A call that arrives while the session closes starts nothing.
    session_closing_template: str = "The session is closing; {tool_name} was not started."
    # {call_id}. The LLM reused a call id that is still running: nothing new starts.
    call_id_in_use_template: str = (
        "A background task with call id {call_id} is already running; nothing new was started."
    )
    # No placeholders. get_running_tasks with nothing running.
    no_running_tasks_template: str = "No background tasks are running."

    # {text}. A follow-up queued by the app or a tool: an instruction for the reply.
    follow_up_template: str = "{text}"
    # {text}. A steering note: marked as not said by the caller, so the LLM neither
    # answers it aloud nor attributes it to the caller.
    steer_template: str = (
        "Note from the application (the caller did not say this and cannot see it): {text}"
    )

    def __post_init__(self) -> None:
        if self.settle_delay < 0:
            raise ValueError(f"settle_delay must be >= 0, got {self.settle_delay!r}")
        if self.max_tasks_per_session < 1:
            raise ValueError(
                f"max_tasks_per_session must be >= 1, got {self.max_tasks_per_session!r}"
            )
        if self.max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {self.max_redeliveries!r}")
        if self.on_handoff not in _ON_HANDOFF:
            raise ValueError(f"on_handoff must be one of {_ON_HANDOFF}, got {self.on_handoff!r}")
        if self.control_tools not in _CONTROL_TOOLS:
            raise ValueError(
                f"control_tools must be one of {_CONTROL_TOOLS}, got {self.control_tools!r}"
            )
        for f in fields(self):
            if f.name.endswith("_template") and not isinstance(getattr(self, f.name), str):
                raise TypeError(f"{f.name} must be a str")
