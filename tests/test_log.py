"""Redaction of secrets in the package's log extras: which keys, how deep, configurable."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from livekit_async_tools import configure_redaction
from livekit_async_tools._log import (
    REDACTED,
    SENSITIVE_SEGMENTS,
    SENSITIVE_WORDS,
    is_sensitive_key,
    logger,
    pii_extra,
    redact,
)


@pytest.fixture(autouse=True)
def default_rule() -> Iterator[None]:
    configure_redaction()
    yield
    configure_redaction()


SENSITIVE = [
    "password",
    "Password",
    "new_password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "secret_token",
    "access_token",
    "accessToken",
    "refresh-token",
    "api_key",
    "apiKey",
    "APIKey",
    "x-api-key",
    "X-API-KEY",
    "apikey",
    "Authorization",
    "proxy-authorization",
    "auth",
    "Auth",
    "auth_header",
    "basicAuth",
    "Bearer",
    "credentials",
    "aws_credential",
    "card",
    "card_number",
    "cardNumber",
    "credit_card",
    "creditcard",
    "cvv",
    "CVV2",
    "cvc",
    "ssn",
    "user_ssn",
    "pin",
    "PIN",
    "pin_code",
    "pincode",
    "userPin",
    "iban",
    "IBAN",
    "otp",
    "session_cookie",
    "private_key",
    "passphrase",
]

NOT_SENSITIVE = [
    "city",
    "date",
    "spinach",
    "pinnacle",
    "shipping",
    "opinion",
    "author",
    "authority",
    "discard",
    "cardigan",
    "scorecard",
    "key",
    "sort_key",
    "name",
    "email",
    "days",
    "business_name",
]


@pytest.mark.parametrize("key", SENSITIVE)
def test_sensitive_keys_are_redacted(key: str) -> None:
    assert is_sensitive_key(key)
    assert redact({key: "4111 1111 1111 1111", "city": "Rome"}) == {key: REDACTED, "city": "Rome"}


@pytest.mark.parametrize("key", NOT_SENSITIVE)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_sensitive_key(key)
    assert redact({key: "value"}) == {key: "value"}


def test_redaction_goes_into_nested_dicts_and_lists() -> None:
    arguments = {
        "auth": {"Bearer": "abc"},
        "headers": {"Bearer": "abc", "accept": "json"},
        "travellers": [
            {"name": "Ann", "passport": {"number": "X1", "pin": "1234"}},
            {"name": "Bob", "cards": [{"card_number": "4111", "expiry": "12/30"}]},
        ],
        "pairs": (("a", 1), {"token": "t"}),
        "tags": ["spinach", {"date": "2025-01-01"}],
    }
    assert redact(arguments) == {
        "auth": REDACTED,
        "headers": {"Bearer": REDACTED, "accept": "json"},
        "travellers": [
            {"name": "Ann", "passport": {"number": "X1", "pin": REDACTED}},
            {"name": "Bob", "cards": [{"card_number": REDACTED, "expiry": "12/30"}]},
        ],
        "pairs": [["a", 1], {"token": REDACTED}],
        "tags": ["spinach", {"date": "2025-01-01"}],
    }
    assert arguments["headers"] == {"Bearer": "abc", "accept": "json"}  # a copy, not in place


def test_dataclasses_and_pydantic_models_are_redacted_by_field() -> None:
    @dataclasses.dataclass
    class Payment:
        amount: int
        card_number: str

    class Login(BaseModel):
        user: str
        password: str

    assert redact({"payment": Payment(3, "4111"), "login": Login(user="ann", password="pw")}) == {
        "payment": {"amount": 3, "card_number": REDACTED},
        "login": {"user": "ann", "password": REDACTED},
    }


def test_non_string_keys_and_cycles() -> None:
    looped: dict[object, object] = {1: "one", "pin": 1234}
    looped["self"] = looped
    assert redact(looped) == {1: "one", "pin": REDACTED, "self": "<cycle>"}


def test_configure_redaction_extends_the_defaults() -> None:
    assert not is_sensitive_key("date_of_birth")
    assert not is_sensitive_key("bank_sort_code")
    configure_redaction(words=["date-of-birth"], segments=["sort_code", "DOB"])
    assert is_sensitive_key("dateOfBirth")
    assert is_sensitive_key("customer_date_of_birth")
    assert is_sensitive_key("bank_sort_code")
    assert is_sensitive_key("dob")
    assert is_sensitive_key("userDOB")
    assert not is_sensitive_key("sort_order")  # the two segments must follow each other
    assert not is_sensitive_key("dobby")
    assert is_sensitive_key("password")  # the defaults still apply
    configure_redaction()
    assert not is_sensitive_key("dob")


def test_configure_redaction_refuses_what_would_redact_everything() -> None:
    with pytest.raises(ValueError, match="at least one letter or digit"):
        configure_redaction(words=["__"])
    with pytest.raises(TypeError, match="not a single str"):
        configure_redaction(words="dob")
    with pytest.raises(TypeError, match="must be str"):
        configure_redaction(segments=[3])  # type: ignore[list-item]


def test_pii_extra_reaches_a_log_record_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="livekit_async_tools"):
        logger.debug("tool started", extra=pii_extra({"city": "Oslo", "x-api-key": "k"}))
    (record,) = caplog.records
    assert record.getMessage() == "tool started"
    assert getattr(record, "lk.pii.arguments") == {"city": "Oslo", "x-api-key": REDACTED}


def test_the_docstring_lists_the_default_words() -> None:
    """configure_redaction documents the defaults; it must say what the code does."""
    doc = configure_redaction.__doc__ or ""
    words_part, segments_part = doc.split("- one of the *segments*", 1)
    listed_words = set(
        re.findall(r"``(\w+)``", words_part.split("By default:")[1].split("So ``")[0])
    )
    listed_segments = set(re.findall(r"``(\w+)``", segments_part.split("So ``", 1)[0]))
    assert listed_words == SENSITIVE_WORDS
    assert listed_segments == SENSITIVE_SEGMENTS
