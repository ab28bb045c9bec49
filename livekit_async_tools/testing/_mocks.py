"""`mock_tools` for async tools: mocks bind by name and run the background lifecycle."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from livekit.agents import Agent, RunContext, llm
from livekit.agents import mock_tools as lk_mock_tools

from .._mock_registry import MOCKS as _MOCKS
from .._mock_registry import BoundMock as _Bound
from ..context import AsyncRunContext
from ..tool import CTX_PARAM

__all__ = ["mock_tools"]


def _class_tools(
    agent_cls: type[Agent],
) -> dict[str, llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]]:
    tools: dict[str, llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]] = {}
    for klass in reversed(agent_cls.__mro__):
        for value in vars(klass).values():
            if isinstance(value, (llm.FunctionTool, llm.RawFunctionTool)):
                tools[value.info.name] = value
    return tools


def _is_ctx_param(param: inspect.Parameter, hints: Mapping[str, object]) -> bool:
    hint = hints.get(param.name)
    if param.name == "ctx":
        return True
    if hint is None:
        return False
    origin = getattr(hint, "__origin__", None) or hint
    return isinstance(origin, type) and issubclass(origin, RunContext)


def _bind_by_name(tool: llm.FunctionTool[..., Any], mock: Callable[..., Any]) -> _Bound:
    tool_params = set(inspect.signature(tool).parameters) - {CTX_PARAM}
    sig = inspect.signature(mock)
    try:
        hints = inspect.get_annotations(mock, eval_str=True)
    except Exception:
        hints = {}
    ctx_params: list[str] = []
    for p in sig.parameters.values():
        if _is_ctx_param(p, hints):
            ctx_params.append(p.name)
        elif p.kind in (p.VAR_KEYWORD,):
            continue
        elif p.name not in tool_params:
            raise TypeError(
                f"mock for {tool.info.name!r} takes {p.name!r}, which is not a parameter of "
                f"the tool (its parameters: {sorted(tool_params)})"
            )
    takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())

    async def call(ctx: AsyncRunContext[Any], arguments: Mapping[str, object]) -> object:
        kwargs = {k: v for k, v in arguments.items() if takes_all or k in sig.parameters}
        for name in ctx_params:
            kwargs[name] = ctx
        result = mock(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    return call


@contextlib.contextmanager
def mock_tools(agent_cls: type[Agent], mocks: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
    """Replace tools of ``agent_cls`` with mocks inside a ``with`` block.

    Same call shape as livekit's ``mock_tools``. For an async tool the mock runs
    through the same background lifecycle as the real body (acknowledgement,
    deferred delivery, cancellation, timeouts); the real body never runs. Mock
    parameters bind **by name**: a mock may declare any subset of the tool's
    parameters, in any order, and receives the `AsyncRunContext` in a parameter
    annotated with it (or `RunContext`) or named ``ctx``. Mocks for ordinary tools
    are handed to livekit's own ``mock_tools``. Nested blocks stack; leaving a
    block restores the previous mocks, also on an exception.

    Args:
        agent_cls: The agent class whose tools are mocked (exact class, as livekit).
        mocks: Tool name → sync or async callable.

    Raises:
        ValueError: A name is not a tool declared on ``agent_cls``.
        TypeError: A mock takes a parameter the tool does not have.

    Example::

        with mock_tools(TravelAgent, {"search_flights": lambda city: f"3 flights to {city}"}):
            await session.run(user_input="Flights to Paris?")
    """
    tools = _class_tools(agent_cls)
    unknown = sorted(set(mocks) - set(tools))
    if unknown:
        raise ValueError(
            f"mock_tools: {agent_cls.__name__} has no tool named {', '.join(map(repr, unknown))}"
            f" (its tools: {sorted(tools)})"
        )
    async_mocks: dict[str, _Bound] = {}
    plain: dict[str, Callable[..., Any]] = {}
    for name, mock in mocks.items():
        tool = tools[name]
        if isinstance(tool, llm.FunctionTool) and hasattr(tool, "__livekit_async_spec__"):
            async_mocks[name] = _bind_by_name(tool, mock)
        else:
            plain[name] = mock
    current = _MOCKS.get({})
    merged = dict(current)
    merged[agent_cls] = {**current.get(agent_cls, {}), **async_mocks}
    token = _MOCKS.set(merged)
    try:
        with lk_mock_tools(agent_cls, plain) if plain else contextlib.nullcontext():
            yield
    finally:
        _MOCKS.reset(token)
