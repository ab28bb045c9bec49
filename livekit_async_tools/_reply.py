"""What a deferred reply says and does: its instructions, whether it said anything,
and the handoff a result asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from livekit.agents import Agent, llm

from ._chat_store import said_after
from ._log import logger
from ._ports import PendingItem
from ._texts import instructions
from .options import AsyncToolOptions

if TYPE_CHECKING:
    from livekit.agents.voice import SpeechHandle

__all__ = ["handoff_of", "output_of", "reply_instructions", "said"]


def reply_instructions(options: AsyncToolOptions, target: Agent, items: list[PendingItem]) -> str:
    """The instructions of the reply ``target`` speaks for ``items``."""
    results = [p for p in items if p.kind != "follow_up"]
    return instructions(
        options,
        tool_names=[p.tool_name for p in results],
        item_ids=[p.item_id for p in results],
        redelivery=any(p.attempts for p in results),
        maybe_covered=bool(results)
        and said_after(target.chat_ctx.items, {p.item_id for p in results}),
        follow_ups=[p.text for p in items if p.kind == "follow_up"],
    )


def said(handle: SpeechHandle) -> bool:
    """True if the reply put any assistant text into the conversation."""
    return any(
        isinstance(item, llm.ChatMessage)
        and item.role == "assistant"
        and (item.text_content or "").strip()
        for item in handle.chat_items
    )


def handoff_of(target: Agent, items: list[PendingItem]) -> Agent | None:
    """The agent the first handing-off result of ``items`` hands ``target``'s session
    to. Only its origin hands off: a result forwarded to another agent is only spoken
    (the handoff is dropped, with a warning)."""
    for p in items:
        if p.handoff is not None:
            if p.origin is target:
                return p.handoff
            logger.warning(
                "a background call's handoff was not made: its origin is no longer current",
                extra={"call_id": p.call_id},
            )
            p.handoff = None
    return None


def output_of(item: PendingItem) -> str:
    """The tool output text of a call's item ("" for a follow-up)."""
    return next(
        (str(i.output) for i in item.chat_items if isinstance(i, llm.FunctionCallOutput)), ""
    )
