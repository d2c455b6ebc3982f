"""The state an engine holds and the helpers every part of a tick shares."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from execflow.actions import ACTIONS, Action, Placement, Resources
from execflow.actions import http as http_action
from execflow.actions.subworkflow import WorkflowArgs
from execflow.clock import Clock, SystemClock
from execflow.definition import Definition
from execflow.engine.cache import DefinitionCache
from execflow.engine.run import Attempt, FanOut, Run
from execflow.engine.shares import PoolShares
from execflow.engine.timers import Timers
from execflow.errors import TaskFailure
from execflow.executors import LocalExecutor, Outcome, TaskLog
from execflow.limits import RateLimiter
from execflow.masking import Secrets, redact
from execflow.metrics import Metrics
from execflow.outbound import Network, Resolver, new_client
from execflow.records import CommandRecord, EventRecord, ExecutionRecord
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from execflow.store.database import is_outage
from execflow.store.ops import InsertEvent, Op

log = logging.getLogger("execflow.engine")

Key = tuple[str, str, int]  # execution id, task id, attempt
E, T = ExecutionState, TaskRunState


@dataclass(frozen=True)
class EngineSettings:
    node_id: str = ""
    lease_seconds: float = 30.0
    # how long this node counts as alive after a heartbeat (one every third of it): other
    # nodes take over what it holds once it has passed, whatever the leases say
    heartbeat_seconds: float = 9.0
    # how often a node compares what it holds with the other live nodes, and asks the
    # busiest to hand some over when it holds less than its share (0: never)
    spread_seconds: float = 15.0
    poll_seconds: float = 1.0
    # an execution that only waits, for longer than this (seconds) or for a command, is
    # parked: out of memory until it is due or woken (parking.py; EXECFLOW_PARK_AFTER;
    # 0: never, the default of an engine built by hand, as tests do)
    park_after: float = 0.0
    max_runs: int = 20_000
    claim_batch: int = 500
    shutdown_grace: float = 10.0
    # how long running tasks of a cancelled execution may take to finish (unless forced)
    cancel_grace: float = 30.0
    # items of one fan-out, and executions one start makes through children
    # (EXECFLOW_MAX_ITEMS)
    max_items: int = 10_000
    # child starts a project makes per second on this node, and at once after a quiet time
    # (EXECFLOW_START_RATE, EXECFLOW_START_BURST; a rate of 0: no limit)
    start_rate: float = 200.0
    start_burst: int = 1_000
    # attempts of one task lost to a crash, a worker's death or a takeover that are run
    # again whatever its retry policy (EXECFLOW_MAX_LOST_ATTEMPTS); one more fails it
    max_lost_attempts: int = 3
    # non-public networks `http` tasks may reach anyway (EXECFLOW_HTTP_ALLOWED_NETWORKS)
    http_allowed_networks: tuple[Network, ...] = ()
    # the most of the pool's slots one project holds while another project uses the pool
    # (EXECFLOW_PROJECT_POOL_SHARE; see shares.py)
    pool_share: float = 0.5

    def resolved_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Waiter:
    """An attempt waiting for a slot of the pool (see queue.py). A `fresh` one began in this
    tick and its row is not written yet: it is written started if it gets a slot, else queued."""

    key: Key
    args: Any
    fresh: bool = False
    scheduled: bool = False  # its row is a SCHEDULED one (a retry), not a new one


@dataclass(frozen=True)
class Fault:
    """What went wrong while the engine handled one execution: it fails that execution."""

    error: BaseException
    where: str
    parent_id: str | None = None


class EngineBase:
    """What an engine holds, and what every part of a tick uses: the audit log, timers,
    the placement of a task, faults. The parts (advancing, fan-out, commands, writing)
    are mixins over this; the methods one part calls of another are declared here."""

    def __init__(
        self,
        store: Store,
        executor: LocalExecutor,
        definitions: DefinitionCache,
        settings: EngineSettings | None = None,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        metrics: Metrics | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.definitions = definitions
        self.settings = settings or EngineSettings()
        self.node_id = self.settings.resolved_node_id()
        self.clock = clock or SystemClock()
        self._own_http = http is None
        self.resources = Resources(
            http=http or new_client(),
            outbound=http_action.policy(self.settings.http_allowed_networks),
            resolve=resolve,
        )
        self.runs: dict[str, Run] = {}
        self._secretive: set[str] = set()  # runs with secret inputs
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._timers = Timers()
        self._results: list[tuple[Key, Outcome]] = []
        self._task_logs: list[tuple[Key, datetime, TaskLog]] = []
        self._adopt: list[tuple[ExecutionRecord, Definition | None]] = []
        self._commands: list[CommandRecord] = []
        self._commands_wanted = False
        self._touched: set[str] = set()
        # executions that ended in the tick in progress: forgotten once it is written, so
        # that no tick looks at the executions nothing happened to
        self._ending: set[str] = set()
        # executions the tick in progress parks, and those of them the store kept (a
        # command waits for them): see parking.py
        self._parking: set[str] = set()
        self._kept: set[str] = set()
        self._released: set[str] = set()
        self._wake = asyncio.Event()
        self._claim_wanted = True
        self._next_poll = self.clock.now()
        self._next_renew = self.clock.now()
        # when this node last learnt which leases it holds: nothing starts once it is
        # older than a lease (another node may have taken the executions over meanwhile)
        self._renewed_at = self.clock.now()
        self._beat_at = self.clock.now()
        self._next_beat = self.clock.now()
        self._next_spread = self.clock.now()
        # after handing executions over, this node claims nothing until then (so that the
        # node that asked for them, not this one, takes them)
        self._quiet_until = self.clock.now()
        # for readiness: when the last tick ended (time.monotonic()), and how many ticks in a
        # row have failed since
        self.last_tick = time.monotonic()
        self.failed_ticks = 0
        # the pool's slots: held by attempts handed over, promised to those of the tick in
        # progress, and the attempts waiting for one, by project (see queue.py, shares.py);
        # and the attempts offered to it in the tick in progress
        self._pool: PoolShares[Waiter] = PoolShares(executor.size, self.settings.pool_share)
        self._offers: list[Waiter] = []
        # executions here that wait for a slot of their workflow's `concurrency`, and
        # whether to ask for slots at the next tick rather than the next poll (admission.py)
        self._unadmitted: set[str] = set()
        self._admission_wanted = False
        # audit entries for results of attempts this node no longer holds (written as is)
        self._stale_results: list[EventRecord] = []
        # attempts a worker was free for when this node could not vouch for its leases
        self._unstarted: list[tuple[Key, str, Any]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._draining = False
        self.listeners: list[Callable[[str, ExecutionState], None]] = []
        # told when an execution with a callback has ended (committed)
        self.callback_listeners: list[Callable[[], None]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # child starts asked for this tick, and those waiting for their project's start rate
        self._spawns: list[tuple[Run, Attempt, WorkflowArgs]] = []
        self._held: dict[str, deque[tuple[Run, Attempt, WorkflowArgs]]] = {}
        self._child_starts = RateLimiter(self.settings.start_rate, self.settings.start_burst)
        self._changed = asyncio.Event()
        # executions whose handling raised during this tick: written off as it commits
        self._faults: dict[str, Fault] = {}
        # fingerprints of keys other nodes sealed with and this one lacks: no claims meanwhile
        self._keys_missing: list[str] = []
        self.metrics = metrics or Metrics()
        self.metrics.held(lambda: len(self.runs))

    def _log(
        self,
        run: Run,
        ops: list[Op],
        now: datetime,
        level: int,
        kind: str,
        message: str,
        task_id: str | None = None,
        attempt: int | None = None,
        data: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        """Add an entry to the execution's audit log, if it is within its log level."""
        if level <= run.log_level:
            event = EventRecord(run.id, now, level, kind, message, task_id, attempt, data, actor)
            ops.append(InsertEvent(event))

    def _add_timer(self, when: datetime, kind: str, key: Key) -> None:
        self._timers.add(when, kind, key)
        self._wake.set()

    def _start_error(self, run: Run, task_id: str, exc: Exception) -> dict[str, Any]:
        """The error of a task that could not start: its own (`TaskFailure`), its arguments
        that do not validate, or an internal fault (logged and counted)."""
        if isinstance(exc, TaskFailure):
            return exc.as_error()
        if isinstance(exc, ValidationError):
            return {"type": "arguments", "message": validation_message(exc)}
        fault = Fault(exc, f"starting task {task_id}")
        log.error("execution %s: internal fault while %s", run.id, fault.where, exc_info=exc)
        self.metrics.internal_failure()
        return {"type": "internal", "message": fault_text(fault, run.hidden)}

    def _action_of(self, run: Run, task_id: str) -> Action:
        return ACTIONS[run.task(task_id).action]

    def _placement(self, run: Run, task_id: str) -> Placement:
        return ACTIONS[run.task(task_id).action].placement

    def _current(self, key: Key) -> tuple[Run | None, Attempt | None]:
        run = self.runs.get(key[0])
        if run is None:
            return None, None
        attempt = run.attempts.get(key[1])
        if attempt is None or attempt.attempt != key[2]:
            return run, None
        return run, attempt

    def _fault(self, run_id: str, exc: Exception, where: str, parent_id: str | None = None) -> None:
        """Something went wrong while handling one execution: it will fail in this tick,
        and nothing else it asked for this tick is written. A database outage is nobody's
        fault: it fails the tick instead (and the loop tries again)."""
        if is_outage(exc):
            raise exc
        if run_id not in self._faults:
            log.error("execution %s: internal fault while %s", run_id, where, exc_info=exc)
            self._faults[run_id] = Fault(exc, where, parent_id)

    def _forget(self, run_id: str) -> None:
        """Let go of an execution in memory (it ended, was parked, or is dropped)."""
        if self.runs.pop(run_id, None) is not None:
            self._secretive.discard(run_id)
            self._timers.let_go(run_id, self.runs)

    def _drop(self, run_id: str) -> None:
        """Forget an execution and give back its lease if this node still holds it, so it is
        rebuilt from the store (by any engine) rather than left leased to nobody."""
        self._forget(run_id)
        self._released.add(run_id)
        for key in [k for k in self._inflight if k[0] == run_id]:
            self._inflight.pop(key).cancel()

    # implemented by the parts (see Engine) ------------------------------------------

    def _set_state(
        self,
        run: Run,
        state: ExecutionState,
        now: datetime,
        ops: list[Op],
        outputs: Any = None,
        error: Any = None,
    ) -> None:
        raise NotImplementedError  # Advancing

    def _await_slot(self, run: Run, now: datetime, ops: list[Op]) -> bool:
        raise NotImplementedError  # Admitting

    def _begin(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
        scheduled: bool,
    ) -> None:
        raise NotImplementedError  # Advancing

    def _persist(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        scheduled: bool,
        **fields: Any,
    ) -> None:
        raise NotImplementedError  # Advancing

    def _record_result(
        self,
        key: Key,
        outcome: Outcome,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        raise NotImplementedError  # Advancing

    def _begin_fanout(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
        scheduled: bool,
    ) -> None:
        raise NotImplementedError  # FanOuts

    def _feed(
        self,
        run: Run,
        tid: str,
        fan: FanOut,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        raise NotImplementedError  # FanOuts

    def _write_store(
        self,
        run: Run,
        key: str,
        output: Any,
        now: datetime,
        ops: list[Op],
    ) -> None:
        raise NotImplementedError  # FanOuts

    def _stop_child(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        force: bool,
        deadline: datetime | None = None,
    ) -> None:
        raise NotImplementedError  # Commands

    def _resume_child(self, run: Run, attempt: Attempt, now: datetime) -> None:
        raise NotImplementedError  # Children


def fault_text(fault: Fault, hidden: Secrets) -> str:
    """An internal fault as its execution's error: where and what, bounded, with no secret
    and nothing a database refuses (NUL, lone surrogates)."""
    exc = fault.error
    try:
        told = str(exc)
    except Exception:  # e.g. a database error quoting an int too long to print
        told = "(its message cannot be rendered)"
    text = f"internal error while {fault.where}: {type(exc).__name__}: {told}"
    text = text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    return str(redact(text[:2000], hidden))


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = "/".join(str(p) for p in err["loc"]) or "with"
        parts.append(f"{where}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)
