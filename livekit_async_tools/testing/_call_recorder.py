"""The timeline of an offline call: speech segments, tool and reply events, outputs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._audio_engines import CALLER_RATE, resample
from ._audio_io import RecordingSpeaker, ScriptedCaller, Segment

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

    def quiet(self) -> bool:
        """The agent is listening and its speaker is silent."""
        return self._session.agent_state == "listening" and not self.speaker.speaking

    async def settled(self, hold: float = 0.6) -> None:
        """Wait until the agent is quiet and stays quiet for ``hold`` call seconds."""
        await self.wait_until(self.quiet)
        await self.clock.sleep(hold)
        await self.wait_until(self.quiet)

    async def answered(self, hold: float = 0.6) -> None:
        """Wait until the agent has responded (left quiet) and settled again."""
        await self.wait_until(lambda: not self.quiet())
        await self.settled(hold)

    async def ask(self, lines: list[str], done: Callable[[], bool]) -> None:
        """Have the caller say ``lines[0]``; like a person, say the next rephrasing
        while the agent's answer shows it did not understand (``done()`` is false).

        Raises:
            RuntimeError: No rephrasing worked.
        """
        for text in lines:
            await self.caller.say(text)
            await self.answered()
            if done():
                return
        raise RuntimeError(f"the agent did not understand any of: {lines}")

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
