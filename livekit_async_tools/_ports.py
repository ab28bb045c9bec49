"""The narrow interfaces the parts of the core talk through.

The runtime is the only place that wires parts together; a part below it sees only
the port it needs, never `AsyncToolRuntime`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, TypeVar

from livekit.agents import llm

from ._spec import FollowUpMode
from .events import ReplyUpdated, TaskEnded, TaskInfo, TaskStarted, TaskStatus, TaskUpdated
from .options import AsyncToolOptions, Delivery

if TYPE_CHECKING:
    from livekit.agents import Agent, AgentSession

__all__ = [
    "CallHandle",
    "CallIdentity",
    "CancelCallback",
    "Event",
    "ItemSink",
    "Notes",
    "Registry",
    "Services",
    "SessionControl",
]

Event: TypeAlias = TaskStarted | TaskUpdated | TaskEnded | ReplyUpdated
_T = TypeVar("_T")

CancelCallback = Callable[[], "Awaitable[None] | None"]
"""A cleanup hook for `AsyncRunContext.on_cancel`: sync, or returning an awaitable."""


ItemKind: TypeAlias = Literal["update", "final", "question", "follow_up"]
"""``question``: an item that waits for the caller's decision (`AsyncRunContext.ask`, an
overdue call); it neither supersedes a call's progress nor is superseded by it, and its
owner withdraws it once the decision is made."""


def _loop_time() -> float | None:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # queued outside a running loop
        return None


@dataclass(eq=False)
class PendingItem:
    """Something to be spoken: a call's update or result (a function_call +
    function_call_output pair written into the speaker's context), or a follow-up
    instruction (no items; its text goes into the reply's instructions)."""

    call_id: str
    kind: ItemKind
    origin: Agent
    on_handoff: str
    delivery: Delivery
    item_id: str
    tool_name: str = ""
    chat_items: list[llm.ChatItem] = field(default_factory=list)
    text: str = ""
    mode: FollowUpMode = "one_at_a_time"
    inserted_into: list[Agent] = field(default_factory=list)
    attempts: int = 0
    write_failures: int = 0
    in_history: bool = False
    recording: asyncio.Task[None] | None = None
    handoff: Agent | None = None
    """The agent a final result hands the session to once it is delivered."""
    ready_at: float | None = field(default_factory=_loop_time)
    """Event-loop time the item was queued (kept when it is re-delivered)."""
    scheduled_at: float | None = None
    """Event-loop time the last reply carrying the item was issued."""
    on_end: Callable[[str, str | None], None] | None = None
    """Told the item's terminal status and reason (its owner learns it was not said)."""
    withdrawn: str | None = None
    """Why its owner took it back (a question closed) while a reply carried it: that
    reply may finish it, but it is never re-delivered."""


@dataclass(frozen=True, eq=False)
class CallIdentity:
    """Who a call is, as its items need it."""

    call_id: str
    tool_name: str
    raw_arguments: str
    extra: dict[str, Any]
    origin: Agent
    on_handoff: str


class ItemSink(Protocol):
    """Where a call hands its progress and final items."""

    def add(
        self,
        call: CallIdentity,
        *,
        kind: Literal["update", "final", "question"],
        suffix: str,
        output: str,
        is_error: bool,
        delivery: Delivery,
        handoff: Agent | None = None,
        on_end: Callable[[str, str | None], None] | None = None,
    ) -> PendingItem | None:
        """Queue an item and start writing it; ``None`` once the session is closed.
        ``on_end`` is told the item's terminal status and reason."""

    async def recorded(self, item: PendingItem) -> None:
        """Wait until ``item`` is written into its record target's context."""

    def withdraw(self, items: list[PendingItem], reason: str) -> None:
        """Take back those of ``items`` still waiting (reported ``skipped``)."""


class Services(Protocol):
    """What every part gets from the runtime: settings, events out, tasks, a nudge."""

    @property
    def options(self) -> AsyncToolOptions: ...

    def emit(self, event: Event) -> None:
        """Deliver an event to the app's listeners."""

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        """Run ``coro`` as a named task the runtime holds and waits for at close."""

    def changed(self) -> None:
        """Something changed that `settle()` waiters or the control tools may care about."""


class Notes(Protocol):
    """Steering notes and follow-ups aimed at a call's origin."""

    def steer(self, text: str, *, origin: Agent, on_handoff: str) -> None: ...

    def follow_up(
        self, text: str, *, origin: Agent, on_handoff: str, mode: FollowUpMode
    ) -> str: ...


class Asker(Protocol):
    """Questions a call asks the caller (`AsyncRunContext.ask`)."""

    async def ask(self, call: CallIdentity, question: str, timeout: float | None) -> str:
        """Ask through the gate, one question of the session at a time; the answer."""


class CallHandle(Protocol):
    """One background call, as its `AsyncRunContext` sees it."""

    @property
    def call_id(self) -> str: ...

    @property
    def origin(self) -> Agent: ...

    @property
    def elapsed(self) -> float: ...

    async def update(self, message: object, *, delivery: Delivery) -> None: ...

    def on_cancel(self, callback: CancelCallback) -> None: ...

    def steer(self, text: str) -> None: ...

    def follow_up(self, text: str, *, mode: FollowUpMode) -> str: ...

    async def ask(self, question: str, *, timeout: float | None) -> str: ...


class SessionControl(Protocol):
    """What the LLM-facing control tools need of a session's runtime."""

    @property
    def options(self) -> AsyncToolOptions: ...

    @property
    def tasks(self) -> tuple[TaskInfo, ...]: ...

    async def cancel(self, call_id: str) -> TaskStatus:
        """Cancel a call, wait for its end and return how it ended."""

    def extend(self, call_id: str, seconds: float) -> str:
        """Give an overdue call more time; the text the LLM hears (raises `ToolError`)."""

    def answer(self, question_id: str, answer: str) -> str:
        """Give an open question its answer; the text the LLM hears (raises
        `ToolError` for an unknown question)."""


class Registry:
    """Session → its runtime's `SessionControl`, for code that only has a session."""

    def __init__(self) -> None:
        self._by_session: weakref.WeakKeyDictionary[AgentSession[Any], SessionControl] = (
            weakref.WeakKeyDictionary()
        )

    def set(self, session: AgentSession[Any], control: SessionControl | None) -> None:
        if control is None:
            self._by_session.pop(session, None)
        else:
            self._by_session[session] = control

    def get(self, session: AgentSession[Any]) -> SessionControl | None:
        return self._by_session.get(session)


CONTROLS = Registry()
"""The live runtimes' control ports (the runtime registers and removes itself)."""
