"""`settle_run(session)`: wait for background work and return what was said, as a `RunResult`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import (
    Agent,
    AgentHandoffEvent,
    AgentSession,
    ChatMessageEvent,
    ConversationItemAddedEvent,
    FunctionCallEvent,
    FunctionCallOutputEvent,
    RunEvent,
    RunResult,
    SpeechCreatedEvent,
    llm,
)
from livekit.agents.voice import SpeechHandle

from .._policy import derived_call_id
from ..events import ReplyUpdated
from ..runtime import runtime_of

__all__ = ["settle_run"]

_SUFFIX = re.compile(r"(result|progress_\d+)$")


def _derived_from(item_call_id: str, call_id: str) -> bool:
    """True if ``item_call_id`` is one of the package's deferred ids for ``call_id``."""
    match = _SUFFIX.search(item_call_id)
    return match is not None and derived_call_id(call_id, match.group(1)) == item_call_id


@dataclass(eq=False)
class _Segment:
    """One speech of the wait (with the deferred items it speaks), or one handoff."""

    handle: SpeechHandle | None = None
    deferred: list[llm.ChatItem] = field(default_factory=list)
    handoff: AgentHandoffEvent | None = None

    def events(self) -> list[RunEvent]:
        if self.handoff is not None:
            return [self.handoff]
        items = list(self.deferred)
        if self.handle is not None:
            # livekit's RunResult orders a speech's items by `created_at`
            items += sorted(self.handle.chat_items, key=lambda item: item.created_at)
        out: list[RunEvent] = []
        for item in items:
            if isinstance(item, llm.ChatMessage):
                out.append(ChatMessageEvent(item=item))
            elif isinstance(item, llm.FunctionCall):
                out.append(FunctionCallEvent(item=item))
            elif isinstance(item, llm.FunctionCallOutput):
                out.append(FunctionCallOutputEvent(item=item))
        return out


class _Recorder:
    """Listens to the session and the runtime while `settle_run` waits."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self._session = session
        self._runtime = runtime_of(session)
        self.segments: list[_Segment] = []
        self._by_speech: dict[str, _Segment] = {}
        self._captured: set[str] = set()
        self._speaker: Agent | None = self._current_agent()

    def _current_agent(self) -> Agent | None:
        try:
            return self._session.current_agent
        except RuntimeError:  # no agent yet, or the session is closing
            return None

    def __enter__(self) -> _Recorder:
        self._session.on("speech_created", self._on_speech_created)
        self._session.on("conversation_item_added", self._on_item_added)
        if self._runtime is not None:
            self._runtime.on("reply_updated", self._on_reply_updated)
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.off("speech_created", self._on_speech_created)
        self._session.off("conversation_item_added", self._on_item_added)
        if self._runtime is not None:
            self._runtime.off("reply_updated", self._on_reply_updated)

    @property
    def handles(self) -> list[SpeechHandle]:
        return [s.handle for s in self.segments if s.handle is not None]

    def _segment_for(self, speech_id: str) -> _Segment:
        segment = self._by_speech.get(speech_id)
        if segment is None:
            segment = self._by_speech[speech_id] = _Segment()
            self.segments.append(segment)
        return segment

    def _on_speech_created(self, ev: SpeechCreatedEvent) -> None:
        self._segment_for(ev.speech_handle.id).handle = ev.speech_handle

    def _on_item_added(self, ev: ConversationItemAddedEvent) -> None:
        # livekit-agents 1.4.x emits no event for a handoff: none is recorded there
        item = ev.item
        if not isinstance(item, llm.AgentHandoff):
            return
        new_agent = self._current_agent()
        if new_agent is None or new_agent.id != item.new_agent_id:
            return
        old_agent = self._speaker
        if old_agent is not None and old_agent.id != item.old_agent_id:
            old_agent = None
        handoff = AgentHandoffEvent(item=item, old_agent=old_agent, new_agent=new_agent)
        self.segments.append(_Segment(handoff=handoff))
        self._speaker = new_agent

    def _on_reply_updated(self, ev: ReplyUpdated) -> None:
        if ev.status != "scheduled" or ev.speech_id is None:
            return
        # the reply was issued to the current agent, after its items were written there
        target = self._current_agent()
        if target is None:
            return
        segment = self._segment_for(ev.speech_id)
        segment.deferred += self._deferred_items(target, ev.call_ids)

    def _deferred_items(self, target: Agent, call_ids: tuple[str, ...]) -> list[llm.ChatItem]:
        """The pair the reply speaks for each of its calls: the newest deferred item the
        package recorded for that call in ``target``'s context (a call has at most one
        item waiting to be spoken; newer progress supersedes older). Items already shown
        by an earlier reply of this wait (a re-delivery) are not repeated.

        `ReplyUpdated` names calls, not items: a ``"silent"`` update recorded after the
        progress being spoken is newer, and is shown in its place."""
        items = [
            item
            for item in target.chat_ctx.items
            if isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput))
        ]
        chosen: set[str] = set()
        for call_id in call_ids:
            ids = [item.call_id for item in items if _derived_from(item.call_id, call_id)]
            if ids and ids[-1] not in self._captured:
                chosen.add(ids[-1])
        self._captured |= chosen
        return [item for item in items if item.call_id in chosen]

    def events(self) -> list[RunEvent]:
        return [event for segment in self.segments for event in segment.events()]


class _SettledRun(RunResult[None]):
    """A `RunResult` holding what was said while `settle_run` waited; already done."""

    def __init__(self, events: list[RunEvent]) -> None:
        super().__init__(output_type=None)
        self._settled_events = events

    @property
    def events(self) -> list[RunEvent]:
        """The recorded events, in order (see `settle_run`)."""
        return self._settled_events

    def done(self) -> bool:
        """Always True: `settle_run` returns the result once the session settled."""
        return True

    def __await__(self) -> Generator[None, None, RunResult[None]]:
        async def _done() -> RunResult[None]:
            return self

        return _done().__await__()

    @property
    def final_output(self) -> None:
        """A settled run has no final output."""
        raise RuntimeError("a settle_run() result has no final output (it ran no task)")


async def settle_run(
    session: AgentSession[Any], *, timeout: float | None = 30.0
) -> RunResult[None]:
    """Wait until ``session`` has settled and return what it said meanwhile, as a `RunResult`.

    Waits like `settle` (no async call running, no deferred reply pending) and also
    until every speech the session started meanwhile has finished. The result is a
    livekit ``RunResult``, so a test asserts deferred replies with ``result.expect``
    exactly like any turn::

        result = await settle_run(session)
        result.expect.next_event().is_function_call(name="search_flights")
        result.expect.next_event().is_function_call_output(output="3 flights to Rome")
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()

    Each deferred reply appears as the ``function_call`` / ``function_call_output``
    pair(s) it speaks (the items the package recorded as ``<call_id>_result`` or
    ``<call_id>_progress_<n>``, one per call the reply carries, not repeated when an
    interrupted reply is spoken again) followed by the items of its speech (the
    assistant message, and any tool call the reply made). Every other speech
    started while waiting is there too, in the order it was created, and handoffs
    appear as ``agent_handoff`` events. Speech started before the call is not: a
    deferred reply spoken while a ``session.run`` was still running is in that
    run's result (its message only).

    Args:
        session: The session to wait for.
        timeout: Seconds (event-loop time) to wait at most; ``None`` waits forever.

    Returns:
        A done ``livekit.agents.RunResult`` (``final_output`` raises: there is none).

    Raises:
        TimeoutError: The timeout passed; the message says what is still running,
            pending or being said.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    def remaining() -> float | None:
        return None if deadline is None else max(deadline - loop.time(), 0.0)

    with _Recorder(session) as recorder:
        while True:
            runtime = runtime_of(session)
            if runtime is not None:
                try:
                    await runtime.settle(remaining())
                except TimeoutError as e:
                    raise TimeoutError(str(e).replace("settle()", "settle_run()", 1)) from None
            speaking = [h for h in recorder.handles if not h.done()]
            if not speaking:
                break
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(h.wait_for_playout() for h in speaking)), remaining()
                )
            except asyncio.TimeoutError:
                ids = ", ".join(h.id for h in speaking if not h.done())
                raise TimeoutError(
                    f"settle_run() timed out after {timeout}s; still speaking: {ids}"
                ) from None
    return _SettledRun(recorder.events())
