"""The engine, driven until idle: ordering, parallelism, retries, timeouts, cancel, recovery."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from execflow.clock import ManualClock, SystemClock
from execflow.engine.run import Run
from execflow.executors import Outcome
from execflow.records import ExecutionRecord
from execflow.service import Service
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.harness import harness

FIXTURES = "tests.fixtures.tasks"


def seq(n: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {"t0": {"action": "echo", "with": {"i": 0}}}
    for i in range(1, n):
        tasks[f"t{i}"] = {
            "action": "echo",
            "needs": [f"t{i - 1}"],
            "with": {"i": f"${{{{ tasks.t{i - 1}.output.i + 1 }}}}"},
        }
    last = f"${{{{ tasks.t{n - 1}.output.i }}}}"
    return {"name": f"seq{n}", "tasks": tasks, "outputs": {"last": last}}


def py(function: str, retry: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "action": "python",
        "with": {"function": f"{FIXTURES}:{function}", "args": kw.pop("args", {})},
    }
    if retry:
        task["retry"] = retry
    task.update(kw)
    return task


def attempts(ex: ExecutionRecord, task: str) -> list[tuple[int, TaskRunState]]:
    return [(t.attempt, t.state) for t in ex.task_runs if t.task_id == task]


async def test_sequential_echo_completes_with_outputs(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(seq(5))
        ex = await h.run("seq5")
        assert ex.state == ExecutionState.COMPLETED
        assert ex.outputs == {"last": 4}
        assert [t.task_id for t in ex.task_runs] == ["t0", "t1", "t2", "t3", "t4"]
        assert all(t.state == TaskRunState.COMPLETED for t in ex.task_runs)
        assert ex.ended_at is not None


async def test_independent_tasks_run_at_the_same_time(store: Store, tmp_path: Path) -> None:
    wf = {
        "name": "diamond",
        "tasks": {
            "a": {"action": "echo"},
            "b": py("slow", needs=["a"], args={"seconds": 0.2}),
            "c": py("slow", needs=["a"], args={"seconds": 0.2}),
            "d": {"action": "echo", "needs": ["b", "c"]},
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "diamond")

        def running(ex: ExecutionRecord) -> set[str]:
            return {t.task_id for t in ex.task_runs if t.state == TaskRunState.RUNNING}

        await h.step_until(started.id, lambda ex: "b" in running(ex))
        ex = await h.service.get_execution(h.admin, started.id)
        assert running(ex) == {"b", "c"}
        assert ex.state == ExecutionState.RUNNING
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == ExecutionState.COMPLETED
        assert [t.task_id for t in ex.task_runs][-1] == "d"


async def test_python_results_and_errors(store: Store) -> None:
    wf = {
        "name": "py",
        "parameters": {"x": {"type": "integer", "default": 20}},
        "tasks": {
            "add": py("add", args={"a": "${{ params.x }}", "b": 22}),
            "double": py("async_double", needs=["add"], args={"x": "${{ tasks.add.output }}"}),
        },
        "outputs": {"result": "${{ tasks.double.output }}"},
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("py")
        assert ex.state == ExecutionState.COMPLETED
        assert ex.outputs == {"result": 84}


@pytest.mark.parametrize(
    ("function", "kind", "text"),
    [("boom", "exception", "RuntimeError: boom"), ("not_json", "result", "not JSON")],
)
async def test_python_failure_fails_the_execution(
    store: Store, function: str, kind: str, text: str
) -> None:
    wf = {"name": "bad", "tasks": {"t": py(function), "after": {"action": "echo", "needs": ["t"]}}}
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("bad")
        assert ex.state == ExecutionState.FAILED
        assert ex.error is not None
        assert ex.error["task"] == "t"
        assert ex.error["type"] == kind
        assert text in ex.error["message"]
        assert attempts(ex, "after") == []


async def test_retries_with_exponential_backoff(store: Store, tmp_path: Path) -> None:
    marker = str(tmp_path / "count")
    retry = {"max_attempts": 4, "initial_delay": "2s", "multiplier": 3, "max_delay": "10s"}
    wf = {
        "name": "flaky",
        "tasks": {"t": py("flaky", retry, args={"marker": marker, "failures": 3})},
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("flaky")
        assert ex.state == ExecutionState.COMPLETED
        assert attempts(ex, "t") == [
            (1, TaskRunState.FAILED),
            (2, TaskRunState.FAILED),
            (3, TaskRunState.FAILED),
            (4, TaskRunState.COMPLETED),
        ]
        runs = [t for t in ex.task_runs if t.task_id == "t"]
        gaps = []
        for before, after in itertools.pairwise(runs):
            assert before.ended_at is not None and after.started_at is not None
            gaps.append((after.started_at - before.ended_at).total_seconds())
        assert gaps == [2.0, 6.0, 10.0]
        assert runs[-1].output == {"calls": 4}


async def test_retries_run_out(store: Store, tmp_path: Path) -> None:
    marker = str(tmp_path / "count")
    retry = {"max_attempts": 2, "initial_delay": "1s"}
    wf = {
        "name": "flaky",
        "tasks": {"t": py("flaky", retry, args={"marker": marker, "failures": 5})},
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("flaky")
        assert ex.state == ExecutionState.FAILED
        assert attempts(ex, "t") == [(1, TaskRunState.FAILED), (2, TaskRunState.FAILED)]
        assert ex.error is not None and "failure 2" in ex.error["message"]


async def test_commands_run_without_a_shell(store: Store, tmp_path: Path) -> None:
    wf = {
        "name": "cmd",
        "tasks": {
            "ok": {
                "action": "command",
                "with": {"argv": ["printf", "%s|%s", "a b", "$HOME;"], "env": {"X": "1"}},
            },
            "fails": {
                "action": "command",
                "needs": ["ok"],
                "with": {"argv": ["ls", str(tmp_path / "missing")]},
            },
        },
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("cmd")
        ok = next(t for t in ex.task_runs if t.task_id == "ok")
        assert ok.output == {"exit_code": 0, "stdout": "a b|$HOME;", "stderr": ""}
        assert ex.state == ExecutionState.FAILED
        assert ex.error is not None and ex.error["type"] == "exit_code"
        assert ex.error["exit_code"] != 0 and "missing" in ex.error["stderr"]


async def test_timeout_kills_the_task_and_retries(store: Store, tmp_path: Path) -> None:
    wf = {
        "name": "slow",
        "tasks": {
            "t": py(
                "slow",
                {"max_attempts": 2, "initial_delay": "10ms"},
                timeout="300ms",
                args={"seconds": 30},
            )
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        ex = await h.run("slow")
        assert ex.state == ExecutionState.FAILED
        assert attempts(ex, "t") == [(1, TaskRunState.FAILED), (2, TaskRunState.FAILED)]
        assert ex.error is not None and ex.error["type"] == "timeout"


def _process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _wait_for_file(path: Path) -> str:
    for _ in range(500):
        if path.exists() and path.read_text():
            return path.read_text()
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


async def test_cancel_kills_running_processes(store: Store, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    wf = {
        "name": "long",
        "tasks": {
            "cmd": {"action": "command", "with": {"argv": ["python3", "-c", script]}},
            "py": py("slow", args={"seconds": 60}),
            "later": {"action": "echo", "needs": ["cmd"]},
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "long")
        await h.engine.tick()
        pid = int(await _wait_for_file(pid_file))
        await h.service.cancel(h.admin, started.id, force=True)
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == ExecutionState.CANCELED
        assert attempts(ex, "cmd") == [(1, TaskRunState.CANCELED)]
        assert attempts(ex, "py") == [(1, TaskRunState.CANCELED)]
        assert attempts(ex, "later") == []
        for _ in range(200):
            if _process_gone(pid):
                break
            await asyncio.sleep(0.01)
        assert _process_gone(pid)


async def test_sleep_makes_the_execution_wait(store: Store) -> None:
    wf = {
        "name": "nap",
        "tasks": {
            "nap": {"action": "sleep", "with": {"duration": "1h"}},
            "after": {
                "action": "echo",
                "needs": ["nap"],
                "with": {"woke": "${{ tasks.nap.output.woke_at }}"},
            },
        },
    }
    clock = ManualClock()
    async with harness(store, clock) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "nap")
        await h.engine.tick()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == ExecutionState.WAITING
        t0 = clock.now()
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == ExecutionState.COMPLETED
        assert clock.now() - t0 == timedelta(hours=1)


async def test_bad_rendered_arguments_fail_precisely(store: Store) -> None:
    wf = {
        "name": "badargs",
        "parameters": {"url": {"type": "string", "default": "not a url"}},
        "tasks": {"call": {"action": "http", "with": {"url": "${{ params.url }}"}}},
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("badargs")
        assert ex.state == ExecutionState.FAILED
        assert ex.error is not None
        assert ex.error["type"] == "arguments" and "url" in ex.error["message"]


async def test_failure_stops_downstream_but_siblings_finish(store: Store) -> None:
    wf = {
        "name": "branches",
        "tasks": {
            "bad": py("boom"),
            "good": py("slow", args={"seconds": 0.2}),
            "after_bad": {"action": "echo", "needs": ["bad"]},
            "after_good": {"action": "echo", "needs": ["good"]},
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        ex = await h.run("branches")
        assert ex.state == ExecutionState.FAILED
        assert attempts(ex, "good") == [(1, TaskRunState.COMPLETED)]
        assert attempts(ex, "after_bad") == []
        assert attempts(ex, "after_good") == []


# a lost attempt runs again whatever the policy: even one that allows a single attempt
@pytest.mark.parametrize(("max_attempts", "final"), [(1, "COMPLETED"), (2, "COMPLETED")])
async def test_recovery_retries_what_was_in_flight(
    store: Store, tmp_path: Path, max_attempts: int, final: str
) -> None:
    marker = tmp_path / "count"
    wf = {
        "name": "recover",
        "tasks": {
            "first": {"action": "echo"},
            "t": py(
                "flaky",
                {"max_attempts": max_attempts, "initial_delay": "1s"},
                needs=["first"],
                args={"marker": str(marker), "failures": 0},
            ),
        },
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "recover")
        # "t" is RUNNING (committed) and handed to a worker when the engine dies
        await a.step_until(started.id, lambda ex: bool(attempts(ex, "t")))
        ex = await a.service.get_execution(a.admin, started.id)
        assert attempts(ex, "t") == [(1, TaskRunState.RUNNING)]
        await a.crash()
    clock.advance(31)  # past the lease
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        ex = await b.service.get_execution(b.admin, started.id)
        assert ex.state == final
        first = ex.task_runs[1]
        assert (first.task_id, first.attempt, first.state) == ("t", 1, TaskRunState.FAILED)
        assert first.error is not None and first.error["type"] == "lost"


async def test_same_node_restart_resumes_at_once(store: Store) -> None:
    """A node restarting under its own identity need not wait for its old leases to expire."""
    wf = seq(3)
    wf["tasks"]["t0"]["retry"] = {"max_attempts": 2, "initial_delay": "1s"}
    clock = ManualClock()
    async with harness(store, clock, node_id="n1") as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "seq3")
        await a.engine.tick()
        await a.crash()
    async with harness(store, clock, node_id="n1") as again:
        await again.engine.run_until_idle()
        ex = await again.service.get_execution(again.admin, started.id)
        assert ex.state == ExecutionState.COMPLETED
        assert attempts(ex, "t0") == [(1, TaskRunState.FAILED), (2, TaskRunState.COMPLETED)]
        assert ex.task_runs[0].error == {"type": "lost", "message": "the engine stopped"}
        assert clock.now() == started.started_at  # the lost attempt ran again at once


async def test_a_stale_result_is_rejected(store: Store) -> None:
    wf = {"name": "stale", "tasks": {"t": py("slow", args={"seconds": 30})}}
    clock = ManualClock()
    async with harness(store, clock, node_id="old") as old:
        await old.apply(wf)
        started = await old.service.start(old.admin, "stale")
        await old.engine.tick()
        clock.advance(31)
        async with harness(store, clock, node_id="new", workers=1) as new:
            await new.engine.tick()
            for task in list(new.engine._inflight.values()):
                task.cancel()
            new.engine._inflight.clear()
            # The old engine's attempt 1 now reports success: fenced off.
            old.engine._results.append(((started.id, "t", 1), Outcome(True, output="stale")))
            await old.engine.tick()
            assert started.id not in old.engine.runs
            ex = await new.service.get_execution(new.admin, started.id)
            first = ex.task_runs[0]
            assert (first.attempt, first.state, first.output) == (1, TaskRunState.FAILED, None)


async def test_graceful_stop_lets_running_tasks_finish_and_hands_over(store: Store) -> None:
    """A redeploy costs no attempt: what runs finishes, nothing new starts, leases go back."""
    wf = {
        "name": "redeploy",
        "tasks": {
            "t": py("slow", args={"seconds": 0.3}),
            "next": {"action": "echo", "needs": ["t"]},
        },
    }
    async with harness(store, SystemClock(), node_id="old") as old:
        await old.apply(wf)
        started = await old.service.start(old.admin, "redeploy")
        await old.step_until(started.id, lambda ex: bool(attempts(ex, "t")))
        await old.engine.stop(grace=30)
        ex = await old.service.get_execution(old.admin, started.id)
        assert attempts(ex, "t") == [(1, TaskRunState.COMPLETED)]
        assert attempts(ex, "next") == []
        assert ex.state == ExecutionState.RUNNING
    async with harness(store, SystemClock(), node_id="new") as new:
        await new.engine.run_until_idle()  # no lease to wait for
        ex = await new.service.get_execution(new.admin, started.id)
        assert ex.state == ExecutionState.COMPLETED
        assert attempts(ex, "t") == [(1, TaskRunState.COMPLETED)]


async def test_two_engines_share_the_work_and_run_each_task_once(store: Store) -> None:
    """Several engines on one database: each execution is claimed by one of them at a time,
    every task runs exactly once, and both engines take part."""
    async with (
        harness(store, node_id="a", claim_batch=5) as a,
        harness(store, node_id="b", claim_batch=5) as b,
    ):
        await a.apply(seq(3))
        # Started through a service with no local engine: nobody holds them yet.
        api_only = Service(store, a.service.definitions, None, a.clock)
        ids = [(await api_only.start(a.admin, "seq3")).id for _ in range(40)]
        finished_by: dict[str, list[str]] = {}

        def recorder(node: str) -> Callable[[str, ExecutionState], None]:
            def record(execution_id: str, state: ExecutionState) -> None:
                if state.terminal:
                    finished_by.setdefault(execution_id, []).append(node)

            return record

        for h in (a, b):
            h.engine.listeners.append(recorder(h.engine.node_id))
        await asyncio.gather(a.engine.run_until_idle(), b.engine.run_until_idle())
        for execution_id in ids:
            ex = await a.service.get_execution(a.admin, execution_id)
            assert ex.state == ExecutionState.COMPLETED
            assert [(t.task_id, t.attempt) for t in ex.task_runs] == [
                ("t0", 1),
                ("t1", 1),
                ("t2", 1),
            ]
        assert sorted(finished_by) == sorted(ids)
        assert all(len(nodes) == 1 for nodes in finished_by.values())
        assert {n for nodes in finished_by.values() for n in nodes} == {"a", "b"}


async def test_a_tick_looks_only_at_the_executions_something_happened_to(store: Store) -> None:
    """What a tick costs follows its events: executions that only wait are not looked at,
    however many the engine holds; the one that was signalled ends and is forgotten."""
    wf = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
    looked_at: list[str] = []

    class Watched(Run):
        def __getattribute__(self, name: str) -> Any:
            looked_at.append(object.__getattribute__(self, "id"))
            return object.__getattribute__(self, name)

    async with harness(store) as h:
        await h.apply(wf)
        ids = [(await h.service.start(h.admin, "waits")).id for _ in range(20)]
        await h.engine.run_until_idle()
        assert set(h.engine.runs) == set(ids)
        for run in h.engine.runs.values():
            run.__class__ = Watched
        await h.service.signal(h.admin, ids[0], "go", {})
        await h.engine.run_until_idle()
        assert set(looked_at) == {ids[0]}
        assert set(h.engine.runs) == set(ids[1:])
        ex = await h.service.get_execution(h.admin, ids[0])
        assert ex.state == ExecutionState.COMPLETED
