"""`function_tool`: detect `AsyncRunContext` tools and wrap them for livekit."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, overload

from livekit.agents import Agent, RunContext, llm
from livekit.agents import function_tool as lk_function_tool
from pydantic import Field

from ._mock_registry import find_mock
from .context import AsyncRunContext
from .options import Delivery, OnHandoff
from .runtime import CONFIRM_PARAM, attach

__all__ = ["DuplicateMode", "DuplicateScope", "ToolDefinitionError", "ToolSpec", "function_tool"]

DuplicateMode: TypeAlias = Literal["allow", "reject", "replace", "confirm"]
DuplicateScope: TypeAlias = Literal["name", "name_and_args"]

_F = TypeVar("_F", bound=Callable[..., Any])

CTX_PARAM = "lk_async_run_ctx"
"""Name of the keyword-only `RunContext` parameter livekit injects into the wrapper."""

_CONFIRM_DESCRIPTION = (
    "Set to true only when the caller confirmed they want this to run again while the "
    "same request is already running."
)
_DELIVERIES = ("when_idle", "interrupt", "silent")
_ON_HANDOFF = ("forward", "hold", "cancel")
_DUPLICATE_MODES = ("allow", "reject", "replace", "confirm")
_DUPLICATE_SCOPES = ("name", "name_and_args")


class ToolDefinitionError(TypeError):
    """A tool was declared in a way this package cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class ToolSpec:
    """The options of one async tool (internal)."""

    name: str
    ack_after: float | None = 1.0
    on_handoff: OnHandoff | None = None
    cancellable: bool = False
    timeout: float | None = None
    result_delivery: Delivery = "when_idle"
    on_duplicate: DuplicateMode = "reject"
    duplicate_scope: DuplicateScope = "name_and_args"


def _is_async_ctx_type(annotation: object) -> bool:
    if isinstance(annotation, str):
        base = annotation.split("[", 1)[0].strip().rsplit(".", 1)[-1]
        return base == "AsyncRunContext"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_async_ctx_type(typing.get_args(annotation)[0])
    target = origin or annotation
    return isinstance(target, type) and issubclass(target, AsyncRunContext)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolved forward references: fall back to the raw strings
        return dict(getattr(fn, "__annotations__", {}))


def find_context_param(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s `AsyncRunContext` parameter, or ``None``."""
    hints = _type_hints(fn)
    for name in inspect.signature(fn).parameters:
        if name in hints and _is_async_ctx_type(hints[name]):
            return name
    return None


def _validate_options(spec: ToolSpec) -> None:
    if spec.ack_after is not None and spec.ack_after < 0:
        raise ValueError(f"ack_after must be >= 0 or None, got {spec.ack_after!r}")
    if spec.timeout is not None and spec.timeout <= 0:
        raise ValueError(f"timeout must be > 0 or None, got {spec.timeout!r}")
    if spec.on_handoff is not None and spec.on_handoff not in _ON_HANDOFF:
        raise ValueError(f"on_handoff must be one of {_ON_HANDOFF}, got {spec.on_handoff!r}")
    if spec.result_delivery not in _DELIVERIES:
        raise ValueError(
            f"result_delivery must be one of {_DELIVERIES}, got {spec.result_delivery!r}"
        )
    if spec.on_duplicate not in _DUPLICATE_MODES:
        raise ValueError(
            f"on_duplicate must be one of {_DUPLICATE_MODES}, got {spec.on_duplicate!r}"
        )
    if spec.duplicate_scope not in _DUPLICATE_SCOPES:
        raise ValueError(
            f"duplicate_scope must be one of {_DUPLICATE_SCOPES}, got {spec.duplicate_scope!r}"
        )
    if spec.on_duplicate == "replace" and not spec.cancellable:
        raise ValueError(
            'on_duplicate="replace" cancels the running call, so the tool must be '
            "declared cancellable=True"
        )


def _build_wrapper(fn: Callable[..., Any], ctx_name: str, spec: ToolSpec) -> Callable[..., Any]:
    if not inspect.iscoroutinefunction(fn):
        raise ToolDefinitionError(
            f"{fn.__qualname__} takes an AsyncRunContext, so it must be an `async def` function"
        )
    sig = inspect.signature(fn)
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ToolDefinitionError(
                f"{fn.__qualname__}: parameter {p.name!r} is {p.kind.description}; tool "
                "parameters must be ordinary named parameters"
            )
    if CTX_PARAM in sig.parameters:
        raise ToolDefinitionError(f"{fn.__qualname__}: the name {CTX_PARAM!r} is reserved")
    hints = _type_hints(fn)
    params = [p for p in sig.parameters.values() if p.name != ctx_name]
    extra: dict[str, Any] = {CTX_PARAM: RunContext}
    if spec.on_duplicate == "confirm":
        if CONFIRM_PARAM in sig.parameters:
            raise ToolDefinitionError(
                f"{fn.__qualname__}: on_duplicate='confirm' adds a {CONFIRM_PARAM!r} "
                "parameter; rename yours"
            )
        extra[CONFIRM_PARAM] = Annotated[bool, Field(description=_CONFIRM_DESCRIPTION)]
        params.append(
            inspect.Parameter(
                CONFIRM_PARAM,
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=extra[CONFIRM_PARAM],
            )
        )
    params.append(
        inspect.Parameter(CTX_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=RunContext)
    )
    wrapper_sig = sig.replace(parameters=params)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = wrapper_sig.bind(*args, **kwargs)
        bound.apply_defaults()
        run_ctx: RunContext[Any] = bound.arguments.pop(CTX_PARAM)
        confirmed = bool(bound.arguments.pop(CONFIRM_PARAM, False))
        user_args = dict(bound.arguments)
        first = params[0].name if params else None
        instance = user_args.get(first) if first is not None else None
        if isinstance(instance, Agent):
            origin: Agent = instance
            arguments = {k: v for k, v in user_args.items() if k != first}
        else:
            origin = run_ctx.session.current_agent
            arguments = user_args
        runtime = attach(run_ctx.session)
        mock = find_mock(type(origin), spec.name)

        def body(ctx: AsyncRunContext[Any]) -> Coroutine[Any, Any, object]:
            if mock is not None:
                return mock(ctx, arguments)
            return fn(**user_args, **{ctx_name: ctx})  # type: ignore[no-any-return]

        return await runtime.dispatch(spec, run_ctx, body, arguments, origin, confirmed=confirmed)

    wrapper.__signature__ = wrapper_sig  # type: ignore[attr-defined]
    annotations = {p.name: hints[p.name] for p in params if p.name in hints}
    annotations.update(extra)
    if "return" in hints:
        annotations["return"] = hints["return"]
    wrapper.__annotations__ = annotations
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attr, getattr(fn, attr, None))
    wrapper.__livekit_async_spec__ = spec  # type: ignore[attr-defined]
    return wrapper


@overload
def function_tool(
    f: _F,
    *,
    name: str | None = None,
    description: str | None = None,
    cancellable: bool = False,
    on_duplicate: DuplicateMode = "reject",
    duplicate_scope: DuplicateScope = "name_and_args",
    timeout: float | None = None,
    ack_after: float | None = 1.0,
    on_handoff: OnHandoff | None = None,
    result_delivery: Delivery = "when_idle",
) -> llm.FunctionTool[..., Any]: ...
@overload
def function_tool(
    f: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    cancellable: bool = False,
    on_duplicate: DuplicateMode = "reject",
    duplicate_scope: DuplicateScope = "name_and_args",
    timeout: float | None = None,
    ack_after: float | None = 1.0,
    on_handoff: OnHandoff | None = None,
    result_delivery: Delivery = "when_idle",
) -> Callable[[_F], llm.FunctionTool[..., Any]]: ...
def function_tool(
    f: _F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    cancellable: bool = False,
    on_duplicate: DuplicateMode = "reject",
    duplicate_scope: DuplicateScope = "name_and_args",
    timeout: float | None = None,
    ack_after: float | None = 1.0,
    on_handoff: OnHandoff | None = None,
    result_delivery: Delivery = "when_idle",
) -> llm.FunctionTool[..., Any] | Callable[[_F], llm.FunctionTool[..., Any]]:
    """Declare a tool; one that takes an `AsyncRunContext` runs in the background.

    A drop-in replacement for `livekit.agents.function_tool`, bare or with options,
    on `Agent`/`AgentTask` methods and on plain functions. A function without an
    `AsyncRunContext` parameter is handed to livekit unchanged. One with it is
    wrapped: livekit sees an ordinary tool with the same name, description and
    JSON schema (the context parameter removed, arguments validated by livekit),
    whose body starts the background call.

    Args:
        f: The function (when used bare).
        name: The tool name the LLM sees (default: the function's name).
        description: The description (default: the docstring).
        cancellable: Whether the LLM and the app may cancel a running call.
        on_duplicate: What a second identical call does while one runs.
        duplicate_scope: What makes two calls identical.
        timeout: Hard deadline in seconds for the whole call, kept across updates.
        ack_after: Grace window in seconds: a call that ends within it is an ordinary
            tool result; otherwise it is acknowledged and goes on in the background.
            ``None`` waits for the first `AsyncRunContext.update` or the return.
        on_handoff: ``forward``, ``hold`` or ``cancel`` when the origin agent is
            handed off for good (default: the runtime's `AsyncToolOptions.on_handoff`).
        result_delivery: How the final result is delivered.

    Returns:
        A livekit `FunctionTool` (or a decorator making one).

    Raises:
        ToolDefinitionError: Async-only options on a tool without an
            `AsyncRunContext`, or a signature livekit cannot call.
        ValueError: An option has an unknown value.

    Example::

        class TravelAgent(Agent):
            @function_tool(timeout=120)
            async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
                \"\"\"Search flights to a city.\"\"\"
                await ctx.update("searching")
                return await flights.search(city)
    """

    def decorate(fn: _F) -> llm.FunctionTool[..., Any]:
        ctx_name = find_context_param(fn)
        if ctx_name is None:
            given = {
                "cancellable": cancellable is not False,
                "on_duplicate": on_duplicate != "reject",
                "duplicate_scope": duplicate_scope != "name_and_args",
                "timeout": timeout is not None,
                "ack_after": ack_after != 1.0,
                "on_handoff": on_handoff is not None,
                "result_delivery": result_delivery != "when_idle",
            }
            extra = [k for k, v in given.items() if v]
            if extra:
                raise ToolDefinitionError(
                    f"{fn.__qualname__}: {', '.join(extra)} only apply to async tools; add "
                    "a parameter typed AsyncRunContext or remove these options"
                )
            return lk_function_tool(fn, name=name, description=description)
        spec = ToolSpec(
            name=name or fn.__name__,
            ack_after=ack_after,
            on_handoff=on_handoff,
            cancellable=cancellable,
            timeout=timeout,
            result_delivery=result_delivery,
            on_duplicate=on_duplicate,
            duplicate_scope=duplicate_scope,
        )
        _validate_options(spec)
        wrapper = _build_wrapper(fn, ctx_name, spec)
        return lk_function_tool(wrapper, name=spec.name, description=description)

    if f is not None:
        return decorate(f)
    return decorate
