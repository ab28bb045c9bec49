"""`AsyncRunContext`: the run context of a background tool call."""

from __future__ import annotations

from typing import Generic, TypeVar

from livekit.agents import Agent, RunContext

from ._ports import CallHandle, CancelCallback
from ._spec import FollowUpMode
from .options import Delivery

__all__ = ["AskTimeout", "AsyncRunContext", "CancelCallback"]

Userdata_T = TypeVar("Userdata_T")


class AskTimeout(TimeoutError):
    """`AsyncRunContext.ask` got no answer in time.

    Attributes:
        question_id: The question's id (what ``answer_question`` would have named).
        timeout: The seconds it waited.
    """

    def __init__(self, question_id: str, timeout: float) -> None:
        super().__init__(f"no answer to question {question_id} within {timeout:g} seconds")
        self.question_id = question_id
        self.timeout = timeout


class QuestionNotAsked(RuntimeError):
    """`AsyncRunContext.ask`'s question could not be put to the caller: every reply
    meant to ask it ended without the agent saying anything (up to
    ``max_redeliveries`` re-asks), its reply failed, or its origin or the session
    closed before it was asked. The call goes on (or ends) without an answer.

    Attributes:
        question_id: The question's id.
        reason: Why, as in `ReplyUpdated.reason` (``max_redeliveries``,
            ``reply_failed``, ``origin_closed``, ``session_closed``).
    """

    def __init__(self, question_id: str, reason: str | None) -> None:
        super().__init__(f"question {question_id} could not be put to the caller ({reason})")
        self.question_id = question_id
        self.reason = reason


class AsyncRunContext(RunContext[Userdata_T], Generic[Userdata_T]):
    """The context of a tool call that runs in the background.

    Declare a parameter of this type on a tool decorated with
    `livekit_async_tools.function_tool` and the tool runs as a background task:
    the LLM is acknowledged at once and the result is spoken later, when the
    agent that started it is current again and the session is quiet.

    Everything of `livekit.agents.RunContext` works as usual (``session``,
    ``userdata``, ``function_call``, ``speech_handle``).

    Example::

        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            \"\"\"Search flights to a city.\"\"\"
            await ctx.update(f"searching flights to {city}")
            flights = await flight_api.search(city)
            return f"found {len(flights)} flights"
    """

    def __init__(self, run_ctx: RunContext[Userdata_T], call: CallHandle) -> None:
        super().__init__(
            session=run_ctx.session,
            speech_handle=run_ctx.speech_handle,
            function_call=run_ctx.function_call,
        )
        self._async_call = call

    @property
    def call_id(self) -> str:
        """The LLM's id of this call."""
        return self._async_call.call_id

    @property
    def origin(self) -> Agent:
        """The agent that dispatched the call; its results are spoken by it."""
        return self._async_call.origin

    @property
    def elapsed(self) -> float:
        """Seconds since the call started (event-loop time)."""
        return self._async_call.elapsed

    async def update(  # type: ignore[override]
        self, message: object, *, delivery: Delivery = "when_idle"
    ) -> None:
        """Report progress.

        The first update of a call acknowledges it: its message becomes the tool
        output the LLM sees now. Later updates are inserted into the origin's
        context at once and spoken when the session is next quiet.

        Args:
            message: A ``str`` or any JSON-serialisable object.
            delivery: ``"when_idle"`` (the default) speaks it at the next quiet
                moment; ``"silent"`` only records it in the context.

        Raises:
            TypeError: ``message`` is not a ``str`` and not JSON-serialisable, or
                ``delivery`` is not a known mode.
            RuntimeError: The call has already ended.
        """
        await self._async_call.update(message, delivery=delivery)

    def steer(self, text: str) -> None:
        """Give the origin agent a note its LLM sees before its next request.

        Never spoken; if the origin was handed off for good, the ``on_handoff``
        policy decides which agent gets it (see `AsyncToolRuntime.steer`).
        """
        self._async_call.steer(text)

    def follow_up(self, text: str, *, mode: FollowUpMode = "one_at_a_time") -> str:
        """Queue an instruction the origin agent speaks at its next quiet moment.

        Same target rules as the call's results (see `AsyncToolRuntime.follow_up`).

        Returns:
            The follow-up's id (its ``call_ids`` in `ReplyUpdated` events).
        """
        return self._async_call.follow_up(text, mode=mode)

    async def ask(self, question: str, *, timeout: float | None = None) -> str:
        """Ask the caller a question and wait for the answer.

        The question is spoken by the origin through the gate, like a progress update
        (when it is current and the session is quiet, never over the caller, not while
        an `AgentTask` has the floor), and re-asked if the caller cuts it off or the
        reply meant to ask it says nothing (the LLM only called a tool). The LLM
        passes the caller's answer back with the ``answer_question`` control tool, so
        it can interpret it ("yes, the later one is fine"). If the caller changes the
        subject, the question stays open. Questions of the session are asked one at
        a time, oldest first. A call that has not been acknowledged yet is
        acknowledged first.

        Example::

            answer = await ctx.ask("The 7:40 is sold out. Would the 8:15 do?", timeout=60)

        Args:
            question: What to ask, in plain words.
            timeout: Seconds to wait for the answer (``None``: until the call ends).

        Returns:
            The answer, as the LLM passed it.

        Raises:
            AskTimeout: No answer within ``timeout``.
            QuestionNotAsked: The question could not be put to the caller (see its
                ``reason``); a `RuntimeError`.
            RuntimeError: The call has ended, or the control tools are off
                (``control_tools="never"`` offers no ``answer_question``).
            ValueError: ``question`` is empty or ``timeout`` is not a positive number.
        """
        return await self._async_call.ask(question, timeout=timeout)

    def on_cancel(self, callback: CancelCallback) -> None:
        """Register a cleanup hook run once if the call is cancelled or times out.

        Args:
            callback: A sync callable, or one returning an awaitable. Its own
                exceptions are logged, never raised into the session.
        """
        self._async_call.on_cancel(callback)
