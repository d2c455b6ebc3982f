"""Fencing: a node that may have lost executions to another (it was paused, or cut off from
the database) starts nothing of theirs, and learns at its next renewal what it still holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from execflow.clock import ManualClock
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
    """Node a hands two tasks to its one worker; the second waits. a is paused past its
    lease (the clock moves, a does not tick) and b takes the execution over. When a's
    worker frees, a does not start the second task: it cannot vouch for its lease."""
    clock = ManualClock()
    async with harness(store, clock, node_id="a", workers=1) as a:
        await a.apply(_two_slow(tmp_path))
        started = await a.service.start(a.admin, "two-slow")
        await a.engine.tick()
        await _until("p1 to start on a", (tmp_path / "p1").exists)
        a_workers = {w.proc.pid for w in a.engine.executor._all}
        clock.advance(31)  # a was paused past its lease
        async with harness(store, clock, node_id="b", workers=2) as b:
            b.engine.poke()
            await b.engine.tick()
            assert started.id in b.engine.runs
            # a's worker frees: the waiting attempt is not started on a
            await _until("a's waiting attempt to be turned away", lambda: a.engine._unstarted)
            await a.engine.tick()  # a renews: the execution is not a's any more
            assert started.id not in a.engine.runs
            assert not a.engine._inflight
            await b.engine.run_until_idle()
            ex = await b.service.get_execution(b.admin, started.id)
            assert ex.state == E.COMPLETED
            # p2 ran once, on b: never on a
            assert int((tmp_path / "p2").read_text()) not in a_workers
            assert [s for _, s in attempts(ex, "p2")] == [
                TaskRunState.FAILED,
                TaskRunState.COMPLETED,
            ]


async def test_an_attempt_turned_away_starts_once_the_lease_is_confirmed(
    store: Store, tmp_path: Path
) -> None:
    """Paused past its lease with nobody taking over: the waiting attempt is not started at
    once, but right after the next renewal confirms the lease; nothing is lost."""
    clock = ManualClock()
    async with harness(store, clock, node_id="a", workers=1) as a:
        await a.apply(_two_slow(tmp_path))
        started = await a.service.start(a.admin, "two-slow")
        await a.engine.tick()
        await _until("p1 to start", (tmp_path / "p1").exists)
        clock.advance(31)
        await _until("the waiting attempt to be turned away", lambda: a.engine._unstarted)
        await a.engine.run_until_idle()
        ex = await a.service.get_execution(a.admin, started.id)
        assert ex.state == E.COMPLETED
        assert attempts(ex, "p2") == [(1, TaskRunState.COMPLETED)]


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
