"""A call's deadline: stop it when ``timeout`` expires, or first ask the caller
whether to keep waiting (``on_timeout="ask"``) and let the LLM extend or cancel."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from livekit.agents import llm

from ._log import logger
from ._ports import CallIdentity, ItemSink, PendingItem, Services
from ._spec import ToolSpec

__all__ = ["Deadline"]

MAX_EXTENSION = 3600.0
"""The most seconds one ``extend_task`` may add."""


class Deadline:
    """Arms ``spec.timeout`` when the call starts. At expiry a ``cancel`` call is
    stopped; an ``ask`` call becomes *overdue*: an item (spoken through the gate) asks
    the caller whether to wait, and the LLM has `timeout_decision_window` seconds to
    `extend` the deadline or cancel the call, else it is stopped as ``timed_out``."""

    def __init__(
        self,
        services: Services,
        sink: ItemSink,
        identity: CallIdentity,
        spec: ToolSpec,
        *,
        elapsed: Callable[[], float],
        stop: Callable[[], bool],
    ) -> None:
        self._services = services
        self._sink = sink
        self._identity = identity
        self._spec = spec
        self._elapsed = elapsed
        self._stop = stop
        self._timer: asyncio.TimerHandle | None = None
        self._item: PendingItem | None = None
        self._asked = 0
        self.overdue = False
        self.allowed = spec.timeout
        """Seconds the call may run in all (its timeout plus every extension)."""

    def arm(self) -> None:
        if self._spec.timeout is not None:
            self._set(self._spec.timeout)

    def disarm(self) -> None:
        """The call ended: no timer, no open decision (its question is withdrawn)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.overdue = False
        if self._item is not None:
            self._sink.withdraw([self._item], "question_closed")
            self._item = None

    def extend(self, seconds: float) -> None:
        """Give an overdue call ``seconds`` more.

        Raises:
            llm.ToolError: The call is not waiting for that decision, or ``seconds``
                is not a positive number up to `MAX_EXTENSION`.
        """
        fmt = {"tool_name": self._identity.tool_name, "call_id": self._identity.call_id}
        if not self.overdue:
            raise llm.ToolError(self._services.options.extend_refused_template.format(**fmt))
        if not (
            isinstance(seconds, (int, float))
            and math.isfinite(seconds)
            and 0 < seconds <= MAX_EXTENSION
        ):
            raise llm.ToolError(
                f"seconds must be a number between 0 and {MAX_EXTENSION:g}, got {seconds!r}"
            )
        self.overdue = False
        if self._item is not None:
            self._sink.withdraw([self._item], "extended")
            self._item = None
        self.allowed = self._elapsed() + seconds
        self._set(seconds)

    def _set(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._spec.on_timeout == "ask" and not self.overdue:
            self.overdue = True
            self._asked += 1
            opts = self._services.options
            self._item = self._sink.add(
                self._identity,
                kind="question",
                suffix=f"overdue_{self._asked}",
                output=opts.overdue_template.format(
                    tool_name=self._identity.tool_name,
                    call_id=self._identity.call_id,
                    seconds=self._elapsed(),
                ),
                is_error=False,
                delivery="when_idle",
            )
            self._set(opts.timeout_decision_window)
            self._services.changed()
            return
        self.disarm()  # no decision left to make: the call is being stopped
        if self._stop():
            logger.warning(
                "async tool timed out",
                extra={"call_id": self._identity.call_id, "function": self._identity.tool_name},
            )
