"""`function_tool`: detect `AsyncRunContext` tools and wrap them for livekit."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final, TypeVar, overload

from livekit.agents import NOT_GIVEN, Agent, NotGivenOr, RunContext, llm, utils
from livekit.agents import function_tool as lk_function_tool
from livekit.agents.llm.tool_context import RawFunctionDescription, ToolFlag
from pydantic import Field

from ._mock_registry import find_mock
from ._plain import check_timeout, with_timeout
from ._spec import CONFIRM_PARAM, SPEC_ATTR, DuplicateMode, DuplicateScope, OnTimeout, ToolSpec
from .context import AsyncRunContext
from .options import Delivery, OnHandoff
from .runtime import dispatch

__all__ = ["DuplicateMode", "DuplicateScope", "ToolDefinitionError", "ToolSpec", "function_tool"]

_F = TypeVar("_F", bound=Callable[..., Any])

CTX_PARAM = "lk_async_run_ctx"
"""Name of the keyword-only `RunContext` parameter livekit injects into the wrapper."""

_CONFIRM_DESCRIPTION = (
    "Set to true only when the caller confirmed they want this to run again while the "
    "same request is already running."
)

_LIVEKIT_PARAMS: Final = frozenset(inspect.signature(lk_function_tool).parameters)
"""The keywords livekit's own `function_tool` takes on the installed version."""

_SAFE_FLAGS: Final = ToolFlag.IGNORE_ON_ENTER
"""livekit tool flags that mean the same on an async tool's wrapper (hidden in on_enter)."""


class ToolDefinitionError(TypeError):
    """A tool was declared in a way this package cannot run; the message says how to fix it."""


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


def _check_async_flags(fn: Callable[..., Any], flags: ToolFlag) -> None:
    if not isinstance(flags, ToolFlag):
        raise TypeError(f"flags must be a livekit ToolFlag, got {flags!r}")
    cancellable_flag = getattr(ToolFlag, "CANCELLABLE", None)  # livekit-agents >= 1.6
    if cancellable_flag is not None and flags & cancellable_flag:
        raise ToolDefinitionError(
            f"{fn.__qualname__}: flags=ToolFlag.CANCELLABLE is livekit's own cancellation; "
            "on a tool that takes an AsyncRunContext it would only reach the short dispatch, "
            "not the background call, and it adds livekit's own cancel_task and "
            "get_running_tasks tools, whose names clash with this package's. Use "
            "cancellable=True instead"
        )
    unsafe = flags & ~_SAFE_FLAGS
    if unsafe:
        raise ToolDefinitionError(
            f"{fn.__qualname__}: flags={unsafe!r} is not supported on a tool that takes an "
            "AsyncRunContext (only ToolFlag.IGNORE_ON_ENTER is)"
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
        mock = find_mock(type(origin), spec.name)

        def body(ctx: AsyncRunContext[Any]) -> Coroutine[Any, Any, object]:
            if mock is not None:
                return mock(ctx, arguments)
            return fn(**user_args, **{ctx_name: ctx})  # type: ignore[no-any-return]

        return await dispatch(spec, run_ctx, body, arguments, origin, confirmed=confirmed)

    wrapper.__signature__ = wrapper_sig  # type: ignore[attr-defined]
    annotations = {p.name: hints[p.name] for p in params if p.name in hints}
    annotations.update(extra)
    if "return" in hints:
        annotations["return"] = hints["return"]
    wrapper.__annotations__ = annotations
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attr, getattr(fn, attr, None))
    setattr(wrapper, SPEC_ATTR, spec)
    return wrapper


@overload
def function_tool(
    f: _F,
    *,
    raw_schema: RawFunctionDescription | dict[str, Any],
    flags: ToolFlag = ToolFlag.NONE,
    on_duplicate: DuplicateMode = "allow",
    duplicate_scope: DuplicateScope = "name",
    timeout: float | None = None,
) -> llm.RawFunctionTool[..., Any]: ...
@overload
def function_tool(
    f: None = None,
    *,
    raw_schema: RawFunctionDescription | dict[str, Any],
    flags: ToolFlag = ToolFlag.NONE,
    on_duplicate: DuplicateMode = "allow",
    duplicate_scope: DuplicateScope = "name",
    timeout: float | None = None,
) -> Callable[[_F], llm.RawFunctionTool[..., Any]]: ...
@overload
def function_tool(
    f: _F,
    *,
    name: str | None = None,
    description: str | None = None,
    flags: ToolFlag = ToolFlag.NONE,
    cancellable: bool = False,
    on_duplicate: DuplicateMode = "reject",
    duplicate_scope: DuplicateScope = "name_and_args",
    timeout: float | None = None,
    on_timeout: OnTimeout = "cancel",
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
    flags: ToolFlag = ToolFlag.NONE,
    cancellable: bool = False,
    on_duplicate: DuplicateMode = "reject",
    duplicate_scope: DuplicateScope = "name_and_args",
    timeout: float | None = None,
    on_timeout: OnTimeout = "cancel",
    ack_after: float | None = 1.0,
    on_handoff: OnHandoff | None = None,
    result_delivery: Delivery = "when_idle",
) -> Callable[[_F], llm.FunctionTool[..., Any]]: ...
def function_tool(
    f: _F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    raw_schema: RawFunctionDescription | dict[str, Any] | None = None,
    flags: NotGivenOr[ToolFlag] = NOT_GIVEN,
    cancellable: NotGivenOr[bool] = NOT_GIVEN,
    on_duplicate: NotGivenOr[DuplicateMode] = NOT_GIVEN,
    duplicate_scope: NotGivenOr[DuplicateScope] = NOT_GIVEN,
    timeout: NotGivenOr[float | None] = NOT_GIVEN,
    on_timeout: NotGivenOr[OnTimeout] = NOT_GIVEN,
    ack_after: NotGivenOr[float | None] = NOT_GIVEN,
    on_handoff: NotGivenOr[OnHandoff | None] = NOT_GIVEN,
    result_delivery: NotGivenOr[Delivery] = NOT_GIVEN,
) -> (
    llm.FunctionTool[..., Any]
    | llm.RawFunctionTool[..., Any]
    | Callable[[_F], llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]]
):
    """Declare a tool; one that takes an `AsyncRunContext` runs in the background.

    A drop-in replacement for `livekit.agents.function_tool`, bare or with options,
    on `Agent`/`AgentTask` methods and on plain functions. A function without an
    `AsyncRunContext` parameter is handed to livekit unchanged, with every argument
    livekit takes (``name``, ``description``, ``raw_schema``, ``flags``, and from
    livekit-agents 1.6 its own ``on_duplicate`` and ``duplicate_scope``, with
    livekit's defaults and meaning; with ``timeout`` it gets a deadline, see below).
    One with it is wrapped: livekit sees an ordinary tool with the same name,
    description and JSON schema (the context parameter removed, arguments validated
    by livekit), whose body starts the background call.

    Args:
        f: The function (when used bare).
        name: The tool name the LLM sees (default: the function's name).
        description: The description (default: the docstring).
        raw_schema: livekit's raw JSON schema, for tools without an `AsyncRunContext`
            only: an async tool needs its typed signature.
        flags: livekit's ``ToolFlag``. On an async tool only
            ``ToolFlag.IGNORE_ON_ENTER`` is allowed (use ``cancellable``, not
            ``ToolFlag.CANCELLABLE``).
        cancellable: Whether the LLM and the app may cancel a running call
            (default ``False``).
        on_duplicate: What a second identical call does while one runs (default
            ``"reject"``).
        duplicate_scope: What makes two calls identical (default ``"name_and_args"``).
        timeout: Hard deadline in seconds for the whole call, kept across updates
            (default ``None``: no deadline). On a tool without an `AsyncRunContext`
            (an ``async def`` one) the call runs inline as usual and, at the deadline,
            is cancelled and answered with `AsyncToolOptions.timed_out_template`.
        on_timeout: At the deadline, ``"cancel"`` (default) stops the call;
            ``"ask"`` first has the origin tell the caller it is taking longer and ask
            whether to keep waiting: the LLM extends the deadline (``extend_task``) or
            cancels (``cancel_task``); with no decision within
            `AsyncToolOptions.timeout_decision_window` the call is stopped as
            ``timed_out``. Needs ``timeout``.
        ack_after: Grace window in seconds (default 1.0): a call that ends within it
            is an ordinary tool result; otherwise it is acknowledged and goes on in
            the background. ``None`` waits for the first `AsyncRunContext.update` or
            the return.
        on_handoff: ``forward``, ``hold`` or ``cancel`` when the origin agent is
            handed off for good (default: the runtime's `AsyncToolOptions.on_handoff`).
        result_delivery: How the final result is delivered (default ``"when_idle"``).

    Returns:
        A livekit `FunctionTool` (a `RawFunctionTool` with ``raw_schema``), or a
        decorator making one.

    Raises:
        ToolDefinitionError: An async-only option (``cancellable``, ``on_timeout``,
            ``ack_after``, ``on_handoff``, ``result_delivery``, and ``on_duplicate``
            / ``duplicate_scope`` where livekit has none) on a tool without an
            `AsyncRunContext`, whatever its value; ``timeout`` on one that is not
            ``async def``; ``raw_schema`` or an unsupported flag on one with it; or a
            signature livekit cannot call.
        ValueError: An option has an unknown value.
        TypeError: An option has the wrong type.

    Example::

        class TravelAgent(Agent):
            @function_tool(timeout=120)
            async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
                \"\"\"Search flights to a city.\"\"\"
                await ctx.update("searching")
                return await flights.search(city)
    """
    given: dict[str, object] = {
        k: v
        for k, v in {
            "cancellable": cancellable,
            "on_duplicate": on_duplicate,
            "duplicate_scope": duplicate_scope,
            "timeout": timeout,
            "on_timeout": on_timeout,
            "ack_after": ack_after,
            "on_handoff": on_handoff,
            "result_delivery": result_delivery,
        }.items()
        if utils.is_given(v)
    }

    def plain_tool(fn: _F) -> llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]:
        options = {k: v for k, v in given.items() if k != "timeout"}
        async_only = [k for k in options if k not in _LIVEKIT_PARAMS]
        if async_only:
            note = ""
            if {"on_duplicate", "duplicate_scope"} & set(async_only):
                note = (
                    " (this livekit-agents version's own function_tool has no on_duplicate "
                    "or duplicate_scope; it has them from 1.6)"
                )
            raise ToolDefinitionError(
                f"{fn.__qualname__}: {', '.join(async_only)} only apply to async tools; add "
                f"a parameter typed AsyncRunContext or remove these options{note}"
            )
        passed: dict[str, Any] = {"name": name, "description": description, **options}
        if raw_schema is not None:
            passed["raw_schema"] = raw_schema
        if utils.is_given(flags):
            passed["flags"] = flags
        target: Callable[..., Any] = fn
        if given.get("timeout") is not None:
            seconds = check_timeout(given["timeout"])
            if not inspect.iscoroutinefunction(fn):
                raise ToolDefinitionError(
                    f"{fn.__qualname__}: timeout= needs an `async def` tool; a plain function "
                    "blocks the event loop and cannot be stopped at the deadline"
                )
            if CTX_PARAM in inspect.signature(fn).parameters:
                raise ToolDefinitionError(f"{fn.__qualname__}: the name {CTX_PARAM!r} is reserved")
            tool_name = str((raw_schema or {}).get("name") or name or fn.__name__)
            target = with_timeout(fn, seconds, name=tool_name, ctx_param=CTX_PARAM)
        tool: llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]
        tool = lk_function_tool(target, **passed)
        return tool

    def async_tool(fn: _F, ctx_name: str) -> llm.FunctionTool[..., Any]:
        if raw_schema is not None:
            raise ToolDefinitionError(
                f"{fn.__qualname__}: raw_schema= cannot be used on a tool that takes an "
                "AsyncRunContext: the package builds the tool from its typed signature (it "
                "removes the context parameter, lets livekit validate the arguments and "
                "compares them to find duplicates), and livekit calls a raw tool with "
                "raw_arguments only. Declare typed parameters instead, or drop the "
                "AsyncRunContext parameter to keep an ordinary raw tool"
            )
        lk_flags = flags if utils.is_given(flags) else ToolFlag.NONE
        _check_async_flags(fn, lk_flags)
        spec = ToolSpec(name=name or fn.__name__, **given)  # type: ignore[arg-type]
        wrapper = _build_wrapper(fn, ctx_name, spec)
        if lk_flags:
            return lk_function_tool(
                wrapper, name=spec.name, description=description, flags=lk_flags
            )
        return lk_function_tool(wrapper, name=spec.name, description=description)

    def decorate(fn: _F) -> llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]:
        ctx_name = find_context_param(fn)
        if ctx_name is None:
            return plain_tool(fn)
        return async_tool(fn, ctx_name)

    if f is not None:
        return decorate(f)
    return decorate
