"""`mock_tools` for async tools: mocks bind by name and run the background lifecycle."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, TypeGuard

import livekit.agents
import livekit.agents.voice.run_result
from livekit.agents import Agent, RunContext, llm
from livekit.agents import mock_tools as lk_mock_tools

from .._mock_registry import MOCKS as _MOCKS
from .._mock_registry import BoundMock as _Bound
from ..context import AsyncRunContext
from ..tool import CTX_PARAM

__all__ = ["LivekitMockError", "check_livekit_mocks", "mock_tools"]


class LivekitMockError(TypeError):
    """livekit's own ``mock_tools`` was asked to mock an async tool of this package."""


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
        if _is_async_tool(tool):
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


def _is_async_tool(tool: object) -> TypeGuard[llm.FunctionTool[..., Any]]:
    return isinstance(tool, llm.FunctionTool) and hasattr(tool, "__livekit_async_spec__")


def check_livekit_mocks(agent_cls: object, mocks: object) -> None:
    """Refuse mocks that livekit's own ``mock_tools`` would apply to async tools.

    livekit's ``mock_tools`` runs a mock in place of the whole tool, so an async
    tool mocked that way silently becomes an ordinary blocking tool: no
    acknowledgement, no background task, no deferred reply, and a test that still
    passes. The pytest plugin runs this check inside livekit's ``mock_tools``.

    Args:
        agent_cls: The agent class given to livekit's ``mock_tools``.
        mocks: The ``{tool name: mock}`` mapping given to it.

    Raises:
        LivekitMockError: A name is an async tool of ``agent_cls``; the message
            points to `livekit_async_tools.testing.mock_tools`.
    """
    if not (isinstance(agent_cls, type) and issubclass(agent_cls, Agent)):
        return
    if not isinstance(mocks, Mapping):
        return
    tools = _class_tools(agent_cls)
    names = sorted(name for name in mocks if _is_async_tool(tools.get(name)))
    if names:
        listed = ", ".join(map(repr, names))
        raise LivekitMockError(
            f"livekit's mock_tools cannot mock {listed} of {agent_cls.__name__}: "
            f"{'they are async tools' if len(names) > 1 else 'it is an async tool'} "
            "(livekit_async_tools), and livekit would run the mock as an ordinary "
            "blocking tool (no acknowledgement, no background task, no deferred reply), "
            "so the test would not exercise what runs in production. Use "
            "livekit_async_tools.testing.mock_tools instead: same call shape "
            "(mock_tools(AgentClass, {name: mock})), mocks bind by parameter name, and "
            "ordinary tools in the same mapping are handed to livekit's mock_tools."
        )


# Where livekit exposes `mock_tools` (module, attribute); the guard wraps each.
_LIVEKIT_MOCK_TOOLS: tuple[tuple[ModuleType, str], ...] = (
    (livekit.agents, "mock_tools"),
    (livekit.agents.voice.run_result, "mock_tools"),
)
_GUARDED = "__livekit_async_tools_guard__"
_originals: dict[tuple[str, str], Callable[..., Any]] = {}


def guard_livekit_mock_tools() -> None:
    """Make livekit's ``mock_tools`` raise `LivekitMockError` for async tools.

    Wraps ``livekit.agents.mock_tools`` (and its definition in
    ``livekit.agents.voice.run_result``) with `check_livekit_mocks`; everything else
    is passed to livekit unchanged. Idempotent; `unguard_livekit_mock_tools` undoes
    it. The pytest plugin calls it before test modules are imported; code that
    imported livekit's ``mock_tools`` earlier keeps the unguarded function.
    """
    for module, name in _LIVEKIT_MOCK_TOOLS:
        original = getattr(module, name, None)
        if original is None or getattr(original, _GUARDED, False):
            continue
        _originals[(module.__name__, name)] = original
        setattr(module, name, _guarded(original))


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def mock_tools(agent: object, mocks: object, *args: Any, **kwargs: Any) -> Any:
        check_livekit_mocks(agent, mocks)
        return original(agent, mocks, *args, **kwargs)

    setattr(mock_tools, _GUARDED, True)
    return mock_tools


def unguard_livekit_mock_tools() -> None:
    """Restore livekit's own ``mock_tools`` (undo `guard_livekit_mock_tools`)."""
    for module, name in _LIVEKIT_MOCK_TOOLS:
        original = _originals.pop((module.__name__, name), None)
        if original is not None:
            setattr(module, name, original)
