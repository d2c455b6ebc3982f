"""Cron schedules: the model, slots across time zones and DST, and what is due after downtime."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from execflow.schedules import (
    Missed,
    Schedule,
    due_slots,
    next_slot,
    slot_execution_name,
    slots_between,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate({"name": "nightly", "cron": "0 2 * * *", **fields})


def refusal(**fields: Any) -> tuple[tuple[int | str, ...], str]:
    """The location and message of the one problem with a schedule."""
    with pytest.raises(ValidationError) as caught:
        schedule(**fields)
    [error] = caught.value.errors()
    return error["loc"], error["msg"]


# The model


def test_defaults() -> None:
    s = schedule()

    assert (s.name, s.cron, s.timezone, s.inputs) == ("nightly", "0 2 * * *", "UTC", {})
    assert (s.missed, s.catch_up_limit, s.enabled) == (Missed.SKIP, 100, True)
    assert s.zone == ZoneInfo("UTC")


def test_every_field() -> None:
    s = schedule(
        cron=" 15  3 * * MON-FRI ",
        timezone="America/New_York",
        inputs={"target": "prod", "n": 3},
        missed="catch_up",
        catch_up_limit=5,
        enabled=False,
    )

    assert s.cron == "15 3 * * MON-FRI"
    assert s.expression == "15 3 * * MON-FRI"
    assert s.zone == ZoneInfo("America/New_York")
    assert s.inputs == {"target": "prod", "n": 3}
    assert (s.missed, s.catch_up_limit, s.enabled) == (Missed.CATCH_UP, 5, False)


def test_a_schedule_is_frozen() -> None:
    s = schedule()

    with pytest.raises(ValidationError, match="frozen"):
        s.cron = "@hourly"  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    loc, msg = refusal(crontab="0 2 * * *")

    assert loc == ("crontab",)
    assert "Extra inputs are not permitted" in msg


@pytest.mark.parametrize("field", ["name", "cron"])
def test_name_and_cron_are_required(field: str) -> None:
    raw = {"name": "nightly", "cron": "@daily"}
    del raw[field]

    with pytest.raises(ValidationError) as caught:
        Schedule.model_validate(raw)

    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((field,), "missing")]


@pytest.mark.parametrize("name", ["", "-nightly", "_x", "night ly", "nächtlich", "a.b", "a" * 65])
def test_bad_names_are_refused(name: str) -> None:
    loc, msg = refusal(name=name)

    assert loc == ("name",)
    assert "should match pattern" in msg


@pytest.mark.parametrize("name", ["n", "0", "Nightly_backup-2", "a" * 64])
def test_good_names(name: str) -> None:
    assert schedule(name=name).name == name


@pytest.mark.parametrize(
    ("fields", "loc", "fragment"),
    [
        ({"missed": "later"}, ("missed",), "'skip' or 'catch_up'"),
        ({"missed": "catch_up", "catch_up_limit": 0}, ("catch_up_limit",), "greater than or"),
        ({"missed": "catch_up", "catch_up_limit": 10_001}, ("catch_up_limit",), "less than or"),
        ({"missed": "catch_up", "catch_up_limit": "5"}, ("catch_up_limit",), "valid integer"),
        ({"missed": "catch_up", "catch_up_limit": True}, ("catch_up_limit",), "valid integer"),
        ({"catch_up_limit": 5}, (), "catch_up_limit applies only with missed: catch_up"),
        ({"enabled": "yes"}, ("enabled",), "valid boolean"),
        ({"inputs": ["a"]}, ("inputs",), "valid dictionary"),
        ({"cron": 5}, ("cron",), "valid string"),
        ({"timezone": None}, ("timezone",), "valid string"),
    ],
)
def test_other_fields_are_checked(
    fields: dict[str, Any], loc: tuple[str, ...], fragment: str
) -> None:
    got_loc, msg = refusal(**fields)

    assert got_loc == loc
    assert fragment in msg


# Cron expressions


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("", "has 5 fields (minute hour day-of-month month day-of-week) or is an alias"),
        ("0 2 * *", "got 4 field(s)"),
        ("0 0 2 * * *", "got 6 field(s)"),
        ("61 * * * *", "cron field 1 (minute) '61': 61 is out of range 0-59"),
        ("5,61 * * * *", "cron field 1 (minute) '5,61': 61 is out of range 0-59"),
        ("0 24 * * *", "cron field 2 (hour) '24': 24 is out of range 0-23"),
        ("0 0 0 * *", "cron field 3 (day-of-month) '0': 0 is out of range 1-31"),
        ("0 0 32 * *", "cron field 3 (day-of-month) '32': 32 is out of range 1-31"),
        ("0 0 * 13 *", "cron field 4 (month) '13': 13 is out of range 1-12"),
        ("0 0 * * 8", "cron field 5 (day-of-week) '8': 8 is out of range 0-7"),
        ("0 0 * FOO *", "cron field 4 (month) 'FOO': 'FOO' is not valid here: use *, a number"),
        ("1.5 * * * *", "cron field 1 (minute) '1.5': '1.5' is not valid here"),
        ("*/0 * * * *", "cron field 1 (minute) '*/0': the step in '*/0' must be at least 1"),
        ("*/x * * * *", "the step in '*/x' is not a whole number"),
        ("1-70/5 * * * *", "cron field 1 (minute) '1-70/5': 70 is out of range 0-59"),
        ("5-1 * * * *", "cron field 1 (minute) '5-1': the range '5-1' runs backwards"),
        ("0 0 * * FRI-MON", "cron field 5 (day-of-week) 'FRI-MON': the range 'FRI-MON' runs"),
        ("-5 * * * *", "the range '-5' lacks a bound"),
        ("1,,2 * * * *", "cron field 1 (minute) '1,,2': the list has an empty item"),
        ("0 0 * * MON#6", "cron field 5 (day-of-week) 'MON#6': the n in 'MON#6' must be 1-5"),
        ("0 0 * * L", "cron field 5 (day-of-week) 'L': 'L' is not valid here"),
        ("0 0 30 2 *", "cron fields 3 and 4: day-of-month '30' never occurs in month '2'"),
        ("0 0 31 4,6 *", "day-of-month '31' never occurs in month '4,6'"),
        ("@reboot", "unknown cron alias '@reboot': use one of @yearly, @annually, @monthly"),
        ("@often", "unknown cron alias '@often'"),
    ],
)
def test_bad_cron_says_which_field_and_why(cron: str, reason: str) -> None:
    loc, msg = refusal(cron=cron)

    assert loc == ("cron",)
    assert reason in msg


@pytest.mark.parametrize(
    "cron",
    [
        "*/15 * * * *",
        "0 9-17/2 * * 1-5",
        "0 0 * jan-mar mon-fri",
        "0 0 L * *",
        "0 0 LW * *",
        "0 0 * * 5L",
        "0 0 * * MON#2",
        "0 0 * * 7",
        "0 0 29 2 *",
        "0,30 0 1,15 * *",
    ],
)
def test_good_cron(cron: str) -> None:
    assert schedule(cron=cron).cron == cron


@pytest.mark.parametrize(
    ("alias", "expression", "first"),
    [
        ("@hourly", "0 * * * *", utc(2026, 11, 23, 11)),
        ("@daily", "0 0 * * *", utc(2026, 11, 24)),
        ("@midnight", "0 0 * * *", utc(2026, 11, 24)),
        ("@weekly", "0 0 * * 0", utc(2026, 11, 29)),
        ("@monthly", "0 0 1 * *", utc(2026, 12, 1)),
        ("@yearly", "0 0 1 1 *", utc(2027, 1, 1)),
        ("@annually", "0 0 1 1 *", utc(2027, 1, 1)),
        (" @Daily ", "0 0 * * *", utc(2026, 11, 24)),
    ],
)
def test_aliases(alias: str, expression: str, first: datetime) -> None:
    s = schedule(cron=alias)

    assert s.cron == alias.strip().lower()
    assert s.expression == expression
    assert next_slot(s, utc(2026, 11, 23, 10, 30)) == first


# Time zones


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "europe/berlin", "", "../etc/passwd", "/x"])
def test_unknown_time_zones_are_named(zone: str) -> None:
    loc, msg = refusal(timezone=zone)

    assert loc == ("timezone",)
    assert f"unknown time zone {zone!r}" in msg


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory"])
def test_keys_that_are_no_iana_zone_are_refused(zone: str) -> None:
    loc, msg = refusal(timezone=zone)

    assert loc == ("timezone",)
    assert f"{zone!r} is not an IANA time zone name" in msg


def test_slots_follow_the_zone_and_come_out_in_utc() -> None:
    s = schedule(cron="0 9 * * *", timezone="America/New_York")

    winter = list(slots_between(s, utc(2026, 1, 10), utc(2026, 1, 12)))
    summer = list(slots_between(s, utc(2026, 7, 10), utc(2026, 7, 12)))

    assert winter == [utc(2026, 1, 10, 14), utc(2026, 1, 11, 14)]
    assert summer == [utc(2026, 7, 10, 13), utc(2026, 7, 11, 13)]
    assert all(slot.tzinfo is UTC for slot in winter + summer)


# slots_between and next_slot


def test_slots_between_excludes_after_and_includes_until() -> None:
    s = schedule(cron="0 * * * *")

    slots = list(slots_between(s, utc(2026, 11, 23, 1), utc(2026, 11, 23, 4)))

    assert slots == [utc(2026, 11, 23, 2), utc(2026, 11, 23, 3), utc(2026, 11, 23, 4)]
    assert list(slots_between(s, utc(2026, 11, 23, 4), utc(2026, 11, 23, 4))) == []
    assert list(slots_between(s, utc(2026, 11, 23, 5), utc(2026, 11, 23, 4))) == []


def test_slots_between_accepts_any_aware_datetime() -> None:
    s = schedule(cron="0 * * * *")
    after = datetime(2026, 11, 23, 3, 0, 0, 1, tzinfo=BERLIN)  # 02:00:00.000001 UTC

    assert next(slots_between(s, after, utc(2026, 11, 24))) == utc(2026, 11, 23, 3)


def test_next_slot() -> None:
    s = schedule()

    assert next_slot(s, utc(2026, 11, 23, 1, 59, 59)) == utc(2026, 11, 23, 2)
    assert next_slot(s, utc(2026, 11, 23, 2)) == utc(2026, 11, 24, 2)
    assert next_slot(schedule(enabled=False), utc(2026, 11, 23)) is None


def test_next_slot_finds_rare_slots() -> None:
    # A fifth Monday in February needs a leap year starting on a Monday.
    s = schedule(cron="0 0 * 2 MON#5")

    assert next_slot(s, utc(2026, 1, 1)) == utc(2044, 2, 29)


def naive_refused(call: Any) -> None:
    with pytest.raises(ValueError, match="must be a time-zone-aware datetime"):
        call()


def test_naive_datetimes_are_refused() -> None:
    s, aware, naive = schedule(), utc(2026, 1, 1), datetime(2026, 1, 1)

    naive_refused(lambda: list(slots_between(s, naive, aware)))
    naive_refused(lambda: list(slots_between(s, aware, naive)))
    naive_refused(lambda: next_slot(s, naive))
    naive_refused(lambda: due_slots(s, naive, aware, aware))
    naive_refused(lambda: due_slots(s, None, naive, aware))
    naive_refused(lambda: due_slots(s, None, aware, naive))
    naive_refused(lambda: slot_execution_name("nightly", naive))


# Daylight saving time (Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST,
# 2026-10-25 03:00 CEST -> 02:00 CET)


def test_spring_forward_runs_a_slot_in_the_missing_hour_once_right_after_the_gap() -> None:
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")

    slots = list(slots_between(s, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12)))

    assert slots == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert slots[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_fall_back_runs_a_slot_in_the_repeated_hour_once_at_its_first_pass() -> None:
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")

    slots = list(slots_between(s, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12)))

    assert slots == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first of two 02:30s
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_fall_back_from_inside_the_second_pass_does_not_repeat_the_slot() -> None:
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    second_pass = utc(2026, 10, 25, 1, 0)  # 02:00 CET, after 02:30 CEST was due

    assert next_slot(s, second_pass) == utc(2026, 10, 26, 1, 30)
    assert next_slot(s, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize(
    ("day", "hours"),
    [((2026, 3, 29), 23), ((2026, 10, 25), 25), ((2026, 11, 1), 24)],
)
def test_hourly_slots_follow_elapsed_time_across_changes(
    day: tuple[int, int, int], hours: int
) -> None:
    s = schedule(cron="30 * * * *", timezone="Europe/Berlin")
    start = datetime(*day, tzinfo=BERLIN).astimezone(UTC)
    end = (datetime(*day, tzinfo=BERLIN) + timedelta(days=1)).astimezone(UTC)

    slots = list(slots_between(s, start, end))

    assert len(slots) == hours
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(slots))


@pytest.mark.parametrize("cron", ["30 2 * * *", "0,30 2,3 * * *", "30 * * * *", "*/20 * * * *"])
@pytest.mark.parametrize("day", [(2026, 3, 29), (2026, 10, 25)])
def test_slots_do_not_depend_on_where_counting_starts(cron: str, day: tuple[int, int, int]) -> None:
    # Every node, whatever instant it resumes from, must agree on the slots (exactly once).
    s = schedule(cron=cron, timezone="Europe/Berlin")
    origin = datetime(*day, tzinfo=UTC) - timedelta(hours=3)  # the change is at 01:00 UTC
    until = origin + timedelta(hours=30)
    reference = list(slots_between(s, origin, until))

    for step in range(0, 8 * 6):
        after = origin + timedelta(minutes=10 * step)
        assert list(slots_between(s, after, until)) == [x for x in reference if x > after]


# due_slots

CREATED = utc(2026, 11, 20, 15)


def test_first_run_counts_from_when_the_schedule_was_stored() -> None:
    s = schedule(missed="catch_up")

    assert due_slots(s, None, utc(2026, 11, 21, 1, 59), CREATED) == []
    assert due_slots(s, None, utc(2026, 11, 21, 2), CREATED) == [utc(2026, 11, 21, 2)]
    assert due_slots(s, None, utc(2026, 11, 21, 2), utc(2026, 11, 21, 2)) == []


def test_nothing_is_due_before_the_next_slot() -> None:
    s = schedule()

    assert due_slots(s, utc(2026, 11, 21, 2), utc(2026, 11, 21, 2), CREATED) == []
    assert due_slots(s, utc(2026, 11, 21, 2), utc(2026, 11, 22, 1, 59), CREATED) == []
    assert due_slots(s, utc(2026, 11, 21, 2), utc(2026, 11, 20), CREATED) == []


def test_the_next_slot_is_due_on_time() -> None:
    s = schedule()
    due = due_slots(s, utc(2026, 11, 21, 2), utc(2026, 11, 22, 2, 0, 5), CREATED)

    assert due == [utc(2026, 11, 22, 2)]
    assert due_slots(s, due[-1], utc(2026, 11, 22, 2, 0, 10), CREATED) == []


def test_skip_starts_only_the_latest_slot_after_downtime() -> None:
    s = schedule(missed="skip")

    due = due_slots(s, utc(2026, 11, 20, 2), utc(2026, 11, 24, 10), CREATED)

    assert due == [utc(2026, 11, 24, 2)]


def test_catch_up_starts_every_missed_slot_in_order() -> None:
    s = schedule(missed="catch_up")

    due = due_slots(s, utc(2026, 11, 21, 2), utc(2026, 11, 24, 10), CREATED)

    assert due == [utc(2026, 11, 22, 2), utc(2026, 11, 23, 2), utc(2026, 11, 24, 2)]


def test_catch_up_limit_keeps_the_most_recent_slots() -> None:
    s = schedule(missed="catch_up", catch_up_limit=2)

    due = due_slots(s, utc(2026, 11, 21, 2), utc(2026, 11, 24, 10), CREATED)

    assert due == [utc(2026, 11, 23, 2), utc(2026, 11, 24, 2)]


def test_long_downtime_of_a_frequent_schedule() -> None:
    s = schedule(cron="* * * * *", missed="catch_up")
    now = utc(2026, 12, 20, 12, 0, 30)

    due = due_slots(s, utc(2026, 11, 21), now, utc(2026, 1, 1))

    assert len(due) == 100
    assert due[0] == utc(2026, 12, 20, 10, 21)
    assert due[-1] == utc(2026, 12, 20, 12)
    assert due_slots(schedule(cron="* * * * *"), utc(2026, 11, 21), now, CREATED) == [due[-1]]


def test_long_downtime_of_a_rare_schedule() -> None:
    s = schedule(cron="@yearly", missed="catch_up")

    due = due_slots(s, None, utc(2031, 6, 1), utc(2026, 6, 1))

    assert due == [utc(year, 1, 1) for year in range(2027, 2032)]
    assert due_slots(schedule(cron="@yearly"), None, utc(2031, 6, 1), CREATED) == [utc(2031, 1, 1)]


def test_a_schedule_stored_after_the_last_slot_does_not_backfill() -> None:
    # The schedule was changed (stored anew) after its last run: count from the change.
    s = schedule(missed="catch_up")

    due = due_slots(s, utc(2026, 11, 1, 2), utc(2026, 11, 22, 10), CREATED)

    assert due == [utc(2026, 11, 21, 2), utc(2026, 11, 22, 2)]


def test_catch_up_across_the_fall_back_night() -> None:
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin", missed="catch_up")

    due = due_slots(s, utc(2026, 10, 23, 0, 30), utc(2026, 10, 26, 12), utc(2026, 1, 1))

    assert due == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_a_disabled_schedule_is_never_due() -> None:
    s = schedule(enabled=False, missed="catch_up")

    assert due_slots(s, None, utc(2027, 1, 1), CREATED) == []


def test_due_slots_accepts_any_aware_datetime() -> None:
    s = schedule(missed="catch_up")
    now = datetime(2026, 11, 22, 4, tzinfo=BERLIN)  # 03:00 UTC

    due = due_slots(s, None, now, CREATED.astimezone(BERLIN))

    assert due == [utc(2026, 11, 21, 2), utc(2026, 11, 22, 2)]
    assert all(slot.tzinfo is UTC for slot in due)


# Execution names

EXECUTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def test_slot_execution_name() -> None:
    assert slot_execution_name("nightly", utc(2026, 11, 23, 2)) == "nightly-20261123T020000Z"


def test_slot_execution_name_is_in_utc_and_fits_an_execution_name() -> None:
    slot = datetime(2026, 3, 29, 3, tzinfo=BERLIN)
    name = slot_execution_name("a" * 64, slot)

    assert name == "a" * 64 + "-20260329T010000Z"
    assert len(name) <= 128
    assert EXECUTION_NAME.fullmatch(name)


def test_slot_execution_names_are_distinct_per_slot_and_schedule() -> None:
    s = schedule(cron="*/20 * * * *", timezone="Europe/Berlin")
    slots = list(slots_between(s, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12)))
    names = {slot_execution_name(n, slot) for n in ("a", "b") for slot in slots}

    assert len(names) == 2 * len(slots)


@pytest.mark.parametrize("name", ["", "-x", "a b", "a" * 65])
def test_slot_execution_name_refuses_bad_schedule_names(name: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        slot_execution_name(name, utc(2026, 1, 1))
