"""The local executor: a fixed pool of long-lived worker processes for `python` and `command`.

No process is spawned per task. A task that is cancelled or times out has its
worker's process group killed, and a fresh worker takes its place. What a task logs
comes back line by line while it runs (see `TaskLog`). Workers are confined as
`confinement.py` describes: clean environment, scratch directory, and, where the server
is root, an unprivileged user and namespaces of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execflow.errors import TaskFailure
from execflow.executors.confinement import Confinement, Scratch

log = logging.getLogger("execflow")

_LINE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """What one task run produced: an output, or an error and whether to retry."""

    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = True

    @classmethod
    def failed(cls, failure: TaskFailure) -> Outcome:
        return cls(False, error=failure.as_error(), retryable=failure.retryable)


@dataclass(frozen=True)
class TaskLog:
    """One line a task logged: a syslog level (0-7), where it came from ("stdout",
    "stderr" or "logging"), the text (control characters escaped, at most 8192
    characters) and, for `logging` records, the logger's name."""

    level: int
    stream: str
    message: str
    logger: str | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TaskLog:
        logger = data.get("logger")
        return cls(
            int(data["level"]),
            str(data["stream"]),
            str(data["message"]),
            None if logger is None else str(logger),
        )


class NotStarted(Exception):
    """The task was not handed to a worker: its engine could no longer be sure it holds
    the execution when a worker became free (see `LocalExecutor.run`'s `may_start`)."""


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process, scratch: Path) -> None:
        self.proc = proc
        self.scratch = scratch

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # its pipe is closed now, not when collected


class LocalExecutor:
    def __init__(
        self,
        size: int | None = None,
        python: str = sys.executable,
        confinement: Confinement | None = None,
    ) -> None:
        self.size = size or os.cpu_count() or 2
        self._python = python
        self.confinement = confinement or Confinement()
        self._scratch: Scratch | None = None
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._respawns: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        # a misplaced install fails the start with the reason, not every task with "lost"
        await asyncio.to_thread(self.confinement.probe, self._python)
        self._scratch = Scratch(self.confinement.account)
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        for w in workers:
            self._idle.put_nowait(w)
        log.info("%d task workers: %s", self.size, self.confinement.describe())

    async def _spawn(self) -> _Worker:
        assert self._scratch is not None, "start the executor first"
        scratch = self._scratch.make()
        argv, options = self.confinement.command(self._python, scratch)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=_LINE_LIMIT,
            **options,
        )
        worker = _Worker(proc, scratch)
        self._all.add(worker)
        return worker

    async def run(
        self,
        action: str,
        args: dict[str, Any],
        on_log: Callable[[TaskLog], None] | None = None,
        may_start: Callable[[], bool] | None = None,
    ) -> Outcome:
        """Run one task on a free worker; cancelling this coroutine kills the task.

        `on_log` is called (on the event loop, in the order the worker wrote them) for
        each line the task logs, as it comes and before this returns. If it raises, the
        task is killed like a cancelled one and the exception propagates."""
        worker = await self._idle.get()
        if may_start is not None and not may_start():
            # Asked at the moment the task would start, not when it was queued: a node that
            # was paused while this waited for a worker may have lost the execution since.
            self._idle.put_nowait(worker)
            raise NotStarted
        healthy = False
        try:
            proc = worker.proc
            assert proc.stdin is not None and proc.stdout is not None
            # Without a listener the worker does not capture (nor send) the task's lines.
            request = {"action": action, "args": args, "log": on_log is not None}
            proc.stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            await proc.stdin.drain()
            while True:
                line = await proc.stdout.readline()
                if not line:
                    return Outcome(False, error={"type": "lost", "message": _died(proc)})
                reply = json.loads(line)
                if "log" not in reply:
                    break
                if on_log is not None:
                    on_log(TaskLog.from_wire(reply["log"]))
            healthy = True
            if reply["ok"]:
                return Outcome(True, output=reply["output"])
            return Outcome(False, error=reply["error"], retryable=reply.get("retryable", True))
        except (ConnectionError, BrokenPipeError):
            return Outcome(False, error={"type": "lost", "message": _died(worker.proc)})
        finally:
            if healthy:
                self._idle.put_nowait(worker)
            else:
                self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker (its task was cancelled, or it broke) and start another in its place."""
        worker.kill()
        task = asyncio.get_running_loop().create_task(self._respawn(worker))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, old: _Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            await old.proc.wait()
        self._all.discard(old)
        if self._scratch is not None:
            self._scratch.remove(old.scratch)
        if not self._closed:
            self._idle.put_nowait(await self._spawn())

    async def close(self) -> None:
        self._closed = True
        if self._respawns:
            await asyncio.gather(*self._respawns, return_exceptions=True)
        for worker in list(self._all):
            worker.kill()
        for worker in list(self._all):
            with contextlib.suppress(ProcessLookupError):
                await worker.proc.wait()
        self._all.clear()
        if self._scratch is not None:
            self._scratch.close()


def _died(proc: asyncio.subprocess.Process) -> str:
    code = proc.returncode
    return "the worker process died" + (f" (exit status {code})" if code is not None else "")
