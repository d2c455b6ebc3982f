"""Parking: executions that only wait leave the engine's memory and come back when woken."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from execflow.clock import ManualClock
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from execflow.store import schema as s
from tests.harness import Harness, harness

E = ExecutionState

WAITS = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
SLEEPS = {
    "name": "sleeps",
    "tasks": {
        "nap": {"action": "sleep", "with": {"duration": "5m"}},
        "after": {"action": "echo", "needs": ["nap"], "with": {"at": "${{ tasks.nap.output }}"}},
    },
}


def parking(
    store: Store, clock: ManualClock, node_id: str = "test-node"
) -> AbstractAsyncContextManager[Harness]:
    """A node that parks what waits more than 2 s, polling each second (as a server does)."""
    return harness(store, clock, node_id=node_id, park_after=2.0, poll_seconds=1.0)


def parked(store: Store, execution_id: str) -> tuple[str | None, datetime | None]:
    """The lease owner and wake-up time of an execution, as stored."""
    e = s.executions
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(e.c.lease_owner, e.c.wake_at).where(e.c.id == execution_id)
        ).one()
    return row[0], row[1]


async def state(h: Harness, execution_id: str) -> ExecutionState:
    return (await h.service.get_execution(h.admin, execution_id)).state


async def test_executions_waiting_for_a_signal_leave_memory_and_complete_when_signalled(
    store: Store,
) -> None:
    async with parking(store, ManualClock()) as h:
        await h.apply(WAITS)
        ids = [(await h.service.start(h.admin, "waits")).id for _ in range(200)]
        await h.engine.run_until_idle()
        assert h.engine.runs == {}
        assert len(h.engine._timers) == 0
        assert await state(h, ids[0]) == E.WAITING_ON_SIGNAL  # its real state, as ever
        assert parked(store, ids[0])[0] is None
        for execution_id in ids:
            await h.service.signal(h.admin, execution_id, "go", {"n": 1})
        await h.engine.run_until_idle()
        for execution_id in ids:
            ex = await h.service.get_execution(h.admin, execution_id)
            assert ex.state == E.COMPLETED
            assert ex.task_runs[0].output == {"n": 1}
            assert parked(store, execution_id) == (None, None)
        assert h.engine.runs == {}


async def test_a_long_sleep_parks_and_wakes_on_time(store: Store) -> None:
    clock = ManualClock()
    async with parking(store, clock) as h:
        await h.apply(SLEEPS)
        started = await h.service.start(h.admin, "sleeps")
        due = started.started_at + timedelta(minutes=5)
        await h.engine.run_until_idle()
        assert h.engine.runs == {}
        assert await state(h, started.id) == E.WAITING
        owner, wake_at = parked(store, started.id)
        assert owner is None and wake_at is not None and wake_at < due  # claimed a poll early
        clock.set(due - timedelta(seconds=3))
        await h.engine.run_until_idle()
        assert h.engine.runs == {}  # not due yet: nothing claimed
        clock.set(due - timedelta(seconds=0.5))
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == E.COMPLETED
        assert ex.task_runs[0].output == {"woke_at": due.isoformat()}  # on time, not a poll late


async def test_a_short_sleep_is_not_parked(store: Store) -> None:
    wf = {"name": "naps", "tasks": {"nap": {"action": "sleep", "with": {"duration": 1}}}}
    async with parking(store, ManualClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "naps")
        await h.engine.tick()
        assert started.id in h.engine.runs
        assert parked(store, started.id)[0] == "test-node"
        await h.engine.run_until_idle()
        assert await state(h, started.id) == E.COMPLETED


async def test_a_parent_waiting_for_its_child_parks_and_wakes_when_the_child_ends(
    store: Store,
) -> None:
    parent = {
        "name": "parent",
        "tasks": {"call": {"action": "workflow", "with": {"workflow": "waits"}}},
        "outputs": {"got": "${{ tasks.call.output }}"},
    }
    async with parking(store, ManualClock()) as h:
        await h.apply(WAITS)
        await h.apply(parent)
        started = await h.service.start(h.admin, "parent")
        await h.engine.run_until_idle()
        assert h.engine.runs == {}  # the parent waits for its child, the child for a signal
        ex = await h.service.get_execution(h.admin, started.id)
        child = ex.task_runs[0].waiting["child"]  # type: ignore[index]
        assert ex.state == E.RUNNING
        await h.service.signal(h.admin, child, "go", {"answer": 42})
        await h.engine.run_until_idle()
        assert await state(h, child) == E.COMPLETED
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == E.COMPLETED
        assert ex.outputs == {"got": {}}
        assert h.engine.runs == {}


async def test_a_parked_execution_can_be_cancelled_suspended_and_resumed(store: Store) -> None:
    async with parking(store, ManualClock()) as h:
        await h.apply(WAITS)
        a = (await h.service.start(h.admin, "waits")).id
        b = (await h.service.start(h.admin, "waits")).id
        await h.engine.run_until_idle()
        assert h.engine.runs == {}
        await h.service.cancel(h.admin, a)
        await h.service.suspend(h.admin, b)
        await h.engine.run_until_idle()
        assert await state(h, a) == E.CANCELED
        assert await state(h, b) == E.SUSPENDED
        assert h.engine.runs == {}  # a suspended execution waits for a resume: parked too
        await h.service.resume(h.admin, b)
        await h.engine.run_until_idle()
        assert await state(h, b) == E.WAITING_ON_SIGNAL
        await h.service.signal(h.admin, b, "go", {})
        await h.engine.run_until_idle()
        assert await state(h, b) == E.COMPLETED


async def test_a_new_engine_on_the_same_store_wakes_parked_executions_on_time(
    store: Store,
) -> None:
    clock = ManualClock()
    async with parking(store, clock, node_id="old") as old:
        await old.apply(SLEEPS)
        started = await old.service.start(old.admin, "sleeps")
        await old.engine.run_until_idle()
        assert old.engine.runs == {}
    due = started.started_at + timedelta(minutes=5)
    async with parking(store, clock, node_id="new") as new:
        await new.engine.run_until_idle()
        assert new.engine.runs == {}
        clock.set(due - timedelta(seconds=0.5))
        await new.engine.run_until_idle()
        ex = await new.service.get_execution(new.admin, started.id)
        assert ex.state == E.COMPLETED
        assert ex.task_runs[0].output == {"woke_at": due.isoformat()}


async def test_a_parked_execution_is_woken_once_with_two_engines(store: Store) -> None:
    clock = ManualClock()
    async with (
        parking(store, clock, node_id="a") as a,
        parking(store, clock, node_id="b") as b,
    ):
        await a.apply(WAITS)
        ids = [(await a.service.start(a.admin, "waits")).id for _ in range(20)]
        await a.engine.run_until_idle()
        assert a.engine.runs == {}
        ended: dict[str, list[str]] = {}

        def recorder(node: str) -> Any:
            def record(execution_id: str, state: ExecutionState) -> None:
                if state.terminal:
                    ended.setdefault(execution_id, []).append(node)

            return record

        for h in (a, b):
            h.engine.listeners.append(recorder(h.engine.node_id))
        for execution_id in ids:
            await a.service.signal(a.admin, execution_id, "go", {})
        b.engine.poke()  # (another node's requests reach it at its poll)
        for _ in range(3):
            await b.engine.tick()
            await a.engine.tick()
        await a.engine.run_until_idle()
        await b.engine.run_until_idle()
        assert sorted(ended) == sorted(ids)
        assert all(len(nodes) == 1 for nodes in ended.values())
        for execution_id in ids:
            ex = await a.service.get_execution(a.admin, execution_id)
            assert ex.state == E.COMPLETED
            assert [(t.attempt, t.state) for t in ex.task_runs] == [(1, TaskRunState.COMPLETED)]
            logs = await a.service.logs(a.admin, execution_id)
            assert [e.message for e in logs].count("signal go received") == 1
