"""Offline testing helpers: a scripted LLM, a fake voice stack, `mock_tools` for async
tools, `settle`, and `settle_run` (deferred replies as a livekit `RunResult`)."""

from ._fake_voice import AgentSegment, CallerSegment, FakeVoice, Overlap
from ._llm import LLMRequest, Reply, ScriptedLLM, ToolCall
from ._mocks import LivekitMockError, mock_tools
from ._run import settle_run
from ._settle import settle

__all__ = [
    "AgentSegment",
    "CallerSegment",
    "FakeVoice",
    "LLMRequest",
    "LivekitMockError",
    "Overlap",
    "Reply",
    "ScriptedLLM",
    "ToolCall",
    "mock_tools",
    "settle",
    "settle_run",
]
