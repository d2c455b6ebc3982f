"""Containment: a fault of one execution fails that execution, in the same tick, and the
engine goes on with every other; attempts lost to a crash run again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import field_validator

from execflow import actions
from execflow.actions.base import Action, Args, Placement, Resources
from execflow.clock import ManualClock, SystemClock
from execflow.engine.run import Run
from execflow.errors import InvalidDefinition, InvalidInput
from execflow.limits import storable
from execflow.records import ExecutionRecord
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.harness import Harness, harness
from tests.test_engine import attempts, py, seq

E = ExecutionState


class ExplodeArgs(Args):
    """Arguments whose check has a bug for one value: it raises what no caller expects."""

    value: Any = None

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any) -> Any:
        if value == "explode":
            raise RuntimeError("a bug in an argument check")
        return value


async def _explode(args: ExplodeArgs, resources: Resources) -> Any:
    return args.value


@pytest.fixture
def explode(monkeypatch: pytest.MonkeyPatch) -> None:
    """An action whose argument check raises for the value 'explode' (as a bug would)."""
    action = Action("explode", ExplodeArgs, Placement.INLINE, "test", inline=_explode)
    monkeypatch.setitem(actions.ACTIONS, "explode", action)


def _bystanders() -> dict[str, Any]:
    return seq(3)


def _one_task(name: str, action: str, field: str) -> dict[str, Any]:
    """A workflow of one task whose argument `field` is the input `v`."""
    return {
        "name": name,
        "parameters": {"v": {"type": "string"}},
        "tasks": {"x": {"action": action, "with": {field: "${{ params.v }}"}}},
    }


BUGGY = _one_task("buggy", "explode", "value")


async def _bad_among_fine(h: Harness, workflow: dict[str, Any], bad: str, others: int) -> str:
    """Start one execution with input `bad`, one with a fine input and `others` bystanders;
    drive the engine; check every one but the bad one completed; the bad one's id."""
    await h.apply(workflow)
    await h.apply(_bystanders())
    poisoned = await h.service.start(h.admin, workflow["name"], {"v": bad})
    fine = await h.service.start(h.admin, workflow["name"], {"v": "calm"})
    ids = await _start_bystanders(h, others)
    await h.engine.run_until_idle(max_ticks=50)
    assert await _states(h, [fine.id, *ids]) == [E.COMPLETED] * (others + 1)
    return poisoned.id


async def _start_bystanders(h: Harness, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        ids.append((await h.service.start(h.admin, "seq3", {})).id)
    return ids


async def _states(h: Harness, ids: list[str]) -> list[ExecutionState]:
    return [(await h.service.get_execution(h.admin, i)).state for i in ids]


async def _failed(h: Harness, execution_id: str) -> ExecutionRecord:
    ex = await h.service.get_execution(h.admin, execution_id)
    assert ex.state == E.FAILED, ex
    assert ex.error is not None
    return ex


async def test_an_overflowing_sleep_fails_its_execution_alone(store: Store) -> None:
    """A duration that overflows the clock, computed at run time, fails that execution in
    the tick that met it; twenty others of the same tick complete."""
    wf = {
        "name": "overflow",
        "tasks": {
            "a": {"action": "echo", "with": {"seconds": 1e30}},
            "nap": {
                "action": "sleep",
                "needs": ["a"],
                "with": {"duration": "${{ tasks.a.output.seconds }}"},
            },
        },
    }
    async with harness(store) as h:
        await h.apply(wf)
        await h.apply(_bystanders())
        bad = await h.service.start(h.admin, "overflow")
        others = await _start_bystanders(h, 20)
        await h.engine.run_until_idle(max_ticks=200)
        assert await _states(h, others) == [E.COMPLETED] * 20
        ex = await _failed(h, bad.id)
        assert ex.error is not None
        assert ex.error["task"] == "nap"
        assert ex.error["type"] in ("internal", "arguments")
        nap = [t for t in ex.task_runs if t.task_id == "nap"]
        assert [t.state for t in nap] == [TaskRunState.FAILED]
        assert nap[0].error == {k: v for k, v in ex.error.items() if k != "task"}


async def test_a_bug_while_starting_a_task_fails_only_that_execution(
    store: Store, explode: None
) -> None:
    async with harness(store) as h:
        bad = await _bad_among_fine(h, BUGGY, "explode", 5)
        ex = await _failed(h, bad)
        assert ex.error is not None
        assert ex.error["type"] == "internal"
        assert "a bug in an argument check" in ex.error["message"]
        # the task run that was starting is not left RUNNING
        assert all(t.state.terminal for t in ex.task_runs)
        logs = await h.service.logs(h.admin, bad)
        assert any("a bug in an argument check" in e.message for e in logs)


async def test_an_expression_that_fails_to_compile_at_run_time_is_contained(
    store: Store,
) -> None:
    """A template the engine can only compile when it first needs it (an unknown filter
    that slipped in) fails its execution with the reason, and `wait` returns."""
    wf = {
        "name": "filtered",
        "parameters": {"x": {"type": "string", "default": "a"}},
        "tasks": {"t": {"action": "echo", "with": {"v": "${{ params.x }}"}}},
    }
    async with harness(store) as h:
        await h.apply(wf)
        await h.apply(_bystanders())
        _, definition = await h.service.definition(h.admin, "filtered")

        class Uncompiled(dict[str, Any]):
            def __getitem__(self, key: str) -> Any:
                raise ValueError("expression 'params.x | nosuchfilter' does not parse")

        # the renderers are compiled lazily, on first use, in the engine
        definition.__dict__["renderers"] = Uncompiled()
        bad = await h.service.start(h.admin, "filtered")
        others = await _start_bystanders(h, 3)
        waiting = asyncio.create_task(h.engine.wait_ended(bad.id, 30))
        await h.engine.run_until_idle(max_ticks=50)
        assert await waiting is True  # `start --wait` returns
        assert await _states(h, others) == [E.COMPLETED] * 3
        ex = await _failed(h, bad.id)
        assert ex.error is not None
        assert ex.error["type"] == "internal"
        assert "nosuchfilter" in ex.error["message"]
        assert not h.engine.runs


async def test_an_execution_that_cannot_be_taken_over_fails_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault while rebuilding an execution from the store (here: opening it) fails it
    instead of stopping the engine from taking over the others."""
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(_bystanders())
        ids = await _start_bystanders(a, 4)
        await a.crash()
    clock.advance(31)
    poisoned = ids[1]
    real = Run.from_record.__func__  # type: ignore[attr-defined]

    def from_record(cls: type[Run], rec: ExecutionRecord, *args: Any) -> Run:
        if rec.id == poisoned:
            raise KeyError("a field the engine expected")
        run: Run = real(cls, rec, *args)
        return run

    monkeypatch.setattr(Run, "from_record", classmethod(from_record))
    async with harness(store, clock, node_id="b") as b:
        b.engine.poke()
        await b.engine.run_until_idle()
        states = await _states(b, ids)
        assert states == [E.COMPLETED, E.FAILED, E.COMPLETED, E.COMPLETED]
        ex = await _failed(b, poisoned)
        assert ex.error is not None
        assert ex.error["type"] == "internal"


async def test_a_row_the_database_refuses_fails_only_its_execution(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database refuses one execution's rows, the tick's other executions are
    written all the same: the engine finds the offender and fails it."""
    from execflow.store import writes

    real = writes.apply

    def apply(conn: Any, owner: str, ops: Any) -> set[str]:
        for op in ops:
            output = getattr(op, "output", None)
            if isinstance(output, dict) and output.get("v") == "refused":
                raise TypeError("Object of type range is not JSON serializable")
        return real(conn, owner, ops)

    monkeypatch.setattr(writes, "apply", apply)
    async with harness(store) as h:
        bad = await _bad_among_fine(h, _one_task("refused", "echo", "v"), "refused", 6)
        ex = await _failed(h, bad)
        assert ex.error is not None
        assert ex.error["type"] == "internal"
        assert "not JSON serializable" in ex.error["message"]


async def test_a_value_jinja_makes_but_json_cannot_hold_is_contained(store: Store) -> None:
    """An expression may make a value that is not JSON (a range); it never reaches the
    database as the tick's poison."""
    wf = {"name": "ranged", "tasks": {"t": {"action": "echo", "with": {"r": "${{ range(3) }}"}}}}
    async with harness(store) as h:
        await h.apply(wf)
        await h.apply(_bystanders())
        ranged = await h.service.start(h.admin, "ranged")
        others = await _start_bystanders(h, 3)
        await h.engine.run_until_idle(max_ticks=50)
        assert await _states(h, others) == [E.COMPLETED] * 3
        ex = await h.service.get_execution(h.admin, ranged.id)
        assert ex.state.terminal


async def test_a_signal_that_trips_a_bug_fails_its_execution_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from execflow.engine import commands as engine_module

    wf = {
        "name": "approve",
        "tasks": {"ok": {"action": "signal", "with": {"name": "approval"}}},
    }
    async with harness(store) as h:
        await h.apply(wf)
        await h.apply(_bystanders())
        waiting = await h.service.start(h.admin, "approve")
        await h.engine.run_until_idle()
        await h.service.signal(h.admin, waiting.id, "approval", {"yes": True})

        def check_payload(schema: Any, payload: Any) -> Any:
            raise RuntimeError("a bug while checking a signal")

        monkeypatch.setattr(engine_module, "check_payload", check_payload)
        others = await _start_bystanders(h, 3)
        await h.engine.run_until_idle(max_ticks=50)
        assert await _states(h, others) == [E.COMPLETED] * 3
        ex = await _failed(h, waiting.id)
        assert ex.error is not None
        assert ex.error["type"] == "internal"


async def test_a_poison_costs_a_bounded_number_of_ticks(store: Store, explode: None) -> None:
    """The engine never spins on the same poison: a faulted execution is written off in
    the tick that met it, and the next ticks have nothing left to do."""
    wf = BUGGY
    async with harness(store) as h:
        await h.apply(wf)
        bad = await h.service.start(h.admin, "buggy", {"v": "explode"})
        await h.engine.tick()
        await h.engine.tick()
        assert (await h.service.get_execution(h.admin, bad.id)).state == E.FAILED
        assert not h.engine.busy()
        await h.engine.run_until_idle(max_ticks=3)


# lost attempts --------------------------------------------------------------------------


async def test_a_crash_during_a_task_does_not_fail_it_under_the_default_policy(
    store: Store, tmp_path: Path
) -> None:
    """kill -9 while a python task runs: the execution continues when the node comes back,
    whatever the task's retry policy (the README's promise)."""
    wf = {
        "name": "crashed",
        "tasks": {
            "first": {"action": "echo"},
            "t": py("add", needs=["first"], args={"a": 1, "b": 2}),
        },
        "outputs": {"sum": "${{ tasks.t.output }}"},
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="n1") as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "crashed")
        await a.step_until(started.id, lambda ex: bool(attempts(ex, "t")))
        await a.crash()
    async with harness(store, clock, node_id="n1") as again:
        await again.engine.run_until_idle()
        ex = await again.service.get_execution(again.admin, started.id)
        assert ex.state == E.COMPLETED
        assert ex.outputs == {"sum": 3}
        assert attempts(ex, "t") == [(1, TaskRunState.FAILED), (2, TaskRunState.COMPLETED)]
        lost = ex.task_runs[1]
        assert lost.error is not None and lost.error["type"] == "lost"
        logs = await again.service.logs(again.admin, started.id)
        assert any("lost" in e.message and "again" in e.message for e in logs)


async def test_a_lost_attempt_does_not_use_up_the_retry_policy(
    store: Store, tmp_path: Path
) -> None:
    marker = tmp_path / "count"
    wf = {
        "name": "policy",
        "tasks": {
            "first": {"action": "echo"},
            "t": py(
                "flaky",
                {"max_attempts": 2, "initial_delay": "1s"},
                needs=["first"],
                args={"marker": str(marker), "failures": 1},
            ),
        },
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="n1") as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "policy")
        await a.step_until(started.id, lambda ex: bool(attempts(ex, "t")))
        await a.crash()
    marker.unlink(missing_ok=True)  # whatever ran before the crash does not count
    async with harness(store, clock, node_id="n1") as again:
        await again.engine.run_until_idle()
        ex = await again.service.get_execution(again.admin, started.id)
        # lost, then a real failure (the first of the policy's two), then success
        assert ex.state == E.COMPLETED
        assert [s for _, s in attempts(ex, "t")] == [
            TaskRunState.FAILED,
            TaskRunState.FAILED,
            TaskRunState.COMPLETED,
        ]


async def test_a_worker_that_dies_runs_the_task_again(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    wf = {"name": "dies", "tasks": {"t": py("die_once", args={"marker": str(marker)})}}
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        ex = await h.run("dies")
        assert ex.state == E.COMPLETED, ex.error
        assert attempts(ex, "t") == [(1, TaskRunState.FAILED), (2, TaskRunState.COMPLETED)]
        assert ex.task_runs[0].error is not None
        assert ex.task_runs[0].error["type"] == "lost"


async def test_a_task_that_always_kills_its_worker_still_ends(store: Store) -> None:
    wf = {"name": "dies", "tasks": {"t": py("die")}}
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        ex = await h.run("dies")
        assert ex.state == E.FAILED
        runs = attempts(ex, "t")
        assert len(runs) == h.engine.settings.max_lost_attempts + 1
        assert ex.error is not None
        assert ex.error["type"] == "lost"
        assert "lost" in ex.error["message"]


# operators see it -----------------------------------------------------------------------


async def test_faults_and_lost_attempts_are_counted_and_logged(
    store: Store, tmp_path: Path, explode: None, caplog: pytest.LogCaptureFixture
) -> None:
    wf = BUGGY
    dies = {"name": "dies", "tasks": {"t": py("die_once", args={"marker": str(tmp_path / "m")})}}
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        await h.apply(dies)
        await h.apply(_bystanders())
        bad = await h.service.start(h.admin, "buggy", {"v": "explode"})
        await h.service.start(h.admin, "dies")
        await _start_bystanders(h, 2)
        await h.engine.run_until_idle()
        sample = h.engine.metrics.registry.get_sample_value
        assert sample("execflow_internal_failures_total") == 1
        assert sample("execflow_lost_attempts_total") == 1
        assert sample("execflow_executions_started_total") == 4
        assert sample("execflow_executions_ended_total", {"state": "COMPLETED"}) == 3
        assert sample("execflow_executions_ended_total", {"state": "FAILED"}) == 1
        assert sample("execflow_task_runs_total", {"action": "echo", "outcome": "completed"}) == 6
        assert sample("execflow_task_runs_total", {"action": "python", "outcome": "lost"}) == 1
        assert sample("execflow_task_runs_total", {"action": "explode", "outcome": "failed"}) == 1
        assert (sample("execflow_engine_tick_seconds_count") or 0) > 0
        assert (sample("execflow_store_commit_seconds_count") or 0) > 0
        assert sample("execflow_executions_held") == 0
        assert sample("execflow_engine_tick_failures_total") == 0
    # the server log names the execution
    assert any(bad.id in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def test_a_node_lacking_a_key_takes_nothing_over_until_it_has_it(store: Store) -> None:
    """Another node recorded a key this one lacks: this node does not claim executions it
    might not open (instead of failing every tick on them), and claims once it holds it."""
    from execflow.sealing import Sealer, new_key

    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(_bystanders())
        ids = await _start_bystanders(a, 2)
        await a.crash()
    clock.advance(31)
    other = Sealer.from_keys(new_key())
    store.secret_keys.record(other.fingerprints()[0], clock.now())
    async with harness(store, clock, node_id="b") as b:
        b.engine.poke()
        await b.engine.tick()
        assert b.engine._keys_missing == other.fingerprints()
        assert not b.engine.runs
        assert not any(state.terminal for state in await _states(b, ids))
        # the key is added to this node's keys (as a reloaded key file would add it)
        store.sealer._set([*store.sealer.keys, other.keys[0]])
        clock.advance(2)  # its next poll
        b.engine.poke()
        await b.engine.run_until_idle()
        assert await _states(b, ids) == [E.COMPLETED, E.COMPLETED]


async def test_a_database_outage_while_starting_a_child_fails_no_task(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage is nobody's fault: the tick fails and is tried again, and the task that
    starts a child workflow does not fail for it."""
    from execflow.errors import Unavailable

    child = {"name": "child", "tasks": {"t": {"action": "echo", "with": {"ok": True}}}}
    parent = {
        "name": "parent",
        "tasks": {"c": {"action": "workflow", "with": {"workflow": "child"}}},
        "outputs": {"child": "${{ tasks.c.output }}"},
    }
    async with harness(store) as h:
        await h.apply(child)
        await h.apply(parent)
        started = await h.service.start(h.admin, "parent")
        real = store.get_workflow

        def unreachable(*args: Any) -> Any:
            raise Unavailable()

        monkeypatch.setattr(store, "get_workflow", unreachable)
        with pytest.raises(Unavailable):
            await h.engine.tick()
        monkeypatch.setattr(store, "get_workflow", real)
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == E.COMPLETED, ex.error
        assert [t.state for t in ex.task_runs] == [TaskRunState.COMPLETED]


async def test_a_duration_no_float_holds_is_a_bad_value(store: Store) -> None:
    """JSON integers have no bound: a duration of 10**400 seconds is refused at the door in
    a definition, and fails its task (bad arguments) when a task's output supplies it."""
    huge = 10**400
    async with harness(store) as h:
        with pytest.raises(InvalidDefinition) as refused:
            await h.apply({"name": "t", "tasks": {"t": {"action": "echo", "timeout": huge}}})
        assert [d.pointer for d in refused.value.details] == ["/tasks/t/timeout"]
        wf = {
            "name": "late",
            "tasks": {
                "a": {"action": "echo", "with": {"x": huge}},
                "nap": {
                    "action": "sleep",
                    "needs": ["a"],
                    "with": {"duration": "${{ tasks.a.output.x }}"},
                },
            },
        }
        await h.apply(wf)
        ex = await _failed(h, (await h.run("late")).id)
        assert ex.error is not None
        assert (ex.error["task"], ex.error["type"]) == ("nap", "arguments")


async def test_a_refused_row_whose_error_cannot_be_told_is_written_off(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database's error may itself fail to render (it quoted an int too long to print:
    Python refuses ints past 4,300 digits as text): the execution is written off all the
    same, and the tick is not lost."""
    from execflow.store import writes

    class Untellable(TypeError):
        def __str__(self) -> str:
            return str(7**50000)  # raises ValueError

    real = writes.apply

    def apply(conn: Any, owner: str, ops: Any) -> set[str]:
        for op in ops:
            output = getattr(op, "output", None)
            if isinstance(output, dict) and output.get("v") == "long":
                raise Untellable()
        return real(conn, owner, ops)

    monkeypatch.setattr(writes, "apply", apply)
    async with harness(store) as h:
        bad = await _bad_among_fine(h, _one_task("long", "echo", "v"), "long", 3)
        ex = await _failed(h, bad)
        assert ex.error is not None
        assert ex.error["type"] == "internal" and ex.error["message"]


async def test_an_int_too_long_to_print_is_refused_at_every_door(store: Store) -> None:
    """Python cannot write an int of over 4,300 digits as text (so neither JSON nor the
    database take it): a definition, inputs or a signal holding one are refused, precisely."""
    long = 2**20000
    wf = {
        "name": "asks",
        "parameters": {"x": {"type": "integer"}},
        "tasks": {"ok": {"action": "signal", "with": {"name": "approval"}}},
    }
    async with harness(store) as h:
        with pytest.raises(InvalidDefinition) as bad_definition:
            await h.apply({"name": "t", "tasks": {"t": {"action": "echo", "with": {"v": long}}}})
        assert [d.pointer for d in bad_definition.value.details] == ["/tasks/t/with/v"]
        await h.apply(wf)
        with pytest.raises(InvalidInput) as bad_inputs:
            await h.service.start(h.admin, "asks", {"x": long})
        assert [d.pointer for d in bad_inputs.value.details] == ["/inputs/x"]
        waiting = await h.service.start(h.admin, "asks")
        await h.engine.run_until_idle()
        with pytest.raises(InvalidInput) as bad_payload:
            await h.service.signal(h.admin, waiting.id, "approval", {"n": long})
        assert [d.pointer for d in bad_payload.value.details] == ["/payload/n"]


async def test_a_number_input_no_float_holds_is_taken_as_it_is(store: Store) -> None:
    """A `number` parameter given an integer beyond a float's range (JSON allows 10**400)
    is checked without converting it: the start does not raise OverflowError."""
    wf = {
        "name": "big",
        "parameters": {"x": {"type": "number"}},
        "tasks": {"t": {"action": "echo", "with": {"x": "${{ params.x }}"}}},
        "outputs": {"x": "${{ tasks.t.output.x }}"},
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("big", {"x": 10**400})
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"x": 10**400})


async def test_an_output_no_database_stores_is_kept_with_those_characters_replaced(
    store: Store,
) -> None:
    """NUL and lone surrogates in what a task returns become U+FFFD: the task completes (on
    PostgreSQL too, which refuses them), and nothing else of its output changes."""
    wf = {
        "name": "odd",
        "tasks": {"t": py("unstorable")},
        "outputs": {"o": "${{ tasks.t.output }}"},
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("odd")
        assert ex.state == E.COMPLETED, ex.error
        assert ex.outputs == {
            "o": {"nul": "a\ufffdb", "surrogate": "x\ufffdy", "key\ufffd": [1, "\ufffd"]}
        }


def test_storable_copies_nothing_when_nothing_needs_replacing() -> None:
    value = {"a": ["b", {"c": 1.5}], "d": "é"}
    assert storable(value) is value
    assert storable("\x00") == "\ufffd"
