"""End to end: a real offline voice call (audio in and out) through the harness.

Assertions come from the recorded timeline (speech segments in call seconds and
the runtime's events), not from logs. One call is run and checked from several
angles; the models are loaded once per process.
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import pytest

pytest.importorskip("piper", reason="needs the audio extra")
pytest.importorskip("pocketsphinx", reason="needs the audio extra")
pytest.importorskip("livekit.plugins.silero", reason="needs the audio extra")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import voice_call

from livekit_async_tools.testing.audio import Segment

SPEED = 2.0


def _reply_segment(result: voice_call.CallResult, call_id: str) -> Segment:
    scheduled = [
        e.time
        for e in result.recorder.events
        if e.kind == "reply_updated" and call_id in e.call_ids and "scheduled" in e.detail
    ]
    assert scheduled, f"no reply was scheduled for {call_id}"
    return next(s for s in result.speaker.segments if s.start >= scheduled[-1] - 1e-6)


async def test_offline_voice_call(tmp_path: Path) -> None:
    result = await voice_call.run_call(SPEED, out_dir=tmp_path)
    caller, speaker, events = (
        result.caller.segments,
        result.speaker.segments,
        result.recorder.events,
    )

    # every result was spoken, and no reply was cut (not even by the caller's own turn)
    statuses = [(e.call_ids, e.detail) for e in events if e.kind == "reply_updated"]
    assert ((result.flights_call,), "reply delivered") in statuses
    assert ((result.hotels_call,), "reply delivered") in statuses
    assert not [s for s in statuses if "interrupted" in s[1] or "dropped" in s[1]]
    flights = _reply_segment(result, result.flights_call)
    hotels = _reply_segment(result, result.hotels_call)
    assert "3 flights to Boston" in flights.text
    assert "River Inn" in hotels.text
    assert not flights.interrupted and not hotels.interrupted

    # no deferred reply starts while the caller is speaking
    for seg in (flights, hotels):
        talking = [c for c in caller if c.start <= seg.start <= (c.end or c.start)]
        assert not talking, f"reply at {seg.start:.2f}s started while the caller spoke"

    # the flight result: spoken by the travel agent, after the email task returned
    assert flights.who == "TravelAgent"
    assert flights.start >= result.email_done_at
    task_segments = [s for s in speaker if s.who == "CollectEmail"]
    assert task_segments and all((s.end or 0) <= flights.start for s in task_segments)
    flights_end = result.recorder.task_span(result.flights_call)[1]
    assert flights_end is not None and flights_end < result.email_done_at  # ready during the task

    # the flight search asked the caller mid-flight: by its origin, not over the caller,
    # and it went on with the spoken answer
    question = next(s for s in speaker if s.text == voice_call.QUESTION)
    assert question.who == "TravelAgent" and not question.interrupted
    assert not [c for c in caller if c.start <= question.start <= (c.end or c.start)]
    assert len(result.answers) == 1 and question.start < flights.start
    assert "9:15 is held for you" in flights.text

    # the acknowledgement was spoken before the result
    ack = next(s for s in speaker if "searching flights" in s.text)
    assert ack.start < flights.start

    # the hotel result was ready mid-sentence and waited for the caller's turn to be answered
    hotels_ready = result.recorder.task_span(result.hotels_call)[1]
    last_line = caller[-1]
    assert hotels_ready is not None
    assert last_line.start < hotels_ready < (last_line.end or 0)
    answer = next(s for s in speaker if s.text.startswith("Noted"))
    assert (last_line.end or 0) <= answer.start <= hotels.start

    # the outputs a person looks at
    with wave.open(str(tmp_path / "call.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        assert w.getnframes() / 16000 >= (hotels.end or 0)
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    lines = (tmp_path / "transcript.txt").read_text().splitlines()
    assert any("STT heard" in line for line in lines)
