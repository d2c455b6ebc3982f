"""Starting executions: new ones (alone or many in one transaction), under an
Idempotency-Key, and reruns that reuse another execution's outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from execflow.errors import Conflict
from execflow.records import (
    ExecutionRecord,
    TaskRunRecord,
)
from execflow.store import schema as s
from execflow.store import writes
from execflow.store.base import StoreBase


class Starts(StoreBase):
    """Creating executions."""

    async def start(
        self, record: ExecutionRecord, owner: str | None, expires: datetime | None
    ) -> ExecutionRecord:
        """Commit a new execution; concurrent starts share one transaction (group commit)."""
        return await self._starts.submit((record, owner, expires))

    def create_execution(
        self,
        rec: ExecutionRecord,
        lease_owner: str | None = None,
        lease_expires_at: datetime | None = None,
    ) -> ExecutionRecord:
        e = s.executions
        with self.engine.begin() as conn:
            taken = conn.execute(
                sa.select(e.c.id).where(e.c.workflow_id == rec.workflow_id, e.c.name == rec.name)
            ).scalar_one_or_none()
            if taken is not None:
                raise Conflict(f"an execution named {rec.name!r} already exists ({taken})")
            conn.execute(
                e.insert().values(writes.execution_values(rec, lease_owner, lease_expires_at))
            )
        return rec

    def create_executions(
        self, batch: Sequence[tuple[ExecutionRecord, str | None, datetime | None]]
    ) -> list[ExecutionRecord | Conflict]:
        """Insert many new executions in one transaction; a taken name is that item's Conflict."""
        try:
            return self._create_executions(batch, race=False)
        except sa.exc.IntegrityError:
            # Another process took one of these names between our check and our insert:
            # once more, leaving out whatever the database now refuses.
            return self._create_executions(batch, race=True)

    def _create_executions(
        self, batch: Sequence[tuple[ExecutionRecord, str | None, datetime | None]], race: bool
    ) -> list[ExecutionRecord | Conflict]:
        e = s.executions
        results: list[ExecutionRecord | Conflict] = []
        rows = []
        names: set[tuple[str, str]] = set()
        with self.engine.begin() as conn:
            for rec, owner, expires in batch:
                key = (rec.workflow_id, rec.name)
                # An execution named by its own fresh id cannot clash: no lookup needed.
                taken = key in names or (
                    rec.name != rec.id
                    and conn.execute(
                        sa.select(e.c.id).where(e.c.workflow_id == key[0], e.c.name == key[1])
                    ).first()
                )
                if taken:
                    results.append(Conflict(f"an execution named {rec.name!r} already exists"))
                    continue
                names.add(key)
                rows.append(writes.execution_values(rec, owner, expires))
                results.append(rec)
            if rows and not race:
                conn.execute(e.insert(), rows)
            elif rows:
                insert = (
                    sqlite_insert(e) if self.is_sqlite else pg_insert(e)
                ).on_conflict_do_nothing(index_elements=["workflow_id", "name"])
                made = set()
                for row in rows:
                    if conn.execute(insert.returning(e.c.id), row).first() is not None:
                        made.add(row["id"])
                results = [
                    r
                    if not isinstance(r, ExecutionRecord) or r.id in made
                    else Conflict(f"an execution named {r.name!r} already exists")
                    for r in results
                ]
        return results

    def create_keyed_execution(
        self,
        rec: ExecutionRecord,
        owner: str | None,
        expires: datetime | None,
        key: str,
        digest: str,
        key_expires: datetime,
    ) -> tuple[ExecutionRecord, bool]:
        """Create an execution under an Idempotency-Key, or return the one the key already
        names (False) when it was given for the same request; Conflict for another request."""
        try:
            return self._create_keyed(rec, owner, expires, key, digest, key_expires)
        except sa.exc.IntegrityError:
            # the same key raced in from another request: now it is there to be found
            return self._create_keyed(rec, owner, expires, key, digest, key_expires)

    def _create_keyed(
        self,
        rec: ExecutionRecord,
        owner: str | None,
        expires: datetime | None,
        key: str,
        digest: str,
        key_expires: datetime,
    ) -> tuple[ExecutionRecord, bool]:
        k, e = s.idempotency_keys, s.executions
        with self.engine.begin() as conn:
            where = sa.and_(k.c.project_id == rec.project_id, k.c.key == key)
            found = conn.execute(sa.select(k).where(where).with_for_update()).mappings().first()
            if found is not None and found["expires_at"] > rec.created_at:
                if found["request_digest"] != digest:
                    raise Conflict(
                        f"the Idempotency-Key {key!r} was used for another request "
                        f"(execution {found['execution_id']})"
                    )
                return self._get_execution(conn, found["execution_id"], None, False), False
            taken = conn.execute(
                sa.select(e.c.id).where(e.c.workflow_id == rec.workflow_id, e.c.name == rec.name)
            ).scalar_one_or_none()
            if taken is not None:
                raise Conflict(f"an execution named {rec.name!r} already exists ({taken})")
            conn.execute(e.insert().values(writes.execution_values(rec, owner, expires)))
            values = {
                "request_digest": digest,
                "execution_id": rec.id,
                "created_at": rec.created_at,
                "expires_at": key_expires,
            }
            if found is None:
                conn.execute(k.insert().values(project_id=rec.project_id, key=key, **values))
            else:  # an expired key is given anew
                conn.execute(k.update().where(where).values(**values))
        return rec, True

    def forget_idempotency_keys(self, now: datetime) -> int:
        """Delete keys whose retention has passed."""
        k = s.idempotency_keys
        with self.engine.begin() as conn:
            return int(conn.execute(k.delete().where(k.c.expires_at <= now)).rowcount)

    def create_rerun(
        self,
        rec: ExecutionRecord,
        reused: Sequence[TaskRunRecord],
        owner: str | None,
        expires: datetime | None,
    ) -> ExecutionRecord:
        """Create an execution that starts with the outputs of tasks another one completed."""
        with self.engine.begin() as conn:
            conn.execute(s.executions.insert().values(writes.execution_values(rec, owner, expires)))
            if reused:
                conn.execute(s.task_runs.insert(), [writes.task_run_values(r) for r in reused])
        return replace(rec, task_runs=tuple(reused))
