"""The fake microphone and loudspeaker of an offline call, and its clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from ._audio_engines import CALLER_RATE, FRAME_SAMPLES, FRAME_SECONDS, resample, synthesize


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

    async def say_at(self, t: float, text: str) -> Segment:
        """Speak ``text`` at call time ``t`` (whatever the agent is doing then)."""
        await self.clock.sleep_until(t)
        return await self.say(text)

    def barge_in(
        self, speaker: RecordingSpeaker, text: str, *, after: float = 1.0, times: int = 1
    ) -> list[asyncio.Task[Segment]]:
        """Talk over the agent: ``after`` call seconds into each of its next ``times``
        segments, say ``text``. Returns the tasks of the utterances (a list that
        fills as the agent speaks)."""
        spoken: list[asyncio.Task[Segment]] = []

        def on_agent_speech(_seg: Segment) -> None:
            if len(spoken) >= times:
                return
            start = self.clock.now() + after
            spoken.append(asyncio.ensure_future(self.say_at(start, text)))
            if len(spoken) >= times:
                speaker.on_speech_start.remove(on_agent_speech)

        speaker.on_speech_start.append(on_agent_speech)
        return spoken

    @property
    def speaking(self) -> bool:
        """True while an utterance is being played into the session."""
        return self._current is not None

    async def __anext__(self) -> rtc.AudioFrame:
        self.clock.start()
        if self._next_t is None:
            self._next_t = self.clock.now()
        self._next_t += FRAME_SECONDS
        await self.clock.sleep_until(self._next_t)
        if self._current is None and self._queue:
            self._current = self._queue.pop(0)
            self._pos = 0
            seg = self._current[0]
            seg.start = self._next_t - FRAME_SECONDS
            self.segments.append(seg)
            for cb in list(self.on_speech_start):
                cb(seg)
        samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if self._current is not None:
            seg, pcm, fut = self._current
            chunk = pcm[self._pos : self._pos + FRAME_SAMPLES]
            samples[: len(chunk)] = chunk
            seg.audio.append(samples.copy())
            self._pos += FRAME_SAMPLES
            if self._pos >= len(pcm):
                seg.end = self._next_t
                self._current = None
                if not fut.done():
                    fut.set_result(None)
        return rtc.AudioFrame(
            data=samples.tobytes(),
            sample_rate=CALLER_RATE,
            num_channels=1,
            samples_per_channel=FRAME_SAMPLES,
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
