"""Durations as people write them: `250ms`, `30s`, `5m`, `1h30m`, `2d`, or plain seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(value: object) -> float:
    """Return seconds for a duration string or a non-negative number; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m' or a number of seconds")
    if isinstance(value, int | float):
        try:
            seconds = float(value)  # JSON integers are unbounded: 10**400 is no float
        except OverflowError:
            raise ValueError("a duration must be a finite number of seconds") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '30s', '5m' or a number of seconds")
    text = value.strip().lower().replace(" ", "")
    if not text or not _WHOLE.match(text):
        raise ValueError(
            f"{value!r} is not a duration: use forms like '250ms', '30s', '5m', '1h30m'"
        )
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """Render seconds compactly (for messages and the CLI)."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"
