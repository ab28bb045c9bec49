"""A strict OpenAI-compatible Chat Completions server for wire tests.

`OpenAIServer` listens on 127.0.0.1 (a free port), validates every
``POST /v1/chat/completions`` request by the rules OpenAI enforces on tool calling
(see `validate`), answers a violation with OpenAI's 400 error JSON, and otherwise
streams a scripted answer in OpenAI's SSE format (``chat.completion.chunk`` lines with
text and tool-call deltas, a final chunk with ``finish_reason``, a usage chunk when
``stream_options.include_usage`` asks for one, then ``data: [DONE]``). What it answers
is decided by a *brain*: a callable that sees the recorded `ChatRequest` and returns a
`Reply` (text, `ToolCall`\\ s, both, nothing, or an `ErrorReply`).

Point the real ``livekit.plugins.openai.LLM`` at it with ``server.llm()`` (or
``openai.LLM(base_url=server.url + "/v1", api_key="test")``, or the
``OPENAI_BASE_URL`` environment variable). Every request is kept in
``server.requests`` with its verdict; ``server.rejections`` lists the refused ones and
``server.dump_rejections()`` shows each with the offending messages.

In pytest, import the ``openai_server`` fixture explicitly::

    from .support.openai_server import openai_server_fixture  # noqa: F401

It fails the test at teardown if a request was refused and no assertion reported it.

Run it standalone (e.g. for ``python examples/flight_agent.py console --text``)::

    python -m tests.support.openai_server --port 8089 --brain module:callable
    OPENAI_BASE_URL=http://127.0.0.1:8089/v1 OPENAI_API_KEY=test \\
        python examples/flight_agent.py console --text
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import random
import re
import string
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pytest
from aiohttp import web

__all__ = [
    "MAX_TOOL_CALL_ID_LENGTH",
    "ChatRequest",
    "ErrorReply",
    "OpenAIServer",
    "Reply",
    "ToolCall",
    "WireError",
    "keyword_brain",
    "openai_server_fixture",
    "validate",
]

MAX_TOOL_CALL_ID_LENGTH = 40
"""OpenAI refuses a ``tool_calls[].id`` longer than this."""

TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What OpenAI accepts as a function name."""

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


# -- replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A tool call the server streams.

    Args:
        name: The tool's name.
        arguments: The JSON arguments (a mapping, or a raw JSON string).
        call_id: The call id; without one the server makes an OpenAI-like id
            (``call_`` + 24 characters, or `OpenAIServer.call_id_length` characters).
    """

    name: str
    arguments: Mapping[str, object] | str = field(default_factory=dict)
    call_id: str | None = None


@dataclass(frozen=True)
class ErrorReply:
    """Answer the request with an HTTP error instead of a completion (a provider failure)."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    type: str = "server_error"


Reply: TypeAlias = "str | ToolCall | ErrorReply | Sequence[str | ToolCall] | None"
"""What one request is answered with: text, a tool call, several parts (texts first,
then tool calls, in order), ``None``/``""`` for an empty answer, or an `ErrorReply`."""


# -- requests and verdicts ---------------------------------------------------------------


@dataclass(frozen=True)
class WireError:
    """Why a request was refused, in OpenAI's error shape."""

    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"
    status: int = 400
    index: int | None = None
    """The offending message's index in ``messages``, when there is one."""

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI answers with."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class ChatRequest:
    """One ``POST /v1/chat/completions`` the server received, and what became of it."""

    n: int
    """Position among all requests of the server, from 0."""
    body: dict[str, Any]
    error: WireError | None = None
    """The verdict: ``None`` if the request was accepted."""
    reply: list[str | ToolCall] | ErrorReply | None = None
    """What the server answered (after call ids were filled in)."""
    aborted: bool = False
    """The client went away while the answer was streamed (e.g. an interrupted reply)."""
    model_calls: tuple[tuple[str, ...], ...] = ()
    """The call ids this server emitted before this request, one tuple per answer."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages")
        return msgs if isinstance(msgs, list) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        tools = self.body.get("tools")
        return tools if isinstance(tools, list) else []

    @property
    def tool_names(self) -> tuple[str, ...]:
        """Names of the function tools offered, in order."""
        return tuple(
            str((t.get("function") or {}).get("name")) for t in self.tools if isinstance(t, dict)
        )

    @property
    def tool_choice(self) -> object:
        return self.body.get("tool_choice")

    @property
    def instructions(self) -> str:
        """All system/developer text of the request, joined by newlines."""
        return "\n".join(
            _text(m.get("content"))
            for m in self.messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        )

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return _text(m.get("content"))
        return ""

    @property
    def last(self) -> dict[str, Any]:
        """The last message (``{}`` if none)."""
        return self.messages[-1] if self.messages else {}

    def tool_call_names(self) -> dict[str, str]:
        """Tool name of every call id in the assistant messages."""
        names: dict[str, str] = {}
        for m in self.messages:
            for tc in m.get("tool_calls") or []:
                names[str(tc.get("id"))] = str((tc.get("function") or {}).get("name"))
        return names

    def outputs(self) -> list[tuple[str, str]]:
        """Every tool message as ``(tool_call_id, content)``, in order."""
        return [
            (str(m.get("tool_call_id")), _text(m.get("content")))
            for m in self.messages
            if isinstance(m, dict) and m.get("role") == "tool"
        ]

    def trailing_outputs(self) -> list[tuple[str, str]]:
        """The tool messages at the end of the request (answers to the last tool calls)."""
        tail: list[tuple[str, str]] = []
        for m in reversed(self.messages):
            if m.get("role") != "tool":
                break
            tail.append((str(m.get("tool_call_id")), _text(m.get("content"))))
        return tail[::-1]

    def latest_model_outputs(self) -> list[tuple[str, str]]:
        """Outputs of the most recent answer of the server whose tool calls this request
        carries (what a model answers after running tools), as ``(call_id, content)``."""
        outputs = dict(self.outputs())
        for group in reversed(self.model_calls):
            present = [(cid, outputs[cid]) for cid in group if cid in outputs]
            if present:
                return present
        return []

    def describe(self, *, around: int | None = None, width: int = 90) -> str:
        """The messages, one line each; with ``around``, a window marking that one."""
        lines: list[str] = []
        msgs = self.messages
        lo, hi = 0, len(msgs)
        if around is not None and len(msgs) > 16:
            lo, hi = max(0, around - 8), min(len(msgs), around + 5)
            if lo > 0:
                lines.append(f"     ... {lo} earlier messages")
        for i in range(lo, hi):
            mark = ">>" if i == around else "  "
            lines.append(f"  {mark} [{i}] {_one_line(msgs[i], width)}")
        if hi < len(msgs):
            lines.append(f"     ... {len(msgs) - hi} later messages")
        return "\n".join(lines)


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _short(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _one_line(m: object, width: int) -> str:
    if not isinstance(m, dict):
        return repr(m)
    role = m.get("role")
    if role == "tool":
        return f"tool {m.get('tool_call_id')}: {_short(_text(m.get('content')), width)!r}"
    out = f"{role}"
    if m.get("content") is not None:
        out += f": {_short(_text(m.get('content')), width)!r}"
    calls = m.get("tool_calls")
    if calls:
        out += (
            " tool_calls=["
            + ", ".join(f"{(tc.get('function') or {}).get('name')}#{tc.get('id')}" for tc in calls)
            + "]"
        )
    return out


# -- the rules --------------------------------------------------------------------------


def validate(body: object) -> WireError | None:
    """The first rule ``body`` breaks, or ``None`` if OpenAI would accept it.

    Rules (each mirrors an HTTP 400 of OpenAI's Chat Completions API):

    - ``model`` is a string; ``messages`` a non-empty list of objects with a known role;
      system, developer, user and tool messages have content; an assistant message
      has content or ``tool_calls``.
    - ``tool_calls[]``: ``id`` a string of at most 40 characters
      (``string_above_max_length``), ``type`` ``"function"``, a function name and a
      string of arguments.
    - An assistant message with ``tool_calls`` is followed by exactly one ``tool``
      message per id before any other message; a ``tool`` message answers a
      ``tool_calls`` entry of the assistant message before it; a ``tool_call_id``
      answered twice anywhere is a ``Duplicate value for 'tool_call_id'``.
    - ``tools`` is not an empty array; ``tools[]``: type ``"function"``, name matching
      ``^[a-zA-Z0-9_-]{1,64}$``; a tool with ``strict: true`` has
      ``additionalProperties: false`` and every property required, in every object of
      its schema.
    - ``tool_choice`` and ``parallel_tool_calls`` only with tools; ``tool_choice`` is
      ``none``/``auto``/``required`` or names a declared function.
    - ``stream_options`` only with ``stream: true``.
    """
    if not isinstance(body, dict):
        return WireError("We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return WireError("you must provide a model parameter", param="model")
    err = _check_tools(body)
    if err is not None:
        return err
    if (
        "stream_options" in body
        and body.get("stream_options") is not None
        and not body.get("stream")
    ):
        return WireError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return _check_messages(body.get("messages"))


def _check_tools(body: dict[str, Any]) -> WireError | None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return WireError("Invalid type for 'tools': expected an array.", param="tools")
    if tools == []:
        return WireError(
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            param="tools",
            code="empty_array",
        )
    tools = tools or []
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            return WireError(
                f"Invalid value for '{where}.type': expected 'function'.",
                param=f"{where}.type",
                code="invalid_value",
            )
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return WireError(
                f"Missing required parameter: '{where}.function.name'.",
                param=f"{where}.function.name",
                code="missing_required_parameter",
            )
        name = fn["name"]
        if len(name) > 64:
            return WireError(
                f"Invalid '{where}.function.name': string too long. Expected a string with "
                f"maximum length 64, but got a string with length {len(name)} instead.",
                param=f"{where}.function.name",
                code="string_above_max_length",
            )
        if not TOOL_NAME_PATTERN.match(name):
            return WireError(
                f"Invalid '{where}.function.name': string does not match pattern. Expected a "
                "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
        names.append(name)
        if fn.get("strict") is True:
            problem = _strict_schema_problem(fn.get("parameters"), ())
            if problem is not None:
                return WireError(
                    f"Invalid schema for function '{name}': {problem}",
                    param=f"{where}.function.parameters",
                    code="invalid_function_parameters",
                )
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            return WireError(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
                param="tool_choice",
            )
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                return WireError(
                    f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and "
                    "'required'.",
                    param="tool_choice",
                    code="invalid_value",
                )
        elif isinstance(choice, dict):
            chosen = (choice.get("function") or {}).get("name")
            if chosen not in names:
                return WireError(
                    f"Invalid value for 'tool_choice': tool '{chosen}' is not one of the "
                    f"declared tools ({', '.join(names)}).",
                    param="tool_choice",
                    code="invalid_value",
                )
        else:
            return WireError("Invalid type for 'tool_choice'.", param="tool_choice")
    if body.get("parallel_tool_calls") is not None and not tools:
        return WireError(
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed "
            "when 'tools' are specified.",
            param="parallel_tool_calls",
        )
    return None


def _strict_schema_problem(schema: object, context: tuple[str, ...]) -> str | None:
    """What makes ``schema`` unfit for ``strict: true`` (OpenAI's structured outputs)."""
    if not isinstance(schema, dict):
        return None if context else f"In context={context}, schema must be a JSON object."
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return (
                f"In context={context}, 'additionalProperties' is required to be supplied "
                "and to be false."
            )
        props = schema.get("properties") or {}
        required = schema.get("required")
        missing = [k for k in props if not isinstance(required, list) or k not in required]
        if missing:
            return (
                f"In context={context}, 'required' is required to be supplied and to be an "
                f"array including every key in properties. Missing '{missing[0]}'."
            )
        for key, sub in props.items():
            problem = _strict_schema_problem(sub, (*context, "properties", key))
            if problem is not None:
                return problem
    for key in ("items",):
        if key in schema:
            problem = _strict_schema_problem(schema[key], (*context, key))
            if problem is not None:
                return problem
    for key in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(schema.get(key) or []):
            problem = _strict_schema_problem(sub, (*context, key, str(i)))
            if problem is not None:
                return problem
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            problem = _strict_schema_problem(sub, (*context, key, name))
            if problem is not None:
                return problem
    return None


def _check_messages(messages: object) -> WireError | None:
    if messages is None:
        return WireError(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        return WireError("Invalid type for 'messages': expected an array.", param="messages")
    if not messages:
        return WireError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but "
            "got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    answered: set[str] = set()
    block: set[str] | None = None  # ids of the assistant message the tool messages answer
    pending: list[str] = []  # ids of that message not answered yet
    block_at = 0
    for i, m in enumerate(messages):
        where = f"messages.[{i}]"
        if not isinstance(m, dict):
            return WireError(f"Invalid type for '{where}': expected an object.", param=where)
        role = m.get("role")
        if role not in _ROLES:
            return WireError(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                param=f"{where}.role",
                code="invalid_value",
                index=i,
            )
        if role != "tool":
            if pending:
                return _unanswered(pending, block_at)
            block = None
        if role in ("system", "developer", "user") and not _has_content(m):
            return WireError(
                f"Invalid value for '{where}.content': expected a string or an array of parts.",
                param=f"{where}.content",
                code="invalid_type",
                index=i,
            )
        if role == "assistant":
            calls = m.get("tool_calls")
            if not calls and not _has_content(m):
                return WireError(
                    f"Invalid value for '{where}.content': expected a string, got null.",
                    param=f"{where}.content",
                    code="invalid_type",
                    index=i,
                )
            if calls:
                err = _check_tool_calls(calls, i)
                if err is not None:
                    return err
                pending = [str(tc["id"]) for tc in calls]
                block = set(pending)
                block_at = i
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                return WireError(
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    param=f"{where}.tool_call_id",
                    code="missing_required_parameter",
                    index=i,
                )
            if not _has_content(m):
                return WireError(
                    f"Missing required parameter: '{where}.content'.",
                    param=f"{where}.content",
                    code="missing_required_parameter",
                    index=i,
                )
            if call_id in answered:
                return WireError(
                    f"Invalid parameter: Duplicate value for 'tool_call_id' of {call_id} in "
                    f"message[{i}]",
                    param="messages",
                    index=i,
                )
            if block is None:
                return WireError(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"{where}.role",
                    index=i,
                )
            if call_id not in pending:
                return WireError(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    param=f"{where}.tool_call_id",
                    index=i,
                )
            pending.remove(call_id)
            answered.add(call_id)
    if pending:
        return _unanswered(pending, block_at)
    return None


def _unanswered(pending: list[str], at: int) -> WireError:
    return WireError(
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(pending),
        param=f"messages.[{at}].role",
        index=at,
    )


def _has_content(m: dict[str, Any]) -> bool:
    return isinstance(m.get("content"), (str, list))


def _check_tool_calls(calls: object, i: int) -> WireError | None:
    where = f"messages[{i}].tool_calls"
    if not isinstance(calls, list):
        return WireError(f"Invalid type for '{where}': expected an array.", param=where, index=i)
    for j, tc in enumerate(calls):
        at = f"{where}[{j}]"
        if not isinstance(tc, dict):
            return WireError(f"Invalid type for '{at}': expected an object.", param=at, index=i)
        call_id = tc.get("id")
        if not isinstance(call_id, str):
            return WireError(
                f"Missing required parameter: '{at}.id'.",
                param=f"{at}.id",
                code="missing_required_parameter",
                index=i,
            )
        if len(call_id) > MAX_TOOL_CALL_ID_LENGTH:
            return WireError(
                f"Invalid '{at}.id': string too long. Expected a string with maximum length "
                f"{MAX_TOOL_CALL_ID_LENGTH}, but got a string with length {len(call_id)} "
                "instead.",
                param=f"{at}.id",
                code="string_above_max_length",
                index=i,
            )
        if tc.get("type") != "function":
            return WireError(
                f"Invalid value for '{at}.type': expected 'function'.",
                param=f"{at}.type",
                code="invalid_value",
                index=i,
            )
        fn = tc.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            return WireError(
                f"Missing required parameter: '{at}.function.name'.",
                param=f"{at}.function.name",
                code="missing_required_parameter",
                index=i,
            )
        if not isinstance(fn.get("arguments"), str):
            return WireError(
                f"Invalid type for '{at}.function.arguments': expected a string.",
                param=f"{at}.function.arguments",
                code="invalid_type",
                index=i,
            )
    return None


# -- brains -----------------------------------------------------------------------------

Brain: TypeAlias = Callable[[ChatRequest], Reply]

_ID_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")


def is_ack(output: str) -> bool:
    """Whether a tool output is the package's acknowledgement of a background call."""
    return "in the background" in output


def _offered(reply: Reply, tools: Sequence[str]) -> bool:
    """A model calls only tools it was offered."""
    if isinstance(reply, ToolCall):
        return reply.name in tools
    if isinstance(reply, (list, tuple)):
        return all(_offered(p, tools) for p in reply)
    return True


def keyword_brain(
    rules: Mapping[str, Reply] | None = None,
    *,
    on_instructions: Mapping[str, Reply] | None = None,
) -> Brain:
    """A brain that behaves like a compliant model.

    - asked to deliver background results (``Background results`` or ``cut off while
      telling`` in the system/developer text): says ``Result: <outputs>`` for the tool
      outputs whose call ids the instructions name (nothing if none);
      plus the ``on_instructions`` texts whose keys the instructions hold (a follow-up
      delivered with the results);
    - answering tool outputs (the last message is a tool message, or livekit's tool
      reply with ``tool_choice="auto"``): for the outputs of the latest tool calls this
      server made, ``One moment.`` for an acknowledgement, ``Done: <output>`` for a
      finished call (both if a turn had both);
    - otherwise the first of ``on_instructions`` whose key is in the system text, then
      the first of ``rules`` whose key is in the last user message and whose tool calls
      are offered, else nothing.
    """
    rules = dict(rules or {})
    on_instructions = dict(on_instructions or {})

    def decide(req: ChatRequest) -> Reply:
        text = req.instructions
        extra = [r for key, r in on_instructions.items() if key in text and isinstance(r, str)]
        if "Background results" in text or "cut off while telling" in text:
            named = set(_ID_TOKEN.findall(text))
            said = [out for cid, out in req.outputs() if cid in named]
            return " ".join(([f"Result: {'; '.join(said)}"] if said else []) + extra)
        if req.last.get("role") == "tool" or req.tool_choice == "auto":
            outs = [out for _cid, out in req.latest_model_outputs()]
            if outs:
                parts = ["One moment."] if any(is_ack(o) for o in outs) else []
                parts += [f"Done: {o}" for o in outs if not is_ack(o)]
                return " ".join(parts)
        for key, reply in on_instructions.items():
            if key in text:
                return reply
        user = req.last_user_text.lower()
        for key, reply in rules.items():
            if key.lower() in user and _offered(reply, req.tool_names):
                return reply
        return ""

    return decide


_DEFAULT_BRAIN = keyword_brain()


# -- the server -------------------------------------------------------------------------


class OpenAIServer:
    """A strict, scripted OpenAI Chat Completions server on 127.0.0.1.

    Args:
        brain: Decides each accepted request's answer (default: `keyword_brain()`),
            or a sequence of replies consumed one per accepted request.
        delay: Seconds to wait before the first chunk (model latency).
        chunk_delay: Seconds between two chunks.
        call_id_length: Length of generated tool call ids (OpenAI's are 29:
            ``call_`` + 24 characters; other providers' can be longer).
        usage: Send a usage chunk when ``stream_options.include_usage`` asks for it.
    """

    def __init__(
        self,
        brain: Brain | Sequence[Reply] | None = None,
        *,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        call_id_length: int = 29,
        usage: bool = True,
    ) -> None:
        self.brain: Brain | Sequence[Reply] | None = brain
        """What decides the answers; ``None`` means `keyword_brain()` with no rules."""
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.call_id_length = call_id_length
        self.usage = usage
        self.requests: list[ChatRequest] = []
        """Every chat completion request received, in order, with its verdict."""
        self.brain_errors: list[tuple[ChatRequest, Exception]] = []
        """Exceptions the brain raised (answered with a 400 so livekit does not retry)."""
        self.model_list_requests = 0
        self._script_pos = 0
        self._emitted: list[tuple[str, ...]] = []
        self._ids = itertools.count(1)
        self._reported = 0
        self._runner: web.AppRunner | None = None
        self._llms: list[Any] = []
        self.port = 0

    # lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (append ``/v1`` for a client's base URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    async def start(self, port: int = 0) -> OpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def aclose(self) -> None:
        """Close the LLMs made by `llm`, then the server."""
        for made in self._llms:
            await made.aclose()
        self._llms.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def llm(self, model: str = "gpt-4o-mini", **kwargs: Any) -> Any:
        """A real ``livekit.plugins.openai.LLM`` talking to this server (closed by `aclose`)."""
        from livekit.plugins import openai

        made = openai.LLM(model=model, base_url=self.base_url, api_key="test", **kwargs)
        self._llms.append(made)
        return made

    # results

    @property
    def accepted(self) -> list[ChatRequest]:
        return [r for r in self.requests if r.error is None]

    @property
    def rejections(self) -> list[ChatRequest]:
        """The refused requests."""
        return [r for r in self.requests if r.error is not None]

    def dump_rejections(self, requests: Sequence[ChatRequest] | None = None) -> str:
        """Each refused request: the error, then its messages around the offending one."""
        out: list[str] = []
        for r in self.rejections if requests is None else requests:
            assert r.error is not None
            out.append(
                f"request #{r.n} refused ({r.error.status}, code={r.error.code}, "
                f"param={r.error.param}): {r.error.message}"
            )
            out.append(f"  tools: {', '.join(r.tool_names) or '-'}")
            out.append(r.describe(around=r.error.index))
        return "\n".join(out)

    @property
    def reported(self) -> int:
        """How many refused requests `assert_clean` has reported so far."""
        return self._reported

    def assert_clean(self) -> None:
        """Fail, naming the offending messages, if a request was refused.

        Rejections it reports are not reported again (by the fixture's teardown check).
        """
        if self.brain_errors:
            errors, self.brain_errors = self.brain_errors, []
            raise AssertionError(
                "the brain raised on "
                + "; ".join(f"request #{r.n}: {e!r}\n{r.describe()}" for r, e in errors)
            ) from errors[0][1]
        fresh = self.rejections[self._reported :]
        self._reported = len(self.rejections)
        assert not fresh, (
            f"{len(fresh)} request(s) refused by the strict OpenAI server:\n"
            + self.dump_rejections(fresh)
        )

    def tool_list_changes(self, requests: Sequence[ChatRequest] | None = None) -> int:
        """How often the offered tool list differs from the previous request's."""
        reqs = self.requests if requests is None else list(requests)
        return sum(1 for a, b in itertools.pairwise(reqs) if set(a.tool_names) != set(b.tool_names))

    # handlers

    async def _models(self, request: web.Request) -> web.Response:
        self.model_list_requests += 1
        return web.json_response(
            {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0}]}
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        try:
            body: object = await request.json()
        except ValueError:
            body = None
        record = ChatRequest(
            n=len(self.requests),
            body=body if isinstance(body, dict) else {},
            model_calls=tuple(self._emitted),
        )
        self.requests.append(record)
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            record.error = WireError(
                "You didn't provide an API key.", status=401, code="invalid_api_key"
            )
        else:
            record.error = validate(body)
        if record.error is not None:
            return web.json_response(record.error.body(), status=record.error.status)

        try:
            reply = self._decide(record)
        except Exception as e:  # a bug in the test's brain: fail the test, not the session
            self.brain_errors.append((record, e))
            reply = ErrorReply(400, f"the test brain raised {e!r}", "brain_error")
        if isinstance(reply, ErrorReply):
            record.reply = reply
            err = {"message": reply.message, "type": reply.type, "param": None, "code": None}
            return web.json_response({"error": err}, status=reply.status)
        parts = self._parts(reply)
        record.reply = parts
        emitted = tuple(p.call_id for p in parts if isinstance(p, ToolCall) and p.call_id)
        if emitted:
            self._emitted.append(emitted)
        assert isinstance(body, dict)
        return await self._stream(request, record, body, parts)

    def _decide(self, record: ChatRequest) -> Reply:
        if self.brain is None:
            return _DEFAULT_BRAIN(record)
        if callable(self.brain):
            return self.brain(record)
        script = list(self.brain)
        if self._script_pos >= len(script):
            return None
        self._script_pos += 1
        return script[self._script_pos - 1]

    def _parts(self, reply: Reply) -> list[str | ToolCall]:
        if reply is None:
            return []
        if isinstance(reply, (str, ToolCall)):
            raw: Sequence[str | ToolCall] = [reply]
        else:
            assert not isinstance(reply, ErrorReply)
            raw = reply
        parts: list[str | ToolCall] = []
        for part in raw:
            if isinstance(part, ToolCall) and part.call_id is None:
                part = ToolCall(part.name, part.arguments, self._new_call_id())
            if part:
                parts.append(part)
        return parts

    def _new_call_id(self) -> str:
        rnd = random.Random(next(self._ids))
        alphabet = string.ascii_letters + string.digits
        return "call_" + "".join(rnd.choice(alphabet) for _ in range(self.call_id_length - 5))

    async def _stream(
        self,
        request: web.Request,
        record: ChatRequest,
        body: dict[str, Any],
        parts: list[str | ToolCall],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        include_usage = self.usage and bool((body.get("stream_options") or {}).get("include_usage"))
        chunk_id = f"chatcmpl-{record.n}"
        created = int(time.time())
        model = str(body.get("model"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_strict_test",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        try:
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            texts = [p for p in parts if isinstance(p, str)]
            calls = [p for p in parts if isinstance(p, ToolCall)]
            for data in _events(chunk, texts, calls):
                await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
            if include_usage:
                prompt = len(json.dumps(body.get("messages"))) // 4
                completion = sum(
                    len(json.dumps(p if isinstance(p, str) else p.name)) for p in parts
                )
                await resp.write(
                    b"data: "
                    + json.dumps(
                        {
                            "id": chunk_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "system_fingerprint": "fp_strict_test",
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt,
                                "completion_tokens": completion,
                                "total_tokens": prompt + completion,
                                "prompt_tokens_details": {"cached_tokens": 0},
                                "completion_tokens_details": {"reasoning_tokens": 0},
                            },
                        }
                    ).encode()
                    + b"\n\n"
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            record.aborted = True
        except asyncio.CancelledError:
            record.aborted = True
            raise
        return resp


def _events(
    chunk: Callable[..., dict[str, Any]], texts: list[str], calls: list[ToolCall]
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` payloads of one answer, as OpenAI streams them."""
    yield chunk(
        {"role": "assistant", "content": "" if not calls or texts else None, "refusal": None}
    )
    for text in texts:
        words = text.split(" ")
        for k, word in enumerate(words):
            yield chunk({"content": word + (" " if k < len(words) - 1 else "")})
    for index, call in enumerate(calls):
        args = (
            call.arguments
            if isinstance(call.arguments, str)
            else json.dumps(dict(call.arguments), separators=(",", ":"))
        )
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            if piece:
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if calls else "stop")


# -- pytest -----------------------------------------------------------------------------


@pytest.fixture(name="openai_server")
async def openai_server_fixture() -> AsyncIterator[OpenAIServer]:
    """A started `OpenAIServer`; fails the test if a refused request went unreported."""
    server = OpenAIServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
    server.assert_clean()


# -- standalone -------------------------------------------------------------------------


def _load_brain(spec: str) -> Brain:
    module, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    return obj() if isinstance(obj, type) else obj  # type: ignore[no-any-return]


async def _serve(port: int, brain: Brain | None) -> None:
    server = OpenAIServer(brain)
    await server.start(port)
    print(f"strict OpenAI server on {server.base_url} (Ctrl+C to stop)", flush=True)
    reported = 0
    try:
        while True:
            await asyncio.sleep(0.5)
            for r in server.requests[reported:]:
                print(f"#{r.n} {'OK' if r.error is None else 'REFUSED'}: {r.reply or r.error}")
            reported = len(server.requests)
    finally:
        await server.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--brain", help="module:callable deciding the answers")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, _load_brain(args.brain) if args.brain else None))


if __name__ == "__main__":
    # run the importable module's `main`, so a brain importing `ToolCall` from it and the
    # server agree on the classes
    importlib.import_module(__spec__.name).main() if __spec__ else main()
