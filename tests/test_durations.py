"""Durations as people write them, and their compact rendering."""

from __future__ import annotations

import math

import pytest

from execflow.durations import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s5ms", 93784.005),
        ("0s", 0.0),
        ("5ms", 0.005),
        ("1m5ms", 60.005),
        (" 1m 30s ", 90.0),
        ("5M", 300.0),
        ("2H", 7200.0),
        (0, 0.0),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value)

    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "30", "s", "1x", "1s1", "1.s", ".5s", "-1s", "1e3s", "1 minute", "30 sec", "m5"],
)
def test_strings_that_are_not_durations_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False, None, [30], {"s": 30}, b"30s"])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.001])
def test_negative_numbers_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_duration(math.nan)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.001, "1ms"),
        (0.25, "250ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (30, "30s"),
        (59.9, "59.9s"),
        (60, "1m"),
        (61, "1m1s"),
        (90, "1m30s"),
        (3599, "59m59s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "24h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.25, 1.0, 1.5, 45.0, 90.0, 600.0, 3600.0, 5400.0])
def test_formatted_durations_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "value", ["99999999999999999999d", "401d", 400 * 86400 + 1, 1e300, "9" * 400 + "s"]
)
def test_durations_beyond_the_maximum_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="at most 400d") as caught:
        parse_duration(value)

    assert str(caught.value).count("\n") == 0


def test_the_maximum_itself_is_accepted() -> None:
    assert parse_duration("400d") == MAX_DURATION == parse_duration(MAX_DURATION)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_durations_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)
