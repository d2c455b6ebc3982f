"""Sub-workflows: a `workflow` task runs a child execution and takes its outputs."""

from __future__ import annotations

from typing import Any

import pytest

from execflow.clock import ManualClock
from execflow.records import ExecutionRecord
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.harness import Harness, harness
from tests.test_control import APPROVAL, get
from tests.test_engine import attempts

E, T = ExecutionState, TaskRunState

CHILD: dict[str, Any] = {
    "name": "child",
    "parameters": {"n": {"type": "integer", "required": True}},
    "tasks": {"double": {"action": "echo", "with": {"v": "${{ params.n * 2 }}"}}},
    "outputs": {"doubled": "${{ tasks.double.output.v }}"},
}
PARENT: dict[str, Any] = {
    "name": "parent",
    "tasks": {
        "call": {"action": "workflow", "with": {"workflow": "child", "inputs": {"n": 21}}},
        "after": {
            "action": "echo",
            "needs": ["call"],
            "with": {"got": "${{ tasks.call.output.doubled }}"},
        },
    },
    "outputs": {"got": "${{ tasks.after.output.got }}"},
}


def calling(workflow: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "caller",
        "tasks": {
            "call": {"action": "workflow", "with": {"workflow": workflow, "inputs": inputs or {}}}
        },
    }


async def child_of(h: Harness, parent: ExecutionRecord, task: str = "call") -> ExecutionRecord:
    run = next(t for t in parent.task_runs if t.task_id == task)
    assert run.waiting is not None
    return await get(h, run.waiting["child"])


async def test_a_child_runs_and_its_outputs_are_the_tasks_output(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(CHILD)
        await h.apply(PARENT)
        ex = await h.run("parent")
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"got": 42})
        child = await child_of(h, ex)
        assert (child.state, child.outputs) == (E.COMPLETED, {"doubled": 42})
        assert (child.parent_id, child.parent_task, child.inputs) == (ex.id, "call", {"n": 21})


async def test_a_failing_child_fails_its_task(store: Store) -> None:
    failing = {
        "name": "child",
        "parameters": {"n": {"type": "integer"}},
        "tasks": {"boom": {"action": "python", "with": {"function": "tests.fixtures.tasks:boom"}}},
    }
    async with harness(store) as h:
        await h.apply(failing)
        await h.apply(PARENT)
        ex = await h.run("parent")
        assert ex.state == E.FAILED
        assert ex.error is not None and ex.error["type"] == "child"
        assert "ended FAILED" in ex.error["message"]


@pytest.mark.parametrize(
    ("wf", "why"),
    [
        (calling("ghost"), "not found"),
        (calling("child", {"n": "x"}), "/inputs/n"),
        (calling("caller"), "nest at most 8 deep"),
    ],
)
async def test_a_child_that_cannot_start_fails_its_task(
    store: Store, wf: dict[str, Any], why: str
) -> None:
    async with harness(store) as h:
        await h.apply(CHILD)
        await h.apply(wf)
        ex = await h.run("caller")
        assert ex.state == E.FAILED
        assert ex.error is not None and why in ex.error["message"], ex.error


async def test_cancelling_or_suspending_the_parent_acts_on_the_child(store: Store) -> None:
    wrapper = {**calling("approval"), "name": "wrapper"}
    async with harness(store) as h:
        await h.apply(APPROVAL)
        await h.apply(wrapper)
        ex = await h.run("wrapper")
        child = await child_of(h, ex)
        assert (ex.state, child.state) == (E.RUNNING, E.WAITING_ON_SIGNAL)

        await h.service.suspend(h.admin, ex.id)
        await h.engine.run_until_idle()
        assert (await get(h, child.id)).state == E.SUSPENDED
        await h.service.resume(h.admin, ex.id)
        await h.engine.run_until_idle()
        assert (await get(h, child.id)).state == E.WAITING_ON_SIGNAL

        await h.service.cancel(h.admin, ex.id, force=True)
        await h.engine.run_until_idle()
        assert (await get(h, ex.id)).state == E.CANCELED
        assert (await get(h, child.id)).state == E.CANCELED


async def test_a_child_completes_its_parent_across_a_crash(store: Store) -> None:
    wrapper = {
        **calling("approval"),
        "name": "wrapper",
        "outputs": {"by": "${{ tasks.call.output.approved_by }}"},
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(APPROVAL)
        await a.apply(wrapper)
        ex = await a.run("wrapper")
        child = await child_of(a, ex)
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        await b.service.signal(b.admin, child.id, "approval", {"approved": True, "by": "ada"})
        await b.engine.run_until_idle()
        ex = await get(b, ex.id)
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"by": "ada"})
        assert attempts(ex, "call") == [(1, T.COMPLETED)]
