"""The callback outbox (`execflow.outbox`): the execution row is the entry, these are its SQL.

Synchronous like `Store`'s methods: run writes with `store.call`, reads with `store.read`.
An entry is due when its execution has ended, its callback is `pending`, its next attempt
time has come and no deliverer holds it. A deliverer holds entries by a lease, a time:
`callback_lease_until`. Claiming sets it (PostgreSQL skips rows another claim has locked,
and the update re-checks that each row is still free, which is what decides on SQLite), and
recording an attempt is guarded by the exact lease the claim set: a deliverer whose lease
expired and was taken over records nothing, so attempts are counted once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from execflow.records import EventRecord, ExecutionRecord
from execflow.sealing import Sealed, Sealer
from execflow.states import TERMINAL
from execflow.store import schema as s
from execflow.store import writes
from execflow.store.rows import to_execution
from execflow.store.store import Store

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_ENDED = sorted(state.value for state in TERMINAL)
# callback_last_error is Text, but an error is shown on the execution and in its log
_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class OutboxEntry:
    """A claimed callback: the ended execution (no task runs), its lease and its secret."""

    execution: ExecutionRecord
    url: str
    attempts: int  # attempts made before this one
    lease_until: datetime
    secret: str  # the project's callback secret (the HMAC key, as text)


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt changes on its entry; `state` pending means it is tried again."""

    execution_id: str
    lease_until: datetime  # the claim's lease: the guard
    state: str
    next_at: datetime | None
    status: int | None
    error: str | None
    event: EventRecord | None  # the audit entry, unless the execution's log level drops it


def _due(now: datetime) -> sa.ColumnElement[bool]:
    e = s.executions
    return sa.and_(
        e.c.callback_state == PENDING,
        e.c.state.in_(_ENDED),
        sa.or_(e.c.callback_next_at.is_(None), e.c.callback_next_at <= now),
        sa.or_(e.c.callback_lease_until.is_(None), e.c.callback_lease_until < now),
    )


def any_due(store: Store, now: datetime) -> bool:
    """Whether any callback is due: a cheap read, so an idle outbox costs no write."""
    q = sa.select(s.executions.c.id).where(_due(now)).limit(1)
    with store.reading() as conn:
        return conn.execute(q).first() is not None


def claim_due(store: Store, now: datetime, lease_until: datetime, limit: int) -> list[OutboxEntry]:
    """Lease up to `limit` due entries (oldest end first) until `lease_until`, with secrets."""
    e = s.executions
    q = (
        sa.select(e.c.id)
        .where(_due(now))
        .order_by(e.c.ended_at, e.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with store.engine.begin() as conn:
        ids = list(conn.execute(q).scalars())
        if not ids:
            return []
        # RETURNING names the rows this statement took: on SQLite another process may have
        # claimed some between the select and the update, and the re-checked guard skips them
        taken = conn.execute(
            e.update()
            .where(e.c.id.in_(ids), _due(now))
            .values(callback_lease_until=lease_until)
            .returning(e.c.id)
        )
        taken_ids = list(taken.scalars())
        if not taken_ids:
            return []
        rows = conn.execute(sa.select(e).where(e.c.id.in_(taken_ids))).mappings().all()
        keys = _ensure_secrets(conn, store.sealer, {row["project_id"] for row in rows})
    entries = [
        OutboxEntry(
            to_execution(row, ()),
            row["callback_url"],
            row["callback_attempts"],
            lease_until,
            keys[row["project_id"]],
        )
        for row in rows
    ]
    return sorted(entries, key=lambda entry: (entry.execution.ended_at or now, entry.execution.id))


def record_attempt(store: Store, attempt: AttemptRecord) -> bool:
    """Count an attempt and set what follows, with its audit entry, in one transaction.

    False (and nothing written) when the claim's lease is no longer this entry's: it expired
    and another deliverer took the entry over (or it was settled meanwhile)."""
    e = s.executions
    guard = sa.and_(
        e.c.id == attempt.execution_id,
        e.c.callback_state == PENDING,
        e.c.callback_lease_until == attempt.lease_until,
    )
    error = attempt.error[:_ERROR_LENGTH] if attempt.error is not None else None
    values = {
        "callback_attempts": e.c.callback_attempts + 1,
        "callback_state": attempt.state,
        "callback_next_at": attempt.next_at,
        "callback_last_status": attempt.status,
        "callback_last_error": error,
        "callback_lease_until": None,
    }
    with store.engine.begin() as conn:
        if conn.execute(e.update().where(guard).values(values)).rowcount != 1:
            return False
        if attempt.event is not None:
            conn.execute(s.events.insert().values(writes.event_values(attempt.event)))
    return True


def release(store: Store, leases: Iterable[tuple[str, datetime]]) -> int:
    """Give back claimed entries that were not attempted (a deliverer stopping), so that the
    next deliverer takes them at once instead of after the lease."""
    e = s.executions
    count = 0
    with store.engine.begin() as conn:
        for execution_id, lease_until in leases:
            res = conn.execute(
                e.update()
                .where(e.c.id == execution_id, e.c.callback_lease_until == lease_until)
                .values(callback_lease_until=None)
            )
            count += int(res.rowcount)
    return count


def next_due(store: Store, now: datetime) -> datetime | None:
    """When the earliest entry that is waiting for a later attempt becomes due."""
    e = s.executions
    q = sa.select(sa.func.min(e.c.callback_next_at)).where(
        e.c.callback_state == PENDING, e.c.state.in_(_ENDED), e.c.callback_next_at > now
    )
    with store.reading() as conn:
        found: datetime | None = conn.execute(q).scalar_one_or_none()
    return found


def callback_secret(store: Store, project: str) -> str | None:
    """The callback secret of the project named `project`, made now if it has none yet;
    None when there is no such project."""
    p = s.projects
    with store.engine.begin() as conn:
        project_id = conn.execute(sa.select(p.c.id).where(p.c.name == project)).scalar_one_or_none()
        if project_id is None:
            return None
        return _ensure_secrets(conn, store.sealer, {project_id})[project_id]


def _ensure_secrets(conn: Connection, sealer: Sealer, project_ids: set[str]) -> dict[str, str]:
    """Each project's callback secret, made on first use and kept sealed. The update only
    fills an empty one, so when two transactions race the later finds the earlier's secret
    (PostgreSQL re-checks the condition after the row lock; SQLite writers are serialised)
    and everyone signs and verifies with the same key. In id order, so that two claims
    never deadlock."""
    p = s.projects
    ids = sorted(project_ids)
    q = sa.select(p.c.id, p.c.callback_secret).where(p.c.id.in_(ids))
    found: dict[str, str | None] = {pid: key for pid, key in conn.execute(q)}
    missing = [pid for pid in ids if found.get(pid) is None]
    for project_id in missing:
        sealed = sealer.seal(secrets.token_hex(32)).token
        conn.execute(
            p.update()
            .where(p.c.id == project_id, p.c.callback_secret.is_(None))
            .values(callback_secret=sealed)
        )
    if missing:
        found.update({pid: key for pid, key in conn.execute(q.where(p.c.id.in_(missing)))})
    return {str(pid): open_callback_secret(sealer, str(kept)) for pid, kept in found.items()}


def open_callback_secret(sealer: Sealer, kept: str) -> str:
    """A callback secret as stored: sealed, or (made before secrets were sealed) 64 hex
    characters, which `execflow secrets rotate` seals."""
    return kept if len(kept) == 64 else str(sealer.open(Sealed(kept)))
