"""What the package must know about an agent's model: pipeline LLM or realtime model,
and how a realtime model treats what is written into its conversation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livekit.agents import Agent, AgentSession, llm, utils

__all__ = ["PIPELINE", "ModelTraits", "traits"]


@dataclass(frozen=True)
class ModelTraits:
    """How an agent's model treats the package's writes.

    Attributes:
        auto_reply: The model answers every tool output it receives, at once, by
            itself (a realtime model with ``auto_tool_reply_generation``, e.g. Gemini
            Live). Writing a result is then the same as speaking it, so results are
            written only when the gate opens, and that write is the reply.
        system_notes: ``system`` messages reach the model. The realtime models that
            answer tool outputs by themselves take no system messages (Gemini Live
            drops them), so steering notes go to them as ``user`` messages whose text
            says the caller did not say them.
    """

    auto_reply: bool = False
    system_notes: bool = True


PIPELINE = ModelTraits()
"""A pipeline LLM (or a realtime model without automatic tool replies)."""


def traits(agent: Agent, session: AgentSession[Any]) -> ModelTraits:
    """The traits of the model ``agent`` talks through (its own, else the session's)."""
    model = agent.llm if utils.is_given(agent.llm) else session.llm
    if not isinstance(model, llm.RealtimeModel):
        return PIPELINE
    auto = bool(getattr(model.capabilities, "auto_tool_reply_generation", False))
    return ModelTraits(auto_reply=auto, system_notes=not auto)
