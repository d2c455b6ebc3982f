"""Writes the engine batches into one transaction per scheduler tick."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from execflow.records import EventRecord, ExecutionRecord, StoreEntry, TaskRunRecord
from execflow.states import ExecutionState, TaskRunState

UNSET: Any = object()


@dataclass(frozen=True)
class InsertTaskRun:
    run: TaskRunRecord

    @property
    def execution_id(self) -> str:
        return self.run.execution_id


@dataclass(frozen=True)
class UpdateTaskRun:
    """Move one attempt from `expected` to `state`; fenced by the attempt number."""

    execution_id: str
    task_id: str
    attempt: int
    expected: TaskRunState
    state: TaskRunState
    output: Any = UNSET
    error: Any = UNSET
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wake_at: Any = UNSET
    waiting: Any = UNSET


@dataclass(frozen=True)
class UpdateExecution:
    """Move an execution from `expected` to `state`, only while this engine holds its lease."""

    execution_id: str
    expected: ExecutionState
    state: ExecutionState
    now: datetime
    outputs: Any = UNSET
    error: Any = UNSET
    ended_at: datetime | None = None
    release: bool = False


@dataclass(frozen=True)
class InsertEvent:
    event: EventRecord

    @property
    def execution_id(self) -> str:
        return self.event.execution_id


@dataclass(frozen=True)
class FinishCommand:
    """Mark a command carried out, in the same transaction as its effects."""

    execution_id: str
    command_id: int
    now: datetime


@dataclass(frozen=True)
class InsertStoreEntry:
    entry: StoreEntry

    @property
    def execution_id(self) -> str:
        return self.entry.execution_id


@dataclass(frozen=True)
class InsertExecution:
    """A child execution, created in the transaction that starts its parent's task."""

    parent_id: str
    record: ExecutionRecord
    lease_expires_at: datetime

    @property
    def execution_id(self) -> str:
        return self.parent_id


@dataclass(frozen=True)
class InsertCommand:
    """A command for another execution (a child, or a parent), sent by `source_id`'s tick."""

    source_id: str
    target_id: str
    kind: str
    payload: dict[str, Any]
    now: datetime

    @property
    def execution_id(self) -> str:
        return self.source_id


@dataclass(frozen=True)
class AbortExecution:
    """Fail an execution whose own processing or rows went wrong, whatever its in-memory
    view said: the execution and its unfinished task runs become FAILED with `error`, its
    parent hears of it, its running children are cancelled. Fenced by the lease only."""

    execution_id: str
    error: dict[str, Any]
    task_error: dict[str, Any]
    now: datetime
    parent_id: str | None = None


@dataclass(frozen=True)
class ParkExecution:
    """Give up the lease of an execution that only waits, until `wake_at` (see
    `schema.executions.wake_at`); not done if a command for it waits to be carried out."""

    execution_id: str
    wake_at: datetime


Op = (
    InsertTaskRun
    | UpdateTaskRun
    | UpdateExecution
    | InsertEvent
    | FinishCommand
    | InsertStoreEntry
    | InsertExecution
    | InsertCommand
    | AbortExecution
    | ParkExecution
)
