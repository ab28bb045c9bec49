"""Offline testing helpers: a scripted LLM, `mock_tools` for async tools, `settle`."""

from ._llm import LLMRequest, Reply, ScriptedLLM, ToolCall
from ._mocks import mock_tools
from ._settle import settle

__all__ = ["LLMRequest", "Reply", "ScriptedLLM", "ToolCall", "mock_tools", "settle"]
