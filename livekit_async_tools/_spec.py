"""`ToolSpec`: the options of one async tool, their defaults (written once here) and checks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .options import Delivery, OnHandoff

__all__ = [
    "CONFIRM_PARAM",
    "DELIVERIES",
    "DuplicateMode",
    "DuplicateScope",
    "FollowUpMode",
    "OnTimeout",
    "ToolSpec",
]

DuplicateMode: TypeAlias = Literal["allow", "reject", "replace", "confirm"]
"""What a second identical call does while one runs."""

DuplicateScope: TypeAlias = Literal["name", "name_and_args"]
"""What makes two calls identical."""

FollowUpMode: TypeAlias = Literal["one_at_a_time", "all"]
"""How pending follow-ups share a reply."""

OnTimeout: TypeAlias = Literal["cancel", "ask"]
"""What a call's ``timeout`` does: stop it, or first ask the caller whether to wait."""

DELIVERIES: tuple[Delivery, ...] = ("when_idle", "interrupt", "silent")
_ON_HANDOFF: tuple[OnHandoff, ...] = ("forward", "hold", "cancel")
_DUPLICATE_MODES: tuple[DuplicateMode, ...] = ("allow", "reject", "replace", "confirm")
_DUPLICATE_SCOPES: tuple[DuplicateScope, ...] = ("name", "name_and_args")
_ON_TIMEOUT: tuple[OnTimeout, ...] = ("cancel", "ask")

CONFIRM_PARAM = "confirm_duplicate"
"""The boolean parameter ``on_duplicate="confirm"`` adds to a tool's schema."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ToolSpec:
    """The options of one async tool (internal). The defaults here are the only ones:
    `function_tool` passes only what the developer gave."""

    name: str
    ack_after: float | None = 1.0
    on_handoff: OnHandoff | None = None
    cancellable: bool = False
    timeout: float | None = None
    on_timeout: OnTimeout = "cancel"
    result_delivery: Delivery = "when_idle"
    on_duplicate: DuplicateMode = "reject"
    duplicate_scope: DuplicateScope = "name_and_args"

    def __post_init__(self) -> None:
        if not isinstance(self.cancellable, bool):
            raise TypeError(f"cancellable must be True or False, got {self.cancellable!r}")
        if self.ack_after is not None and not (
            _is_number(self.ack_after) and math.isfinite(self.ack_after) and self.ack_after >= 0
        ):
            raise ValueError(
                f"ack_after must be a number of seconds >= 0, or None to wait for the first "
                f"update, got {self.ack_after!r}"
            )
        if self.timeout is not None and not (
            _is_number(self.timeout) and math.isfinite(self.timeout) and self.timeout > 0
        ):
            raise ValueError(
                f"timeout must be a number of seconds > 0, or None for no deadline, "
                f"got {self.timeout!r}"
            )
        if self.on_timeout not in _ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {_ON_TIMEOUT}, got {self.on_timeout!r}")
        if self.on_timeout == "ask" and self.timeout is None:
            raise ValueError(
                'on_timeout="ask" needs a timeout: the caller is asked when it expires'
            )
        if self.on_handoff is not None and self.on_handoff not in _ON_HANDOFF:
            raise ValueError(f"on_handoff must be one of {_ON_HANDOFF}, got {self.on_handoff!r}")
        if self.result_delivery not in DELIVERIES:
            raise ValueError(
                f"result_delivery must be one of {DELIVERIES}, got {self.result_delivery!r}"
            )
        if self.on_duplicate not in _DUPLICATE_MODES:
            raise ValueError(
                f"on_duplicate must be one of {_DUPLICATE_MODES}, got {self.on_duplicate!r}"
            )
        if self.duplicate_scope not in _DUPLICATE_SCOPES:
            raise ValueError(
                f"duplicate_scope must be one of {_DUPLICATE_SCOPES}, got {self.duplicate_scope!r}"
            )
        if self.on_duplicate == "replace" and not self.cancellable:
            raise ValueError(
                'on_duplicate="replace" cancels the running call, so the tool must be '
                "declared cancellable=True"
            )

    def duplicate_key(self, arguments: dict[str, object]) -> str | None:
        """What makes two calls of this tool the same (``None``: never compared).

        Computed once per call: the name, plus canonical JSON of the arguments.
        """
        if self.on_duplicate == "allow":
            return None
        if self.duplicate_scope == "name":
            return self.name
        return self.name + json.dumps(arguments, sort_keys=True, default=str, ensure_ascii=False)


SPEC_ATTR = "__livekit_async_spec__"
"""The attribute `function_tool` sets on a background tool's wrapper."""


def spec_of(tool: object) -> ToolSpec | None:
    """The `ToolSpec` of a background tool (as livekit lists it), else ``None``."""
    spec = getattr(tool, SPEC_ATTR, None)
    return spec if isinstance(spec, ToolSpec) else None
