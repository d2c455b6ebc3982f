"""Cron schedules of a workflow: the model, and which slots are due when.

Everything here is pure: the engine asks which slots are due, starts each as an ordinary
execution named by `slot_execution_name`, and relies on the unique (workflow, execution name)
constraint so that several server processes start a slot exactly once. For that the slot
instants must come out the same on every node: they depend only on the schedule, the
instants passed in, cronsim and the time-zone database (keep those the same across nodes).

Cron expressions are parsed and evaluated by cronsim (it follows Debian cron, including its
behaviour at daylight-saving changes). Slots are computed in the schedule's time zone and
returned as aware UTC datetimes. At a daylight-saving change:

- An expression with a fixed minute and hour (neither field starts with `*`, e.g. `30 2 * * *`)
  keeps to the wall clock, as Debian cron does. On the spring-forward day a slot in the skipped
  hour runs once, at the first instant after the gap: in Europe/Berlin, 02:30 runs at 03:00 CEST
  (01:00 UTC). On the fall-back day a slot in the repeated hour runs once, at its first
  occurrence: 02:30 CEST (00:30 UTC), not again at 02:30 CET.
- An expression with a wildcard minute or hour (`30 * * * *`, `*/15 * * * *`) follows elapsed
  time: the skipped hour has no slots and the repeated hour has slots in both of its passes, so
  every real hour still gets its runs.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
DEFAULT_CATCH_UP_LIMIT = 100

# The special strings of Vixie/Debian cron, minus @reboot (a server has no boot to follow).
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# (name, lowest, highest, extra forms) of the five fields; day-of-week 7 is Sunday too.
_FIELDS = (
    ("minute", 0, 59, ""),
    ("hour", 0, 23, ""),
    ("day-of-month", 1, 31, "; also L (last day) or LW (last weekday)"),
    ("month", 1, 12, "; also the names JAN-DEC"),
    ("day-of-week", 0, 7, "; also the names SUN-SAT, DAY#n (n-th in the month), 0L-7L (last)"),
)
# Any fixed instant will do: parsing a cron expression does not depend on it.
_PROBE_TIME = datetime(2000, 1, 1, tzinfo=UTC)
# Keys that zoneinfo resolves but that are no IANA zone: `localtime` is the host's own zone,
# which would make a slot depend on how each server is configured.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
# due_slots looks back this far first and widens the window fourfold until it has enough slots,
# so a long downtime costs a few steps instead of iterating every slot since the last run.
_FIRST_WINDOW = timedelta(hours=1)


class Missed(enum.StrEnum):
    """What happens to slots missed while no server was running."""

    SKIP = "skip"
    CATCH_UP = "catch_up"


class Schedule(BaseModel):
    """One entry of a workflow definition's `schedules` list.

    `name` is required rather than derived from the entry's position: it is part of every slot's
    execution name, so it must survive reordering or inserting schedules, or a slot could run
    twice. Names must be unique within a workflow (the definition checks that).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SCHEDULE_NAME_PATTERN)
    cron: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)
    missed: Missed = Missed.SKIP
    catch_up_limit: int = Field(default=DEFAULT_CATCH_UP_LIMIT, ge=1, le=10_000, strict=True)
    enabled: bool = Field(default=True, strict=True)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return normalize_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone_for(value)
        return value

    @model_validator(mode="after")
    def _limit_needs_catch_up(self) -> Self:
        if "catch_up_limit" in self.model_fields_set and self.missed is not Missed.CATCH_UP:
            raise ValueError("catch_up_limit applies only with missed: catch_up")
        return self

    @property
    def expression(self) -> str:
        """The five-field cron expression (aliases expanded)."""
        return ALIASES.get(self.cron, self.cron)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def zone_for(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError naming it if there is no such zone."""
    if name in _NOT_ZONES:
        raise ValueError(f"{name!r} is not an IANA time zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def normalize_cron(text: str) -> str:
    """`text` as five fields joined by single spaces, or a lower-case alias.

    Raises ValueError saying which field is wrong and why.
    """
    stripped = text.strip()
    if stripped.startswith("@"):
        if stripped.lower() not in ALIASES:
            raise ValueError(f"unknown cron alias {stripped!r}: use one of {', '.join(ALIASES)}")
        return stripped.lower()
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week)"
            f" or is an alias such as @daily; got {len(fields)} field(s)"
        )
    for index, field in enumerate(fields):
        if not _accepts(index, field):
            name = _FIELDS[index][0]
            raise ValueError(f"cron field {index + 1} ({name}) {field!r}: {_why(index, field)}")
    expression = " ".join(fields)
    try:
        CronSim(expression, _PROBE_TIME)
    except CronSimError:
        # Each field is fine alone, so the day-of-month names a day that none of the
        # chosen months has (cronsim's only check across fields), e.g. `0 0 30 2 *`.
        raise ValueError(
            f"cron fields 3 and 4: day-of-month {fields[2]!r} never occurs in month {fields[3]!r}"
        ) from None
    return expression


def _accepts(index: int, field: str) -> bool:
    """Whether cronsim takes `field` in position `index` (the other fields being `*`)."""
    if not field:
        return False
    probe = ["*"] * 5
    probe[index] = field
    try:
        CronSim(" ".join(probe), _PROBE_TIME)
    except CronSimError:
        return False
    return True


def _why(index: int, field: str) -> str:
    """Why cronsim refuses `field`, for the first list item that it refuses."""
    _, low, high, extra = _FIELDS[index]
    items = field.split(",")
    item = next((i for i in items if not _accepts(index, i)), field)
    if item == "":
        return "the list has an empty item"
    base, slash, step = item.partition("/")
    if slash:
        if not step.isdigit():
            return f"the step in {item!r} is not a whole number"
        if int(step) == 0:
            return f"the step in {item!r} must be at least 1"
        if base != "*" and not _accepts(index, base):
            return _why(index, base)
    start, dash, end = base.partition("-")
    if dash and not slash:
        if not start or not end:
            return f"the range {item!r} lacks a bound"
        for bound in (start, end):
            if not _accepts(index, bound):
                return _why(index, bound)
        return f"the range {item!r} runs backwards"
    if item.isdigit():
        return f"{int(item)} is out of range {low}-{high}"
    day, hash_, nth = item.partition("#")
    if hash_ and _accepts(index, day) and not (nth.isdigit() and 1 <= int(nth) <= 5):
        return f"the n in {item!r} must be 1-5"
    forms = f"*, a number {low}-{high}, a range a-b, a step */n or a-b/n{extra}"
    return f"{item!r} is not valid here: use {forms}"


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a time-zone-aware datetime, got {value!r}")


def _slots_after(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Every slot strictly after `after`, in UTC, strictly increasing."""
    previous = after.astimezone(UTC)
    for local in CronSim(schedule.expression, after.astimezone(schedule.zone)):
        slot = local.astimezone(UTC)
        # Debian cron semantics work on the wall clock: started in the second pass of a
        # repeated hour, cronsim can return that hour's first pass, which lies before `after`.
        if slot > previous:
            previous = slot
            yield slot


def slots_between(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """The slots in (after, until], oldest first, as aware UTC datetimes.

    This is the calendar of the cron expression alone: `enabled` is not consulted.
    """
    _require_aware(after, "after")
    _require_aware(until, "until")
    for slot in _slots_after(schedule, after):
        if slot > until:
            return
        yield slot


def next_slot(schedule: Schedule, after: datetime) -> datetime | None:
    """The first slot after `after`, or None if disabled or none comes within 50 years."""
    _require_aware(after, "after")
    if not schedule.enabled:
        return None
    return next(_slots_after(schedule, after), None)


def due_slots(
    schedule: Schedule, last_slot: datetime | None, now: datetime, created_at: datetime
) -> list[datetime]:
    """The slots to start now, oldest first, as aware UTC datetimes.

    Slots count from the later of `last_slot` (the last one started, None if never) and
    `created_at` (when the schedule was stored), exclusive, up to `now` inclusive; nothing at
    or before `created_at` is ever due, so storing a schedule does not backfill the past.
    With `missed: skip` only the latest due slot is returned and the others are dropped; with
    `missed: catch_up` every due slot is, except that beyond `catch_up_limit` the oldest are
    dropped and the most recent `catch_up_limit` kept. A disabled schedule has none.
    """
    _require_aware(now, "now")
    _require_aware(created_at, "created_at")
    if last_slot is not None:
        _require_aware(last_slot, "last_slot")
    if not schedule.enabled:
        return []
    lower = created_at if last_slot is None else max(last_slot, created_at)
    if now <= lower:
        return []
    keep = schedule.catch_up_limit if schedule.missed is Missed.CATCH_UP else 1
    return _latest(schedule, lower, now, keep)


def _latest(schedule: Schedule, lower: datetime, upper: datetime, count: int) -> list[datetime]:
    """The last `count` slots in (lower, upper], oldest first."""
    window = _FIRST_WINDOW
    while True:
        start = lower if window >= upper - lower else upper - window
        found = deque(slots_between(schedule, start, upper), maxlen=count)
        if len(found) == count or start == lower:
            return list(found)
        window *= 4


def slot_execution_name(schedule_name: str, slot: datetime) -> str:
    """The execution name of a slot, e.g. `nightly-20261123T020000Z` (UTC, to the second).

    At most 81 characters for a valid schedule name. The same schedule name and slot always
    give the same name, which makes a slot start once under a unique execution name.
    """
    if not re.fullmatch(SCHEDULE_NAME_PATTERN, schedule_name):
        raise ValueError(f"{schedule_name!r} does not match {SCHEDULE_NAME_PATTERN}")
    _require_aware(slot, "slot")
    return f"{schedule_name}-{slot.astimezone(UTC):%Y%m%dT%H%M%SZ}"
