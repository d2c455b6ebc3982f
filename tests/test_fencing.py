"""Fencing: a node that may have lost executions to another (it was paused, or cut off from
the database) starts nothing of theirs, and learns at its next renewal what it still holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from execflow.clock import ManualClock, SystemClock
from execflow.executors import LocalExecutor, NotStarted
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.harness import harness
from tests.test_engine import attempts, py

E = ExecutionState


def _two_slow(tmp_path: Path) -> dict[str, Any]:
    """Two tasks that each write their worker's pid to a file, then take a second."""
    return {
        "name": "two-slow",
        "tasks": {
            name: py("slow", args={"seconds": 1, "marker": str(tmp_path / name)})
            for name in ("p1", "p2")
        },
    }


async def _until(what: str, check: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_paused_node_does_not_start_what_waited_for_a_worker(
    store: Store, tmp_path: Path
) -> None:
    """Node a has one worker for two tasks: the second waits, queued. a is paused past its
    lease (the clock moves, a does not tick) and b takes the execution over. When a's worker
    frees, a does not start the second task: starting it is a write its lease no longer
    allows."""
    clock = ManualClock()
    async with harness(store, clock, node_id="a", workers=1) as a:
        await a.apply(_two_slow(tmp_path))
        started = await a.service.start(a.admin, "two-slow")
        await a.engine.tick()
        await _until("p1 to start on a", (tmp_path / "p1").exists)
        a_workers = {w.proc.pid for w in a.engine.executor._all}
        ex = await a.service.get_execution(a.admin, started.id)
        queued = [t for t in ex.task_runs if t.task_id == "p2"]
        assert queued[0].waiting == {"queued": True} and queued[0].started_at is None
        clock.advance(31)  # a was paused past its lease
        async with harness(store, clock, node_id="b", workers=2) as b:
            b.engine.poke()
            await b.engine.tick()
            assert started.id in b.engine.runs
            await _until("a's first task to end", lambda: a.engine._results)
            await a.engine.tick()  # a finds the execution is not its own any more
            assert started.id not in a.engine.runs
            assert not a.engine._inflight
            await b.engine.run_until_idle()
            ex = await b.service.get_execution(b.admin, started.id)
            assert ex.state == E.COMPLETED
            # p2 ran once, on b, and was never lost: it never reached a's worker
            assert int((tmp_path / "p2").read_text()) not in a_workers
            assert attempts(ex, "p2") == [(1, TaskRunState.COMPLETED)]
            # a's late result of p1 is in the audit log, ignored
            logs = await b.service.logs(b.admin, started.id)
            assert any("came to node a" in e.message and e.task_id == "p1" for e in logs)


async def test_a_task_waiting_for_a_worker_is_handed_over_not_lost(
    store: Store, tmp_path: Path
) -> None:
    """A crash while attempts wait for a worker: the one that ran is `lost` and runs again;
    those that never reached a worker are queued again by the next owner, as they were."""
    wf = {
        "name": "three-slow",
        "tasks": {
            name: py("slow", args={"seconds": 1, "marker": str(tmp_path / name)})
            for name in ("p1", "p2", "p3")
        },
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="a", workers=1) as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "three-slow")
        await a.engine.tick()
        await _until("p1 to start", (tmp_path / "p1").exists)
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b", workers=2) as b:
        b.engine.poke()
        await b.engine.run_until_idle()
        ex = await b.service.get_execution(b.admin, started.id)
        assert ex.state == E.COMPLETED
        assert attempts(ex, "p1") == [(1, TaskRunState.FAILED), (2, TaskRunState.COMPLETED)]
        assert attempts(ex, "p2") == [(1, TaskRunState.COMPLETED)]
        assert attempts(ex, "p3") == [(1, TaskRunState.COMPLETED)]
        assert all(t.waiting is None for t in ex.task_runs)


async def test_a_cancel_ends_queued_attempts_at_once(store: Store, tmp_path: Path) -> None:
    """A graceful cancel lets running tasks finish; a queued one has nothing to finish."""
    async with harness(store, SystemClock(), workers=1) as h:
        await h.apply(_two_slow(tmp_path))
        started = await h.service.start(h.admin, "two-slow")
        await h.engine.tick()
        await h.service.cancel(h.admin, started.id)
        await h.engine.tick()
        ex = await h.service.get_execution(h.admin, started.id)
        assert attempts(ex, "p2") == [(1, TaskRunState.CANCELED)]
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == E.CANCELED
        assert attempts(ex, "p1") == [(1, TaskRunState.COMPLETED)]
        assert not (tmp_path / "p2").exists()


async def test_a_suspended_execution_keeps_its_queued_attempt_for_the_resume(
    store: Store, tmp_path: Path
) -> None:
    """Suspended while p2 waits for the one worker: p2 does not start, not after a crash and
    a restart either (queued again, not lost), and the resume starts it."""
    clock = ManualClock()
    async with harness(store, clock, workers=1) as a:
        await a.apply(_two_slow(tmp_path))
        started = await a.service.start(a.admin, "two-slow")
        await a.engine.tick()
        await a.service.suspend(a.admin, started.id)
        await a.engine.tick()
        await _until("p1 to start", (tmp_path / "p1").exists)
        await a.crash()
    async with harness(store, clock, workers=1) as b:
        await b.engine.run_until_idle()
        ex = await b.service.get_execution(b.admin, started.id)
        assert ex.state == E.SUSPENDED
        p2 = [t for t in ex.task_runs if t.task_id == "p2"]
        assert [(t.attempt, t.state, t.waiting, t.started_at) for t in p2] == [
            (1, TaskRunState.RUNNING, {"queued": True}, None)
        ]
        assert [w.key for w in b.engine._pool] == [(started.id, "p2", 1)]
        assert not (tmp_path / "p2").exists()
        await b.service.resume(b.admin, started.id)
        await b.engine.run_until_idle()
        ex = await b.service.get_execution(b.admin, started.id)
        assert ex.state == E.COMPLETED
        assert attempts(ex, "p1") == [(1, TaskRunState.FAILED), (2, TaskRunState.COMPLETED)]
        assert attempts(ex, "p2") == [(1, TaskRunState.COMPLETED)]


async def test_the_pool_turns_away_a_task_its_engine_cannot_vouch_for() -> None:
    """Asked when a worker frees, not when the task was queued."""
    executor = LocalExecutor(1)
    await executor.start()
    try:
        with pytest.raises(NotStarted):
            await executor.run(
                "python", {"function": "tests.fixtures.tasks:add"}, may_start=lambda: False
            )
        outcome = await executor.run(
            "python",
            {"function": "tests.fixtures.tasks:add", "args": {"a": 1, "b": 2}},
            may_start=lambda: True,
        )
        assert outcome.ok and outcome.output == 3
    finally:
        await executor.close()


async def test_a_node_drops_what_it_no_longer_holds_at_its_next_renewal(store: Store) -> None:
    """Renewal names the leases still held; the engine forgets the others before anything
    else, instead of finding out execution by execution when a write fails."""
    wf = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        ids = [(await a.service.start(a.admin, "waits")).id for _ in range(3)]
        await a.engine.run_until_idle()
        assert set(a.engine.runs) == set(ids)
        clock.advance(31)
        async with harness(store, clock, node_id="b") as b:
            b.engine.poke()
            await b.engine.tick()
            assert set(b.engine.runs) == set(ids)
            await a.engine.tick()
            assert a.engine.runs == {}
            for execution_id in ids:
                await b.service.signal(b.admin, execution_id, "go", {})
            await b.engine.run_until_idle()
            for execution_id in ids:
                ex = await b.service.get_execution(b.admin, execution_id)
                assert ex.state == E.COMPLETED


async def test_a_crashed_node_is_taken_over_after_its_heartbeat_not_its_leases(
    store: Store,
) -> None:
    """Leases last 30 s; a node that stops beating loses its executions after 9."""
    wf = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        ids = [(await a.service.start(a.admin, "waits")).id for _ in range(3)]
        await a.engine.run_until_idle()
        await a.crash()
    clock.advance(8)
    async with harness(store, clock, node_id="b") as b:
        b.engine.poke()
        await b.engine.tick()
        assert b.engine.runs == {}  # a's heartbeat has not expired yet
        clock.advance(2)
        b.engine.poke()
        await b.engine.tick()
        assert set(b.engine.runs) == set(ids)
        for execution_id in ids:
            await b.service.signal(b.admin, execution_id, "go", {})
        await b.engine.run_until_idle()
        for execution_id in ids:
            assert (await b.service.get_execution(b.admin, execution_id)).state == E.COMPLETED


async def test_a_node_that_starts_gets_its_share_handed_over(store: Store) -> None:
    """A node holding everything hands idle executions over, at its next heartbeat, to a
    node that starts with nothing; never two owners, and all of them complete."""
    wf = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        ids = [(await a.service.start(a.admin, "waits")).id for _ in range(10)]
        await a.engine.run_until_idle()
        assert len(a.engine.runs) == 10
        async with harness(store, clock, node_id="b") as b:
            await b.engine.tick()  # b beats, finds a holds 10 of 10, asks for 5
            assert b.engine.runs == {}
            clock.advance(4)
            await a.engine.tick()  # a's heartbeat hears the request
            await a.engine.tick()  # and gives the leases back
            assert len(a.engine.runs) == 5
            b.engine.poke()
            await b.engine.tick()
            assert len(b.engine.runs) == 5
            assert not set(a.engine.runs) & set(b.engine.runs)
            for execution_id in ids:
                await a.service.signal(a.admin, execution_id, "go", {})
            b.engine.notify()  # (another node's requests reach it at its poll)
            await asyncio.gather(a.engine.run_until_idle(), b.engine.run_until_idle())
            for execution_id in ids:
                ex = await a.service.get_execution(a.admin, execution_id)
                assert ex.state == E.COMPLETED
