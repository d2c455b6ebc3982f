"""Attempts waiting for a worker: queued in the engine, started by a tick's write.

A `python` or `command` attempt that finds no free worker is recorded as queued
(`waiting: {"queued": true}` on its RUNNING row) and kept here. When a worker frees, a
tick writes its start (guarded by the lease, like every write) and only then hands it to
the worker. So the store knows which attempts may have run: after a crash, a queued one
is queued again, not `lost`; and a node that lost an execution cannot start its queued
attempts, since their start is a write its lease no longer allows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from execflow.engine.base import EngineBase, Key, T
from execflow.engine.run import Attempt, Run, split_key
from execflow.executors import Outcome
from execflow.store.ops import Op, UpdateTaskRun

QUEUED = {"queued": True}


def is_queued(attempt: Attempt) -> bool:
    return attempt.state is T.RUNNING and bool((attempt.waiting or {}).get("queued"))


class Queueing(EngineBase):
    """The engine's queue of attempts waiting for a worker of the local pool."""

    def _worker_free(self) -> bool:
        return self._pool_busy + self._reserved < self.executor.size

    def _queue(self, key: Key, args: Any) -> None:
        self._queued.append((key, args))

    def _start_queued(
        self, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]
    ) -> None:
        """Start queued attempts, oldest first, while workers are free."""
        kept: list[tuple[Key, Any]] = []
        while self._queued and self._worker_free():
            key, args = self._queued.popleft()
            run, attempt = self._current(key)
            if run is None or attempt is None or not is_queued(attempt):
                continue  # cancelled, dropped, or its execution went elsewhere
            if run.suspended or run.cancel_requested or self._draining:
                kept.append((key, args))
                continue
            if key[0] in self._faults:
                continue
            try:
                attempt.waiting = None
                ops.append(
                    UpdateTaskRun(
                        run.id, key[1], key[2], T.RUNNING, T.RUNNING, waiting=None, started_at=now
                    )
                )
                starts.append((run, attempt, args))
                self._reserved += 1
                timeout = run.task(key[1]).timeout
                if timeout:
                    self._add_timer(now + timedelta(seconds=timeout), "timeout", key)
                self._touched.add(run.id)
            except Exception as exc:
                self._fault(run.id, exc, f"starting queued task {key[1]}")
        self._queued.extendleft(reversed(kept))

    def _requeue(self, run: Run, attempt: Attempt) -> None:
        """A queued attempt of an execution taken over: it never reached a worker, so it
        waits again (with its arguments rendered again) instead of counting as lost."""
        key = (run.id, attempt.task_id, attempt.attempt)
        tid, index = split_key(attempt.task_id)
        try:
            rendered = run.definition.renderers[tid](run.context(index, tid))
            args = self._action_of(run, attempt.task_id).args.model_validate(rendered)
        except Exception as exc:
            error = self._start_error(run, attempt.task_id, exc)
            self._results.append((key, Outcome(False, error=error, retryable=False)))
            return
        self._queue(key, args)
