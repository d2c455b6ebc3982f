"""Parking: an execution that only waits leaves memory until something wakes it.

An execution whose pending work is only waits (a sleep or a retry back-off due later than
`park_after` seconds, a signal, a child execution, a resume while suspended, a start put off
until `scheduled_at`) is parked in the tick's transaction: its lease goes to nobody until a
poll before its first timer is due (`executions.wake_at`, far in the future when it waits
for no timer), and the engine forgets it. A command for it (a signal, cancel, resume, a
child's end) wakes it in the transaction that records the command; its timer wakes it by
the lease expiring. Either way any engine claims it and rebuilds it from the store as on a
takeover, timers re-armed from its task runs. So what an engine holds, and what its
renewals and timers cost, follows the executions that have work to do, not all those that
are active.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from execflow.actions import Placement
from execflow.engine.base import EngineBase, T
from execflow.engine.run import Run
from execflow.store.ops import Op, ParkExecution

# the wake-up time of an execution that waits for no timer (a command wakes it)
NEVER = datetime(9999, 1, 1, tzinfo=UTC)


class Parking(EngineBase):
    """Which executions a tick parks, and letting go of what ended or was parked."""

    def _park(self, advanced: set[str], now: datetime, ops: list[Op]) -> None:
        """Park those of the executions advanced in this tick that only wait, long enough."""
        after = self.settings.park_after
        if after <= 0 or self._draining:
            return
        # claimed a poll before its timer is due, so the timer fires on time, in memory
        lead = timedelta(seconds=min(self.settings.poll_seconds, after / 2))
        for run_id in advanced:
            run = self.runs.get(run_id)
            if run is None or run_id in self._faults or run_id in self._touched:
                continue  # gone, faulted, or has more to do at the next tick
            due = self._next_event(run, now)
            if due is None or (due - now).total_seconds() <= after:
                continue
            ops.append(ParkExecution(run_id, NEVER if due is NEVER else due - lead))
            self._parking.add(run_id)

    def _next_event(self, run: Run, now: datetime) -> datetime | None:
        """When an execution that only waits has its first timer (NEVER: it waits for a
        command); None if it has anything else to do, or a timer its rebuilding would not
        set again as it is (a child's task timeout restarts on a takeover)."""
        if (
            run.state.terminal
            or run.cancel_requested
            or not run.admitted
            or run.fanouts
            or run.id in self._unadmitted
        ):
            return None
        due = NEVER
        if run.scheduled_at is not None and not run.attempts and now < run.scheduled_at:
            due = run.scheduled_at
        for a in run.attempts.values():
            if a.state.terminal:
                continue
            if a.state is T.SCHEDULED:
                if not run.suspended:  # else its wake-up waits for a resume
                    due = min(due, a.wake_at or now)
                continue
            placement = self._placement(run, a.task_id)
            waiting = a.waiting or {}
            if placement is Placement.TIMER:
                due = min(due, a.wake_at or now)
            elif placement is Placement.SIGNAL:
                until = waiting.get("until")
                if until:
                    due = min(due, datetime.fromisoformat(until))
            elif not (
                placement is Placement.CHILD
                and waiting.get("child")
                and not run.task(a.task_id).timeout
            ):
                return None
        return due

    def _let_go(self) -> None:
        """Once a tick is written: forget what ended in it and what it parked."""
        ended, self._ending = self._ending, set()
        for run_id in ended:  # what ended in this tick, never a scan of what is held
            run = self.runs.get(run_id)
            if run is not None and run.state.terminal:
                self._forget(run_id)
        parked, self._parking = self._parking, set()
        for run_id in parked - self._kept:  # kept: a command waits for it
            self._forget(run_id)
        self._kept.clear()
        self._timers.skip_stale(self.runs)
