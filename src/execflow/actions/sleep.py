"""`sleep`: wait for a duration or until a timestamp; the wake-up time is persisted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, field_validator, model_validator

from execflow.actions.base import Action, Args, Placement
from execflow.durations import parse_duration


class SleepArgs(Args):
    duration: float | None = None
    until: AwareDatetime | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("until")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # the wake-up time is kept in UTC: a time near year 1 or 9999 may have none
        try:
            return None if value is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError("this time has no UTC equivalent (outside years 1 to 9999)") from None

    @model_validator(mode="after")
    def _one_of(self) -> SleepArgs:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of 'duration' or 'until'")
        return self


def wake_at(args: SleepArgs, now: datetime) -> datetime:
    if args.until is not None:
        return args.until.astimezone(UTC)
    return now + timedelta(seconds=args.duration or 0.0)


ACTION = Action(
    "sleep", SleepArgs, Placement.TIMER, "Wait for a duration or until a time", wake_at=wake_at
)
