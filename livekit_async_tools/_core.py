"""`Core`: one session's parts, wired together. The runtime's public face delegates here.

It is the only place that knows every part; each part gets `Core` only through the
narrow port it needs (`_ports.Services`, `Notes`, `SessionControl`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from livekit.agents import Agent, AgentSession, llm

from . import _compat
from ._away import AwayHold
from ._calls import Calls
from ._chat_store import ChatStore
from ._holding import Holding
from ._log import logger
from ._model import traits
from ._ports import CONTROLS, Event
from ._questions import Questions
from ._spec import FollowUpMode
from .control import ControlTools
from .delivery import DeliveryQueue
from .events import ReplyUpdated, TaskEnded, TaskInfo, TaskStarted, TaskStatus, TaskUpdated
from .gate import Gate
from .options import AsyncToolOptions
from .steering import Steering
from .tracing import SpanObserver

__all__ = ["EVENTS", "Core"]

_T = TypeVar("_T")
_EVENT_NAMES: dict[type, str] = {
    TaskStarted: "task_started",
    TaskUpdated: "task_updated",
    TaskEnded: "task_ended",
    ReplyUpdated: "reply_updated",
}
EVENTS = tuple(_EVENT_NAMES.values())
"""The event names of `AsyncToolRuntime.on`."""


class Core:
    """The parts of one session's runtime and the session-event fan-out."""

    def __init__(
        self,
        session: AgentSession[Any],
        options: AsyncToolOptions,
        on_closed: Callable[[], None] = lambda: None,
    ) -> None:
        self.session = session
        self._on_closed = on_closed
        self.options = options
        self.closed = False
        self.listeners: dict[str, list[Callable[[Any], object]]] = {e: [] for e in EVENTS}
        self.idle_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        store = ChatStore(
            lambda: _compat.session_history(session), lambda agent: traits(agent, session)
        )
        self.gate = Gate(session, self._wake, self._on_lifecycle)
        self.delivery = DeliveryQueue(self, session, self.gate, store)
        self._steering = Steering(self, self.gate, store)
        self.questions = Questions(self, self.delivery.pending)
        self.calls = Calls(
            self, self.gate, self.delivery.pending, self, self.questions, self._call_ended
        )
        self._control_tools = ControlTools(
            self, session, store, lambda: len(self.calls) > 0, self.calls.reach
        )
        self._away = AwayHold(session, lambda: bool(len(self.calls)) or not self.delivery.idle)
        self._holding = Holding(
            self,
            session,
            self.gate,
            self.delivery.pending,
            self.calls.serving,
            lambda: len(self.questions) > 0 or self.calls.overdue(),
        )
        self.listeners["task_started"].append(lambda _ev: self._holding.poke())
        self.listeners["task_ended"].append(lambda _ev: self._holding.poke())
        self.listeners["reply_updated"].append(self._holding.on_reply)
        CONTROLS.set(session, self)
        self._session_handlers: list[tuple[str, Callable[[Any], None]]] = [
            ("agent_state_changed", self._on_state_event),
            ("function_tools_executed", self._on_state_event),
            ("user_state_changed", self._on_user_state),
            ("conversation_item_added", self._on_item_added),
            ("speech_created", self._on_speech_created),
            ("tool_execution_updated", self._on_tool_execution_updated),
            ("close", self._on_session_close),
        ]
        for name, handler in self._session_handlers:
            session.on(name, handler)  # type: ignore[arg-type]
        self._spans = SpanObserver(self.listeners, session, self.delivery.pending)

    # -- SessionControl (the control tools) ----------------------------------------------

    @property
    def tasks(self) -> tuple[TaskInfo, ...]:
        return self.calls.infos()

    async def cancel(self, call_id: str) -> TaskStatus:
        """Cancel a cancellable call, wait until it stopped and return how it ended
        (``cancelled``, or its own outcome if it ended first; see the runtime's doc)."""
        call = self.calls.get(call_id)
        if call is None:
            raise llm.ToolError(self.options.cancel_unknown_template.format(call_id=call_id))
        # a call already being stopped (e.g. an overdue call whose decision window just
        # ended) is waited for: its own outcome is the answer, not a refusal
        if not call.cancellable and call.state != "stopping":
            raise llm.ToolError(
                self.options.cancel_refused_template.format(
                    tool_name=call.tool_name, call_id=call_id
                )
            )
        await self.calls.stop(call, "cancelled")
        assert call.status is not None  # stop() returns once the call has ended
        return call.status

    def extend(self, call_id: str, seconds: float) -> str:
        call = self.calls.get(call_id)
        if call is None:
            raise llm.ToolError(self.options.cancel_unknown_template.format(call_id=call_id))
        if call.state == "stopping":  # cancelled or timed out: its hooks are running
            raise llm.ToolError(
                self.options.extend_refused_template.format(
                    tool_name=call.tool_name, call_id=call_id
                )
            )
        call.deadline.extend(seconds)
        return self.options.extend_done_template.format(
            tool_name=call.tool_name, call_id=call_id, seconds=seconds
        )

    def answer(self, question_id: str, answer: str) -> str:
        call = self.questions.answer(question_id, answer)
        return self.options.answer_done_template.format(
            tool_name=call.tool_name, call_id=call.call_id, question_id=question_id
        )

    # -- Notes ---------------------------------------------------------------------------

    def steer(self, text: str, *, origin: Agent | None, on_handoff: str | None = None) -> None:
        if self.closed:
            raise RuntimeError("the session is closed; the steering note was not recorded")
        self._steering.steer(text, origin=origin, on_handoff=on_handoff)

    def follow_up(
        self, text: str, *, origin: Agent | None, on_handoff: str | None, mode: FollowUpMode
    ) -> str:
        if mode not in ("one_at_a_time", "all"):
            raise ValueError(f"mode must be 'one_at_a_time' or 'all', got {mode!r}")
        if self.closed:
            raise RuntimeError("the session is closed; the follow-up was not queued")
        target = origin or self.gate.current()
        if target is None:
            raise RuntimeError("the session has no current agent; start it first")
        _compat.notify_lifecycle(target, self.gate.on_lifecycle)
        return self.delivery.pending.add_follow_up(
            text, origin=target, on_handoff=on_handoff or self.options.on_handoff, mode=mode
        )

    # -- Services ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("internal task failed", exc_info=exc, extra={"task": task.get_name()})
        self.changed()

    def emit(self, event: Event) -> None:
        name = _EVENT_NAMES[type(event)]
        for callback in list(self.listeners[name]):
            try:
                callback(event)
            except Exception:
                logger.exception("event callback raised", extra={"event": name})

    def changed(self) -> None:
        """Wake `settle()` waiters once nothing runs and nothing is pending."""
        self._away.update()
        self._holding.recheck()
        if self.idle_waiters and self.is_idle():
            waiters, self.idle_waiters = self.idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- the rest ------------------------------------------------------------------------

    def is_idle(self) -> bool:
        return not len(self.calls) and not self._tasks and self.delivery.idle

    def describe(self) -> list[str]:
        lines = self.calls.describe() + self.delivery.describe()
        if not lines and self._tasks:
            lines.append(f"{len(self._tasks)} internal task(s) finishing")
        return lines

    async def wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _call_ended(self) -> None:
        self._control_tools.schedule()

    # -- session events ----------------------------------------------------------------

    def _wake(self) -> None:
        self.delivery.evaluate()

    def _on_lifecycle(self) -> None:
        """Agents may have been handed off, closed or handed back to."""
        if self.closed:
            return
        self.calls.cancel_handed_off(self.delivery.pending.drop_call)
        self._control_tools.schedule()  # a call forwarded to the current agent
        self._holding.poke()
        self.gate.watch_closing(self.options.settle_delay)
        self.delivery.on_lifecycle()

    def _on_user_state(self, ev: Any) -> None:
        self._away.on_state()
        self._holding.poke()
        self.gate.on_user_state(ev)

    def _on_state_event(self, ev: object) -> None:
        self._away.on_state()
        self._holding.poke()
        self._control_tools.schedule()
        self._steering.on_session_event(ev)
        self.delivery.evaluate()

    def _on_item_added(self, ev: Any) -> None:
        self._control_tools.schedule()
        self._steering.on_agent_maybe_changed()
        self.gate.on_item_added(ev)

    def _on_speech_created(self, ev: Any) -> None:
        self.gate.track(ev.speech_handle)
        self.delivery.on_speech_created(ev)
        self.delivery.evaluate()

    def _on_tool_execution_updated(self, ev: object) -> None:
        call_id = _compat.released_call_id(ev)
        if call_id is not None:
            self.calls.released(call_id)

    def _on_session_close(self, _ev: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything; idempotent (pending items are reported dropped)."""
        if self.closed:
            return
        self.closed = True
        for name, handler in self._session_handlers:
            self.session.off(name, handler)  # type: ignore[arg-type]
        self.delivery.close()
        self.gate.close()
        self._control_tools.close()
        self._away.close()
        self._holding.close()
        self.calls.close()
        CONTROLS.set(self.session, None)
        self._on_closed()  # the registries let go of the session: it can be collected
        self.changed()
