"""Advancing one execution in memory: what starts, what a result means, which state follows."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from execflow.actions import ACTIONS, Action, Placement
from execflow.actions.signal import SignalArgs, waiting
from execflow.actions.subworkflow import WorkflowArgs
from execflow.definition import Task
from execflow.engine.base import E, Key, T, log
from execflow.engine.queue import Queueing, is_queued
from execflow.engine.run import Attempt, Run, item_key, split_key
from execflow.errors import TaskFailure
from execflow.executors import Outcome
from execflow.levels import DEBUG, ERROR, INFO, NOTICE, WARNING
from execflow.limits import storable
from execflow.masking import redact
from execflow.records import EventRecord, TaskRunRecord
from execflow.states import ExecutionState, can_transition
from execflow.store.ops import InsertCommand, InsertTaskRun, Op, UpdateExecution, UpdateTaskRun

# the error types a task run's outcome is counted by; any other is "failed"
_OUTCOMES = frozenset({"lost", "timeout", "internal"})
_STATE_LEVELS = {E.FAILED: ERROR, E.CANCELED: NOTICE, E.SUSPENDED: NOTICE}


class Advancing(Queueing):
    """Advancing one execution: readiness, starting attempts, results and retries, lost
    attempts, cancel, completion and its state."""

    def _record_result(
        self,
        key: Key,
        outcome: Outcome,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
    ) -> None:
        run, attempt = self._current(key)
        if run is None:
            self._ignored(key, outcome, now)
            return
        if attempt is None or attempt.state is not T.RUNNING:
            log.info("ignored a stale result for %s", key)
            return
        self._inflight.pop(key, None)
        self._touched.add(run.id)
        # what no database stores (NUL, lone surrogates) is replaced, not a fault of the run
        output, error = storable(outcome.output), storable(outcome.error)
        if output is not outcome.output or error is not outcome.error:
            outcome = replace(outcome, output=output, error=error)
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
        action = run.task(task_id).action
        if outcome.ok:
            self._completed(run, attempt, outcome.output, now, ops)
            return
        message = (outcome.error or {}).get("message", "")
        kind = (outcome.error or {}).get("type")
        self.metrics.task_run(action, kind if kind in _OUTCOMES else "failed")
        lost = kind == "lost"
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

    def _completed(
        self, run: Run, attempt: Attempt, output: Any, now: datetime, ops: list[Op]
    ) -> None:
        task_id, number = attempt.task_id, attempt.attempt
        self.metrics.task_run(run.task(task_id).action, "completed")
        attempt.state, attempt.output = T.COMPLETED, output
        tid, index = split_key(task_id)
        if index is not None:
            run.fanouts[tid].active.discard(index)
        if run.log_level >= DEBUG:  # most executions keep no debug entries: skip the text
            self._log(run, ops, now, DEBUG, "task", f"task {task_id} completed", task_id, number)
        ops.append(
            UpdateTaskRun(
                run.id, task_id, number, T.RUNNING, T.COMPLETED, output=output, ended_at=now
            )
        )

    def _ignored(self, key: Key, outcome: Outcome, now: datetime) -> None:
        """Another node holds the execution now (or it ended): the result is not this
        node's to record, but the audit log says that it came, and was ignored."""
        text = (
            f"a result of task {key[1]} (attempt {key[2]}) came to node {self.node_id},"
            " which no longer holds the execution; ignored"
        )
        data = {"node": self.node_id, "ok": outcome.ok}
        event = EventRecord(key[0], now, WARNING, "task", text, key[1], key[2], data)
        self._stale_results.append(event)

    def _after_lost(self, run: Run, task_id: str, message: str) -> tuple[float | None, str]:
        """An attempt lost to a crash, a worker's death or a takeover runs again at once,
        whatever the task's retry policy, up to `max_lost_attempts` times; a task that is
        lost every time (it kills its worker, say) still ends. The policy's count of
        attempts leaves lost ones out."""
        lost = run.lost.get(task_id, 0) + 1
        run.lost[task_id] = lost
        self.metrics.lost_attempt()
        limit = self.settings.max_lost_attempts
        if lost <= limit:
            return 0.0, f"{message} ({lost} of at most {limit} lost attempts run again)"
        return None, f"{message}; lost {lost} times (EXECFLOW_MAX_LOST_ATTEMPTS is {limit})"

    def _advance(
        self, run: Run, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]
    ) -> None:
        if run.state.terminal:
            return
        if run.cancel_requested:
            self._cancel(run, now, ops)
            return
        if self._not_yet(run, now, ops) or self._await_slot(run, now, ops):
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
            wake_at, until, deadline = _times(action, args, task, now)
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
        elif action.placement is Placement.POOL:
            # written at the end of the tick: started if it gets a slot, else queued (queue.py)
            self._offer(run, attempt, args, scheduled)
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
        error = self._start_error(run, attempt.task_id, exc)
        self.metrics.task_run(run.task(attempt.task_id).action, "failed")
        attempt.state, attempt.error = T.FAILED, error
        tid, index = split_key(attempt.task_id)
        if index is not None:
            run.fanouts[tid].active.discard(index)
            run.fanouts[tid].failed.append(index)
        else:
            run.failure = run.failure or {"task": attempt.task_id, **error}
        self._persist(run, attempt, now, ops, scheduled, error=error, ended_at=now)

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
                and not is_queued(a)  # what never reached a worker has nothing to finish
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
            self.metrics.task_run(run.task(a.task_id).action, "canceled")
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
        if state.terminal:
            self._ending.add(run.id)
        if state.terminal and run.definition.concurrency is not None:
            self._admission_wanted = True  # its slot frees: the next in line may start
            self._wake.set()
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


def _times(
    action: Action, args: Any, task: Task, now: datetime
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """When a starting attempt wakes (a timer action), waits until (a signal) or times out."""
    if action.placement is Placement.TIMER and action.wake_at is not None:
        return action.wake_at(args, now), None, None
    if isinstance(args, SignalArgs):
        timeout = args.timeout or task.timeout
        return None, now + timedelta(seconds=timeout) if timeout else None, None
    if task.timeout:
        return None, None, now + timedelta(seconds=task.timeout)
    return None, None, None
