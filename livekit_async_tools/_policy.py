"""Pure decisions: a call's lifecycle, the handoff table, the gate's verdicts, coalescing,
reply outcomes and retry backoff.

Nothing here touches livekit or the event loop: the stateful parts gather a snapshot,
ask one of these functions, and act on the answer in the same loop iteration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, TypeVar

__all__ = [
    "MAX_CALL_ID_LENGTH",
    "CallEvent",
    "CallPhase",
    "Floor",
    "OriginState",
    "ReplyOutcome",
    "Route",
    "derived_call_id",
    "duplicate_verdict",
    "instruction_kind",
    "may_cut_in",
    "quiet",
    "reply_outcome",
    "retry_delay",
    "route",
    "select",
    "step",
]

# -- item ids ---------------------------------------------------------------------------

MAX_CALL_ID_LENGTH = 40
"""OpenAI rejects ``tool_calls[].id`` longer than 40 characters."""

_HASH_LENGTH = 8


def derived_call_id(call_id: str, suffix: str) -> str:
    """The call id of a call's deferred item: ``<call_id>_<suffix>`` (``_result``,
    ``_progress_<n>``) when that fits in `MAX_CALL_ID_LENGTH`, else the call id cut short
    plus a stable 8-character hash of it, so ids stay unique in a session and valid
    for every provider. The suffixes differ from livekit's own (``_final``,
    ``_update_<n>`` of its native async tools), so the two never collide."""
    plain = f"{call_id}_{suffix}"
    if len(plain) <= MAX_CALL_ID_LENGTH:
        return plain
    digest = hashlib.sha1(call_id.encode(), usedforsecurity=False).hexdigest()[:_HASH_LENGTH]
    keep = max(MAX_CALL_ID_LENGTH - len(suffix) - _HASH_LENGTH - 2, 0)
    return f"{call_id[:keep]}_{digest}_{suffix}"[-MAX_CALL_ID_LENGTH:]


# -- a call's lifecycle -----------------------------------------------------------------

CallPhase: TypeAlias = Literal["starting", "running", "stopping", "ended"]
"""``starting`` until acknowledged, ``running`` after, ``stopping`` once a stop was
requested (the body is being cancelled and its ``on_cancel`` hooks run), ``ended``."""

CallEvent: TypeAlias = Literal["acknowledged", "stop_requested", "finished"]

_TRANSITIONS: dict[tuple[CallPhase, CallEvent], CallPhase] = {
    ("starting", "acknowledged"): "running",
    ("starting", "stop_requested"): "stopping",
    ("starting", "finished"): "ended",
    ("running", "stop_requested"): "stopping",
    ("running", "finished"): "ended",
    ("stopping", "finished"): "ended",
}
"""Every allowed transition; any other (phase, event) pair is a no-op. In particular a
second stop request, an acknowledgement while stopping and anything after ``ended``."""


def step(phase: CallPhase, event: CallEvent) -> CallPhase | None:
    """The phase after ``event``, or ``None`` if the event changes nothing in ``phase``."""
    return _TRANSITIONS.get((phase, event))


# -- the handoff table ------------------------------------------------------------------

OriginState: TypeAlias = Literal["current", "entering", "paused", "closed"]
"""Where an item's origin agent stands: ``current`` (livekit routes replies to it),
``entering`` (it is the session's agent but livekit still routes to the previous
activity: a handoff or hand-back in progress), ``paused`` (an `AgentTask` runs on top,
or it is draining after a handoff), ``closed`` (its activity is closed for good)."""

Route: TypeAlias = Literal["origin", "current", "wait", "drop"]
"""Who may speak an item now: its origin, the current agent, nobody yet, or nobody ever."""


def route(origin: OriginState, on_handoff: str, *, current_ready: bool) -> Route:
    """Who may speak an item of ``origin`` under its ``on_handoff`` policy.

    ``current_ready`` says whether the session's current agent is the one livekit
    routes replies to (no handoff in progress).
    """
    if origin == "current":
        return "origin"
    if origin in ("entering", "paused"):
        return "wait"
    if on_handoff == "forward":
        return "current" if current_ready else "wait"
    if on_handoff == "cancel":
        return "drop"
    return "wait"  # hold: until the origin is handed back to, else dropped at close


def record_in_origin(origin: OriginState, on_handoff: str) -> bool:
    """Whether an item is written into its origin's context (else the current agent's)."""
    return origin != "closed" or on_handoff != "forward"


def cancel_at_handoff(origin: OriginState, on_handoff: str) -> bool:
    """Whether a running call is cancelled because its origin was handed off for good."""
    return origin == "closed" and on_handoff == "cancel"


def close_reason(origin: OriginState, on_handoff: str) -> str:
    """The ``dropped`` reason for an item still pending when the session closes."""
    if origin == "closed" and on_handoff in ("hold", "cancel"):
        return "origin_closed"
    return "session_closed"


# -- the gate ---------------------------------------------------------------------------

_QUIET_AGENT_STATES = ("listening", "idle")


@dataclass(frozen=True)
class Floor:
    """What the session is doing, as seen for one target agent.

    Attributes:
        agent_state: ``session.agent_state``.
        caller_speaking: The caller is speaking.
        turn_pending: The caller stopped speaking and their turn may still be committed.
        speech_busy: A speech handle of the target (or of a closed agent still draining)
            is not done: a reply, a tool dispatch, the caller's text turn.
        busy_speeches: How many such handles (not done, not being cut).
        dispatch_busy: A tool of the target runs (a call without its output yet).
        replying: One of this package's deferred replies is being spoken.
    """

    agent_state: str
    caller_speaking: bool
    turn_pending: bool
    speech_busy: bool
    dispatch_busy: bool
    replying: bool
    busy_speeches: int = 0


def caller_done(floor: Floor) -> bool:
    """The caller is not speaking and no turn of theirs is pending."""
    return not floor.caller_speaking and not floor.turn_pending


def quiet(floor: Floor) -> bool:
    """Quiet enough to start a ``when_idle`` reply (once it has lasted ``settle_delay``)."""
    return (
        floor.agent_state in _QUIET_AGENT_STATES
        and caller_done(floor)
        and not floor.speech_busy
        and not floor.dispatch_busy
        and not floor.replying
    )


def may_cut_in(floor: Floor) -> bool:
    """For ``interrupt`` items: the caller is done, no tool of the target runs, and the
    only speech under way is the one the agent is playing (it may be cut): a turn still
    being prepared (the LLM answering the caller or a tool output) is never jumped."""
    playing = 1 if floor.agent_state == "speaking" else 0
    return (
        caller_done(floor)
        and not floor.dispatch_busy
        and floor.agent_state in (*_QUIET_AGENT_STATES, "speaking")
        and floor.busy_speeches <= playing
    )


# -- duplicates ---------------------------------------------------------------------------

DuplicateVerdict: TypeAlias = Literal["start", "reject", "confirm", "replace"]


def duplicate_verdict(mode: str, *, running: bool, confirmed: bool) -> DuplicateVerdict:
    """What a new call does when ``running`` says an identical one is live: start it,
    tell the LLM the same call runs (``reject``), ask it to confirm, or replace the
    running one (cancel it, then decide again)."""
    if not running or mode == "allow" or (mode == "confirm" and confirmed):
        return "start"
    if mode == "replace":
        return "replace"
    return "confirm" if mode == "confirm" else "reject"


# -- coalescing -------------------------------------------------------------------------


class _Selectable(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def handoff(self) -> object | None: ...


_S = TypeVar("_S", bound=_Selectable)


def select(batch: list[_S]) -> list[_S]:
    """The items of ``batch`` one reply speaks: every result and update, every ``all``
    follow-up and the oldest ``one_at_a_time`` one, and of the results that hand the
    session off only the oldest (the others wait: one reply makes one handoff)."""
    speak: list[_S] = []
    one_taken = handoff_taken = False
    for p in batch:
        if p.handoff is not None:
            if handoff_taken:
                continue
            handoff_taken = True
        if p.kind != "follow_up" or p.mode == "all":
            speak.append(p)
        elif not one_taken:
            speak.append(p)
            one_taken = True
    return speak


# -- replies ----------------------------------------------------------------------------

ReplyOutcome: TypeAlias = Literal["delivered", "interrupted", "failed", "empty", "closed"]


def reply_outcome(*, closed: bool, interrupted: bool, failed: bool, said: bool) -> ReplyOutcome:
    """How a finished deferred reply went. A failed reply is never "empty"."""
    if closed:
        return "closed"
    if failed:
        return "failed"
    if interrupted:
        return "interrupted"
    return "delivered" if said else "empty"


InstructionKind: TypeAlias = Literal["redeliver", "maybe_covered", "deliver"]


def instruction_kind(*, redelivery: bool, maybe_covered: bool) -> InstructionKind:
    """Which template a reply's instructions use: a re-delivery after a cut reply, items
    newer conversation may already have covered, or items at the end of it."""
    if redelivery:
        return "redeliver"
    return "maybe_covered" if maybe_covered else "deliver"


RETRY_MIN = 0.05
RETRY_MAX = 2.0


def retry_delay(refusals: int, settle_delay: float) -> float:
    """Seconds to wait after the ``refusals``-th refused ``generate_reply`` in a row.

    Exponential from ``settle_delay`` (at least `RETRY_MIN`), capped at `RETRY_MAX`: a
    refusal is retried on time, never because the refused reply emitted events itself.
    """
    base = max(settle_delay, RETRY_MIN)
    return float(min(base * 2 ** max(refusals - 1, 0), RETRY_MAX))
