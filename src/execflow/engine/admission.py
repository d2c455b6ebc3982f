"""A workflow's `concurrency`: at most that many of its executions run at once.

An execution of a revision that declares `concurrency` starts no task before it holds one of
its workflow's slots. The line is in the store (`store/admissions.py`), shared by every node,
so the limit holds across nodes and the oldest waiting execution is admitted first, whichever
node holds it. An execution holds its slot until it ends (a suspended one keeps it; one
suspended while it waits is passed over until it resumes); a retried one queues again.

The engine asks for slots as it takes executions over (so one admitted at once starts in
the same tick), when an execution under a limit ends here, and at each poll (ends on other
nodes). A waiting execution is `WAITING` with no task started, and its audit log says why.
"""

from __future__ import annotations

from datetime import datetime

from execflow.engine.base import E, EngineBase
from execflow.engine.run import Run
from execflow.levels import INFO
from execflow.store.admissions import Waiting, admit
from execflow.store.ops import Op


class Admitting(EngineBase):
    """Slots of workflows' `concurrency` limits: asking for them, and waiting for one."""

    async def _admit(self, now: datetime, polling: bool) -> None:
        """Ask for slots for the executions here that wait for one, a workflow at a time."""
        if not self._unadmitted or not (self._admission_wanted or polling):
            return
        lines: dict[str, list[Waiting]] = {}
        for run_id in list(self._unadmitted):
            run = self.runs.get(run_id)
            if run is None or run.state.terminal or run.admitted:
                self._unadmitted.discard(run_id)
                continue
            if run.suspended or run.cancel_requested or self._draining:
                continue
            limit = run.definition.concurrency
            assert limit is not None  # only such runs wait for a slot
            if run.since is None:  # its place in the line: when it was due, or retried
                run.since = (run.scheduled_at or run.started_at) if run.round == 0 else now
            waiting = Waiting(run.id, run.round, limit, run.since)
            lines.setdefault(run.workflow_id, []).append(waiting)
        for workflow_id, mine in lines.items():
            admitted = await self.store.call(admit, self.store, workflow_id, mine, now)
            for run_id in admitted:
                run = self.runs.get(run_id)
                if run is not None:
                    run.admitted = True
                    self._unadmitted.discard(run_id)
                    self._touched.add(run_id)
        self._admission_wanted = False  # only once asked: after an outage, it asks again

    def _await_slot(self, run: Run, now: datetime, ops: list[Op]) -> bool:
        """Whether the execution waits for a slot (then it is WAITING, or SUSPENDED, and
        starts nothing); once it holds one, its audit log says so."""
        limit = run.definition.concurrency
        if run.admitted:
            if run.in_line:
                run.in_line = False
                text = f"execution admitted: one of the {limit} of workflow {run.workflow} running"
                self._log(run, ops, now, INFO, "state", text, data={"concurrency": limit})
            return False
        if run.active():
            return False  # started before it needed a slot (an older engine): it goes on
        if not run.in_line:
            run.in_line = True
            text = (
                f"execution waits for a slot: at most {limit} executions of workflow"
                f" {run.workflow} run at once"
            )
            self._log(run, ops, now, INFO, "state", text, data={"concurrency": limit})
        if run.state is E.SUSPENDED and not run.suspended:
            self._admission_wanted = True  # resumed: it was passed over while suspended
            self._wake.set()
        self._set_state(run, E.SUSPENDED if run.suspended else E.WAITING, now, ops)
        return True
