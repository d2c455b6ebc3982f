"""The line for a workflow's `concurrency` slots (table `admissions`), shared by every node.

Synchronous like `Store`'s methods: the engine runs `admit` with `store.call`, the service
`admission` with `store.read`. An execution holds a slot while it is active in the round it
was admitted for; `admit` hands free slots to the oldest waiting executions of the workflow,
whichever node holds them, in one transaction that no other admission of that workflow
overlaps (the workflow's row locked on PostgreSQL; SQLite's write lock), so the limit holds
across nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from execflow.records import Admission
from execflow.states import ACTIVE, ExecutionState
from execflow.store import schema as s
from execflow.store.store import Store

_a, _e = s.admissions, s.executions
_ACTIVE = [state.value for state in ACTIVE]
# who may be admitted: not suspended (it would hold a slot to do nothing), no cancel pending
_ADMISSIBLE = [state.value for state in ACTIVE if state is not ExecutionState.SUSPENDED]


@dataclass(frozen=True)
class Waiting:
    """An execution an engine holds that needs a slot: its round, its revision's limit, and
    its place in the line (when it was due to start, or when it was retried)."""

    execution_id: str
    round: int
    concurrency: int
    since: datetime


def admit(store: Store, workflow_id: str, mine: Sequence[Waiting], now: datetime) -> set[str]:
    """Put `mine` in the line (a new round queues again), hand the workflow's free slots to
    the oldest in the line, and answer which of `mine` hold a slot now.

    Strictly in order: the head of the line waits for a slot under its own limit, and
    nobody behind it passes it."""
    with store.engine.begin() as conn:
        if not store.is_sqlite:
            lock = sa.select(s.workflows.c.id).where(s.workflows.c.id == workflow_id)
            conn.execute(lock.with_for_update())
        # a write first: on SQLite it takes the write lock until the commit. What it removes
        # is the line's past: executions that ended (their slot is free)
        ended = ~sa.exists().where(_e.c.id == _a.c.execution_id, _e.c.state.in_(_ACTIVE))
        conn.execute(_a.delete().where(_a.c.workflow_id == workflow_id, ended))
        _join(conn, workflow_id, mine, now)
        held = _held(conn, workflow_id)
        line = (
            sa.select(_a.c.execution_id, _a.c.concurrency)
            .join(_e, _e.c.id == _a.c.execution_id)
            .where(
                _a.c.workflow_id == workflow_id,
                _a.c.admitted_at.is_(None),
                _e.c.round == _a.c.round,
                _e.c.state.in_(_ADMISSIBLE),
                _e.c.cancel_requested.is_(False),
            )
            .order_by(_a.c.queued_at, _a.c.execution_id)
        )
        widest = conn.execute(
            sa.select(sa.func.max(_a.c.concurrency)).where(_a.c.workflow_id == workflow_id)
        ).scalar()
        admitted = []
        if widest is not None and held < widest:
            for execution_id, limit in conn.execute(line.limit(widest - held)):
                if held >= limit:
                    break
                admitted.append(execution_id)
                held += 1
        if admitted:
            conn.execute(_a.update().where(_a.c.execution_id.in_(admitted)).values(admitted_at=now))
        rounds = {w.execution_id: w.round for w in mine}
        holding = conn.execute(
            sa.select(_a.c.execution_id, _a.c.round).where(
                _a.c.execution_id.in_(list(rounds)), _a.c.admitted_at.is_not(None)
            )
        )
        return {eid for eid, round_ in holding if rounds[eid] == round_}


def _join(conn: Connection, workflow_id: str, mine: Sequence[Waiting], now: datetime) -> None:
    """Put each of `mine` in the line unless it is there for its round already."""
    if not mine:
        return
    known = dict(
        conn.execute(
            sa.select(_a.c.execution_id, _a.c.round).where(
                _a.c.execution_id.in_([w.execution_id for w in mine])
            )
        ).all()
    )
    for w in mine:
        row = {
            "round": w.round,
            "concurrency": w.concurrency,
            "queued_at": min(w.since, now),
            "admitted_at": None,
        }
        if w.execution_id not in known:
            conn.execute(
                _a.insert().values(execution_id=w.execution_id, workflow_id=workflow_id, **row)
            )
        elif known[w.execution_id] != w.round:  # retried: it queues again
            conn.execute(_a.update().where(_a.c.execution_id == w.execution_id).values(row))


def _held(conn: Connection, workflow_id: str) -> int:
    """Slots of the workflow held by active executions in the round they were admitted for."""
    q = (
        sa.select(sa.func.count())
        .select_from(_a.join(_e, _e.c.id == _a.c.execution_id))
        .where(
            _a.c.workflow_id == workflow_id,
            _a.c.admitted_at.is_not(None),
            _e.c.round == _a.c.round,
            _e.c.state.in_(_ACTIVE),
        )
    )
    return int(conn.execute(q).scalar_one())


def admission(store: Store, execution_id: str) -> Admission | None:
    """Where an execution stands in its workflow's line (None: not in it)."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(_a).where(_a.c.execution_id == execution_id)).first()
        if row is None:
            return None
        if row.admitted_at is not None:
            return Admission(False, 0, row.admitted_at)
        before = sa.or_(
            _a.c.queued_at < row.queued_at,
            sa.and_(_a.c.queued_at == row.queued_at, _a.c.execution_id < execution_id),
        )
        ahead = conn.execute(
            sa.select(sa.func.count())
            .select_from(_a.join(_e, _e.c.id == _a.c.execution_id))
            .where(
                _a.c.workflow_id == row.workflow_id,
                _a.c.admitted_at.is_(None),
                _e.c.round == _a.c.round,
                _e.c.state.in_(_ACTIVE),
                before,
            )
        ).scalar_one()
        return Admission(True, int(ahead), row.queued_at)
