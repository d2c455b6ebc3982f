"""Limits on what callers may send and how often: one place, configurable, safe by default.

The body of a request is bounded before it is read (`max_body`), JSON documents in depth
and content (no NaN, infinities, NUL characters or lone surrogates, which no database
stores), workflows in tasks, fan-outs in items (and what one start makes through
children), start requests in the size of their inputs, and each token in how many
executions it starts per second (each project in how many children, in the engine).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from execflow.errors import Detail

_SIZE = re.compile(r"^\s*(\d+)\s*(|b|kib|kb|k|mib|mb|m|gib|gb|g)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(name: str, text: str) -> int:
    """`1048576`, `512KiB`, `1MiB` (K, M, G are powers of 1024); ValueError naming `name`."""
    found = _SIZE.match(text)
    if not found:
        raise ValueError(f"{name} must be a size such as 1048576, 512KiB or 4MiB, got {text!r}")
    return int(found.group(1)) * _UNITS[found.group(2)[:1].lower()]


@dataclass(frozen=True)
class Limits:
    max_body: int = 1024**2  # bytes of a request body
    max_depth: int = 32  # nesting of a JSON (or YAML) document
    max_tasks: int = 1_000  # tasks of a workflow
    max_items: int = 10_000  # items of one fan-out; executions one start makes as children
    max_inputs: int = 256 * 1024  # bytes of a start's inputs (and of its stores, its signals)
    start_rate: float = 200.0  # executions a token may start per second; 0: no limit
    start_burst: int = 1_000  # ... and at once, after a quiet time


def _positive(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of 1 or more, got {text!r}")
    return value


def _rate(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be a number of starts per second (0: no limit), got {text!r}"
        )
    return value


# (setting, environment variable, parser), for `Settings.from_env`
ENVIRONMENT: tuple[tuple[str, str, Callable[[str, str], float]], ...] = (
    ("max_body", "EXECFLOW_MAX_BODY", parse_size),
    ("max_depth", "EXECFLOW_MAX_DEPTH", _positive),
    ("max_tasks", "EXECFLOW_MAX_TASKS", _positive),
    ("max_items", "EXECFLOW_MAX_ITEMS", _positive),
    ("max_inputs", "EXECFLOW_MAX_INPUTS", parse_size),
    ("start_rate", "EXECFLOW_START_RATE", _rate),
    ("start_burst", "EXECFLOW_START_BURST", _positive),
)


def limits_from_env(env: Mapping[str, str]) -> Limits:
    """Limits with the values `env` sets; ValueError naming the variable of a bad one."""
    values = {name: parse(var, env[var]) for name, var, parse in ENVIRONMENT if var in env}
    return Limits(**values)  # type: ignore[arg-type]


# documents ------------------------------------------------------------------------------------

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Python writes no int of more digits as text, so neither JSON nor a database takes one
_DIGITS = sys.int_info.default_max_str_digits  # 4300
_TOO_LONG = 10**_DIGITS


def _pointer(path: list[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def document_problem(doc: Any, max_depth: int, where: str = "") -> Detail | None:
    """The first thing in a parsed document that execflow refuses to take: nesting deeper
    than `max_depth`, a number that is not finite or an int too long to write, a string
    with NUL or a lone surrogate."""
    stack: list[tuple[Any, list[Any]]] = [(doc, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > max_depth:
            return Detail(where + _pointer(path[:max_depth]), f"nested deeper than {max_depth}")
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and _UNSTORABLE.search(k):
                    return Detail(where + _pointer(path), f"key {_unstorable(k)}")
                stack.append((v, [*path, k]))
        elif isinstance(value, list):
            stack.extend((v, [*path, i]) for i, v in enumerate(value))
        elif isinstance(value, str):
            if _UNSTORABLE.search(value):
                return Detail(where + _pointer(path), _unstorable(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return Detail(where + _pointer(path), "not a finite number")
        elif isinstance(value, int) and abs(value) >= _TOO_LONG:
            return Detail(where + _pointer(path), f"an integer of over {_DIGITS} digits")
    return None


def storable(value: Any) -> Any:
    """`value` with every NUL character and lone surrogate, in strings and keys, replaced
    by U+FFFD: what a task produced is kept, where no database would store those. The same
    object when there is nothing to replace (the usual case: nothing is copied)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        changed = {storable(k): storable(v) for k, v in value.items()}
        same = all(a is b for a, b in zip(changed, value, strict=True)) and all(
            changed[k] is value[k] for k in value
        )
        return value if same else changed
    if isinstance(value, list):
        items = [storable(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _unstorable(text: str) -> str:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    return "contains a lone surrogate (not valid Unicode)"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes, max_depth: int) -> tuple[Any, Detail | None]:
    """A request body parsed, or why it is refused (pointer "" for the whole body)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Detail("", f"the body is not UTF-8 (byte {exc.start})")
    try:
        doc = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        return None, Detail("", f"nested deeper than {max_depth}")
    except ValueError as exc:  # JSONDecodeError says where
        return None, Detail("", f"not JSON: {exc}")
    return doc, document_problem(doc, max_depth)


def json_size(value: Any) -> int:
    """Bytes of a JSON value as stored (compact, UTF-8)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# rates ----------------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per caller: `burst` at once, refilled at `rate` per second. Kept in
    memory, so each node of a cluster counts its own requests."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, datetime]] = {}

    def take(self, who: str, now: datetime) -> float:
        """0 when `who` may go on (and one is counted), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        level, at = self._buckets.get(who, (float(self.burst), now))
        elapsed = max(0.0, (now - at).total_seconds())
        level = min(float(self.burst), level + elapsed * self.rate)
        if level < 1.0:
            self._buckets[who] = (level, now)
            return (1.0 - level) / self.rate
        self._buckets[who] = (level - 1.0, now)
        if len(self._buckets) > 100_000:  # callers long quiet are full again: forget them
            full = float(self.burst)
            self._buckets = {
                k: (lv, t)
                for k, (lv, t) in self._buckets.items()
                if lv + (now - t).total_seconds() * self.rate < full
            }
        return 0.0
