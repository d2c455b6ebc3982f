"""`python`: call `module:function` with keyword arguments in a worker process.

While the function runs, what it logs through the standard `logging` module and
what it writes to `sys.stdout` / `sys.stderr` is sent on, line by line, to a
`LogSink` (the worker hands the lines to the engine for the execution's audit log).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO, cast

from pydantic import Field

from execflow import levels
from execflow.actions.base import Action, Args, Placement
from execflow.errors import TaskFailure

_FUNCTION = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"

LogSink = Callable[[int, str, str, str | None], None]
"""Where a pool action sends what its task logs: (syslog level, stream, text, logger name).
`stream` is "stdout", "stderr" or "logging"; the sink cleans and limits the text, and
may be called from any thread."""

# A partial line longer than this is sent as it is (the sink cuts it to 8192 characters,
# levels.clean_line's limit) and the rest up to the next newline is dropped, so a task that
# writes without newlines cannot grow the worker's memory.
_LONGEST = 8192


class PythonArgs(Args):
    function: str = Field(pattern=_FUNCTION, description="'package.module:function'")
    args: dict[str, Any] = Field(default_factory=dict)


_cache: dict[str, Callable[..., Any]] = {}


def resolve(ref: str) -> Callable[..., Any]:
    """Import and cache the callable named by `module:function`."""
    found = _cache.get(ref)
    if found is not None:
        return found
    module_name, _, attr = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskFailure(f"cannot import module {module_name!r}: {exc}", "import", False) from exc
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TaskFailure(f"{module_name!r} has no attribute {attr!r}", "import", False)
    if not callable(target):
        raise TaskFailure(f"{ref!r} is not callable", "import", False)
    _cache[ref] = target
    return target  # type: ignore[no-any-return]


def run(args: PythonArgs, log: LogSink | None = None) -> Any:
    """Call the function; with `log`, what it logs and prints goes there as it happens."""
    func = resolve(args.function)  # imported outside the capture: a module's set-up stays
    with captured(log) if log is not None else contextlib.nullcontext():
        result = func(**args.args)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise TaskFailure(f"the result of {args.function} is not JSON: {exc}", "result") from exc
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def syslog_level(levelno: int) -> int:
    """The syslog level of a `logging` level (custom levels fall to the one below them)."""
    if levelno >= logging.CRITICAL:
        return levels.CRITICAL
    if levelno >= logging.ERROR:
        return levels.ERROR
    if levelno >= logging.WARNING:
        return levels.WARNING
    if levelno >= logging.INFO:
        return levels.INFO
    return levels.DEBUG


@contextlib.contextmanager
def captured(log: LogSink) -> Iterator[None]:
    """Send records of the root logger (DEBUG and up) and writes to sys.stdout/sys.stderr
    to `log`; afterwards restore the streams, the root logger's level and its handlers
    (so nothing a task installs there, ours or its own, reaches the next task)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved_out, saved_err = sys.stdout, sys.stderr
    out = _Lines(log, "stdout", levels.INFO)
    err = _Lines(log, "stderr", levels.WARNING)
    forward = _Forward(log)
    root.addHandler(forward)
    root.setLevel(logging.DEBUG)
    sys.stdout, sys.stderr = cast(TextIO, out), cast(TextIO, err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        root.handlers[:] = handlers
        root.setLevel(level)
        forward.close()
        out.finish()
        err.finish()


class _Forward(logging.Handler):
    """Sends each record as one line "logger: message" (a traceback included, escaped)."""

    def __init__(self, log: LogSink) -> None:
        super().__init__(logging.DEBUG)
        self._log = log
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log(syslog_level(record.levelno), "logging", self.format(record), record.name)
        except Exception:
            self.handleError(record)


class _Lines(io.TextIOBase):
    """A text stream that sends each complete line written to it; `finish` sends the rest."""

    encoding = "utf-8"  # for code that asks (the base class says None)

    def __init__(self, log: LogSink, stream: str, level: int) -> None:
        super().__init__()
        self._log = log
        self._stream = stream
        self._level = level
        self._partial = ""
        self._cut = False  # inside an over-long line whose start was already sent
        self._lock = threading.Lock()  # user threads may print at once

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        # Sending under the lock keeps one stream's lines in the order they were written.
        with self._lock:
            *complete, rest = text.split("\n")
            for piece in complete:
                self._add(piece)
                if not self._cut:
                    self._send(self._partial)
                self._partial, self._cut = "", False
            self._add(rest)
        return len(text)

    def _add(self, piece: str) -> None:
        if self._cut:
            return
        self._partial += piece
        if len(self._partial) > _LONGEST:
            self._send(self._partial)
            self._partial, self._cut = "", True

    def _send(self, line: str) -> None:
        self._log(self._level, self._stream, line, None)

    def finish(self) -> None:
        """Send a last line that has no newline; later writes are ignored."""
        with self._lock:
            if self._partial and not self._cut:
                self._send(self._partial)
            self._partial, self._cut = "", True
            self._log = _ignore


def _ignore(level: int, stream: str, text: str, logger: str | None) -> None:
    """A sink for writes after the task (from threads it left running)."""


ACTION = Action("python", PythonArgs, Placement.POOL, "Call a Python function", pool=run)
