"""A strict, scripted fake of livekit's realtime (speech-to-speech) model interface.

`FakeRealtimeModel` is a `livekit.agents.llm.RealtimeModel` built only on livekit's public
interfaces; pass it as ``AgentSession(llm=...)`` and drive the session in text mode
(``session.run(user_input=...)``, ``session.generate_reply(...)``) as livekit does for
realtime models. Each `FakeRealtimeSession` keeps a *server-side* conversation (a
`ChatContext`) that changes only through ``update_chat_ctx`` and its own replies; what a
reply says is decided by a *brain* (``(RealtimeRequest) -> Reply``, the same `Reply` and
`ToolCall` values as `livekit_async_tools.testing.ScriptedLLM`) from that conversation.

Two presets (`OPENAI_LIKE`, `GEMINI_LIKE`) set what the server accepts; `RealtimeProfile`
documents each rule. Everything is recorded (`FakeRealtimeSession.chat_ctx_updates`,
``tool_updates``, ``reconnects``, ``replies``, ``refusals``, ``dropped_system_messages``,
``ignored_removals``, ``rejected_items``, ...) so tests assert on it, and a
caller can be simulated speaking (`FakeRealtimeSession.caller_starts_speaking`,
`caller_stops_speaking`): server-side speech events, a transcript, a server reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit import rtc
from livekit.agents import NOT_GIVEN, AgentSession, NotGivenOr, SpeechCreatedEvent, llm, utils

from livekit_async_tools.testing import Reply, ToolCall

__all__ = [
    "GEMINI_LIKE",
    "OPENAI_LIKE",
    "FakeRealtimeModel",
    "FakeRealtimeSession",
    "RealtimeProfile",
    "RealtimeRequest",
    "ReplyRecord",
    "UpdateRecord",
]

logger = logging.getLogger("tests.fake_realtime")

_PROMPT_IDS = ("lk.agent_task.instructions", "lk.agent_task.instructions.dynamic")

Trigger = Literal["generate_reply", "tool_output", "caller_turn"]


@dataclass(frozen=True)
class RealtimeProfile:
    """What the fake server accepts and does by itself."""

    name: str
    mutable_tools: bool
    """False: ``update_tools`` with a different tool list reconnects (counted in
    ``reconnects``): queued client messages are dropped and the server conversation is
    rebuilt from the client's view minus tool calls and outputs, as a new connection is."""
    auto_tool_reply_generation: bool
    """True: every new function_call_output the server receives starts a server reply at
    once (``user_initiated=False``)."""
    refuse_overlapping_replies: bool
    """True: ``generate_reply`` while a response is active fails (``RealtimeError`` with
    code ``conversation_already_has_active_response``). False: the new turn cuts the
    active response off (recorded as ``superseded``)."""
    drops_system_messages: bool
    """True: system/developer messages in ``update_chat_ctx`` never reach the server
    (recorded in ``dropped_system_messages``, with a warning)."""
    append_only: bool
    """True: removals and edits of existing items are ignored, with a warning (recorded in
    ``ignored_removals`` / ``ignored_edits``); the client view is replaced regardless."""
    queued_client_messages: bool
    """True: ``update_chat_ctx`` only queues its items (sent on the next loop iteration), so
    a reconnect in between drops them. False: it returns once the server has them."""
    raise_on_closed_update: bool
    """True: ``update_chat_ctx`` on a closed session raises ``RealtimeError``."""
    message_truncation: bool


OPENAI_LIKE = RealtimeProfile(
    name="openai-like",
    mutable_tools=True,
    auto_tool_reply_generation=False,
    refuse_overlapping_replies=True,
    drops_system_messages=False,
    append_only=False,
    queued_client_messages=False,
    raise_on_closed_update=True,
    message_truncation=True,
)
GEMINI_LIKE = RealtimeProfile(
    name="gemini-like",
    mutable_tools=False,
    auto_tool_reply_generation=True,
    refuse_overlapping_replies=False,
    drops_system_messages=True,
    append_only=True,
    queued_client_messages=True,
    raise_on_closed_update=False,
    message_truncation=False,
)


@dataclass(frozen=True)
class RealtimeRequest:
    """What the brain sees when the server starts a reply."""

    chat_ctx: llm.ChatContext
    """A copy of the server-side conversation."""
    trigger: Trigger
    reply_instructions: str
    """Per-reply instructions of ``generate_reply(instructions=...)`` (``""`` if none)."""
    session_instructions: str
    tool_names: tuple[str, ...]
    trigger_call_ids: tuple[str, ...] = ()
    """For ``trigger="tool_output"``: the call ids of the outputs that started it."""

    @property
    def instructions(self) -> str:
        """The per-reply instructions (what `keyword_brain`-style brains read)."""
        return self.reply_instructions

    @property
    def last_user_text(self) -> str:
        for item in reversed(self.chat_ctx.items):
            if isinstance(item, llm.ChatMessage) and item.role == "user":
                return item.text_content or ""
        return ""


@dataclass
class ReplyRecord:
    """One server response (``outcome`` is final once ``done`` is set)."""

    number: int
    trigger: Trigger
    user_initiated: bool
    instructions: str
    trigger_call_ids: tuple[str, ...]
    started_at: float
    caller_speaking: bool
    """The caller was speaking when the server started it."""
    text: str = ""
    """What the server generated (and streamed) before it ended."""
    tool_calls: list[llm.FunctionCall] = field(default_factory=list)
    outcome: Literal["active", "done", "cancelled", "superseded", "closed"] = "active"
    ended_at: float | None = None
    speech_id: str | None = None
    """For a server-initiated reply: the livekit speech handle made for it (filled by
    `FakeRealtimeModel.track_speech`; ``None`` if livekit made none, e.g. while paused)."""


@dataclass
class UpdateRecord:
    """One ``update_chat_ctx`` call."""

    created: list[llm.ChatItem]
    removed: list[str]
    edited: list[str]
    closed: bool


class FakeRealtimeModel(llm.RealtimeModel):
    """A realtime model whose sessions answer from ``brain`` under ``profile``'s rules.

    Args:
        brain: Decides each reply from the server-side conversation.
        profile: `OPENAI_LIKE` or `GEMINI_LIKE` (or a variant, e.g. with
            ``dataclasses.replace``).
        word_delay: Seconds between streamed words of a reply (0: all at once). A reply
            is active on the server until it is fully streamed.
        response_tail: Seconds a reply stays active on the server after its last part
            was streamed (the wait for ``response.done``).
        turn_detection: Report server-side turn detection (caller speech events drive
            interruptions, as with a real model).
    """

    def __init__(
        self,
        brain: Callable[[RealtimeRequest], Reply],
        *,
        profile: RealtimeProfile = OPENAI_LIKE,
        word_delay: float = 0.0,
        response_tail: float = 0.0,
        turn_detection: bool = True,
    ) -> None:
        super().__init__(
            capabilities=llm.RealtimeCapabilities(
                message_truncation=profile.message_truncation,
                turn_detection=turn_detection,
                user_transcription=True,
                auto_tool_reply_generation=profile.auto_tool_reply_generation,
                audio_output=False,
                manual_function_calls=True,
                mutable_chat_context=True,
                mutable_instructions=True,
                mutable_tools=profile.mutable_tools,
                per_response_tool_choice=False,
            )
        )
        self.brain = brain
        self.profile = profile
        self.word_delay = word_delay
        self.response_tail = response_tail
        self.sessions: list[FakeRealtimeSession] = []
        self.announcing: ReplyRecord | None = None
        """The server-initiated reply being announced to livekit right now."""
        self._call_ids = itertools.count(1)

    @property
    def model(self) -> str:
        return f"fake-realtime-{self.profile.name}"

    @property
    def provider(self) -> str:
        return "livekit-async-tools-tests"

    def session(self, *, turn_detection_disabled: bool = False) -> FakeRealtimeSession:
        sess = FakeRealtimeSession(self)
        self.sessions.append(sess)
        return sess

    async def aclose(self) -> None:
        for sess in self.sessions:
            await sess.aclose()

    def track_speech(self, session: AgentSession[Any]) -> None:
        """Record, on each server-initiated reply, the speech handle livekit makes for it
        (``ReplyRecord.speech_id``): livekit creates it while the reply is announced."""

        def on_speech(ev: SpeechCreatedEvent) -> None:
            if self.announcing is not None and not ev.user_initiated:
                self.announcing.speech_id = ev.speech_handle.id

        session.on("speech_created", on_speech)

    def next_call_id(self) -> str:
        return f"call_{next(self._call_ids)}"

    @property
    def live_session(self) -> FakeRealtimeSession:
        """The newest session that is not closed (what the caller talks to)."""
        live = [s for s in self.sessions if not s.closed]
        if not live:
            raise RuntimeError("no open realtime session")
        return live[-1]

    @property
    def replies(self) -> list[ReplyRecord]:
        """Every session's replies, in start order."""
        return sorted((r for s in self.sessions for r in s.replies), key=lambda r: r.started_at)

    @property
    def reconnects(self) -> int:
        return sum(s.reconnects for s in self.sessions)


@dataclass(eq=False)
class _Turn:
    """A client's ``generate_reply`` on its way to the server."""

    instructions: str
    fut: asyncio.Future[llm.GenerationCreatedEvent]


@dataclass(eq=False)
class _Response:
    record: ReplyRecord
    fut: asyncio.Future[llm.GenerationCreatedEvent] | None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class FakeRealtimeSession(llm.RealtimeSession):  # type: ignore[type-arg]
    """One connection to the fake server (see the module docstring)."""

    def __init__(self, model: FakeRealtimeModel) -> None:
        super().__init__(model)
        self.model = model
        self.profile = model.profile
        self.conversation = llm.ChatContext.empty()
        """The server-side conversation."""
        self._view = llm.ChatContext.empty()  # what a Gemini-like client believes it holds
        self._tools = llm.ToolContext.empty()
        self.instructions = ""
        self.tool_choice: NotGivenOr[llm.ToolChoice | None] = NOT_GIVEN
        self.connected = False
        self.closed = False
        self.caller_speaking = False
        self._queue: list[list[llm.ChatItem] | _Turn] = []
        self._flush_scheduled = False
        self._active: _Response | None = None
        self._seen_outputs: set[str] = set()
        self._issued_calls: set[str] = set()
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._connect)
        # -- records
        self.chat_ctx_updates: list[UpdateRecord] = []
        self.tool_updates: list[list[str]] = []
        self.reconnects = 0
        self.replies: list[ReplyRecord] = []
        self.generate_reply_calls: list[str] = []
        """Instructions of every ``generate_reply`` call (``""`` if none), in order."""
        self.refusals: list[str] = []
        """Instructions of each refused or failed ``generate_reply``."""
        self.dropped_system_messages: list[llm.ChatMessage] = []
        self.ignored_removals: list[str] = []
        self.ignored_edits: list[str] = []
        self.rejected_items: list[tuple[llm.ChatItem, str]] = []
        self.unknown_call_outputs: list[str] = []
        """Outputs for call ids the server never issued (answered by itself anyway)."""
        self.dropped_client_messages: list[object] = []
        self.closed_updates = 0
        self.truncations: list[tuple[str, str]] = []
        self.interrupts = 0

    # -- livekit's RealtimeSession interface ---------------------------------------------

    @property
    def chat_ctx(self) -> llm.ChatContext:
        # OpenAI mirrors the server; Gemini returns what the client last sent
        return (self._view if self.profile.append_only else self.conversation).copy()

    @property
    def tools(self) -> llm.ToolContext:
        return self._tools.copy()

    async def update_instructions(self, instructions: str) -> None:
        self.instructions = instructions

    async def update_chat_ctx(self, chat_ctx: llm.ChatContext) -> None:
        if self.closed:
            self.closed_updates += 1
            if self.profile.raise_on_closed_update:
                raise llm.RealtimeError("realtime session closed")
            self._view = self._clean(chat_ctx)
            return
        ctx = self._clean(chat_ctx)
        base = self._view if self.profile.append_only else self.conversation
        diff = llm.utils.compute_chat_ctx_diff(base, ctx)
        created = [it for _, item_id in diff.to_create if (it := ctx.get_by_id(item_id))]
        edited = [item_id for _, item_id in diff.to_update]
        self.chat_ctx_updates.append(
            UpdateRecord(created=created, removed=list(diff.to_remove), edited=edited, closed=False)
        )
        if self.profile.drops_system_messages:
            system = [
                it
                for it in ctx.items
                if isinstance(it, llm.ChatMessage) and it.role in ("system", "developer")
            ]
            if system:
                logger.warning("dropping %d system message(s) from the chat context", len(system))
                known = {m.id for m in self.dropped_system_messages}
                self.dropped_system_messages += [m for m in system if m.id not in known]
                created = [it for it in created if it not in system]
                ctx = ctx.copy(exclude_instructions=True)
        if self.profile.append_only:
            if diff.to_remove:
                logger.warning("removing items is not supported; ignored: %s", diff.to_remove)
                self.ignored_removals += diff.to_remove
            if edited:
                logger.warning("editing items is not supported; ignored: %s", edited)
                self.ignored_edits += edited
            self._view = ctx
            # tool calls never go to the server; their outputs do (as tool responses)
            created = [it for it in created if not isinstance(it, llm.FunctionCall)]
            if created:
                self._send(created)
            return
        await asyncio.sleep(0)  # the server acknowledges each item
        if self.closed:
            raise llm.RealtimeError("realtime session closed")
        self._apply_openai_like(ctx, diff.to_remove, created, edited)

    async def update_tools(self, tools: list[llm.Tool]) -> None:
        new = llm.ToolContext(tools)
        self.tool_updates.append(sorted(new.function_tools))
        changed = new != self._tools
        self._tools = new
        if changed and not self.profile.mutable_tools and self.connected and not self.closed:
            self._reconnect()

    def update_options(self, *, tool_choice: NotGivenOr[llm.ToolChoice | None] = NOT_GIVEN) -> None:
        self.tool_choice = tool_choice

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        pass

    def push_video(self, frame: rtc.VideoFrame) -> None:
        pass

    def generate_reply(
        self,
        *,
        instructions: NotGivenOr[str] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        tools: NotGivenOr[list[llm.Tool]] = NOT_GIVEN,
    ) -> asyncio.Future[llm.GenerationCreatedEvent]:
        text = instructions if isinstance(instructions, str) else ""
        self.generate_reply_calls.append(text)
        fut: asyncio.Future[llm.GenerationCreatedEvent] = self._loop.create_future()
        if self.closed:
            self.refusals.append(text)
            fut.set_exception(llm.RealtimeError("realtime session closed"))
            return fut
        self._send(_Turn(text, fut))
        return fut

    def commit_audio(self) -> None:
        pass

    def clear_audio(self) -> None:
        pass

    def interrupt(self) -> None:
        self.interrupts += 1
        self._end_active("cancelled")

    def truncate(
        self,
        *,
        message_id: str,
        modalities: list[Literal["text", "audio"]],
        audio_end_ms: int,
        audio_transcript: NotGivenOr[str] = NOT_GIVEN,
    ) -> None:
        if not self.profile.message_truncation or not isinstance(audio_transcript, str):
            return
        self.truncations.append((message_id, audio_transcript))
        idx = self.conversation.index_by_id(message_id)
        item = self.conversation.items[idx] if idx is not None else None
        if isinstance(item, llm.ChatMessage):
            self.conversation.items[idx] = item.model_copy(  # type: ignore[index]
                update={"content": [audio_transcript]}
            )

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._end_active("closed")
        for message in self._queue:
            if isinstance(message, _Turn):
                self._fail_reply(message, "realtime session closed")
        self._queue.clear()

    # -- the caller, talking to the server ----------------------------------------------

    def caller_starts_speaking(self) -> None:
        """Server-side speech detection: the caller starts talking (cuts the active reply)."""
        self.caller_speaking = True
        self._end_active("cancelled")
        self.emit("input_speech_started", llm.InputSpeechStartedEvent())

    def caller_stops_speaking(self, transcript: str, *, respond: bool = True) -> None:
        """The caller stops: the server commits their turn, transcribes it and (unless
        ``respond=False``) answers it with a server-initiated reply."""
        self.caller_speaking = False
        stopped = llm.InputSpeechStoppedEvent(user_transcription_enabled=True)
        self.emit("input_speech_stopped", stopped)
        msg = llm.ChatMessage(role="user", content=[transcript])
        self.conversation.items.append(msg)
        if self.profile.append_only:
            self._view.items.append(msg)
        self.emit(
            "input_audio_transcription_completed",
            llm.InputTranscriptionCompleted(item_id=msg.id, transcript=transcript, is_final=True),
        )
        if respond:
            self._loop.call_soon(self._start_reply, "caller_turn", "", None, ())

    async def caller_says(self, transcript: str, *, seconds: float = 0.05) -> None:
        """The caller speaks for ``seconds`` and the server answers the turn."""
        self.caller_starts_speaking()
        await asyncio.sleep(seconds)
        self.caller_stops_speaking(transcript)

    # -- server internals ---------------------------------------------------------------

    def _clean(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        ctx = chat_ctx.copy(exclude_handoff=True, exclude_config_update=True)
        for item_id in _PROMPT_IDS:  # the agent's instructions go by update_instructions
            while (item := ctx.get_by_id(item_id)) is not None:
                ctx.items.remove(item)
        if self.profile.drops_system_messages:
            ctx = ctx.copy(exclude_empty_message=True)
        return ctx

    def _connect(self) -> None:
        if self.closed:
            return
        self.connected = True
        # a new connection starts from the client's view, without tool calls and outputs
        view = self._view if self.profile.append_only else self.conversation
        replay = view.copy(exclude_function_call=True, exclude_empty_message=True)
        if self.profile.drops_system_messages:
            replay = replay.copy(exclude_instructions=True)
        self.conversation = replay
        self._flush()

    def _reconnect(self) -> None:
        self.reconnects += 1
        self.dropped_client_messages += self._queue
        for message in self._queue:
            if isinstance(message, _Turn):  # the turn never reaches the server: it times out
                self._fail_reply(message, "generate_reply timed out (dropped at reconnect)")
        self._queue.clear()
        self._end_active("closed")
        self._connect()
        self.emit("session_reconnected", llm.RealtimeSessionReconnectedEvent())

    def _send(self, message: list[llm.ChatItem] | _Turn) -> None:
        self._queue.append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.connected or self.closed:
            return
        queue, self._queue = self._queue, []
        for message in queue:
            if not isinstance(message, _Turn):
                self._receive_items(message)
            elif not message.fut.done():  # else cancelled by the client before it was sent
                self._start_reply("generate_reply", message.instructions, message.fut, ())

    def _receive_items(self, items: list[llm.ChatItem]) -> None:
        outputs: list[str] = []
        for item in items:
            if isinstance(item, llm.FunctionCallOutput):
                if item.call_id in self._seen_outputs:
                    continue
                self._seen_outputs.add(item.call_id)
                if item.call_id not in self._issued_calls:
                    self.unknown_call_outputs.append(item.call_id)
                outputs.append(item.call_id)
            self.conversation.items.append(item)
        if outputs and self.profile.auto_tool_reply_generation:
            self._start_reply("tool_output", "", None, tuple(outputs))

    def _apply_openai_like(
        self,
        ctx: llm.ChatContext,
        removed: Sequence[str],
        created: list[llm.ChatItem],
        edited: list[str],
    ) -> None:
        by_id = {it.id: it for it in ctx.items}
        keep = [it for it in self.conversation.items if it.id not in set(removed)]
        for item_id in edited:
            for i, it in enumerate(keep):
                if it.id == item_id:
                    keep[i] = by_id[item_id]
        calls = {it.call_id for it in keep if isinstance(it, llm.FunctionCall)}
        outputs = {it.call_id for it in keep if isinstance(it, llm.FunctionCallOutput)}
        accepted: set[str] = set()
        for item in created:
            if isinstance(item, llm.FunctionCall):
                calls.add(item.call_id)
            if isinstance(item, llm.FunctionCallOutput):
                if item.call_id not in calls:
                    self.rejected_items.append((item, "no function_call with this call_id"))
                    continue
                if item.call_id in outputs:
                    self.rejected_items.append((item, "duplicate output for this call_id"))
                    continue
                outputs.add(item.call_id)
            accepted.add(item.id)
        # the server places each item after its predecessor in the client's context
        order = [it.id for it in ctx.items]
        present = {it.id: it for it in keep}
        present.update({it.id: it for it in created if it.id in accepted})
        ordered = [present[i] for i in order if i in present]
        ordered += [it for it in keep if it.id not in set(order)]
        self.conversation = llm.ChatContext(ordered)

    def _fail_reply(self, turn: _Turn, reason: str) -> None:
        self.refusals.append(turn.instructions)
        if not turn.fut.done():
            turn.fut.set_exception(llm.RealtimeError(reason))

    def _start_reply(
        self,
        trigger: Trigger,
        instructions: str,
        fut: asyncio.Future[llm.GenerationCreatedEvent] | None,
        call_ids: tuple[str, ...],
    ) -> None:
        if self.closed or not self.connected:
            if fut is not None:
                self._fail_reply(_Turn(instructions, fut), "realtime session closed")
            return
        if self._active is not None:
            if fut is not None and self.profile.refuse_overlapping_replies:
                self.refusals.append(instructions)
                fut.set_exception(
                    llm.RealtimeError(
                        "Conversation already has an active response in progress",
                        code="conversation_already_has_active_response",
                    )
                )
                return
            if fut is None and self.profile.refuse_overlapping_replies:
                # a server-initiated turn waits for the active one
                active = self._active
                assert active.task is not None
                active.task.add_done_callback(
                    lambda _t: self._start_reply(trigger, instructions, None, call_ids)
                )
                return
            self._end_active("superseded")
        request = RealtimeRequest(
            chat_ctx=self.conversation.copy(),
            trigger=trigger,
            reply_instructions=instructions,
            session_instructions=self.instructions,
            tool_names=tuple(sorted(self._tools.function_tools)),
            trigger_call_ids=call_ids,
        )
        reply = self.model.brain(request)
        record = ReplyRecord(
            number=len(self.model.replies) + 1,
            trigger=trigger,
            user_initiated=fut is not None,
            instructions=instructions,
            trigger_call_ids=call_ids,
            started_at=self._loop.time(),
            caller_speaking=self.caller_speaking,
        )
        self.replies.append(record)
        response = _Response(record=record, fut=fut)
        self._active = response
        response.task = asyncio.create_task(self._run(response, _parts(reply)))

    async def _run(self, response: _Response, parts: list[str | ToolCall]) -> None:
        record = response.record
        msg_ch = utils.aio.Chan[llm.MessageGeneration]()
        fnc_ch = utils.aio.Chan[llm.FunctionCall]()
        event = llm.GenerationCreatedEvent(
            message_stream=msg_ch,
            function_stream=fnc_ch,
            user_initiated=record.user_initiated,
            response_id=f"resp_{record.number}",
        )
        if response.fut is not None:
            if response.fut.done():  # the client gave up on it
                self._finish(response, "cancelled")
                return
            response.fut.set_result(event)
        else:
            self.model.announcing = record
            try:
                self.emit("generation_created", event)
            finally:
                self.model.announcing = None
        texts = [p for p in parts if isinstance(p, str) and p]
        calls = [p for p in parts if isinstance(p, ToolCall)]
        try:
            if texts:
                await self._stream_text(response, msg_ch, " ".join(texts))
            for call in calls:
                if response.stop.is_set():
                    break
                fc = self._function_call(call)
                record.tool_calls.append(fc)
                self.conversation.items.append(fc)
                if self.profile.append_only:
                    self._view.items.append(fc)
                fnc_ch.send_nowait(fc)
            await asyncio.sleep(0)
            msg_ch.close()
            fnc_ch.close()
            if self.model.response_tail > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(response.stop.wait(), self.model.response_tail)
        finally:
            msg_ch.close()
            fnc_ch.close()
            self._finish(response, "cancelled" if response.stop.is_set() else "done")

    async def _stream_text(
        self, response: _Response, msg_ch: utils.aio.Chan[llm.MessageGeneration], text: str
    ) -> None:
        text_ch = utils.aio.Chan[str]()
        audio_ch = utils.aio.Chan[rtc.AudioFrame]()
        audio_ch.close()
        modalities: asyncio.Future[list[Literal["text", "audio"]]] = self._loop.create_future()
        modalities.set_result(["text"])
        msg = llm.ChatMessage(role="assistant", content=[""])
        self.conversation.items.append(msg)
        if self.profile.append_only:
            self._view.items.append(msg)
        msg_ch.send_nowait(
            llm.MessageGeneration(
                message_id=msg.id, text_stream=text_ch, audio_stream=audio_ch, modalities=modalities
            )
        )
        words = text.split(" ") if self.model.word_delay > 0 else [text]
        try:
            for i, word in enumerate(words):
                if response.stop.is_set():
                    break
                chunk = word if i == len(words) - 1 else word + " "
                response.record.text += chunk
                msg.content = [response.record.text]
                text_ch.send_nowait(chunk)
                if self.model.word_delay > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(response.stop.wait(), self.model.word_delay)
        finally:
            text_ch.close()

    def _function_call(self, call: ToolCall) -> llm.FunctionCall:
        args = call.arguments
        if not isinstance(args, str):
            args = json.dumps(dict(args))
        call_id = call.call_id or self.model.next_call_id()
        self._issued_calls.add(call_id)
        return llm.FunctionCall(call_id=call_id, name=call.name, arguments=args)

    def _end_active(self, outcome: Literal["cancelled", "superseded", "closed"]) -> None:
        active = self._active
        if active is None:
            return
        active.stop.set()
        self._finish(active, outcome)

    def _finish(
        self, response: _Response, outcome: Literal["done", "cancelled", "superseded", "closed"]
    ) -> None:
        if self._active is response:
            self._active = None
        if response.record.outcome == "active":
            response.record.outcome = outcome
            response.record.ended_at = self._loop.time()

    async def replies_done(self) -> None:
        """Wait until no response is active on this session."""
        while self._active is not None and self._active.task is not None:
            await asyncio.wait([self._active.task])


def _parts(reply: Reply) -> list[str | ToolCall]:
    if reply is None:
        return []
    if isinstance(reply, (str, ToolCall)):
        return [reply]
    return list(reply)
