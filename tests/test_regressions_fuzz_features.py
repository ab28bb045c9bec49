"""Fuzzer findings about the newer features (``ctx.ask``, ``on_timeout="ask"``, a
handoff from a call's result), each a minimized plan (tests/fuzz) that replays
deterministically. A test marked ``xfail(strict=True)`` pins a package bug not fixed
yet: it starts passing (and so fails here) once the engine is fixed; then drop the
mark."""

from __future__ import annotations

import pytest

from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

from .fuzz.harness import Outcome, run_plan
from .fuzz.plan import Job, Plan, ToolDef


def violations(outcome: Outcome, invariant: str) -> list[str]:
    return [v.message for v in outcome.violations if v.invariant == invariant]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Deadline._expired queues the overdue item with Pending.add(kind='update'), which "
        "supersedes the call's latest pending item: the question ctx.ask put (Questions._next)"
        " is reported skipped(superseded) and never spoken, yet Questions keeps it as the "
        "asked question; after extend_task the call waits forever for an answer to a "
        "question the caller never heard, and every later question of the session queues "
        "behind it"
    ),
)
def test_an_overdue_question_does_not_supersede_an_unspoken_ask() -> None:
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


@pytest.mark.xfail(
    strict=True,
    reason=(
        "DeliveryQueue._speak calls session.update_agent(new) right after generate_reply but "
        "leaves PendingItem.handoff set; the reply is cut off by the caller, its items are "
        "re-queued for re-delivery with the handoff still on them, and when the origin is "
        "current again (the returned agent transferred back) the re-delivery's _speak hands "
        "off to the same returned agent a second time"
    ),
)
def test_a_redelivered_handing_off_result_does_not_hand_off_again() -> None:
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
