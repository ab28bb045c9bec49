"""examples/realtime_agent.py in CI: its real agent and runtime wiring in a real text-mode
AgentSession, with the strict fake realtime model (OpenAI-like preset) standing in for
OpenAI's Realtime API, and a scripted caller."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from livekit.agents import AgentSession, __version__, llm

from livekit_async_tools.testing import Reply, ToolCall

from .conftest import Recorder, spoken, until
from .support import examples
from .support.fake_realtime import OPENAI_LIKE, FakeRealtimeModel, RealtimeRequest

pytest.importorskip("livekit.plugins.openai", reason="needs the examples extra")
pytestmark = pytest.mark.skipif(
    tuple(int(p) for p in __version__.split(".")[:2]) < (1, 8),
    reason="the fake realtime model implements livekit-agents 1.8's RealtimeSession interface",
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "realtime_agent.py"


def realtime_brain(req: RealtimeRequest) -> Reply:
    """The scripted model: searches when asked, acknowledges, announces what the
    package's instructions name by call id, and chats otherwise."""
    items = list(req.chat_ctx.items)
    if "Background results" in req.instructions or "cut off while" in req.instructions:
        outputs = {
            it.call_id: it.output
            for it in items
            if isinstance(it, llm.FunctionCallOutput) and it.call_id in req.instructions
        }
        # "call_1" is in "call_1_<suffix>": the original call's ack is not named
        named = [
            out
            for cid, out in outputs.items()
            if not any(other.startswith(cid + "_") for other in outputs)
        ]
        return "Good news: " + "; ".join(named) if named else ""
    last = items[-1] if items else None
    if isinstance(last, llm.FunctionCallOutput):
        return "I'm on it."
    if "flight" in req.last_user_text.lower():
        return ToolCall("search_flights", {"origin": "Oslo", "destination": "Rome"})
    return "Happy to help."


def load_example(monkeypatch: pytest.MonkeyPatch, time_scale: float) -> ModuleType:
    """A fresh copy of the example, built with ``REALTIME_AGENT_TIME_SCALE``."""
    return examples.load_example(monkeypatch, EXAMPLE, "REALTIME_AGENT_TIME_SCALE", time_scale)


def test_the_example_starts_its_cli() -> None:
    """The plugins register at import, on the main thread: the CLI starts."""
    examples.assert_cli_starts(EXAMPLE)


def test_the_example_uses_openai_realtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    ra = load_example(monkeypatch, time_scale=1)
    model = ra.build_model()
    assert isinstance(model, llm.RealtimeModel)
    assert not model.capabilities.auto_tool_reply_generation  # what OPENAI_LIKE mimics


async def test_realtime_agent_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    ra = load_example(monkeypatch, time_scale=0.01)

    class Airline(ra.Airline):  # type: ignore[misc, name-defined]
        """The second search stage ends when the test says so."""

        def __init__(self) -> None:
            self.stages = 0
            self.finish = asyncio.Event()

        async def wait(self, span: tuple[float, float]) -> None:
            self.stages += 1
            if self.stages == 2:
                await self.finish.wait()

    airline = Airline()
    monkeypatch.setattr(ra, "AIRLINE", airline)
    model = FakeRealtimeModel(realtime_brain, profile=OPENAI_LIKE)
    session: AgentSession[Any] = AgentSession(llm=model)
    runtime = ra.attach_runtime(session)
    rec = Recorder(runtime)
    async with session:
        await session.start(ra.TravelAgent())
        await session.run(user_input="I need a flight from Oslo to Rome")
        assert spoken(session) == ["I'm on it."]
        await session.run(user_input="Thanks, is it warm in Rome?")
        assert spoken(session)[-1] == "Happy to help."
        airline.finish.set()
        await runtime.settle(timeout=10)
        await until(session, lambda: any("189 dollars" in s for s in spoken(session)))
    said = [s for s in spoken(session) if "189 dollars" in s]
    assert said == ["Good news: 3 flights from Oslo to Rome; the cheapest is 189 dollars"]
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    sess = model.sessions[0]
    assert sess.rejected_items == [] and sess.refusals == []
    telling = [r for r in model.replies if "189 dollars" in r.text]
    assert [r.trigger for r in telling] == ["generate_reply"]
    assert "Background results" in telling[0].instructions
