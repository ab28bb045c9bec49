"""The package logger and the redaction of personal data in log extras."""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["REDACTED", "SENSITIVE_KEYS", "logger", "pii_extra", "redact"]

logger = logging.getLogger("livekit_async_tools")

REDACTED = "<redacted>"

SENSITIVE_KEYS = frozenset(
    {"password", "token", "secret", "api_key", "authorization", "credentials", "card", "cvv", "ssn"}
)


def redact(value: object) -> object:
    """A copy of ``value`` with the values of sensitive keys replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: REDACTED if str(k).lower() in SENSITIVE_KEYS else redact(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def pii_extra(arguments: Mapping[str, object]) -> dict[str, object]:
    """Log ``extra`` carrying tool arguments under livekit's PII key, redacted."""
    return {"lk.pii.arguments": redact(arguments)}
