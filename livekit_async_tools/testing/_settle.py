"""`settle(session)`: wait for a session's background work from a test."""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentSession

from ..runtime import runtime_of

__all__ = ["settle"]


async def settle(session: AgentSession[Any], timeout: float | None = 30.0) -> None:
    """Wait until ``session`` has no running async call and no pending reply.

    For tests that never called `attach`: a session without a runtime has no
    background work, so this returns at once.

    Args:
        session: The session to wait for.
        timeout: Seconds (event-loop time) to wait at most; ``None`` waits forever.

    Raises:
        TimeoutError: The timeout passed; the message lists what is still running
            or pending.
    """
    runtime = runtime_of(session)
    if runtime is not None:
        await runtime.settle(timeout)
