"""A long-lived worker process: reads one task per line on stdin, answers on stdout.

Started by `LocalExecutor` (see `confinement.py` for how). The worker leads its own
process group, so killing the group also kills any command it started; a watchdog ends
the group when the engine that started it goes away (its request pipe hangs up). Tasks run
in the worker's scratch directory (also its HOME and TMPDIR), emptied after each task.

Per task, when the request asks for them (`"log": true`), the worker writes any number
of `{"log": {...}}` lines (what the task logs, sent as it happens) before its one reply
line (`{"ok": ...}`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from pydantic import ValidationError

from execflow import levels
from execflow.actions import ACTIONS, command, python
from execflow.actions.python import LogSink
from execflow.errors import TaskFailure

# A chatty task cannot flood the engine (nor its audit log): past this many lines, the
# rest are counted and reported in one last line.
LOG_LINES_PER_TASK = 10_000

# Pool actions that can send their log lines (the others just run).
_LOGGING: dict[str, Callable[[Any, LogSink], Any]] = {
    python.ACTION.name: python.run,
    command.ACTION.name: command.run,
}


def _watch_requests(fd: int) -> None:
    """End this worker and its commands when the engine's end of the request pipe closes
    (the engine died): it sends nothing while a task runs, so a hang-up is all there is to
    see. In a PID namespace the worker is its init: its exit takes every task process."""
    poller = select.poll()
    poller.register(fd, 0)  # hang-ups and errors are always reported
    while True:
        for _, event in poller.poll():
            if event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                try:
                    os.killpg(0, signal.SIGKILL)
                finally:
                    os._exit(1)


class Channel:
    """The reply stream; its lock keeps lines written by several threads whole."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.lock = threading.Lock()

    def write(self, line: bytes) -> None:
        """Write one line and flush it at once (the caller holds `lock`)."""
        self._out.write(line + b"\n")
        self._out.flush()


class TaskLog:
    """The log lines of one task: cleaned, counted, written to the channel as they come.
    Lines that arrive after `finish` (from threads the task left running) are dropped."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._sent = 0
        self._dropped = 0
        self._open = True

    def __call__(self, level: int, stream: str, text: str, logger: str | None) -> None:
        line = None
        if self._sent < LOG_LINES_PER_TASK:  # read unlocked: only saves work when over
            entry = {
                "level": level,
                "stream": stream,
                "message": levels.clean_line(text),
                "logger": logger,
            }
            line = _dumps({"log": entry})
        with self._channel.lock:
            if not self._open:
                return
            if line is None or self._sent >= LOG_LINES_PER_TASK:
                self._dropped += 1
                return
            self._sent += 1
            try:
                self._channel.write(line)
            except (OSError, ValueError):  # the engine is gone; the watchdog ends us
                self._open = False

    def finish(self, reply: bytes) -> None:
        """Close this task's log (telling how many lines were dropped) and send its reply."""
        with self._channel.lock:
            if self._open and self._dropped:
                message = (
                    f"{self._dropped} more log lines of this task were dropped "
                    f"(at most {LOG_LINES_PER_TASK} are kept)"
                )
                entry = {"level": levels.WARNING, "stream": "logging", "message": message}
                self._channel.write(_dumps({"log": {**entry, "logger": None}}))
            self._open = False
            self._channel.write(reply)


def handle(message: dict[str, Any], log: LogSink | None = None) -> dict[str, Any]:
    """Run one task request and describe its outcome (never raises); with `log`, the
    task's log lines go there while it runs."""
    name = message.get("action", "")
    action = ACTIONS.get(name)
    if action is None or action.pool is None:
        return _failure(f"no pool action {message.get('action')!r}", "internal", False)
    try:
        args = action.args.model_validate(message.get("args", {}))
        logging_run = _LOGGING.get(name)
        if log is not None and logging_run is not None:
            return {"ok": True, "output": logging_run(args, log)}
        return {"ok": True, "output": action.pool(args)}
    except TaskFailure as exc:
        return {"ok": False, "error": exc.as_error(), "retryable": exc.retryable}
    except ValidationError as exc:
        return _failure(f"invalid arguments: {exc}", "arguments", False)
    except Exception as exc:  # user code: any exception is the task's failure
        tail = traceback.format_exc().splitlines()[-20:]
        message_text = f"{type(exc).__name__}: {exc}"
        return {
            "ok": False,
            "error": {"type": "exception", "message": message_text, "traceback": tail},
            "retryable": True,
        }


def _failure(message: str, kind: str, retryable: bool) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message}, "retryable": retryable}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    channel = Channel(replies)
    home = os.getcwd()
    for line in requests:
        log = TaskLog(channel)
        message = json.loads(line)
        try:
            reply = handle(message, log if message.get("log") else None)
        finally:
            # the next task (perhaps another project's) starts with an empty directory
            os.chdir(home)
            _empty(home)
        try:
            data = _dumps(reply)
        except (TypeError, ValueError) as exc:
            data = _dumps(_failure(f"the result is not JSON: {exc}", "result", False))
        log.finish(data)


def _empty(path: str) -> None:
    """Remove what a task left in the worker's directory (its TMPDIR and HOME)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def main() -> None:
    # Keep the protocol on a private copy of stdout; user prints go to stderr instead.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.umask(0o077)  # what tasks write is their worker user's alone
    requests = os.fdopen(0, "rb")
    threading.Thread(target=_watch_requests, args=(0,), daemon=True).start()
    serve(requests, replies)


if __name__ == "__main__":
    main()
