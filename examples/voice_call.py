"""A real voice call, offline: audio in and out, no API keys, no network, no server.

The caller's lines are synthesized by a local TTS and played into a real
`AgentSession` as microphone audio; silero VAD and a local STT turn them into
turns; a scripted LLM decides from what the STT actually heard; the agent's
replies are synthesized and "played" on a recording speaker in simulated time.

What happens:
  1. the caller asks for flights; the search runs in the background and the agent
     acknowledges at once;
  2. the caller keeps talking and asks for a hotel too (a second background task);
  3. the flight search asks the caller a question mid-flight (`ctx.ask`): the question
     is spoken when nobody is talking, the caller answers by voice, and the search
     goes on with the answer;
  4. the caller wants to book: an `AgentTask` collects their email by voice, and the
     flight search finishes while that task has the floor;
  5. the flight result is spoken by the travel agent after the task returns, when
     nobody is speaking;
  6. the hotel result arrives while the caller is mid-sentence and waits until the
     caller has finished and been answered.

While it runs it prints both sides of the call (each line with the call second it
started) and the background calls starting and ending. Outputs in ``demo-output/``:
``call.wav`` (caller left, agent right), ``timeline.png`` and ``transcript.txt`` (the
same lines plus what STT heard and each delivery step). Run with ``make demo`` or
``python examples/voice_call.py [--speed X | --realtime]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import Agent, AgentSession, AgentTask, ConversationItemAddedEvent, llm

from livekit_async_tools import (
    AsyncRunContext,
    AsyncToolOptions,
    AsyncToolRuntime,
    ReplyUpdated,
    TaskEnded,
    TaskStarted,
    attach,
    function_tool,
)
from livekit_async_tools.testing import LLMRequest, Reply, ScriptedLLM, ToolCall
from livekit_async_tools.testing.audio import (
    CallClock,
    CallRecorder,
    RecordingSpeaker,
    ScriptedCaller,
    voice_session_kwargs,
)


class CollectEmail(AgentTask[str]):
    """Collects the caller's email by voice; it has the floor while it runs."""

    def __init__(self) -> None:
        super().__init__(instructions="You are the email collector.")

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="ASK_EMAIL")

    @function_tool
    async def record_email(self, email: str) -> None:
        """Record the caller's email address.

        Args:
            email: The address, as the caller spelled it.
        """
        self.complete(email)


class TravelAgent(Agent):
    def __init__(self, clock: CallClock) -> None:
        super().__init__(instructions="You are Tess, a friendly travel agent.")
        self.clock = clock
        # the demo decides when each search "returns", so every run tells the same story
        self.flights_ready = asyncio.Event()
        self.hotel_ready = asyncio.Event()
        # and whether (and when) the flight search asks the caller about a later flight
        self.ask_about_later: asyncio.Event | None = None
        self.answers: list[str] = []

    @function_tool(timeout=120)
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city (slow: several airlines are asked).

        Args:
            city: Destination city.
        """
        await ctx.update(f"searching flights to {city}")
        backup = ""
        if self.ask_about_later is not None:
            await self.ask_about_later.wait()
            answer = await ctx.ask(QUESTION, timeout=60)
            self.answers.append(answer)
            if any(w in answer for w in ("yes", "fine", "later", "sure", "okay")):
                backup = "; a later flight at 9:15 is held for you as a backup"
        await self.flights_ready.wait()
        return (
            f"3 flights to {city} on Friday; the cheapest is 189 dollars at 7:40 in the "
            f"morning{backup}"
        )

    @function_tool(timeout=120)
    async def search_hotels(self, ctx: AsyncRunContext, area: str) -> str:
        """Search hotels in an area.

        Args:
            area: Where the caller wants to stay.
        """
        await ctx.update(f"checking hotels near the {area}")
        await self.hotel_ready.wait()
        return f"2 hotels with rooms near the {area}; the River Inn is 120 dollars a night"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address for the booking."""
        email = await CollectEmail()
        return f"email recorded: {email}"


QUESTION = "The morning flights are filling up. Would a later flight on Friday work too?"


def decide(req: LLMRequest) -> Reply:
    """A scripted LLM that decides from what STT heard, tolerant of mis-hearing."""
    items = list(req.chat_ctx.items)
    text = req.instructions
    if "ASK_EMAIL" in text:
        return "Sure. What email address should I send the booking to?"
    if "Background results" in text or "cut off while telling" in text:
        wanted = set(re.findall(r"[\w-]+_(?:result|progress_\d+|question_\d+)", text))
        named = [
            it.output
            for it in items
            if isinstance(it, llm.FunctionCallOutput) and it.call_id in wanted
        ]
        if any("needs the caller's answer" in o for o in named):
            return QUESTION
        return f"Good news: I found {'; and '.join(named)}." if named else ""
    last = items[-1] if items else None
    if isinstance(last, llm.FunctionCallOutput):
        if last.name == "answer_question":
            return "Perfect, I'll keep that in mind."
        if "searching flights" in last.output:
            return "I'm searching flights for you now. That takes a moment."
        if "checking hotels" in last.output:
            return "I'm checking hotels as well."
        if last.output.startswith("email recorded"):
            return "Thanks, I have your email."
        return ""
    heard = req.last_user_text.lower()
    if "email collector" in text:
        email = spoken_email(heard)
        if email:
            return ToolCall("record_email", {"email": email})
        return "Sorry, could you spell that email address?"
    question = open_question(items)
    if question and any(w in heard for w in ("yes", "fine", "later", "sure", "okay")):
        return ToolCall("answer_question", {"question_id": question, "answer": heard})
    if "hotel" in heard:
        return ToolCall("search_hotels", {"area": "old town"})
    if "book" in heard:
        return ToolCall("collect_email")
    if any(w in heard for w in ("window", "seat", "sit", "meal", "vegetarian")):
        return "Noted: a window seat and a vegetarian meal."
    if any(w in heard for w in ("flight", "fly", "boston", "friday")):
        return ToolCall("search_flights", {"city": "Boston"})
    return "Okay."


def open_question(items: list[llm.ChatItem]) -> str | None:
    """The id of a question a background call asked that nobody has answered yet."""
    asked = re.findall(
        r"question id ([\w-]+)\)",
        " ".join(it.output for it in items if isinstance(it, llm.FunctionCallOutput)),
    )
    answered = " ".join(
        it.arguments
        for it in items
        if isinstance(it, llm.FunctionCall) and it.name == "answer_question"
    )
    return next((q for q in reversed(asked) if q not in answered), None)


def spoken_email(heard: str) -> str | None:
    """'my email address is john at example dot com' -> 'john@example.com'.

    STT often hears "at" as "an" and "dot" as "but"; the word before it is the name.
    """
    m = re.search(r"(\w+) (?:at|an|and|add|had) (\w+)(?: \w+)? (com|org|net)\b", heard)
    return f"{m[1]}@{m[2]}.{m[3]}" if m else None


class LiveTranscript:
    """Prints the call as it happens, in the transcript's format: the caller's lines
    when they start, the agent's when they have been spoken (with the call second they
    started), background calls starting and ending, and each deferred reply scheduled."""

    def __init__(
        self,
        session: AgentSession[Any],
        runtime: AsyncToolRuntime,
        caller: ScriptedCaller,
        speaker: RecordingSpeaker,
        out: Callable[[str], None],
    ) -> None:
        self._clock = caller.clock
        self._speaker = speaker
        self._out = out
        caller.on_speech_start.append(lambda seg: self.line(seg.start, "caller", seg.text))
        session.on("conversation_item_added", self._on_item)
        runtime.on("task_started", self._on_started)
        runtime.on("task_ended", self._on_ended)
        runtime.on("reply_updated", self._on_reply)

    def line(self, t: float, who: str, text: str) -> None:
        self._out(f"{t:7.2f}s  {who:<14} {text}")

    def note(self, text: str) -> None:
        """A narrator's line: what is going on that nobody says."""
        self.line(self._clock.now(), "", f"({text})")

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage) or item.role != "assistant":
            return
        text = item.text_content or ""
        if not text:
            return
        # the speaker segment this message was spoken in (the latest with its text or none)
        seg = next(
            (s for s in reversed(self._speaker.segments) if s.text in ("", text)),
            None,
        )
        start = seg.start if seg is not None else self._clock.now()
        who = seg.who if seg is not None else "agent"
        cut = "  [cut off]" if item.interrupted else ""
        self.line(start, who, text + cut)

    def _on_started(self, ev: TaskStarted) -> None:
        args = ", ".join(f"{k}={v!r}" for k, v in ev.arguments.items())
        self.line(self._clock.now(), "  [tool]", f"{ev.call_id} {ev.tool_name}({args}) started")

    def _on_ended(self, ev: TaskEnded) -> None:
        self.line(self._clock.now(), "  [tool]", f"{ev.call_id} ended: {ev.status}")

    def _on_reply(self, ev: ReplyUpdated) -> None:
        if ev.status == "scheduled":
            self.line(self._clock.now(), "  [delivery]", f"{','.join(ev.call_ids)} reply scheduled")


@dataclass
class CallResult:
    """What a finished call recorded."""

    recorder: CallRecorder
    caller: ScriptedCaller
    speaker: RecordingSpeaker
    flights_call: str
    hotels_call: str
    email_done_at: float
    answers: list[str]
    wall_seconds: float


async def run_call(
    speed: float = 2.0,
    *,
    out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> CallResult:
    """Run the scripted phone call and return its recording; ``progress`` receives the
    live transcript, a line at a time."""
    wall0 = time.monotonic()
    clock = CallClock(speed=speed)
    caller = ScriptedCaller(clock)
    session: AgentSession[Any] = AgentSession(llm=ScriptedLLM(decide), **voice_session_kwargs())
    speaker = RecordingSpeaker(clock, who=lambda: type(session.current_agent).__name__)
    session.input.audio = caller
    session.output.audio = speaker
    runtime = attach(session, AsyncToolOptions(settle_delay=0.3))
    recorder = CallRecorder(session, runtime, caller, speaker)
    live = LiveTranscript(session, runtime, caller, speaker, progress or (lambda _line: None))
    agent = TravelAgent(clock)
    agent.ask_about_later = asyncio.Event()

    until = recorder.wait_until
    back_at: list[float] = []  # when the travel agent is current again after the task

    def watch_return(_ev: object) -> None:
        if not back_at and task_seen and session.current_agent is agent:
            back_at.append(clock.now())

    task_seen: list[bool] = []
    for name in ("agent_state_changed", "conversation_item_added", "speech_created"):
        session.on(name, watch_return)

    quiet = recorder.quiet

    def delivered(call_id: str, times: int = 1) -> bool:
        return recorder.replies(call_id).count("delivered") >= times

    def started(tool: str) -> str | None:
        return next(
            (
                e.call_ids[0]
                for e in recorder.events
                if e.kind == "task_started" and getattr(e.payload, "tool_name", "") == tool
            ),
            None,
        )

    async with session:
        await session.start(agent)
        clock.start()
        await clock.sleep(0.5)
        await recorder.ask(
            [
                "Hi, can you find me a flight to Boston on Friday?",
                "Sorry, I need a flight to Boston on Friday.",
            ],
            lambda: started("search_flights") is not None,
        )
        flights = started("search_flights") or ""
        await recorder.ask(
            [
                "Could you also find a hotel in the old town?",
                "I said, please find a hotel in the old town.",
            ],
            lambda: started("search_hotels") is not None,
        )
        hotels = started("search_hotels") or ""
        live.note("the flight search needs the caller's answer to go on")
        agent.ask_about_later.set()
        await until(lambda: delivered(flights))  # the question has been asked
        await until(quiet)
        await recorder.ask(
            ["Yes, a later flight is fine too.", "Yes, that is fine."],
            lambda: bool(agent.answers),
        )
        await until(quiet)
        await recorder.ask(
            ["I would like to book that flight.", "Please, I would like to book that flight."],
            lambda: isinstance(session.current_agent, CollectEmail),
        )
        task_seen.append(True)
        live.note("the caller looks for their email address...")
        agent.flights_ready.set()
        await until(lambda: recorder.task_span(flights)[1] is not None)
        live.note("the flight result waits: the email task has the floor")
        await clock.sleep(2.0)
        await recorder.ask(
            [
                "My email address is john at example dot com.",
                "It is john, at, example, dot com.",
            ],
            lambda: session.current_agent is agent,
        )
        email_done_at = back_at[0] if back_at else clock.now()
        await until(lambda: delivered(flights, times=2))
        await until(quiet)
        await clock.sleep(1.0)

        def release_hotels(_seg: object) -> None:
            async def later() -> None:
                await clock.sleep(1.5)
                live.note("the hotel search returns while the caller is talking")
                agent.hotel_ready.set()

            task = asyncio.ensure_future(later())
            tasks.append(task)

        tasks: list[asyncio.Future[None]] = []
        caller.on_speech_start.append(release_hotels)
        await caller.say(
            "One more thing, I would like to sit by the window, and I would like a vegetarian meal."
        )
        caller.on_speech_start.remove(release_hotels)
        await until(lambda: delivered(hotels))
        await until(quiet)
        await clock.sleep(1.0)
        await runtime.settle(timeout=30)
        await asyncio.gather(*tasks)
    await speaker.aclose()

    result = CallResult(
        recorder=recorder,
        caller=caller,
        speaker=speaker,
        flights_call=flights,
        hotels_call=hotels,
        email_done_at=email_done_at,
        answers=agent.answers,
        wall_seconds=time.monotonic() - wall0,
    )
    if out_dir is not None:
        await asyncio.to_thread(write_outputs, recorder, out_dir)
    return result


def write_outputs(recorder: CallRecorder, out_dir: Path) -> None:
    """Write call.wav, timeline.png and transcript.txt into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder.write_wav(str(out_dir / "call.wav"))
    recorder.write_timeline_png(
        str(out_dir / "timeline.png"),
        title=(
            "livekit-async-tools: an offline voice call with two background tool calls "
            "and a question"
        ),
    )
    (out_dir / "transcript.txt").write_text("\n".join(recorder.transcript_lines()) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=2.0, help="call clock speed factor")
    parser.add_argument("--realtime", action="store_true", help="play at real speed")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    args = parser.parse_args()
    speed = 1.0 if args.realtime else args.speed
    logging.basicConfig(level=logging.ERROR)
    print(f"Offline voice call at {speed:g}x (loading local STT/TTS/VAD models)...", flush=True)
    print("Call seconds, who, what (agent lines appear once spoken):\n", flush=True)
    result = asyncio.run(run_call(speed, out_dir=args.out, progress=lambda s: print(s, flush=True)))
    print(
        f"\nWrote {args.out}/call.wav (caller left, agent right), {args.out}/timeline.png and "
        f"{args.out}/transcript.txt (also what STT heard) in {result.wall_seconds:.0f} s."
    )


if __name__ == "__main__":
    main()
