"""The active async-tool mocks, set by `testing.mock_tools`, read by the tool wrapper."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from livekit.agents import Agent

    from .context import AsyncRunContext

__all__ = ["MOCKS", "BoundMock", "find_mock"]

BoundMock: TypeAlias = (
    "Callable[[AsyncRunContext[Any], Mapping[str, object]], Coroutine[Any, Any, object]]"
)

MOCKS: contextvars.ContextVar[dict[type[Agent], dict[str, BoundMock]]] = contextvars.ContextVar(
    "livekit_async_tools_mocks"
)


def find_mock(agent_cls: type[Agent], tool_name: str) -> BoundMock | None:
    """The active mock for ``tool_name`` of ``agent_cls`` (exact class), if any."""
    return MOCKS.get({}).get(agent_cls, {}).get(tool_name)
