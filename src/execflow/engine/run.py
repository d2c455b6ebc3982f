"""The in-memory view of one execution an engine holds a lease on.

It mirrors what is in the store (the store stays the truth: another engine
rebuilds it from there after a takeover) and keeps the latest attempt of each
task, which is all that readiness and retry decisions need.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from execflow.dag import upstream
from execflow.definition import Definition, StoreKind, Task, secret_texts
from execflow.masking import NO_SECRETS, Secrets
from execflow.records import ExecutionRecord, StoreEntry, TaskRunRecord
from execflow.sealing import Sealer
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


def split_key(key: str) -> tuple[str, int | None]:
    """A task run's key: a task id, or `task[index]` for one item of a fan-out."""
    if key.endswith("]"):
        task_id, _, index = key[:-1].partition("[")
        return task_id, int(index)
    return key, None


def item_key(task_id: str, index: int) -> str:
    return f"{task_id}[{index}]"


@dataclass
class FanOut:
    """A `for_each` task in progress: its items, the next to consider, and which of them
    run (or wait to be retried) and which failed for good."""

    items: list[Any]
    cursor: int = 0
    active: set[int] = field(default_factory=set)
    failed: list[int] = field(default_factory=list)


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
    stores: dict[str, Any] = field(default_factory=dict)
    store_seq: dict[str, int] = field(default_factory=dict)
    fanouts: dict[str, FanOut] = field(default_factory=dict)
    project_id: str = ""
    has_callback: bool = False
    parent_id: str | None = None
    depth: int = 0  # how many parents it has
    root_id: str = ""  # the execution at the top of its chain of parents (itself, if none)
    # children this execution already asked to stop (its failure, a timeout, a cancel)
    stopped_children: set[str] = field(default_factory=set)
    # the text of its secret inputs, longest first: masked wherever the engine writes
    hidden: Secrets = NO_SECRETS
    # per task, its attempts of this round lost to a crash, a worker's death or a takeover
    lost: dict[str, int] = field(default_factory=dict)
    workflow_id: str = ""
    # under its workflow's `concurrency`: whether it holds a slot (see admission.py), and
    # whether it was seen waiting for one
    admitted: bool = True
    in_line: bool = False
    since: datetime | None = None  # its place in that line

    @classmethod
    def from_record(cls, rec: ExecutionRecord, definition: Definition, sealer: Sealer) -> Run:
        """The execution to advance, its sealed inputs opened: the only place they are."""
        inputs, opened = sealer.open_inputs(rec.inputs)
        run = cls(
            rec.id,
            rec.name,
            rec.workflow_name,
            rec.revision,
            rec.state,
            inputs,
            rec.started_at,
            definition,
            rec.cancel_requested,
            suspended=rec.state is ExecutionState.SUSPENDED,
            log_level=rec.log_level,
            scheduled_at=rec.scheduled_at,
            round=rec.round,
            project_id=rec.project_id,
            has_callback=rec.callback is not None,
            parent_id=rec.parent_id,
            depth=rec.depth,
            root_id=rec.root_id or rec.id,
            workflow_id=rec.workflow_id,
            admitted=definition.concurrency is None,
        )
        # inputs stored before they were sealed are still secret by their parameter
        run.hidden = Secrets({*opened, *secret_texts(definition, inputs)})
        for tr in rec.task_runs:  # ordered by insertion, so the latest attempt wins
            if tr.round < rec.round and tr.state is not TaskRunState.COMPLETED:
                # history of an earlier round: this task runs again
                run.base[tr.task_id] = max(run.base.get(tr.task_id, 0), tr.attempt)
                continue
            run.attempts[tr.task_id] = Attempt.from_record(tr)
            if tr.error is not None and tr.error.get("type") == "lost":
                run.lost[tr.task_id] = run.lost.get(tr.task_id, 0) + 1
        run._load_stores(rec.store_overlay or {}, rec.store_entries)
        for a in list(run.attempts.values()):
            if a.state is TaskRunState.RUNNING and a.waiting and "items" in a.waiting:
                run.fanouts[a.task_id] = run._fanout_of(a.task_id, a.waiting["items"])
        for a in run.attempts.values():
            # an item's failure is its fan-out's to judge, once all its items have run
            item = split_key(a.task_id)[1] is not None
            if a.state is TaskRunState.FAILED and run.failure is None and not item:
                run.failure = {"task": a.task_id, **(a.error or {})}
        return run

    def _load_stores(self, overlay: dict[str, Any], entries: tuple[StoreEntry, ...]) -> None:
        for name, spec in self.definition.stores.items():
            given = name in overlay
            self.stores[name] = copy.deepcopy(overlay[name]) if given else spec.empty()
            self.store_seq[name] = 0
        for entry in entries:  # in order of (store, seq)
            if entry.store in self.stores:
                self.put(entry.store, entry.key, entry.value)
                self.store_seq[entry.store] = entry.seq + 1

    def put(self, store: str, key: str | None, value: Any) -> None:
        """Apply one write to a store's content in memory."""
        kind = self.definition.stores[store].type
        if kind is StoreKind.LIST:
            self.stores[store].append(value)
        elif kind is StoreKind.MAP:
            self.stores[store][key] = value
        else:
            self.stores[store] = value

    def _fanout_of(self, task_id: str, items: list[Any]) -> FanOut:
        fan = FanOut(list(items))
        for i in range(len(items)):
            a = self.attempts.get(item_key(task_id, i))
            if a is None:
                continue
            if not a.state.terminal:
                fan.active.add(i)
            elif a.state is TaskRunState.FAILED:
                fan.failed.append(i)
        return fan

    def task(self, key: str) -> Task:
        """The task a task run (or a fan-out item's run) belongs to."""
        task = self.definition.tasks.get(key)
        return task if task is not None else self.definition.tasks[split_key(key)[0]]

    def context(self, index: int | None = None, task_id: str | None = None) -> dict[str, Any]:
        """What expressions see: params, finished task outputs, stores and the execution;
        for an item of a fan-out, also `item` and `index`."""
        tasks = {}
        # A task's expressions may only name the tasks it needs (the definition is checked
        # for it), so only those are looked at: for a wide fan-in this keeps each task's
        # start from costing as much as the whole workflow.
        visible = (
            self.definition.tasks
            if task_id is None
            else upstream(self.definition.needs, split_key(task_id)[0])
        )
        for tid in visible:
            a = self.attempts.get(tid)
            if a is not None and a.state is TaskRunState.COMPLETED:
                tasks[tid] = {"output": a.output, "state": a.state.value}
        ctx: dict[str, Any] = {
            "params": self.inputs,
            "tasks": tasks,
            "stores": self.stores,
            "execution": self._execution_context,
        }
        if index is not None and task_id is not None:
            ctx["item"] = self.fanouts[task_id].items[index]
            ctx["index"] = index
        return ctx

    @cached_property
    def _execution_context(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "workflow": self.workflow,
            "revision": self.revision,
            "started_at": self.started_at.isoformat(),
            "scheduled_at": (self.scheduled_at or self.started_at).isoformat(),
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
