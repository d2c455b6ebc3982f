"""The scheduler: advances every execution this process holds a lease on.

One loop, one transaction per tick. Each tick gathers what happened (new
executions, task results, timers that fired, cancel requests), advances the
affected executions in memory, writes all resulting changes in one
transaction, and only then hands new task runs to executors, so nothing runs
that the store does not know about. Task results come back to the loop, never
straight into the database, and each write is fenced by the attempt number and
the execution's lease.

This module is the loop and what a tick gathers (leases, claims, takeovers,
commands, timers, results) and dispatches; the parts of a tick are mixins over
`base.EngineBase`: `advance` (one execution's progress), `fanout`, `commands`
(steering, signals), `children` (child executions and their bounds), `spread` (work
handed over between nodes), `parking` (what only waits leaves memory) and `writing` (the
tick's transaction and the containment of what the database refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from execflow.actions import ACTIONS, Placement
from execflow.clock import ManualClock
from execflow.definition import Definition
from execflow.engine.admission import Admitting
from execflow.engine.advance import Advancing
from execflow.engine.base import EngineSettings, Key, T, log
from execflow.engine.cache import DefinitionCache
from execflow.engine.children import Children
from execflow.engine.commands import Commands
from execflow.engine.fanout import FanOuts
from execflow.engine.parking import Parking
from execflow.engine.queue import is_queued
from execflow.engine.run import Attempt, Run
from execflow.engine.spread import Spreading
from execflow.engine.writing import Writing
from execflow.errors import TaskFailure, TaskTimeout
from execflow.executors import NotStarted, Outcome, TaskLog
from execflow.records import EventRecord, ExecutionRecord
from execflow.sealing import SecretKeyError
from execflow.store.database import is_outage
from execflow.store.ops import InsertEvent, Op

__all__ = ["DefinitionCache", "Engine", "EngineSettings"]


class Engine(Children, Commands, FanOuts, Advancing, Admitting, Spreading, Parking, Writing):
    """One node's scheduler loop over the executions it holds a lease on."""

    async def start(self, loop: bool = True) -> None:
        """Take back this node's leases from an earlier life, start workers and the loop.

        Without `loop`, nothing ticks until `tick` or `run_until_idle` is called (tests).
        """
        await self._beat(self.clock.now())
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
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("engine tick failed; retrying")
                elif self.failed_ticks == 1:  # one line per outage, not one per attempt
                    log.warning("the database cannot be reached; retrying: %s", exc)
                self.metrics.tick(0.0, failed=True)
                await asyncio.sleep(0.5)
            timeout = self._next_deadline_in()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    def _next_deadline_in(self) -> float:
        now = self.clock.now()
        deadline = min(self._next_poll, self._next_renew, self._next_beat)
        due = self._timers.next_due()
        if due is not None:
            deadline = min(deadline, due)
        return max(0.0, (deadline - now).total_seconds())

    @property
    def running(self) -> bool:
        """Whether the loop ticks on its own (not stopping, not driven tick by tick)."""
        task = self._loop_task
        return task is not None and not task.done() and not self._stopping

    def submit(self, record: ExecutionRecord, definition: Definition | None = None) -> None:
        """Take over an execution this node has just created and leased."""
        self._adopt.append((record, definition))
        self._wake.set()

    def notify(self) -> None:
        """A command was recorded for an execution: look for commands at the next tick."""
        self._commands_wanted = True
        self._claim_wanted = True  # it may be parked: the command woke it
        self._wake.set()

    def poke(self) -> None:
        """Look for claimable executions at the next tick."""
        self._claim_wanted = True
        self._wake.set()

    async def tick(self) -> None:
        """Advance everything that is due now, in one transaction."""
        began = time.perf_counter()
        try:
            await self._tick()
        except Exception:
            self.failed_ticks += 1
            raise
        self.failed_ticks = 0
        self.last_tick = time.monotonic()
        self.metrics.tick(time.perf_counter() - began)

    async def _tick(self) -> None:
        self._wake.clear()
        now = self.clock.now()
        await self._gather(now)
        ops: list[Op] = []
        starts: list[tuple[Run, Attempt, Any]] = []
        self._pool.forget_promises()
        try:
            self._drain(now, ops, starts)
            advanced = set(self._touched)
            for run_id in advanced:
                run = self.runs.get(run_id)
                if run is None or run_id in self._faults:
                    continue
                try:
                    self._advance(run, now, ops, starts)
                except Exception as exc:
                    self._fault(run_id, exc, "advancing it")
            self._touched.clear()
            # after every execution's attempts of this tick were offered: fair shares
            self._allot(now, ops, starts)
            spawned = await self._spawn_children(now, ops, starts)
            self._park(advanced, now, ops)
            if ops or self._faults:
                await self._flush(now, ops, starts)
        except Exception:
            # The store did not take (all of) this tick: forget what it changed in memory and
            # give the leases back, so these executions are rebuilt from what the store holds.
            offered = {w.key[0] for w in self._offers if w.fresh}  # begun, not written
            self._offers.clear()
            for run_id in {op.execution_id for op in ops} | set(self._faults) | offered:
                self._drop(run_id)
            self._faults.clear()
            self._ending.clear()
            self._parking.clear()
            self._kept.clear()
            self._claim_wanted = True  # claim them back (or others will) once it answers
            self._touched.clear()
            raise
        self._adopt_children(spawned)
        for run, attempt, args in starts:
            if run.id in self.runs:
                self._dispatch(run, attempt, args)
        if self._stale_results:
            stale, self._stale_results = self._stale_results, []
            try:
                await self.store.call(self.store.add_events, stale)
            except Exception as exc:  # an audit entry is not worth the tick
                log.warning("could not record %d ignored results: %s", len(stale), exc)
        self._let_go()

    async def _gather(self, now: datetime) -> None:
        """Leases, claims, executions to take over and commands: what a tick starts from."""
        await self._keep_leases(now)
        polling = now >= self._next_poll
        quiet = now < self._quiet_until
        if not self._draining and not quiet and (self._claim_wanted or polling):
            if polling or self._keys_missing:
                await self._check_keys()
            if self._keys_missing:
                self._claim_wanted = False
                self._next_poll = now + timedelta(seconds=self.settings.poll_seconds)
            else:
                await self._claim(now)
        spread = self.settings.spread_seconds
        if spread and not self._draining and now >= self._next_spread:
            self._next_spread = now + timedelta(seconds=spread)
            await self._spread(now)
        await self._take_over(now)
        await self._admit(now, polling)
        if self._commands_wanted or polling:
            self._commands_wanted = False
            self._commands = await self.store.read(self.store.pending_commands, self.node_id)

    async def _keep_leases(self, now: datetime) -> None:
        """Give back what was dropped, beat, and renew what is held, each when due."""
        if self._released:
            released, self._released = self._released, set()
            try:
                await self.store.call(self.store.release_leases, self.node_id, list(released))
            except Exception as exc:
                # kept, to give back once the database answers: until then they are not
                # renewed either, so at worst they expire
                if self.failed_ticks <= 1:  # once per outage
                    log.warning(
                        "could not give back %d leases yet; they are not renewed: %s",
                        len(released),
                        exc,
                    )
                self._released |= released
                raise
        if now >= self._next_beat:
            lapsed = (now - self._beat_at).total_seconds() > self.settings.heartbeat_seconds
            await self._beat(now)
            if lapsed:
                # Other nodes may have taken executions over meanwhile: learn which at once.
                self._next_renew = now
        if now >= self._next_renew:
            await self._renew(now)

    async def _take_over(self, now: datetime) -> None:
        """Build the executions claimed or submitted since the last tick."""
        if any(definition is None for _, definition in self._adopt):
            self._commands_wanted = True  # an execution taken over may have some waiting
        for record, definition in self._adopt:
            try:
                await self._adopt_record(record, definition, now)
            except SecretKeyError as exc:
                # Not the execution's fault: this node lacks a key that sealed its inputs.
                # Leave it to a node that has it (or to this one once the key is added).
                self._forget(record.id)
                self._touched.discard(record.id)
                self._released.add(record.id)
                self._keys_missing = self._keys_missing or [str(exc)]
                log.error("cannot take over execution %s: %s", record.id, exc)
            except Exception as exc:
                self._fault(record.id, exc, "taking it over", record.parent_id)
        self._adopt.clear()

    async def _check_keys(self) -> None:
        """Another node may seal with a key this one lacks: until it is added here, this node
        takes over nothing (it could not open those executions' inputs)."""
        try:
            missing = await self.store.read(self.store.missing_keys)
        except SecretKeyError as exc:
            missing = [str(exc)]
        if missing and missing != self._keys_missing:
            log.error(
                "this node lacks secret keys that seal values in the database (%s): it takes"
                " over no execution until they are added to EXECFLOW_SECRET_KEYS or"
                " EXECFLOW_SECRET_KEY_FILE (`execflow secrets fingerprints` lists them)",
                ", ".join(missing),
            )
        elif self._keys_missing and not missing:
            log.warning("this node holds every secret key again: it takes over executions")
        self._keys_missing = missing

    def _adopt_children(self, spawned: list[tuple[ExecutionRecord, Definition]]) -> None:
        for child, definition in spawned:
            if child.parent_id in self.runs:  # its parent's tick was written
                self._adopt.append((child, definition))
                self._wake.set()

    async def _beat(self, now: datetime) -> None:
        expires = now + timedelta(seconds=self.settings.heartbeat_seconds)
        asked = await self.store.call(self.store.heartbeat, self.node_id, now, expires)
        if asked and not self._draining:
            self._hand_over(asked)
        self._beat_at = now
        self._next_beat = now + timedelta(seconds=self.settings.heartbeat_seconds / 3)

    async def _renew(self, now: datetime) -> None:
        """Extend the leases of what this engine holds, and drop at once what it no longer
        holds (another node took it over while this one was paused or cut off)."""
        expires = now + timedelta(seconds=self.settings.lease_seconds)
        mine = {*self.runs, *(rec.id for rec, _ in self._adopt)}
        held = await self.store.call(self.store.renew, self.node_id, expires, mine)
        self._renewed_at = now
        self._next_renew = now + timedelta(seconds=self.settings.lease_seconds / 3)
        lost = mine - held
        if lost:
            log.warning("%d executions are no longer leased to this node; dropping them", len(lost))
            for run_id in lost:
                self._drop(run_id)
            self._adopt = [(rec, d) for rec, d in self._adopt if rec.id not in lost]
        unstarted, self._unstarted = self._unstarted, []
        for key, action_name, args in unstarted:
            run, attempt = self._current(key)
            if run is not None and attempt is not None and attempt.state is T.RUNNING:
                if ACTIONS[action_name].placement is Placement.POOL:
                    self._pool.hold(key, run.project_id)
                self._inflight[key] = asyncio.create_task(self._execute(key, action_name, args))

    def _may_start(self, key: Key) -> bool:
        """Whether an attempt may start now: its execution is still held here, as far as
        the last renewal (younger than a lease) and heartbeat (younger than the heartbeat
        time, after which other nodes may take over) tell."""
        now = self.clock.now()
        return (
            key[0] in self.runs
            and (now - self._renewed_at).total_seconds() < self.settings.lease_seconds
            and (now - self._beat_at).total_seconds() < self.settings.heartbeat_seconds
        )

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
        if not run.admitted:  # it asks for a slot of its workflow's before anything starts
            self._unadmitted.add(run.id)
            self._admission_wanted = True
        self._touched.add(run.id)
        for a in list(run.attempts.values()):
            if a.task_id in run.fanouts:
                continue  # a fan-out runs nothing itself: its items do
            placement = self._placement(run, a.task_id)
            key = (run.id, a.task_id, a.attempt)
            if a.state is T.SCHEDULED or (a.state is T.RUNNING and placement is Placement.TIMER):
                self._add_timer(a.wake_at or now, "wake", key)
            elif a.state is T.RUNNING and placement is Placement.CHILD:
                self._resume_child(run, a, now)
            elif a.state is T.RUNNING and placement is Placement.SIGNAL:
                # Nothing ran: the wait goes on, and so does its deadline.
                until = (a.waiting or {}).get("until")
                if until:
                    self._add_timer(datetime.fromisoformat(until), "timeout", key)
            elif is_queued(a) and placement is Placement.POOL:
                self._requeue(run, a)  # it never reached a worker
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
        while (timer := self._timers.pop_due(now)) is not None:
            kind, key = timer
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
        if kind == "spawn":
            return  # the tick starts the children the rate allows now (children.py)
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

    def _dispatch(self, run: Run, attempt: Attempt, args: Any) -> None:
        key = (run.id, attempt.task_id, attempt.attempt)
        action = ACTIONS[run.task(attempt.task_id).action]
        if action.placement is Placement.POOL:
            self._pool.hold(key, run.project_id)  # given back when `_execute` ends
        task = asyncio.create_task(self._execute(key, action.name, args))
        self._inflight[key] = task

    async def _execute(self, key: Key, action_name: str, args: Any) -> None:
        action = ACTIONS[action_name]
        try:
            if action.placement is Placement.INLINE and action.inline is not None:
                if not self._may_start(key):
                    raise NotStarted
                outcome = Outcome(True, output=await action.inline(args, self.resources))
            else:
                dumped = args.model_dump(mode="json", by_alias=True, exclude_unset=True)
                outcome = await self.executor.run(
                    action_name,
                    dumped,
                    on_log=self._sink(key),
                    may_start=lambda: self._may_start(key),
                )
        except asyncio.CancelledError:
            return  # whoever cancelled this attempt records its outcome
        except NotStarted:
            # Nothing ran. The next renewal tells whether it is still ours to start.
            log.warning("attempt %s not started: this node's leases are not known to hold", key)
            self._unstarted.append((key, action_name, args))
            self._next_renew = self._next_beat = self.clock.now()
            self._wake.set()
            return
        except TaskFailure as exc:
            outcome = Outcome.failed(exc)
        except Exception as exc:  # an action's bug is that task's failure, not the engine's
            outcome = Outcome(False, error={"type": "exception", "message": f"{exc!r}"})
        finally:
            if action.placement is Placement.POOL:
                self._pool.release(key)
                if self._pool.waiting():
                    self._wake.set()  # a queued attempt may start
        self._results.append((key, outcome))
        self._wake.set()

    def _sink(self, key: Key) -> Callable[[TaskLog], None]:
        """Where a task's output lines go: the next tick writes them to the audit log."""

        def take(line: TaskLog) -> None:
            self._task_logs.append((key, self.clock.now(), line))

        return take

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
                or (self._admission_wanted and self._unadmitted)
            ):
                continue
            next_due = self._timers.next_due()
            due = next_due is not None and (until is None or next_due <= until)
            if manual and next_due is not None and due and not self._inflight:
                self.clock.set(next_due)  # type: ignore[attr-defined]
                continue
            if manual and self._timers and not due and not self._inflight:
                return
            if self._inflight or self._timers:
                timeout = 60.0 if manual else max(self._next_deadline_in(), 0.001)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            if self._claim_wanted and self.clock.now() >= self._quiet_until:
                continue
            return
        raise RuntimeError("the engine did not become idle")
