"""The eight syslog severities of the audit log (RFC 5424), by number and by name."""

from __future__ import annotations

import re

NAMES = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")
EMERGENCY, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG = range(8)
DEFAULT = INFO

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def parse_level(value: object) -> int:
    """A level from its name (any case) or number; ValueError naming the choices."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a log level ({', '.join(NAMES)}, or 0-7)")
    if isinstance(value, int) and 0 <= value <= 7:
        return value
    if isinstance(value, str):
        name = value.strip().lower()
        if name in NAMES:
            return NAMES.index(name)
        if name.isdigit() and 0 <= int(name) <= 7:
            return int(name)
    raise ValueError(f"{value!r} is not a log level ({', '.join(NAMES)}, or 0-7)")


def name_of(level: int) -> str:
    return NAMES[level]


def clean_line(text: str, limit: int = 8192) -> str:
    """One log line as it is kept: control characters escaped (so that a value cannot forge
    entries or terminal sequences), at most `limit` characters."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.rstrip("\r\n"))
    return text if len(text) <= limit else text[:limit] + "…"
