"""Chaos: batches of random and hostile definitions, inputs, signals and commands thrown at
a real engine next to well-behaved executions. Whatever the batch, containment holds: the
well-behaved complete, the hostile end (or wait as built to) or are refused at the door with
a domain error, no tick raises, the engine does not spin and nothing is left RUNNING idle.

The examples are fixed (derandomized); EXECFLOW_CHAOS_EXAMPLES=500 runs that many new ones."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from execflow.clock import ManualClock
from execflow.errors import Conflict, InvalidInput, NotFound
from execflow.records import ExecutionRecord, TaskRunRecord
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.conftest import _pg_store, _sqlite_store
from tests.harness import Harness, harness
from tests.test_engine import py

E = ExecutionState
# what a caller may be told when it asks for something wrong (a 4xx, never a 500)
REFUSALS = (InvalidInput, NotFound, Conflict)
MAX_TICKS = 2_000  # far above what a batch needs: reaching it means the engine spins
HORIZON = timedelta(days=3650)  # how far the clock jumps to timers (a hostile one may be far)

# stands for an int too long for Python to print (past 4,300 digits), made when it is used:
# hypothesis prints the batch of a failing example
LONG = "{long int}"

# values a task's output, an input or a definition may carry where a duration, a list,
# a key or a time is expected
HOSTILE_VALUES: list[Any] = [
    None, True, 0, -1, 1e30, 10**400, 2**63, 1e9, "abc", "", "-5s", "9999999999d", "1h",
    [1], {"a": 1}, [[[[[[[[1]]]]]]]], "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00", "\u0000", "\ud800", "x" * 300_000,
]  # fmt: skip

# expressions that evaluate to values JSON cannot hold, or fail, or would cost seconds and
# gigabytes without the sandbox's budgets (the engine's loop is every execution's)
HOSTILE_EXPRESSIONS = [
    "params.n ** 10 ** 7", "[1] * 10 ** 7", "'a' * 10 ** 9", "7 ** (10 ** 7)",
    "'%999999999s' % 1", "range(10 ** 5) | join(',')",
    "10 ** 400", "2 ** 20000", "params.n ** 50000", "'a' * 10 ** 6", "[1] * 10 ** 5",
    "[" * 40 + "1" + "]" * 40, "1 / 0", "params.n // 0", "params.none.x", "range(3)",
    "range(10 ** 9)", "{1: 2}", "{(1, 2): 3}", "'a\\x00b'", "'\\ud800'", "cycler(1, 2)",
    "lipsum()", "10.0 ** 400", "(10 ** 400) * 1.0", "[1, 2] | map('string')",
    "dict(a=1).items()", "(1, 2)", "params.n | nosuchfilter", "nosuchname", "params.missing",
    "params.__class__", "params.n.__class__.__mro__", "(", "tasks.a.output.x.y.z",
]  # fmt: skip

# where an expression is used
PLACES = ["with", "outputs", "for_each", "duration", "until", "key", "extend", "timeout", "child"]


T = TypeVar("T")


def _pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    """One of `options`, uniformly: hypothesis's own choices favour the first ones, and a
    few examples should reach far into these lists."""
    choice: T = draw(st.randoms(use_true_random=False)).choice(options)
    return choice


@dataclass
class Case:
    """One execution of a batch: its workflow, how it starts and what it may end as."""

    definition: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    others: list[dict[str, Any]] = field(default_factory=list)  # workflows it starts
    outputs: dict[str, Any] | None = None  # well-behaved: completes with these
    answer: Any = None  # well-behaved: the signal payload it waits for


@dataclass
class Batch:
    good: list[Case]
    hostile: list[Case]
    steering: list[tuple[int, str, int]]  # (ticks before, command, target)


# well-behaved ----------------------------------------------------------------------------


@st.composite
def good_cases(draw: st.DrawFn) -> Case:
    kind = _pick(draw, ["seq", "python", "fanout", "sleep", "signal"])
    n = draw(st.integers(0, 4))
    if kind == "seq":
        tasks: dict[str, Any] = {"t0": {"action": "echo", "with": {"i": 0}}}
        for i in range(1, n + 1):
            expr = f"${{{{ tasks.t{i - 1}.output.i + 1 }}}}"
            tasks[f"t{i}"] = {"action": "echo", "needs": [f"t{i - 1}"], "with": {"i": expr}}
        wf = {"tasks": tasks, "outputs": {"last": f"${{{{ tasks.t{n}.output.i }}}}"}}
        return Case(wf, outputs={"last": n})
    if kind == "python":
        wf = {
            "parameters": {"a": {"type": "integer"}},
            "tasks": {"t": py("add", args={"a": "${{ params.a }}", "b": 2})},
            "outputs": {"sum": "${{ tasks.t.output }}"},
        }
        return Case(wf, inputs={"a": n}, outputs={"sum": n + 2})
    if kind == "fanout":
        items = list(range(n))
        wf = {
            "parameters": {"items": {"type": "array"}},
            "tasks": {
                "each": {
                    "action": "echo",
                    "for_each": "${{ params.items }}",
                    "concurrency": draw(st.integers(1, 3)),
                    "with": {"v": "${{ item * 2 }}"},
                }
            },
            "outputs": {"all": "${{ tasks.each.output }}"},
        }
        return Case(wf, inputs={"items": items}, outputs={"all": [{"v": 2 * i} for i in items]})
    if kind == "sleep":
        wf = {
            "tasks": {
                "nap": {"action": "sleep", "with": {"duration": f"{n}s"}},
                "after": {"action": "echo", "needs": ["nap"], "with": {"n": n}},
            },
            "outputs": {"n": "${{ tasks.after.output.n }}"},
        }
        return Case(wf, outputs={"n": n})
    schema = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    wf = {
        "tasks": {"ask": {"action": "signal", "with": {"name": "go", "schema": schema}}},
        "outputs": {"answer": "${{ tasks.ask.output }}"},
    }
    return Case(wf, outputs={"answer": {"ok": True}}, answer={"ok": True})


# hostile ---------------------------------------------------------------------------------


def _consumer(place: str, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task that uses `source` (an expression) at `place`, and the workflow's outputs."""
    if place == "with":
        return {"action": "echo", "with": {"v": source}}, {}
    if place == "outputs":
        return {"action": "echo"}, {"v": source}
    if place == "for_each":
        return {"action": "echo", "for_each": source, "with": {"v": "${{ item }}"}}, {}
    if place in ("duration", "until"):
        return {"action": "sleep", "with": {place: source}}, {}
    if place == "key":
        return {"action": "echo", "store": {"name": "m", "key": source}}, {}
    if place == "extend":
        return {"action": "echo", "with": {"v": source}, "store": {"name": "l", "extend": True}}, {}
    if place == "timeout":
        return {"action": "signal", "with": {"name": "go", "timeout": source}}, {}
    child = {"workflow": "${{ execution.workflow }}-child", "inputs": {"x": source}}
    return {"action": "workflow", "with": child}, {}


def _with_consumer(place: str, source: str, first: dict[str, Any] | None) -> dict[str, Any]:
    consumer, outputs = _consumer(place, source)
    tasks: dict[str, Any] = {}
    if first is not None:
        tasks["a"] = first
        consumer["needs"] = ["a"]
    tasks["b"] = consumer
    wf: dict[str, Any] = {
        "parameters": {"n": {"type": "integer", "default": 7}, "none": {"type": "object"}},
        "stores": {"m": {"type": "map"}, "l": {"type": "list"}},
        "tasks": tasks,
        "outputs": outputs,
    }
    return wf


def _child(place: str) -> list[dict[str, Any]]:
    if place != "child":
        return []
    return [{"name": "-child", "parameters": {"x": {"type": "integer", "required": True}},
             "tasks": {"t": {"action": "echo", "with": {"x": "${{ params.x }}"}}}}]  # fmt: skip


@st.composite
def hostile_expressions(draw: st.DrawFn) -> Case:
    """An expression that fails, costs or makes what JSON cannot hold, used somewhere."""
    expr = _pick(draw, HOSTILE_EXPRESSIONS)
    place = _pick(draw, PLACES)
    source = f"${{{{ {expr} }}}}"
    return Case(_with_consumer(place, source, None), others=_child(place))


@st.composite
def hostile_values(draw: st.DrawFn) -> Case:
    """A hostile value from another task's output (or an input) where a duration, a time,
    a list, a key or a child's input is expected."""
    value = _pick(draw, HOSTILE_VALUES)
    place = _pick(draw, PLACES)
    via_input = draw(st.booleans())
    if via_input:
        wf = _with_consumer(place, "${{ params.none.x }}", None)
        inputs = {"none": {"x": value}}
    else:
        wf = _with_consumer(place, "${{ tasks.a.output.x }}", {"action": "echo", "with": {}})
        wf["tasks"]["a"]["with"]["x"] = value
        inputs = {}
    return Case(wf, inputs=inputs, others=_child(place))


@st.composite
def hostile_tasks(draw: st.DrawFn) -> Case:
    """Python tasks that raise, return what is not JSON, kill their worker or run late,
    under hostile retry policies and timeouts."""
    function = _pick(draw, ["boom", "not_json", "die_once", "die", "slow", "add"])
    choices: dict[str, dict[str, Any]] = {
        "boom": {"message": _pick(draw, ["", "x" * 20_000, "\u0000"])},
        "die_once": {"marker": "{marker}"},
        "slow": {"seconds": 0.05},
        "add": {"a": "${{ params.n }}", "b": _pick(draw, [1, "one", None])},
    }
    args = choices.get(function, {})
    task = py(function, args=args)
    if draw(st.booleans()):
        task["timeout"] = _pick(draw, HOSTILE_VALUES)
    if draw(st.booleans()):
        delay = _pick(draw, HOSTILE_VALUES)
        task["retry"] = {
            "max_attempts": _pick(draw, [0, 1, 3, 101]),
            "initial_delay": delay,
            "max_delay": _pick(draw, [delay, 1e30, "1s"]),
        }
    if draw(st.booleans()):  # the same, once per item of a fan-out
        task["for_each"] = "${{ [1, 2, 3] }}"
        task["concurrency"] = _pick(draw, [1, 2, 3])
        task["on_item_failure"] = _pick(draw, ["fail_fast", "run_all"])
    wf = {"parameters": {"n": {"type": "integer", "default": 7}}, "tasks": {"t": task}}
    return Case(wf)


@st.composite
def hostile_children(draw: st.DrawFn) -> Case:
    """Child workflows that do not exist, get bad inputs, fail, or start themselves."""
    kind = _pick(draw, ["missing", "no_input", "bad_input", "fails", "recursive"])
    child = {
        "name": "-child",
        "parameters": {"x": {"type": "integer", "required": True}},
        "tasks": {"t": py("boom") if kind == "fails" else {"action": "echo"}},
    }
    inputs = {"no_input": {}, "bad_input": {"x": "seven"}}.get(kind, {"x": 1})
    target = {
        "missing": "nosuchworkflow",
        "recursive": "${{ execution.workflow }}",
    }.get(kind, "${{ execution.workflow }}-child")
    wf = {
        "parameters": {"x": {"type": "integer", "default": 1}},
        "tasks": {"c": {"action": "workflow", "with": {"workflow": target, "inputs": inputs}}},
    }
    return Case(wf, others=[] if kind in ("missing", "recursive") else [child])


@st.composite
def hostile_waits(draw: st.DrawFn) -> Case:
    """A signal wait (some with a schema and a deadline) for steering to poke at."""
    schema = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    args: dict[str, Any] = {"name": "go", "schema": _pick(draw, [schema, None])}
    if draw(st.booleans()):
        args["timeout"] = _pick(draw, ["1s", "1h", 1e9])
    tasks = {
        "first": py("slow", args={"seconds": 0.02}),
        "ask": {"action": "signal", "needs": ["first"], "with": args},
        "after": {"action": "echo", "needs": ["ask"], "with": {"got": "${{ tasks.ask.output }}"}},
    }
    return Case({"tasks": tasks})


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


ECHO = {"action": "echo"}

# refused at the door (or not: then they must end like any other)
BROKEN_DEFINITIONS: list[dict[str, Any]] = [
    {"tasks": {}},
    {"tasks": {"t": {"action": "nosuchaction"}}},
    {"tasks": {"t": {"action": "echo", "needs": ["t"]}}},
    {"tasks": {"t": {"action": "echo", "needs": ["ghost"]}}},
    {"tasks": {"t": {"action": "echo", "with": {"v": "${{ ( }}"}}}},
    {"tasks": {"t": {"action": "echo", "with": {"v": "\u0000"}}}},
    {"tasks": {"t": {"action": "echo", "with": {"v": "\ud800"}}}},
    {"tasks": {"t": {"action": "echo", "with": {"v": _nested(40)}}}},
    {"tasks": {"t": {"action": "echo", "with": {"v": float("nan")}}}},
    {"tasks": {"t": {"action": "echo", "with": {1: "non-string key"}}}},
    {"tasks": {"t": {"action": "echo", "with": {"v": LONG}}}},
    {
        "parameters": {"x": {"type": "number", "default": 10**400}},
        "tasks": {"t": {"action": "echo"}},
    },
    {"parameters": {"x": {"type": "integer", "enum": [LONG]}}, "tasks": {"t": {"action": "echo"}}},
    {"tasks": {"t": {"action": "echo", "timeout": "-1s"}}},
    {"tasks": {"t": {"action": "echo", "timeout": 1e30}}},
    {"tasks": {"t": {"action": "echo", "retry": {"max_attempts": 0}}}},
    {"tasks": {"t": {"action": "echo", "for_each": "x ${{ [1] }}"}}},
    {"tasks": {"t": {"action": "echo", "store": {"name": "ghost"}}}},
    {"tasks": {"t": {"action": "sleep", "with": {"duration": "forever"}}}},
    {"tasks": {"t": {"action": "sleep", "with": {"until": "9999-12-31T23:59:59+00:00"}}}},
    {"tasks": {"t": {"action": "signal", "with": {"name": "go", "schema": {"type": 5}}}}},
    {"tasks": {"t": {"action": "workflow", "with": {"workflow": "-bad name"}}}},
    {"tasks": {"t": {"action": "python", "with": {"function": "os:system", "args": {}}}}},
    {"tasks": {"t": {"action": "command", "with": {"argv": []}}}},
    {"parameters": {"p": {"type": "nosuchtype"}}, "tasks": {"t": {"action": "echo"}}},
    {"tasks": {"t": {"action": "echo"}}, "outputs": {"o": "${{ tasks.ghost.output }}"}},
    {"tasks": {"t": {"action": "echo"}}, "schedules": [{"name": "s", "cron": "* * * 99 *"}]},
]

HOSTILE_STARTS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"p": "\u0000"}, {}),
    ({"p": "\ud800"}, {}),
    ({"p": float("inf")}, {}),
    ({"p": 5}, {}),
    ({"p": LONG}, {}),
    ({"x": 10**400}, {}),
    ({"x": LONG}, {}),
    ({"q": 1}, {}),
    ({"p": "x" * 300_000}, {}),
    ({}, {"labels": {"k": 5}}),
    ({}, {"name": "x" * 1000}),
    ({}, {"stores": {"ghost": [1]}}),
    ({}, {"stores": {"m": "not a map"}}),
    ({}, {"log_level": "loud"}),
    ({}, {"callback": "http://127.0.0.1/"}),
    ({}, {"scheduled_at": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)}),
    ({}, {"scheduled_at": datetime(1, 1, 1, tzinfo=UTC)}),
    ({}, {"revision": 99}),
]


@st.composite
def hostile_doors(draw: st.DrawFn) -> Case:
    """A definition or a start request the service should refuse (or else run safely)."""
    if draw(st.booleans()):
        return Case(dict(_pick(draw, BROKEN_DEFINITIONS)))
    inputs, options = _pick(draw, HOSTILE_STARTS)
    wf = {
        "parameters": {"p": {"type": "string"}, "x": {"type": "number"}},
        "stores": {"m": {"type": "map"}},
        "tasks": {"t": {"action": "echo", "with": {"p": "${{ params.p }}"}}},
    }
    return Case(wf, inputs=dict(inputs), options=dict(options))


@st.composite
def hostile_secrets(draw: st.DrawFn) -> Case:
    """A secret input (short, empty, long) meeting hostile outputs the engine must mask."""
    secret = _pick(draw, ["", "5", "abcd", "x" * 1000, "\\", "{long int}"])
    expr = _pick(draw, SECRET_EXPRESSIONS)
    task = _pick(draw, [
        {"action": "echo", "with": {"v": f"${{{{ {expr} }}}}"}},
        py("reveal", args={"value": "${{ params.s }}"}),
        {"action": "workflow", "with": {"workflow": "${{ execution.workflow }}", "inputs": {}}},
        {"action": "echo", "store": {"name": "m", "key": "${{ params.s }}"}},
    ])  # fmt: skip
    wf = {
        "parameters": {"s": {"type": "string", "secret": True}, "n": {"type": "integer"}},
        "stores": {"m": {"type": "map"}},
        "tasks": {"t": task},
        "outputs": {"o": f"${{{{ {expr} }}}}"},
    }
    return Case(wf, inputs={"s": secret, "n": 7})


SECRET_EXPRESSIONS = [
    "params.s", "{params.s: 1, 'k': params.s}", "params.n ** 50000", "(params.s ~ 'x') * 1000",
    "[params.s] * 1000", "params.s | list", "params.s ~ '\\x00'", "7",
]  # fmt: skip


HOSTILE = [
    hostile_secrets,
    hostile_expressions,
    hostile_values,
    hostile_tasks,
    hostile_children,
    hostile_waits,
    hostile_doors,
]


@st.composite
def hostile_cases(draw: st.DrawFn) -> Case:
    return draw(_pick(draw, HOSTILE)())


STEERS = [
    "cancel", "force", "suspend", "resume", "answer", "misfit", "unawaited", "nul", "retry",
    "rerun", "restart", "long", "grace",
]  # fmt: skip


@st.composite
def steerings(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """Commands (after 0 to 3 ticks each) for random hostile executions."""
    rnd = draw(st.randoms(use_true_random=False))
    count = rnd.randint(0, 6)
    return [(rnd.randint(0, 3), rnd.choice(STEERS), rnd.randrange(100)) for _ in range(count)]


batches = st.builds(
    Batch,
    good=st.lists(good_cases(), min_size=1, max_size=3),
    hostile=st.lists(hostile_cases(), min_size=1, max_size=4),
    steering=steerings(),
)


# running a batch -------------------------------------------------------------------------


@dataclass
class Started:
    case: Case
    id: str


@dataclass
class Steered:
    """What the operator's commands were accepted for (by execution id)."""

    cancelled: set[str] = field(default_factory=set)
    suspended: set[str] = field(default_factory=set)


@contextmanager
def _fresh_store(backend: str, template: str | None, folder: Path) -> Iterator[Store]:
    """A store of its own for one batch (hypothesis runs many in one test)."""
    if backend == "postgres":
        assert template is not None
        yield from _pg_store(template)
        return
    store = _sqlite_store(folder)
    try:
        yield store
    finally:
        store.close()


def _placed(value: Any, folder: Path) -> Any:
    """`value` with `{marker}` pointing into this batch's folder, and LONG made a number."""
    if value == LONG:
        return 2**20000
    if isinstance(value, str):
        return value.replace("{marker}", str(folder / "marker"))
    if isinstance(value, dict):
        return {k: _placed(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_placed(v, folder) for v in value]
    return value


async def _start(h: Harness, name: str, case: Case, folder: Path) -> str:
    for other in case.others:
        child = _placed({**other, "name": name + other["name"]}, folder)
        await h.service.put_workflow(h.admin, child["name"], child)
    definition = _placed({**case.definition, "name": name}, folder)
    await h.service.put_workflow(h.admin, name, definition)
    record = await h.service.start(h.admin, name, _placed(case.inputs, folder), **case.options)
    return record.id


async def _steer(h: Harness, target: str, command: str, steered: Steered) -> None:
    """One command, as an operator would send it; refusals are answers, not faults."""
    s = h.service
    try:
        if command in ("cancel", "force", "grace"):
            grace = {"grace": -1.0, "force": None, "cancel": 0.5}[command]
            await s.cancel(h.admin, target, force=command == "force", grace=grace)
            steered.cancelled.add(target)
        elif command == "suspend":
            await s.suspend(h.admin, target)
            steered.suspended.add(target)
        elif command == "resume":
            await s.resume(h.admin, target)
            steered.suspended.discard(target)
        elif command == "retry":
            await s.retry(h.admin, target)
        elif command == "rerun":
            record = await s.get_execution(h.admin, target)
            first = next(iter((await s.definition_of(record)).tasks))
            await s.rerun(h.admin, target, first)
        else:
            payload = {
                "answer": {"ok": True},
                "misfit": "not an object",
                "nul": {"ok": "\0"},
                "long": {"ok": _placed(LONG, Path())},
            }
            name = "nothing-waits" if command == "unawaited" else "go"
            await s.signal(h.admin, target, name, payload.get(command, {}))
    except REFUSALS:
        pass


def _awaits(t: TaskRunRecord, held: dict[str, ExecutionRecord], timed: bool, parked: bool) -> bool:
    """Whether a RUNNING task run, with nothing in flight, waits for something that will come.
    `parked`: its execution is suspended and the engine keeps the attempt in its pool's line.
    An attempt queued for a worker is not started while its execution is suspended (no task
    run starts then); it starts on the resume, as the SUSPENDED execution itself waits for."""
    waiting = t.waiting or {}
    child = held.get(waiting.get("child") or "")
    return bool(
        "signal" in waiting
        or "items" in waiting
        or (child and not child.state.terminal)
        or (t.wake_at and timed)
        or (waiting.get("queued") and t.started_at is None and parked)
    )


def _lineage(ex: ExecutionRecord, held: dict[str, ExecutionRecord]) -> set[str]:
    """An execution and its ancestors (a parent's cancel or suspend reaches its children)."""
    found = {ex.id}
    while (parent := held.get(ex.parent_id or "")) is not None:
        found.add(parent.id)
        ex = parent
    return found


def _problem(
    ex: ExecutionRecord,
    held: dict[str, ExecutionRecord],
    steered: Steered,
    timed: set[str],
    lined: set[tuple[str, str, int]],
) -> str:
    """Why `ex`, with the engine idle, is neither ended nor resting as designed ('' if it is):
    `steered` says what was cancelled or suspended, `timed` has a timer past the horizon,
    `lined` the attempts in the engine's line for a worker."""
    running = [t for t in ex.task_runs if t.state is TaskRunState.RUNNING]
    for t in running:
        parked = ex.state is E.SUSPENDED and (ex.id, t.task_id, t.attempt) in lined
        if not _awaits(t, held, ex.id in timed, parked):
            return f"task run {t.task_id}#{t.attempt} RUNNING with nothing in flight"
    error = ex.error or {}
    fine = {
        E.COMPLETED: True,
        E.FAILED: isinstance(error.get("type"), str) and bool(error.get("message")),
        E.CANCELED: bool(_lineage(ex, held) & steered.cancelled),
        E.SUSPENDED: bool(_lineage(ex, held) & steered.suspended),
        E.WAITING_ON_SIGNAL: any("signal" in (t.waiting or {}) for t in running),
        E.RUNNING: bool(running),
        E.WAITING: ex.id in timed,
    }
    if fine.get(ex.state, False):
        return ""
    return f"{ex.state} with nothing to wait for, nobody asking for it, or no error: {error!r}"


async def _run_batch(store: Store, batch: Batch, folder: Path) -> None:
    """Start the batch, steer it, and settle it; a `restart` command crashes the engine
    (kill -9) and the rest runs on a new one under the same node id."""
    clock = ManualClock()
    commands = [command for _, command, _ in batch.steering]
    cut = commands.index("restart") if "restart" in commands else len(commands)
    steered = Steered()
    async with harness(store, clock, workers=2) as h:
        good = [Started(c, await _start(h, f"ok{i}", c, folder)) for i, c in enumerate(batch.good)]
        for i, case in enumerate(batch.hostile):
            with contextlib.suppress(*REFUSALS):  # refused at the door: nothing stored to run
                await _start(h, f"bad{i}", case, folder)
        await _steer_all(h, batch.steering[:cut], steered)
        if cut == len(commands):
            await _settle_and_check(h, good, steered)
            return
        await h.crash()
    async with harness(store, clock, workers=2) as h:
        await _steer_all(h, batch.steering[cut + 1 :], steered)
        await _settle_and_check(h, good, steered)


async def _steer_all(h: Harness, steps: list[tuple[int, str, int]], steered: Steered) -> None:
    """Each step: a few ticks, then a command for one of the hostile executions (those
    started, their children and reruns)."""
    for ticks, command, target in steps:
        for _ in range(ticks):
            await h.engine.tick()  # a raise here fails the test
            await h.engine.wait(0.01)
        listed, _ = await h.service.list_executions(h.admin, limit=1000, oldest_first=True)
        hostile = [r.id for r in listed if r.workflow_name.startswith("bad")]
        if hostile and command != "restart":
            await _steer(h, hostile[target % len(hostile)], command, steered)


async def _settle_and_check(h: Harness, good: list[Started], steered: Steered) -> None:
    # Timers are jumped to up to a horizon: a sleep until the year 9999 is left waiting.
    horizon = h.clock.now() + HORIZON
    await h.engine.run_until_idle(max_ticks=MAX_TICKS, until=horizon)
    for s in good:
        if s.case.answer is not None:
            await h.service.signal(h.admin, s.id, "go", s.case.answer)
    await h.engine.run_until_idle(max_ticks=MAX_TICKS, until=horizon)
    assert not h.engine._inflight
    timed = {key[0] for *_, key in h.engine._timers}
    lined = {waiter.key for waiter in h.engine._pool}

    for s in good:
        ex = await h.service.get_execution(h.admin, s.id)
        assert (ex.state, ex.outputs) == (E.COMPLETED, s.case.outputs), (s.case, ex.error)
    listed, _ = await h.service.list_executions(h.admin, limit=1000)
    held = {r.id: await h.service.get_execution(h.admin, r.id) for r in listed}
    problems = {i: p for i, ex in held.items() if (p := _problem(ex, held, steered, timed, lined))}
    assert not problems, problems


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
# Newer hypothesis releases build the repr of an example eagerly and warn when it is large:
# a batch carries hostile values of up to 300 kB on purpose.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(
    max_examples=int(os.environ.get("EXECFLOW_CHAOS_EXAMPLES", "15")),
    deadline=None,
    database=None,  # nothing written to the working tree; failures print their batch
    derandomize="EXECFLOW_CHAOS_EXAMPLES" not in os.environ,  # more examples: new ones
    phases=[Phase.explicit, Phase.generate],  # shrinking real engine runs costs minutes
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(batch=batches)
async def test_containment_holds_under_chaos(
    backend: str, request: pytest.FixtureRequest, batch: Batch
) -> None:
    template = request.getfixturevalue("pg_template") if backend == "postgres" else None
    note(repr(batch))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with _fresh_store(backend, template, folder) as store:
            await _run_batch(store, batch, folder)
