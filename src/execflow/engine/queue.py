"""Attempts waiting for a worker: queued in the engine, started by a tick's write.

A `python` or `command` attempt is offered to the pool when it begins; at the end of the
tick, the free slots go to the waiting attempts by fair shares between projects
(`shares.py`), and the rest are recorded as queued (`waiting: {"queued": true}` on their
RUNNING row). When a worker frees, a tick writes the start of the next one (guarded by the
lease, like every write) and only then hands it to the worker. So the store knows which
attempts may have run: after a crash, a queued one is queued again, not `lost`; and a node
that lost an execution cannot start its queued attempts, since their start is a write its
lease no longer allows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from execflow.engine.base import EngineBase, T, Waiter
from execflow.engine.run import Attempt, Run, split_key
from execflow.executors import Outcome
from execflow.store.ops import Op, UpdateTaskRun

QUEUED = {"queued": True}


def is_queued(attempt: Attempt) -> bool:
    return attempt.state is T.RUNNING and bool((attempt.waiting or {}).get("queued"))


class Queueing(EngineBase):
    """The engine's queue of attempts waiting for a worker of the local pool."""

    def _offer(self, run: Run, attempt: Attempt, args: Any, scheduled: bool) -> None:
        """A pool attempt that begins now: it gets a slot at the end of the tick, or waits."""
        key = (run.id, attempt.task_id, attempt.attempt)
        waiter = Waiter(key, args, fresh=True, scheduled=scheduled)
        self._pool.push(run.project_id, waiter)
        self._offers.append(waiter)

    def _allot(self, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]) -> None:
        """Hand the free slots to waiting attempts by fair shares (oldest first within a
        project), then record those offered in this tick that got none as queued."""
        kept: dict[str, list[Waiter]] = {}
        while (picked := self._pool.next()) is not None:
            project, waiter = picked
            key = waiter.key
            run, attempt = self._current(key)
            if run is None or attempt is None or attempt.state is not T.RUNNING:
                continue  # cancelled, dropped, or its execution went elsewhere
            if key[0] in self._faults or not (waiter.fresh or is_queued(attempt)):
                continue
            if run.suspended or run.cancel_requested or self._draining:
                kept.setdefault(project, []).append(waiter)
                continue
            try:
                self._start_waiter(run, attempt, waiter, now, ops)
                starts.append((run, attempt, waiter.args))
                self._pool.promise(project)
            except Exception as exc:
                self._fault(run.id, exc, f"starting task {key[1]}")
        for project, waiters in kept.items():
            self._pool.push_front(project, waiters)
        offers, self._offers = self._offers, []
        for waiter in offers:
            if not waiter.fresh:
                continue
            waiter.fresh = False
            run, attempt = self._current(waiter.key)
            if run is None or attempt is None or waiter.key[0] in self._faults:
                continue
            attempt.waiting = dict(QUEUED)
            self._persist(run, attempt, now, ops, waiter.scheduled, waiting=attempt.waiting)

    def _start_waiter(
        self, run: Run, attempt: Attempt, waiter: Waiter, now: datetime, ops: list[Op]
    ) -> None:
        """Write the start of an attempt that got a slot (and set its timeout)."""
        key = waiter.key
        if waiter.fresh:
            waiter.fresh = False
            self._persist(run, attempt, now, ops, waiter.scheduled, started_at=now)
        else:
            attempt.waiting = None
            ops.append(
                UpdateTaskRun(
                    run.id, key[1], key[2], T.RUNNING, T.RUNNING, waiting=None, started_at=now
                )
            )
        timeout = run.task(key[1]).timeout
        if timeout:
            self._add_timer(now + timedelta(seconds=timeout), "timeout", key)

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
        self._pool.push(run.project_id, Waiter(key, args))
