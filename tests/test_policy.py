"""The pure decisions, without a session or an event loop."""

from __future__ import annotations

import itertools

import pytest

from livekit_async_tools import _policy
from livekit_async_tools._policy import Floor

# -- call lifecycle --------------------------------------------------------------------


def test_call_lifecycle_table() -> None:
    assert _policy.step("starting", "acknowledged") == "running"
    assert _policy.step("starting", "stop_requested") == "stopping"
    assert _policy.step("running", "stop_requested") == "stopping"
    assert _policy.step("starting", "finished") == "ended"
    assert _policy.step("running", "finished") == "ended"
    assert _policy.step("stopping", "finished") == "ended"


@pytest.mark.parametrize("event", ["acknowledged", "stop_requested", "finished"])
def test_nothing_happens_after_the_end(event: _policy.CallEvent) -> None:
    assert _policy.step("ended", event) is None


def test_a_second_stop_request_is_a_no_op() -> None:
    assert _policy.step("stopping", "stop_requested") is None
    assert _policy.step("stopping", "acknowledged") is None
    assert _policy.step("running", "acknowledged") is None


# -- handoff table -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["forward", "hold", "cancel"])
def test_current_origin_speaks_and_paused_or_entering_origins_wait(policy: str) -> None:
    for ready in (True, False):
        assert _policy.route("current", policy, current_ready=ready) == "origin"
        assert _policy.route("paused", policy, current_ready=ready) == "wait"
        assert _policy.route("entering", policy, current_ready=ready) == "wait"


def test_closed_origin_by_policy() -> None:
    assert _policy.route("closed", "forward", current_ready=True) == "current"
    assert _policy.route("closed", "forward", current_ready=False) == "wait"
    assert _policy.route("closed", "hold", current_ready=True) == "wait"
    assert _policy.route("closed", "cancel", current_ready=True) == "drop"


def test_where_items_are_recorded_and_what_close_reports() -> None:
    assert not _policy.record_in_origin("closed", "forward")
    assert _policy.record_in_origin("closed", "hold")
    assert _policy.record_in_origin("paused", "forward")
    assert _policy.cancel_at_handoff("closed", "cancel")
    assert not _policy.cancel_at_handoff("paused", "cancel")
    assert not _policy.cancel_at_handoff("closed", "hold")
    assert _policy.close_reason("closed", "hold") == "origin_closed"
    assert _policy.close_reason("closed", "cancel") == "origin_closed"
    assert _policy.close_reason("closed", "forward") == "session_closed"
    assert _policy.close_reason("paused", "hold") == "session_closed"


# -- the gate ------------------------------------------------------------------------------

QUIET = Floor(
    agent_state="listening",
    caller_speaking=False,
    turn_pending=False,
    speech_busy=False,
    dispatch_busy=False,
    replying=False,
)


def floor(**changes: object) -> Floor:
    return Floor(**{**QUIET.__dict__, **changes})  # type: ignore[arg-type]


def test_quiet_needs_every_condition() -> None:
    assert _policy.quiet(QUIET)
    assert _policy.quiet(floor(agent_state="idle"))
    for change in (
        {"agent_state": "thinking"},
        {"agent_state": "speaking"},
        {"caller_speaking": True},
        {"turn_pending": True},
        {"speech_busy": True},
        {"dispatch_busy": True},
        {"replying": True},
    ):
        assert not _policy.quiet(floor(**change)), change


def test_interrupt_may_cut_the_agent_but_never_the_caller_or_a_dispatch() -> None:
    playing = {"agent_state": "speaking", "speech_busy": True, "busy_speeches": 1}
    assert _policy.may_cut_in(floor(**playing, replying=True))
    # a turn still being prepared behind the playing one is never jumped
    assert not _policy.may_cut_in(floor(**{**playing, "busy_speeches": 2}))
    assert not _policy.may_cut_in(floor(speech_busy=True, busy_speeches=1))
    assert not _policy.may_cut_in(floor(caller_speaking=True))
    assert not _policy.may_cut_in(floor(turn_pending=True))
    assert not _policy.may_cut_in(floor(agent_state="speaking", dispatch_busy=True))
    assert not _policy.may_cut_in(floor(agent_state="thinking"))


# -- replies --------------------------------------------------------------------------------


def test_reply_outcome() -> None:
    combos = itertools.product([False, True], repeat=4)
    for closed, interrupted, failed, said in combos:
        out = _policy.reply_outcome(
            closed=closed, interrupted=interrupted, failed=failed, said=said
        )
        if closed:
            assert out == "closed"
        elif failed:
            assert out == "failed"  # never "empty"
        elif interrupted:
            assert out == "interrupted"
        else:
            assert out == ("delivered" if said else "empty")


def test_retry_backoff_grows_and_is_bounded() -> None:
    delays = [_policy.retry_delay(n, 0.05) for n in range(1, 12)]
    assert delays[0] == pytest.approx(0.05)
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == _policy.RETRY_MAX
    assert _policy.retry_delay(1, 0.0) == _policy.RETRY_MIN  # never a zero-delay spin


# -- derived ids ----------------------------------------------------------------------------


def test_derived_ids_keep_short_ids_readable() -> None:
    assert _policy.derived_call_id("call_abc", "result") == "call_abc_result"
    assert _policy.derived_call_id("call_abc", "progress_3") == "call_abc_progress_3"


@pytest.mark.parametrize("length", [29, 34, 35, 40, 64, 200])
@pytest.mark.parametrize("suffix", ["result", "progress_1", "progress_1000", "progress_123456"])
def test_derived_ids_fit_openai_and_stay_unique(length: int, suffix: str) -> None:
    a = "c" * length
    b = "c" * (length - 1) + "d"
    ida, idb = _policy.derived_call_id(a, suffix), _policy.derived_call_id(b, suffix)
    assert len(ida) <= _policy.MAX_CALL_ID_LENGTH
    assert ida.endswith(suffix)
    assert ida != idb
    assert ida == _policy.derived_call_id(a, suffix)  # stable


# -- duplicates and instructions -------------------------------------------------------------


def test_duplicate_verdicts() -> None:
    for mode in ("allow", "reject", "replace", "confirm"):
        assert _policy.duplicate_verdict(mode, running=False, confirmed=False) == "start"
    assert _policy.duplicate_verdict("allow", running=True, confirmed=False) == "start"
    assert _policy.duplicate_verdict("reject", running=True, confirmed=True) == "reject"
    assert _policy.duplicate_verdict("replace", running=True, confirmed=False) == "replace"
    assert _policy.duplicate_verdict("confirm", running=True, confirmed=False) == "confirm"
    assert _policy.duplicate_verdict("confirm", running=True, confirmed=True) == "start"


def test_instruction_kind() -> None:
    assert _policy.instruction_kind(redelivery=True, maybe_covered=True) == "redeliver"
    assert _policy.instruction_kind(redelivery=False, maybe_covered=True) == "maybe_covered"
    assert _policy.instruction_kind(redelivery=False, maybe_covered=False) == "deliver"


def test_select_takes_every_result_and_one_follow_up_at_a_time() -> None:
    a, b, c, d, e = (
        Item("final"),
        Item("follow_up"),
        Item("follow_up"),
        Item("update"),
        Item("follow_up", "all"),
    )
    assert _policy.select([a, b, c, d, e]) == [a, b, d, e]


class Item:
    def __init__(self, kind: str, mode: str = "one_at_a_time", handoff: object = None) -> None:
        self.kind, self.mode, self.handoff = kind, mode, handoff


def test_select_takes_one_handing_off_result_per_reply() -> None:
    a, b, c = Item("final", handoff="R1"), Item("final", handoff="R2"), Item("final")
    assert _policy.select([a, b, c]) == [a, c]  # b waits: one reply makes one handoff
