"""Steering executions: commands (cancel, suspend, resume, signal) recorded for the engine
that holds them, retry rounds, and audit entries written outside a lease."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from execflow.errors import Conflict, NotFound
from execflow.records import (
    CommandRecord,
    EventRecord,
    ExecutionRecord,
)
from execflow.states import ExecutionState
from execflow.store import schema as s
from execflow.store import writes
from execflow.store.base import StoreBase
from execflow.store.executions import EXECUTION_BY_ID, TASK_RUNS_OF
from execflow.store.rows import (
    to_command,
    to_execution,
    to_task_run,
)

_PENDING = (
    sa.select(s.commands.c.id)
    .where(
        s.commands.c.done_at.is_(None),
        s.commands.c.execution_id == sa.bindparam("id"),
        s.commands.c.kind == sa.bindparam("kind"),
    )
    .limit(1)
)


class Commands(StoreBase):
    """Commands for executions, retries and audit entries outside a lease."""

    def request(
        self,
        execution_id: str,
        project_id: str,
        kind: str,
        payload: dict[str, Any],
        actor: str | None,
        now: datetime,
        check: Callable[[ExecutionRecord], None],
    ) -> ExecutionRecord:
        """Record a command for an execution, in one transaction with `check` (which raises
        to refuse it, seeing the execution and its task runs as they are now)."""
        e = s.executions
        with self.engine.begin() as conn:
            row = conn.execute(EXECUTION_BY_ID, {"id": execution_id}).mappings().first()
            if row is None or row["project_id"] != project_id:
                raise NotFound(f"execution {execution_id!r} not found")
            runs = [
                to_task_run(r) for r in conn.execute(TASK_RUNS_OF, {"id": execution_id}).mappings()
            ]
            check(to_execution(row, runs))
            conn.execute(
                s.commands.insert().values(
                    execution_id=execution_id,
                    kind=kind,
                    payload=payload,
                    actor=actor,
                    created_at=now,
                )
            )
            # it wakes the execution if it is parked (any engine may claim it at once); the
            # row is updated either way, so that a park being written waits for this commit
            parked = e.c.wake_at.is_not(None)
            values: dict[str, Any] = {
                "updated_at": now,
                "wake_at": None,
                "lease_expires_at": sa.case((parked, None), else_=e.c.lease_expires_at),
            }
            if kind == "cancel":
                values["cancel_requested"] = True
            conn.execute(e.update().where(e.c.id == execution_id).values(values))
        return self.get_execution(execution_id, project_id)

    def retry(
        self,
        execution_id: str,
        project_id: str,
        now: datetime,
        owner: str | None,
        expires: datetime | None,
        actor: str | None,
    ) -> ExecutionRecord:
        """Open a new round of a FAILED or CANCELED execution: it runs again, its completed
        tasks keep their outputs and the others (and what follows them) run anew."""
        e = s.executions
        with self.engine.begin() as conn:
            rec = self._get_execution(conn, execution_id, project_id, False)
            if rec.state not in (ExecutionState.FAILED, ExecutionState.CANCELED):
                raise Conflict(f"only a failed or cancelled execution can be retried ({rec.state})")
            values = {
                "state": ExecutionState.RUNNING.value,
                "round": rec.round + 1,
                "error": None,
                "outputs": None,
                "ended_at": None,
                "cancel_requested": False,
                "updated_at": now,
                "lease_owner": owner,
                "lease_expires_at": expires,
                "wake_at": None,
            }
            if rec.callback is not None:  # the next end is a new event to call back
                values.update(
                    callback_state="pending",
                    callback_attempts=0,
                    callback_next_at=None,
                    callback_last_status=None,
                    callback_last_error=None,
                )
            guard = sa.and_(e.c.id == execution_id, e.c.state == rec.state.value)
            if conn.execute(e.update().where(guard).values(values)).rowcount != 1:
                raise Conflict(f"execution {execution_id!r} changed meanwhile; try again")
            event = EventRecord(
                execution_id,
                now,
                5,
                "command",
                f"retry requested (round {rec.round + 1})",
                data={"from": rec.state.value, "to": ExecutionState.RUNNING.value},
                actor=actor,
            )
            conn.execute(s.events.insert().values(writes.event_values(event)))
            return self._get_execution(conn, execution_id, None, True, for_engine=True)

    def request_cancel(self, execution_id: str, project_id: str, now: datetime) -> ExecutionRecord:
        def active(rec: ExecutionRecord) -> None:
            if rec.state.terminal:
                raise Conflict(f"execution {execution_id!r} has already ended ({rec.state})")

        return self.request(execution_id, project_id, "cancel", {}, None, now, active)

    def pending_commands(self, owner: str) -> list[CommandRecord]:
        """Commands not yet carried out for executions `owner` holds, oldest first."""
        c, e = s.commands, s.executions
        q = (
            sa.select(c)
            .join(e, e.c.id == c.c.execution_id)
            .where(c.c.done_at.is_(None), e.c.lease_owner == owner)
            .order_by(c.c.id)
        )
        with self._reader() as conn:
            return [to_command(r) for r in conn.execute(q).mappings()]

    def command_pending(self, execution_id: str, kind: str) -> bool:
        """Whether a `kind` command of the execution waits to be carried out: what a
        steering call waits on before it answers (`Service._carried_out`), one query on
        the pending-commands index."""
        with self._reader() as conn:
            found = conn.execute(_PENDING, {"id": execution_id, "kind": kind}).first()
        return found is not None

    def add_events(self, events: Sequence[EventRecord]) -> None:
        """Add audit entries outside any lease: what a node saw of an execution another
        node holds (a late result it ignored)."""
        with self.engine.begin() as conn:
            conn.execute(s.events.insert(), [writes.event_values(e) for e in events])
