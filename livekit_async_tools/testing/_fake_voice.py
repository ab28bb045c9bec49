"""A deterministic fake voice stack (VAD, STT, TTS, microphone, loudspeaker) for real
`AgentSession`s, driven by commands and timed by the event loop's clock."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import livekit.agents
import numpy as np
from livekit import rtc
from livekit.agents import (
    AgentSession,
    APIConnectOptions,
    stt,
    tts,
    utils,
    vad,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

if TYPE_CHECKING:
    from livekit.agents import TurnHandlingOptions

__all__ = ["FAKE_VOICE_SUPPORTED", "AgentSegment", "CallerSegment", "FakeVoice", "Overlap"]

FAKE_VOICE_SUPPORTED = hasattr(livekit.agents, "TurnHandlingOptions")
"""`FakeVoice` needs livekit-agents' ``turn_handling`` session options (1.8); older
releases configure turn taking with flat keyword arguments it does not build."""

_MAX_MARK = 32767
"""Markers are int16 sample values 1..32767 (they cycle)."""


@dataclass
class CallerSegment:
    """One caller utterance, in loop time (`asyncio.get_running_loop().time()`).

    Attributes:
        start: When the caller started speaking (`FakeVoice.caller_starts`).
        end: When they stopped (``None`` while they speak).
        text: What the STT reported when they stopped (``""`` while they speak,
            or for a noise without words).
    """

    start: float
    end: float | None = None
    text: str = ""


@dataclass
class AgentSegment:
    """One stretch of agent audio played by the fake loudspeaker, in loop time.

    A segment is what livekit sends between two ``flush()``/``clear_buffer()``
    calls (usually one LLM reply). It is recorded when it starts to play.

    Attributes:
        start: When it started to play.
        end: When it stopped: played out, or cut by ``clear_buffer()``
            (``None`` while it plays or is paused).
        text: The text synthesized for the audio captured so far (the sentences
            the TTS spoke, joined by spaces).
        interrupted: It was cut by ``clear_buffer()`` (livekit interrupted it).
        duration: Seconds of audio captured for it.
        played: Seconds of it that played (all of ``duration`` unless cut).
        heard_text: The whole words played before the cut (the whole text if not
            cut), in proportion to the audio played; reported to livekit as the
            synchronized transcript of an interrupted segment, as a room's
            transcript synchronizer does, so the chat history keeps what the caller
            heard.
        audible: The ``(from, to)`` loop-time intervals in which it was actually
            playing (pauses split it; the last ``to`` is ``None`` while it plays).
    """

    start: float
    end: float | None = None
    text: str = ""
    interrupted: bool = False
    duration: float = 0.0
    played: float = 0.0
    heard_text: str = ""
    audible: list[tuple[float, float | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Overlap:
    """A stretch in which agent audio played while the caller spoke (loop time).

    Attributes:
        start: When the overlap began.
        end: When it ended.
        caller: The caller's utterance.
        agent: The agent's segment.
        agent_started_it: The agent's audio began (or resumed) while the caller
            was already speaking: the agent talked over the caller. Otherwise the
            caller barged in on the agent, who kept talking until livekit paused
            or interrupted it.
    """

    start: float
    end: float
    caller: CallerSegment
    agent: AgentSegment
    agent_started_it: bool


def _now() -> float:
    return asyncio.get_running_loop().time()


def _heard(text: str, fraction: float) -> str:
    """The whole words of ``text`` spoken after ``fraction`` of its audio."""
    if fraction >= 1.0:
        return text
    n = math.floor(len(text) * max(fraction, 0.0) + 1e-9)
    if n >= len(text):
        return text
    cut = text[:n]
    if cut and not cut[-1].isspace() and not text[n].isspace():
        # the word being spoken at the cut was not heard
        words = cut.rsplit(None, 1)
        cut = words[0] if len(words) == 2 else ""
    return cut.strip()


# -- VAD ---------------------------------------------------------------------------


class FakeVAD(vad.VAD):
    """A VAD that reports speech when told to (by `FakeVoice`), not from audio.

    While the caller speaks, every stream emits ``INFERENCE_DONE`` every
    ``interval`` seconds of loop time (counted from the start of speech), with
    the speech duration so far; livekit interrupts the agent at the first one
    that reaches its ``min_interruption_duration``.
    """

    def __init__(self, *, interval: float = 0.1, sample_rate: int = 16000) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=interval))
        self._interval = interval
        self._sample_rate = sample_rate
        self._streams: set[_FakeVADStream] = set()
        self._speech_start: float | None = None
        self._ticks = 0
        self._tick_handle: asyncio.TimerHandle | None = None

    @property
    def model(self) -> str:
        """Model name reported to livekit."""
        return "fake-vad"

    @property
    def provider(self) -> str:
        """Provider name reported to livekit."""
        return "livekit-async-tools"

    @property
    def speaking(self) -> bool:
        """True between `start_speech` and `end_speech`."""
        return self._speech_start is not None

    def stream(self) -> vad.VADStream:
        """Open a stream (called by livekit)."""
        return _FakeVADStream(self)

    def start_speech(self) -> None:
        """Report the start of speech now on every open stream."""
        if self._speech_start is not None:
            return
        self._speech_start = _now()
        self._ticks = 0
        self._broadcast(vad.VADEventType.START_OF_SPEECH, 0.0)
        self._schedule_tick()

    def end_speech(self) -> None:
        """Report the end of speech now on every open stream."""
        if self._speech_start is None:
            return
        duration = max(_now() - self._speech_start, 0.0)
        self._cancel_tick()
        self._speech_start = None
        self._broadcast(vad.VADEventType.END_OF_SPEECH, duration)

    def close(self) -> None:
        """Stop the inference timer (the streams close with the session)."""
        self._cancel_tick()
        self._speech_start = None

    def _schedule_tick(self) -> None:
        assert self._speech_start is not None
        self._ticks += 1
        when = self._speech_start + self._ticks * self._interval
        self._tick_handle = asyncio.get_running_loop().call_at(when, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        if self._speech_start is None:
            return
        # the nominal time of this inference, free of clock rounding
        self._broadcast(vad.VADEventType.INFERENCE_DONE, round(self._ticks * self._interval, 9))
        self._schedule_tick()

    def _cancel_tick(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    def _event(self, kind: vad.VADEventType, speech: float) -> vad.VADEvent:
        speaking = kind != vad.VADEventType.END_OF_SPEECH
        return vad.VADEvent(
            type=kind,
            samples_index=int(speech * self._sample_rate),
            timestamp=_now(),
            speech_duration=speech,
            silence_duration=0.0,
            probability=1.0 if speaking else 0.0,
            speaking=speaking,
            raw_accumulated_speech=speech if speaking else 0.0,
            raw_accumulated_silence=0.0,
        )

    def _broadcast(self, kind: vad.VADEventType, speech: float) -> None:
        for stream in list(self._streams):
            stream.send(self._event(kind, speech))

    def _opened(self, stream: _FakeVADStream) -> None:
        self._streams.add(stream)
        if self._speech_start is not None:  # e.g. a handoff while the caller speaks
            stream.send(
                self._event(vad.VADEventType.START_OF_SPEECH, max(_now() - self._speech_start, 0))
            )


class _FakeVADStream(vad.VADStream):
    def __init__(self, owner: FakeVAD) -> None:
        self._owner = owner
        self._input_done = asyncio.Event()
        super().__init__(owner)
        owner._opened(self)

    async def _main_task(self) -> None:
        # `_main_task` is livekit's extension point for VAD plugins
        try:
            await self._input_done.wait()
        finally:
            self._owner._streams.discard(self)

    def send(self, ev: vad.VADEvent) -> None:
        """Send an event to livekit (dropped once the stream is closed)."""
        if self._event_ch.closed:
            self._owner._streams.discard(self)
            return
        self._event_ch.send_nowait(ev)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Accept audio (ignored: speech is reported on command)."""

    def flush(self) -> None:
        """Segment boundary (nothing to reset: speech is reported on command)."""

    def end_input(self) -> None:
        """No more audio: the stream ends."""
        self._input_done.set()


# -- STT ---------------------------------------------------------------------------


class FakeSTT(stt.STT):  # type: ignore[type-arg]
    """A streaming STT that reports what `FakeVoice` says the caller said.

    `transcribe` sends a ``FINAL_TRANSCRIPT`` to every open stream at once (or
    to the next stream to open, if none is). It supports manual flush: a flush
    (livekit asks for one at the end of speech and when the session closes)
    answers with an empty final transcript, so closing never waits for one.
    """

    def __init__(self, *, language: str = "en") -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True, interim_results=False, manual_flush=True
            )
        )
        self._language = language
        self._streams: set[_FakeSTTStream] = set()
        self._undelivered: list[str] = []
        self.transcripts: list[str] = []
        """Every transcript sent, in order."""

    @property
    def model(self) -> str:
        """Model name reported to livekit."""
        return "fake-stt"

    @property
    def provider(self) -> str:
        """Provider name reported to livekit."""
        return "livekit-async-tools"

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        """Open a stream (called by livekit)."""
        stream = _FakeSTTStream(self, conn_options=conn_options)
        self._streams.add(stream)
        for text in self._undelivered:
            stream.send(self.final(text))
        self._undelivered.clear()
        return stream

    def final(self, text: str) -> stt.SpeechEvent:
        """A final-transcript event for ``text``."""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=self._language, text=text, confidence=1.0)],  # type: ignore[arg-type]
        )

    def transcribe(self, text: str) -> None:
        """Report ``text`` as the caller's final transcript now."""
        self.transcripts.append(text)
        delivered = False
        for stream in list(self._streams):
            delivered = stream.send(self.final(text)) or delivered
        if not delivered:
            self._undelivered.append(text)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        # livekit's extension point for batch recognition: the last transcript
        return self.final(self.transcripts[-1] if self.transcripts else "")


class _FakeSTTStream(stt.RecognizeStream):
    def __init__(self, owner: FakeSTT, *, conn_options: APIConnectOptions) -> None:
        self._owner = owner
        self._input_done = asyncio.Event()
        super().__init__(stt=owner, conn_options=conn_options)

    async def _run(self) -> None:
        # `_run` is livekit's extension point for STT plugins
        try:
            await self._input_done.wait()
        finally:
            self._owner._streams.discard(self)

    def send(self, ev: stt.SpeechEvent) -> bool:
        """Send an event to livekit; False once the stream is closed."""
        if self._event_ch.closed:
            self._owner._streams.discard(self)
            return False
        self._event_ch.send_nowait(ev)
        return True

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Accept audio (ignored: the transcript comes from `FakeVoice`)."""

    def flush(self) -> None:
        """Finalize the current segment: an empty final transcript."""
        self.send(self._owner.final(""))

    def end_input(self) -> None:
        """No more audio: the stream ends."""
        self._input_done.set()


# -- TTS ---------------------------------------------------------------------------


class FakeTTS(tts.TTS):  # type: ignore[type-arg]
    """A non-streaming TTS that returns silence lasting ``len(text) / chars_per_second``.

    livekit feeds it one sentence at a time. The first sample of each
    synthesis carries a marker (a tiny non-zero value) so the fake loudspeaker
    knows which text it is playing.
    """

    def __init__(
        self,
        *,
        chars_per_second: float = 15.0,
        delay: float = 0.0,
        sample_rate: int = 16000,
    ) -> None:
        if chars_per_second <= 0:
            raise ValueError("chars_per_second must be > 0")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.chars_per_second = chars_per_second
        self.delay = delay
        self._marks = itertools.cycle(range(1, _MAX_MARK + 1))
        self._texts: dict[int, str] = {}
        self.requests: list[str] = []
        """Every text synthesized, in order."""

    @property
    def model(self) -> str:
        """Model name reported to livekit."""
        return "fake-tts"

    @property
    def provider(self) -> str:
        """Provider name reported to livekit."""
        return "livekit-async-tools"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        """Synthesize ``text`` (called by livekit)."""
        return _FakeChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def duration(self, text: str) -> float:
        """Seconds of audio made for ``text``."""
        return len(text) / self.chars_per_second

    def text_of(self, mark: int) -> str | None:
        """The text whose audio starts with marker ``mark``."""
        return self._texts.get(mark)

    def audio(self, text: str) -> bytes:
        """Silent int16 audio for ``text``, marked with its text."""
        self.requests.append(text)
        mark = next(self._marks)
        self._texts[mark] = text
        pcm = np.zeros(max(1, round(self.duration(text) * self.sample_rate)), dtype=np.int16)
        pcm[0] = mark
        return pcm.tobytes()


class _FakeChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: FakeTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        self._fake = tts
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        # `_run` is livekit's extension point for TTS plugins
        if self._fake.delay > 0:
            await asyncio.sleep(self._fake.delay)
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=self._fake.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(self._fake.audio(self.input_text))
        output_emitter.flush()


# -- microphone ------------------------------------------------------------------


class FakeMicrophone(AudioInput):
    """Silent audio frames of ``frame_seconds`` each, paced by the loop clock.

    The fake VAD and STT ignore the audio; livekit still needs a live input.
    """

    def __init__(self, *, frame_seconds: float = 0.1, sample_rate: int = 16000) -> None:
        super().__init__(label="fake-microphone")
        if frame_seconds <= 0:
            raise ValueError("frame_seconds must be > 0")
        self.frame_seconds = frame_seconds
        self.sample_rate = sample_rate
        self._samples = max(1, round(frame_seconds * sample_rate))
        self._silence = bytes(2 * self._samples)
        self._next: float | None = None
        self.frames = 0
        """Frames delivered so far."""

    async def __anext__(self) -> rtc.AudioFrame:
        now = _now()
        self._next = now if self._next is None else max(self._next, now)
        self._next += self.frame_seconds
        await asyncio.sleep(self._next - now)
        self.frames += 1
        return rtc.AudioFrame(
            data=self._silence,
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self._samples,
        )


# -- loudspeaker -------------------------------------------------------------------


@dataclass
class _Playback:
    segment: AgentSegment | None = None
    pushed: float = 0.0
    chunks: list[tuple[float, str]] = field(default_factory=list)
    """(offset, text) of each synthesis whose audio was captured."""
    flushed: bool = False
    cleared: bool = False
    played_before: float = 0.0
    playing_since: float | None = None

    def played(self, now: float) -> float:
        extra = now - self.playing_since if self.playing_since is not None else 0.0
        return min(self.played_before + max(extra, 0.0), self.pushed)

    def text(self) -> str:
        return " ".join(t for _, t in self.chunks)

    def heard(self, position: float) -> str:
        words: list[str] = []
        if not self.chunks:
            return ""
        bounds = [off for off, _ in self.chunks[1:]] + [self.pushed]
        for (off, text), end in zip(self.chunks, bounds, strict=True):
            if position <= off:
                break
            span = end - off
            part = _heard(text, (position - off) / span if span > 0 else 1.0)
            if part:
                words.append(part)
            if position < end:
                break
        return " ".join(words)


class FakeSpeaker(AudioOutput):
    """A loudspeaker that plays agent audio in loop time.

    Each segment plays for the duration of its audio once the previous one
    has finished; it reports ``playback_started`` when it starts and
    ``playback_finished`` when it ends or is cut by ``clear_buffer()``, with the
    words played so far as the synchronized transcript of a cut segment.
    ``pause()``/``resume()`` (livekit's false-interruption handling) stop and
    restart the clock when ``can_pause`` is set.

    Args:
        tts: The `FakeTTS` whose markers name the text of the audio.
        can_pause: Advertise pause support (a room's output does).
    """

    def __init__(self, *, tts: FakeTTS | None = None, can_pause: bool = True) -> None:
        super().__init__(
            label="fake-speaker", capabilities=AudioOutputCapabilities(pause=can_pause)
        )
        self._tts = tts
        self.segments: list[AgentSegment] = []
        """Every segment that started to play, in order."""
        self.on_segment_start: list[Callable[[AgentSegment], None]] = []
        """Callbacks run when a segment starts to play (e.g. to barge in)."""
        self._queue: list[_Playback] = []
        self._open: _Playback | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def playing(self) -> bool:
        """True while a segment is audible (started, not paused, not finished)."""
        return bool(self._queue) and self._queue[0].playing_since is not None

    @property
    def paused(self) -> bool:
        """True while livekit holds the playback paused."""
        return self._paused

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue a frame of agent audio (called by livekit)."""
        await super().capture_frame(frame)
        if self._open is None:
            self._open = _Playback()
            self._queue.append(self._open)
        pb = self._open
        if pb.cleared:
            return  # the rest of a segment that was already cut
        now = _now()
        if pb.playing_since is not None and pb.played(now) >= pb.pushed:
            # the audio ran dry before this frame came: it plays from now on
            pb.played_before = pb.pushed
            pb.playing_since = now
        if self._tts is not None:
            pcm = np.frombuffer(frame.data, dtype=np.int16)
            for idx in np.flatnonzero(pcm):
                text = self._tts.text_of(int(pcm[idx]))
                if text is not None:
                    offset = pb.pushed + idx / (frame.sample_rate * frame.num_channels)
                    pb.chunks.append((offset, text))
        pb.pushed += frame.duration
        if pb.segment is not None:
            pb.segment.duration = pb.pushed
            pb.segment.text = pb.text()
        self._advance()

    def flush(self) -> None:
        """End the segment being captured (called by livekit)."""
        super().flush()
        pb, self._open = self._open, None
        if pb is None or pb.cleared:
            return
        pb.flushed = True
        self._advance()

    def clear_buffer(self) -> None:
        """Cut everything queued now (called by livekit to interrupt)."""
        now = _now()
        self._cancel_timer()
        queue, self._queue = self._queue, []
        for pb in queue:
            if pb is self._open:
                pb.cleared = True
            self._finish(pb, now, interrupted=True)

    def pause(self) -> None:
        """Hold the playback (livekit pauses on a possible interruption)."""
        super().pause()
        if self._paused:
            return
        self._paused = True
        if self._queue and self._queue[0].playing_since is not None:
            self._stop_clock(self._queue[0], _now())
        self._cancel_timer()

    def resume(self) -> None:
        """Continue the playback after a pause."""
        super().resume()
        if not self._paused:
            return
        self._paused = False
        self._advance()

    def close(self) -> None:
        """Stop the playback timer (the session is gone)."""
        self._cancel_timer()

    # -- the clock -----------------------------------------------------------------

    def _advance(self) -> None:
        """Start the head segment if it can play, and time its end."""
        self._cancel_timer()
        if not self._queue or self._paused:
            return
        pb = self._queue[0]
        now = _now()
        if pb.playing_since is None:
            if pb.pushed <= 0:
                return
            pb.playing_since = now
            if pb.segment is None:
                pb.segment = AgentSegment(start=now, duration=pb.pushed, text=pb.text())
                self.segments.append(pb.segment)
                self.on_playback_started(created_at=_wall_time())
                for cb in list(self.on_segment_start):
                    cb(pb.segment)
            pb.segment.audible.append((now, None))
        if pb.flushed:
            remaining = pb.pushed - pb.played(now)
            self._timer = asyncio.get_running_loop().call_at(now + remaining, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._queue:
            return
        pb = self._queue.pop(0)
        self._finish(pb, _now(), interrupted=False)
        self._advance()

    def _stop_clock(self, pb: _Playback, now: float) -> None:
        pb.played_before = pb.played(now)
        pb.playing_since = None
        if pb.segment is not None and pb.segment.audible:
            since, _ = pb.segment.audible[-1]
            pb.segment.audible[-1] = (since, now)

    def _finish(self, pb: _Playback, now: float, *, interrupted: bool) -> None:
        if pb.playing_since is not None:
            self._stop_clock(pb, now)
        played = pb.played_before if interrupted else pb.pushed
        heard = pb.heard(played) if interrupted else pb.text()
        if pb.segment is not None:
            seg = pb.segment
            seg.end = now
            seg.played = played
            seg.interrupted = interrupted
            seg.text = pb.text()
            seg.heard_text = heard
        self.on_playback_finished(
            playback_position=played,
            interrupted=interrupted,
            # unknown text (no markers: e.g. a custom tts_node) is reported as unknown
            synchronized_transcript=heard if interrupted and pb.chunks else None,
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _wall_time() -> float:
    # livekit stamps playback starts with wall-clock time (it compares them with
    # time.time()); the fake's own timeline uses the loop clock
    return time.time()


# -- the whole stack -------------------------------------------------------------


class FakeVoice:
    """A scripted caller and a timed loudspeaker for a real `AgentSession`.

    It wires a command-driven VAD, STT and microphone, a TTS whose audio lasts
    ``len(text) / chars_per_second`` seconds, and a loudspeaker that plays it in
    loop time, so livekit's own turn taking runs for real. Everything the fake
    times uses the event loop's clock (``loop.time()``, ``asyncio.sleep``,
    ``call_at``), so a call runs the same in real time and under ``looptime``'s
    virtual time (measured: 0.02-0.04 s of wall time per 10 s of idle call,
    0.06-0.08 s per 10 s of steady conversation, with the default frame size).

    What livekit does with it (see ``tests/test_fake_voice.py``):

    - `caller_starts`: ``user_state`` "speaking" at once; new agent speech is
      held; agent speech is paused (``can_pause``, as in a room) or interrupted
      after ``min_interruption_duration`` of caller speech.
    - `caller_stops` with words: ``user_state`` "listening"; the user turn is
      pending for ``min_endpointing_delay``, then committed and answered; a
      paused agent is interrupted (any words do it, even shorter than
      ``min_interruption_duration``: livekit's ``min_words`` is 0).
    - `caller_stops` without words (a noise): a paused agent resumes after
      ``false_interruption_timeout``; speech queued while the caller spoke
      starts only then (without pause it is dropped).
    - Agent speech: ``agent_state`` "speaking" while it plays, per sentence
      ``len(sentence) / chars_per_second`` plus livekit's 10 ms end-of-segment
      markers; ``session.interrupt()`` and barge-in cut it, and the chat history
      keeps the words played (`AgentSegment.heard_text`).

    Caveats: the VAD reports the end of speech the moment the caller stops (no
    ``min_silence_duration``); the audio frames are silence and nothing listens
    to them; livekit measures the endpointing delay with ``time.time()``, which
    stands still under virtual time, so there a turn commits
    ``min_endpointing_delay`` of loop time after the end of speech minus the
    (milliseconds of) wall time livekit spent in between. One `FakeVoice` per
    session.

    Args:
        chars_per_second: Speaking rate of the agent's TTS (and default rate of
            `caller_says`).
        min_endpointing_delay: Silence after the caller stops before livekit
            commits their turn.
        max_endpointing_delay: livekit's upper bound on that delay.
        min_interruption_duration: Caller speech that interrupts the agent.
        false_interruption_timeout: Seconds after an interruption without
            words before livekit resumes the paused agent (``None``: never).
        can_pause: The loudspeaker supports pause, as a room's does (livekit
            then pauses the agent on caller speech and interrupts it only when
            the caller's words arrive); ``False`` interrupts at once.
        tts_delay: Seconds the TTS takes per sentence before its audio.
        frame_seconds: Length (and pacing) of the silent microphone frames.
        vad_interval: Loop seconds between VAD inferences while the caller speaks.
        sample_rate: Sample rate of the microphone and TTS audio.

    Example::

        voice = FakeVoice(chars_per_second=15.0)
        session = AgentSession(llm=ScriptedLLM(["Rome, got it."]), **voice.session_kwargs())
        voice.attach(session)
        await session.start(agent)
        await voice.caller_says("I need a flight to Rome", duration=1.5)
        # livekit commits the turn 0.5 s later, the LLM answers, the agent speaks
        # for len("Rome, got it.") / 15 seconds; see voice.agent_segments
    """

    def __init__(
        self,
        *,
        chars_per_second: float = 15.0,
        min_endpointing_delay: float = 0.5,
        max_endpointing_delay: float = 3.0,
        min_interruption_duration: float = 0.5,
        false_interruption_timeout: float | None = 2.0,
        can_pause: bool = True,
        tts_delay: float = 0.0,
        frame_seconds: float = 0.1,
        vad_interval: float = 0.1,
        sample_rate: int = 16000,
    ) -> None:
        self.chars_per_second = chars_per_second
        self.min_endpointing_delay = min_endpointing_delay
        self.max_endpointing_delay = max_endpointing_delay
        self.min_interruption_duration = min_interruption_duration
        self.false_interruption_timeout = false_interruption_timeout
        self.vad = FakeVAD(interval=vad_interval, sample_rate=sample_rate)
        self.stt = FakeSTT()
        self.tts = FakeTTS(
            chars_per_second=chars_per_second, delay=tts_delay, sample_rate=sample_rate
        )
        self.microphone = FakeMicrophone(frame_seconds=frame_seconds, sample_rate=sample_rate)
        self.speaker = FakeSpeaker(tts=self.tts, can_pause=can_pause)
        self.caller_segments: list[CallerSegment] = []
        """Every caller utterance, in order."""
        self._sessions: list[AgentSession[Any]] = []

    # -- setup ---------------------------------------------------------------------

    def turn_handling(self) -> TurnHandlingOptions:
        """livekit turn handling for the fake stack: VAD turn detection and VAD
        interruption, fixed endpointing, no preemptive generation."""
        from livekit.agents import EndpointingOptions, InterruptionOptions, TurnHandlingOptions

        interruption = InterruptionOptions(
            enabled=True,
            mode="vad",
            min_duration=self.min_interruption_duration,
            min_words=0,
            false_interruption_timeout=self.false_interruption_timeout,
            resume_false_interruption=self.speaker.can_pause
            and self.false_interruption_timeout is not None,
        )
        return TurnHandlingOptions(
            turn_detection="vad",
            endpointing=EndpointingOptions(
                mode="fixed",
                min_delay=self.min_endpointing_delay,
                max_delay=self.max_endpointing_delay,
            ),
            interruption=interruption,
            preemptive_generation={"enabled": False},
        )

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `AgentSession` (add ``llm=`` and anything else).

        ``vad``, ``stt``, ``tts``, ``turn_handling``, ``user_away_timeout=None``
        and ``aec_warmup_duration=None`` (livekit would otherwise ignore the
        caller for the first 3 s of agent speech).
        """
        return {
            "vad": self.vad,
            "stt": self.stt,
            "tts": self.tts,
            "turn_handling": self.turn_handling(),
            "user_away_timeout": None,
            "aec_warmup_duration": None,
        }

    def attach(self, session: AgentSession[Any]) -> None:
        """Make the fake microphone and loudspeaker the session's audio I/O (call
        before ``session.start``); their timers stop when the session closes."""
        session.input.audio = self.microphone
        session.output.audio = self.speaker
        if session not in self._sessions:
            self._sessions.append(session)
            session.on("close", lambda _ev: self.close())

    def close(self) -> None:
        """Stop the fake's timers (done for you when an attached session closes)."""
        self.vad.close()
        self.speaker.close()
        if self.caller_segments and self.caller_segments[-1].end is None:
            self.caller_segments[-1].end = _now()

    # -- the caller ----------------------------------------------------------------

    @property
    def caller_speaking(self) -> bool:
        """True between `caller_starts` and `caller_stops`."""
        return self.vad.speaking

    def caller_starts(self) -> None:
        """The caller starts speaking now: VAD start of speech.

        livekit sets ``user_state`` to "speaking" at once, holds new agent
        speech, and interrupts (or pauses) agent speech once the caller has
        spoken ``min_interruption_duration`` seconds.
        """
        if self.caller_speaking:
            raise RuntimeError("the caller is already speaking")
        self.caller_segments.append(CallerSegment(start=_now()))
        self.vad.start_speech()

    def caller_stops(self, text: str = "") -> None:
        """The caller stops speaking now, having said ``text``.

        The STT reports ``text`` as a final transcript (none for ``""``: a
        noise), then the VAD reports the end of speech. livekit sets
        ``user_state`` to "listening" and commits the user turn
        ``min_endpointing_delay`` later if it has words.
        """
        if not self.caller_speaking:
            raise RuntimeError("the caller is not speaking")
        seg = self.caller_segments[-1]
        seg.end = _now()
        seg.text = text
        if text:
            self.stt.transcribe(text)
        self.vad.end_speech()

    async def caller_says(self, text: str, duration: float | None = None) -> CallerSegment:
        """Speak ``text`` for ``duration`` seconds (default: at the TTS rate); if
        cancelled meanwhile, the caller stops there, having said ``text``."""
        self.caller_starts()
        seg = self.caller_segments[-1]
        try:
            await asyncio.sleep(len(text) / self.chars_per_second if duration is None else duration)
        finally:
            if self.caller_speaking and self.caller_segments[-1] is seg:
                self.caller_stops(text)
        return seg

    # -- the agent -----------------------------------------------------------------

    @property
    def agent_segments(self) -> list[AgentSegment]:
        """Every agent segment that started to play, in order (loop time)."""
        return self.speaker.segments

    def overlaps(self) -> list[Overlap]:
        """Every stretch in which agent audio played while the caller spoke, in
        order (a barge-in overlaps until livekit pauses or cuts the agent)."""
        now = _now()
        out: list[Overlap] = []
        for caller in self.caller_segments:
            c_end = now if caller.end is None else caller.end
            for seg in self.speaker.segments:
                for a_start, a_end in seg.audible:
                    start = max(caller.start, a_start)
                    end = min(c_end, now if a_end is None else a_end)
                    if end > start:
                        out.append(Overlap(start, end, caller, seg, a_start > caller.start))
        out.sort(key=lambda o: o.start)
        return out

    @property
    def agent_playing(self) -> bool:
        """True while agent audio is audible."""
        return self.speaker.playing
