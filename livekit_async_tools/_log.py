"""The package logger and the redaction of secrets in log extras."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "REDACTED",
    "SENSITIVE_SEGMENTS",
    "SENSITIVE_WORDS",
    "configure_redaction",
    "is_sensitive_key",
    "logger",
    "pii_extra",
    "redact",
]

logger = logging.getLogger("livekit_async_tools")

REDACTED = "<redacted>"

SENSITIVE_WORDS: frozenset[str] = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "creditcard",
        "passphrase",
        "passwd",
        "password",
        "pincode",
        "privatekey",
        "secret",
        "token",
    }
)
"""Words that mark a key as sensitive wherever they occur in it, in any case and with
separators ignored: ``secret_token``, ``accessToken``, ``X-Api-Key``, ``client_secrets``
(and also ``max_tokens``: redaction errs on the side of hiding)."""

SENSITIVE_SEGMENTS: frozenset[str] = frozenset(
    {"auth", "bearer", "card", "cvc", "cvv", "iban", "otp", "pin", "pwd", "ssn"}
)
"""Short words that mark a key as sensitive only as a whole segment of it: ``pin``
matches ``pin``, ``PIN``, ``pin_code`` and ``userPin`` but not ``spinach``; ``card``
matches ``card_number`` but not ``discard``; ``auth`` matches ``auth`` and
``auth_header`` but not ``author``."""

# A key's segments: words split at anything but letters and digits, at lower-to-upper
# case changes (camelCase) and between letters and digits (``cvv2``).
_SEGMENT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")
_SEPARATORS = re.compile(r"[\W_]+")


def _segments(text: str) -> tuple[str, ...]:
    return tuple(s.lower() for s in _SEGMENT.findall(text))


class _Rule:
    """Sensitive words (matched anywhere) and segment sequences (matched whole)."""

    __slots__ = ("_cache", "segments", "words")

    def __init__(self, words: frozenset[str], segments: frozenset[tuple[str, ...]]) -> None:
        self.words = words
        self.segments = segments
        self._cache: dict[str, bool] = {}

    def matches(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            hit = self._cache[key] = self._compute(key)
        return hit

    def _compute(self, key: str) -> bool:
        joined = _SEPARATORS.sub("", key.lower())
        if any(word in joined for word in self.words):
            return True
        parts = _segments(key)
        return any(
            parts[i : i + len(seq)] == seq
            for seq in self.segments
            for i in range(len(parts) - len(seq) + 1)
        )


def _make_rule(words: Iterable[str], segments: Iterable[str]) -> _Rule:
    norm_words = {_SEPARATORS.sub("", w.lower()) for w in words}
    norm_segments = {_segments(s) for s in segments}
    if "" in norm_words or () in norm_segments:
        raise ValueError("a sensitive word must contain at least one letter or digit")
    return _Rule(words=frozenset(norm_words), segments=frozenset(norm_segments))


_DEFAULT_RULE = _make_rule(SENSITIVE_WORDS, SENSITIVE_SEGMENTS)
_rule = _DEFAULT_RULE


def configure_redaction(*, words: Iterable[str] = (), segments: Iterable[str] = ()) -> None:
    """Add sensitive key words to the redaction of the package's log extras.

    The package logs tool arguments only under ``extra={"lk.pii.arguments": ...}``
    (livekit's convention for personal data). Before that, the value of every
    sensitive key is replaced by ``"<redacted>"``, at any depth of nested dicts,
    lists, tuples, dataclasses and pydantic models. A key is sensitive when,
    compared case-insensitively:

    - one of the *words* occurs anywhere in it, separators ignored. By default:
      ``apikey``, ``authorization``, ``cookie``, ``credential``, ``creditcard``,
      ``passphrase``, ``passwd``, ``password``, ``pincode``, ``privatekey``,
      ``secret``, ``token``. So ``secret_token``, ``accessToken``, ``x-api-key``
      and ``Authorization`` are redacted.
    - one of the *segments* is a whole segment of it (keys split at
      non-alphanumeric characters, camelCase humps and digits). By default:
      ``auth``, ``bearer``, ``card``, ``cvc``, ``cvv``, ``iban``, ``otp``,
      ``pin``, ``pwd``, ``ssn``. So ``card_number``, ``userPin`` and ``auth`` are
      redacted, while ``spinach``, ``discard`` and ``author`` are not.

    Only keys are looked at, never values. The defaults always apply; each call
    replaces what earlier calls added (call it with no arguments to go back to the
    defaults). Settings are process-wide, like logging's own.

    Args:
        words: More words matched anywhere in a key (``"session_id"``, ``"dob"``).
        segments: More words matched as whole segments; one with separators matches
            consecutive segments (``"sort_code"`` matches ``bank_sort_code``).

    Raises:
        TypeError: A word is not a ``str``, or a bare ``str`` was passed as the list.
        ValueError: A word has no letter or digit.

    Example::

        configure_redaction(words=["account_number"], segments=["dob"])
    """
    global _rule
    if isinstance(words, str) or isinstance(segments, str):
        raise TypeError('pass a list of words, e.g. words=["dob"], not a single str')
    words, segments = list(words), list(segments)
    for value in (*words, *segments):
        if not isinstance(value, str):
            raise TypeError(f"sensitive words must be str, got {value!r}")
    extra = _make_rule(words, segments)
    _rule = _Rule(
        words=_DEFAULT_RULE.words | extra.words,
        segments=_DEFAULT_RULE.segments | extra.segments,
    )


def is_sensitive_key(key: object) -> bool:
    """Whether the value under ``key`` is redacted by the current rule."""
    return _rule.matches(str(key))


def redact(value: object) -> object:
    """A copy of ``value`` with the values of sensitive keys replaced, at any depth."""
    return _redact(value, _rule, set())


def _redact(value: object, rule: _Rule, path: set[int]) -> object:
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if id(value) in path:
        return "<cycle>"
    path.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {
                k: REDACTED if rule.matches(str(k)) else _redact(v, rule, path)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_redact(v, rule, path) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return _redact(fields, rule, path)
        dump = getattr(value, "model_dump", None)  # a pydantic model
        if callable(dump):
            return _redact(dump(), rule, path)
        return value
    finally:
        path.discard(id(value))


def pii_extra(arguments: Mapping[str, object]) -> dict[str, object]:
    """Log ``extra`` carrying tool arguments under livekit's PII key, redacted."""
    return {"lk.pii.arguments": redact(arguments)}
