"""The scheduler: advances every execution this process holds a lease on.

One loop, one transaction per tick. Each tick gathers what happened (new
executions, task results, timers that fired, cancel requests), advances the
affected executions in memory, writes all resulting changes in one
transaction, and only then hands new task runs to executors, so nothing runs
that the store does not know about. Task results come back to the loop, never
straight into the database, and each write is fenced by the attempt number and
the execution's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError

from execflow.actions import ACTIONS, Placement, Resources
from execflow.actions.signal import SignalArgs, check_payload, waiting
from execflow.actions.subworkflow import DEPTH_LABEL, MAX_DEPTH, WorkflowArgs
from execflow.clock import Clock, ManualClock, SystemClock
from execflow.definition import (
    Definition,
    ItemFailure,
    StoreKind,
    parse_definition,
    redact,
    resolve_inputs,
)
from execflow.engine.run import Attempt, FanOut, Run, item_key, split_key
from execflow.errors import ExecflowError, InvalidInput, TaskFailure, TaskTimeout
from execflow.executors import LocalExecutor, Outcome, TaskLog
from execflow.levels import DEBUG, ERROR, INFO, NOTICE, WARNING
from execflow.records import (
    CommandRecord,
    EventRecord,
    ExecutionRecord,
    StoreEntry,
    TaskRunRecord,
)
from execflow.sealing import SecretKeyError
from execflow.states import ExecutionState, TaskRunState, can_transition
from execflow.store import LeaseLost, Store
from execflow.store.database import is_outage
from execflow.store.ops import (
    AbortExecution,
    FinishCommand,
    InsertCommand,
    InsertEvent,
    InsertExecution,
    InsertStoreEntry,
    InsertTaskRun,
    Op,
    UpdateExecution,
    UpdateTaskRun,
)
from execflow.store.store import new_id

log = logging.getLogger("execflow.engine")

Key = tuple[str, str, int]  # execution id, task id, attempt
E, T = ExecutionState, TaskRunState

_STATE_LEVELS = {E.FAILED: ERROR, E.CANCELED: NOTICE, E.SUSPENDED: NOTICE}


@dataclass(frozen=True)
class EngineSettings:
    node_id: str = ""
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    max_runs: int = 20_000
    claim_batch: int = 500
    shutdown_grace: float = 10.0
    # how long running tasks of a cancelled execution may take to finish (unless forced)
    cancel_grace: float = 30.0
    max_items: int = 10_000  # items of one fan-out (EXECFLOW_MAX_ITEMS)
    # attempts of one task lost to a crash, a worker's death or a takeover that are run
    # again whatever its retry policy (EXECFLOW_MAX_LOST_ATTEMPTS); one more fails it
    max_lost_attempts: int = 3

    def resolved_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Fault:
    """What went wrong while the engine handled one execution: it fails that execution."""

    error: BaseException
    where: str
    parent_id: str | None = None


class DefinitionCache:
    """Parsed definitions by (workflow id, revision); revisions never change once stored."""

    def __init__(self, store: Store, size: int = 512) -> None:
        self._store = store
        self._size = size
        self._items: dict[tuple[str, int], Definition] = {}

    def put(self, workflow_id: str, revision: int, definition: Definition) -> None:
        if len(self._items) >= self._size:
            self._items.pop(next(iter(self._items)))
        self._items[(workflow_id, revision)] = definition

    async def get(self, workflow_id: str, revision: int) -> Definition:
        found = self._items.get((workflow_id, revision))
        if found is None:
            rec = await self._store.read(self._store.get_revision, workflow_id, revision)
            found = parse_definition(rec.definition)
            self.put(workflow_id, revision, found)
        return found


class Engine:
    def __init__(
        self,
        store: Store,
        executor: LocalExecutor,
        definitions: DefinitionCache,
        settings: EngineSettings | None = None,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.definitions = definitions
        self.settings = settings or EngineSettings()
        self.node_id = self.settings.resolved_node_id()
        self.clock = clock or SystemClock()
        self._own_http = http is None
        self.resources = Resources(http=http or httpx.AsyncClient())
        self.runs: dict[str, Run] = {}
        self._secretive: set[str] = set()  # runs with secret inputs
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._timers: list[tuple[datetime, int, str, Key]] = []
        self._timer_seq = 0
        self._results: list[tuple[Key, Outcome]] = []
        self._task_logs: list[tuple[Key, datetime, TaskLog]] = []
        self._adopt: list[tuple[ExecutionRecord, Definition | None]] = []
        self._commands: list[CommandRecord] = []
        self._commands_wanted = False
        self._touched: set[str] = set()
        self._released: set[str] = set()
        self._wake = asyncio.Event()
        self._claim_wanted = True
        self._next_poll = self.clock.now()
        self._next_renew = self.clock.now()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._draining = False
        self.listeners: list[Callable[[str, ExecutionState], None]] = []
        # told when an execution with a callback has ended (committed)
        self.callback_listeners: list[Callable[[], None]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._spawns: list[tuple[Run, Attempt, WorkflowArgs]] = []
        self._changed = asyncio.Event()
        # executions whose handling raised during this tick: written off as it commits
        self._faults: dict[str, Fault] = {}

    # lifecycle ----------------------------------------------------------------------

    async def start(self, loop: bool = True) -> None:
        """Take back this node's leases from an earlier life, start workers and the loop.

        Without `loop`, nothing ticks until `tick` or `run_until_idle` is called (tests).
        """
        await self.store.call(self.store.release_leases, self.node_id)
        await self.executor.start()
        if loop:
            self._loop_task = asyncio.create_task(self._loop(), name="execflow-engine")

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: start nothing new, let running tasks finish for up to `grace`
        seconds and record them, then give back every lease so that the next process (or
        another node) resumes at once. What still runs then is stopped; its attempt will be
        retried under its policy, as after a crash."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        self._draining = True
        grace = self.settings.shutdown_grace if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            while self._inflight or self._results:
                await self.tick()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if self._inflight and not self._results:
                    await self.wait(min(remaining, 0.5))
        except Exception:
            log.exception("could not record the last results while stopping")
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        try:
            await self.store.call(self.store.release_leases, self.node_id)
        except Exception:
            log.exception("could not release leases; they will expire")
        await self.executor.close()
        if self._own_http:
            await self.resources.http.aclose()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception:
                log.exception("engine tick failed; retrying")
                await asyncio.sleep(0.5)
            timeout = self._next_deadline_in()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    def _next_deadline_in(self) -> float:
        now = self.clock.now()
        deadline = min(self._next_poll, self._next_renew)
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        return max(0.0, (deadline - now).total_seconds())

    # inbox (called from the service layer or task coroutines) -------------------------

    def submit(self, record: ExecutionRecord, definition: Definition | None = None) -> None:
        """Take over an execution this node has just created and leased."""
        self._adopt.append((record, definition))
        self._wake.set()

    def notify(self) -> None:
        """A command was recorded for an execution: look for commands at the next tick."""
        self._commands_wanted = True
        self._wake.set()

    def poke(self) -> None:
        """Look for claimable executions at the next tick."""
        self._claim_wanted = True
        self._wake.set()

    # one tick ------------------------------------------------------------------------

    async def tick(self) -> None:
        """Advance everything that is due now, in one transaction."""
        self._wake.clear()
        now = self.clock.now()
        await self._gather(now)
        ops: list[Op] = []
        starts: list[tuple[Run, Attempt, Any]] = []
        try:
            self._drain(now, ops, starts)
            for run_id in list(self._touched):
                run = self.runs.get(run_id)
                if run is None or run_id in self._faults:
                    continue
                try:
                    self._advance(run, now, ops, starts)
                except Exception as exc:
                    self._fault(run_id, exc, "advancing it")
            self._touched.clear()
            spawned = await self._spawn_children(now, ops, starts)
            if ops or self._faults:
                await self._flush(now, ops, starts)
        except Exception:
            # The store did not take (all of) this tick: forget what it changed in memory and
            # give the leases back, so these executions are rebuilt from what the store holds.
            for run_id in {op.execution_id for op in ops} | set(self._faults):
                self._drop(run_id)
            self._faults.clear()
            self._touched.clear()
            raise
        self._adopt_children(spawned)
        for run, attempt, args in starts:
            if run.id in self.runs:
                self._dispatch(run, attempt, args)
        for run_id in [r.id for r in self.runs.values() if r.state.terminal]:
            del self.runs[run_id]
            self._secretive.discard(run_id)
        while self._timers and self._timers[0][3][0] not in self.runs:
            heapq.heappop(self._timers)  # its execution ended or went elsewhere

    async def _gather(self, now: datetime) -> None:
        """Leases, claims, executions to take over and commands: what a tick starts from."""
        if self._released:
            released, self._released = self._released, set()
            await self.store.call(self.store.release_leases, self.node_id, list(released))
        if now >= self._next_renew:
            await self._renew(now)
        polling = now >= self._next_poll
        if not self._draining and (self._claim_wanted or polling):
            await self._claim(now)
        if any(definition is None for _, definition in self._adopt):
            self._commands_wanted = True  # an execution taken over may have some waiting
        for record, definition in self._adopt:
            try:
                await self._adopt_record(record, definition, now)
            except SecretKeyError as exc:
                # Not the execution's fault: this node lacks a key that sealed its inputs.
                # Leave it to a node that has it (or to this one once the key is added).
                self.runs.pop(record.id, None)
                self._touched.discard(record.id)
                self._released.add(record.id)
                log.error("cannot take over execution %s: %s", record.id, exc)
            except Exception as exc:
                self._fault(record.id, exc, "taking it over", record.parent_id)
        self._adopt.clear()
        if self._commands_wanted or polling:
            self._commands_wanted = False
            self._commands = await self.store.read(self.store.pending_commands, self.node_id)

    def _adopt_children(self, spawned: list[tuple[ExecutionRecord, Definition]]) -> None:
        for child, definition in spawned:
            if child.parent_id in self.runs:  # its parent's tick was written
                self._adopt.append((child, definition))
                self._wake.set()

    async def _renew(self, now: datetime) -> None:
        expires = now + timedelta(seconds=self.settings.lease_seconds)
        await self.store.call(self.store.renew, self.node_id, expires)
        self._next_renew = now + timedelta(seconds=self.settings.lease_seconds / 3)

    async def _claim(self, now: datetime) -> None:
        self._claim_wanted = False
        self._next_poll = now + timedelta(seconds=self.settings.poll_seconds)
        room = min(self.settings.claim_batch, self.settings.max_runs - len(self.runs))
        if room <= 0:
            return
        expires = now + timedelta(seconds=self.settings.lease_seconds)
        records = await self.store.call(self.store.claim, self.node_id, room, expires, now)
        for rec in records:
            self._adopt.append((rec, None))
        if len(records) == room:
            self._claim_wanted = True

    async def _adopt_record(
        self, rec: ExecutionRecord, definition: Definition | None, now: datetime
    ) -> None:
        if rec.id in self.runs:
            return
        if definition is None:
            definition = await self.definitions.get(rec.workflow_id, rec.revision)
        run = Run.from_record(rec, definition, self.store.sealer)
        self.runs[run.id] = run
        if run.hidden:
            self._secretive.add(run.id)
        self._touched.add(run.id)
        for a in list(run.attempts.values()):
            if a.task_id in run.fanouts:
                continue  # a fan-out runs nothing itself: its items do
            placement = self._placement(run, a.task_id)
            key = (run.id, a.task_id, a.attempt)
            if a.state is T.SCHEDULED or (a.state is T.RUNNING and placement is Placement.TIMER):
                self._add_timer(a.wake_at or now, "wake", key)
            elif a.state is T.RUNNING and (a.waiting or {}).get("child"):
                # the child runs on its own; its end comes back as a command
                timeout = run.task(a.task_id).timeout
                if timeout:
                    self._add_timer(now + timedelta(seconds=timeout), "timeout", key)
            elif a.state is T.RUNNING and placement is Placement.SIGNAL:
                # Nothing ran: the wait goes on, and so does its deadline.
                until = (a.waiting or {}).get("until")
                if until:
                    self._add_timer(datetime.fromisoformat(until), "timeout", key)
            elif a.state is T.RUNNING:
                # In flight on an engine that stopped: it may or may not have run.
                # Fail the attempt and let the retry policy decide (at least once).
                lost = Outcome(False, error={"type": "lost", "message": "the engine stopped"})
                self._results.append((key, lost))

    def _drain(self, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]) -> None:
        commands, self._commands = self._commands, []
        faults = self._faults
        for command in commands if not self._draining else ():
            # while draining, commands stay pending for whoever takes the executions over
            if command.execution_id in faults:
                continue
            try:
                self._carry_out(command, now, ops, starts)
            except Exception as exc:
                self._fault(command.execution_id, exc, f"carrying out a {command.kind} command")
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            if key[0] in faults:
                continue
            try:
                self._fire(kind, key, now, ops, starts)
            except Exception as exc:
                self._fault(key[0], exc, f"handling a {kind} timer")
        lines, self._task_logs = self._task_logs, []
        for (run_id, task_id, number), at, line in lines:  # before the results they precede
            run = self.runs.get(run_id)
            if run is not None and line.level <= run.log_level:
                data = {"stream": line.stream, "logger": line.logger}
                event = EventRecord(
                    run_id, at, line.level, "output", line.message, task_id, number, data
                )
                ops.append(InsertEvent(event))
        results, self._results = self._results, []
        for key, outcome in results:
            if key[0] in faults:
                continue
            try:
                self._record_result(key, outcome, now, ops, starts)
            except Exception as exc:
                self._fault(key[0], exc, f"recording the result of task {key[1]}")

    def _fault(self, run_id: str, exc: Exception, where: str, parent_id: str | None = None) -> None:
        """Something went wrong while handling one execution: it will fail in this tick,
        and nothing else it asked for this tick is written. A database outage is nobody's
        fault: it fails the tick instead (and the loop tries again)."""
        if is_outage(exc):
            raise exc
        if run_id not in self._faults:
            log.error("execution %s: internal fault while %s", run_id, where, exc_info=exc)
            self._faults[run_id] = Fault(exc, where, parent_id)

    def _fire(
        self,
        kind: str,
        key: Key,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        if kind in ("cancel", "start"):
            if key[0] in self.runs:
                self._touched.add(key[0])
            return
        run, attempt = self._current(key)
        if run is None or attempt is None:
            return
        if kind == "timeout" and attempt.state is T.RUNNING:
            task = self._inflight.pop(key, None)
            if task is not None:
                task.cancel()
            limit = (attempt.waiting or {}).get("timeout") or run.task(key[1]).timeout
            failure = TaskTimeout(f"timed out after {limit or 0:g}s", "timeout")
            self._stop_child(run, attempt, now, ops, force=True)
            self._record_result(key, Outcome.failed(failure), now, ops, starts)
        elif kind == "wake" and attempt.state is T.SCHEDULED:
            if run.cancel_requested or run.suspended or self._draining:
                return  # stays SCHEDULED in the store; whoever resumes it sets the timer again
            self._touched.add(run.id)
            self._begin(run, attempt, now, ops, starts, scheduled=True)
        elif (
            kind == "wake"
            and attempt.state is T.RUNNING
            and self._placement(run, key[1]) is (Placement.TIMER)
        ):
            woke = {"woke_at": now.isoformat()}
            self._record_result(key, Outcome(True, output=woke), now, ops, starts)

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

    def _record_result(
        self,
        key: Key,
        outcome: Outcome,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        run, attempt = self._current(key)
        if run is None or attempt is None or attempt.state is not T.RUNNING:
            log.info("ignored a stale result for %s", key)
            return
        self._inflight.pop(key, None)
        self._touched.add(run.id)
        if run.hidden:  # what a task echoes of a secret is masked before anything sees it
            outcome = replace(
                outcome,
                output=redact(outcome.output, run.hidden),
                error=redact(outcome.error, run.hidden),
            )
        run_id, task_id, number = key
        tid, index = split_key(task_id)
        if outcome.ok and run.task(task_id).store is not None:
            try:
                self._write_store(run, task_id, outcome.output, now, ops)
            except TaskFailure as exc:
                outcome = Outcome.failed(exc)
        if outcome.ok:
            attempt.state, attempt.output = T.COMPLETED, outcome.output
            if index is not None:
                run.fanouts[tid].active.discard(index)
            if run.log_level >= DEBUG:  # most executions keep no debug entries: skip the text
                text = f"task {task_id} completed"
                self._log(run, ops, now, DEBUG, "task", text, task_id, number)
            ops.append(
                UpdateTaskRun(
                    run_id,
                    task_id,
                    number,
                    T.RUNNING,
                    T.COMPLETED,
                    output=outcome.output,
                    ended_at=now,
                )
            )
            return
        message = (outcome.error or {}).get("message", "")
        lost = (outcome.error or {}).get("type") == "lost"
        if lost:
            delay, message = self._after_lost(run, task_id, message)
            if delay is None:
                outcome = replace(outcome, error={**(outcome.error or {}), "message": message})
        else:
            policy = run.task(task_id).retry
            counted = number - run.base.get(task_id, 0) - run.lost.get(task_id, 0)
            delay = policy.delay(counted) if outcome.retryable else None
        attempt.state, attempt.error = T.FAILED, outcome.error
        ops.append(
            UpdateTaskRun(
                run_id, task_id, number, T.RUNNING, T.FAILED, error=outcome.error, ended_at=now
            )
        )
        if delay is None or run.cancel_requested:
            if index is not None:  # its fan-out decides, once its items have run
                run.fanouts[tid].active.discard(index)
                run.fanouts[tid].failed.append(index)
            elif run.failure is None:
                run.failure = {"task": task_id, **(outcome.error or {})}
            text = f"task {task_id} failed: {message}"
            self._log(run, ops, now, ERROR, "task", text, task_id, number, outcome.error)
            return
        if lost:
            text = f"task {task_id} was lost (attempt {number}): {message}; running it again"
        else:
            text = f"task {task_id} failed (attempt {number}), retrying in {delay:g}s: {message}"
        self._log(run, ops, now, WARNING, "task", text, task_id, number, outcome.error)
        nxt = Attempt(task_id, number + 1, T.SCHEDULED, wake_at=now + timedelta(seconds=delay))
        run.attempts[task_id] = nxt
        ops.append(InsertTaskRun(_record(run_id, nxt, now, round_=run.round)))
        self._add_timer(nxt.wake_at or now, "wake", (run_id, task_id, nxt.attempt))

    def _after_lost(self, run: Run, task_id: str, message: str) -> tuple[float | None, str]:
        """An attempt lost to a crash, a worker's death or a takeover runs again at once,
        whatever the task's retry policy, up to `max_lost_attempts` times; a task that is
        lost every time (it kills its worker, say) still ends. The policy's count of
        attempts leaves lost ones out."""
        lost = run.lost.get(task_id, 0) + 1
        run.lost[task_id] = lost
        limit = self.settings.max_lost_attempts
        if lost <= limit:
            return 0.0, f"{message} ({lost} of at most {limit} lost attempts run again)"
        return None, f"{message}; lost {lost} times (EXECFLOW_MAX_LOST_ATTEMPTS is {limit})"

    # advancing one execution -------------------------------------------------------------

    def _advance(
        self, run: Run, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]
    ) -> None:
        if run.state.terminal:
            return
        if run.cancel_requested:
            self._cancel(run, now, ops)
            return
        if self._not_yet(run, now, ops):
            return
        for task_id, fan in list(run.fanouts.items()):
            self._feed(run, task_id, fan, now, ops, starts)
        ready = run.ready() if run.failure is None and not run.suspended else []
        while ready and not self._draining:
            for task_id in ready:
                attempt = Attempt(task_id, run.first_attempt(task_id), T.RUNNING)
                run.attempts[task_id] = attempt
                self._begin(run, attempt, now, ops, starts, scheduled=False)
            # a fan-out over no items ends as it starts: what needs it may start now
            ended = any(run.attempts[t].state is T.COMPLETED for t in ready)
            ready = run.ready() if ended and run.failure is None and not run.suspended else []
        active = run.active()
        if run.failure is not None:
            for a in active:  # failing the parent acts on its children
                self._stop_child(run, a, now, ops, force=True)
        if active:
            self._set_state(run, self._active_state(run, active), now, ops)
        elif ready and self._draining:
            pass  # these start wherever the execution resumes
        elif run.failure is not None:
            self._set_state(run, E.FAILED, now, ops, error=run.failure)
        elif all(tid in run.attempts for tid in run.definition.tasks):
            self._complete(run, now, ops)
        elif run.suspended:
            self._set_state(run, E.SUSPENDED, now, ops)
        else:
            stuck = {"type": "stuck", "message": "no task can start"}
            self._set_state(run, E.FAILED, now, ops, error=stuck)

    def _not_yet(self, run: Run, now: datetime, ops: list[Op]) -> bool:
        """A start put off until `scheduled_at` waits for a timer."""
        if run.scheduled_at is None or now >= run.scheduled_at or run.attempts:
            return False
        if not run.start_timer_set:
            run.start_timer_set = True
            self._add_timer(run.scheduled_at, "start", (run.id, "", 0))
        self._set_state(run, E.SUSPENDED if run.suspended else E.WAITING, now, ops)
        return True

    def _active_state(self, run: Run, active: list[Attempt]) -> ExecutionState:
        """RUNNING while a task runs; else WAITING on timers, or WAITING_ON_SIGNAL when only
        signals are awaited. A suspended execution shows SUSPENDED while its tasks finish."""
        if run.suspended:
            return E.SUSPENDED
        # a fan-out is as busy as its items; between them it counts as running
        busy = {tid for tid, fan in run.fanouts.items() if fan.active} if run.fanouts else set()
        signals = False
        for a in active:
            if a.state is T.SCHEDULED or a.task_id in busy:
                continue
            if a.task_id in run.fanouts:
                return E.RUNNING
            placement = self._placement(run, a.task_id)
            if placement is Placement.SIGNAL:
                signals = True
            elif placement is not Placement.TIMER:
                return E.RUNNING
        if signals and all(
            a.state is T.RUNNING and self._placement(run, a.task_id) is Placement.SIGNAL
            for a in active
            if a.task_id not in busy
        ):
            return E.WAITING_ON_SIGNAL
        return E.WAITING

    def _begin(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
        scheduled: bool,
    ) -> None:
        """Start an attempt now: render its arguments, persist it, queue its dispatch."""
        tid, index = split_key(attempt.task_id)
        task = run.definition.tasks[tid]
        if task.for_each is not None and index is None:
            self._begin_fanout(run, attempt, now, ops, starts, scheduled)
            return
        action = ACTIONS[task.action]
        key = (run.id, attempt.task_id, attempt.attempt)
        try:
            rendered = run.definition.renderers[tid](run.context(index, tid))
            args = action.args.model_validate(rendered)
            # every time this attempt sets is computed before anything is changed
            wake_at = until = deadline = None
            if action.placement is Placement.TIMER and action.wake_at is not None:
                wake_at = action.wake_at(args, now)
            elif isinstance(args, SignalArgs):
                signal_timeout = args.timeout or task.timeout
                until = now + timedelta(seconds=signal_timeout) if signal_timeout else None
            elif task.timeout:
                deadline = now + timedelta(seconds=task.timeout)
        except Exception as exc:
            self._not_started(run, attempt, exc, now, ops, scheduled)
            return
        attempt.state = T.RUNNING
        tid = attempt.task_id
        if run.log_level >= DEBUG:
            self._log(run, ops, now, DEBUG, "task", f"task {tid} started", tid, attempt.attempt)
        attempt.wake_at = wake_at
        if wake_at is not None:
            self._add_timer(wake_at, "wake", key)
        elif isinstance(args, WorkflowArgs):
            self._spawns.append((run, attempt, args))
            if deadline is not None:
                self._add_timer(deadline, "timeout", key)
            self._persist(run, attempt, now, ops, scheduled, started_at=now)
            return
        elif isinstance(args, SignalArgs):
            attempt.waiting = {
                **waiting(args),
                "timeout": args.timeout or task.timeout,
                "until": until.isoformat() if until else None,
            }
            if until is not None:
                self._add_timer(until, "timeout", key)
            self._persist(
                run, attempt, now, ops, scheduled, started_at=now, waiting=attempt.waiting
            )
            return
        else:
            starts.append((run, attempt, args))
            if deadline is not None:
                self._add_timer(deadline, "timeout", key)
        self._persist(run, attempt, now, ops, scheduled, started_at=now, wake_at=attempt.wake_at)

    def _not_started(
        self,
        run: Run,
        attempt: Attempt,
        exc: Exception,
        now: datetime,
        ops: list[Op],
        scheduled: bool,
    ) -> None:
        """A bad value (or a bug) met while starting one task fails that task, precisely,
        and the rest of its execution as a failed task would."""
        if isinstance(exc, TaskFailure):
            error = exc.as_error()
        elif isinstance(exc, ValidationError):
            error = {"type": "arguments", "message": _validation_message(exc)}
        else:
            fault = Fault(exc, f"starting task {attempt.task_id}")
            log.error("execution %s: internal fault while %s", run.id, fault.where, exc_info=exc)
            error = {"type": "internal", "message": _fault_text(fault, run.hidden)}
        attempt.state, attempt.error = T.FAILED, error
        tid, index = split_key(attempt.task_id)
        if index is not None:
            run.fanouts[tid].active.discard(index)
            run.fanouts[tid].failed.append(index)
        else:
            run.failure = run.failure or {"task": attempt.task_id, **error}
        self._persist(run, attempt, now, ops, scheduled, error=error, ended_at=now)

    # fan-out and stores --------------------------------------------------------------------

    def _begin_fanout(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
        scheduled: bool,
    ) -> None:
        """Evaluate a `for_each` task's items; the task runs while they do. The items are
        kept on its task run, so that whoever resumes the execution runs the same ones."""
        tid = attempt.task_id
        try:
            items = run.definition.for_each_renderers[tid](run.context(None, tid))
            if not isinstance(items, list):
                raise TaskFailure(f"for_each gave {type(items).__name__}, not a list", "for_each")
            if len(items) > self.settings.max_items:
                limit = self.settings.max_items
                raise TaskFailure(
                    f"{len(items)} items; at most {limit} (EXECFLOW_MAX_ITEMS)", "for_each", False
                )
        except TaskFailure as exc:
            attempt.state, attempt.error = T.FAILED, exc.as_error()
            run.failure = run.failure or {"task": tid, **exc.as_error()}
            self._persist(run, attempt, now, ops, scheduled, error=attempt.error, ended_at=now)
            return
        attempt.state, attempt.waiting = T.RUNNING, {"items": items}
        self._persist(run, attempt, now, ops, scheduled, started_at=now, waiting=attempt.waiting)
        text = f"task {tid} started with {len(items)} items"
        self._log(run, ops, now, DEBUG, "task", text, tid, attempt.attempt)
        run.fanouts[tid] = FanOut(items)
        self._feed(run, tid, run.fanouts[tid], now, ops, starts)

    def _feed(
        self,
        run: Run,
        tid: str,
        fan: FanOut,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        """Start the next items of a fan-out, up to its concurrency; end it when all ran."""
        task = run.definition.tasks[tid]
        fail_fast = task.on_item_failure is ItemFailure.FAIL_FAST
        stopped = bool(fan.failed) and fail_fast
        if not (run.suspended or run.cancel_requested or self._draining or stopped):
            limit = task.concurrency or len(fan.items)
            while fan.cursor < len(fan.items) and len(fan.active) < limit:
                index = fan.cursor
                fan.cursor += 1
                key = item_key(tid, index)
                if key in run.attempts:  # it ran in an earlier round, or runs already
                    continue
                item = Attempt(key, run.first_attempt(key), T.RUNNING)
                run.attempts[key] = item
                fan.active.add(index)
                self._begin(run, item, now, ops, starts, scheduled=False)
                if fan.failed and fail_fast:
                    break
        done = fan.cursor >= len(fan.items) or (bool(fan.failed) and fail_fast)
        if done and not fan.active and not run.cancel_requested:
            self._finish_fanout(run, tid, fan, now, ops)

    def _finish_fanout(self, run: Run, tid: str, fan: FanOut, now: datetime, ops: list[Op]) -> None:
        container = run.attempts[tid]
        del run.fanouts[tid]
        if fan.failed:
            first = sorted(fan.failed)[:10]
            error: dict[str, Any] = {
                "type": "items",
                "message": f"{len(fan.failed)} of {len(fan.items)} items failed",
                "items": [
                    {"index": i, **(run.attempts[item_key(tid, i)].error or {})} for i in first
                ],
            }
            container.state, container.error = T.FAILED, error
            run.failure = run.failure or {"task": tid, **error}
            ops.append(
                UpdateTaskRun(
                    run.id, tid, container.attempt, T.RUNNING, T.FAILED, error=error, ended_at=now
                )
            )
            text = f"task {tid} failed: {error['message']}"
            self._log(run, ops, now, ERROR, "task", text, tid, container.attempt)
            return
        output = [run.attempts[item_key(tid, i)].output for i in range(len(fan.items))]
        container.state, container.output = T.COMPLETED, output
        ops.append(
            UpdateTaskRun(
                run.id, tid, container.attempt, T.RUNNING, T.COMPLETED, output=output, ended_at=now
            )
        )
        self._log(run, ops, now, DEBUG, "task", f"task {tid} completed", tid, container.attempt)

    def _write_store(self, run: Run, key: str, output: Any, now: datetime, ops: list[Op]) -> None:
        """A task's (or an item's) result goes to the store it names, in the same transaction
        as its completion."""
        tid, index = split_key(key)
        target = run.definition.tasks[tid].store
        assert target is not None
        spec = run.definition.stores[target.name]
        name = target.name
        entry_key: str | None = None
        if spec.type is StoreKind.MAP:
            ctx = {**run.context(index, tid), "output": output}
            rendered = run.definition.store_key_renderers[tid](ctx)
            if not isinstance(rendered, str | int | float) or isinstance(rendered, bool):
                raise TaskFailure(f"the store key is {rendered!r}, not a string", "store", False)
            entry_key = str(rendered)
        values = output if target.extend and isinstance(output, list) else [output]
        if target.extend and not isinstance(output, list):
            raise TaskFailure("extend needs a list result", "store", False)
        for value in values:
            run.put(name, entry_key, value)
            seq = run.store_seq.get(name, 0)
            run.store_seq[name] = seq + 1
            entry = StoreEntry(run.id, name, seq, value, entry_key, key, now)
            ops.append(InsertStoreEntry(entry))

    def _persist(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        scheduled: bool,
        **fields: Any,
    ) -> None:
        """Record a starting attempt: update its SCHEDULED row, or insert it."""
        if scheduled:
            ops.append(
                UpdateTaskRun(
                    run.id, attempt.task_id, attempt.attempt, T.SCHEDULED, attempt.state, **fields
                )
            )
        else:
            ended = fields.get("ended_at")
            started = fields.get("started_at")
            ops.append(InsertTaskRun(_record(run.id, attempt, now, started, ended, run.round)))

    def _cancel(self, run: Run, now: datetime, ops: list[Op]) -> None:
        """Cancel what waits (scheduled attempts, sleeps, signals) at once; running tasks
        may finish until the cancel's deadline, then they are stopped too."""
        graceful = run.cancel_deadline is not None and now < run.cancel_deadline
        # items before their fan-outs, which end once none of their items runs
        for a in sorted(run.active(), key=lambda a: a.task_id in run.fanouts):
            if a.task_id in run.fanouts:
                if any(
                    not run.attempts[item_key(a.task_id, i)].state.terminal
                    for i in run.fanouts[a.task_id].active
                ):
                    continue
            elif (
                graceful
                and a.state is T.RUNNING
                and self._placement(run, a.task_id) in (Placement.INLINE, Placement.POOL)
            ):
                continue
            key = (run.id, a.task_id, a.attempt)
            task = self._inflight.pop(key, None)
            if task is not None:
                task.cancel()
            self._stop_child(run, a, now, ops, force=not graceful, deadline=run.cancel_deadline)
            ops.append(
                UpdateTaskRun(
                    run.id,
                    a.task_id,
                    a.attempt,
                    a.state,
                    T.CANCELED,
                    error={"type": "canceled", "message": "the execution was cancelled"},
                    ended_at=now,
                )
            )
            a.state = T.CANCELED
        if run.active():
            return  # the cancel's deadline timer comes back for them
        error = {"type": "canceled", "message": "cancelled on request"}
        self._set_state(run, E.CANCELED, now, ops, error=error)

    def _complete(self, run: Run, now: datetime, ops: list[Op]) -> None:
        try:
            outputs = run.definition.outputs_renderer(run.context())
        except TaskFailure as exc:
            error = {"type": "outputs", "message": exc.message}
            self._set_state(run, E.FAILED, now, ops, error=error)
            return
        self._set_state(run, E.COMPLETED, now, ops, outputs=outputs)

    def _set_state(
        self,
        run: Run,
        state: ExecutionState,
        now: datetime,
        ops: list[Op],
        outputs: Any = None,
        error: Any = None,
    ) -> None:
        if state == run.state:
            return
        if not can_transition(run.state, state):
            raise AssertionError(f"illegal transition {run.state} -> {state} of {run.id}")
        level = _STATE_LEVELS.get(state, INFO)
        if {run.state, state} == {E.RUNNING, E.WAITING}:
            level = DEBUG  # tasks between timers (sleeps, back-offs): noise at info
        if level <= run.log_level:
            text = f"execution {state.value.lower()}"
            if error and state is not E.CANCELED:
                text += f": {error.get('message', '')}"
            data = {"from": run.state.value, "to": state.value}
            self._log(run, ops, now, level, "state", text, data=data)
        if state.terminal and run.parent_id is not None:
            payload = {
                "child": run.id,
                "state": state.value,
                "outputs": outputs if state is E.COMPLETED else None,
                "error": error,
            }
            ops.append(InsertCommand(run.id, run.parent_id, "child", payload, now))
        ops.append(
            UpdateExecution(
                run.id,
                run.state,
                state,
                now,
                outputs=outputs if state is E.COMPLETED else None,
                error=error,
                ended_at=now if state.terminal else None,
                release=state.terminal,
            )
        )
        run.state = state

    # commands ------------------------------------------------------------------------------

    def _carry_out(
        self,
        command: CommandRecord,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        """Carry out one recorded command, in the same transaction that marks it done."""
        run = self.runs.get(command.execution_id)
        if run is None or command.id in run.seen_commands:
            return  # not (or no longer) ours: whoever holds the execution carries it out
        run.seen_commands.add(command.id)
        ops.append(FinishCommand(run.id, command.id, now))
        self._touched.add(run.id)
        actor = command.actor
        payload = command.payload
        if run.state.terminal:
            return
        if command.kind == "cancel":
            force = bool(payload.get("force"))
            given = payload.get("grace")
            grace = self.settings.cancel_grace if given is None else float(given)
            grace = 0.0 if force else grace
            deadline = now + timedelta(seconds=grace)
            if run.cancel_requested and run.cancel_deadline is None:
                deadline = now  # already immediate
            elif run.cancel_deadline is not None:
                deadline = min(deadline, run.cancel_deadline)
            run.cancel_requested, run.cancel_deadline = True, deadline
            if deadline > now:
                self._add_timer(deadline, "cancel", (run.id, "", 0))
            how = "at once" if deadline <= now else f"running tasks may finish within {grace:g}s"
            self._log(run, ops, now, NOTICE, "command", f"cancel requested ({how})", actor=actor)
        elif command.kind == "child":
            self._child_ended(run, payload, now, ops, starts)
        elif command.kind == "suspend":
            run.suspended = True
            self._tell_children(run, "suspend", now, ops)
            self._log(run, ops, now, NOTICE, "command", "suspend requested", actor=actor)
        elif command.kind == "resume":
            run.suspended = False
            self._tell_children(run, "resume", now, ops)
            for a in run.attempts.values():
                if a.state is T.SCHEDULED:  # their wake-ups were skipped while suspended
                    self._add_timer(a.wake_at or now, "wake", (run.id, a.task_id, a.attempt))
            self._log(run, ops, now, NOTICE, "command", "resume requested", actor=actor)
        elif command.kind == "signal":
            self._deliver_signal(run, command, now, ops, starts)

    def _child_ended(
        self,
        run: Run,
        payload: dict[str, Any],
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        """A child execution ended: its outputs are its task's output, or its end the
        task's failure (retried under the task's policy with a new child)."""
        child = payload.get("child")
        for a in run.active():
            if a.state is T.RUNNING and (a.waiting or {}).get("child") == child:
                if payload.get("state") == E.COMPLETED.value:
                    outcome = Outcome(True, output=payload.get("outputs") or {})
                else:
                    reason = (payload.get("error") or {}).get("message", "")
                    message = f"child execution {child} ended {payload.get('state')}: {reason}"
                    error = {"type": "child", "message": message, "child": child}
                    outcome = Outcome(False, error=error)
                self._record_result((run.id, a.task_id, a.attempt), outcome, now, ops, starts)
                return

    def _tell_children(self, run: Run, kind: str, now: datetime, ops: list[Op]) -> None:
        for a in run.active():
            child = (a.waiting or {}).get("child")
            if a.state is T.RUNNING and child and child not in run.stopped_children:
                ops.append(InsertCommand(run.id, child, kind, {}, now))

    def _stop_child(
        self,
        run: Run,
        attempt: Attempt,
        now: datetime,
        ops: list[Op],
        force: bool,
        deadline: datetime | None = None,
    ) -> None:
        """Cancel the child execution an attempt waits for, once."""
        child = (attempt.waiting or {}).get("child")
        if not child or child in run.stopped_children or attempt.state is not T.RUNNING:
            return
        run.stopped_children.add(child)
        payload: dict[str, Any] = {"force": force}
        if not force and deadline is not None:
            payload["grace"] = max(0.0, (deadline - now).total_seconds())
        ops.append(InsertCommand(run.id, child, "cancel", payload, now))
        self._log(
            run, ops, now, NOTICE, "task", f"child execution {child} cancelled", attempt.task_id
        )

    async def _spawn_children(
        self, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]
    ) -> list[tuple[ExecutionRecord, Definition]]:
        """Create the child executions of the `workflow` tasks that started this tick, in the
        same transaction; a child that cannot start fails its task."""
        spawns, self._spawns = self._spawns, []
        made: list[tuple[ExecutionRecord, Definition]] = []
        for run, attempt, args in spawns:
            if run.id not in self.runs or attempt.state is not T.RUNNING:
                continue
            if run.id in self._faults:
                continue
            key = (run.id, attempt.task_id, attempt.attempt)
            try:
                child, definition = await self._child_of(run, attempt, args, now)
            except (ExecflowError, TaskFailure) as exc:
                error = {"type": "workflow", "message": exc.message}
                self._record_result(
                    key, Outcome(False, error=error, retryable=False), now, ops, starts
                )
                self._wake.set()
                continue
            except Exception as exc:
                self._fault(run.id, exc, f"starting the child of task {attempt.task_id}")
                continue
            expires = now + timedelta(seconds=self.settings.lease_seconds)
            ops.append(InsertExecution(run.id, child, expires))
            attempt.waiting = {"child": child.id, "workflow": child.workflow_name}
            ops.append(
                UpdateTaskRun(
                    run.id,
                    attempt.task_id,
                    attempt.attempt,
                    T.RUNNING,
                    T.RUNNING,
                    waiting=attempt.waiting,
                )
            )
            text = (
                f"task {attempt.task_id} started child execution {child.id} ({child.workflow_name})"
            )
            self._log(run, ops, now, INFO, "task", text, attempt.task_id, attempt.attempt)
            made.append((child, definition))
        return made

    async def _child_of(
        self, run: Run, attempt: Attempt, args: WorkflowArgs, now: datetime
    ) -> tuple[ExecutionRecord, Definition]:
        if run.depth + 1 > MAX_DEPTH:
            raise TaskFailure(f"children nest at most {MAX_DEPTH} deep", "workflow", False)
        wf = await self.store.read(self.store.get_workflow, run.project_id, args.workflow)
        number = args.revision or wf.latest_revision
        if number > wf.latest_revision:
            raise TaskFailure(f"workflow {wf.name!r} has no revision {number}", "workflow", False)
        definition = await self.definitions.get(wf.id, number)
        try:
            inputs = resolve_inputs(definition, args.inputs)
        except InvalidInput as exc:
            where = "; ".join(f"{d.pointer}: {d.reason}" for d in exc.details)
            raise TaskFailure(f"the child's inputs do not fit: {where}", "workflow", False) from exc
        # sealed: the child's secret parameters, and whatever carries a secret of the parent
        sealed = set(definition.secret_params)
        if run.hidden:
            sealed.update(k for k, v in inputs.items() if redact(v, run.hidden) != v)
        child = ExecutionRecord.new(
            new_id(),
            run.project_id,
            wf.id,
            wf.name,
            number,
            self.store.sealer.seal_inputs(inputs, sealed),
            now,
            labels={DEPTH_LABEL: str(run.depth + 1)},
            started_by=run.id,
            log_level=run.log_level,
            parent_id=run.id,
            parent_task=attempt.task_id,
        )
        return child, definition

    def _deliver_signal(
        self,
        run: Run,
        command: CommandRecord,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        name, payload = command.payload.get("name"), command.payload.get("payload")
        task, number = command.payload.get("task"), command.payload.get("attempt")
        for a in run.active():
            # only the attempt the request was checked against: a repeated signal must not
            # complete a later wait for the same name
            if (
                a.state is T.RUNNING
                and (a.waiting or {}).get("signal") == name
                and (task is None or (a.task_id, a.attempt) == (task, number))
            ):
                problems = check_payload((a.waiting or {}).get("schema"), payload)
                if problems:
                    text = f"signal {name} refused: {problems[0].pointer}: {problems[0].reason}"
                    self._log(run, ops, now, WARNING, "signal", text, a.task_id, a.attempt)
                    return
                text = f"signal {name} received"
                self._log(
                    run,
                    ops,
                    now,
                    NOTICE,
                    "signal",
                    text,
                    a.task_id,
                    a.attempt,
                    actor=command.actor,
                )
                key = (run.id, a.task_id, a.attempt)
                self._record_result(key, Outcome(True, output=payload), now, ops, starts)
                return
        text = f"signal {name} arrived but nothing waits for it any more"
        self._log(run, ops, now, WARNING, "signal", text, actor=command.actor)

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

    # writing and dispatching ---------------------------------------------------------------

    async def _flush(
        self, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]
    ) -> None:
        """Write the tick. An execution whose handling faulted is written off instead of
        what it asked for; one whose rows the database refuses is found (by halving the
        batch) and written off, and everyone else's rows are written all the same."""
        if self._secretive:
            # nothing the engine writes holds a secret input's text (errors, events,
            # outputs, stores, what goes to a parent)
            for i, op in enumerate(ops):
                run = self.runs.get(op.execution_id)
                if run is not None and run.hidden and op.execution_id not in self._faults:
                    try:
                        ops[i] = _masked(op, run.hidden)
                    except Exception as exc:
                        self._fault(op.execution_id, exc, "masking its secrets")
        faults, self._faults = self._faults, {}
        if faults:
            ops[:] = [op for op in ops if op.execution_id not in faults]
            for run_id, fault in faults.items():
                ops.extend(self._write_off(run_id, fault, now))
        written: list[Op] = []
        try:
            refused = await self._commit(ops, written)
            if refused:
                offs: list[Op] = []
                for run_id, error in refused.items():
                    faults[run_id] = Fault(error, "writing it")
                    offs.extend(self._write_off(run_id, faults[run_id], now))
                for run_id in await self._commit(offs, written):
                    log.critical("execution %s could not be written off; letting it go", run_id)
                    self._drop(run_id)
        finally:
            if faults:
                starts[:] = [start for start in starts if start[0].id not in faults]
            self._announce(written)

    async def _commit(self, ops: list[Op], written: list[Op]) -> dict[str, Exception]:
        """Write `ops` (adding what was written to `written`); the executions whose own rows
        the database refused, each with its error. Executions whose lease was lost are
        dropped; a database outage propagates."""
        while ops:
            try:
                await self.store.call(self.store.apply, self.node_id, ops)
                written.extend(ops)
                return {}
            except LeaseLost as lost:
                log.warning("lost the lease of %d executions; dropping them", len(lost.ids))
                for run_id in lost.ids:
                    self._drop(run_id)  # releases only if this node still holds it
                ops = [op for op in ops if op.execution_id not in lost.ids]
            except Exception as exc:
                if is_outage(exc):
                    raise
                ids = list(dict.fromkeys(op.execution_id for op in ops))
                if len(ids) == 1:
                    log.error("the database refused the rows of execution %s: %r", ids[0], exc)
                    return {ids[0]: exc}
                half = set(ids[: len(ids) // 2])
                refused = await self._commit([op for op in ops if op.execution_id in half], written)
                rest = [op for op in ops if op.execution_id not in half]
                refused.update(await self._commit(rest, written))
                return refused
        return {}

    def _write_off(self, run_id: str, fault: Fault, now: datetime) -> list[Op]:
        """The ops that fail a faulted execution (error type `internal`), whatever its view
        in memory; what it was running is stopped."""
        run = self.runs.get(run_id)
        hidden = run.hidden if run is not None else []
        message = _fault_text(fault, hidden)
        error = {"type": "internal", "message": message}
        task_error = {"type": "internal", "message": f"the execution failed: {message}"}
        parent = run.parent_id if run is not None else fault.parent_id
        ops: list[Op] = [AbortExecution(run_id, error, task_error, now, parent)]
        if run is None or run.log_level >= ERROR:
            data = {"from": run.state.value if run is not None else None, "to": E.FAILED.value}
            text = f"execution failed: {message}"
            ops.append(InsertEvent(EventRecord(run_id, now, ERROR, "state", text, data=data)))
        if run is not None:
            run.state = E.FAILED
        for key in [k for k in self._inflight if k[0] == run_id]:
            self._inflight.pop(key).cancel()
        self._touched.discard(run_id)
        return ops

    def _announce(self, ops: list[Op]) -> None:
        """Tell whoever waits what the tick just committed."""
        self._changed.set()  # wake whoever follows executions live, then start afresh
        self._changed = asyncio.Event()
        for op in ops:
            if isinstance(op, InsertCommand):
                self._commands_wanted = True  # for a parent or child this engine may hold
                self._wake.set()
            elif isinstance(op, AbortExecution):
                self._commands_wanted = True  # its parent or children may be held here
                self._wake.set()
                self._ended(op.execution_id, E.FAILED)
            elif isinstance(op, UpdateExecution):
                if op.state.terminal:
                    self._ended(op.execution_id, op.state)
                else:
                    for listener in self.listeners:
                        listener(op.execution_id, op.state)

    def _ended(self, execution_id: str, state: ExecutionState) -> None:
        for listener in self.listeners:
            listener(execution_id, state)
        run = self.runs.get(execution_id)
        if run is None or run.has_callback:
            for notify in self.callback_listeners:
                notify()
        for waiter in self._waiters.pop(execution_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, run_id: str) -> None:
        """Forget an execution and give back its lease if this node still holds it, so it is
        rebuilt from the store (by any engine) rather than left leased to nobody."""
        self.runs.pop(run_id, None)
        self._secretive.discard(run_id)
        self._released.add(run_id)
        for key in [k for k in self._inflight if k[0] == run_id]:
            self._inflight.pop(key).cancel()

    def _dispatch(self, run: Run, attempt: Attempt, args: Any) -> None:
        key = (run.id, attempt.task_id, attempt.attempt)
        action = ACTIONS[run.task(attempt.task_id).action]
        task = asyncio.create_task(self._execute(key, action.name, args))
        self._inflight[key] = task

    async def _execute(self, key: Key, action_name: str, args: Any) -> None:
        action = ACTIONS[action_name]
        try:
            if action.placement is Placement.INLINE and action.inline is not None:
                outcome = Outcome(True, output=await action.inline(args, self.resources))
            else:
                dumped = args.model_dump(mode="json", by_alias=True, exclude_unset=True)
                outcome = await self.executor.run(action_name, dumped, on_log=self._sink(key))
        except asyncio.CancelledError:
            return  # whoever cancelled this attempt records its outcome
        except TaskFailure as exc:
            outcome = Outcome.failed(exc)
        except Exception as exc:  # an action's bug is that task's failure, not the engine's
            outcome = Outcome(False, error={"type": "exception", "message": f"{exc!r}"})
        self._results.append((key, outcome))
        self._wake.set()

    def _sink(self, key: Key) -> Callable[[TaskLog], None]:
        """Where a task's output lines go: the next tick writes them to the audit log."""

        def take(line: TaskLog) -> None:
            self._task_logs.append((key, self.clock.now(), line))

        return take

    def _add_timer(self, when: datetime, kind: str, key: Key) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, key))
        self._wake.set()

    # tests and tools -------------------------------------------------------------------------

    async def wait_ended(self, execution_id: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an execution this engine holds to end (committed).

        False when it did not end in time, or when this engine does not hold it."""
        held = execution_id in self.runs or any(r.id == execution_id for r, _ in self._adopt)
        if not held:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(execution_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[execution_id]

    async def changed(self, timeout: float) -> None:
        """Wait until this engine commits its next tick, or `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait(self, timeout: float) -> None:
        """Wait until something is ready for the next tick, or `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def busy(self) -> bool:
        return bool(self._inflight or self._results or self._adopt or self._commands_wanted)

    async def run_until_idle(self, max_ticks: int = 100_000, until: datetime | None = None) -> None:
        """Tick until nothing is in flight; with a ManualClock, jump to each pending timer
        (up to `until`, if given: later timers are left pending)."""
        manual = isinstance(self.clock, ManualClock)
        for _ in range(max_ticks):
            await self.tick()
            if (
                self._results
                or self._adopt
                or self._touched
                or self._commands_wanted
                or self._task_logs
            ):
                continue
            due = self._timers and (until is None or self._timers[0][0] <= until)
            if manual and due and not self._inflight:
                self.clock.set(self._timers[0][0])  # type: ignore[attr-defined]
                continue
            if manual and self._timers and not due and not self._inflight:
                return
            if self._inflight or self._timers:
                timeout = 60.0 if manual else max(self._next_deadline_in(), 0.001)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            if self._claim_wanted:
                continue
            return
        raise RuntimeError("the engine did not become idle")


def _record(
    run_id: str,
    a: Attempt,
    now: datetime,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    round_: int = 0,
) -> TaskRunRecord:
    return TaskRunRecord(
        execution_id=run_id,
        task_id=a.task_id,
        attempt=a.attempt,
        state=a.state,
        output=a.output,
        error=a.error,
        queued_at=now,
        started_at=started_at,
        ended_at=ended_at,
        wake_at=a.wake_at,
        waiting=a.waiting,
        round=round_,
        item=split_key(a.task_id)[1],
    )


def _masked(op: Op, hidden: list[str]) -> Op:
    """An op of an execution with secret inputs, their text masked wherever it appears."""
    if isinstance(op, InsertEvent):
        e = op.event
        return InsertEvent(
            replace(e, message=redact(e.message, hidden), data=redact(e.data, hidden))
        )
    if isinstance(op, InsertTaskRun):
        r = op.run
        masked = replace(
            r,
            output=redact(r.output, hidden),
            error=redact(r.error, hidden),
            waiting=redact(r.waiting, hidden),
        )
        return InsertTaskRun(masked)
    if isinstance(op, UpdateTaskRun):
        return replace(
            op,
            output=redact(op.output, hidden),
            error=redact(op.error, hidden),
            waiting=redact(op.waiting, hidden),
        )
    if isinstance(op, UpdateExecution):
        return replace(op, outputs=redact(op.outputs, hidden), error=redact(op.error, hidden))
    if isinstance(op, InsertStoreEntry):
        return InsertStoreEntry(replace(op.entry, value=redact(op.entry.value, hidden)))
    if isinstance(op, InsertCommand):
        return replace(op, payload=redact(op.payload, hidden))
    return op  # a child's own inputs are sealed as it is made (see `_child_of`)


def _fault_text(fault: Fault, hidden: list[str]) -> str:
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


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = "/".join(str(p) for p in err["loc"]) or "with"
        parts.append(f"{where}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)
