"""Durations as people write them: `250ms`, `30s`, `5m`, `1h30m`, `2d`, or plain seconds."""

from __future__ import annotations

import math
import re

# The longest wait a workflow may ask for (a sleep, a timeout, a retry delay). Far beyond any
# real wait, yet small enough that `now + timedelta(seconds=...)` can never overflow.
MAX_DURATION = 400 * 86400.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(value: object) -> float:
    """Return seconds for a duration string or a number from 0 to MAX_DURATION; ValueError
    otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m' or a number of seconds")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if isinstance(value, int) and value > MAX_DURATION:
            # JSON integers are unbounded (10**400 is no float, and too long to show)
            raise ValueError(f"too long: a duration is at most {MAX_DURATION / 86400:g}d")
        return _bounded(float(value), value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '30s', '5m' or a number of seconds")
    text = value.strip().lower().replace(" ", "")
    if not text or not _WHOLE.match(text):
        raise ValueError(
            f"{value!r} is not a duration: use forms like '250ms', '30s', '5m', '1h30m'"
        )
    return _bounded(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)), value)


def _bounded(seconds: float, value: object) -> float:
    if seconds > MAX_DURATION:  # an overflow to infinity lands here too
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:36]}..."
        raise ValueError(f"{shown} is too long: a duration is at most {MAX_DURATION / 86400:g}d")
    return seconds


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
