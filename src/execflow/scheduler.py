"""Runs workflows' cron schedules: each slot becomes one ordinary execution, once in all.

Every node runs a `Scheduler`. A tick lists the workflows whose latest revision declares
schedules, asks `schedules.due_slots` which slots of each are due, and starts each through
`Service.start_or_find` under the slot's execution name (`slot_execution_name`). The unique
(workflow, execution name) constraint decides: when several nodes start one slot, one insert
wins and the others find that execution (or a `Conflict`), which means "already started". So
a slot starts exactly once however many nodes tick, with no leader and no table of its own,
and a node coming back after downtime finds in the executions which slots ran and skips or
catches up the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from execflow.clock import Clock, SystemClock
from execflow.definition import Definition
from execflow.engine import DefinitionCache
from execflow.errors import Conflict, InvalidDefinition
from execflow.records import ExecutionRecord, Principal
from execflow.schedules import Schedule, due_slots, next_slot, slot_execution_name
from execflow.service import Service, StartRequest
from execflow.store import Store
from execflow.store.database import is_outage
from execflow.store.schedules import (
    ScheduledWorkflow,
    revisions_before,
    scheduled_workflows,
    taken_names,
)

log = logging.getLogger("execflow.scheduler")

# The label every slot execution carries: the name of its schedule.
SCHEDULE_LABEL = "execflow.schedule"
# How often the store is asked for new or changed schedules when no slot comes sooner (a
# `poke` after a workflow is stored makes it sooner).
DEFAULT_POLL_SECONDS = 15.0
# After a tick failed as a whole (the database unreachable, say).
_RETRY_SECONDS = 1.0
# How long `stop` lets a tick finish its current start before cancelling it.
_STOP_GRACE = 5.0
# executions.started_by is String(32).
_STARTED_BY_LENGTH = 32

Calendar = tuple[str, str, bool]  # cron expression, time zone, enabled


class Scheduler:
    """Starts the due slots of every workflow's schedules; `tick` once, or `start` a loop."""

    def __init__(
        self,
        store: Store,
        service: Service,
        definitions: DefinitionCache,
        clock: Clock | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.store = store
        self.service = service
        self.definitions = definitions
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        # The next slot of any schedule, as of the last tick (None: none is coming).
        self.next_slot: datetime | None = None
        # The newest slot known to have started, per (workflow id, schedule name): only a
        # lower bound (another node may have started later ones), so that a tick with
        # nothing due costs no query.
        self._last: dict[tuple[str, str], datetime] = {}
        # When each schedule's calendar was stored, per (workflow id, revision).
        self._since: dict[tuple[str, int], dict[str, datetime]] = {}
        # Latest revisions that no longer parse (an action removed by an upgrade, say).
        self._unreadable: set[tuple[str, int]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop: a tick now, then at each next slot and at least every poll period."""
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="execflow-scheduler")

    async def stop(self) -> None:
        """Start no more slots; a start under way may finish (briefly) before the loop ends."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait([self._task], timeout=_STOP_GRACE)
        if not done:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def poke(self) -> None:
        """Tick soon: a workflow's schedules may have changed."""
        self._wake.set()

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                await self.tick()
                delay = self._delay(self.clock.now())
                failures = 0
            except Exception as exc:
                failures += 1
                if not is_outage(exc):
                    log.exception("schedule tick failed; retrying")
                elif failures == 1:  # one line per outage, not a traceback per attempt
                    log.warning("schedules wait for the database: %s", exc)
                delay = min(_RETRY_SECONDS, self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _delay(self, now: datetime) -> float:
        if self.next_slot is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, (self.next_slot - now).total_seconds()))

    # ticking --------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Start every slot due at `now` (the clock's time by default); the new executions' ids.

        A failure in one workflow's schedules is logged and the others go on."""
        now = now or self.clock.now()
        found = await self.store.read(scheduled_workflows, self.store)
        started: list[str] = []
        upcoming: list[datetime] = []
        for wf in found:
            if self._stopping:
                break
            definition = await self._definition(wf)
            if definition is None:
                continue
            try:
                since = await self._since_of(wf, definition)
            except Exception:
                log.exception("cannot read the revisions of %s", _where(wf))
                continue
            for schedule in definition.schedules:
                if not schedule.enabled:
                    continue
                try:
                    started.extend(await self._run(wf, schedule, since[schedule.name], now))
                except Exception:
                    log.exception("schedule %r of %s failed", schedule.name, _where(wf))
                if (slot := next_slot(schedule, now)) is not None:
                    upcoming.append(slot)
        self.next_slot = min(upcoming, default=None)
        self._forget_except({wf.workflow_id for wf in found})
        return started

    async def _definition(self, wf: ScheduledWorkflow) -> Definition | None:
        """The latest revision's definition; None (logged) when it cannot be had."""
        key = (wf.workflow_id, wf.revision)
        if key in self._unreadable:
            return None
        try:
            return await self.definitions.get(wf.workflow_id, wf.revision)
        except InvalidDefinition:
            # Stored revisions never change: say it once, not at every tick.
            self._unreadable.add(key)
            log.exception(
                "the schedules of %s do not run: revision %d no longer parses",
                _where(wf),
                wf.revision,
            )
        except Exception:
            log.exception("cannot read the schedules of %s", _where(wf))
        return None

    async def _run(
        self, wf: ScheduledWorkflow, schedule: Schedule, since: datetime, now: datetime
    ) -> list[str]:
        """Start the due slots of one schedule, oldest first; stop at the first failure so
        that the failed slot is tried again on the next tick."""
        key = (wf.workflow_id, schedule.name)
        due = due_slots(schedule, self._last.get(key), now, since)
        if not due:
            return []
        names = {slot_execution_name(schedule.name, slot): slot for slot in due}
        taken = await self.store.read(taken_names, self.store, wf.workflow_id, list(names))
        if taken:
            # What started after a gap is what due_slots would have counted from.
            newest = max(names[name] for name in taken)
            self._last[key] = newest
            due = [slot for slot in due if slot > newest]
        started = []
        for slot in due:
            if self._stopping:
                break
            record = await self._start(wf, schedule, slot)
            if record is not None:
                started.append(record.id)
            self._last[key] = slot
        return started

    async def _start(
        self, wf: ScheduledWorkflow, schedule: Schedule, slot: datetime
    ) -> ExecutionRecord | None:
        """Start one slot; None when another node (or a person) already has."""
        name = slot_execution_name(schedule.name, slot)
        try:
            request = StartRequest(
                inputs=dict(schedule.inputs),
                revision=wf.revision,
                name=name,
                own_labels={SCHEDULE_LABEL: schedule.name},
                scheduled_at=slot,
            )
            record, created = await self.service.start_or_find(
                _principal(wf, schedule), wf.workflow_name, request
            )
        except Conflict:
            return None  # taken, with other inputs (a person's run, or an older revision's)
        except Exception:
            # Two nodes inserting one slot at the same instant can make the loser's insert
            # fail on the unique index with a database error rather than a Conflict: if the
            # slot is there now, another node started it.
            if await self.store.read(taken_names, self.store, wf.workflow_id, [name]):
                return None
            raise
        if not created:
            return None
        log.info(
            "started %s (%s) for schedule %r of %s", name, record.id, schedule.name, _where(wf)
        )
        return record

    async def _since_of(self, wf: ScheduledWorkflow, definition: Definition) -> dict[str, datetime]:
        """When each schedule got the calendar it has now (its cron, zone and being enabled).

        Not simply when the latest revision was stored: storing a revision that changes only
        the tasks (a redeploy after downtime, say) must not drop the slots missed before it.
        """
        cache_key = (wf.workflow_id, wf.revision)
        found = self._since.get(cache_key)
        if found is not None:
            return found
        since = {schedule.name: wf.stored_at for schedule in definition.schedules}
        walking = {schedule.name: _calendar(schedule) for schedule in definition.schedules}
        number = wf.revision
        while walking:
            older = await self.store.read(revisions_before, self.store, wf.workflow_id, number)
            for revision in older:
                calendars = _calendars(revision.definition)
                for name, calendar in list(walking.items()):
                    if calendars.get(name) == calendar:
                        since[name] = revision.created_at
                    else:
                        del walking[name]
            if not older:
                break
            number = older[-1].number
        self._since[cache_key] = since
        return since

    def _forget_except(self, workflow_ids: set[str]) -> None:
        """Drop what is remembered of workflows that no longer have schedules."""
        self._last = {k: v for k, v in self._last.items() if k[0] in workflow_ids}
        self._since = {k: v for k, v in self._since.items() if k[0] in workflow_ids}
        self._unreadable = {k for k in self._unreadable if k[0] in workflow_ids}


def _principal(wf: ScheduledWorkflow, schedule: Schedule) -> Principal:
    """Who starts a slot: the schedule itself, as an operator of the workflow's project."""
    token_id = f"schedule:{schedule.name}"[:_STARTED_BY_LENGTH]
    actions = None if wf.actions is None else frozenset(wf.actions)
    return Principal(token_id, wf.project_id, wf.project_name, "operator", None, actions)


def _calendar(schedule: Schedule) -> Calendar:
    return (schedule.expression, schedule.timezone, schedule.enabled)


def _calendars(source: Any) -> dict[str, Calendar]:
    """The calendar of each schedule in a stored definition document."""
    entries = source.get("schedules") if isinstance(source, dict) else None
    out: dict[str, Calendar] = {}
    for entry in entries if isinstance(entries, list) else []:
        try:
            schedule = Schedule.model_validate(entry)
        except ValidationError:
            continue  # no longer valid (a time zone gone, say): counts as a change
        out[schedule.name] = _calendar(schedule)
    return out


def _where(wf: ScheduledWorkflow) -> str:
    return f"workflow {wf.workflow_name!r} of project {wf.project_name!r}"
