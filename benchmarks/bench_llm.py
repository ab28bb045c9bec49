"""A fake LLM for the benchmarks: answers from a queue and timestamps every request.

Same idea as `livekit_async_tools.testing.ScriptedLLM`, but it keeps no copy of
the chat context per request: that copy is O(context length) on every request
and would blur the cost being measured at large N. Written against the LLM
plugin interface every livekit provider implements (``chat`` returns an
``LLMStream`` whose ``_run`` feeds ``_event_ch``), so it works on every
livekit-agents version the package supports.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from livekit_async_tools.testing import ToolCall

Reply: TypeAlias = "str | ToolCall | Sequence[ToolCall]"
"""Text, one tool call, or several tool calls in one response."""

Mark: TypeAlias = "tuple[float, float]"
"""A moment on two clocks: (``perf_counter``, loop-thread CPU ``thread_time``)."""

DEFAULT_REPLY = "Noted."
"""What a request gets when nothing is queued (deferred replies, for example)."""


def now() -> Mark:
    """Wall clock and CPU time of the calling (event-loop) thread, in seconds."""
    return (time.perf_counter(), time.thread_time())


class BenchLLM(llm.LLM):  # type: ignore[misc]
    """Answers queued replies in order and records when things happened.

    Attributes:
        requests: When each ``chat()`` call came, in order.
        streamed: When each response had sent its last chunk, in order.
        probe: When set, called with the chat context of every request, after
            the request is timestamped (what it costs is not in that mark).
    """

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[Reply] = []
        self._call_ids = itertools.count(1)
        self.requests: list[Mark] = []
        self.streamed: list[Mark] = []
        self.probe: Callable[[llm.ChatContext], None] | None = None

    @property
    def model(self) -> str:
        return "bench"

    @property
    def provider(self) -> str:
        return "bench"

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, one each."""
        self._queue.extend(replies)

    def request_after(self, t: float) -> Mark | None:
        """The first request that came after wall time ``t``, if any."""
        found = None
        for mark in reversed(self.requests):
            if mark[0] <= t:
                break
            found = mark
        return found

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.requests.append(now())
        if self.probe is not None:
            self.probe(chat_ctx)
        reply = self._queue.pop(0) if self._queue else DEFAULT_REPLY
        return _Stream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            chunks=self._chunks(reply),
        )

    def _chunks(self, reply: Reply) -> list[llm.ChatChunk]:
        if isinstance(reply, str):
            delta = llm.ChoiceDelta(role="assistant", content=reply)
            return [llm.ChatChunk(id="bench", delta=delta)]
        calls = [reply] if isinstance(reply, ToolCall) else list(reply)
        chunks = []
        for call in calls:
            arguments = (
                call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            )
            tool_call = llm.FunctionToolCall(
                name=call.name,
                arguments=arguments,
                call_id=call.call_id or f"call_{next(self._call_ids)}",
            )
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[tool_call])
            chunks.append(llm.ChatChunk(id="bench", delta=delta))
        return chunks


class _Stream(llm.LLMStream):  # type: ignore[misc]
    def __init__(
        self,
        owner: BenchLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        chunks: list[llm.ChatChunk],
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner
        self._chunks = chunks

    async def _run(self) -> None:
        for chunk in self._chunks:
            self._event_ch.send_nowait(chunk)
        self._owner.streamed.append(now())
