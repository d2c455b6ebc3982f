"""Workflows and their revisions: storing definitions, finding and deleting workflows."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from execflow.definition import Definition
from execflow.errors import Conflict, NotFound
from execflow.records import (
    RevisionRecord,
    WorkflowRecord,
)
from execflow.store import schema as s
from execflow.store.base import ACTIVE_STATES, StoreBase, new_id
from execflow.store.rows import (
    to_workflow,
)

# Hot reads, built once: building a statement costs more than running it on SQLite.
_WORKFLOW_BY_NAME = sa.select(s.workflows).where(
    s.workflows.c.project_id == sa.bindparam("project"),
    s.workflows.c.name == sa.bindparam("name"),
)


class Workflows(StoreBase):
    """Workflows and their revisions."""

    def put_workflow(
        self, project_id: str, definition: Definition, now: datetime
    ) -> tuple[WorkflowRecord, int, bool]:
        """Store a definition: (workflow, revision, created); an identical re-apply is a no-op."""
        w, r = s.workflows, s.revisions
        with self.engine.begin() as conn:
            q = sa.select(w).where(w.c.project_id == project_id, w.c.name == definition.name)
            row = conn.execute(q.with_for_update()).mappings().first()
            if row is None:
                wid = new_id()
                conn.execute(
                    w.insert().values(
                        id=wid,
                        project_id=project_id,
                        name=definition.name,
                        description=definition.description,
                        latest_revision=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                self._insert_revision(conn, wid, 1, definition, now)
                return self._workflow(conn, wid), 1, True
            wid, latest = row["id"], row["latest_revision"]
            q2 = sa.select(r.c.digest).where(r.c.workflow_id == wid, r.c.number == latest)
            if conn.execute(q2).scalar_one() == definition.digest:
                return self._workflow(conn, wid), latest, False
            number = latest + 1
            self._insert_revision(conn, wid, number, definition, now)
            conn.execute(
                w.update()
                .where(w.c.id == wid)
                .values(latest_revision=number, description=definition.description, updated_at=now)
            )
            return self._workflow(conn, wid), number, False

    def _insert_revision(
        self, conn: Connection, wid: str, number: int, definition: Definition, now: datetime
    ) -> None:
        conn.execute(
            s.revisions.insert().values(
                workflow_id=wid,
                number=number,
                digest=definition.digest,
                definition=definition.source,
                created_at=now,
            )
        )

    def _workflow(self, conn: Connection, wid: str) -> WorkflowRecord:
        row = conn.execute(sa.select(s.workflows).where(s.workflows.c.id == wid)).mappings().one()
        return to_workflow(row)

    def list_workflows(self, project_id: str) -> list[WorkflowRecord]:
        w = s.workflows
        q = sa.select(w).where(w.c.project_id == project_id).order_by(w.c.name)
        with self._reader() as conn:
            return [to_workflow(row) for row in conn.execute(q).mappings()]

    def get_workflow(self, project_id: str, name: str) -> WorkflowRecord:
        with self._reader() as conn:
            params = {"project": project_id, "name": name}
            row = conn.execute(_WORKFLOW_BY_NAME, params).mappings().first()
        if row is None:
            raise NotFound(f"workflow {name!r} not found")
        return to_workflow(row)

    def workflow_by_id(self, project_id: str, workflow_id: str) -> WorkflowRecord:
        w = s.workflows
        q = sa.select(w).where(w.c.id == workflow_id, w.c.project_id == project_id)
        with self._reader() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return to_workflow(row)

    def ids_with_prefix(self, kind: str, project_id: str, prefix: str, limit: int = 2) -> list[str]:
        """The ids of a project's workflows or executions (`kind`) that begin with `prefix`:
        a range scan of the primary key, for dialects whose ids are numbers made of one."""
        table = s.workflows if kind == "workflow" else s.executions
        # ids are lower-case hex: every id beginning with the prefix sorts below prefix + "g"
        q = (
            sa.select(table.c.id)
            .where(table.c.id >= prefix, table.c.id < prefix + "g")
            .where(table.c.project_id == project_id)
            .order_by(table.c.id)
            .limit(limit)
        )
        with self._reader() as conn:
            return [row[0] for row in conn.execute(q)]

    def get_revision(self, workflow_id: str, number: int) -> RevisionRecord:
        r = s.revisions
        q = sa.select(r).where(r.c.workflow_id == workflow_id, r.c.number == number)
        with self._reader() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(f"revision {number} not found")
        return RevisionRecord(
            row["workflow_id"], row["number"], row["digest"], row["definition"], row["created_at"]
        )

    def delete_workflow(self, project_id: str, name: str) -> None:
        """Delete a workflow, its revisions and its ended executions; 409 while any is active."""
        w, e = s.workflows, s.executions
        with self.engine.begin() as conn:
            q = sa.select(w.c.id).where(w.c.project_id == project_id, w.c.name == name)
            wid = conn.execute(q.with_for_update()).scalar_one_or_none()
            if wid is None:
                raise NotFound(f"workflow {name!r} not found")
            active = conn.execute(
                sa.select(sa.func.count())
                .select_from(e)
                .where(e.c.workflow_id == wid, e.c.state.in_(ACTIVE_STATES))
            ).scalar_one()
            if active:
                raise Conflict(f"workflow {name!r} has {active} active executions")
            ids = sa.select(e.c.id).where(e.c.workflow_id == wid).scalar_subquery()
            for child in (s.task_runs, s.commands, s.events, s.idempotency_keys, s.store_entries):
                conn.execute(child.delete().where(child.c.execution_id.in_(ids)))
            conn.execute(e.delete().where(e.c.workflow_id == wid))
            conn.execute(s.revisions.delete().where(s.revisions.c.workflow_id == wid))
            conn.execute(w.delete().where(w.c.id == wid))
