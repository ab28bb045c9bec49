"""Questions background calls ask the caller (`AsyncRunContext.ask`), one at a time."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass, field

from livekit.agents import llm

from . import _policy
from ._pending import Pending
from ._ports import CallIdentity, PendingItem, Services
from .context import AskTimeout, QuestionNotAsked

__all__ = ["Questions"]


@dataclass(eq=False)
class _Question:
    call: CallIdentity
    text: str
    suffix: str
    question_id: str
    answer: asyncio.Future[str]
    item: PendingItem | None = None
    asked: bool = field(default=False)


class Questions:
    """The session's open questions. Each is a call item (its output names the
    question id and says to call ``answer_question``), spoken through the gate like any
    progress. Only the oldest open question is put to the caller; the next one waits
    until it is answered, expires or its call stops. Implements `_ports.Asker`."""

    def __init__(self, services: Services, pending: Pending) -> None:
        self._services = services
        self._pending = pending
        self._open: list[_Question] = []
        self._numbers: dict[str, itertools.count[int]] = {}

    def __len__(self) -> int:
        return len(self._open)

    async def ask(self, call: CallIdentity, question: str, timeout: float | None) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"ask() needs a question, got {question!r}")
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
        ):
            raise ValueError(f"ask() timeout must be a positive number of seconds, got {timeout!r}")
        if self._services.options.control_tools == "never":
            raise RuntimeError(
                "ask() needs the answer_question control tool, which "
                "control_tools='never' does not offer; use another control_tools setting"
            )
        n = next(self._numbers.setdefault(call.call_id, itertools.count(1)))
        suffix = f"question_{n}"
        q = _Question(
            call=call,
            text=question,
            suffix=suffix,
            question_id=_policy.derived_call_id(call.call_id, suffix),
            answer=asyncio.get_running_loop().create_future(),
        )
        self._open.append(q)
        self._next()
        try:
            if timeout is None:
                return await q.answer
            try:
                return await asyncio.wait_for(q.answer, timeout)
            except asyncio.TimeoutError:
                raise AskTimeout(q.question_id, timeout) from None
        finally:
            self._close(q)

    def answer(self, question_id: str, answer: str) -> CallIdentity:
        """Pass ``answer`` to the question put to the caller under ``question_id``.

        Raises:
            llm.ToolError: No such question is open (answered, expired, call ended).
        """
        q = next((q for q in self._open if q.question_id == question_id and q.asked), None)
        if q is None or q.answer.done():
            raise llm.ToolError(
                self._services.options.answer_unknown_template.format(question_id=question_id)
            )
        q.answer.set_result(answer)
        return q.call

    def _next(self) -> None:
        """Put the oldest open question to the caller, unless one already is."""
        if not self._open or self._open[0].asked:
            return
        q = self._open[0]
        q.asked = True
        opts = self._services.options
        q.item = self._pending.add(
            q.call,
            kind="question",
            suffix=q.suffix,
            output=opts.ask_template.format(
                tool_name=q.call.tool_name,
                call_id=q.call.call_id,
                question_id=q.question_id,
                question=q.text,
            ),
            is_error=False,
            delivery="when_idle",
            on_end=lambda status, reason: self._ended(q, status, reason),
        )
        if q.item is None and not q.answer.done():  # the session is closed
            q.answer.set_exception(QuestionNotAsked(q.question_id, "session_closed"))

    def _ended(self, q: _Question, status: str, reason: str | None) -> None:
        """The question's item reached a terminal status: unless it was said (or taken
        back because the question closed), the caller was never asked."""
        if status == "delivered" or reason == "question_closed" or q.answer.done():
            return
        q.answer.set_exception(QuestionNotAsked(q.question_id, reason))

    def _close(self, q: _Question) -> None:
        if q.answer.done() and not q.answer.cancelled():
            q.answer.exception()  # retrieved, also when the call was stopped meanwhile
        if q in self._open:
            self._open.remove(q)
        if q.item is not None:
            self._pending.withdraw([q.item], "question_closed")
        self._next()
