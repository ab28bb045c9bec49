"""Core behaviour in a real text-mode AgentSession with a scripted LLM."""

from __future__ import annotations

import asyncio
import logging

import pytest
from livekit.agents import Agent, llm

from livekit_async_tools import (
    AsyncRunContext,
    AsyncToolOptions,
    AttachError,
    attach,
    function_tool,
)
from livekit_async_tools._compat import VERSION
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import FAST, keyword_brain, spoken, start, until


class Travel(Agent):
    """Has one async tool whose progress and end the test controls."""

    def __init__(self, *, instructions: str = "You are a travel agent.") -> None:
        super().__init__(instructions=instructions)
        self.release = asyncio.Event()
        self.progress = asyncio.Event()
        self.fail_with: BaseException | None = None
        self.cancelled_hook_runs = 0

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str, passengers: int = 1) -> str:
        """Search flights to a city.

        Args:
            city: Destination city.
            passengers: How many travel.
        """
        ctx.on_cancel(self._on_cancel)
        await ctx.update(f"searching flights to {city}")
        await self.progress.wait()
        await ctx.update("half of the airlines checked")
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return f"3 flights to {city} for {passengers}"

    def _on_cancel(self) -> None:
        self.cancelled_hook_runs += 1


def outputs(agent: Agent) -> dict[str, llm.FunctionCallOutput]:
    return {it.call_id: it for it in agent.chat_ctx.items if isinstance(it, llm.FunctionCallOutput)}


RULES = {"flight": ToolCall("search_flights", {"city": "Paris"}), "weather": "It is sunny."}


async def test_first_update_acknowledges_and_result_is_spoken_later() -> None:
    agent = Travel()
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    async with session:
        result = await session.run(user_input="find me a flight")
        result.expect.next_event().is_function_call(name="search_flights")
        ack = result.expect.next_event().is_function_call_output()
        assert "searching flights to Paris" in ack.event().item.output
        assert "background" in ack.event().item.output
        result.expect.next_event().is_message(role="assistant")
        assert [t.state for t in runtime.tasks] == ["running"]

        await session.run(user_input="what's the weather?")
        agent.progress.set()
        agent.release.set()
        await runtime.settle(timeout=5)

        assert spoken(session) == [
            "One moment.",
            "It is sunny.",
            "Result: 3 flights to Paris for 1",
        ]
        outs = outputs(agent)
        assert outs["call_1_result"].output == "3 flights to Paris for 1"
        assert "call_1_progress_2" in outs  # recorded, but superseded in the same batch
        assert rec.names("call_1") == [
            "task_started",
            "task_updated",
            "task_updated",
            "task_ended",
            "reply_skipped",
            "reply_scheduled",
            "reply_delivered",
        ]
        assert rec.of("task_ended")[0].status == "succeeded"
        assert runtime.tasks == ()
        # the deferred reply keeps the agent's persona: generate_reply's instructions
        # are added next to the agent's own (observed on 1.4.6 and 1.8.9 alike)
        delivery = [r for r in session.llm.requests if "Background results" in r.instructions]
        assert "You are a travel agent." in delivery[-1].instructions


async def test_progress_update_is_spoken_through_the_gate() -> None:
    agent = Travel()
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    async with session:
        await session.run(user_input="flight please")
        agent.progress.set()
        await until(session, lambda: any(e.status == "delivered" for e in rec.of("reply_updated")))
        assert (
            spoken(session)[-1]
            == "Result: Progress from search_flights: half of the airlines checked"
        )
        agent.release.set()
        await runtime.settle(timeout=5)
        assert spoken(session)[-1] == "Result: 3 flights to Paris for 1"


async def test_call_returning_within_ack_after_is_an_ordinary_tool() -> None:
    class Quick(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="quick")

        @function_tool
        async def lookup(self, ctx: AsyncRunContext, code: str) -> str:
            """Look up a code."""
            await asyncio.sleep(0.01)
            return f"code {code} is valid"

    session, runtime, rec = await start(
        Quick(), ScriptedLLM([ToolCall("lookup", {"code": "X1"}), "Valid."])
    )
    async with session:
        result = await session.run(user_input="check X1")
        result.expect.next_event().is_function_call(name="lookup")
        result.expect.next_event().is_function_call_output(output="code X1 is valid")
        result.expect.next_event().is_message(role="assistant")
        await runtime.settle(timeout=5)
        assert rec.names() == ["task_started", "task_ended"]
        assert spoken(session) == ["Valid."]


async def test_ack_after_expiry_acknowledges_automatically() -> None:
    class Slow(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="slow")
            self.release = asyncio.Event()

        @function_tool(ack_after=0.05)
        async def report(self, ctx: AsyncRunContext) -> str:
            """Build the report."""
            await self.release.wait()
            return "report ready"

    agent = Slow()
    llm_ = ScriptedLLM(keyword_brain({"report": ToolCall("report")}))
    session, runtime, rec = await start(agent, llm_)
    async with session:
        result = await session.run(user_input="report please")
        result.expect.next_event().is_function_call(name="report")
        out = result.expect.next_event().is_function_call_output().event().item.output
        assert "still working in the background" in out
        assert rec.of("task_updated")[0].message is None
        agent.release.set()
        await runtime.settle(timeout=5)
        assert spoken(session) == ["One moment.", "Result: report ready"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (llm.ToolError("the airline API is down"), "the airline API is down"),
        (RuntimeError("secret stack detail"), "unexpected internal error"),
    ],
)
async def test_tool_raising_before_ack_is_an_inline_error(
    error: Exception, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="broken")

        @function_tool
        async def book(self, ctx: AsyncRunContext, seat: str) -> str:
            """Book a seat."""
            raise error

    session, runtime, rec = await start(
        Broken(), ScriptedLLM([ToolCall("book", {"seat": "1A"}), "Sorry."])
    )
    async with session:
        result = await session.run(user_input="book 1A")
        result.expect.next_event().is_function_call(name="book")
        out = result.expect.next_event().is_function_call_output().event().item
        assert out.is_error
        assert expected in out.output
        assert "secret stack detail" not in out.output
        await runtime.settle(timeout=5)
        ended = rec.of("task_ended")[0]
        assert ended.status == "failed"
        assert rec.of("reply_updated") == []


async def test_tool_raising_after_ack_delivers_an_error_result() -> None:
    agent = Travel()
    agent.fail_with = ValueError("db password=hunter2")
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    async with session:
        await session.run(user_input="flight")
        agent.progress.set()
        agent.release.set()
        await runtime.settle(timeout=5)
        final = outputs(agent)["call_1_result"]
        assert final.is_error
        assert "hunter2" not in final.output
        assert "unexpected internal error" in final.output
        assert rec.of("task_ended")[0].error == "ValueError"
        assert "hunter2" not in spoken(session)[-1]


async def test_update_after_end_and_unserialisable_update_raise_at_call_site() -> None:
    seen: dict[str, BaseException] = {}
    kept: list[AsyncRunContext] = []

    class Odd(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="odd")

        @function_tool
        async def odd(self, ctx: AsyncRunContext) -> str:
            """Odd tool."""
            kept.append(ctx)
            try:
                await ctx.update(object())
            except TypeError as e:
                seen["type"] = e
            return "done"

    session, runtime, _ = await start(Odd(), ScriptedLLM([ToolCall("odd"), "ok"]))
    async with session:
        await session.run(user_input="go")
        await runtime.settle(timeout=5)
        assert "JSON-serialisable" in str(seen["type"])
        with pytest.raises(RuntimeError, match=r"after odd .* ended"):
            await kept[0].update("late")


async def test_invalid_arguments_get_livekits_validation_error() -> None:
    agent = Travel()
    llm_ = ScriptedLLM([ToolCall("search_flights", {"passengers": "many"}), "Which city?"])
    session, runtime, rec = await start(agent, llm_)
    async with session:
        result = await session.run(user_input="flight")
        outs = [e.item for e in result.events if e.type == "function_call_output"]
        assert len(outs) == 1
        assert outs[0].is_error
        if VERSION >= (1, 5, 0):  # 1.4 tells the LLM only "An internal error occurred"
            assert "search_flights" in outs[0].output
        assert spoken(session) == ["Which city?"]
        assert rec.events == []
        assert runtime.tasks == ()


async def test_attach_is_idempotent_and_refuses_other_options() -> None:
    session, runtime, _ = await start(Travel(), ScriptedLLM([]))
    async with session:
        assert attach(session) is runtime
        assert attach(session, FAST) is runtime
        with pytest.raises(AttachError, match="options differ"):
            attach(session, AsyncToolOptions(settle_delay=2.0))


async def test_result_waits_while_another_blocking_tool_runs() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    class Two(Travel):
        @function_tool
        async def slow_lookup(self) -> str:
            """An ordinary (blocking) tool."""
            started.set()
            await gate.wait()
            return "lookup finished"

    agent = Two()
    rules = {**RULES, "lookup": ToolCall("slow_lookup")}
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(rules)))
    async with session:
        await session.run(user_input="flight")
        handle = session.generate_reply(user_input="do the lookup")
        await started.wait()
        agent.progress.set()
        agent.release.set()
        await until(session, lambda: bool(rec.of("task_ended")))
        await asyncio.sleep(0.3)  # several settle windows pass during the dispatch
        assert [e.status for e in rec.of("reply_updated")] == ["skipped"] or not [
            e for e in rec.of("reply_updated") if e.status == "scheduled"
        ]
        gate.set()
        await handle
        await runtime.settle(timeout=5)
        assert spoken(session) == [
            "One moment.",
            "Done: lookup finished",
            "Result: 3 flights to Paris for 1",
        ]


async def test_twenty_concurrent_tasks_are_all_recorded_and_spoken() -> None:
    release = asyncio.Event()

    class Many(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="many")

        @function_tool
        async def fetch(self, ctx: AsyncRunContext, n: int) -> str:
            """Fetch item n."""
            await ctx.update(f"fetching {n}")
            await release.wait()
            await asyncio.sleep(0.001 * n)
            return f"item {n}"

    calls = [ToolCall("fetch", {"n": n}, call_id=f"c{n}") for n in range(20)]
    llm_ = ScriptedLLM(keyword_brain({"fetch": calls}))
    session, runtime, rec = await start(Many(), llm_)
    async with session:
        await session.run(user_input="fetch everything")
        assert len(runtime.tasks) == 20
        release.set()
        await runtime.settle(timeout=10)
        delivered = {
            cid for e in rec.of("reply_updated") if e.status == "delivered" for cid in e.call_ids
        }
        assert delivered == {f"c{n}" for n in range(20)}
        finals = [o for cid, o in outputs(session.current_agent).items() if cid.endswith("_result")]
        assert len(finals) == 20
        said = " ".join(spoken(session))
        assert all(f"item {n}" in said for n in range(20))


async def test_session_close_cancels_tasks_and_drops_pending_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = Travel()
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async with session:
            await session.run(user_input="flight")
            assert len(runtime.tasks) == 1
        await runtime.settle(timeout=5)
    assert runtime.tasks == ()
    assert runtime.closed
    assert agent.cancelled_hook_runs == 1
    assert rec.of("task_ended")[0].status == "cancelled"
    assert "never retrieved" not in caplog.text


def test_attach_works_before_the_event_loop_runs() -> None:
    from livekit.agents import AgentSession

    session: AgentSession = AgentSession(llm=ScriptedLLM([]))
    runtime = attach(session, FAST)
    assert runtime.tasks == ()
    assert attach(session) is runtime
