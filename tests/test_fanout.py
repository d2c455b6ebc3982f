"""Fan-out (`for_each`) and stores, driven through the engine on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from execflow.clock import ManualClock, SystemClock
from execflow.definition import parse_definition
from execflow.errors import InvalidDefinition
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.harness import harness
from tests.test_control import get
from tests.test_engine import py

E, T = ExecutionState, TaskRunState


def fanout(items: Any, **task: Any) -> dict[str, Any]:
    return {
        "name": "fan",
        "parameters": {"items": {"type": "array", "default": items}},
        "tasks": {
            "each": {
                "action": "echo",
                "for_each": "${{ params.items }}",
                "with": {"value": "${{ item }}", "at": "${{ index }}"},
                **task,
            },
            "after": {
                "action": "echo",
                "needs": ["each"],
                "with": {"count": "${{ tasks.each.output | length }}"},
            },
        },
        "outputs": {"all": "${{ tasks.each.output }}", "count": "${{ tasks.after.output.count }}"},
    }


async def test_a_task_runs_once_per_item_and_its_output_is_the_ordered_list(
    store: Store,
) -> None:
    async with harness(store) as h:
        await h.apply(fanout(["a", "b", "c"]))
        ex = await h.run("fan")
        assert ex.state == E.COMPLETED
        assert ex.outputs == {
            "all": [{"value": "a", "at": 0}, {"value": "b", "at": 1}, {"value": "c", "at": 2}],
            "count": 3,
        }
        # the execution shows the fan-out task; its items are paged separately
        assert [t.task_id for t in ex.task_runs] == ["each", "after"]
        items = await h.store.read(h.store.item_runs, ex.id, "each", 0, 10)
        assert [(t.task_id, t.item, t.state) for t in items] == [
            ("each[0]", 0, T.COMPLETED),
            ("each[1]", 1, T.COMPLETED),
            ("each[2]", 2, T.COMPLETED),
        ]


async def test_an_empty_list_completes_at_once_and_a_non_list_fails(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(fanout([]))
        ex = await h.run("fan")
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"all": [], "count": 0})
        ex = await h.run("fan", {"items": None})
        await h.apply({**fanout([]), "parameters": {"items": {"type": "object", "default": {}}}})
        ex = await h.run("fan")
        assert ex.state == E.FAILED
        assert ex.error is not None and ex.error["type"] == "for_each"


async def test_concurrency_bounds_the_items_running_at_once(store: Store, tmp_path: Path) -> None:
    wf = {
        "name": "bounded",
        "tasks": {
            "each": {
                **py("slow", args={"seconds": 0.05}),
                "for_each": "${{ [1, 2, 3, 4, 5] }}",
                "concurrency": 2,
            }
        },
    }
    async with harness(store, SystemClock()) as h:
        await h.apply(wf)
        started = await h.service.start(h.admin, "bounded")
        most = 0
        for _ in range(200):
            await h.engine.tick()
            running = (
                [
                    a
                    for k, a in h.engine.runs[started.id].attempts.items()
                    if k.startswith("each[") and a.state is T.RUNNING
                ]
                if started.id in h.engine.runs
                else []
            )
            most = max(most, len(running))
            if started.id not in h.engine.runs:
                break
            await h.engine.wait(1.0)
        ex = await get(h, started.id)
        assert ex.state == E.COMPLETED
        assert most == 2


@pytest.mark.parametrize(("policy", "ran"), [("fail_fast", 2), ("run_all", 4)])
async def test_item_failures_follow_the_policy(store: Store, policy: str, ran: int) -> None:
    wf = {
        "name": "failing",
        "tasks": {
            "each": {
                **py("add", args={"a": "${{ item }}", "b": 1}),
                "for_each": "${{ [1, 'x', 3, 4] }}",
                "concurrency": 1,
                "on_item_failure": policy,
            }
        },
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("failing")
        assert ex.state == E.FAILED
        assert ex.error is not None
        assert ex.error["task"] == "each"
        assert ex.error["message"] == "1 of 4 items failed" if policy == "run_all" else True
        assert ex.error["items"][0]["index"] == 1
        items = await h.store.read(h.store.item_runs, ex.id, "each", 0, 10)
        assert len(items) == ran


async def test_retry_reruns_only_the_failed_items(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "n"
    wf = {
        "name": "retry-items",
        "tasks": {
            "each": {
                **py(
                    "flaky",
                    args={
                        "marker": "${{ '" + str(marker) + "-' ~ item }}",
                        "failures": "${{ 1 if item == 2 else 0 }}",
                    },
                ),
                "for_each": "${{ [1, 2, 3] }}",
                "on_item_failure": "run_all",
            }
        },
    }
    async with harness(store) as h:
        await h.apply(wf)
        ex = await h.run("retry-items")
        assert ex.state == E.FAILED
        await h.service.retry(h.admin, ex.id)
        await h.engine.run_until_idle()
        ex = await get(h, ex.id)
        assert ex.state == E.COMPLETED
        items = await h.store.read(h.store.item_runs, ex.id, "each", 0, 10)
        assert [(t.item, t.attempt, t.round, t.state) for t in items] == [
            (0, 1, 0, T.COMPLETED),
            (1, 1, 0, T.FAILED),
            (1, 2, 1, T.COMPLETED),
            (2, 1, 0, T.COMPLETED),
        ]


async def test_a_fan_out_resumes_after_a_crash(store: Store) -> None:
    wf = {
        "name": "resumable",
        "tasks": {
            "each": {
                "action": "signal",
                "for_each": "${{ ['a', 'b'] }}",
                "with": {"name": "${{ 'go-' ~ item }}"},
            }
        },
        "outputs": {"got": "${{ tasks.each.output }}"},
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        ex = await a.run("resumable")
        assert ex.state == E.WAITING_ON_SIGNAL
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        for name in ("go-a", "go-b"):
            await b.store.call(
                b.store.request,
                ex.id,
                b.admin.project_id,
                "signal",
                {"name": name, "payload": name},
                None,
                clock.now(),
                print,
            )
            b.engine.notify()
            await b.engine.run_until_idle()
        ex = await get(b, ex.id)
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"got": ["go-a", "go-b"]})


async def test_ten_thousand_items(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(fanout(list(range(10_000))))
        ex = await h.run("fan")
        assert ex.state == E.COMPLETED
        assert ex.outputs is not None and ex.outputs["count"] == 10_000
        assert ex.outputs["all"][9_999] == {"value": 9_999, "at": 9_999}


def test_fan_out_definitions_are_checked() -> None:
    wf = {
        "name": "bad",
        "tasks": {
            "a": {"action": "echo", "for_each": "items: ${{ [1] }}", "with": {"x": "${{ item }}"}},
            "b": {"action": "echo", "concurrency": 2, "with": {"x": "${{ item }}"}},
            "c": {"action": "echo", "for_each": "${{ stores.nope }}"},
        },
    }
    with pytest.raises(InvalidDefinition) as caught:
        parse_definition(wf)
    found = {(d.pointer, d.reason.split(" in ")[0]) for d in caught.value.details}
    assert found == {
        ("/tasks/a/for_each", "must be one whole expression: ${{ … }}"),
        ("/tasks/b/concurrency", "only with 'for_each'"),
        ("/tasks/b/with/x", "unknown name 'item'"),
        ("/tasks/c/for_each", "unknown store 'nope'"),
    }


# stores ---------------------------------------------------------------------------------------

STORES: dict[str, Any] = {
    "name": "collect",
    "parameters": {"words": {"type": "array", "default": ["kiwi", "fig", "apple"]}},
    "stores": {
        "seen": {"type": "list", "initial": ["seed"]},
        "lengths": {"type": "map"},
        "last": {"type": "value"},
    },
    "tasks": {
        "measure": {
            "action": "echo",
            "for_each": "${{ params.words }}",
            "with": {"word": "${{ item }}", "n": "${{ item | length }}"},
            "store": {"name": "lengths", "key": "${{ output.word }}"},
        },
        "remember": {
            "action": "echo",
            "needs": ["measure"],
            "for_each": "${{ stores.lengths | dictsort | map('first') | list }}",
            "with": {"w": "${{ item }}"},
            "store": {"name": "seen"},
        },
        "done": {
            "action": "echo",
            "needs": ["remember"],
            "with": {"count": "${{ stores.seen | length }}"},
            "store": {"name": "last"},
        },
    },
    "outputs": {"seen": "${{ stores.seen }}", "last": "${{ stores['last'] }}"},
}


async def test_tasks_write_stores_and_read_them_and_fan_out_over_them(store: Store) -> None:
    async with harness(store) as h:
        await h.apply(STORES)
        ex = await h.run("collect")
        assert ex.state == E.COMPLETED, ex.error
        assert ex.outputs == {
            "seen": ["seed", {"w": "apple"}, {"w": "fig"}, {"w": "kiwi"}],
            "last": {"count": 4},
        }
        _, lengths = await h.service.store_content(h.admin, ex.id, "lengths")
        assert lengths == {
            "kiwi": {"word": "kiwi", "n": 4},
            "fig": {"word": "fig", "n": 3},
            "apple": {"word": "apple", "n": 5},
        }


async def test_a_start_overlays_initial_content_and_stores_survive_a_restart(
    store: Store,
) -> None:
    wf = {
        "name": "overlay",
        "stores": {"todo": {"type": "list", "initial": [1]}, "log": {"type": "list"}},
        "tasks": {
            "each": {
                "action": "echo",
                "for_each": "${{ stores.todo }}",
                "with": {"x": "${{ item * 10 }}"},
                "store": {"name": "log"},
            },
            "gate": {"action": "signal", "needs": ["each"], "with": {"name": "go"}},
            "sum": {
                "action": "echo",
                "needs": ["gate"],
                "with": {"total": "${{ stores.log | map(attribute='x') | sum }}"},
            },
        },
        "outputs": {"total": "${{ tasks.sum.output.total }}"},
    }
    clock = ManualClock()
    async with harness(store, clock, node_id="a") as a:
        await a.apply(wf)
        started = await a.service.start(a.admin, "overlay", stores={"todo": [2, 3]})
        await a.engine.run_until_idle()
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        await b.service.signal(b.admin, started.id, "go", None)
        await b.engine.run_until_idle()
        ex = await get(b, started.id)
        assert (ex.state, ex.outputs) == (E.COMPLETED, {"total": 50})


async def test_bad_store_overlays_are_refused_and_nothing_is_stored(store: Store) -> None:
    from execflow.errors import InvalidInput

    async with harness(store) as h:
        await h.apply(STORES)
        with pytest.raises(InvalidInput) as bad:
            await h.service.start(
                h.admin, "collect", stores={"seen": {"not": "a list"}, "ghost": [], "last": 1}
            )
        assert {d.pointer: d.reason for d in bad.value.details} == {
            "/stores/seen": "a list store holds an array",
            "/stores/ghost": "unknown store (last, lengths, seen)",
        }
        listed, _ = await h.service.list_executions(h.admin)
        assert listed == []


def test_store_definitions_are_checked() -> None:
    wf = {
        "name": "bad",
        "stores": {"m": {"type": "map", "initial": []}, "l": {"type": "list"}, "bad-name": {}},
        "tasks": {
            "a": {"action": "echo", "store": {"name": "m"}},
            "b": {"action": "echo", "store": {"name": "l", "key": "${{ output }}"}},
            "c": {"action": "echo", "store": {"name": "nope"}},
            "d": {"action": "echo", "with": {"x": "${{ stores.other }}"}},
        },
    }
    with pytest.raises(InvalidDefinition) as caught:
        parse_definition(wf)
    found = {(d.pointer, d.reason.split(" (")[0].split(" in ")[0]) for d in caught.value.details}
    assert found == {
        ("/stores/m/initial", "a map store holds an object"),
        ("/stores/bad-name", "'bad-name' is not a valid store name"),
        ("/tasks/a/store/key", "a map store needs a key"),
        ("/tasks/b/store/key", "a list store takes no key"),
        ("/tasks/c/store/name", "unknown store 'nope'"),
        ("/tasks/d/with/x", "unknown store 'other'"),
    }


def test_a_store_name_may_begin_with_a_digit_and_is_read_by_subscript() -> None:
    wf = {
        "name": "hexes",
        "stores": {"83cf8955": {"type": "value"}},
        "tasks": {"a": {"action": "echo", "with": {"x": "${{ stores['83cf8955'] }}"}}},
    }
    assert set(parse_definition(wf).stores) == {"83cf8955"}
    wf["tasks"] = {"a": {"action": "echo", "with": {"x": "${{ stores['83cf'] }}"}}}
    with pytest.raises(InvalidDefinition) as caught:
        parse_definition(wf)
    assert [d.reason.split(" in ")[0] for d in caught.value.details] == ["unknown store '83cf'"]
