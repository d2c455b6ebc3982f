"""The scheduler: each due slot becomes one ordinary execution, once across nodes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from execflow.clock import ManualClock
from execflow.engine import DefinitionCache
from execflow.records import ExecutionRecord
from execflow.runtime import Runtime
from execflow.scheduler import SCHEDULE_LABEL, Scheduler
from execflow.service import Service
from execflow.settings import Settings
from execflow.states import ExecutionState
from execflow.store import Store, connect
from execflow.store import schema as s
from tests.harness import Harness, harness

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return T0.replace(hour=hour, minute=minute)


def hourly(**fields: Any) -> dict[str, Any]:
    return {"name": "hourly", "cron": "0 * * * *", "inputs": {"day": "cron"}, **fields}


def workflow(*schedules: dict[str, Any], name: str = "report", tag: str = "") -> dict[str, Any]:
    """A one-task workflow; a different `tag` makes a new revision with the same schedules."""
    return {
        "name": name,
        "description": tag,
        "parameters": {"day": {"type": "string", "default": "today"}},
        "tasks": {"make": {"action": "echo", "with": {"day": "${{ params.day }}"}}},
        "outputs": {"day": "${{ tasks.make.output.day }}"},
        "schedules": list(schedules),
    }


def scheduler(h: Harness, definitions: DefinitionCache | None = None) -> Scheduler:
    return Scheduler(h.store, h.service, definitions or h.service.definitions, h.clock)


def clock(h: Harness) -> ManualClock:
    assert isinstance(h.clock, ManualClock)
    return h.clock


async def executions(h: Harness, workflow: str = "report") -> list[ExecutionRecord]:
    """The workflow's executions, oldest slot first."""
    found, _ = await h.service.list_executions(h.admin, workflow, limit=500)
    return sorted(found, key=lambda ex: ex.name)


def slots(found: list[ExecutionRecord]) -> list[datetime | None]:
    return [ex.scheduled_at for ex in found]


async def test_a_slot_starts_one_execution_that_runs_to_completion(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly()))
        sched = scheduler(h)
        assert await sched.tick(at(0, 30)) == []  # 00:00 is when it was stored: not due
        clock(h).set(at(1))
        [started] = await sched.tick()
        assert await sched.tick() == []
        assert await scheduler(h).tick() == []  # a fresh scheduler learns it from the store
        assert sched.next_slot == at(2)

        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started)
        assert ex.name == "hourly-20300101T010000Z"
        assert ex.scheduled_at == at(1)
        assert ex.inputs == {"day": "cron"}
        assert ex.labels == {SCHEDULE_LABEL: "hourly"}
        assert ex.started_by == "schedule:hourly"
        assert ex.state is ExecutionState.COMPLETED
        assert ex.outputs == {"day": "cron"}


async def test_the_principal_fits_started_by_for_a_long_schedule_name(store: Store) -> None:
    name = "a-schedule-name-longer-than-the-started-by-column"
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(name=name)))
        [started] = await scheduler(h).tick(at(1))
        ex = await h.service.get_execution(h.admin, started)
        assert ex.started_by == f"schedule:{name}"[:32]
        assert ex.labels == {SCHEDULE_LABEL: name}


@asynccontextmanager
async def second_node(store: Store, clock: ManualClock) -> AsyncIterator[Harness]:
    """Another server process on the same database: its own store, engine and service."""
    other = Store(connect(store.engine.url.render_as_string(hide_password=False)), store.sealer)
    try:
        async with harness(other, clock, workers=1, node_id="node-b") as h:
            yield h
    finally:
        other.close()


async def test_two_nodes_ticking_at_once_start_each_slot_once(store: Store) -> None:
    now = ManualClock(T0)
    async with harness(store, now, workers=1, node_id="node-a") as a, second_node(store, now) as b:
        await a.apply(workflow(hourly(missed="catch_up")))
        nodes = [scheduler(a), scheduler(b), scheduler(a), scheduler(b)]
        started: list[str] = []
        for hour in (3, 4):
            now.set(at(hour))
            for ids in await asyncio.gather(*(n.tick() for n in nodes)):
                started.extend(ids)
        found = await executions(a)
        assert slots(found) == [at(1), at(2), at(3), at(4)]
        assert sorted(started) == sorted(ex.id for ex in found)

        await a.engine.run_until_idle()
        await b.engine.run_until_idle()
        found = await executions(a)
        assert {ex.state for ex in found} == {ExecutionState.COMPLETED}


async def test_skip_starts_only_the_latest_missed_slot(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(missed="skip")))
        sched = scheduler(h)
        assert len(await sched.tick(at(1))) == 1
        assert len(await sched.tick(at(5, 30))) == 1  # down from 01:30 to 05:30
        assert slots(await executions(h)) == [at(1), at(5)]


async def test_catch_up_starts_each_missed_slot_up_to_the_limit(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(missed="catch_up")))
        await h.apply(workflow(hourly(missed="catch_up", catch_up_limit=3), name="limited"))
        sched = scheduler(h)
        assert len(await sched.tick(at(1))) == 2
        assert len(await sched.tick(at(6, 30))) == 5 + 3
        assert await sched.tick(at(6, 30)) == []
        hours = [at(i) for i in range(1, 7)]
        assert slots(await executions(h)) == hours
        assert slots(await executions(h, "limited")) == [at(1), *hours[-3:]]


async def test_a_disabled_schedule_starts_nothing(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(enabled=False)))
        sched = scheduler(h)
        assert await sched.tick(at(3)) == []
        assert sched.next_slot is None


async def test_a_schedule_disabled_or_removed_in_a_newer_revision_starts_nothing(
    store: Store,
) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly()))
        await h.apply(workflow(hourly(), name="other"))
        clock(h).set(at(0, 10))
        await h.apply(workflow())
        await h.apply(workflow(hourly(enabled=False), name="other"))
        assert await scheduler(h).tick(at(3)) == []


async def test_a_new_schedule_does_not_backfill_past_slots(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(missed="catch_up")))
        clock(h).set(at(5, 30))
        await h.apply(workflow(hourly(missed="catch_up"), name="late"))
        sched = scheduler(h)
        assert len(await sched.tick()) == 5  # report's slots only
        assert await executions(h, "late") == []
        started = await sched.tick(at(6))
        late = await executions(h, "late")
        assert slots(late) == [at(6)]
        assert late[0].id in started


async def test_a_revision_keeping_the_calendar_keeps_the_missed_slots(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(missed="catch_up")))
        clock(h).set(at(3, 30))  # a redeploy after downtime stores a new revision first
        await h.apply(workflow(hourly(missed="catch_up", inputs={"day": "new"}), tag="v2"))
        assert len(await scheduler(h).tick()) == 3
        found = await executions(h)
        assert slots(found) == [at(1), at(2), at(3)]
        assert {(ex.revision, ex.inputs["day"]) for ex in found} == {(2, "new")}


async def test_a_changed_calendar_counts_from_its_own_revision(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(missed="catch_up")))
        clock(h).set(at(3, 30))
        await h.apply(workflow(hourly(missed="catch_up", cron="30 * * * *")))
        sched = scheduler(h)
        assert await sched.tick() == []
        assert len(await sched.tick(at(4, 30))) == 1
        assert slots(await executions(h)) == [at(4, 30)]


async def test_a_slot_started_by_hand_is_not_started_again(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly()))
        by_hand = await h.service.start(h.admin, "report", name="hourly-20300101T010000Z")
        await h.service.start(h.admin, "report", name="hourly-rerun")
        sched = scheduler(h)
        assert await sched.tick(at(1)) == []
        assert len(await sched.tick(at(2))) == 1
        found = await executions(h)
        assert [ex.name for ex in found] == [
            "hourly-20300101T010000Z",
            "hourly-20300101T020000Z",
            "hourly-rerun",
        ]
        assert found[0].id == by_hand.id


async def test_a_failure_in_one_workflow_does_not_stop_another(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(), name="broken"))
        await h.apply(workflow(hourly()))
        # A stored revision that no longer parses (an action removed by an upgrade, say).
        gone = workflow(hourly(), name="broken")
        gone["tasks"] = {"make": {"action": "gone"}}
        with store.engine.begin() as conn:
            conn.execute(
                s.revisions.update()
                .values(definition=gone)
                .where(
                    s.revisions.c.workflow_id
                    == sa.select(s.workflows.c.id)
                    .where(s.workflows.c.name == "broken")
                    .scalar_subquery()
                )
            )
        sched = scheduler(h, DefinitionCache(store))
        with caplog.at_level(logging.ERROR, logger="execflow.scheduler"):
            assert len(await sched.tick(at(1))) == 1
            assert "'broken'" in caplog.text
            caplog.clear()
            assert len(await sched.tick(at(2))) == 1
            assert caplog.text == ""  # said once, not at every tick
        assert slots(await executions(h)) == [at(1), at(2)]


class LosingService(Service):
    """Loses every start to another node the way a racing insert can: a database error."""

    def __init__(self, winner: Service) -> None:
        super().__init__(winner.store, winner.definitions, winner.engine, winner.clock)
        self.winner = winner

    async def start_or_find(self, *args: Any, **kwargs: Any) -> tuple[ExecutionRecord, bool]:
        await self.winner.start_or_find(*args, **kwargs)
        raise RuntimeError("duplicate key value violates unique constraint")


class FailingOnceService(Service):
    def __init__(self, real: Service) -> None:
        super().__init__(real.store, real.definitions, real.engine, real.clock)
        self.failures = 1

    async def start_or_find(self, *args: Any, **kwargs: Any) -> tuple[ExecutionRecord, bool]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database unreachable")
        return await super().start_or_find(*args, **kwargs)


async def test_a_database_error_for_a_slot_another_node_took_counts_as_taken(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly()))
        sched = Scheduler(store, LosingService(h.service), h.service.definitions, h.clock)
        with caplog.at_level(logging.ERROR, logger="execflow.scheduler"):
            assert await sched.tick(at(1)) == []
        assert caplog.records == []
        assert slots(await executions(h)) == [at(1)]


async def test_a_failed_start_is_tried_again_on_the_next_tick(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly(missed="catch_up")))
        sched = Scheduler(store, FailingOnceService(h.service), h.service.definitions, h.clock)
        with caplog.at_level(logging.ERROR, logger="execflow.scheduler"):
            assert await sched.tick(at(2)) == []
        assert "database unreachable" in caplog.text
        assert len(await sched.tick(at(2))) == 2
        assert slots(await executions(h)) == [at(1), at(2)]


class Observed(Scheduler):
    ticked: asyncio.Event

    async def tick(self, now: datetime | None = None) -> list[str]:
        started = await super().tick(now)
        self.ticked.set()
        return started


async def test_the_loop_ticks_at_start_and_when_poked(store: Store) -> None:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(workflow(hourly()))
        sched = Observed(store, h.service, h.service.definitions, h.clock, poll_seconds=3600)
        sched.ticked = asyncio.Event()
        sched.start()
        try:
            await asyncio.wait_for(sched.ticked.wait(), 10)
            assert await executions(h) == []
            sched.ticked.clear()
            clock(h).set(at(1))
            sched.poke()
            await asyncio.wait_for(sched.ticked.wait(), 10)
            assert slots(await executions(h)) == [at(1)]
        finally:
            await sched.stop()


def test_schedules_are_on_unless_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXECFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("EXECFLOW_SCHEDULES", raising=False)
    assert Settings.from_env(data_dir=tmp_path).schedules
    runtime = Runtime.build(Settings(data_dir=tmp_path))
    runtime.store.close()
    assert isinstance(runtime.scheduler, Scheduler)
    monkeypatch.setenv("EXECFLOW_SCHEDULES", "off")
    settings = Settings.from_env(data_dir=tmp_path)
    runtime = Runtime.build(settings)
    runtime.store.close()
    assert runtime.scheduler is None
    monkeypatch.setenv("EXECFLOW_SCHEDULES", "sometimes")
    with pytest.raises(ValueError, match="EXECFLOW_SCHEDULES"):
        Settings.from_env(data_dir=tmp_path)
