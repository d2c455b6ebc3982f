"""Rows as records: what the store reads becomes the records the rest of the code uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import RowMapping

from execflow.records import (
    CallbackStatus,
    CommandRecord,
    EventRecord,
    ExecutionRecord,
    Principal,
    StoreEntry,
    TaskRunRecord,
    WorkflowRecord,
)
from execflow.sealing import Sealed
from execflow.states import ExecutionState, TaskRunState


def to_workflow(row: RowMapping) -> WorkflowRecord:
    return WorkflowRecord(
        row["id"],
        row["project_id"],
        row["name"],
        row["description"],
        row["latest_revision"],
        row["created_at"],
        row["updated_at"],
    )


def to_task_run(row: RowMapping) -> TaskRunRecord:
    return TaskRunRecord(
        execution_id=row["execution_id"],
        task_id=row["task_id"],
        attempt=row["attempt"],
        state=TaskRunState(row["state"]),
        output=row["output"],
        error=row["error"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        wake_at=row["wake_at"],
        waiting=row["waiting"],
        round=row["round"],
        item=row["item"],
    )


def to_execution(row: RowMapping, runs: Sequence[TaskRunRecord]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"],
        project_id=row["project_id"],
        workflow_id=row["workflow_id"],
        workflow_name=row["workflow_name"],
        revision=row["revision"],
        name=row["name"],
        state=ExecutionState(row["state"]),
        inputs=_inputs(row),
        labels=row["labels"],
        outputs=row["outputs"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
        cancel_requested=bool(row["cancel_requested"]),
        started_by=row["started_by"],
        scheduled_at=row["scheduled_at"],
        log_level=row["log_level"],
        round=row["round"],
        rerun_of=row["rerun_of"],
        parent_id=row["parent_id"],
        parent_task=row["parent_task"],
        depth=row["depth"],
        root_id=row["root_id"],
        callback=_callback(row),
        store_overlay=row["store_overlay"],
        task_runs=tuple(runs),
    )


def to_principal(row: RowMapping) -> Principal:
    actions = row.get("actions")
    return Principal(
        row["id"],
        row["project_id"],
        row["name"],
        row["role"],
        row.get("expires_at"),
        None if actions is None else frozenset(actions),
    )


def _inputs(row: RowMapping) -> dict[str, Any]:
    """Inputs as stored: sealed values stay sealed (only the engine opens them)."""
    inputs: dict[str, Any] = row["inputs"]
    for name in row["sealed_inputs"] or ():
        if isinstance(inputs.get(name), str):
            inputs[name] = Sealed(inputs[name])
    return inputs


def _callback(row: RowMapping) -> CallbackStatus | None:
    if row["callback_url"] is None:
        return None
    return CallbackStatus(
        url=row["callback_url"],
        state=row["callback_state"],
        attempts=row["callback_attempts"],
        next_at=row["callback_next_at"],
        last_status=row["callback_last_status"],
        last_error=row["callback_last_error"],
    )


def to_entry(row: RowMapping) -> StoreEntry:
    return StoreEntry(
        execution_id=row["execution_id"],
        store=row["store"],
        seq=row["seq"],
        value=row["value"],
        key=row["key"],
        task_id=row["task_id"],
        at=row["at"],
    )


def to_command(row: RowMapping) -> CommandRecord:
    return CommandRecord(
        id=row["id"],
        execution_id=row["execution_id"],
        kind=row["kind"],
        payload=row["payload"] or {},
        actor=row["actor"],
        created_at=row["created_at"],
    )


def to_event(row: RowMapping) -> EventRecord:
    return EventRecord(
        id=row["id"],
        execution_id=row["execution_id"],
        at=row["at"],
        level=row["level"],
        kind=row["kind"],
        message=row["message"],
        task_id=row["task_id"],
        attempt=row["attempt"],
        data=row["data"],
        actor=row["actor"],
    )
