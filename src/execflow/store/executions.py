"""Reading executions: one by id or by name, pages of a project's executions, their task
runs, fan-out items, stores and audit log."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from execflow.errors import InvalidInput, NotFound
from execflow.records import (
    EventRecord,
    ExecutionRecord,
    StoreEntry,
    TaskRunRecord,
)
from execflow.store import schema as s
from execflow.store.base import StoreBase, chunks
from execflow.store.rows import (
    to_entry,
    to_event,
    to_execution,
    to_task_run,
)

# Hot reads, built once: building a statement costs more than running it on SQLite.
EXECUTION_BY_ID = sa.select(s.executions).where(s.executions.c.id == sa.bindparam("id"))
# An execution's task runs as shown to people: fan-out items are paged separately.
TASK_RUNS_OF = (
    sa.select(s.task_runs)
    .where(s.task_runs.c.execution_id == sa.bindparam("id"), s.task_runs.c.item.is_(None))
    .order_by(s.task_runs.c.id)
)


class Executions(StoreBase):
    """Reading executions and what belongs to them."""

    def execution_by_name(self, workflow_id: str, name: str) -> ExecutionRecord | None:
        e = s.executions
        with self._reader() as conn:
            q = sa.select(e).where(e.c.workflow_id == workflow_id, e.c.name == name)
            row = conn.execute(q).mappings().first()
        return None if row is None else to_execution(row, ())

    def _get_execution(
        self,
        conn: Connection,
        execution_id: str,
        project_id: str | None,
        with_tasks: bool,
        for_engine: bool = False,
    ) -> ExecutionRecord:
        """`for_engine`: with fan-out items and store entries, as an engine adopts it."""
        row = conn.execute(EXECUTION_BY_ID, {"id": execution_id}).mappings().first()
        if row is None or (project_id is not None and row["project_id"] != project_id):
            raise NotFound(f"execution {execution_id!r} not found")
        if for_engine:
            runs = self._task_runs(conn, [execution_id])[execution_id]
            entries = self._store_entries(conn, [execution_id])[execution_id]
            return replace(to_execution(row, runs), store_entries=entries)
        found_runs: tuple[TaskRunRecord, ...] = ()
        if with_tasks:
            found = conn.execute(TASK_RUNS_OF, {"id": execution_id}).mappings()
            found_runs = tuple(to_task_run(r) for r in found)
        return to_execution(row, found_runs)

    def get_execution(
        self, execution_id: str, project_id: str | None = None, with_tasks: bool = True
    ) -> ExecutionRecord:
        with self._reader() as conn:
            row = conn.execute(EXECUTION_BY_ID, {"id": execution_id}).mappings().first()
            if row is None or (project_id is not None and row["project_id"] != project_id):
                raise NotFound(f"execution {execution_id!r} not found")
            runs: tuple[TaskRunRecord, ...] = ()
            if with_tasks:
                found = conn.execute(TASK_RUNS_OF, {"id": execution_id}).mappings()
                runs = tuple(to_task_run(r) for r in found)
        return to_execution(row, runs)

    def _task_runs(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, tuple[TaskRunRecord, ...]]:
        t = s.task_runs
        out: dict[str, list[TaskRunRecord]] = {i: [] for i in ids}
        for chunk in chunks(ids, 500):
            q = sa.select(t).where(t.c.execution_id.in_(chunk)).order_by(t.c.id)
            for row in conn.execute(q).mappings():
                out[row["execution_id"]].append(to_task_run(row))
        return {k: tuple(v) for k, v in out.items()}

    def list_executions(
        self,
        project_id: str,
        workflow: str | None = None,
        state: str | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        states: Collection[str] | None = None,
        created: tuple[datetime | None, datetime | None] = (None, None),
        offset: int = 0,
        oldest_first: bool = False,
        name: str | None = None,
    ) -> tuple[list[ExecutionRecord], str | None]:
        """Newest first (or oldest first), keyset-paginated: the cursor is the last
        (created_at, id) seen. `states` keeps any of several states, `created` those
        created from its first time to before its second; `offset` skips that many first
        (for clients that page by number; a cursor is cheaper); `name` keeps the one of
        that name (per workflow)."""
        e = s.executions
        q = _filtered(sa.select(e), project_id, workflow, state, labels, states, created)
        if name:
            q = q.where(e.c.name == name)
        if cursor:
            at, last_id = _decode_cursor(cursor)
            if oldest_first:
                after = sa.and_(e.c.created_at == at, e.c.id > last_id)
                q = q.where(sa.or_(e.c.created_at > at, after))
            else:
                before = sa.and_(e.c.created_at == at, e.c.id < last_id)
                q = q.where(sa.or_(e.c.created_at < at, before))
        if oldest_first:
            q = q.order_by(e.c.created_at, e.c.id)
        else:
            q = q.order_by(e.c.created_at.desc(), e.c.id.desc())
        q = q.offset(offset).limit(limit + 1)
        with self._reader() as conn:
            rows = list(conn.execute(q).mappings())
        page = [to_execution(row, ()) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
        return page, next_cursor

    def count_executions(
        self,
        project_id: str,
        workflow: str | None = None,
        labels: dict[str, str] | None = None,
        states: Collection[str] | None = None,
        created: tuple[datetime | None, datetime | None] = (None, None),
    ) -> int:
        """How many of a project's executions `list_executions` would give in all."""
        q = _filtered(
            sa.select(sa.func.count()).select_from(s.executions),
            project_id,
            workflow,
            None,
            labels,
            states,
            created,
        )
        with self._reader() as conn:
            return int(conn.execute(q).scalar_one())

    def count_by_state(
        self,
        project_id: str,
        workflow: str | None,
        states: Collection[str],
        created: tuple[datetime | None, datetime | None] = (None, None),
    ) -> dict[str, int]:
        """How many of a project's executions are in each of `states` (one query, one
        range of the state index per state); a state with none is left out."""
        e = s.executions
        q = _filtered(
            sa.select(e.c.state, sa.func.count()).select_from(e),
            project_id,
            workflow,
            None,
            None,
            states,
            created,
        ).group_by(e.c.state)
        with self._reader() as conn:
            return {state: int(n) for state, n in conn.execute(q).all()}

    def list_events(
        self,
        execution_id: str,
        max_level: int = 7,
        task: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[EventRecord]:
        """An execution's audit log in order, from the entry after `after`."""
        v = s.events
        q = sa.select(v).where(
            v.c.execution_id == execution_id, v.c.id > after, v.c.level <= max_level
        )
        if task is not None:
            q = q.where(v.c.task_id == task)
        q = q.order_by(v.c.id).limit(limit)
        with self._reader() as conn:
            return [to_event(r) for r in conn.execute(q).mappings()]

    def _store_entries(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, tuple[StoreEntry, ...]]:
        v = s.store_entries
        out: dict[str, list[StoreEntry]] = {i: [] for i in ids}
        for chunk in chunks(ids, 500):
            q = sa.select(v).where(v.c.execution_id.in_(chunk)).order_by(v.c.store, v.c.seq)
            for row in conn.execute(q).mappings():
                out[row["execution_id"]].append(to_entry(row))
        return {k: tuple(x) for k, x in out.items()}

    def store_entries(self, execution_id: str, store: str) -> list[StoreEntry]:
        """What tasks wrote to one store of an execution, in order."""
        v = s.store_entries
        q = (
            sa.select(v)
            .where(v.c.execution_id == execution_id, v.c.store == store)
            .order_by(v.c.seq)
        )
        with self._reader() as conn:
            return [to_entry(r) for r in conn.execute(q).mappings()]

    def item_runs(
        self, execution_id: str, task_id: str, offset: int, limit: int
    ) -> list[TaskRunRecord]:
        """The runs of a fan-out's items, by item then attempt."""
        t = s.task_runs
        q = (
            sa.select(t)
            .where(
                t.c.execution_id == execution_id,
                t.c.item.is_not(None),
                t.c.task_id.startswith(task_id + "[", autoescape=True),
            )
            .order_by(t.c.item, t.c.attempt)
            .offset(offset)
            .limit(limit)
        )
        with self._reader() as conn:
            return [to_task_run(r) for r in conn.execute(q).mappings()]


def _filtered(
    q: Any,
    project_id: str,
    workflow: str | None,
    state: str | None,
    labels: dict[str, str] | None,
    states: Collection[str] | None,
    created: tuple[datetime | None, datetime | None] = (None, None),
) -> Any:
    """A query of executions narrowed to a project and the filters given."""
    e = s.executions
    q = q.where(e.c.project_id == project_id)
    if workflow:
        q = q.where(e.c.workflow_name == workflow)
    if state:
        q = q.where(e.c.state == state)
    if states is not None:
        q = q.where(e.c.state.in_(sorted(states)))
    for key, value in (labels or {}).items():
        q = q.where(e.c.labels[key].as_string() == value)
    since, until = created
    if since is not None:
        q = q.where(e.c.created_at >= since)
    if until is not None:
        q = q.where(e.c.created_at < until)
    return q


def _encode_cursor(at: datetime, last_id: str) -> str:
    raw = json.dumps([at.isoformat(), last_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, last_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, str(last_id)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput("the cursor is not one this server handed out") from exc
