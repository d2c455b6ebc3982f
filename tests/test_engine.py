"""The engine, driven until idle: ordering, parallelism, retries, timeouts, cancel, recovery."""

from __future__ import annotations

from typing import Any

from execflow.store import Store
from tests.harness import harness


def seq(n: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {"t0": {"action": "echo", "with": {"i": 0}}}
    for i in range(1, n):
        tasks[f"t{i}"] = {
            "action": "echo",
            "needs": [f"t{i - 1}"],
            "with": {"i": f"${{{{ tasks.t{i - 1}.output.i + 1 }}}}"},
        }
    return {
        "name": f"seq{n}",
        "tasks": tasks,
        "outputs": {"last": f"${{{{ tasks.t{n - 1}.output.i }}}}"},
    }


async def test_sequential_echo_completes_with_outputs(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(seq(5))
        ex = await h.run("seq5")
        assert ex.state == "COMPLETED"
        assert ex.outputs == {"last": 4}
        assert [t.task_id for t in ex.task_runs] == ["t0", "t1", "t2", "t3", "t4"]
        assert all(t.state == "COMPLETED" for t in ex.task_runs)
