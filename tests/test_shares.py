"""Fair shares of the worker pool between projects: the rules, then the engine keeping them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from execflow.clock import ManualClock, SystemClock
from execflow.engine.shares import PoolShares
from execflow.records import Principal
from execflow.settings import Settings
from execflow.states import ExecutionState
from execflow.store import Store
from tests.harness import Harness, harness
from tests.test_engine import py

# the rules ---------------------------------------------------------------------------


def _pool(
    slots: int, share: float, held: dict[str, int], waiting: dict[str, int]
) -> PoolShares[str]:
    pool: PoolShares[str] = PoolShares(slots, share)
    for project, count in held.items():
        for i in range(count):
            pool.hold((project, i), project)
    for project, count in waiting.items():
        for i in range(count):
            pool.push(project, f"{project}{i}")
    return pool


def _drain(pool: PoolShares[str]) -> list[str]:
    """Hand out every slot that may go now, as the engine does in one tick."""
    out = []
    while (picked := pool.next()) is not None:
        project, waiter = picked
        pool.promise(project)
        out.append(waiter)
    return out


def test_the_next_free_slot_goes_to_the_project_holding_the_fewest() -> None:
    """beta holds every slot and has a backlog; alpha's one waiter is next, not last."""
    pool = _pool(2, 0.5, {"beta": 2}, {"beta": 10})
    pool.push("alpha", "alpha0")
    assert pool.next() is None  # no slot is free: nothing running is taken back
    pool.release(("beta", 0))
    assert pool.next() == ("alpha", "alpha0")


def test_equals_take_turns_and_each_project_keeps_its_order() -> None:
    pool = _pool(4, 1.0, {}, {"alpha": 3, "beta": 3})
    assert _drain(pool) == ["alpha0", "beta0", "alpha1", "beta1"]


def test_a_project_alone_may_use_every_slot() -> None:
    """Work-conserving: nobody is kept waiting for a project with nothing to run."""
    pool = _pool(4, 0.5, {"alpha": 0}, {"beta": 10})
    assert _drain(pool) == ["beta0", "beta1", "beta2", "beta3"]
    assert pool.free() == 0


def test_a_share_is_kept_for_a_project_that_runs_something() -> None:
    """alpha runs one task and waits for nothing: beta takes no more than its share (2 of
    4), so alpha's next task finds a free slot at once."""
    pool = _pool(4, 0.5, {"alpha": 1}, {"beta": 10})
    assert _drain(pool) == ["beta0", "beta1"]
    assert pool.free() == 1
    pool.push("alpha", "alpha-next")
    assert _drain(pool) == ["alpha-next"]


def test_when_every_project_waits_no_slot_idles_for_a_share() -> None:
    """Both at their share and both waiting: the free slot goes out all the same."""
    pool = _pool(5, 0.4, {"alpha": 2, "beta": 2}, {"alpha": 3, "beta": 3})
    assert pool.cap == 2
    assert len(_drain(pool)) == 1


def test_promises_count_until_the_next_tick() -> None:
    pool = _pool(2, 1.0, {}, {"beta": 3})
    assert _drain(pool) == ["beta0", "beta1"]
    assert pool.using("beta") == 2 and pool.free() == 0
    pool.forget_promises()  # the tick was written; the engine now holds those two
    assert pool.using("beta") == 0 and pool.free() == 2


@pytest.mark.parametrize(("slots", "share"), [(0, 0.5), (2, 0.0), (2, 1.5), (2, float("nan"))])
def test_a_pool_refuses_a_meaningless_size_or_share(slots: int, share: float) -> None:
    with pytest.raises(ValueError):
        PoolShares(slots, share)


@pytest.mark.parametrize("value", ["0", "-0.5", "1.01", "half", "nan", "inf"])
def test_the_setting_names_itself_for_a_bad_share(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("EXECFLOW_PROJECT_POOL_SHARE", value)
    with pytest.raises(ValueError, match="EXECFLOW_PROJECT_POOL_SHARE"):
        Settings.from_env()


def test_the_setting_reads_a_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().project_pool_share == 0.5
    monkeypatch.setenv("EXECFLOW_PROJECT_POOL_SHARE", "0.75")
    assert Settings.from_env().project_pool_share == 0.75


# the engine ----------------------------------------------------------------------------


async def _admin_of(h: Harness, project: str) -> Principal:
    now = h.clock.now()
    project_id = h.store.ensure_project(project, now)
    _, secret = h.store.create_token(project_id, "admin", now)
    return await h.service.authenticate(secret)


def _job(ledger: Path, seconds: float) -> dict[str, Any]:
    """One python task that writes who it runs for to a ledger as it starts."""
    args = {"path": str(ledger), "execution": "${{ params.who }}", "task": "t", "seconds": seconds}
    return {
        "name": "job",
        "parameters": {"who": {"type": "string", "required": True}},
        "tasks": {"t": py("ledger", args=args)},
    }


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def _order(ledger: Path) -> list[str]:
    return [line.split()[1] for line in ledger.read_text().splitlines()]


async def test_a_project_starts_promptly_while_another_fills_the_pool(
    store: Store, tmp_path: Path
) -> None:
    """beta's twelve tasks fill both workers and queue; alpha's one task takes the first
    worker that frees, not a place behind beta's backlog."""
    ledger = tmp_path / "ledger"
    async with harness(store, SystemClock(), workers=2) as h:
        alpha, beta = await _admin_of(h, "alpha"), await _admin_of(h, "beta")
        for who in (alpha, beta):
            await h.service.put_workflow(who, "job", _job(ledger, 0.3))
        betas = [await h.service.start(beta, "job", {"who": f"beta{i}"}) for i in range(12)]
        await h.engine.tick()  # two of beta's run, ten wait
        started = await h.service.start(alpha, "job", {"who": "alpha"})
        await h.engine.run_until_idle()
        assert _order(ledger).index("alpha") == 2
        ex = await h.service.get_execution(alpha, started.id)
        assert ex.state == ExecutionState.COMPLETED
        # it started as the first of beta's tasks ended, before the ten queued ahead of it
        ends = [(await h.service.get_execution(beta, b.id)).task_runs[0].ended_at for b in betas]
        started_at = ex.task_runs[0].started_at
        assert started_at is not None
        assert sum(1 for end in ends if end is not None and end <= started_at) <= 2
        for b in betas:
            assert (await h.service.get_execution(beta, b.id)).state == ExecutionState.COMPLETED


async def test_a_project_alone_uses_every_worker(store: Store, tmp_path: Path) -> None:
    """Work-conserving: with alpha idle (it ran before), beta's tasks run two at a time."""
    ledger = tmp_path / "ledger"
    async with harness(store, SystemClock(), workers=2) as h:
        alpha, beta = await _admin_of(h, "alpha"), await _admin_of(h, "beta")
        for who in (alpha, beta):
            await h.service.put_workflow(who, "job", _job(ledger, 0.3))
        await h.service.start(alpha, "job", {"who": "alpha"})
        await h.engine.run_until_idle()
        ids = [(await h.service.start(beta, "job", {"who": f"beta{i}"})).id for i in range(4)]
        await h.engine.run_until_idle()
        runs = sorted(
            [(await h.service.get_execution(beta, i)).task_runs[0] for i in ids],
            key=lambda r: r.started_at.timestamp() if r.started_at else 0.0,
        )
        for first, second in ((runs[0], runs[1]), (runs[2], runs[3])):
            assert first.ended_at is not None and second.started_at is not None
            assert second.started_at < first.ended_at  # they ran at the same time


async def test_attempts_queued_again_after_a_crash_keep_fair_shares(
    store: Store, tmp_path: Path
) -> None:
    """Node a (one worker) crashes with beta's task running, beta's five and then alpha's
    one queued. Node b takes them over (four at a time, oldest first, so alpha's comes
    last): alpha's task does not wait behind beta's."""
    ledger = tmp_path / "ledger"
    clock = ManualClock()
    async with harness(store, clock, node_id="a", workers=1) as a:
        alpha, beta = await _admin_of(a, "alpha"), await _admin_of(a, "beta")
        for who in (alpha, beta):
            await a.service.put_workflow(who, "job", _job(ledger, 0.2))
        for i in range(6):
            await a.service.start(beta, "job", {"who": f"beta{i}"})
        await a.engine.tick()
        started = await a.service.start(alpha, "job", {"who": "alpha"})
        await a.engine.tick()
        ex = await a.service.get_execution(alpha, started.id)
        assert ex.task_runs[0].waiting == {"queued": True}
        await _until(ledger.exists)  # beta0 runs on a's worker
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b", workers=1, claim_batch=4) as b:
        b.engine.poke()
        await b.engine.run_until_idle()
        ex = await b.service.get_execution(alpha, started.id)
        assert ex.state == ExecutionState.COMPLETED
        order = _order(ledger)
        assert len(order) == 8  # beta0 ran on a, was lost, and ran again on b
        # on b, alpha's waits for the one task of beta's that took the worker first
        assert order.index("alpha", 1) == 2
