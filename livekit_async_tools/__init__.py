"""Slow tools for LiveKit voice agents: run in the background, speak results when quiet."""

from ._log import configure_redaction
from .context import AskTimeout, AsyncRunContext, QuestionNotAsked
from .events import ReplyUpdated, TaskEnded, TaskInfo, TaskStarted, TaskUpdated
from .options import AsyncToolOptions
from .runtime import AsyncToolRuntime, AttachError, attach
from .tool import ToolDefinitionError, function_tool

__all__ = [
    "AskTimeout",
    "AsyncRunContext",
    "AsyncToolOptions",
    "AsyncToolRuntime",
    "AttachError",
    "QuestionNotAsked",
    "ReplyUpdated",
    "TaskEnded",
    "TaskInfo",
    "TaskStarted",
    "TaskUpdated",
    "ToolDefinitionError",
    "attach",
    "configure_redaction",
    "function_tool",
]
