"""Run one fuzz `Plan` in a real `AgentSession` (text mode, or voice through the
project's `FakeVoice`) on a virtual clock.

``run_plan(plan)`` builds agents whose async tools carry the plan's options, a
`ScriptedLLM` whose decisions follow the plan (user turns name the scripted
response to give), drives the plan's timed app steps, then settles, closes and
hands the `Oracle`'s violations back in an `Outcome`. Everything runs in a fresh
`looptime` event loop (virtual time: a 12 s tool costs no wall time), so a plan
replays identically.

Reproduce a reported plan::

    from tests.fuzz.harness import run_plan
    from tests.fuzz.plan import *
    print(run_plan(Plan(...)).report())
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import random
import re
import time
import types
import warnings
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import looptime
from livekit.agents import Agent, AgentSession, AgentTask, llm
from livekit.agents.voice.io import TextOutput

from livekit_async_tools import (
    AskTimeout,
    AsyncRunContext,
    AsyncToolOptions,
    QuestionNotAsked,
    attach,
    function_tool,
)
from livekit_async_tools._compat import SILENT_AGENT_CLOSE
from livekit_async_tools.testing import FakeVoice, LLMRequest, ScriptedLLM, ToolCall
from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

from .oracle import HOLD_MARKER, TERMINAL, CallRec, Oracle, Violation, is_closed
from .plan import Plan, ToolDef

__all__ = ["Outcome", "run_plan"]

SETTLE_TIMEOUT = 120.0
"""Virtual seconds ``runtime.settle`` gets once the plan's steps are done."""
EPOCH = 1_700_000_000.0
"""``time.time()`` during a run: this plus the virtual clock."""
RUN_TIMEOUT = 1200.0
"""Virtual seconds a whole run may take (a hang past this is reported)."""
TRANSCRIPTION_ALLOWANCE = 1.0
"""Seconds after livekit's maximum endpointing delay a caller's turn may still be
committed (DESIGN section 4: the bounded wait for a caller turn)."""
DELIVERY_MARKERS = ("Background results", "cut off while telling", "FU#")
HOLD_LINE = "Still on it, thanks for holding."
"""What the scripted LLM says for a holding line (recognisable in the transcript)."""
NAMED_ITEMS = re.compile(r"\b(c\d+)_(question|overdue)_(\d+)\b")
"""Question and overdue items a deferred reply's instructions name."""


def secrets_of(plan: Plan) -> tuple[str, str]:
    """The sensitive argument values a plan's calls pass (``api_key``, ``card_number``)."""
    return f"sk-SECRET-{plan.seed}x", f"4111-SECRET-{plan.seed}x"


# -- agents ------------------------------------------------------------------------------


class FuzzAgent(Agent):
    """An agent of the plan: async tools ``t<i>`` plus ordinary tools."""

    def __init__(self, harness: Harness, index: int) -> None:
        super().__init__(instructions=f"You are agent A{index}.")
        self.harness = harness
        self.index = index

    @function_tool
    async def wait_a_bit(self, seconds: float) -> str:
        """Wait a while (an ordinary, blocking tool)."""
        await asyncio.sleep(seconds)
        return f"waited {seconds} seconds"

    @function_tool
    async def transfer(self, to: int) -> object:
        """Transfer the caller to another agent."""
        return self.harness.transfer_target(self, to)

    @function_tool
    async def collect_info(self) -> str:
        """Collect details in a sub-task."""
        result = await self.harness.new_task()
        return f"collected {result}"


class FuzzTask(AgentTask[str]):
    """An `AgentTask` started by ``collect_info``; it has the same async tools."""

    def __init__(self, harness: Harness, index: int) -> None:
        super().__init__(instructions=f"You are task T{index}.")
        self.harness = harness
        self.index = index

    async def on_enter(self) -> None:
        self.harness.reply(instructions="TASK_ENTER")

    @function_tool
    async def wait_a_bit(self, seconds: float) -> str:
        """Wait a while (an ordinary, blocking tool)."""
        await asyncio.sleep(seconds)
        return f"waited {seconds} seconds"

    @function_tool
    async def finish_task(self) -> str:
        """Finish this task."""
        if not self.done():
            self.complete(f"T{self.index}")
        return "finished"


class ReturnedAgent(FuzzAgent):
    """An agent a call's result hands the session to (job end ``agent``/``agent_output``);
    it greets when it takes over."""

    def __init__(
        self, harness: Harness, index: int, call_id: str, chat_ctx: llm.ChatContext | None
    ) -> None:
        Agent.__init__(self, instructions=f"You are desk R{index}.", chat_ctx=chat_ctx)
        self.harness = harness
        self.index = index
        self.call_id = call_id

    async def on_enter(self) -> None:
        self.harness.entered(self)
        self.harness.reply(instructions="DESK_ENTER")


@functools.lru_cache(maxsize=4096)
def _async_tool(index: int, td: ToolDef) -> Any:
    async def tool(
        self, ctx: AsyncRunContext, job: int, api_key: str = "", card_number: str = ""
    ) -> object:
        return await self.harness.run_job(ctx, index, job)

    tool.__name__ = tool.__qualname__ = f"t{index}"
    tool.__doc__ = f"Background tool number {index}."
    return function_tool(
        tool,
        name=f"t{index}",
        ack_after=td.ack_after,
        cancellable=td.cancellable,
        on_duplicate=td.on_duplicate,  # type: ignore[arg-type]
        duplicate_scope=td.duplicate_scope,  # type: ignore[arg-type]
        timeout=td.timeout,
        on_handoff=td.on_handoff,  # type: ignore[arg-type]
        result_delivery=td.result_delivery,  # type: ignore[arg-type]
        on_timeout=td.on_timeout,  # type: ignore[arg-type]
    )


@functools.lru_cache(maxsize=512)
def agent_classes(
    tools: tuple[ToolDef, ...],
) -> tuple[type[FuzzAgent], type[FuzzTask], type[ReturnedAgent]]:
    """Agent, task and returned-agent classes carrying async tools with these options
    (cached)."""
    attrs = {f"t{i}": _async_tool(i, td) for i, td in enumerate(tools)}
    return (
        type("PlanAgent", (FuzzAgent,), attrs),
        type("PlanTask", (FuzzTask,), attrs),
        type("PlanReturned", (ReturnedAgent,), attrs),
    )


class _SlowText(TextOutput):
    """A transcript sink that takes ``word_time`` virtual seconds per word, so the
    agent is ``speaking`` for a while and can be cut."""

    def __init__(self, word_time: float) -> None:
        super().__init__(label="fuzz-speaker", next_in_chain=None)
        self._word_time = word_time

    async def capture_text(self, text: str) -> None:
        words = len(text.split())
        if words:
            await asyncio.sleep(words * self._word_time)

    def flush(self) -> None:
        pass


# -- the run -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run found."""

    plan: Plan
    violations: list[Violation] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def invariants(self) -> list[str]:
        return sorted({v.invariant for v in self.violations})

    def report(self, tail: int = 60) -> str:
        lines = [f"{len(self.violations)} violation(s):"]
        lines += [f"  {v}" for v in self.violations]
        lines.append(f"plan = {self.plan!r}")
        log = self.log if len(self.log) <= tail else ["  ...", *self.log[-tail:]]
        lines.append("events (virtual seconds):")
        lines += [f"  {line}" for line in log]
        return "\n".join(lines)


class _Records(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


class Harness:
    """One run of one plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rnd = random.Random(plan.seed)
        self.api_key, self.card = secrets_of(plan)
        self.agents: list[Agent] = []
        self.emitted: dict[tuple[int, int], str] = {}
        self.call_jobs: dict[str, int] = {}
        self.ids = 0
        self.background: set[asyncio.Task[Any]] = set()
        self.run_task: asyncio.Task[Any] | None = None
        self.refused_runs = [0]  # shared with the loop's error handler (outlives us)
        self.switch_asked_at = -1.0
        self.closing = False  # inside session.aclose() (livekit's own close)
        self.last_handoff_at = 0.0
        self.expect_user_turn = False
        self.voice: FakeVoice | None = None
        self.triggers: list[tuple[str, float, tuple[Any, ...]]] = []
        self.firing = 0  # triggered steps scheduled or running
        self.oracle: Oracle
        self.session: AgentSession[Any]
        self.agent_cls, self.task_cls, self.returned_cls = agent_classes(plan.tools)
        self.ask_counts: dict[str, int] = {}
        self.returned: dict[str, ReturnedAgent] = {}
        self.app_switching: set[int] = set()  # returned agents the app itself hands to
        self.named: set[str] = set()  # question / overdue items some reply named
        self.answers = 0
        self.settle_answered: list[str] = []
        self.last_takeover_at = -1.0

    # -- helpers ------------------------------------------------------------------------

    def note(self, text: str) -> None:
        if hasattr(self, "oracle"):
            self.oracle.note(text)

    def make_follow_up(self, make: Callable[[], str]) -> str:
        """Call ``follow_up()`` (``make``) so the oracle tells its events from a holding
        line's; the caller passes the returned id to ``oracle.add_follow_up``."""
        self.oracle.making_follow_up += 1
        try:
            fid = make()
        except BaseException:
            self.oracle.making_follow_up -= 1
            self.oracle.adopt_lines()
            raise
        self.oracle.making_follow_up -= 1
        return fid

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"fuzz:{name}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def current(self) -> Agent | None:
        return self.oracle.current()

    def reply(self, **kwargs: Any) -> Any:
        try:
            return self.session.generate_reply(**kwargs)
        except RuntimeError as e:
            self.note(f"generate_reply refused: {e}")
            return None

    def tool_index(self, tool_name: str) -> int | None:
        if tool_name.startswith("t") and tool_name[1:].isdigit():
            return int(tool_name[1:])
        return None

    def policy_of(self, tool_name: str) -> str:
        i = self.tool_index(tool_name)
        return self.plan.policy(i) if i is not None else self.plan.on_handoff

    def result_delivery(self, tool_name: str) -> str:
        i = self.tool_index(tool_name)
        return self.plan.tools[i].result_delivery if i is not None else "when_idle"

    def overdue_timeout(self, tool_name: str) -> float | None:
        i = self.tool_index(tool_name)
        if i is None or self.plan.tools[i].on_timeout != "ask":
            return None
        return self.plan.tools[i].timeout

    def job_end(self, call_id: str) -> str | None:
        """``agent`` / ``agent_output`` if the call's job hands off, else None."""
        job = self.call_jobs.get(call_id)
        if job is None:
            return None
        end = self.plan.jobs[job].end
        return end if end in ("agent", "agent_output") else None

    def none_result(self, call_id: str) -> bool:
        job = self.call_jobs.get(call_id)
        return job is not None and self.plan.jobs[job].end == "none"

    # -- what the tools do ----------------------------------------------------------------

    def transfer_target(self, agent: Agent, to: int) -> object:
        target = self.agents[to % len(self.agents)]
        if target is agent:
            return "you are already talking to that agent"
        self.note(f"transfer {self.oracle.name(agent)} -> {self.oracle.name(target)}")
        self.switch_asked_at = asyncio.get_running_loop().time()
        return target

    def new_task(self) -> FuzzTask:
        task = self.task_cls(self, len(self.agents))
        self.oracle.agent_names[id(task)] = f"T{len(self.agents)}"
        self.agents.append(task)
        self.note(f"AgentTask {self.oracle.name(task)} starts")
        return task

    async def run_job(self, ctx: AsyncRunContext[Any], tool: int, job_index: int) -> str | None:
        job_index %= len(self.plan.jobs)
        job = self.plan.jobs[job_index]
        cid = ctx.call_id
        self.call_jobs[cid] = job_index
        for kind, seconds in job.hooks:
            ctx.on_cancel(self._hook(cid, kind, seconds))
            self.oracle.hook_registered(cid, seconds if kind == "async" else 0.0)
        for n, op in enumerate(job.ops):
            if op[0] == "sleep":
                await asyncio.sleep(op[1])
            elif op[0] == "update":
                await ctx.update(f"progress {n} of {cid}", delivery=op[1])
            elif op[0] == "follow_up":
                fid = self.make_follow_up(
                    functools.partial(ctx.follow_up, f"FU# ask about {cid}", mode=op[1])
                )
                self.oracle.add_follow_up(fid, ctx.origin, self.plan.policy(tool))
            elif op[0] == "steer":
                ctx.steer(f"note about {cid}")
            elif op[0] == "ask":
                await self._ask(ctx, op[1])
        if job.end in ("agent", "agent_output"):
            new = self.returned_agent(cid, ctx.origin)
            return new if job.end == "agent" else (new, f"result of {cid}")
        if job.end == "none":
            return None
        if job.end == "tool_error":
            raise llm.ToolError(f"{cid} could not do it")
        if job.end == "error":
            raise RuntimeError(f"{cid} broke")
        return f"result of {cid}"

    async def _ask(self, ctx: AsyncRunContext[Any], timeout: float | None) -> None:
        cid = ctx.call_id
        n = self.ask_counts[cid] = self.ask_counts.get(cid, 0) + 1
        qid = f"{cid}_question_{n}"
        # ask() refuses a call already being stopped (e.g. once an earlier question
        # could not be asked and the tool went on)
        live = any(t.call_id == cid and t.state != "stopping" for t in self.runtime.tasks)
        queued = self.plan.control_tools != "never" and not self.oracle.closed and live
        self.oracle.ask_started(cid, qid, timeout, queued)
        try:
            answer = await ctx.ask(f"Q{n} of {cid}: shall I go on?", timeout=timeout)
        except AskTimeout as e:
            self.oracle.ask_ended(qid, "timeout", e.question_id)
        except asyncio.CancelledError:
            self.oracle.ask_ended(qid, "cancelled", None)
            raise
        except QuestionNotAsked as e:  # its reply never said it, or its origin closed
            self.oracle.ask_ended(qid, "not_asked", e.reason)
        except RuntimeError as e:
            self.oracle.ask_ended(qid, "refused", str(e))
        else:
            self.oracle.ask_ended(qid, "answered", answer)

    def returned_agent(self, call_id: str, origin: Agent) -> ReturnedAgent:
        index = len(self.agents)
        chat_ctx = origin.chat_ctx.copy() if self.rnd.random() < 0.5 else None
        agent = self.returned_cls(self, index, call_id, chat_ctx)
        self.oracle.agent_names[id(agent)] = f"R{index}"
        self.agents.append(agent)
        self.returned[call_id] = agent
        self.note(f"{call_id} returns agent R{index}")
        return agent

    def entered(self, agent: ReturnedAgent) -> None:
        if id(agent) in self.app_switching:
            self.app_switching.discard(id(agent))
            self.note(f"{self.oracle.name(agent)} current again (the app handed back)")
            return
        self.last_takeover_at = asyncio.get_running_loop().time()
        self.oracle.handoff_entered(agent.call_id, agent)

    def _hook(self, cid: str, kind: str, seconds: float) -> Any:
        if kind == "sync":

            def hook() -> None:
                self.oracle.hook_started(cid)
                self.oracle.hook_done(cid)

            return hook

        async def ahook() -> None:
            self.oracle.hook_started(cid)
            await asyncio.sleep(seconds)
            self.oracle.hook_done(cid)

        return ahook

    # -- the scripted LLM -------------------------------------------------------------------

    def decide(self, req: LLMRequest) -> Any:
        tail: list[str] = []
        last: llm.ChatItem | None = None
        for it in reversed(req.chat_ctx.items):
            if isinstance(it, llm.ChatMessage) and it.role in ("system", "developer"):
                tail.append(it.text_content or "")
                continue
            last = it
            break
        text = "\n".join(tail)
        everything = req.instructions  # livekit < 1.5 puts a reply's instructions first
        if any(m in everything for m in DELIVERY_MARKERS):
            self.named_items(everything)
        if HOLD_MARKER in everything:  # a holding line (with whatever it was batched with)
            self.oracle.line_requested()
            if self.rnd.random() < self.plan.empty_rate:
                return ""
            if any(m in text for m in DELIVERY_MARKERS[:2]):
                return f"{HOLD_LINE} Result: " + " ".join(["news"] * self.rnd.randint(2, 9))
            return HOLD_LINE
        if any(m in text for m in DELIVERY_MARKERS):
            if self.rnd.random() < self.plan.empty_rate:
                return ""
            return "Result: " + " ".join(["news"] * self.rnd.randint(2, 9))
        if isinstance(last, llm.FunctionCallOutput):
            return "Noted, " + " ".join(["okay"] * self.rnd.randint(1, 5))
        if "TASK_ENTER" in text:
            return "Task here, what else?"
        if "DESK_ENTER" in text:
            return "New desk here, how can I help?"
        if isinstance(last, llm.ChatMessage) and last.role == "user":
            said = (last.text_content or "").strip()
            if said.startswith("u") and said[1:].isdigit():
                return self.respond(int(said[1:]))
            if said[:2] in ("a:", "x:", "k:"):
                return [self.decision(said[0], said[2:])]
        return ""

    def fresh_id(self) -> str:
        self.ids += 1
        return f"c{self.ids}"

    def decision(self, kind: str, target: str, seconds: float | None = None) -> ToolCall:
        """The caller's answer to a question (``a``), or their decision about an overdue
        call: keep waiting (``x``), or cancel it (``k``)."""
        fc = self.fresh_id()
        if kind == "a":
            self.answers += 1
            answer = f"answer {self.answers} to {target}"
            self.oracle.passed("answer_question", target, answer, fc)
            return ToolCall(
                "answer_question", {"question_id": target, "answer": answer}, call_id=fc
            )
        if kind == "x":
            secs = self.plan.extend_seconds if seconds is None else seconds
            self.oracle.passed("extend_task", target, secs, fc)
            return ToolCall("extend_task", {"call_id": target, "seconds": secs}, call_id=fc)
        self.oracle.passed("cancel_task", target, None, fc)
        return ToolCall("cancel_task", {"call_id": target}, call_id=fc)

    def named_items(self, text: str) -> None:
        """A deferred reply puts questions (or overdue calls) to the caller: the caller
        answers (decides) later, as the plan says."""
        plan = self.plan
        for cid, kind, n in NAMED_ITEMS.findall(text):
            key = f"{cid}_{kind}_{n}"
            if kind == "question":
                self.oracle.question_spoken(key)
            if key in self.named:
                continue
            self.named.add(key)
            if kind == "question" and plan.answer_delay is not None:
                self.later(plan.answer_delay, f"a:{key}")
            elif kind == "overdue" and plan.overdue_choice != "wait":
                choice = plan.overdue_choice
                if choice == "mixed":
                    choice = self.rnd.choice(("extend", "cancel"))
                self.later(plan.overdue_delay, f"{'x' if choice == 'extend' else 'k'}:{cid}")

    def later(self, delay: float, text: str) -> None:
        """The caller says ``text`` in ``delay`` seconds."""
        if self.oracle.closed:
            return
        self.firing += 1
        asyncio.get_running_loop().call_later(delay, self._fire, "caller", ("reply_text", text))

    def new_id(self, action: int, part: int) -> str:
        self.ids += 1
        cid = f"c{self.ids}"
        self.emitted[(action, part)] = cid
        return cid

    def respond(self, k: int) -> list[str | ToolCall]:
        plan = self.plan
        k %= len(plan.actions)
        out: list[str | ToolCall] = []
        text: list[str] = []
        switched = False
        for p, part in enumerate(plan.actions[k]):
            kind = part[0]
            if kind == "text":
                text.append(f"Sure, working on {k}.")
            elif kind == "tool":
                _, ti, job, secret, confirm = part
                ti %= len(plan.tools)
                args: dict[str, object] = {"job": job % len(plan.jobs)}
                if secret:
                    args["api_key"] = self.api_key
                    args["card_number"] = self.card
                    self.oracle.secrets.update((self.api_key, self.card))
                if confirm and plan.tools[ti].on_duplicate == "confirm":
                    args["confirm_duplicate"] = True
                out.append(ToolCall(f"t{ti}", args, call_id=self.new_id(k, p)))
            elif kind == "block":
                out.append(ToolCall("wait_a_bit", {"seconds": part[1]}, call_id=self.new_id(k, p)))
            elif kind == "cancel":
                target = self.emitted.get((part[1] % len(plan.actions), part[2]), "c0")
                fc = self.new_id(k, p)
                self.oracle.passed("cancel_task", target, None, fc)
                out.append(ToolCall("cancel_task", {"call_id": target}, call_id=fc))
            elif kind == "list":
                out.append(ToolCall("get_running_tasks", {}, call_id=self.new_id(k, p)))
            elif kind in ("transfer", "task") and not switched:
                switched = True
                if kind == "transfer":
                    out.append(ToolCall("transfer", {"to": part[1]}, call_id=self.new_id(k, p)))
                else:
                    out.append(ToolCall("collect_info", {}, call_id=self.new_id(k, p)))
            elif kind == "finish":
                out.append(ToolCall("finish_task", {}, call_id=self.new_id(k, p)))
            elif kind == "answer":
                ask = (
                    self.oracle.open_question()
                    if part[1] == "open"
                    else self.oracle.closed_question()
                    if part[1] == "stale"
                    else None
                )
                out.append(self.decision("a", ask.question_id if ask else "c0_question_9"))
            elif kind == "extend":
                target = self.emitted.get((part[1] % len(plan.actions), part[2]), "c0")
                out.append(self.decision("x", target, part[3]))
        return [*text, *out]

    # -- the app's steps ------------------------------------------------------------------------

    def user_turn(self, text: str, *, run: bool) -> None:
        self.expect_user_turn = True
        try:
            if run and (self.run_task is None or self.run_task.done()):
                result = self.session.run(user_input=text)
                self.run_task = asyncio.get_running_loop().create_task(
                    self._await_run(result), name="fuzz:run"
                )
                self.background.add(self.run_task)
                self.run_task.add_done_callback(self.background.discard)
                self.oracle.caller_turn()
            elif self.reply(user_input=text) is not None:
                self.oracle.caller_turn()
        except RuntimeError as e:
            self.note(f"user turn refused: {e}")
            if run:
                # livekit has already made the run's RunResult, which it fails at close
                # and nobody can await (it is not returned): not the package's
                self.refused_runs[0] += 1
                self.oracle.livekit_stuck = True  # that RunResult also keeps the session
        finally:
            self.expect_user_turn = False

    async def _await_run(self, result: Any) -> None:
        try:
            await result
        except Exception as e:
            self.note(f"session.run ended with {type(e).__name__}: {e}")

    async def _await_quietly(self, fut: Any, what: str) -> None:
        try:
            await fut
        except Exception as e:
            self.note(f"{what}: {type(e).__name__}: {e}")

    async def _cancel(self, call_id: str) -> None:
        try:
            ok = await self.runtime.cancel(call_id)
            self.note(f"app cancel {call_id} -> {ok}")
        except llm.ToolError as e:
            self.note(f"app cancel {call_id} refused: {e}")

    async def step(self, step: tuple[Any, ...]) -> None:
        plan = self.plan
        _at, kind, *args = step
        self.note(f"STEP {kind} {args}")
        session = self.session
        if kind == "on":
            self.triggers.append((args[0], args[1], args[2]))
        elif kind in ("user", "run", "barge"):
            if kind == "barge":
                try:
                    self.spawn(self._await_quietly(session.interrupt(), "interrupt"), "barge")
                except RuntimeError as e:
                    self.note(f"interrupt refused: {e}")
            self.user_turn(f"u{args[0] % len(plan.actions)}", run=kind == "run")
        elif kind == "cancel":
            cid = self.emitted.get((args[0] % len(plan.actions), args[1]))
            if cid is not None:
                self.spawn(self._cancel(cid), "cancel")
        elif kind == "steer":
            try:
                self.runtime.steer(f"app note {_at}")
            except RuntimeError as e:
                self.note(f"steer refused: {e}")
        elif kind == "follow_up":
            origin = self.current()
            try:
                fid = self.make_follow_up(
                    functools.partial(
                        self.runtime.follow_up, f"FU# app follow-up at {_at}", mode=args[0]
                    )
                )
            except RuntimeError as e:
                self.note(f"follow_up refused: {e}")
            else:
                self.oracle.add_follow_up(fid, origin, plan.on_handoff)
        elif kind == "update_agent":
            target = self.agents[args[0] % plan.n_agents]
            current = self.current()
            if isinstance(current, FuzzTask) or target is current:
                self.note("update_agent skipped (a task is current, or the target is)")
                return
            self.note(f"update_agent -> {self.oracle.name(target)}")
            self.switch_asked_at = asyncio.get_running_loop().time()
            session.update_agent(target)
        elif kind == "complete_task":
            self.complete_task()
        elif kind == "close":
            self.closing = True
            await session.aclose()
            self.closing = False
        elif kind == "say":
            self.spawn(self._caller(f"u{args[0] % len(plan.actions)}", args[1]), "say")
        elif kind == "noise":
            self.spawn(self._caller("", args[0]), "noise")
        elif kind == "reply_text":  # the caller answers a question or decides
            self.user_turn(args[0], run=False)

    async def _caller(self, text: str, seconds: float) -> None:
        voice = self.voice
        if voice is None or voice.caller_speaking or self.oracle.closed:
            self.note("caller step skipped (no voice, already speaking, or closed)")
            return
        voice.caller_starts()
        await asyncio.sleep(seconds)
        if voice.caller_speaking and not self.oracle.closed:
            voice.caller_stops(text)
            if text:
                self.oracle.voice_turn(text, voice.max_endpointing_delay + TRANSCRIPTION_ALLOWANCE)

    def on_event(self, name: str) -> None:
        """An engine moment: fire the triggers armed for it."""
        fired = [t for t in self.triggers if t[0] == name]
        if not fired or self.oracle.closed:
            return
        self.triggers = [t for t in self.triggers if t[0] != name]
        loop = asyncio.get_running_loop()
        for _name, delay, sub in fired:
            self.firing += 1
            loop.call_later(delay, self._fire, name, sub)

    def _fire(self, name: str, sub: tuple[Any, ...]) -> None:
        if self.oracle.closed:
            self.firing -= 1
            return
        self.note(f"on {name}:")
        self.spawn(self._fired(sub), f"on-{name}")

    async def _fired(self, sub: tuple[Any, ...]) -> None:
        try:
            await self.step((0.0, *sub))
        finally:
            self.firing -= 1

    def complete_task(self) -> bool:
        current = self.current()
        if isinstance(current, FuzzTask) and not current.done():
            self.note(f"app completes {self.oracle.name(current)}")
            current.complete("app")
            return True
        return False

    # -- settling ---------------------------------------------------------------------------

    def answer_open(self) -> bool:
        """The caller answers the question they were asked last while settling (a call
        waiting for an answer nobody gives would never settle); up to 3 times, if an
        answer was cut off before the LLM's tool call ran."""
        ask = self.oracle.open_question()
        if ask is None or self.settle_answered.count(ask.question_id) >= 3:
            return False
        tried = [
            p
            for p in self.oracle.passes
            if p.tool == "answer_question" and p.target == ask.question_id
        ]
        now = asyncio.get_running_loop().time()
        if any(p.ok is None and now - p.decided_at < 5.0 for p in tried) or any(
            p.ok for p in tried
        ):
            return False  # the last answer is on its way
        # again if the caller's answer was cut off before the LLM's tool call ran
        self.settle_answered.append(ask.question_id)
        self.note(f"settling: the caller answers {ask.question_id}")
        self.user_turn(f"a:{ask.question_id}", run=False)
        return True

    def _handoff_due(self) -> list[str]:
        """Calls whose origin delivered their handing-off result, with no takeover since
        (by any agent: only the first handing-off result of a reply hands off)."""
        due = []
        for cid in self.returned:
            rec = self.oracle.calls.get(cid)
            if rec is None or rec.status != "succeeded" or rec.entered or not rec.acked:
                continue
            if not rec.deliveries or not rec.deliveries[-1][1]:
                continue
            at = rec.deliveries[-1][0]
            if self.switch_asked_at < at and self.last_takeover_at < at:
                due.append(cid)
        return due

    async def check_handoffs(self) -> None:
        """Settled: a handing-off result its origin delivered was handed off to (livekit
        makes the switch once the origin's activity drained: give it a moment)."""
        for _ in range(10):
            if not self._handoff_due() or self.oracle.closed:
                break
            await asyncio.sleep(0.5)
        due = self._handoff_due()
        if any(isinstance(a, FuzzTask) for a in self.agents) or self.oracle.closed:
            due = []
        for cid in due:
            self.oracle.fail(
                "H",
                f"the origin delivered the result of {cid}, yet "
                f"{self.oracle.name(self.returned[cid])} never took over",
            )
        for cid, agent in self.returned.items():
            rec = self.oracle.calls.get(cid)
            if rec is not None and rec.entered and rec.acked:
                self.oracle.check_result_pair(cid, agent)

    def _held_origin(self) -> Agent | bool | None:
        """The one closed origin whose ``hold`` items wait for it (False if none; None
        if settling cannot be expected: several, or a finished `AgentTask`)."""
        origins: list[Agent] = []
        for rec in self.oracle.calls.values():
            if rec.policy != "hold" or rec.origin is None or not is_closed(rec.origin):
                continue
            if self._open(rec) and rec.origin not in origins:
                origins.append(rec.origin)
        if not origins:
            return False
        if len(origins) > 1 or isinstance(origins[0], FuzzTask):
            return None
        return origins[0]

    @staticmethod
    def _open(rec: CallRec) -> bool:
        """The call runs, or something of it may still be waiting to be spoken (also a
        None result: the oracle expects it silent, the engine may queue it)."""
        if rec.ended is None and not rec.follow_up:
            return True
        if rec.unsent > 0 or (rec.replies and rec.replies[-1][1] not in TERMINAL):
            return True
        ended = rec.ended if rec.ended is not None else rec.started
        return rec.none_result and rec.acked and not any(i > ended for i, _s in rec.replies)

    def _limbo(self) -> Agent | None:
        """An origin of open work that is not current, not closed, and has no task on
        top of it: nothing will make it current again."""
        current = self.current()
        if isinstance(current, FuzzTask):
            # completed, yet livekit never handed back to its parent (nested tasks from
            # parallel turns): nothing will make the paused origins current again
            return current if current.done() else None
        if current is not None and self.last_handoff_at < self.switch_asked_at:
            # livekit never carried out the last switch the app or a tool asked for
            # (e.g. handing back to an agent whose activity a racing AgentTask left open):
            # it still routes replies to the previous activity
            return current
        if current is not None and is_closed(current):
            # livekit never started the current agent's activity (its transition waits on
            # a tool that awaits an AgentTask a racing handoff left behind): replies would
            # go to the previous activity, so nothing may be spoken for it
            return current
        for rec in self.oracle.calls.values():
            origin = rec.origin
            if origin is None or origin is current or is_closed(origin):
                continue
            if self._open(rec):
                return origin
        return None

    async def settle(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        handle_waits = 0
        while not self.oracle.closed:
            for _ in range(4):
                if not self.complete_task():
                    break
                await asyncio.sleep(0.5)
            if self.answer_open():
                # progress: questions are answered one at a time, however many wait
                deadline = max(deadline, loop.time() + 30.0)
                await asyncio.sleep(0.5)
            # let every speech in flight (user turns, tool dispatches) finish first
            live = [h.handle for h in self.oracle.handles.values() if not h.handle.done()]
            if live:
                waits = [asyncio.ensure_future(h.wait_for_playout()) for h in live]
                _done, pending = await asyncio.wait(waits, timeout=5.0)
                for fut in pending:
                    fut.cancel()
                handle_waits += 1
                if pending and handle_waits < 4:
                    continue
            held = self._held_origin()
            if held is None:
                self.note("settle not checked: items held for agents that cannot come back")
                return False
            if isinstance(held, Agent) and held is not self.current():
                if isinstance(self.current(), FuzzTask):
                    await asyncio.sleep(1.0)
                    continue
                self.note(f"hand back to {self.oracle.name(held)} for its held items")
                self.app_switching.add(id(held))
                self.session.update_agent(held)
            remaining = deadline - loop.time()
            # a question put to the caller is answered at the next look: look soon
            asked = any(a.outcome is None and a.spoken for a in self.oracle.asks.values())
            try:
                await self.runtime.settle(timeout=max(min(remaining, 2.0 if asked else 15.0), 0.1))
            except TimeoutError as e:
                limbo = self._limbo()
                if limbo is not None:
                    self.note(
                        f"settle not checked: origin {self.oracle.name(limbo)} is neither "
                        "current, nor closed, nor paused under a task (livekit left its "
                        "activity open after a handoff raced an AgentTask)"
                    )
                    return False
                if loop.time() >= deadline and not self.oracle.closed:
                    waiting = [a for a in self.oracle.asks.values() if a.outcome is None]
                    unasked = [a.question_id for a in waiting if not a.spoken]
                    if unasked:
                        self.oracle.fail(
                            "Q",
                            f"settle hung: calls wait for answers to {unasked}, "
                            "never put to the caller",
                        )
                    else:
                        self.oracle.fail("2", f"settle hung: {e}")
                    return False
                continue
            # settled; triggers armed from now on are dropped, and a triggered step
            # still on its way (or a speech it started) means settling again
            self.triggers.clear()
            for _ in range(3):
                await asyncio.sleep(0)
            busy = any(not h.handle.done() for h in self.oracle.handles.values())
            if not self.firing and not busy and not self.runtime.describe():
                return True
            await asyncio.sleep(1.0)
        return False

    # -- main ---------------------------------------------------------------------------------

    async def main(self) -> None:
        plan = self.plan
        loop = asyncio.get_running_loop()
        scripted = ScriptedLLM(self.decide, delay=plan.llm_delay)
        if plan.voice and FAKE_VOICE_SUPPORTED:
            # a caller with a microphone: livekit's own VAD/STT/TTS turn taking
            self.voice = FakeVoice(
                chars_per_second={0.0: 60.0, 0.05: 30.0}.get(plan.word_time, 10.0),
                frame_seconds=0.5,
            )
            self.session = session = AgentSession(llm=scripted, **self.voice.session_kwargs())
            self.voice.attach(session)
        else:
            self.session = session = AgentSession(llm=scripted)
            if plan.word_time > 0:
                session.output.transcription = _SlowText(plan.word_time)

        def on_item(ev: Any) -> None:
            if getattr(ev.item, "type", "") == "agent_handoff":
                self.last_handoff_at = asyncio.get_running_loop().time()

        session.on("conversation_item_added", on_item)
        self.runtime = runtime = attach(
            session,
            AsyncToolOptions(
                timeout_decision_window=plan.decision_window,
                settle_delay=plan.settle_delay,
                max_redeliveries=plan.max_redeliveries,
                on_handoff=plan.on_handoff,  # type: ignore[arg-type]
                control_tools=plan.control_tools,  # type: ignore[arg-type]
                hold_after=plan.hold_after,
            ),
        )
        self.agents = [self.agent_cls(self, i) for i in range(plan.n_agents)]
        self.oracle = oracle = Oracle(
            session,
            runtime,
            policy_of=self.policy_of,
            result_delivery=self.result_delivery,
            none_result=self.none_result,
            agents=lambda: list(self.agents),
            is_task=lambda a: isinstance(a, FuzzTask),
            overdue_timeout=self.overdue_timeout,
            decision_window=plan.decision_window,
            job_end=self.job_end,
            hold_after=plan.hold_after,
        )
        for i, agent in enumerate(self.agents):
            oracle.agent_names[id(agent)] = f"A{i}"
        oracle.on_event = self.on_event
        session.on("speech_created", self._on_speech_created)
        await session.start(self.agents[0])
        t0 = loop.time()
        for step in plan.steps:
            delay = t0 + step[0] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if oracle.closed:
                break
            await self.step(step)
        if not oracle.closed:
            if await self.settle() and not oracle.closed:
                oracle.note("settled")
                oracle.check_items("2", settled=True)
                oracle.check_calls(final=True)
                await self.check_handoffs()
            oracle.check_contexts()
            self.closing = True
            await session.aclose()
            self.closing = False
        oracle.closed = True
        await runtime.aclose()
        await asyncio.sleep(0)
        leaked = [
            t.get_name()
            for t in asyncio.all_tasks()
            if not t.done() and t.get_name().startswith("async-tool")
        ]
        if leaked:
            oracle.fail("5", f"tasks alive after runtime.aclose(): {sorted(leaked)}")
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        oracle.check_items("5", settled=False)
        oracle.check_calls(final=True)
        oracle.check_contexts()
        oracle.check_asks()

    def _on_speech_created(self, ev: Any) -> None:
        if self.expect_user_turn:
            self.oracle.track_user_turn(ev.speech_handle)


_KEEP_LOGGERS = ("livekit_async_tools", "livekit.agents", "livekit")


def run_plan(plan: Plan) -> Outcome:
    """Run ``plan`` in a fresh virtual-time event loop and check every invariant."""
    wall = time.perf_counter()
    records: list[logging.LogRecord] = []
    loop_errors: list[str] = []
    pkg = logging.getLogger("livekit_async_tools")
    saved = [(lg, lg.level, lg.propagate) for lg in map(logging.getLogger, _KEEP_LOGGERS)]
    capture = _Records(records)
    pkg.setLevel(logging.DEBUG)
    pkg.addHandler(capture)
    pkg.propagate = False
    for name in ("livekit.agents", "livekit"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.CRITICAL)
        lg.propagate = False
    # Objects older than this run need no scanning: the collection below (which
    # surfaces "never retrieved" / "never awaited") walks only what this run made,
    # and runs once the run's session, agents and loop are unreachable.
    gc.freeze()
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                outcome, oracle, session_ref = _execute(plan, loop_errors)
                gc.collect()
                never_awaited = [
                    str(w.message)
                    for w in warned
                    if issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)
                ]
                # warnings and log records (their tracebacks) may still reach the
                # session: check them, drop them, then see whether the session is gone
                warned.clear()
                if oracle is not None:
                    oracle.check_records(records)
                records.clear()
                gc.collect()
                leaked_by = _holders(session_ref())
            finally:
                gc.unfreeze()
    finally:
        pkg.removeHandler(capture)
        for lg, level, propagate in saved:
            lg.setLevel(level)
            lg.propagate = propagate
    if oracle is not None:
        for text in loop_errors:
            oracle.fail("7", f"event loop error: {text}")
        for text in never_awaited:
            oracle.fail("7", text)
        if leaked_by is not None and SILENT_AGENT_CLOSE:
            # livekit-agents < 1.5: the closed session stays reachable (its own activity
            # among the referrers); not traced yet, so not judged there
            oracle.note(f"session still reachable on livekit < 1.5 (not judged): {leaked_by}")
        elif leaked_by is not None and getattr(oracle, "livekit_stuck", False):
            oracle.note(
                "session kept alive by livekit (a task that would not stop or a refused "
                "run's RunResult; not judged)"
            )
        elif leaked_by is not None:
            oracle.fail(
                "5",
                f"the closed session is never garbage-collected (direct referrers: {leaked_by})",
            )
        outcome.violations = [*outcome.violations, *oracle.violations]
        outcome.log = oracle.log
    outcome.wall_seconds = time.perf_counter() - wall
    return outcome


def _holders(obj: object) -> str | None:
    """``None`` if ``obj`` is gone, else the types of what still refers to it."""
    if obj is None:
        return None
    names = sorted(
        {
            type(r).__name__
            for r in gc.get_referrers(obj)
            if not isinstance(r, (list, types.FrameType)) and r is not obj
        }
    )
    return ", ".join(names) or "a cycle gc cannot break"


def _execute(plan: Plan, loop_errors: list[str]) -> tuple[Outcome, Oracle | None, weakref.ref[Any]]:
    """Run the plan in its own loop, closed on return; the oracle outlives the session
    only as data (its records of calls keep no session alive once this returns)."""
    harness = Harness(plan)
    outcome = Outcome(plan)
    loop = looptime.new_event_loop(noop_cycles=1)

    refused = harness.refused_runs  # the error handler must not keep the harness alive

    def on_loop_error(_loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message"))
        task = context.get("task") or context.get("future")
        name = task.get_name() if isinstance(task, asyncio.Task) else ""
        if message.startswith("Task was destroyed but it is pending") and not name.startswith(
            "async-tool"
        ):
            return  # a livekit task that would not stop at teardown (noted in the log)
        if (
            message.startswith("Task exception was never retrieved")
            and name
            and not name.startswith(("async-tool", "fuzz"))
        ):
            return  # livekit's own task failed (e.g. a hand-back it refused): not the package's
        if (
            message.startswith("Future exception was never retrieved")
            and "session closed" in repr(exc)
            and refused[0]
        ):
            return  # the RunResult of a refused session.run(), which livekit never returns
        loop_errors.append(f"{message} ({name}): {exc!r}" if exc else str(context))

    loop.set_exception_handler(on_loop_error)
    # livekit times the caller's turn (endpointing) with time.time(): on the virtual
    # clock for the run, so voice plans replay exactly (perf_counter stays real: it
    # only orders and measures)
    real_time = time.time
    time.time = lambda: EPOCH + loop.time()
    hung = False
    try:
        loop.run_until_complete(asyncio.wait_for(harness.main(), RUN_TIMEOUT))
    except TimeoutError:
        runtime = getattr(harness, "runtime", None)
        if hasattr(harness, "oracle") and (
            (runtime is not None and not runtime.describe()) or harness.closing
        ):
            # nothing of the package runs or waits: livekit itself is stuck (e.g. a tool
            # awaiting an AgentTask that a racing handoff never started)
            harness.oracle.note(f"the run hung in livekit for {RUN_TIMEOUT} virtual seconds")
            harness.oracle.livekit_stuck = True
        elif hasattr(harness, "oracle"):
            hung = True  # judged below, once we know whether livekit's own tasks were stuck
        else:
            outcome.violations.append(Violation("2", "the run hung before it started"))
    except Exception as e:
        msg = f"the harness crashed: {type(e).__name__}: {e}"
        if hasattr(harness, "oracle"):
            harness.oracle.fail("harness", msg)
        else:
            outcome.violations.append(Violation("harness", msg))
    finally:
        outcome.virtual_seconds = loop.time()
        try:
            stuck = _drain(loop)
            if stuck and hasattr(harness, "oracle"):
                harness.oracle.note(f"tasks that would not stop after close: {stuck}")
                if any(not name.startswith("async-tool") for name in stuck):
                    harness.oracle.livekit_stuck = True
            if hung and harness.oracle.livekit_stuck:
                harness.oracle.note("the run hung behind livekit tasks that would not stop")
            elif hung:
                harness.oracle.fail("2", f"the run hung for {RUN_TIMEOUT} virtual seconds")
            loop.close()
        finally:
            time.time = real_time
    oracle = getattr(harness, "oracle", None)
    if oracle is not None:
        oracle.release()
    session = getattr(harness, "session", None)
    session_ref: weakref.ref[Any] = weakref.ref(session) if session is not None else _gone
    return outcome, oracle, session_ref


def _gone() -> None:
    return None


def _drain(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Cancel whatever is still running once the run is over (livekit may leave a tool
    execution behind after close) and let it finish; returns the names of tasks that
    would not stop."""
    stuck: list[str] = []
    for _ in range(3):
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if not pending:
            break
        for t in pending:
            try:
                t.cancel()
            except RecursionError:  # livekit left futures that cancel each other in a loop
                stuck.append(t.get_name())
        loop.run_until_complete(asyncio.wait(pending, timeout=60.0))
    stuck = sorted({t.get_name() for t in asyncio.all_tasks(loop) if not t.done()} | set(stuck))
    loop.run_until_complete(loop.shutdown_asyncgens())
    return stuck


def run_seeds(args: tuple[int, int, int, float]) -> list[tuple[int, list[Any], float]]:
    """Run seeds ``start, start+step, ...`` (``count`` of them) until ``deadline``
    (wall clock): the work of one `python -m tests.fuzz --jobs` worker process (it
    lives here, not in ``__main__``, so spawned workers can import it)."""
    from .plan import random_plan

    start, step, count, deadline = args
    out = []
    for i in range(count):
        if time.time() >= deadline:
            break
        seed = start + i * step
        o = run_plan(random_plan(seed))
        out.append((seed, [(v.invariant, v.message) for v in o.violations], o.wall_seconds))
    return out
