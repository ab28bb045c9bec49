"""Keeps livekit's user-away countdown from firing while the session has background work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentSession

from . import _compat

__all__ = ["AwayHold"]


class AwayHold:
    """While a background call runs or its reply is pending, the caller is not marked
    ``away``: livekit's countdown (``user_away_timeout``) is restarted whenever it could
    have started and again every half timeout. Once the work is done (the reply spoken,
    or the call ended silently) the full timeout starts again. livekit does the same
    for its own running tools only.

    Uses `AgentSession.reset_away_timer` (livekit-agents 1.8); a no-op where it is missing.
    """

    def __init__(self, session: AgentSession[Any], busy: Callable[[], bool]) -> None:
        self._session = session
        self._busy = busy
        self._timeout = _compat.user_away_timeout(session)
        self._holding = False
        self._timer: asyncio.TimerHandle | None = None

    def update(self) -> None:
        """Background work may have started or ended (cheap; called on every change)."""
        if self._timeout is None:
            return
        busy = self._busy()
        if busy and not self._holding:
            self._holding = True
            self._refresh()
        elif not busy and self._holding:
            self._holding = False
            self._cancel()
            self._restart()  # the reply landed or the call ended silently: a full window

    def on_state(self) -> None:
        """The caller or the agent changed state: livekit may have started its countdown."""
        if self._holding:
            self._restart()

    def _refresh(self) -> None:
        self._timer = None
        if not self._holding or self._timeout is None:
            return
        self._restart()
        self._timer = asyncio.get_running_loop().call_later(self._timeout / 2, self._refresh)

    def _restart(self) -> None:
        if self._session.user_state != "away":  # never undo a real "away"
            _compat.reset_away_timer(self._session)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._holding = False
        self._cancel()
