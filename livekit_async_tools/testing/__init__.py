"""Offline testing helpers: a scripted LLM, a fake voice stack, `mock_tools` for async
tools, `settle`."""

from ._fake_voice import AgentSegment, CallerSegment, FakeVoice, Overlap
from ._llm import LLMRequest, Reply, ScriptedLLM, ToolCall
from ._mocks import mock_tools
from ._settle import settle

__all__ = [
    "AgentSegment",
    "CallerSegment",
    "FakeVoice",
    "LLMRequest",
    "Overlap",
    "Reply",
    "ScriptedLLM",
    "ToolCall",
    "mock_tools",
    "settle",
]
