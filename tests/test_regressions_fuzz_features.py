"""Fuzzer findings about the newer features (``ctx.ask``, ``on_timeout="ask"``, a
handoff from a call's result), each a minimized plan (tests/fuzz) that replays
deterministically. Each pinned a package bug (as ``xfail(strict=True)``) until the
engine was fixed; the mechanism is in its docstring. A new, unfixed finding goes in
as ``xfail(strict=True, reason=<mechanism>)``."""

from __future__ import annotations

import pytest

from livekit_async_tools._compat import SILENT_AGENT_CLOSE
from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

from .fuzz.harness import Outcome, run_plan
from .fuzz.plan import Job, Plan, ToolDef


def violations(outcome: Outcome, invariant: str) -> list[str]:
    return [v.message for v in outcome.violations if v.invariant == invariant]


def test_an_overdue_question_does_not_supersede_an_unspoken_ask() -> None:
    """Was: Deadline._expired queued the overdue item as a progress update, which
    superseded the call's unspoken question (skipped(superseded)) while Questions kept
    it as asked: after extend_task the call waited forever for an answer nobody was
    asked for, and every later question of the session queued behind it."""
    # the call asks at once, its question cannot be spoken before the 2 s deadline; the
    # caller keeps waiting (extend)
    plan = Plan(
        tools=(ToolDef(timeout=2.0, on_timeout="ask"),),
        jobs=(Job(ops=(("ask", None),)),),
        # an ordinary 3 s tool in the same response keeps the gate closed past the deadline
        actions=((("tool", 0, 0, False, False), ("block", 3.0)),),
        steps=((1.0, "user", 0),),
        answer_delay=0.5,
        overdue_choice="extend",
        extend_seconds=30.0,
    )
    outcome = run_plan(plan)
    assert not violations(outcome, "Q"), outcome.report()
    assert not outcome.violations, outcome.report()


def test_a_redelivered_handing_off_result_does_not_hand_off_again() -> None:
    """Was: DeliveryQueue._speak called update_agent(new) after generate_reply but left
    the item's handoff set; a cut-off reply's items were re-queued with it, and once the
    origin was current again the re-delivery handed off to the same agent again."""
    if FAKE_VOICE_SUPPORTED:
        # the caller cuts off the reply carrying two handing-off results; the returned
        # agent transfers back to the origin, which re-delivers them
        plan = Plan(
            control_tools="never",
            voice=True,
            tools=(ToolDef(result_delivery="interrupt"),),
            jobs=(
                Job(),
                Job(ops=(("ask", None), ("follow_up", "one_at_a_time")), end="agent_output"),
            ),
            actions=(
                (("transfer", 0),),
                (("tool", 0, 1, False, False), ("tool", 0, 1, True, False)),
            ),
            steps=(
                (5.0, "on", "listening", 0.1, ("say", 0, 3.0)),
                (6.0, "on", "started", 0.1, ("barge", 0)),
                (19.0, "barge", 1),
            ),
        )
    else:
        # livekit < 1.5 (no fake voice): the app cuts the reply off; the cut result is
        # held for its origin (on_handoff="hold"), which settling hands back to
        plan = Plan(
            word_time=0.3,
            tools=(ToolDef(on_handoff="hold"),),
            jobs=(Job(ops=(("update", "silent"),), end="agent_output"),),
            actions=((("transfer", 0),), (("tool", 0, 0, False, False),)),
            steps=((0.5, "on", "scheduled", 0.1, ("barge", 0)), (1.0, "user", 1)),
        )
    outcome = run_plan(plan)
    assert not violations(outcome, "H"), outcome.report()
    assert not outcome.violations, outcome.report()


def test_extend_task_is_refused_while_the_overdue_call_is_being_stopped() -> None:
    """Was: Deadline kept overdue=True and its timer while the call was stopping (the
    decision window over, its on_cancel hooks running): Deadline.extend accepted the
    caller's extend_task, re-armed the timer, and its _expired asked the caller again
    about a call that then ended timed_out anyway."""
    plan = Plan(
        llm_delay=0.5,
        word_time=0.3,
        tools=(ToolDef(), ToolDef(timeout=9.0, on_timeout="ask")),
        jobs=(Job(ops=(("ask", None),), hooks=(("async", 3.0),)),),
        actions=(
            (("cancel", 0, 2),),
            (("text",),),
            (("finish",),),
            (("text",),),
            (("list",),),
            (("tool", 0, 0, False, False),),
            (("tool", 1, 0, False, False), ("task",)),
        ),
        steps=((18.0, "barge", 6),),
        decision_window=5.0,
        overdue_choice="extend",
        overdue_delay=4.0,
        extend_seconds=1.0,
    )
    outcome = run_plan(plan)
    assert not violations(outcome, "T"), outcome.report()


def test_cancel_task_for_a_call_stopped_as_its_decision_window_ends_is_not_refused() -> None:
    """Was: the LLM's cancel_task for an overdue (non-cancellable) call ran just after
    the decision window ended: Deadline had cleared ``overdue`` and begun stopping the
    call as timed_out (its on_cancel hooks running), so Core.cancel refused it as "cannot
    be cancelled". A call already being stopped is now waited for and its own outcome
    told (cancel_too_late_template)."""
    if not FAKE_VOICE_SUPPORTED:
        pytest.skip("the plan is a voice call (FakeVoice needs livekit-agents 1.8)")
    plan = Plan(
        seed=6967,
        settle_delay=0.3,
        max_redeliveries=2,
        on_handoff="forward",
        control_tools="auto",
        llm_delay=0.0,
        word_time=0.3,
        empty_rate=0.0,
        n_agents=1,
        voice=True,
        tools=(
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="reject",
                duplicate_scope="name_and_args",
                timeout=2.0,
                on_handoff=None,
                result_delivery="when_idle",
                on_timeout="ask",
            ),
        ),
        jobs=(
            Job(ops=(), end="return", hooks=()),
            Job(ops=(), end="return", hooks=()),
            Job(ops=(("ask", None),), end="return", hooks=(("async", 3.0),)),
        ),
        actions=(
            (("finish",),),
            (("tool", 0, 0, False, True),),
            (("text",),),
            (("tool", 0, 0, False, True),),
            (("text",), ("tool", 0, 2, False, True)),
        ),
        steps=((17.0, "say", 0, 1.5), (20.0, "say", 4, 0.2), (23.0, "cancel", 2, 2)),
        decision_window=5.0,
        answer_delay=None,
        overdue_choice="cancel",
        overdue_delay=1.0,
        extend_seconds=5.0,
    )
    outcome = run_plan(plan)
    assert not violations(outcome, "T"), outcome.report()
    assert not outcome.violations, outcome.report()


def test_two_handing_off_results_ready_together_hand_off_one_at_a_time() -> None:
    """Was: two results that each return an agent went into one reply; the reply handed
    off to the first agent and silently dropped the second's handoff. One reply now
    carries at most one handing-off result (`_policy.select`); the other waits and is
    delivered by the rules for its (now handed-off) origin."""
    plan = Plan(
        seed=0,
        settle_delay=0.05,
        max_redeliveries=2,
        on_handoff="forward",
        control_tools="auto",
        llm_delay=0.5,
        word_time=0.0,
        empty_rate=0.0,
        n_agents=1,
        voice=False,
        tools=(
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="reject",
                duplicate_scope="name_and_args",
                timeout=None,
                on_handoff="hold",
                result_delivery="when_idle",
                on_timeout="cancel",
            ),
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="reject",
                duplicate_scope="name_and_args",
                timeout=None,
                on_handoff=None,
                result_delivery="when_idle",
                on_timeout="cancel",
            ),
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="reject",
                duplicate_scope="name_and_args",
                timeout=None,
                on_handoff=None,
                result_delivery="interrupt",
                on_timeout="cancel",
            ),
        ),
        jobs=(
            Job(
                ops=(("update", "when_idle"), ("update", "interrupt")), end="agent_output", hooks=()
            ),
        ),
        actions=(
            (("finish",),),
            (("cancel", 0, 1),),
            (("tool", 2, 0, True, True), ("text",), ("tool", 0, 0, False, True)),
        ),
        steps=((17.0, "on", "ended", 0.1, ("barge", 2)), (22.0, "barge", 2)),
        decision_window=60.0,
        answer_delay=None,
        overdue_choice="wait",
        overdue_delay=1.0,
        extend_seconds=5.0,
    )
    outcome = run_plan(plan)
    assert not violations(outcome, "H"), outcome.report()
    assert not outcome.violations, outcome.report()


def test_a_question_closed_while_its_reply_is_spoken_is_not_asked_again() -> None:
    """Was: the ask timed out while the reply asking its question was being spoken;
    Questions withdrew the item, which only took back items still waiting, so when the
    caller then cut that reply off the question went back to the queue and was asked
    again, after its ask had ended (and while the next call's question was open). Now a
    withdrawn item is marked, and a cut-off reply skips it with the withdrawal's reason
    (``question_closed``). Seed 14013724."""
    if not FAKE_VOICE_SUPPORTED:
        pytest.skip("the plan needs a caller who speaks (FakeVoice, livekit-agents >= 1.5)")
    plan = Plan(
        seed=0,
        settle_delay=0.05,
        max_redeliveries=2,
        on_handoff="forward",
        control_tools="auto",
        llm_delay=0.0,
        word_time=0.05,
        empty_rate=0.2,
        n_agents=1,
        voice=True,
        tools=(ToolDef(ack_after=1.0, result_delivery="interrupt"),),
        jobs=(
            Job(ops=(), end="return", hooks=()),
            Job(ops=(("update", "interrupt"), ("sleep", 0.5)), end="return", hooks=()),
            Job(ops=(("ask", 3.0), ("update", "silent")), end="return", hooks=()),
        ),
        actions=(
            (("cancel", 0, 0),),
            (("tool", 0, 1, True, False), ("tool", 0, 2, False, False)),
        ),
        steps=(
            (16.0, "on", "updated", 1.0, ("say", 1, 3.0)),
            (18.0, "user", 1),
            (25.0, "on", "started", 1.0, ("say", 1, 3.0)),
            (28.0, "on", "ended", 1.0, ("user", 5)),
        ),
        decision_window=60.0,
        overdue_choice="wait",
    )
    outcome = run_plan(plan)
    assert not outcome.violations, outcome.report()
    closed = [line for line in outcome.log if "skipped question_closed" in line]
    assert closed, outcome.report()


def test_a_holding_line_cut_off_by_the_result_it_waited_for_is_not_said_again() -> None:
    """Was (fuzz seed 694, livekit-agents 1.8.9 and 1.4.6, minimized): the call's holding
    line is being spoken when the call ends; its result (``result_delivery="interrupt"``)
    cuts the line off. ``task_ended`` pokes `Holding` first, but the line is no longer
    pending then (it is the reply being spoken), so nothing is withdrawn; the cut reply's
    items go back to the queue (`DeliveryQueue._requeue`: a follow-up is never
    superseded), and the urgent delivery takes the line and the result into one reply.
    The line ("still on it") is said after, and with, the result it was waiting for,
    which docs/holding.md rules out ("a line is never said after the result it was
    waiting for"; "a line the caller cuts off is withdrawn ... instead of being said
    again"). Invariant L(a): a line's reply is scheduled while none of its agent's calls
    runs. Now `Pending.withdraw_id` marks a line being said as withdrawn too, and a cut
    reply skips a withdrawn item instead of re-queueing it."""
    plan = Plan(
        word_time=0.3,
        tools=(ToolDef(ack_after=0.2, result_delivery="interrupt"),),
        jobs=(Job(ops=(("sleep", 3.0),)),),
        actions=((("tool", 0, 0, False, False),),),
        steps=((1.0, "user", 0),),
        hold_after=0.5,
    )
    outcome = run_plan(plan)
    assert not violations(outcome, "L"), outcome.report()
    assert not outcome.violations, outcome.report()


@pytest.mark.parametrize("question", ["overdue", "ask"])
def test_a_holding_line_queued_before_a_question_opens_is_not_said_with_it(
    question: str,
) -> None:
    """Was (fuzz seed 972, livekit-agents 1.8.9 and 1.4.6, minimized; the ``ask`` variant
    is the same mechanism by hand): `Holding` checked for an open question only when the
    silence ends and queues the line (``_silent``); the line then waits ``settle_delay``
    (1 s here) for the gate. Meanwhile the call becomes overdue (``on_timeout="ask"``),
    or calls ``ctx.ask``: that queues a question item but is no poke, so the line is not
    withdrawn, and the next reply carries both the question and "still on it". The docs
    promise no line while a question is open (docs/holding.md, "Not while a question is
    open"). Invariant L(b). Now `Holding.recheck` (on every change the runtime sees)
    withdraws a queued line as soon as a question is open."""
    if question == "overdue":
        tool = ToolDef(timeout=2.0, on_timeout="ask")
        ops: tuple[tuple[object, ...], ...] = (("update", "silent"), ("sleep", 12.0))
    else:
        tool = ToolDef()
        ops = (("update", "silent"), ("sleep", 1.8), ("ask", None), ("sleep", 12.0))
    plan = Plan(
        seed=15740,
        settle_delay=1.0,
        word_time=0.3,
        tools=(tool,),
        jobs=(Job(ops=ops),),
        actions=((("tool", 0, 0, False, False),),),
        steps=((3.0, "user", 0),),
        answer_delay=1.0,
        hold_after=0.6,
    )
    outcome = run_plan(plan)
    assert not violations(outcome, "L"), outcome.report()
    assert not outcome.violations, outcome.report()


def test_an_ask_whose_origin_closed_raises_question_not_asked_and_the_call_goes_on() -> None:
    """Seed 15000000+ (after ``QuestionNotAsked`` came in): the call's origin handed off
    for good under ``on_handoff="cancel"`` in the response that started it, so its
    question was dropped (``origin_closed``) and ``ask`` raised ``QuestionNotAsked``
    instead of waiting for the cancellation; the tool went on and asked again while the
    call was being stopped, which ``ask`` refuses before queueing anything. The harness
    expected an item for that second ask; it now expects one only while the call is not
    being stopped."""
    plan = Plan(
        seed=0,
        settle_delay=0.05,
        max_redeliveries=2,
        on_handoff="cancel",
        control_tools="auto",
        llm_delay=0.0,
        word_time=0.0,
        empty_rate=0.0,
        n_agents=2,
        voice=False,
        tools=(
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="reject",
                duplicate_scope="name_and_args",
                timeout=None,
                on_handoff=None,
                result_delivery="silent",
                on_timeout="cancel",
            ),
        ),
        jobs=(
            Job(ops=(), end="return", hooks=()),
            Job(ops=(("ask", 15.0), ("ask", None)), end="return", hooks=()),
        ),
        actions=(
            (("task",),),
            (("block", 1.0),),
            (("extend", 0, 2, 5.0),),
            (("transfer", 0), ("tool", 2, 1, False, False)),
        ),
        steps=(
            (2.0, "user", 3),
            (5.0, "on", "scheduled", 0.0, ("update_agent", 1)),
            (18.0, "user", 3),
        ),
        decision_window=60.0,
        answer_delay=None,
        overdue_choice="wait",
        overdue_delay=1.0,
        extend_seconds=5.0,
        hold_after=None,
    )
    outcome = run_plan(plan)
    assert not outcome.violations, outcome.report()
    if not SILENT_AGENT_CLOSE:  # livekit < 1.5 closes the origin later: no drop then
        assert any("not_asked 'origin_closed'" in line for line in outcome.log), outcome.report()


def test_extend_task_decided_before_the_deadline_and_run_at_it_is_legitimate() -> None:
    """Seed 15000000+: the LLM decided ``extend_task`` 0.5 s before the call's deadline
    (``llm_delay``) and the tool ran at the very instant the call became overdue; the
    engine accepted it, rightly. The oracle judged "not overdue" from the moment of the
    decision; it now judges from the moment the tool ran."""
    if not FAKE_VOICE_SUPPORTED:
        pytest.skip("the plan is a voice call (FakeVoice needs livekit-agents 1.8)")
    plan = Plan(
        seed=0,
        settle_delay=0.05,
        max_redeliveries=2,
        on_handoff="forward",
        control_tools="auto",
        llm_delay=0.5,
        word_time=0.0,
        empty_rate=0.0,
        n_agents=1,
        voice=True,
        tools=(
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="reject",
                duplicate_scope="name_and_args",
                timeout=2.0,
                on_handoff=None,
                result_delivery="when_idle",
                on_timeout="ask",
            ),
        ),
        jobs=(Job(ops=(("sleep", 4.0),), end="return", hooks=()),),
        actions=(
            (("list",),),
            (("block", 1.0),),
            (("text",), ("tool", 0, 0, True, False)),
            (("extend", 2, 1, 0.5),),
        ),
        steps=((12.0, "say", 2, 1.5), (16.0, "user", 3)),
        decision_window=60.0,
        answer_delay=None,
        overdue_choice="wait",
        overdue_delay=1.0,
        extend_seconds=5.0,
        hold_after=None,
    )
    outcome = run_plan(plan)
    assert not outcome.violations, outcome.report()


def test_many_questions_asked_one_at_a_time_all_get_answered_while_settling() -> None:
    """Seed 16005741: twelve calls, each asking twice, with no timeout. The engine asks
    one question at a time, as it should. But the harness answered one question per
    15 s settle look, so its 120 s settle deadline ran out with eleven questions still
    queued, and it reported a hang. It now looks again soon while a question waits for
    the caller, and every answer extends the deadline."""
    plan = Plan(
        seed=0,
        settle_delay=0.05,
        max_redeliveries=2,
        on_handoff="forward",
        control_tools="auto",
        llm_delay=0.0,
        word_time=0.0,
        empty_rate=0.0,
        n_agents=1,
        voice=False,
        tools=(
            ToolDef(
                ack_after=1.0,
                cancellable=False,
                on_duplicate="allow",
                duplicate_scope="name_and_args",
                timeout=None,
                on_handoff=None,
                result_delivery="when_idle",
                on_timeout="cancel",
            ),
        ),
        jobs=(
            Job(ops=(), end="return", hooks=()),
            Job(ops=(("ask", None), ("ask", None)), end="return", hooks=()),
        ),
        actions=((("tool", 0, 1, True, True), ("tool", 0, 1, True, True)),),
        steps=(
            (8.0, "user", 0),
            (8.0, "on", "listening", 0.0, ("barge", 0)),
            (16.0, "run", 0),
            (17.0, "user", 0),
            (21.0, "run", 0),
            (25.0, "user", 0),
        ),
        decision_window=60.0,
        answer_delay=None,
        overdue_choice="wait",
        overdue_delay=1.0,
        extend_seconds=5.0,
        hold_after=None,
    )
    outcome = run_plan(plan)
    assert not outcome.violations, outcome.report()
