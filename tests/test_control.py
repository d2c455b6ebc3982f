"""Steering running executions through the service, on SQLite and PostgreSQL: suspend and
resume, signals, graceful and forced cancel, and the audit log they leave."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from execflow.clock import ManualClock, SystemClock
from execflow.errors import Conflict, InvalidInput
from execflow.records import ExecutionRecord
from execflow.service import pending_signals
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from execflow.store import schema as s
from tests.harness import Harness, harness
from tests.test_engine import attempts, py

E, T = ExecutionState, TaskRunState

APPROVAL: dict[str, Any] = {
    "name": "approval",
    "tasks": {
        "prepare": {"action": "echo", "with": {"amount": 120}},
        "approve": {
            "action": "signal",
            "needs": ["prepare"],
            "with": {
                "name": "approval",
                "description": "Approve the payment",
                "schema": {
                    "type": "object",
                    "required": ["approved"],
                    "properties": {"approved": {"type": "boolean"}, "by": {"type": "string"}},
                },
            },
        },
        "pay": {
            "action": "echo",
            "needs": ["approve"],
            "with": {"approved": "${{ tasks.approve.output.approved }}"},
        },
    },
    "outputs": {"approved_by": "${{ tasks.approve.output.by }}"},
}


async def get(h: Harness, execution_id: str) -> ExecutionRecord:
    return await h.service.get_execution(h.admin, execution_id)


async def log_of(h: Harness, execution_id: str) -> list[str]:
    events = await h.store.read(h.store.list_events, execution_id)
    return [e.message for e in events]


# signals ---------------------------------------------------------------------------------


async def test_an_execution_waits_on_a_signal_and_its_payload_becomes_the_output(
    store: Store,
) -> None:
    async with harness(store) as h:
        await h.apply(APPROVAL)
        ex = await h.run("approval")
        assert ex.state == E.WAITING_ON_SIGNAL
        [waiting] = pending_signals(ex)
        assert (waiting.name, waiting.task, waiting.description) == (
            "approval",
            "approve",
            "Approve the payment",
        )
        assert waiting.schema is not None and waiting.schema["required"] == ["approved"]

        await h.service.signal(h.admin, ex.id, "approval", {"approved": True, "by": "ada"})
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.COMPLETED
        assert ex.outputs == {"approved_by": "ada"}
        assert [t.output for t in ex.task_runs if t.task_id == "pay"] == [{"approved": True}]
        assert pending_signals(ex) == []
        assert "signal approval received" in await log_of(h, ex.id)


async def test_a_bad_or_unawaited_signal_is_refused_and_changes_nothing(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(APPROVAL)
        ex = await h.run("approval")
        with pytest.raises(InvalidInput) as bad:
            await h.service.signal(h.admin, ex.id, "approval", {"approved": "yes", "extra": 1})
        assert [(d.pointer, d.reason) for d in bad.value.details] == [
            ("/payload/approved", "'yes' is not of type 'boolean'")
        ]
        with pytest.raises(InvalidInput) as missing:
            await h.service.signal(h.admin, ex.id, "approval", {})
        assert [d.pointer for d in missing.value.details] == ["/payload"]
        with pytest.raises(Conflict, match=r"nothing waits for signal 'other'.*approval"):
            await h.service.signal(h.admin, ex.id, "other", {})
        assert await h.store.read(h.store.pending_commands, h.engine.node_id) == []
        await h.engine.run_until_idle()
        assert (await get(h, ex.id)).state == E.WAITING_ON_SIGNAL


async def test_a_signal_wait_survives_a_restart(store: Store) -> None:
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(APPROVAL)
        ex = await a.run("approval")
        assert ex.state == E.WAITING_ON_SIGNAL
        await a.crash()
    clock.advance(31)  # past the lease
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        ex = await get(b, ex.id)
        assert ex.state == E.WAITING_ON_SIGNAL
        assert attempts(ex, "approve") == [(1, T.RUNNING)]  # not lost: nothing was running
        await b.service.signal(b.admin, ex.id, "approval", {"approved": False, "by": "bob"})
        await b.engine.run_until_idle()
        ex = await get(b, ex.id)
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"approved_by": "bob"})


async def test_a_signal_wait_times_out_even_across_a_restart(store: Store) -> None:
    wf = {
        "name": "deadline",
        "tasks": {"answer": {"action": "signal", "with": {"name": "answer", "timeout": "1h"}}},
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "deadline")
        await a.engine.tick()
        await a.crash()
    clock.advance(60)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()  # jumps the clock to the persisted deadline
        ex = await get(b, started.id)
        assert ex.state == E.FAILED
        assert ex.error is not None and ex.error["type"] == "timeout"
        assert clock.now() - started.started_at == timedelta(hours=1)


# suspend and resume ------------------------------------------------------------------------


async def test_suspend_stops_new_task_runs_and_resume_continues(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(APPROVAL)
        ex = await h.run("approval")
        await h.service.suspend(h.admin, ex.id)
        await h.engine.run_until_idle()
        assert (await get(h, ex.id)).state == E.SUSPENDED

        # the waiting task still takes its signal, but nothing after it starts
        await h.service.signal(h.admin, ex.id, "approval", {"approved": True, "by": "ada"})
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.SUSPENDED
        assert attempts(ex, "approve") == [(1, T.COMPLETED)]
        assert attempts(ex, "pay") == []

        with pytest.raises(Conflict, match="already suspended"):
            await h.service.suspend(h.admin, ex.id)
        await h.service.resume(h.admin, ex.id)
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.COMPLETED
        with pytest.raises(Conflict, match="not suspended"):
            await h.service.resume(h.admin, ex.id)
        log = await log_of(h, ex.id)
        assert log.index("suspend requested") < log.index("execution suspended")
        assert log.index("execution suspended") < log.index("resume requested")
        events = await h.store.read(h.store.list_events, ex.id)
        actors = {e.message: e.actor for e in events}
        assert actors["suspend requested"] == h.admin.token_id


async def test_running_tasks_finish_while_suspended(store: Store) -> None:
    wf = {
        "name": "busy",
        "tasks": {
            "work": py("slow", args={"seconds": 0.2}),
            "after": {"action": "echo", "needs": ["work"]},
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "busy")
        await h.engine.tick()  # "work" is handed to a worker
        await h.service.suspend(h.admin, started.id)
        await h.engine.run_until_idle()
        ex = await get(h, started.id)
        assert ex.state == E.SUSPENDED
        assert attempts(ex, "work") == [(1, T.COMPLETED)]
        assert attempts(ex, "after") == []


async def test_retries_wait_while_suspended(store: Store, tmp_path: Path) -> None:
    wf = {
        "name": "retrying",
        "tasks": {
            "t": py(
                "flaky",
                {"max_attempts": 2, "initial_delay": "10s"},
                args={"marker": str(tmp_path / "n"), "failures": 1},
            )
        },
    }
    clock = ManualClock()
    async with harness(store, clock) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "retrying")
        await h.step_until(
            started.id, lambda ex: attempts(ex, "t") == [(1, T.FAILED), (2, T.SCHEDULED)]
        )
        await h.service.suspend(h.admin, started.id)
        await h.engine.run_until_idle()  # the back-off passes while suspended
        ex = await get(h, started.id)
        assert ex.state == E.SUSPENDED
        assert attempts(ex, "t") == [(1, T.FAILED), (2, T.SCHEDULED)]
        await h.service.resume(h.admin, started.id)
        await h.engine.run_until_idle()
        ex = await get(h, started.id)
        assert ex.state == E.COMPLETED
        assert attempts(ex, "t") == [(1, T.FAILED), (2, T.COMPLETED)]


async def test_suspended_survives_a_restart(store: Store) -> None:
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(APPROVAL)
        ex = await a.run("approval")
        await a.service.suspend(a.admin, ex.id)
        await a.engine.run_until_idle()
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.service.signal(b.admin, ex.id, "approval", {"approved": True, "by": "cy"})
        await b.engine.run_until_idle()
        ex = await get(b, ex.id)
        assert (ex.state, attempts(ex, "pay")) == (E.SUSPENDED, [])
        await b.service.resume(b.admin, ex.id)
        await b.engine.run_until_idle()
        assert (await get(b, ex.id)).state == E.COMPLETED


# cancel -------------------------------------------------------------------------------------


SLOW_THEN_MORE: dict[str, Any] = {
    "name": "slow",
    "tasks": {
        "work": py("slow", args={"seconds": 0.3}),
        "wait": {"action": "signal", "with": {"name": "never"}},
        "after": {"action": "echo", "needs": ["work"]},
    },
}


async def test_cancel_lets_running_tasks_finish_within_the_grace_period(store: Store) -> None:
    async with harness(store, SystemClock()) as h:
        await h.apply(SLOW_THEN_MORE)
        started = await h.service.start(h.admin, "slow")
        await h.engine.tick()
        await h.service.cancel(h.admin, started.id)
        await h.engine.run_until_idle()
        ex = await get(h, started.id)
        assert ex.state == E.CANCELED
        assert attempts(ex, "work") == [(1, T.COMPLETED)]  # finished within the grace period
        assert attempts(ex, "wait") == [(1, T.CANCELED)]  # a wait ends at once
        assert attempts(ex, "after") == []


async def test_a_forced_cancel_stops_running_tasks_at_once(store: Store) -> None:
    wf = {"name": "stuck", "tasks": {"work": py("slow", args={"seconds": 60})}}
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "stuck")
        await h.engine.tick()
        await h.service.cancel(h.admin, started.id)  # graceful: 30 s by default
        await h.engine.tick()
        assert attempts(await get(h, started.id), "work") == [(1, T.RUNNING)]
        await h.service.cancel(h.admin, started.id, force=True)  # shortens it to nothing
        await h.engine.run_until_idle()
        ex = await get(h, started.id)
        assert (ex.state, attempts(ex, "work")) == (E.CANCELED, [(1, T.CANCELED)])
        log = await log_of(h, started.id)
        assert "cancel requested (running tasks may finish within 30s)" in log
        assert "cancel requested (at once)" in log


async def test_a_cancel_grace_period_ends_with_the_tasks_stopped(store: Store) -> None:
    wf = {"name": "stuck", "tasks": {"work": py("slow", args={"seconds": 60})}}
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "stuck")
        await h.engine.tick()
        await h.service.cancel(h.admin, started.id, grace=0.2)
        await h.engine.run_until_idle()
        ex = await get(h, started.id)
        assert (ex.state, attempts(ex, "work")) == (E.CANCELED, [(1, T.CANCELED)])


async def test_a_bad_grace_period_is_refused(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(APPROVAL)
        ex = await h.run("approval")
        with pytest.raises(InvalidInput) as bad:
            await h.service.cancel(h.admin, ex.id, grace=-1)
        assert [d.pointer for d in bad.value.details] == ["query:grace"]
        assert (await get(h, ex.id)).cancel_requested is False


async def test_a_zero_grace_period_cancels_at_once(store: Store) -> None:
    wf = {"name": "stuck", "tasks": {"work": py("slow", args={"seconds": 60})}}
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "stuck")
        await h.engine.tick()
        await h.service.cancel(h.admin, started.id, grace=0)
        await h.engine.run_until_idle()
        ex = await get(h, started.id)
        assert (ex.state, attempts(ex, "work")) == (E.CANCELED, [(1, T.CANCELED)])
        assert "cancel requested (at once)" in await log_of(h, started.id)


# races ----------------------------------------------------------------------------------------


TWO_GATES: dict[str, Any] = {
    "name": "gates",
    "tasks": {
        "first": {"action": "signal", "with": {"name": "approval"}},
        "second": {"action": "signal", "needs": ["first"], "with": {"name": "approval"}},
    },
    "outputs": {"a": "${{ tasks.first.output }}", "b": "${{ tasks.second.output }}"},
}


async def test_a_repeated_signal_does_not_complete_the_next_wait_for_the_same_name(
    store: Store,
) -> None:
    async with harness(store) as h:
        await h.apply(TWO_GATES)
        ex = await h.run("gates")
        # a double click: both requests are checked while "first" waits, and the engine
        # carries out the first (and starts "second") before the second is recorded
        await h.service.signal(h.admin, ex.id, "approval", "click-1")
        await h.engine.run_until_idle()
        with h.store.engine.connect() as conn:
            [payload] = conn.execute(sa.select(s.commands.c.payload)).scalars()
        assert (payload["task"], payload["attempt"]) == ("first", 1)
        h.store.request(ex.id, h.admin.project_id, "signal", payload, None, h.clock.now(), print)
        h.engine.notify()
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.WAITING_ON_SIGNAL
        assert attempts(ex, "second") == [(1, T.RUNNING)]
        assert "signal approval arrived but nothing waits for it any more" in await log_of(h, ex.id)


async def test_a_command_arriving_while_a_node_stops_is_carried_out_by_the_next(
    store: Store,
) -> None:
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(APPROVAL)
        ex = await a.run("approval")
        await a.service.suspend(a.admin, ex.id)
        await a.engine.run_until_idle()
        await a.service.signal(a.admin, ex.id, "approval", {"approved": True, "by": "x"})
        await a.engine.run_until_idle()
        await a.service.resume(a.admin, ex.id)
        a.engine._draining = True  # the node is shutting down when it reads the command
        await a.engine.tick()
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        assert (await get(b, ex.id)).state == E.COMPLETED


async def test_what_was_asked_of_an_execution_is_settled_when_it_ends(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(APPROVAL)
        ex = await h.run("approval")
        await h.service.signal(h.admin, ex.id, "approval", {"approved": True, "by": "x"})
        # a suspend recorded after the engine read its commands, as the execution ends
        await h.engine.tick()
        h.store.request(ex.id, h.admin.project_id, "suspend", {}, None, h.clock.now(), print)
        await h.engine.run_until_idle()
        assert (await get(h, ex.id)).state == E.COMPLETED
        assert await h.store.read(h.store.pending_commands, h.engine.node_id) == []
        with h.store.engine.connect() as conn:
            pending = conn.execute(
                sa.select(sa.func.count()).where(s.commands.c.done_at.is_(None))
            ).scalar_one()
        assert pending == 0


def test_a_signal_schema_may_not_reference_anything_outside_itself() -> None:
    from execflow.definition import parse_definition

    wf = {
        "name": "refs",
        "tasks": {
            "w": {
                "action": "signal",
                "with": {"name": "go", "schema": {"$ref": "http://169.254.169.254/latest"}},
            }
        },
    }
    with pytest.raises(InvalidInput) as caught:
        parse_definition(wf)
    assert "only references within the schema" in caught.value.details[0].reason
    local = {
        "$defs": {"flag": {"type": "boolean"}},
        "type": "object",
        "properties": {"ok": {"$ref": "#/$defs/flag"}},
    }
    wf["tasks"]["w"]["with"]["schema"] = local  # type: ignore[index]
    parse_definition(wf)


# retry from failure and rerun -------------------------------------------------------------------


def flaky_chain(marker: Path, failures: int, max_attempts: int = 1) -> dict[str, Any]:
    return {
        "name": "chain",
        "tasks": {
            "a": {"action": "echo", "with": {"x": 1}},
            "b": py(
                "flaky",
                {"max_attempts": max_attempts, "initial_delay": "1s"},
                needs=["a"],
                args={"marker": str(marker), "failures": failures},
            ),
            "c": {
                "action": "echo",
                "needs": ["b"],
                "with": {"calls": "${{ tasks.b.output.calls }}"},
            },
        },
        "outputs": {"calls": "${{ tasks.c.output.calls }}"},
    }


def history(ex: ExecutionRecord) -> list[tuple[str, int, int, TaskRunState]]:
    return [(t.task_id, t.attempt, t.round, t.state) for t in ex.task_runs]


async def test_retry_runs_the_failed_task_and_what_follows_and_keeps_the_rest(
    store: Store, tmp_path: Path
) -> None:
    async with harness(store) as h:
        await h.apply(flaky_chain(tmp_path / "n", failures=1))
        ex = await h.run("chain")
        assert ex.state == E.FAILED
        retried = await h.service.retry(h.admin, ex.id)
        assert (retried.state, retried.round, retried.error) == (E.RUNNING, 1, None)
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert (ex.state, ex.outputs, ex.round) == (E.COMPLETED, {"calls": 2}, 1)
        assert history(ex) == [
            ("a", 1, 0, T.COMPLETED),
            ("b", 1, 0, T.FAILED),
            ("b", 2, 1, T.COMPLETED),
            ("c", 1, 1, T.COMPLETED),
        ]
        assert "retry requested (round 1)" in await log_of(h, ex.id)
        with pytest.raises(Conflict, match="only a failed or cancelled"):
            await h.service.retry(h.admin, ex.id)


async def test_each_retry_round_has_the_whole_retry_policy_again(
    store: Store, tmp_path: Path
) -> None:
    async with harness(store) as h:
        await h.apply(flaky_chain(tmp_path / "n", failures=2, max_attempts=2))
        ex = await h.run("chain")
        assert [a for a in attempts(ex, "b")] == [(1, T.FAILED), (2, T.FAILED)]
        await h.service.retry(h.admin, ex.id)
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.COMPLETED
        assert attempts(ex, "b") == [(1, T.FAILED), (2, T.FAILED), (3, T.COMPLETED)]


async def test_a_cancelled_execution_is_retried_from_its_cancelled_tasks(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(APPROVAL)
        ex = await h.run("approval")
        await h.service.cancel(h.admin, ex.id, force=True)
        await h.engine.run_until_idle()
        assert (await get(h, ex.id)).state == E.CANCELED
        await h.service.retry(h.admin, ex.id)
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.WAITING_ON_SIGNAL and ex.cancel_requested is False
        await h.service.signal(h.admin, ex.id, "approval", {"approved": True, "by": "z"})
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"approved_by": "z"})
        assert attempts(ex, "prepare") == [(1, T.COMPLETED)]
        assert attempts(ex, "approve") == [(1, T.CANCELED), (2, T.COMPLETED)]


async def test_an_acknowledged_retry_survives_a_crash(store: Store, tmp_path: Path) -> None:
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(flaky_chain(tmp_path / "n", failures=1))
        ex = await a.run("chain")
        await a.service.retry(a.admin, ex.id)
        await a.crash()  # before the engine did anything with it
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        assert (await get(b, ex.id)).state == E.COMPLETED


COUNTER: dict[str, Any] = {
    "name": "counter",
    "parameters": {"n": {"type": "integer", "default": 1}},
    "tasks": {
        "a": {"action": "echo", "with": {"x": "${{ params.n }}"}},
        "b": {
            "action": "echo",
            "needs": ["a"],
            "with": {"y": "${{ tasks.a.output.x + params.n }}"},
        },
        "c": {"action": "echo", "needs": ["b"], "with": {"z": "${{ tasks.b.output.y * 10 }}"}},
    },
    "outputs": {"z": "${{ tasks.c.output.z }}"},
}


async def test_rerun_starts_a_linked_execution_reusing_what_comes_before(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(COUNTER)
        original = await h.run("counter", {"n": 1})
        assert original.outputs == {"z": 20}
        rerun = await h.service.rerun(h.admin, original.id, "b", {"n": 5})
        assert (rerun.rerun_of, rerun.inputs) == (original.id, {"n": 5})
        await h.engine.run_until_idle()
        ex = await get(h, rerun.id)
        # "a" is not run again: its output (x = 1) is reused; "b" and "c" run with n = 5
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"z": 60})
        assert [t.task_id for t in ex.task_runs] == ["a", "b", "c"]
        assert ex.task_runs[0].output == original.task_runs[0].output
        assert ex.task_runs[0].started_at == original.task_runs[0].started_at


async def test_a_bad_rerun_is_refused_and_stores_nothing(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(COUNTER)
        await h.apply(APPROVAL)
        original = await h.run("counter")
        with pytest.raises(InvalidInput) as bad:
            await h.service.rerun(h.admin, original.id, "nope", {"n": "five", "m": 1})
        assert {d.pointer for d in bad.value.details} == {"/from_task", "/inputs/n", "/inputs/m"}
        waiting = await h.run("approval")
        with pytest.raises(Conflict, match="has not ended"):
            await h.service.rerun(h.admin, waiting.id, "pay")
        listed, _ = await h.service.list_executions(h.admin)
        assert {e.id for e in listed} == {original.id, waiting.id}


# what tasks write -------------------------------------------------------------------------------


async def test_task_output_goes_to_the_audit_log_line_by_line(store: Store) -> None:
    forged = "ok\n2026-01-01 error [x#1] forged entry\x1b[2J"
    wf = {
        "name": "chatty",
        "tasks": {
            "levels": py("log_levels"),
            "value": py("log_value", args={"value": forged}, needs=["levels"]),
            "cmd": {
                "action": "command",
                "needs": ["value"],
                "with": {"argv": ["sh", "-c", "echo one; echo two >&2; echo three"]},
            },
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        ex = await h.run("chatty")
        assert ex.state == E.COMPLETED
        events = await h.store.read(h.store.list_events, ex.id)
        out = [(e.task_id, e.level, e.message) for e in events if e.kind == "output"]
        cmd = [(level, message) for task, level, message in out if task == "cmd"]
        assert [m for _, m in cmd if m != "two"] == ["one", "three"]
        assert (4, "two") in cmd  # stderr is a warning
        value = [m for task, _, m in out if task == "value"]
        assert value == [
            "tests.value: value=ok\\x0a2026-01-01 error [x#1] forged entry\\x1b[2J",
            "ok",
            "2026-01-01 error [x#1] forged entry\\x1b[2J",
        ]
        levels_seen = {level for task, level, _ in out if task == "levels"}
        assert 7 not in levels_seen  # debug is below the default floor (info)
        assert {3, 4, 6} <= levels_seen
        # a task's lines come before the entry saying it completed
        kinds = [(e.kind, e.task_id) for e in events]
        assert kinds.index(("output", "cmd")) > kinds.index(("output", "value"))
