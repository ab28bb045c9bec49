"""A call's ``on_cancel`` hooks: run to completion, shielded, within a time limit."""

from __future__ import annotations

import asyncio
import contextlib
import inspect

from ._log import logger
from ._ports import CancelCallback, Services

__all__ = ["CANCEL_HOOKS_TIMEOUT", "run_cancel_hooks"]

CANCEL_HOOKS_TIMEOUT = 5.0
"""Seconds all ``on_cancel`` hooks of one call may take together; then they are cut."""


async def run_cancel_hooks(
    services: Services, hooks: list[CancelCallback], *, call_id: str, tool_name: str
) -> None:
    """Run ``hooks`` in their own task and wait for it shielded: a second stop request,
    a timeout or the session closing cannot cut them; only `CANCEL_HOOKS_TIMEOUT` does."""
    if not hooks:
        return
    runner = services.spawn(
        _bounded(hooks, call_id=call_id, tool_name=tool_name),
        name=f"async-tool:on_cancel:{call_id}",
    )
    while not runner.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(runner)


async def _bounded(hooks: list[CancelCallback], *, call_id: str, tool_name: str) -> None:
    try:
        await asyncio.wait_for(
            _call_all(hooks, call_id=call_id, tool_name=tool_name), CANCEL_HOOKS_TIMEOUT
        )
    except asyncio.TimeoutError:
        logger.warning(
            "on_cancel hooks cut after the time limit",
            extra={"call_id": call_id, "function": tool_name, "limit": CANCEL_HOOKS_TIMEOUT},
        )


async def _call_all(hooks: list[CancelCallback], *, call_id: str, tool_name: str) -> None:
    for hook in hooks:
        try:
            res = hook()
            if inspect.isawaitable(res):
                await res
        except Exception:
            logger.exception(
                "on_cancel hook raised", extra={"call_id": call_id, "function": tool_name}
            )
