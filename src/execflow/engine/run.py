"""The in-memory view of one execution an engine holds a lease on.

It mirrors what is in the store (the store stays the truth: another engine
rebuilds it from there after a takeover) and keeps the latest attempt of each
task, which is all that readiness and retry decisions need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from execflow.definition import Definition
from execflow.records import ExecutionRecord, TaskRunRecord
from execflow.states import ExecutionState, TaskRunState


@dataclass
class Attempt:
    task_id: str
    attempt: int
    state: TaskRunState
    output: Any = None
    error: dict[str, Any] | None = None
    wake_at: datetime | None = None
    waiting: dict[str, Any] | None = None

    @classmethod
    def from_record(cls, rec: TaskRunRecord) -> Attempt:
        return cls(
            rec.task_id, rec.attempt, rec.state, rec.output, rec.error, rec.wake_at, rec.waiting
        )


@dataclass
class Run:
    id: str
    name: str
    workflow: str
    revision: int
    state: ExecutionState
    inputs: dict[str, Any]
    started_at: datetime
    definition: Definition
    cancel_requested: bool = False
    attempts: dict[str, Attempt] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    suspended: bool = False
    # running tasks may finish until then; None once a cancel is immediate
    cancel_deadline: datetime | None = None
    log_level: int = 6
    scheduled_at: datetime | None = None
    seen_commands: set[int] = field(default_factory=set)
    start_timer_set: bool = False
    round: int = 0
    # per task, the last attempt number of earlier rounds: a retried execution numbers its
    # attempts on, and each round has the task's whole retry policy again
    base: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: ExecutionRecord, definition: Definition) -> Run:
        run = cls(
            rec.id,
            rec.name,
            rec.workflow_name,
            rec.revision,
            rec.state,
            dict(rec.inputs),
            rec.started_at,
            definition,
            rec.cancel_requested,
            suspended=rec.state is ExecutionState.SUSPENDED,
            log_level=rec.log_level,
            scheduled_at=rec.scheduled_at,
            round=rec.round,
        )
        for tr in rec.task_runs:  # ordered by insertion, so the latest attempt wins
            if tr.round < rec.round and tr.state is not TaskRunState.COMPLETED:
                # history of an earlier round: this task runs again
                run.base[tr.task_id] = max(run.base.get(tr.task_id, 0), tr.attempt)
                continue
            run.attempts[tr.task_id] = Attempt.from_record(tr)
        for a in run.attempts.values():
            if a.state is TaskRunState.FAILED and run.failure is None:
                run.failure = {"task": a.task_id, **(a.error or {})}
        return run

    def context(self) -> dict[str, Any]:
        """What expressions see: params, finished task outputs, and the execution."""
        tasks = {
            tid: {"output": a.output, "state": a.state.value}
            for tid, a in self.attempts.items()
            if a.state is TaskRunState.COMPLETED
        }
        return {
            "params": self.inputs,
            "tasks": tasks,
            "execution": {
                "id": self.id,
                "name": self.name,
                "workflow": self.workflow,
                "revision": self.revision,
                "started_at": self.started_at.isoformat(),
                "scheduled_at": (self.scheduled_at or self.started_at).isoformat(),
            },
        }

    def ready(self) -> list[str]:
        """Tasks with no attempt yet whose dependencies have all completed, in DAG order."""
        done = TaskRunState.COMPLETED
        return [
            tid
            for tid in self.definition.order
            if tid not in self.attempts
            and all(
                (a := self.attempts.get(dep)) is not None and a.state is done
                for dep in self.definition.tasks[tid].needs
            )
        ]

    def first_attempt(self, task_id: str) -> int:
        return self.base.get(task_id, 0) + 1

    def active(self) -> list[Attempt]:
        return [a for a in self.attempts.values() if not a.state.terminal]
