"""`command`: run an argv list (never through a shell) in a worker process.

The child's stdout and stderr are read line by line as it runs: each line goes to the
task's `LogSink` (stdout at info, stderr at warning), and the last `tail_bytes` of each
stream are the task's output.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import IO, Any

from pydantic import Field

from execflow import levels
from execflow.actions.base import Action, Args, Placement
from execflow.actions.python import LogSink
from execflow.errors import TaskFailure

# At most this many bytes of one line are read at once (8192 characters, the most a log
# line keeps, take up to 4 bytes each in UTF-8); the rest of a longer line is not sent.
_LINE_BYTES = 4 * 8192


class CommandArgs(Args):
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    inherit_env: bool = True
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0])
    tail_bytes: int = Field(default=8192, ge=0, le=1_048_576)


def _tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode("utf-8", errors="replace") if limit else ""


class _Tail:
    """The last `limit` bytes of a stream, kept in bounded memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        if not self.limit:
            return
        self._data += chunk
        if len(self._data) > 2 * self.limit:  # trim now and then, not on every chunk
            del self._data[: -self.limit]

    def text(self) -> str:
        return _tail(bytes(self._data), self.limit)


def _pump(pipe: IO[bytes], stream: str, level: int, log: LogSink | None, tail: _Tail) -> None:
    """Read `pipe` to its end, sending each line as it comes and keeping the tail."""
    cut = False  # inside an over-long line whose start was already sent
    with pipe:
        while chunk := pipe.readline(_LINE_BYTES):
            tail.add(chunk)
            ended = chunk.endswith(b"\n")
            if log is not None and not cut:
                text = chunk.decode("utf-8", errors="replace")
                long = not ended and len(chunk) == _LINE_BYTES
                log(level, stream, (text + "…") if long else text, None)
            cut = not ended


def run(args: CommandArgs, log: LogSink | None = None) -> Any:
    """Run the command to its end; with `log`, its output lines go there as they come."""
    env = {**os.environ, **args.env} if args.inherit_env else dict(args.env)
    try:
        # The worker leads its own process group, so a cancel kills this child with it.
        proc = subprocess.Popen(
            args.argv,
            env=env,
            cwd=args.cwd,
            stdin=subprocess.DEVNULL,  # the worker's stdin carries its task requests
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise TaskFailure(f"command not found: {args.argv[0]!r}", "command", False) from exc
    except (NotADirectoryError, PermissionError) as exc:
        raise TaskFailure(f"cannot run {args.argv[0]!r}: {exc}", "command", False) from exc
    assert proc.stdout is not None and proc.stderr is not None
    tails = _Tail(args.tail_bytes), _Tail(args.tail_bytes)
    # One reader per pipe, so neither fills up (and blocks the child) while the other waits.
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", levels.INFO, log, tails[0])),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", levels.WARNING, log, tails[1])),
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    code = proc.wait()
    output = {"exit_code": code, "stdout": tails[0].text(), "stderr": tails[1].text()}
    if code not in args.ok_exit_codes:
        raise TaskFailure(f"{args.argv[0]} exited with {code}", "exit_code", data=output)
    return output


ACTION = Action("command", CommandArgs, Placement.POOL, "Run a command (argv list)", pool=run)
