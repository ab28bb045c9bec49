"""AsyncToolOptions: settings and templates are checked when the options are built."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from livekit_async_tools import AsyncToolOptions
from livekit_async_tools.options import TEMPLATE_PLACEHOLDERS

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"

TEMPLATES = sorted(TEMPLATE_PLACEHOLDERS)


def _allowed_text(name: str) -> str:
    names = [f"{{{p}}}" for p in TEMPLATE_PLACEHOLDERS[name]]
    if not names:
        return f"{name} takes no placeholders"
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{name} may use {listed}"


def test_every_template_field_has_its_placeholders_listed() -> None:
    fields = [f.name for f in dataclasses.fields(AsyncToolOptions) if f.name.endswith("_template")]
    assert sorted(fields) == TEMPLATES


def test_the_defaults_use_only_their_own_placeholders() -> None:
    options = AsyncToolOptions()
    for name in TEMPLATES:
        used = set(re.findall(r"(?<!\{)\{(\w+)", getattr(options, name)))
        assert used <= set(TEMPLATE_PLACEHOLDERS[name]), name


@pytest.mark.parametrize("name", TEMPLATES)
def test_a_template_accepts_every_placeholder_it_may_use(name: str) -> None:
    allowed = TEMPLATE_PLACEHOLDERS[name]
    template = "custom " + " ".join(f"<{{{p}}}>" for p in reversed(allowed)) + " {{literal}}"
    options = AsyncToolOptions(**{name: template})
    assert getattr(options, name) == template


@pytest.mark.parametrize("name", TEMPLATES)
def test_an_unknown_placeholder_names_the_template_and_what_it_may_use(name: str) -> None:
    with pytest.raises(ValueError) as info:
        AsyncToolOptions(**{name: "all good {oops}"})
    message = str(info.value)
    assert message.startswith(f"{name} uses {{oops}}, which is not available")
    assert _allowed_text(name) in message


@pytest.mark.parametrize("template", ["{", "}", "almost {tool_name", "{tool_name}}"])
def test_a_malformed_template_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match=r"cancelled_template is not a valid str\.format") as info:
        AsyncToolOptions(cancelled_template=template)
    assert "cancelled_template may use {tool_name} and {call_id}" in str(info.value)


def test_format_specs_and_conversions_stay_valid() -> None:
    options = AsyncToolOptions(
        timed_out_template="{tool_name!r} stopped after {seconds:g} s ({seconds:.1f})",
        ack_pending_template="{tool_name:>20} {seconds:05.1f}",
        too_many_tasks_template="{count:d} running, {count:,} in all",
    )
    assert options.timed_out_template.format(tool_name="t", call_id="c", seconds=120) == (
        "'t' stopped after 120 s (120.0)"
    )


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{0}", "positional placeholder {0}"),
        ("{}", "positional placeholder {}"),
        ("{tool_name.upper}", "without attribute or index access"),
        ("{tool_name[0]}", "without attribute or index access"),
        ("{seconds:{width}}", "uses {width}, which is not available"),
        ("{seconds:d}", "cannot be filled in"),  # seconds may be a float
        ("{seconds:.3}", "cannot be filled in"),  # ... or an int
        ("{tool_name!x}", "cannot be filled in"),
    ],
)
def test_placeholders_the_runtime_cannot_fill_are_refused(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match="timed_out_template") as info:
        AsyncToolOptions(timed_out_template=template)
    assert problem in str(info.value)
    assert "timed_out_template may use {tool_name}, {call_id} and {seconds}" in str(info.value)


def test_a_template_without_placeholders_refuses_any() -> None:
    with pytest.raises(ValueError, match="no_running_tasks_template takes no placeholders"):
        AsyncToolOptions(no_running_tasks_template="Nothing for {tool_name}.")
    assert AsyncToolOptions(no_running_tasks_template="Nothing.").no_running_tasks_template


def test_a_template_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="steer_template must be a str, got bytes"):
        AsyncToolOptions(steer_template=b"{text}")  # type: ignore[arg-type]


def test_replace_checks_again() -> None:
    options = AsyncToolOptions()
    with pytest.raises(ValueError, match=re.escape("update_template uses {oops}")):
        dataclasses.replace(options, update_template="{oops}")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"settle_delay": -0.1}, ValueError, "settle_delay must be >= 0"),
        ({"settle_delay": float("nan")}, ValueError, "settle_delay must be >= 0"),
        ({"settle_delay": float("inf")}, ValueError, "settle_delay must be >= 0"),
        ({"settle_delay": "0.3"}, TypeError, "settle_delay must be a number"),
        ({"max_tasks_per_session": 0}, ValueError, "max_tasks_per_session must be >= 1"),
        ({"max_tasks_per_session": 2.0}, TypeError, "max_tasks_per_session must be an int"),
        ({"max_tasks_per_session": True}, TypeError, "max_tasks_per_session must be an int"),
        ({"max_redeliveries": -1}, ValueError, "max_redeliveries must be >= 0"),
        ({"max_redeliveries": None}, TypeError, "max_redeliveries must be an int"),
        ({"on_handoff": "later"}, ValueError, "on_handoff must be one of"),
        ({"control_tools": "sometimes"}, ValueError, "control_tools must be one of"),
    ],
)
def test_settings_out_of_range_are_refused(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        AsyncToolOptions(**kwargs)  # type: ignore[arg-type]


def test_settings_at_their_bounds_are_accepted() -> None:
    options = AsyncToolOptions(
        settle_delay=0, max_tasks_per_session=1, max_redeliveries=0, on_handoff="hold"
    )
    assert (options.settle_delay, options.max_tasks_per_session) == (0, 1)


def test_the_api_reference_table_matches_the_placeholders() -> None:
    """docs/api.md documents each template's placeholders; it must say what the code does."""
    rows = re.findall(r"^\| `(\w+_template)` \| ([^|]*) \|", API_DOC.read_text(), flags=re.M)
    documented = {name: tuple(re.findall(r"\{(\w+)\}", cell)) for name, cell in rows}
    assert len(rows) == len(documented), "a template is listed twice"
    assert documented == dict(TEMPLATE_PLACEHOLDERS)
    placeholders = re.findall(r"^\| `\{(\w+)\}` \|", API_DOC.read_text(), flags=re.M)
    assert sorted(placeholders) == sorted({p for ps in TEMPLATE_PLACEHOLDERS.values() for p in ps})
