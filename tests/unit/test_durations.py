"""Go-style durations: what is accepted, what is refused, and how they print."""

from __future__ import annotations

import pytest

from fleetd.util.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2m30.5s", 150.5),
        ("1h0m0s", 3600.0),
        ("250us", 0.00025),
        ("100ns", 1e-7),
        (".5s", 0.5),
    ],
)
def test_go_durations_are_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["5 minutes", "", "5", "10", "-5m", "5M", " 5m", "5m ", "m", "1h-5m", "+5m", "1.s.5", "5sec"]
)
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        parse_duration(text)


def test_refusal_says_how_to_write_a_duration() -> None:
    with pytest.raises(DurationError) as info:
        parse_duration("5 minutes")
    assert str(info.value) == "invalid duration '5 minutes' (use a number with a unit: 500ms, 30s, 5m, 1h)"


def test_negative_durations_are_refused_as_negative() -> None:
    with pytest.raises(DurationError, match="must not be negative"):
        parse_duration("-1h")


def test_days_are_refused_with_a_hint_to_use_hours() -> None:
    with pytest.raises(DurationError, match="24h"):
        parse_duration("1d")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0"),
        (0.5, "500ms"),
        (30.0, "30s"),
        (90.0, "1m30s"),
        (3600.0, "1h"),
        (5400.0, "1h30m"),
        (3601.5, "1h1.5s"),
    ],
)
def test_durations_print_the_way_users_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
