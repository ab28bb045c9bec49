"""Every livekit-agents version difference the package depends on, in one place."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

from livekit.agents import llm
from livekit.agents.version import __version__ as LIVEKIT_AGENTS_VERSION

if TYPE_CHECKING:
    from livekit.agents import Agent

__all__ = [
    "INSTRUCTIONS_REPLACE_PERSONA",
    "LIVEKIT_AGENTS_VERSION",
    "VERSION",
    "agent_is_closed",
    "update_agent_chat_ctx",
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

INSTRUCTIONS_REPLACE_PERSONA = VERSION < (1, 5, 0)
"""``generate_reply(instructions=)`` replaces the agent's instructions before 1.5."""


@functools.cache
def _accepts_keyword(fn: object, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


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
