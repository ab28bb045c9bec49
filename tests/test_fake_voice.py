"""FakeVoice drives a real AgentSession's turn taking: caller speech, endpointing,
agent speech that lasts, barge-in, false interruptions, `session.interrupt()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, function_tool
from livekit.agents.voice import SpeechHandle

from livekit_async_tools.testing import AgentSegment, FakeVoice, ScriptedLLM, ToolCall
from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED, FakeSpeaker, FakeTTS

pytestmark = pytest.mark.skipif(
    not FAKE_VOICE_SUPPORTED, reason="FakeVoice needs livekit-agents' turn_handling options"
)

CPS = 20.0
REPLY = "Rome is lovely in spring. I will book the morning flight."  # two sentences
SHORT = "Okay."


def speech_seconds(text: str, sentences: int = 1) -> float:
    """What the fake TTS makes of ``text``: len/cps per sentence (the spaces between
    sentences are not spoken) plus livekit's 10 ms end-of-segment marker per sentence
    and one for the reply."""
    return (len(text) - (sentences - 1)) / CPS + 0.01 * (sentences + 1)


@dataclass
class Call:
    session: AgentSession[Any]
    voice: FakeVoice
    llm: ScriptedLLM
    t0: float
    log: list[tuple[float, str, str]] = field(default_factory=list)

    def user(self) -> str:
        return self.session.user_state

    def agent(self) -> str:
        return self.session.agent_state

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def times(self, kind: str, value: str) -> list[float]:
        return [t for t, k, v in self.log if k == kind and v == value]

    def messages(self, role: str) -> list[Any]:
        return [it for it in self.session.history.items if it.type == "message" and it.role == role]

    def rel(self, seg: AgentSegment) -> tuple[float, float | None]:
        end = None if seg.end is None else seg.end - self.t0
        return seg.start - self.t0, end

    async def until(self, cond: Callable[[], bool], timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            assert loop.time() < deadline, "condition not reached"
            await asyncio.sleep(0.01)


async def open_call(
    replies: list[Any] | None = None,
    *,
    agent: Agent | None = None,
    voice: FakeVoice | None = None,
    **voice_options: Any,
) -> Call:
    voice = voice or FakeVoice(chars_per_second=CPS, **voice_options)
    llm = ScriptedLLM(replies or [])
    session: AgentSession[Any] = AgentSession(llm=llm, **voice.session_kwargs())
    voice.attach(session)
    call = Call(session, voice, llm, asyncio.get_running_loop().time())
    session.on("user_state_changed", lambda ev: call.log.append((call.now(), "user", ev.new_state)))
    session.on(
        "agent_state_changed", lambda ev: call.log.append((call.now(), "agent", ev.new_state))
    )
    session.on(
        "conversation_item_added",
        lambda ev: call.log.append((call.now(), "item", getattr(ev.item, "role", ""))),
    )
    await session.start(agent or Agent(instructions="test"))
    return call


@pytest.fixture
async def closing() -> AsyncIterator[list[Call]]:
    """Close the calls a test opened and check nothing of theirs is left running."""
    calls: list[Call] = []
    yield calls
    for call in calls:
        await call.session.aclose()
    await asyncio.sleep(0)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == [], f"tasks left running: {others}"


def approx(expected: float, tol: float = 0.03) -> Any:
    return pytest.approx(expected, abs=tol)


@pytest.mark.looptime
async def test_caller_turn_is_committed_after_the_endpointing_delay(closing: list[Call]) -> None:
    call = await open_call([SHORT])
    closing.append(call)
    voice = call.voice

    await asyncio.sleep(1.0)
    voice.caller_starts()
    await asyncio.sleep(0)
    assert call.user() == "speaking"
    await asyncio.sleep(1.5)
    voice.caller_stops("I need a flight to Rome")
    await asyncio.sleep(0.2)
    # the caller's turn is pending: they are silent, livekit has not committed it yet
    assert call.user() == "listening"
    assert call.messages("user") == []
    assert call.llm.requests == []
    await call.until(lambda: len(call.messages("assistant")) == 1)

    assert call.times("user", "speaking") == [approx(1.0)]
    assert call.times("user", "listening") == [approx(2.5)]
    assert call.times("item", "user") == [approx(3.0)]  # min_endpointing_delay = 0.5
    assert [m.text_content for m in call.messages("user")] == ["I need a flight to Rome"]
    assert call.llm.requests[0].last_user_text == "I need a flight to Rome"
    [start] = call.times("agent", "speaking")
    assert start == approx(3.0)
    assert [voice.caller_segments[0].text] == ["I need a flight to Rome"]
    assert voice.caller_segments[0].end is not None
    assert voice.caller_segments[0].end - voice.caller_segments[0].start == approx(1.5, 0.001)


@pytest.mark.looptime
async def test_agent_speaks_for_len_over_cps_seconds(closing: list[Call]) -> None:
    call = await open_call()
    closing.append(call)
    session, voice = call.session, call.voice

    handle = session.say(REPLY)
    await asyncio.sleep(1.0)
    assert call.agent() == "speaking"
    assert voice.agent_playing
    await handle
    expected = speech_seconds(REPLY, sentences=2)
    [start] = call.times("agent", "speaking")
    [end] = [t for t in call.times("agent", "listening") if t > start]
    assert end - start == approx(expected)

    [seg] = voice.agent_segments
    assert not seg.interrupted
    assert seg.text == REPLY
    assert seg.heard_text == REPLY
    assert seg.duration == approx(expected, 0.001)
    assert seg.played == seg.duration
    assert seg.end is not None
    assert seg.end - seg.start == approx(expected, 0.001)
    assert seg.audible == [(seg.start, seg.end)]
    assert [m.text_content for m in call.messages("assistant")] == [REPLY]


@pytest.mark.looptime
async def test_barge_in_pauses_the_agent_and_the_callers_words_interrupt_it(
    closing: list[Call],
) -> None:
    call = await open_call(["Sure, stopping."])
    closing.append(call)
    session, voice = call.session, call.voice

    handle = session.say(REPLY)
    await call.until(lambda: call.agent() == "speaking")
    started = call.now()
    await asyncio.sleep(1.0)
    voice.caller_starts()
    await asyncio.sleep(0.45)
    assert call.agent() == "speaking"  # not yet min_interruption_duration
    await asyncio.sleep(0.1)
    # livekit pauses the agent: it may be a false interruption
    assert call.agent() == "listening"
    assert voice.speaker.paused
    assert not handle.interrupted
    await asyncio.sleep(0.5)
    voice.caller_stops("wait, stop")
    await handle
    assert handle.interrupted

    first = voice.agent_segments[0]
    assert first.interrupted
    assert first.played == approx(1.5)  # it played until the pause
    assert first.audible[0][1] is not None
    assert first.audible[0][1] - call.t0 == approx(started + 1.5)
    [overlap] = voice.overlaps()  # the barge-in, until livekit paused the agent
    assert not overlap.agent_started_it
    assert (overlap.caller, overlap.agent) == (voice.caller_segments[0], first)
    assert overlap.end - overlap.start == approx(0.5)
    heard = REPLY[: int(first.played * CPS)].rsplit(" ", 1)[0]
    assert first.heard_text == heard
    # livekit keeps what the caller heard, and then answers the caller
    await call.until(lambda: len(call.messages("assistant")) == 2)
    said = call.messages("assistant")
    assert [m.text_content for m in said] == [heard, "Sure, stopping."]
    assert said[0].interrupted
    assert [m.text_content for m in call.messages("user")] == ["wait, stop"]


@pytest.mark.looptime
async def test_barge_in_interrupts_at_once_without_pause(closing: list[Call]) -> None:
    call = await open_call(can_pause=False)
    closing.append(call)
    session, voice = call.session, call.voice

    handle = session.say(REPLY)
    await call.until(lambda: call.agent() == "speaking")
    started = call.now()
    await asyncio.sleep(1.0)
    voice.caller_starts()
    await handle  # the caller is still speaking
    assert handle.interrupted
    assert voice.caller_speaking
    [seg] = voice.agent_segments
    assert seg.interrupted
    assert seg.end is not None
    assert seg.end - call.t0 == approx(started + 1.5)  # min_interruption_duration after
    voice.caller_stops("hold on")
    await call.until(lambda: len(call.messages("user")) == 1)


@pytest.mark.looptime
async def test_a_noise_is_a_false_interruption_and_the_agent_resumes(closing: list[Call]) -> None:
    call = await open_call()
    closing.append(call)
    session, voice = call.session, call.voice

    handle = session.say(REPLY)
    await call.until(lambda: call.agent() == "speaking")
    started = call.now()
    await asyncio.sleep(1.0)
    await voice.caller_says("", duration=0.8)  # a cough: speech without words
    assert call.agent() == "listening"
    await handle
    assert not handle.interrupted

    [seg] = voice.agent_segments
    assert not seg.interrupted
    assert seg.played == seg.duration
    # audible until the pause (0.5 s into the noise), silent until the false
    # interruption timeout (2 s after the noise ended), then the rest
    (a, b), (c, d) = seg.audible
    assert b is not None and d is not None
    assert (a - call.t0, b - call.t0) == (approx(started), approx(started + 1.5))
    assert c - call.t0 == approx(started + 1.8 + 2.0)
    assert (b - a) + (d - c) == approx(seg.duration, 0.001)
    assert [m.text_content for m in call.messages("assistant")] == [REPLY]
    assert call.messages("user") == []


@pytest.mark.looptime
async def test_session_interrupt_cuts_agent_speech(closing: list[Call]) -> None:
    call = await open_call()
    closing.append(call)
    session, voice = call.session, call.voice

    handle = session.say(REPLY)
    await call.until(lambda: call.agent() == "speaking")
    await asyncio.sleep(0.7)
    await session.interrupt()
    assert handle.interrupted
    [seg] = voice.agent_segments
    assert seg.interrupted
    assert seg.played == approx(0.7)
    assert seg.heard_text == "Rome is lovely"  # 14 of the 0.7 * 20 characters played
    await call.until(lambda: call.agent() == "listening")
    assert not voice.agent_playing


@pytest.mark.looptime
async def test_speech_queued_while_the_caller_speaks_is_held(closing: list[Call]) -> None:
    # livekit pauses a reply that becomes current while the caller speaks; after a
    # noise (no words) it is resumed only when the false-interruption timeout expires
    call = await open_call()
    closing.append(call)
    session, voice = call.session, call.voice

    voice.caller_starts()
    await asyncio.sleep(0.3)
    handle: SpeechHandle = session.say(SHORT)
    await asyncio.sleep(2.0)
    assert voice.agent_segments == []
    voice.caller_stops("")
    await handle
    assert not handle.interrupted
    [seg] = voice.agent_segments
    assert seg.start - call.t0 == approx(2.3 + 2.0)
    assert voice.overlaps() == []


@pytest.mark.looptime
async def test_without_pause_speech_queued_while_the_caller_speaks_is_dropped(
    closing: list[Call],
) -> None:
    call = await open_call(can_pause=False)
    closing.append(call)
    session, voice = call.session, call.voice

    voice.caller_starts()
    await asyncio.sleep(0.3)
    handle: SpeechHandle = session.say(SHORT)
    await asyncio.sleep(2.0)
    voice.caller_stops("")
    await handle
    assert handle.interrupted
    assert voice.agent_segments == []


class Billing(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="billing")


class Front(Agent):
    def __init__(self, voice: FakeVoice) -> None:
        super().__init__(instructions="front")
        self.voice = voice

    @function_tool
    async def transfer(self) -> Agent:
        """Transfer the caller to billing."""
        self.voice.caller_starts()  # the caller talks on through the handoff
        return Billing()


@pytest.mark.looptime
async def test_handoff_while_the_caller_speaks(closing: list[Call]) -> None:
    voice = FakeVoice(chars_per_second=CPS)
    call = await open_call([ToolCall("transfer"), "Ten euros."], agent=Front(voice), voice=voice)
    closing.append(call)

    await voice.caller_says("transfer me", duration=1.0)
    await call.until(lambda: isinstance(call.session.current_agent, Billing))
    await asyncio.sleep(0.5)
    # the new agent's VAD stream opened while the caller spoke: it knows
    assert call.user() == "speaking"
    voice.caller_stops("what do I owe")
    await call.until(lambda: len(voice.agent_segments) == 1 and not voice.agent_playing)
    assert [m.text_content for m in call.messages("user")] == ["transfer me", "what do I owe"]
    assert [s.text for s in voice.agent_segments] == ["Ten euros."]


@pytest.mark.looptime
async def test_consecutive_turns_and_clean_close(closing: list[Call]) -> None:
    call = await open_call(["First answer.", "Second answer."])
    closing.append(call)
    session, voice = call.session, call.voice

    for text in ("first question", "second question"):
        await voice.caller_says(text, duration=1.0)
        n = len(voice.agent_segments) + 1

        def answered(n: int = n) -> bool:
            return len(voice.agent_segments) == n and not voice.agent_playing

        await call.until(answered)
        await call.until(lambda: call.agent() == "listening")
    assert [s.text for s in voice.agent_segments] == ["First answer.", "Second answer."]
    assert [m.text_content for m in call.messages("user")] == ["first question", "second question"]
    assert voice.stt.transcripts == ["first question", "second question"]

    voice.caller_starts()  # still speaking when the session closes
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    before = loop.time()
    await session.aclose()
    assert loop.time() - before < 0.1  # close does not wait for a transcript
    assert not voice.caller_speaking
    assert voice.caller_segments[-1].end is not None


def test_misuse_is_reported() -> None:
    async def go() -> None:
        voice = FakeVoice()
        with pytest.raises(RuntimeError, match="not speaking"):
            voice.caller_stops("x")
        voice.caller_starts()
        with pytest.raises(RuntimeError, match="already speaking"):
            voice.caller_starts()
        voice.close()

    asyncio.run(go())


async def test_real_time_exchange(closing: list[Call]) -> None:
    # no virtual time: the same stack on the wall clock, with short delays
    call = await open_call(["Yes."], min_endpointing_delay=0.1)
    closing.append(call)
    voice = call.voice
    await voice.caller_says("hello", duration=0.1)
    await call.until(lambda: len(call.messages("assistant")) == 1, timeout=5.0)
    [seg] = voice.agent_segments
    assert seg.text == "Yes."
    assert seg.end is not None
    assert seg.end - seg.start == approx(speech_seconds("Yes."), 0.05)
    assert call.user() == "listening"


def frame(seconds: float, mark: int = 0, rate: int = 16000) -> rtc.AudioFrame:
    samples = round(seconds * rate)
    pcm = np.zeros(samples, dtype=np.int16)
    pcm[0] = mark
    return rtc.AudioFrame(pcm.tobytes(), rate, 1, samples)


@pytest.mark.looptime
async def test_speaker_plays_queued_segments_in_turn_and_waits_out_a_starved_buffer() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    speaker = FakeSpeaker()
    events: list[tuple[float, str, float]] = []
    speaker.on("playback_started", lambda ev: events.append((loop.time() - t0, "started", 0.0)))
    speaker.on(
        "playback_finished",
        lambda ev: events.append((loop.time() - t0, "finished", ev.playback_position)),
    )
    # a segment whose audio runs dry for 0.3 s, and one queued behind it
    await speaker.capture_frame(frame(0.2))
    await asyncio.sleep(0.5)
    await speaker.capture_frame(frame(0.2))
    speaker.flush()
    await speaker.capture_frame(frame(0.3))
    speaker.flush()
    await speaker.wait_for_playout()
    assert events == [
        (approx(0.0), "started", 0.0),
        (approx(0.7), "finished", approx(0.4)),  # 0.2 s, 0.3 s starved, 0.2 s
        (approx(0.7), "started", 0.0),
        (approx(1.0), "finished", approx(0.3)),
    ]
    first, second = speaker.segments
    assert (first.start - t0, first.duration, first.played) == (approx(0), approx(0.4), 0.4)
    assert (second.start - t0, second.end) == (approx(0.7), approx(t0 + 1.0))
    assert not first.interrupted and not second.interrupted


@pytest.mark.looptime
async def test_speaker_clear_cuts_the_playing_and_the_queued_segments() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tts = FakeTTS(chars_per_second=10.0)
    speaker = FakeSpeaker(tts=tts)
    finished: list[tuple[float, bool, str | None]] = []
    speaker.on(
        "playback_finished",
        lambda ev: finished.append(
            (ev.playback_position, ev.interrupted, ev.synchronized_transcript)
        ),
    )
    pcm = np.frombuffer(tts.audio("one two three four"), dtype=np.int16)
    assert len(pcm) == 1.8 * 16000 and pcm[0] != 0 and not pcm[1:].any()
    await speaker.capture_frame(rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm)))
    speaker.flush()
    await speaker.capture_frame(frame(1.0))
    speaker.flush()
    await asyncio.sleep(1.0)
    speaker.pause()
    await asyncio.sleep(5.0)  # a paused speaker does not advance
    speaker.resume()
    await asyncio.sleep(0.25)
    speaker.clear_buffer()
    await speaker.wait_for_playout()
    # 1.25 s of 1.8 s: 12 of 18 characters, "one two thre" -> the whole words
    assert finished == [(approx(1.25), True, "one two"), (0.0, True, None)]
    [seg] = speaker.segments
    assert seg.interrupted and seg.heard_text == "one two" and seg.text == "one two three four"
    assert [(a - t0, b - t0 if b else b) for a, b in seg.audible] == [
        (approx(0), approx(1.0)),
        (approx(6.0), approx(6.25)),
    ]
    assert loop.time() - t0 == approx(6.25)
