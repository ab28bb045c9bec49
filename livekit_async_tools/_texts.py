"""Every LLM-facing text the runtime writes, filled from the templates in one place."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ._policy import instruction_kind
from .events import TaskStatus
from .options import AsyncToolOptions

__all__ = ["ack_text", "error_text", "instructions", "render_message"]


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


def ack_text(
    opts: AsyncToolOptions,
    *,
    tool_name: str,
    call_id: str,
    message: object | None,
    automatic: bool,
    seconds: float,
) -> str:
    """What the LLM sees as the tool output when a call is acknowledged."""
    if automatic:
        return opts.ack_pending_template.format(
            tool_name=tool_name, call_id=call_id, seconds=seconds
        )
    return opts.ack_update_template.format(
        tool_name=tool_name, call_id=call_id, message=render_message(message)
    )


def error_text(
    opts: AsyncToolOptions,
    *,
    tool_name: str,
    call_id: str,
    status: TaskStatus,
    timeout: float | None,
    tool_error: str | None,
) -> str | None:
    """What the LLM is told about a call that did not succeed (``None`` if it did).

    ``tool_error`` is the message of a raised `ToolError` (passed through as is).
    """
    fmt = {"tool_name": tool_name, "call_id": call_id}
    if status == "succeeded":
        return None
    if status == "cancelled":
        return opts.cancelled_template.format(**fmt)
    if status == "timed_out":
        return opts.timed_out_template.format(**fmt, seconds=timeout or 0)
    if tool_error is not None:
        return tool_error
    return opts.failure_template.format(**fmt)


def instructions(
    opts: AsyncToolOptions,
    *,
    tool_names: Sequence[str],
    item_ids: Sequence[str],
    redelivery: bool,
    maybe_covered: bool,
    follow_ups: Sequence[str],
) -> str:
    """The instructions of one deferred reply: results first, then follow-ups."""
    parts: list[str] = []
    if item_ids:
        fmt = {
            "tool_names": ", ".join(dict.fromkeys(tool_names)),
            "items": ", ".join(item_ids),
        }
        template = {
            "redeliver": opts.redeliver_template,
            "maybe_covered": opts.deliver_maybe_covered_template,
            "deliver": opts.deliver_template,
        }[instruction_kind(redelivery=redelivery, maybe_covered=maybe_covered)]
        parts.append(template.format(**fmt))
    parts += [opts.follow_up_template.format(text=text) for text in follow_ups]
    return "\n".join(parts)
