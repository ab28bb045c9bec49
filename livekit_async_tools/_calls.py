"""The live calls of one session: dispatch (duplicates, cap), stop, handoff cancels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from livekit.agents import Agent, RunContext, llm

from . import _compat, _policy
from ._log import logger
from ._ports import Asker, ItemSink, Notes, Services
from ._spec import CONFIRM_PARAM, ToolSpec
from ._texts import ack_text
from .context import AsyncRunContext
from .events import TaskInfo, TaskStarted
from .gate import Gate
from .task import AsyncCall, Finished

__all__ = ["Body", "Calls"]

Body = Callable[[AsyncRunContext[Any]], Coroutine[Any, Any, object]]
"""Makes a call's coroutine from its context (the tool's function, or a mock)."""


class Calls:
    """Registry of the live calls: by id, by duplicate key (computed once per call)."""

    def __init__(
        self,
        services: Services,
        gate: Gate,
        sink: ItemSink,
        notes: Notes,
        asker: Asker,
        on_ended: Callable[[], None],
    ) -> None:
        self._services = services
        self._gate = gate
        self._sink = sink
        self._notes = notes
        self._asker = asker
        self._on_ended = on_ended
        self._calls: dict[str, AsyncCall] = {}
        self._by_key: dict[str, list[AsyncCall]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_id: str) -> AsyncCall | None:
        return self._calls.get(call_id)

    def infos(self) -> tuple[TaskInfo, ...]:
        return tuple(call.info() for call in self._calls.values())

    def serving(self, agent: Agent | None) -> tuple[TaskInfo, ...]:
        """The live calls whose items are recorded into ``agent`` now: it is their
        origin, or the current agent a call of a closed origin is forwarded to."""
        if agent is None:
            return ()
        target = self._gate.record_target
        return tuple(
            c.info() for c in self._calls.values() if target(c.origin, c.on_handoff) is agent
        )

    def reach(self, agent: Agent) -> bool:
        """Some live call's items are recorded into ``agent`` now (`serving`)."""
        return bool(self.serving(agent))

    def overdue(self) -> bool:
        """Some call is past its deadline, its caller asked whether to keep waiting."""
        return any(call.deadline.overdue for call in self._calls.values())

    def describe(self) -> list[str]:
        return [
            f"{c.tool_name} ({c.call_id}) {c.state} for {c.elapsed:.1f}s"
            for c in self._calls.values()
        ]

    # -- dispatch ----------------------------------------------------------------------

    async def dispatch(
        self,
        spec: ToolSpec,
        run_ctx: RunContext[Any],
        body: Body,
        arguments: dict[str, object],
        origin: Agent,
        *,
        confirmed: bool = False,
    ) -> object:
        """Start a background call and return what the LLM sees now."""
        opts = self._services.options
        call_id = run_ctx.function_call.call_id
        key = spec.duplicate_key(arguments)
        while True:  # after any await, every check is made again
            if self._closed:
                raise llm.ToolError(opts.session_closing_template.format(tool_name=spec.name))
            if call_id in self._calls:
                raise llm.ToolError(opts.call_id_in_use_template.format(call_id=call_id))
            running = self._by_key.get(key, []) if key is not None else []
            verdict = _policy.duplicate_verdict(
                spec.on_duplicate, running=bool(running), confirmed=confirmed
            )
            if verdict == "start":
                break
            fmt = {"tool_name": spec.name, "call_id": running[0].call_id}
            if verdict == "reject":
                return opts.duplicate_running_template.format(**fmt)
            if verdict == "confirm":
                return opts.duplicate_confirm_template.format(**fmt, param=CONFIRM_PARAM)
            await self.stop(running[0], "cancelled")  # replace
        if len(self._calls) >= opts.max_tasks_per_session:
            logger.warning("async tool cap reached", extra={"function": spec.name})
            raise llm.ToolError(opts.too_many_tasks_template.format(count=len(self._calls)))
        call = AsyncCall(
            services=self._services,
            sink=self._sink,
            notes=self._notes,
            asker=self._asker,
            on_ended=self._forget,
            spec=spec,
            call_id=call_id,
            arguments=arguments,
            raw_arguments=run_ctx.function_call.arguments,
            origin=origin,
            extra=getattr(run_ctx.function_call, "extra", None),
        )
        self._calls[call_id] = call
        if call.duplicate_key is not None:
            self._by_key.setdefault(call.duplicate_key, []).append(call)
        self._gate.track(run_ctx.speech_handle, origin)
        call.log_started()
        self._services.emit(
            TaskStarted(call_id=call_id, tool_name=spec.name, arguments=dict(arguments))
        )
        ctx = AsyncRunContext(run_ctx, call)
        self._gate.dispatch_started(origin)
        try:
            call.start(lambda: body(ctx))
            if spec.ack_after is None:
                await asyncio.shield(call.outcome)
            else:
                await asyncio.wait_for(asyncio.shield(call.outcome), spec.ack_after)
        except asyncio.TimeoutError:
            call.acknowledge()
        except asyncio.CancelledError:
            # the dispatch was cut (e.g. the turn was interrupted): the work goes on
            # and its result is delivered later
            call.acknowledge()
            raise
        finally:
            self._gate.dispatch_ended(origin)
        outcome = call.outcome.result()
        if isinstance(outcome, Finished):
            if outcome.status == "succeeded":
                return outcome.result
            raise llm.ToolError(outcome.error_text or "")
        text = ack_text(
            opts,
            tool_name=call.tool_name,
            call_id=call_id,
            message=outcome.message,
            automatic=outcome.automatic,
            seconds=call.elapsed,
        )
        # livekit already answered the LLM and takes this return for a final result:
        # let it record the acknowledgement without a reply of its own
        return _compat.quiet_result(text) if outcome.released else text

    def released(self, call_id: str) -> None:
        """livekit answered ``call_id`` itself (an interrupted turn stopped waiting
        for it): the call counts as acknowledged, its dispatch returns at once."""
        call = self._calls.get(call_id)
        if call is not None:
            call.acknowledge(released=True)

    def _forget(self, call: AsyncCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        if call.duplicate_key is not None:
            same = self._by_key.get(call.duplicate_key, [])
            if call in same:
                same.remove(call)
            if not same:
                self._by_key.pop(call.duplicate_key, None)
        self._on_ended()

    # -- stopping ----------------------------------------------------------------------

    async def stop(self, call: AsyncCall, reason: Literal["cancelled", "timed_out"]) -> bool:
        """Ask ``call`` to stop and wait until it has ended. True if it ended with
        ``reason`` (this or an earlier request of the same kind stopped it)."""
        call.request_stop(reason)
        await call.wait_ended()
        return call.status == reason

    def cancel_handed_off(self, drop: Callable[[str, str], None]) -> None:
        """Cancel the calls whose origin was handed off for good under ``cancel``;
        ``drop(call_id, reason)`` drops their pending items. Runs on agent lifecycle
        changes only (handoffs are rare; regular events never walk the calls)."""
        for call in list(self._calls.values()):
            state = self._gate.origin_state(call.origin)
            if _policy.cancel_at_handoff(state, call.on_handoff) and call.request_stop("cancelled"):
                drop(call.call_id, "origin_closed")

    def close(self) -> list[AsyncCall]:
        """Refuse new calls and stop every live one (their hooks still run)."""
        self._closed = True
        calls = list(self._calls.values())
        self._calls.clear()
        self._by_key.clear()
        for call in calls:
            call.request_stop("cancelled")
        return calls
