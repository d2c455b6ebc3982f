"""The eight syslog severities of the audit log (RFC 5424), by number and by name."""

from __future__ import annotations

import re

NAMES = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")
EMERGENCY, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG = range(8)
DEFAULT = INFO

# Control characters (C0 but tab, DEL, C1: 0x9b is a terminal's CSI), and line breaks of
# every kind, so that one entry stays one line and a value cannot forge another entry.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


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


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_line(text: str, limit: int = 8192) -> str:
    """One log line as it is kept: control characters escaped (so that a value cannot forge
    entries or terminal sequences), at most `limit` characters."""
    text = _CONTROL.sub(_escape, text.rstrip("\r\n"))
    return text if len(text) <= limit else text[:limit] + "…"
