"""A deterministic, scripted `llm.LLM` for tests, docs and the offline demo."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

__all__ = ["LLMRequest", "Reply", "ScriptedLLM", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call the scripted LLM emits.

    Args:
        name: The tool's name as the LLM sees it.
        arguments: The JSON arguments (a mapping, or a raw JSON string to test
            malformed input).
        call_id: The call id; generated (``call_1``, ``call_2``, …) when omitted.
    """

    name: str
    arguments: Mapping[str, object] | str = field(default_factory=dict)
    call_id: str | None = None


Reply: TypeAlias = "str | ToolCall | Sequence[str | ToolCall] | None"
"""What one LLM request answers: text, one tool call, several of them (text
first, then tool calls), or ``None``/``""`` for an empty reply."""


@dataclass(frozen=True)
class LLMRequest:
    """One request the session made to the scripted LLM.

    Attributes:
        chat_ctx: A copy of the chat context the session sent.
        tool_names: Names of the function tools offered with the request.
        tool_choice: The tool choice the session asked for, if any.
    """

    chat_ctx: llm.ChatContext
    tool_names: tuple[str, ...]
    tool_choice: object = None

    @property
    def instructions(self) -> str:
        """All system/developer text of the request, joined by newlines."""
        parts: list[str] = []
        for item in self.chat_ctx.items:
            if item.type == "message" and item.role in ("system", "developer"):
                parts.append(item.text_content or "")
        return "\n".join(parts)

    @property
    def last_user_text(self) -> str:
        """The text of the last user message, or ``""``."""
        for item in reversed(self.chat_ctx.items):
            if item.type == "message" and item.role == "user":
                return item.text_content or ""
        return ""


class ScriptedLLM(llm.LLM):  # type: ignore[type-arg]
    """A fake LLM that answers from a script, for tests and offline demos.

    The script is either a sequence of replies, consumed one per request, or a
    callable that sees each request (its chat context, offered tools and
    instructions) and decides, like a real model would. Every request is
    recorded in `requests`.

    In strict mode (``strict=True``; the default of the ``scripted_llm`` pytest
    fixture) a sequence script must be used exactly: a request beyond the script,
    or replies left unused, make `check` raise an `AssertionError` that lists every
    request (its new chat items, summarized) and what answered it. The pytest
    plugin calls `check` at the end of each test for the strict LLMs it handed out
    or was given; elsewhere call it yourself. Without strict mode, a request beyond
    the script gets an empty reply and is only counted in `unanswered`.

    Args:
        script: A sequence of `Reply` values, or a callable
            ``(LLMRequest) -> Reply``.
        delay: Seconds to wait before answering (simulated model latency; it
            uses the event loop's clock).
        chunk_words: Stream text replies in chunks of this many words (0 sends
            the text as one chunk).
        strict: Check that a sequence script is used exactly (see above). A
            callable script has nothing to exhaust; strict mode does not change it.

    Example::

        llm = ScriptedLLM([
            ToolCall("search_flights", {"city": "Paris"}),
            "I'm looking that up for you.",
        ])
        async with AgentSession(llm=llm) as session:
            await session.start(MyAgent())
            await session.run(user_input="Flights to Paris?")
    """

    def __init__(
        self,
        script: Sequence[Reply] | Callable[[LLMRequest], Reply],
        *,
        delay: float = 0.0,
        chunk_words: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if callable(script):
            self._decide: Callable[[LLMRequest], Reply] | None = script
            self._queue: list[Reply] = []
        else:
            self._decide = None
            self._queue = list(script)
        self._delay = delay
        self._chunk_words = chunk_words
        self._call_ids = itertools.count(1)
        self.requests: list[LLMRequest] = []
        """Every request made so far, in order."""
        self.unanswered = 0
        """Requests that found the script empty (they got an empty reply)."""
        self.strict = strict
        """Whether `check` is expected to pass at the end of a test (settable: the
        pytest plugin reads it when the test ends)."""
        self._answers: list[Reply | _Beyond] = []

    @property
    def model(self) -> str:
        """Model name reported to livekit."""
        return "scripted"

    @property
    def provider(self) -> str:
        """Provider name reported to livekit."""
        return "livekit-async-tools"

    def extend(self, replies: Sequence[Reply]) -> None:
        """Append replies to a sequence script (e.g. to the ``scripted_llm`` fixture)."""
        if self._decide is not None:
            raise TypeError("this ScriptedLLM decides with a callable; it has no queue")
        self._queue.extend(replies)

    @property
    def remaining(self) -> int:
        """Replies of a sequence script that no request has consumed yet."""
        return len(self._queue)

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
        """Answer one request from the script (called by the session)."""
        names = tuple(
            t.info.name
            for t in tools or []
            if isinstance(t, (llm.FunctionTool, llm.RawFunctionTool))
        )
        request = LLMRequest(
            chat_ctx=chat_ctx.copy(),
            tool_names=names,
            tool_choice=tool_choice if tool_choice is not NOT_GIVEN else None,
        )
        self.requests.append(request)
        reply: Reply
        if self._decide is not None:
            reply = self._decide(request)
            self._answers.append(reply)
        elif self._queue:
            reply = self._queue.pop(0)
            self._answers.append(reply)
        else:
            self.unanswered += 1
            reply = None
            self._answers.append(_BEYOND)
        return _ScriptedStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            chunks=self._to_chunks(reply),
            delay=self._delay,
        )

    def check(self) -> None:
        """Raise if a sequence script was not used exactly.

        Checks regardless of `strict`: call it at the end of a test (the pytest
        plugin does so, for strict LLMs only, once a test has passed).

        Raises:
            AssertionError: A request came after the script was used up, or replies
                were left unused. The message lists every request (the chat items
                new since the previous one, summarized) and what answered it.
        """
        __tracebackhide__ = True
        problems: list[str] = []
        if self.unanswered:
            problems.append(
                f"{self.unanswered} request(s) came after the script was used up "
                "(each got an empty reply)"
            )
        if self._queue:
            left = ", ".join(_describe_reply(r) for r in self._queue)
            problems.append(f"{len(self._queue)} scripted reply(ies) never requested: {left}")
        if problems:
            raise AssertionError(
                "ScriptedLLM: " + "; ".join(problems) + ".\n" + self.describe_requests()
            )

    def describe_requests(self) -> str:
        """Every request so far, with the chat items new since the previous request
        (summarized) and what answered it: the text `check` shows."""
        if not self.requests:
            return "No request was made."
        lines = [f"Requests ({len(self.requests)}):"]
        seen: set[str] = set()
        for n, (request, answer) in enumerate(
            zip(self.requests, self._answers, strict=False), start=1
        ):
            tools = ", ".join(request.tool_names) or "none"
            lines.append(f"  #{n} (tools: {tools}) answered {_describe_reply(answer)}")
            new = [item for item in request.chat_ctx.items if item.id not in seen]
            seen.update(item.id for item in request.chat_ctx.items)
            lines += [f"      {_summarize_item(item)}" for item in new]
        return "\n".join(lines)

    def _to_chunks(self, reply: Reply) -> list[llm.ChatChunk]:
        parts: Sequence[str | ToolCall]
        if reply is None:
            parts = []
        elif isinstance(reply, (str, ToolCall)):
            parts = [reply]
        else:
            parts = reply
        chunk_id = f"scripted-{len(self.requests)}"
        chunks: list[llm.ChatChunk] = []
        for part in parts:
            if isinstance(part, ToolCall):
                args = (
                    part.arguments
                    if isinstance(part.arguments, str)
                    else json.dumps(dict(part.arguments))
                )
                call = llm.FunctionToolCall(
                    name=part.name,
                    arguments=args,
                    call_id=part.call_id or f"call_{next(self._call_ids)}",
                )
                delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
                chunks.append(llm.ChatChunk(id=chunk_id, delta=delta))
            elif part:
                for text in self._split(part):
                    delta = llm.ChoiceDelta(role="assistant", content=text)
                    chunks.append(llm.ChatChunk(id=chunk_id, delta=delta))
        return chunks

    def _split(self, text: str) -> list[str]:
        if self._chunk_words <= 0:
            return [text]
        words = text.split(" ")
        n = self._chunk_words
        return [
            " ".join(words[i : i + n]) + (" " if i + n < len(words) else "")
            for i in range(0, len(words), n)
        ]


class _Beyond:
    """Marks a request that came after the script was used up."""


_BEYOND = _Beyond()
_WIDTH = 100


def _short(text: str, width: int = _WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe_reply(reply: Reply | _Beyond) -> str:
    if isinstance(reply, _Beyond):
        return "with nothing: the script was used up"
    if reply is None or reply == "":
        return "(empty reply)"
    if isinstance(reply, str):
        return repr(_short(reply, 60))
    if isinstance(reply, ToolCall):
        args = reply.arguments if isinstance(reply.arguments, str) else dict(reply.arguments)
        return _short(f"ToolCall({reply.name!r}, {args!r})", 60)
    return "[" + ", ".join(_describe_reply(part) for part in reply) + "]"


def _summarize_item(item: llm.ChatItem) -> str:
    """One line for a chat item: who, what, and ids where they matter."""
    if isinstance(item, llm.ChatMessage):
        flag = " (interrupted)" if item.interrupted else ""
        return f"{item.role}{flag}: {_short(item.text_content or '')!r}"
    if isinstance(item, llm.FunctionCall):
        return _short(f"function_call {item.name}({item.arguments}) [{item.call_id}]")
    if isinstance(item, llm.FunctionCallOutput):
        kind = "error" if item.is_error else "output"
        return _short(f"function_call_output [{item.call_id}] {kind}: {item.output!r}")
    return item.type


class _ScriptedStream(llm.LLMStream):
    def __init__(
        self,
        scripted: ScriptedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        chunks: list[llm.ChatChunk],
        delay: float,
    ) -> None:
        super().__init__(scripted, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._chunks = chunks
        self._delay = delay

    async def _run(self) -> None:
        # `_run` and `_event_ch` are livekit's documented extension points for
        # LLM plugins (every provider plugin implements them).
        if self._delay > 0:
            await asyncio.sleep(self._delay)
        for chunk in self._chunks:
            self._event_ch.send_nowait(chunk)
