"""Writing one engine tick: every change in one transaction, in bulk, every row guarded.

Statements are built once per shape (which columns change) and executed with
`executemany`, and the rows each one touched are counted: a guard that did not
hold (a stale attempt, an unexpected state, a lease held by someone else)
shows as a missing row, and the batch is then rolled back and re-checked row
by row to name the executions concerned.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from execflow.records import EventRecord, ExecutionRecord, StoreEntry, TaskRunRecord
from execflow.sealing import Sealed
from execflow.states import ACTIVE, TaskRunState
from execflow.store import schema as s
from execflow.store.ops import (
    UNSET,
    AbortExecution,
    FinishCommand,
    InsertCommand,
    InsertEvent,
    InsertExecution,
    InsertStoreEntry,
    InsertTaskRun,
    Op,
    ParkExecution,
    UpdateExecution,
    UpdateTaskRun,
)


class LeaseLost(Exception):
    """Some executions in a batch are no longer leased by this engine."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__(f"lease lost for {len(ids)} executions")
        self.ids = ids


_TASK_RUN_COLUMNS = ("output", "error", "wake_at", "waiting", "started_at", "ended_at")
_EXECUTION_COLUMNS = ("outputs", "error", "ended_at", "lease_owner", "lease_expires_at")
_statements: dict[tuple[str, tuple[str, ...]], Any] = {}


def _task_run_statement(columns: tuple[str, ...]) -> Any:
    key = ("task_runs", columns)
    stmt = _statements.get(key)
    if stmt is None:
        t = s.task_runs
        stmt = (
            t.update()
            .where(
                t.c.execution_id == sa.bindparam("k_execution"),
                t.c.task_id == sa.bindparam("k_task"),
                t.c.attempt == sa.bindparam("k_attempt"),
                t.c.state == sa.bindparam("k_expected"),
                # the engine writing must still hold the execution's lease
                sa.exists().where(
                    s.executions.c.id == t.c.execution_id,
                    s.executions.c.lease_owner == sa.bindparam("k_owner"),
                ),
            )
            .values({c: sa.bindparam(f"v_{c}", type_=t.c[c].type) for c in ("state", *columns)})
        )
        _statements[key] = stmt
    return stmt


def _execution_statement(columns: tuple[str, ...]) -> Any:
    key = ("executions", columns)
    stmt = _statements.get(key)
    if stmt is None:
        e = s.executions
        values = ("state", "updated_at", *columns)
        stmt = (
            e.update()
            .where(
                e.c.id == sa.bindparam("k_execution"),
                e.c.state == sa.bindparam("k_expected"),
                e.c.lease_owner == sa.bindparam("k_owner"),
            )
            .values({c: sa.bindparam(f"v_{c}", type_=e.c[c].type) for c in values})
        )
        _statements[key] = stmt
    return stmt


def _task_run_params(owner: str, op: UpdateTaskRun) -> tuple[tuple[str, ...], dict[str, Any]]:
    given = {
        "output": op.output,
        "error": op.error,
        "wake_at": op.wake_at,
        "waiting": op.waiting,
        "started_at": UNSET if op.started_at is None else op.started_at,
        "ended_at": UNSET if op.ended_at is None else op.ended_at,
    }
    columns = tuple(c for c in _TASK_RUN_COLUMNS if given[c] is not UNSET)
    params = {
        "k_execution": op.execution_id,
        "k_task": op.task_id,
        "k_attempt": op.attempt,
        "k_expected": op.expected.value,
        "k_owner": owner,
        "v_state": op.state.value,
        **{f"v_{c}": given[c] for c in columns},
    }
    return columns, params


def _execution_params(owner: str, op: UpdateExecution) -> tuple[tuple[str, ...], dict[str, Any]]:
    given = {
        "outputs": op.outputs,
        "error": op.error,
        "ended_at": UNSET if op.ended_at is None else op.ended_at,
        "lease_owner": None if op.release else UNSET,
        "lease_expires_at": None if op.release else UNSET,
    }
    columns = tuple(c for c in _EXECUTION_COLUMNS if given[c] is not UNSET)
    params = {
        "k_execution": op.execution_id,
        "k_expected": op.expected.value,
        "k_owner": owner,
        "v_state": op.state.value,
        "v_updated_at": op.now,
        **{f"v_{c}": given[c] for c in columns},
    }
    return columns, params


def apply(conn: Connection, owner: str, ops: Sequence[Op]) -> set[str]:
    """Write a tick's operations in one transaction; if any guard fails, nothing is written
    and LeaseLost names the executions concerned. Returns the executions asked to be parked
    that were not, since a command for them waits (the engine keeps holding them)."""
    transaction = conn.begin()
    try:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")  # see Store.apply
        kept: set[str] = set()
        complete = _write(conn, owner, ops, kept)
    except sa.exc.IntegrityError:
        # Another engine took an execution over and wrote the same row first: its insert
        # clashes before the guarded update beside it could fail. Name the lost leases.
        transaction.rollback()
        with conn.begin():
            fenced = {op.execution_id for op in ops if isinstance(op, _FENCED_INSERTS)}
            lost = _not_held(conn, owner, fenced)
        if lost:
            raise LeaseLost(lost) from None
        raise
    except BaseException:
        transaction.rollback()
        raise
    if complete:
        transaction.commit()
        return kept
    transaction.rollback()
    raise LeaseLost(_find_lost(conn, owner, ops))


def _write(conn: Connection, owner: str, ops: Sequence[Op], kept: set[str]) -> bool:
    _check_leases(conn, owner, ops)
    children = [
        execution_values(op.record, owner, op.lease_expires_at)
        for op in ops
        if isinstance(op, InsertExecution)
    ]
    if children:
        conn.execute(s.executions.insert(), children)
    inserts = [op.run for op in ops if isinstance(op, InsertTaskRun)]
    if inserts:
        conn.execute(s.task_runs.insert(), [task_run_values(r) for r in inserts])
    for kind, columns, rows in _groups(owner, ops):
        stmt = _task_run_statement(columns) if kind == "t" else _execution_statement(columns)
        if conn.execute(stmt, rows).rowcount != len(rows):
            return False
    for op in ops:
        if isinstance(op, AbortExecution) and not _abort(conn, owner, op):
            return False
    _write_log(conn, ops)
    kept.update(_park(conn, owner, [op for op in ops if isinstance(op, ParkExecution)]))
    return True


def _park(conn: Connection, owner: str, ops: list[ParkExecution]) -> set[str]:
    """Park executions (last in the batch, so that the commands it carried out are done):
    the lease goes to nobody until the wake-up time. One with a command waiting is not
    parked; those are returned. A command recorded meanwhile by another transaction may
    still miss it: the claims' sweep (`wake_commanded`) wakes it within a poll."""
    if not ops:
        return set()
    rows = [{"k_id": op.execution_id, "k_owner": owner, "v_wake": op.wake_at} for op in ops]
    conn.execute(_PARK, rows)
    held = _HELD_MANY.where(s.executions.c.wake_at.is_(None))
    ids = [op.execution_id for op in ops]
    kept: set[str] = set()
    for i in range(0, len(ids), 500):
        kept.update(conn.execute(held, {"ids": ids[i : i + 500], "owner": owner}).scalars())
    return kept


def wake(conn: Connection, ids: Sequence[str]) -> None:
    """Wake those of `ids` that are parked: any engine may claim them at once."""
    e = s.executions
    for i in range(0, len(ids), 500):
        conn.execute(
            e.update()
            .where(e.c.id.in_(sorted(ids[i : i + 500])), e.c.wake_at.is_not(None))
            .values(wake_at=None, lease_expires_at=None)
        )


_OPEN_TASK_RUNS = [TaskRunState.SCHEDULED.value, TaskRunState.RUNNING.value]
_ACTIVE = [state.value for state in ACTIVE]


def _abort(conn: Connection, owner: str, op: AbortExecution) -> bool:
    """Write an execution off as FAILED (see AbortExecution); False if not leased here."""
    e, t, c = s.executions, s.task_runs, s.commands
    failed = conn.execute(
        e.update()
        .where(e.c.id == op.execution_id, e.c.lease_owner == owner, e.c.state.in_(_ACTIVE))
        .values(
            state="FAILED",
            error=op.error,
            ended_at=op.now,
            updated_at=op.now,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    if failed.rowcount != 1:
        return False
    conn.execute(
        t.update()
        .where(t.c.execution_id == op.execution_id, t.c.state.in_(_OPEN_TASK_RUNS))
        .values(state="FAILED", error=op.task_error, ended_at=op.now)
    )
    children = conn.execute(
        sa.select(e.c.id).where(e.c.parent_id == op.execution_id, e.c.state.in_(_ACTIVE))
    ).scalars()
    sent = [
        {
            "execution_id": child,
            "kind": "cancel",
            "payload": {"force": True},
            "actor": None,
            "created_at": op.now,
        }
        for child in children
    ]
    if op.parent_id is not None:
        payload = {"child": op.execution_id, "state": "FAILED", "outputs": None, "error": op.error}
        sent.append(
            {
                "execution_id": op.parent_id,
                "kind": "child",
                "payload": payload,
                "actor": None,
                "created_at": op.now,
            }
        )
    if sent:
        conn.execute(c.insert(), sent)
        wake(conn, [row["execution_id"] for row in sent])
    conn.execute(_SETTLE, {"ids": [op.execution_id], "done": op.now})
    return True


def _write_log(conn: Connection, ops: Sequence[Op]) -> None:
    """Audit-log entries and carried-out commands: not guarded themselves, they commit only
    with the guarded writes of the same batch."""
    events = [event_values(op.event) for op in ops if isinstance(op, InsertEvent)]
    if events:
        conn.execute(s.events.insert(), events)
    entries = [store_entry_values(op.entry) for op in ops if isinstance(op, InsertStoreEntry)]
    if entries:
        conn.execute(s.store_entries.insert(), entries)
    done = [
        {"k_id": op.command_id, "v_done": op.now} for op in ops if isinstance(op, FinishCommand)
    ]
    c = s.commands
    sent = [
        {
            "execution_id": op.target_id,
            "kind": op.kind,
            "payload": op.payload,
            "actor": None,
            "created_at": op.now,
        }
        for op in ops
        if isinstance(op, InsertCommand)
    ]
    if sent:
        conn.execute(c.insert(), sent)
        targets = {op.target_id for op in ops if isinstance(op, InsertCommand)}
        wake(conn, list(targets))  # a command wakes its target, if it is parked
    if done:
        stmt = (
            c.update()
            .where(c.c.id == sa.bindparam("k_id"))
            .values(done_at=sa.bindparam("v_done", type_=c.c.done_at.type))
        )
        conn.execute(stmt, done)
    ended: dict[datetime, list[str]] = {}
    for op in ops:
        if isinstance(op, UpdateExecution) and op.state.terminal:
            ended.setdefault(op.now, []).append(op.execution_id)
    # What was asked of an execution that has ended is settled with it: one statement per
    # few hundred executions, not one per execution (most have no command at all).
    for now, ids in ended.items():
        for i in range(0, len(ids), 500):
            conn.execute(_SETTLE, {"ids": ids[i : i + 500], "done": now})


_SETTLE = (
    s.commands.update()
    .where(
        s.commands.c.done_at.is_(None),
        s.commands.c.execution_id.in_(sa.bindparam("ids", expanding=True)),
    )
    .values(done_at=sa.bindparam("done", type_=s.commands.c.done_at.type))
)


_FENCED_INSERTS = (
    InsertTaskRun
    | InsertEvent
    | FinishCommand
    | InsertStoreEntry
    | InsertExecution
    | InsertCommand
    | ParkExecution
)
_PARK = (
    s.executions.update()
    .where(
        s.executions.c.id == sa.bindparam("k_id"),
        s.executions.c.lease_owner == sa.bindparam("k_owner"),
        ~sa.exists().where(
            s.commands.c.execution_id == s.executions.c.id, s.commands.c.done_at.is_(None)
        ),
    )
    .values(
        lease_owner=None,
        lease_expires_at=sa.bindparam("v_wake", type_=s.executions.c.wake_at.type),
        wake_at=sa.bindparam("v_wake", type_=s.executions.c.wake_at.type),
    )
)
_HELD_ONE = sa.select(s.executions.c.id).where(
    s.executions.c.id == sa.bindparam("id"), s.executions.c.lease_owner == sa.bindparam("owner")
)
_HELD_MANY = sa.select(s.executions.c.id).where(
    s.executions.c.id.in_(sa.bindparam("ids", expanding=True)),
    s.executions.c.lease_owner == sa.bindparam("owner"),
)


def _check_leases(conn: Connection, owner: str, ops: Sequence[Op]) -> None:
    """Inserts are fenced by the lease too. The guarded updates of a batch fence their own
    executions (the batch is one transaction, so a failed guard undoes its inserts as well);
    the executions the batch only inserts for are checked with one query."""
    inserted: set[str] = set()
    updated: set[str] = set()
    for op in ops:
        if isinstance(op, UpdateTaskRun | UpdateExecution | AbortExecution):
            updated.add(op.execution_id)
        elif isinstance(op, _FENCED_INSERTS):
            inserted.add(op.execution_id)
    lost = _not_held(conn, owner, inserted - updated)
    if lost:
        raise LeaseLost(lost)


def _not_held(conn: Connection, owner: str, ids: set[str]) -> set[str]:
    """Those of `ids` whose lease `owner` does not hold."""
    touched = sorted(ids)
    if not touched:
        return set()
    if len(touched) == 1:
        held = set(conn.execute(_HELD_ONE, {"id": touched[0], "owner": owner}).scalars())
    else:
        held = set()
        for i in range(0, len(touched), 500):
            chunk = touched[i : i + 500]
            held.update(conn.execute(_HELD_MANY, {"ids": chunk, "owner": owner}).scalars())
    return ids - held


def _groups(owner: str, ops: Sequence[Op]) -> list[tuple[str, tuple[str, ...], list[Any]]]:
    """Updates grouped by statement shape. Grouping reorders, so when one row is updated
    twice in a batch only consecutive updates of the same shape are grouped."""
    keyed: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
    rows_seen: set[tuple[Any, ...]] = set()
    repeated = False
    row: tuple[Any, ...]
    for op in ops:
        if isinstance(op, UpdateTaskRun):
            columns, params = _task_run_params(owner, op)
            keyed.append(("t", columns, params))
            row = ("t", op.execution_id, op.task_id, op.attempt)
        elif isinstance(op, UpdateExecution):
            columns, params = _execution_params(owner, op)
            keyed.append(("e", columns, params))
            row = ("e", op.execution_id)
        else:
            continue
        repeated = repeated or row in rows_seen
        rows_seen.add(row)
    groups: list[tuple[str, tuple[str, ...], list[Any]]] = []
    if not repeated:
        by_shape: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
        for kind, columns, params in keyed:
            by_shape.setdefault((kind, columns), []).append(params)
        # task runs before executions: an execution ends only after its task runs did
        order = sorted(by_shape, key=lambda k: k[0] != "t")
        return [(k[0], k[1], by_shape[k]) for k in order]
    for kind, columns, params in keyed:
        if groups and groups[-1][0] == kind and groups[-1][1] == columns:
            groups[-1][2].append(params)
        else:
            groups.append((kind, columns, [params]))
    return groups


def _find_lost(conn: Connection, owner: str, ops: Sequence[Op]) -> set[str]:
    """Replay the batch row by row (then roll back) to name the executions whose guard failed."""
    lost: set[str] = set()
    transaction = conn.begin()
    try:
        inserts = [op.run for op in ops if isinstance(op, InsertTaskRun)]
        if inserts:
            conn.execute(s.task_runs.insert(), [task_run_values(r) for r in inserts])
        for op in ops:
            if isinstance(op, UpdateTaskRun):
                columns, params = _task_run_params(owner, op)
                ok = conn.execute(_task_run_statement(columns), params).rowcount == 1
            elif isinstance(op, UpdateExecution):
                columns, params = _execution_params(owner, op)
                ok = conn.execute(_execution_statement(columns), params).rowcount == 1
            elif isinstance(op, AbortExecution):
                held = _HELD_ONE.where(s.executions.c.state.in_(_ACTIVE))
                found = conn.execute(held, {"id": op.execution_id, "owner": owner}).first()
                ok = found is not None
            else:
                continue
            if not ok:
                lost.add(op.execution_id)
    finally:
        transaction.rollback()
    return lost


def task_run_values(run: TaskRunRecord) -> dict[str, Any]:
    return {
        "execution_id": run.execution_id,
        "task_id": run.task_id,
        "attempt": run.attempt,
        "state": run.state.value,
        "output": run.output,
        "error": run.error,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "wake_at": run.wake_at,
        "waiting": run.waiting,
        "round": run.round,
        "item": run.item,
    }


def store_entry_values(entry: StoreEntry) -> dict[str, Any]:
    return {
        "execution_id": entry.execution_id,
        "store": entry.store,
        "seq": entry.seq,
        "key": entry.key,
        "value": entry.value,
        "task_id": entry.task_id,
        "at": entry.at,
    }


def execution_values(
    rec: ExecutionRecord, owner: str | None, expires: datetime | None
) -> dict[str, Any]:
    return {
        "id": rec.id,
        "project_id": rec.project_id,
        "workflow_id": rec.workflow_id,
        "workflow_name": rec.workflow_name,
        "revision": rec.revision,
        "name": rec.name,
        "state": rec.state.value,
        "inputs": {k: (v.token if isinstance(v, Sealed) else v) for k, v in rec.inputs.items()},
        "sealed_inputs": [k for k, v in rec.inputs.items() if isinstance(v, Sealed)] or None,
        "labels": rec.labels,
        "created_at": rec.created_at,
        "started_at": rec.started_at,
        "updated_at": rec.updated_at,
        "cancel_requested": False,
        "started_by": rec.started_by,
        "scheduled_at": rec.scheduled_at,
        "log_level": rec.log_level,
        "round": rec.round,
        "rerun_of": rec.rerun_of,
        "parent_id": rec.parent_id,
        "parent_task": rec.parent_task,
        "depth": rec.depth,
        "root_id": rec.root_id,
        "callback_url": rec.callback.url if rec.callback else None,
        "callback_state": rec.callback.state if rec.callback else None,
        "store_overlay": rec.store_overlay,
        "lease_owner": owner,
        "lease_expires_at": expires,
    }


def event_values(event: EventRecord) -> dict[str, Any]:
    return {
        "execution_id": event.execution_id,
        "at": event.at,
        "level": event.level,
        "kind": event.kind,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "message": event.message,
        "data": event.data,
        "actor": event.actor,
    }
