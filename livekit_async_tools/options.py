"""`AsyncToolOptions`: runtime settings and every LLM-facing string, as named templates."""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Literal, TypeAlias

__all__ = ["TEMPLATE_PLACEHOLDERS", "AsyncToolOptions", "ControlTools", "Delivery", "OnHandoff"]

OnHandoff: TypeAlias = Literal["forward", "hold", "cancel"]
"""What happens to a call when its origin agent is handed off for good."""

Delivery: TypeAlias = Literal["when_idle", "interrupt", "silent"]
"""How an update or a final result reaches the caller."""

ControlTools: TypeAlias = Literal["auto", "dynamic", "always", "never"]
"""When the LLM-facing control tools are offered: ``auto`` to every agent that has a
background tool, or that a live call is forwarded to (``on_handoff="forward"``), for
its whole life (a stable tool list: no change per call, which keeps the provider's
prompt cache and does not reconnect realtime sessions whose tools are immutable);
``dynamic`` to the current agent only while a call is live (two tool-list changes per
call); ``always`` to every agent; ``never``."""

_ON_HANDOFF: tuple[OnHandoff, ...] = ("forward", "hold", "cancel")
_CONTROL_TOOLS: tuple[ControlTools, ...] = ("auto", "dynamic", "always", "never")

TEMPLATE_PLACEHOLDERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ack_update_template": ("tool_name", "call_id", "message"),
        "ack_pending_template": ("tool_name", "call_id", "seconds"),
        "update_template": ("tool_name", "call_id", "message"),
        "failure_template": ("tool_name", "call_id"),
        "cancelled_template": ("tool_name", "call_id"),
        "timed_out_template": ("tool_name", "call_id", "seconds"),
        "deliver_template": ("tool_names", "items"),
        "deliver_maybe_covered_template": ("tool_names", "items"),
        "redeliver_template": ("tool_names", "items"),
        "too_many_tasks_template": ("count",),
        "duplicate_running_template": ("tool_name", "call_id"),
        "duplicate_confirm_template": ("tool_name", "call_id", "param"),
        "cancel_done_template": ("tool_name", "call_id"),
        "cancel_too_late_template": ("tool_name", "call_id", "status"),
        "cancel_unknown_template": ("call_id",),
        "cancel_refused_template": ("tool_name", "call_id"),
        "session_closing_template": ("tool_name",),
        "call_id_in_use_template": ("call_id",),
        "ask_template": ("tool_name", "call_id", "question_id", "question"),
        "answer_done_template": ("tool_name", "call_id", "question_id"),
        "answer_unknown_template": ("question_id",),
        "overdue_template": ("tool_name", "call_id", "seconds"),
        "hold_template": ("tool_names", "seconds", "progress"),
        "extend_done_template": ("tool_name", "call_id", "seconds"),
        "extend_refused_template": ("tool_name", "call_id"),
        "no_running_tasks_template": (),
        "follow_up_template": ("text",),
        "steer_template": ("text",),
    }
)
"""The placeholders each `AsyncToolOptions` template may use, by field name.

The runtime fills every one of them, so a template may use any subset, in any
order, with a format spec (``{seconds:.0f}``) or a conversion (``{message!r}``).
``seconds`` is a number (an ``int`` or a ``float``), ``count`` an ``int``, the
others are strings. `AsyncToolOptions` refuses a template that uses anything else.
"""

# Values of the right type for a trial format: it catches a format spec or a conversion
# that the real values would reject (`{count:s}`, `{seconds:d}`, `{message!x}`).
_TRIAL_VALUES: tuple[Mapping[str, object], ...] = tuple(
    {
        "tool_name": "search_flights",
        "tool_names": "search_flights, search_hotels",
        "call_id": "call_1",
        "message": "searching",
        "items": "call_1_result",
        "question_id": "call_1_question_1",
        "question": "Would the 8:15 do?",
        "progress": " (last progress: searching)",
        "param": "confirm",
        "status": "succeeded",
        "text": "hello",
        "count": 32,
        "seconds": seconds,
    }
    for seconds in (2.5, 120)
)


def _placeholder_list(allowed: tuple[str, ...]) -> str:
    names = [f"{{{name}}}" for name in allowed]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _fields_of(template: str) -> list[str]:
    """Every replacement field of ``template``, nested ones (in format specs) included."""
    found: list[str] = []
    for _literal, field, spec, _conversion in string.Formatter().parse(template):
        if field is None:
            continue
        found.append(field)
        if spec and "{" in spec:
            found += _fields_of(spec)
    return found


@functools.lru_cache(maxsize=256)
def _check_template(name: str, template: str) -> None:
    allowed = TEMPLATE_PLACEHOLDERS[name]
    may_use = (
        f"{name} may use {_placeholder_list(allowed)}"
        if allowed
        else f"{name} takes no placeholders"
    )
    hint = f"{may_use} (write {{{{ and }}}} for a literal brace)"
    try:
        used = _fields_of(template)
    except ValueError as e:
        raise ValueError(f"{name} is not a valid str.format template ({e}); {hint}") from None
    for field in used:
        if field == "" or field.isdigit():
            raise ValueError(
                f"{name} uses a positional placeholder {{{field}}}; templates are filled by "
                f"name: {hint}"
            )
        base = field.split(".", 1)[0].split("[", 1)[0]
        if base not in allowed:
            raise ValueError(f"{name} uses {{{field}}}, which is not available; {hint}")
        if base != field:
            raise ValueError(
                f"{name} uses {{{field}}}; placeholders are plain names, without attribute "
                f"or index access: {hint}"
            )
    for values in _TRIAL_VALUES:
        try:
            template.format(**values)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{name} cannot be filled in ({e}); {{seconds}} is an int or a float, "
                f"{{count}} an int, the others str; {hint}"
            ) from None


@dataclass(frozen=True, kw_only=True)
class AsyncToolOptions:
    """Per-session settings of the async tool runtime.

    Pass an instance to `attach`. All fields are keyword-only. Every string the
    LLM hears from the package is a ``*_template`` field: a `str.format` string
    that may use the placeholders `TEMPLATE_PLACEHOLDERS` lists for it (see the
    table under "Templates" in the API reference). Everything is checked when
    the options are built, so a typo fails at start-up rather than mid-call.

    Example::

        options = AsyncToolOptions(
            settle_delay=0.5,
            timed_out_template="{tool_name} gave up after {seconds:.0f} seconds.",
        )

    Attributes:
        settle_delay: Seconds of continuous quiet before a deferred reply starts.
        max_tasks_per_session: Live background calls allowed at once per session.
        max_redeliveries: How often an interrupted deferred reply is re-delivered.
        hold_after: Seconds of silence (nobody speaking, no reply under way) while a
            background call whose result the current agent will speak runs (its own,
            or one forwarded to it), after which that agent says one
            short holding line: a follow-up from ``hold_template`` (placeholders
            ``{tool_names}``, ``{seconds}``, ``{progress}``), spoken through the gate,
            at most once per interval, withdrawn if the result or any speech comes
            first. ``None`` (default) never does; else a finite number > 0.
        timeout_decision_window: Seconds the LLM has, once a call with
            ``on_timeout="ask"`` reached its deadline, to extend it (``extend_task``) or
            cancel it; without a decision the call is stopped as ``timed_out``.
        on_handoff: Default `OnHandoff` policy for tools that do not set one.
        control_tools: When `get_running_tasks`/`cancel_task` are offered (`ControlTools`).

    Raises:
        ValueError: A setting is out of range, or a template is malformed or uses a
            placeholder it may not (the message names the template and what it may use).
        TypeError: A setting or a template has the wrong type.
    """

    settle_delay: float = 0.3
    max_tasks_per_session: int = 32
    max_redeliveries: int = 2
    timeout_decision_window: float = 60.0
    hold_after: float | None = None
    on_handoff: OnHandoff = "forward"
    control_tools: ControlTools = "auto"

    # The first update is what the LLM hears now: it must say the work goes on, so the
    # LLM neither waits nor calls again.
    ack_update_template: str = (
        "{tool_name} is now running in the background (call id {call_id}) and reported: "
        "{message}. Its result will come to you later; do not call it again for this. "
        "Tell the caller briefly and keep the conversation going."
    )
    # Said when a call neither updated nor returned within ack_after; phrased so the LLM
    # tells the caller it is still working.
    ack_pending_template: str = (
        "{tool_name} is still working in the background (call id {call_id}); the result "
        "will come to you later, so do not call it again for this. Tell the caller briefly "
        "that you are on it and keep the conversation going."
    )
    # The output of a later progress item.
    update_template: str = "Progress from {tool_name}: {message}"
    # A generic failure: the exception text may hold private data or internals, so the
    # LLM only hears that the call failed.
    failure_template: str = (
        "{tool_name} failed because of an unexpected internal error, so there is no result. "
        "Apologise briefly; do not guess a result."
    )
    # Recorded, never spoken: whoever cancelled already knows.
    # Worded so "cancelled" is not mistaken for the subject of the tool (a flight).
    cancelled_template: str = "{tool_name} was cancelled before it returned a result."
    # Says which tool and after how long.
    timed_out_template: str = "{tool_name} was stopped after {seconds:g} seconds without a result."
    # Items at the end of the conversation: speak them now. The item call ids tell the
    # LLM exactly which outputs to announce (not superseded ones).
    deliver_template: str = (
        "Background results just arrived from {tool_names}: the tool outputs with call ids "
        "{items}. Tell the caller about them now, briefly and naturally."
    )
    # Newer conversation followed the items: the LLM may have covered them already, and
    # an empty answer is then the right one.
    deliver_maybe_covered_template: str = (
        "Background results arrived earlier in the conversation from {tool_names}: the "
        "tool outputs with call ids {items}. If you have not told the caller about them "
        "yet, do so now, briefly; if you already have, reply with nothing."
    )
    # A previous telling was cut off before it finished.
    redeliver_template: str = (
        "You were cut off while telling the caller about background results from "
        "{tool_names} (tool outputs with call ids {items}). If they are still relevant, "
        "finish telling the caller briefly; otherwise reply with nothing."
    )
    # The cap is reached: tell the LLM what the caller can do about it.
    too_many_tasks_template: str = (
        "Too many background tasks are running ({count}); wait for one to finish or "
        "cancel one before starting another."
    )

    # on_duplicate="reject": nothing new starts; the LLM should tell the caller the same
    # request is already being worked on, not retry.
    duplicate_running_template: str = (
        "{tool_name} with the same request is already running (call id {call_id}); its "
        "result will come to you. Do not call it again; tell the caller it is in progress."
    )
    # on_duplicate="confirm": ask the caller first.
    duplicate_confirm_template: str = (
        "{tool_name} with the same request is already running (call id {call_id}). Ask the "
        "caller whether they want to run it a second time; only if they say yes, call it "
        "again with {param} set to true."
    )
    # cancel_task succeeded.
    cancel_done_template: str = "{tool_name} (call id {call_id}) was cancelled."
    # cancel_task lost the race: the call had ended, so its real outcome stands and its
    # result still comes.
    cancel_too_late_template: str = (
        "{tool_name} (call id {call_id}) had already finished ({status}) before it could be "
        "cancelled; its result stands."
    )
    # Unknown or finished id: name it so the LLM can check get_running_tasks.
    cancel_unknown_template: str = (
        "There is no running background task with call id {call_id}; it may have finished "
        "already. Call get_running_tasks to see what is running."
    )
    # Not cancellable: the LLM must not promise the caller a stop.
    cancel_refused_template: str = (
        "{tool_name} (call id {call_id}) cannot be cancelled once started; its result will "
        "come when it is ready."
    )
    # A call that arrives while the session closes starts nothing.
    session_closing_template: str = "The session is closing; {tool_name} was not started."
    # The LLM reused a call id that is still running: nothing new starts.
    call_id_in_use_template: str = (
        "A background task with call id {call_id} is already running; nothing new was started."
    )
    # get_running_tasks with nothing running.
    no_running_tasks_template: str = "No background tasks are running."

    # A question of `AsyncRunContext.ask`: the output of its item, spoken through the
    # gate. Names the question id the LLM passes to answer_question.
    ask_template: str = (
        "{tool_name} needs the caller's answer to go on (question id {question_id}): "
        "{question} Ask the caller this now, in your own words. When they answer, even "
        "later in the conversation, call answer_question with question id {question_id} "
        "and their answer."
    )
    # answer_question passed the answer on: the call goes on with it.
    answer_done_template: str = (
        "The answer was passed to {tool_name} (call id {call_id}); it goes on in the "
        "background. Tell the caller briefly."
    )
    # answer_question with an unknown, answered or expired question id.
    answer_unknown_template: str = (
        "There is no open question with id {question_id}: it was answered already, expired, "
        "or its task ended. Do not ask it again."
    )
    # on_timeout="ask": the deadline passed; the LLM asks the caller whether to wait.
    overdue_template: str = (
        "{tool_name} (call id {call_id}) is taking longer than expected ({seconds:.0f} "
        "seconds so far). Tell the caller and ask whether they want to keep waiting. If "
        "they do, call extend_task with call id {call_id} and how many more seconds to "
        "allow; if not, call cancel_task with call id {call_id}."
    )
    # extend_task moved the deadline.
    extend_done_template: str = (
        "{tool_name} (call id {call_id}) may now run {seconds:g} more seconds; its result "
        "will come to you."
    )
    # extend_task on a call that is not waiting for that decision.
    extend_refused_template: str = (
        "{tool_name} (call id {call_id}) is not waiting for a decision about its deadline; "
        "nothing was changed."
    )
    # hold_after: the caller has waited in silence; one short line keeps them company.
    hold_template: str = (
        "The caller has been waiting in silence for {seconds:.0f} seconds for "
        "{tool_names}{progress}. Say one short, natural line to keep them company, for "
        "example that you are still on it. Do not guess or promise a result."
    )
    # A follow-up queued by the app or a tool: an instruction for the reply.
    follow_up_template: str = "{text}"
    # A steering note: marked as not said by the caller, so the LLM neither answers it
    # aloud nor attributes it to the caller.
    steer_template: str = (
        "Note from the application (the caller did not say this and cannot see it): {text}"
    )

    def __post_init__(self) -> None:
        if not _is_number(self.settle_delay):
            raise TypeError(f"settle_delay must be a number of seconds, got {self.settle_delay!r}")
        if not (math.isfinite(self.settle_delay) and self.settle_delay >= 0):
            raise ValueError(f"settle_delay must be >= 0 seconds, got {self.settle_delay!r}")
        if not _is_int(self.max_tasks_per_session):
            raise TypeError(
                f"max_tasks_per_session must be an int, got {self.max_tasks_per_session!r}"
            )
        if self.max_tasks_per_session < 1:
            raise ValueError(
                f"max_tasks_per_session must be >= 1, got {self.max_tasks_per_session!r}"
            )
        if not (
            _is_number(self.timeout_decision_window)
            and math.isfinite(self.timeout_decision_window)
            and self.timeout_decision_window > 0
        ):
            raise ValueError(
                "timeout_decision_window must be a number of seconds > 0, got "
                f"{self.timeout_decision_window!r}"
            )
        if self.hold_after is not None and not (
            _is_number(self.hold_after) and math.isfinite(self.hold_after) and self.hold_after > 0
        ):
            raise ValueError(
                f"hold_after must be a number of seconds > 0, or None, got {self.hold_after!r}"
            )
        if not _is_int(self.max_redeliveries):
            raise TypeError(f"max_redeliveries must be an int, got {self.max_redeliveries!r}")
        if self.max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {self.max_redeliveries!r}")
        if self.on_handoff not in _ON_HANDOFF:
            raise ValueError(f"on_handoff must be one of {_ON_HANDOFF}, got {self.on_handoff!r}")
        if self.control_tools not in _CONTROL_TOOLS:
            raise ValueError(
                f"control_tools must be one of {_CONTROL_TOOLS}, got {self.control_tools!r}"
            )
        for f in fields(self):
            if f.name.endswith("_template"):
                value = getattr(self, f.name)
                if not isinstance(value, str):
                    raise TypeError(f"{f.name} must be a str, got {type(value).__name__}")
                _check_template(f.name, value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
