"""Which node holds which execution: claims, renewals and releases of leases, node
heartbeats and loads, asking a node to hand executions over, and the guarded write of
an engine's tick."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from execflow.records import (
    ExecutionRecord,
)
from execflow.store import schema as s
from execflow.store import writes
from execflow.store.base import ACTIVE_STATES, StoreBase, chunks
from execflow.store.ops import Op
from execflow.store.rows import (
    to_execution,
)


class Leases(StoreBase):
    """Leases, nodes and an engine's writes."""

    def release_leases(self, owner: str, ids: Sequence[str] | None = None) -> int:
        """Give up leases `owner` holds (all of them, as an engine restarting under the same
        identity does, or those of `ids`), so any engine can claim them at once."""
        e = s.executions
        where = e.c.lease_owner == owner
        with self.engine.begin() as conn:
            if ids is None:
                res = conn.execute(
                    e.update().where(where).values(lease_owner=None, lease_expires_at=None)
                )
                return int(res.rowcount)
            count = 0
            for chunk in chunks(list(ids), 500):
                res = conn.execute(
                    e.update()
                    .where(where, e.c.id.in_(chunk))
                    .values(lease_owner=None, lease_expires_at=None)
                )
                count += int(res.rowcount)
            return count

    def claim(
        self, owner: str, limit: int, expires: datetime, now: datetime
    ) -> list[ExecutionRecord]:
        """Lease up to `limit` active executions nobody holds; returns them with their task runs.

        A parked execution's lease is nobody's until its wake-up time (see
        `schema.executions.wake_at`), so the same test of the lease, served by the index
        on (state, lease_expires_at), skips it until it is due: a claim reads the
        claimable executions, never all the parked ones."""
        e, n = s.executions, s.nodes
        free = sa.or_(e.c.lease_expires_at.is_(None), e.c.lease_expires_at < now)
        with self.engine.begin() as conn:
            wake_commanded(conn)
            # a node whose heartbeat expired holds nothing, whatever its leases say
            # (those dead for more than a day: their executions' own leases have expired)
            recently = sa.and_(n.c.expires_at < now, n.c.expires_at > now - timedelta(days=1))
            dead = list(conn.execute(sa.select(n.c.id).where(recently)).scalars())
            if dead:
                free = sa.or_(free, e.c.lease_owner.in_(dead))
            q = (
                sa.select(e.c.id)
                .where(e.c.state.in_(ACTIVE_STATES), free)
                .order_by(e.c.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(conn.execute(q).scalars())
            if not ids:
                return []
            conn.execute(
                e.update()
                .where(e.c.id.in_(ids), free)
                .values(lease_owner=owner, lease_expires_at=expires, wake_at=None)
            )
            rows = conn.execute(sa.select(e).where(e.c.id.in_(ids))).mappings().all()
            runs = self._task_runs(conn, ids)
            entries = self._store_entries(conn, ids)
        return [
            replace(to_execution(row, runs.get(row["id"], ())), store_entries=entries[row["id"]])
            for row in rows
        ]

    def heartbeat(self, node: str, now: datetime, expires: datetime) -> int:
        """Record that `node` is alive until `expires` (see `schema.nodes`); how many
        executions other nodes asked it to hand over since its last beat."""
        n = s.nodes
        with self.engine.begin() as conn:
            asked = conn.execute(
                sa.select(n.c.wants).where(n.c.id == node).with_for_update()
            ).scalar()
            if asked is None:  # a node's first beat: forget long-dead ones
                conn.execute(n.delete().where(n.c.expires_at < now - timedelta(days=7)))
                conn.execute(n.insert().values(id=node, beat_at=now, expires_at=expires, wants=0))
                return 0
            beat = n.update().where(n.c.id == node)
            conn.execute(beat.values(beat_at=now, expires_at=expires, wants=0))
            return int(asked)

    def loads(self, now: datetime) -> dict[str, int]:
        """The live nodes and how many active executions each holds."""
        n, e = s.nodes, s.executions
        with self._reader() as conn:
            live = list(conn.execute(sa.select(n.c.id).where(n.c.expires_at >= now)).scalars())
            if not live:
                return {}
            held = conn.execute(
                sa.select(e.c.lease_owner, sa.func.count())
                .where(e.c.lease_owner.in_(live), e.c.state.in_(ACTIVE_STATES))
                .group_by(e.c.lease_owner)
            ).all()
        counts = dict.fromkeys(live, 0)
        counts.update({owner: int(count) for owner, count in held})
        return counts

    def ask(self, node: str, count: int) -> None:
        """Ask `node` to hand `count` executions over (at its next heartbeat)."""
        n = s.nodes
        with self.engine.begin() as conn:
            conn.execute(n.update().where(n.c.id == node).values(wants=count))

    def renew(self, owner: str, expires: datetime, ids: Iterable[str]) -> set[str]:
        """Extend the leases of those of `ids` this engine still holds; the ids it holds.

        Only what the engine has in memory is renewed: a lease it forgot (after a failed
        write, say) expires and another node may take the execution over."""
        e = s.executions
        held: set[str] = set()
        with self.engine.begin() as conn:
            for chunk in chunks(sorted(ids), 500):
                stmt = (
                    e.update()
                    .where(
                        e.c.id.in_(chunk), e.c.lease_owner == owner, e.c.state.in_(ACTIVE_STATES)
                    )
                    .values(lease_expires_at=expires)
                    .returning(e.c.id)
                )
                held.update(conn.execute(stmt).scalars())
        return held

    def apply(self, owner: str, ops: Sequence[Op]) -> set[str]:
        """Write one tick's changes in one transaction; on a lost race, LeaseLost and no write.
        Returns the executions it was asked to park and did not (see `writes.apply`).

        The engine's progress commits without waiting for the disk (SQLite
        `synchronous=NORMAL` on its own connection, PostgreSQL `synchronous_commit=off`):
        a crash of this process loses nothing; a power cut or a crash of the database can
        lose only the last ticks, whose tasks then run again, as at-least-once allows. The
        log is sequential, so the next acknowledged (fully synchronous) commit, a start
        say, makes every earlier tick durable as well."""
        if self.is_sqlite:
            if self._tick_conn is None or self._tick_conn.closed:
                self._tick_conn = self.engine.connect()
                self._tick_conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                self._tick_conn.commit()
            return writes.apply(self._tick_conn, owner, ops)
        with self.engine.connect() as conn:
            return writes.apply(conn, owner, ops)


_COMMANDED = (
    s.executions.update()
    .where(
        s.executions.c.wake_at.is_not(None),
        s.executions.c.id.in_(
            sa.select(s.commands.c.execution_id).where(s.commands.c.done_at.is_(None))
        ),
    )
    .values(wake_at=None, lease_expires_at=None)
)


def wake_commanded(conn: sa.Connection) -> None:
    """Wake the parked executions a command waits for. A command wakes its execution in
    the transaction that records it; this catches the one recorded while its execution
    was being parked (read on the pending-commands index: a few rows, not the parked)."""
    conn.execute(_COMMANDED)
