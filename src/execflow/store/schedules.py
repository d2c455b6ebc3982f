"""The reads behind the cron scheduler (`execflow.scheduler`); it writes only through starts.

Synchronous like `Store`'s methods: run them with `store.read`. Which slots ran is asked by
exact execution name (`slot_execution_name`), an equality on the unique (workflow_id, name)
index. A name range or `max(name)` would not do: under a linguistic collation (glibc's
en_US.UTF-8 on PostgreSQL) punctuation does not sort byte-wise, and an execution an operator
named `nightly-rerun`, or the slots of a schedule named `nightly-2`, fall inside `nightly-`'s
range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from execflow.records import RevisionRecord
from execflow.store import schema as s
from execflow.store.store import Store

# Names per IN list: well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
_CHUNK = 500


@dataclass(frozen=True)
class ScheduledWorkflow:
    """A workflow whose latest revision declares schedules, and who owns it."""

    workflow_id: str
    workflow_name: str
    project_id: str
    project_name: str
    revision: int
    stored_at: datetime  # when that revision was stored
    actions: list[str] | None = None  # what the project may use (None: every action)


def scheduled_workflows(store: Store) -> list[ScheduledWorkflow]:
    """Every workflow whose latest revision has a non-empty `schedules` list."""
    w, r, p = s.workflows, s.revisions, s.projects
    q = (
        sa.select(
            w.c.id, w.c.name, w.c.project_id, p.c.name, r.c.number, r.c.created_at, p.c.actions
        )
        .join(r, sa.and_(r.c.workflow_id == w.c.id, r.c.number == w.c.latest_revision))
        .join(p, p.c.id == w.c.project_id)
        .where(_declares_schedules(store))
        .order_by(w.c.id)
    )
    with store.engine.connect() as conn:
        return [ScheduledWorkflow(*row) for row in conn.execute(q)]


def _declares_schedules(store: Store) -> sa.ColumnElement[bool]:
    # Only asks whether `schedules` has a first entry: an entry that is no schedule is let
    # through, to fail when that one workflow is parsed rather than this whole query.
    definition = s.revisions.c.definition
    if store.is_sqlite:
        return sa.func.json_type(definition, "$.schedules[0]").is_not(None)
    first = definition.op("->")("schedules").op("->")(0)
    return sa.func.jsonb_typeof(first).is_not(None)


def revisions_before(
    store: Store, workflow_id: str, number: int, limit: int = 20
) -> list[RevisionRecord]:
    """Up to `limit` revisions of a workflow older than `number`, newest first."""
    r = s.revisions
    q = (
        sa.select(r.c.workflow_id, r.c.number, r.c.digest, r.c.definition, r.c.created_at)
        .where(r.c.workflow_id == workflow_id, r.c.number < number)
        .order_by(r.c.number.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [RevisionRecord(*row) for row in conn.execute(q)]


def taken_names(store: Store, workflow_id: str, names: Sequence[str]) -> set[str]:
    """Which of `names` an execution of the workflow already has."""
    e = s.executions
    found: set[str] = set()
    with store.engine.connect() as conn:
        for i in range(0, len(names), _CHUNK):
            chunk = list(names[i : i + _CHUNK])
            q = sa.select(e.c.name).where(e.c.workflow_id == workflow_id, e.c.name.in_(chunk))
            found.update(conn.execute(q).scalars())
    return found
