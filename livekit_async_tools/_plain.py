"""``timeout`` on an ordinary tool (one without an `AsyncRunContext`): livekit runs it
inline as usual; at the deadline it is cancelled and the LLM gets the timed-out text."""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import typing
from collections.abc import Callable
from types import TracebackType
from typing import Any

from livekit.agents import RunContext, llm

from ._log import logger
from ._texts import error_text
from .options import AsyncToolOptions
from .runtime import runtime_of

__all__ = ["check_timeout", "with_timeout"]


def check_timeout(timeout: object) -> float:
    """``timeout`` as a number of seconds, checked like an async tool's.

    Raises:
        ValueError: It is not a finite number of seconds > 0.
    """
    if (
        isinstance(timeout, (int, float))
        and not isinstance(timeout, bool)
        and math.isfinite(timeout)
        and timeout > 0
    ):
        return float(timeout)
    raise ValueError(
        f"timeout must be a number of seconds > 0, or None for no deadline, got {timeout!r}"
    )


def _takes_run_context(fn: Callable[..., Any]) -> bool:
    """Whether livekit already passes ``fn`` a `RunContext` (a parameter typed with it)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: look at the raw strings
        hints = dict(getattr(fn, "__annotations__", {}))
    for name in inspect.signature(fn).parameters:
        hint = hints.get(name)
        if isinstance(hint, str):
            if hint.split("[", 1)[0].strip().rsplit(".", 1)[-1] == "RunContext":
                return True
            continue
        target = typing.get_origin(hint) or hint
        if isinstance(target, type) and issubclass(target, RunContext):
            return True
    return False


class _Deadline:
    """Cancels the current task after ``seconds``; on the way out, turns that one
    cancellation (and only it) into ``expired``. Runs in the tool's own task, so the
    tool keeps livekit's context (no task is created)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def __enter__(self) -> _Deadline:
        self._task = asyncio.current_task()
        if self._task is not None:
            self._handle = asyncio.get_running_loop().call_later(self._seconds, self._fire)
        return self

    def _fire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        if not self.expired or self._task is None:
            return False
        # Python >= 3.11 counts cancellations: one still pending after ours was taken back
        # came from someone else (livekit interrupting the turn), and it propagates.
        uncancel = getattr(self._task, "uncancel", None)
        others = uncancel() if uncancel is not None else 0
        return exc_type is asyncio.CancelledError and others == 0


def with_timeout(
    fn: Callable[..., Any], seconds: float, *, name: str, ctx_param: str
) -> Callable[..., Any]:
    """``fn`` with a deadline, for livekit's own `function_tool`.

    livekit sees the same signature, annotations, name and docstring (so the same
    schema), plus a keyword-only `RunContext` parameter ``ctx_param`` when ``fn`` has
    none of its own (livekit fills it and leaves it out of the schema). At the deadline
    ``fn`` is cancelled and the call raises `ToolError` with the timed-out text of the
    session's runtime options (the defaults if no runtime is attached).

    Args:
        fn: An ``async def`` tool function without an `AsyncRunContext`.
        seconds: The deadline, checked by `check_timeout`.
        name: The tool's name, for the text when no `RunContext` is passed.
        ctx_param: The name of the injected `RunContext` parameter.
    """
    inject = not _takes_run_context(fn)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        run_ctx = kwargs.pop(ctx_param, None) if inject else None
        if run_ctx is None:
            run_ctx = next(
                (a for a in (*args, *kwargs.values()) if isinstance(a, RunContext)), None
            )
        with _Deadline(seconds):
            return await fn(*args, **kwargs)
        # only reached when the deadline cancelled fn
        opts, call_id, tool_name = AsyncToolOptions(), "", name
        if run_ctx is not None:
            runtime = runtime_of(run_ctx.session)
            opts = runtime.options if runtime is not None else opts
            call_id, tool_name = run_ctx.function_call.call_id, run_ctx.function_call.name
        logger.warning(
            "tool timed out",
            extra={"call_id": call_id, "function": tool_name, "timeout": seconds},
        )
        text = error_text(
            opts,
            tool_name=tool_name,
            call_id=call_id,
            status="timed_out",
            timeout=seconds,
            tool_error=None,
        )
        raise llm.ToolError(text or "")

    if inject:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        extra = inspect.Parameter(
            ctx_param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=RunContext
        )
        last_is_var_kw = bool(params) and params[-1].kind is inspect.Parameter.VAR_KEYWORD
        at = len(params) - 1 if last_is_var_kw else len(params)
        params.insert(at, extra)  # before a ``**kwargs``, which must stay last
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), ctx_param: RunContext}
    return wrapper
