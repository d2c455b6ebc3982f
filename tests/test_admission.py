"""A workflow's `concurrency`: how many of its executions run at once; the others wait, in
order, visibly, across nodes and takeovers; a bad limit is refused at the door."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from execflow.clock import ManualClock
from execflow.records import ExecutionRecord
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from execflow.store import schema as s
from execflow.store.admissions import Waiting, admit
from tests.harness import Harness, harness
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_workflows import assert_error

E = ExecutionState


def _sleepy(limit: Any) -> dict[str, Any]:
    return {
        "name": "deploy",
        "concurrency": limit,
        "tasks": {"wait": {"action": "sleep", "with": {"duration": "10s"}}},
    }


GATE: dict[str, Any] = {
    "name": "gate",
    "concurrency": 1,
    "tasks": {"go": {"action": "signal", "with": {"name": "go"}}},
}


async def _start(h: Harness, workflow: str, count: int) -> list[str]:
    """Start executions a millisecond apart (the order they wait in)."""
    ids = []
    for _ in range(count):
        ids.append((await h.service.start(h.admin, workflow)).id)
        h.clock.advance(0.001)  # type: ignore[attr-defined]
    return ids


async def _get(h: Harness, execution_id: str) -> ExecutionRecord:
    return await h.service.get_execution(h.admin, execution_id)


async def _messages(h: Harness, execution_id: str) -> list[str]:
    return [e.message for e in await h.store.read(h.store.list_events, execution_id)]


async def test_at_most_the_limit_runs_and_the_others_wait_visibly_then_start_in_order(
    store: Store,
) -> None:
    async with harness(store) as h:
        await h.apply(_sleepy(2))
        ids = await _start(h, "deploy", 5)
        await h.engine.tick()
        states = [(await _get(h, i)).state for i in ids]
        assert states == [E.WAITING] * 5  # two sleep, three wait for a slot
        assert [len((await _get(h, i)).task_runs) for i in ids] == [1, 1, 0, 0, 0]
        definition = await h.service.definition_of(await _get(h, ids[0]))
        lines = [await h.service.admission_of(await _get(h, i), definition) for i in ids]
        assert [(a.waiting, a.ahead) for a in lines if a] == [
            (False, 0),
            (False, 0),
            (True, 0),
            (True, 1),
            (True, 2),
        ]
        assert any("waits for a slot" in m for m in await _messages(h, ids[4]))
        await h.engine.run_until_idle()
        runs = [(await _get(h, i)).task_runs[0] for i in ids]
        assert all(r.state is TaskRunState.COMPLETED for r in runs)
        starts = [r.started_at for r in runs if r.started_at is not None]
        assert len(starts) == 5
        # two at a time, oldest first: each waited for a slot the earlier ones freed
        assert starts[0] == starts[1] < starts[2] == starts[3] < starts[4]
        assert starts[2] - starts[0] == timedelta(seconds=10)
        assert any("execution admitted" in m for m in await _messages(h, ids[4]))
        assert [(await _get(h, i)).state for i in ids] == [E.COMPLETED] * len(ids)


async def test_a_cancelled_execution_frees_its_slot_and_a_retried_one_queues_again(
    store: Store,
) -> None:
    async with harness(store) as h:
        await h.apply(GATE)
        first, second = await _start(h, "gate", 2)
        await h.engine.run_until_idle()
        assert (await _get(h, second)).task_runs == ()  # waits for first's slot
        await h.service.cancel(h.admin, first)
        await h.engine.run_until_idle()
        assert (await _get(h, first)).state is E.CANCELED
        assert [t.task_id for t in (await _get(h, second)).task_runs] == ["go"]
        await h.service.retry(h.admin, first)
        await h.engine.run_until_idle()
        again = await _get(h, first)
        assert again.state is E.WAITING and again.round == 1
        assert [t.state for t in again.task_runs] == [TaskRunState.CANCELED]  # round 0's
        await h.service.signal(h.admin, second, "go", {})
        await h.engine.run_until_idle()
        assert (await _get(h, second)).state is E.COMPLETED
        await h.service.signal(h.admin, first, "go", {})
        await h.engine.run_until_idle()
        assert (await _get(h, first)).state is E.COMPLETED


async def test_a_suspended_execution_is_passed_over_until_it_is_resumed(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(GATE)
        first, second, third = await _start(h, "gate", 3)
        await h.engine.run_until_idle()
        await h.service.suspend(h.admin, second)
        await h.engine.run_until_idle()
        assert (await _get(h, second)).state is E.SUSPENDED
        await h.service.signal(h.admin, first, "go", {})
        await h.engine.run_until_idle()
        assert (await _get(h, third)).state is E.WAITING_ON_SIGNAL  # second was passed over
        await h.service.resume(h.admin, second)
        await h.engine.run_until_idle()
        assert (await _get(h, second)).state is E.WAITING  # in the line, ahead of later ones
        await h.service.signal(h.admin, third, "go", {})
        await h.engine.run_until_idle()
        assert (await _get(h, second)).state is E.WAITING_ON_SIGNAL


async def test_a_node_that_takes_over_keeps_the_line(store: Store) -> None:
    """Node a crashes holding one execution that runs and two that wait; node b takes them
    over and starts one more: the one that ran keeps its slot, the others start in order."""
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(GATE)
        ids = await _start(a, "gate", 3)
        await a.engine.run_until_idle()
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        b.engine.poke()
        await b.engine.run_until_idle()
        ids += await _start(b, "gate", 1)
        await b.engine.run_until_idle()
        order = []
        for _ in ids:
            running = [i for i in ids if (await _get(b, i)).task_runs and i not in order]
            assert len(running) == 1, running  # one at a time
            order += running
            await b.service.signal(b.admin, running[0], "go", {})
            await b.engine.run_until_idle()
        assert order == ids
        assert [(await _get(b, i)).state for i in ids] == [E.COMPLETED] * len(ids)


async def test_the_line_is_one_for_every_node(store: Store) -> None:
    """Nodes admit from one line in the store: the limit holds across them, and a slot
    freed goes to the oldest waiting, whichever node holds it."""
    async with harness(store) as h:
        await h.apply(GATE)
        e1, e2, e3 = await _start(h, "gate", 3)  # not ticked: nobody asked for a slot yet
        wid = (await _get(h, e1)).workflow_id
        now = h.clock.now()

        def waiting(eid: str, offset: int) -> Waiting:
            return Waiting(eid, 0, 1, now - timedelta(milliseconds=3 - offset))

        assert admit(store, wid, [waiting(e1, 0)], now) == {e1}  # node A
        assert admit(store, wid, [waiting(e3, 2)], now) == set()  # node B: e1 holds it
        assert admit(store, wid, [waiting(e2, 1)], now) == set()  # node A again
        with store.engine.begin() as conn:  # e1 ends
            e = s.executions
            conn.execute(e.update().where(e.c.id == e1).values(state=E.COMPLETED.value))
        assert admit(store, wid, [waiting(e3, 2)], now) == set()  # e2 is older: B waits
        assert admit(store, wid, [waiting(e2, 1)], now) == {e2}


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        (0, "greater than or equal to 1"),
        (-3, "greater than or equal to 1"),
        (10_001, "less than or equal to 10000"),
        ("2", "valid integer"),
        (True, "valid integer"),
        (1.5, "valid integer"),
    ],
)
async def test_a_bad_concurrency_is_refused_naming_it_and_stores_nothing(
    api: Api, limit: Any, reason: str
) -> None:
    r = await api.client.put("/api/v1/workflows/deploy", json=_sleepy(limit), headers=api.auth())
    error = assert_error(r, 422)
    [detail] = error["details"]
    assert detail["pointer"] == "/concurrency" and reason in detail["reason"], detail
    assert_error(await api.client.get("/api/v1/workflows/deploy", headers=api.auth()), 404)


async def test_an_execution_shows_where_it_stands_in_the_line(api: Api) -> None:
    r = await api.client.put("/api/v1/workflows/gate", json=GATE, headers=api.auth())
    assert r.status_code == 201, r.text
    ids = []
    for _ in range(3):
        r = await api.client.post("/api/v1/workflows/gate/executions", json={}, headers=api.auth())
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    await api.idle()
    shown = []
    for i in ids:
        r = await api.client.get(f"/api/v1/executions/{i}", headers=api.auth())
        body = r.json()
        shown.append((body["state"], body["concurrency"]["waiting"], body["concurrency"]["ahead"]))
    assert shown == [
        ("WAITING_ON_SIGNAL", False, 0),
        ("WAITING", True, 0),
        ("WAITING", True, 1),
    ]
    r = await api.client.post(
        f"/api/v1/executions/{ids[0]}/signals/go", json={}, headers=api.auth()
    )
    assert r.status_code in (200, 202), r.text
    await api.idle()
    r = await api.client.get(f"/api/v1/executions/{ids[1]}", headers=api.auth())
    assert r.json()["state"] == "WAITING_ON_SIGNAL"
    assert r.json()["concurrency"] == {
        "limit": 1,
        "waiting": False,
        "ahead": 0,
        "since": r.json()["concurrency"]["since"],
    }
    r = await api.client.get(f"/api/v1/executions/{ids[0]}", headers=api.auth())
    assert r.json()["state"] == "COMPLETED"
    assert r.json()["concurrency"] == {"limit": 1, "waiting": False, "ahead": None, "since": None}


async def test_nodes_asking_at_the_same_moment_admit_no_more_than_the_limit(
    store: Store,
) -> None:
    """Ten nodes, each holding one waiting execution, ask at once (threads, one
    transaction each): two slots, two admitted."""
    async with harness(store) as h:
        await h.apply({**GATE, "concurrency": 2})
        ids = await _start(h, "gate", 10)
        wid = (await _get(h, ids[0])).workflow_id
        now = h.clock.now()
        with ThreadPoolExecutor(len(ids)) as pool:
            answers = list(
                pool.map(lambda eid: admit(store, wid, [Waiting(eid, 0, 2, now)], now), ids)
            )
        assert sum(len(a) for a in answers) == 2
