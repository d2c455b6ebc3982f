"""Child executions: a `workflow` task starts one, within the bounds of its tree.

A child is created in the transaction that records its task's start, so a `workflow`
attempt found RUNNING without a child (after a takeover) made none: it starts it again
rather than counting as lost. The bounds are the engine's, never the caller's:

- how deep children nest comes from the parent the engine holds (`ExecutionRecord.depth`,
  one more than the parent's), at most `MAX_DEPTH`;
- one start makes at most `max_items` executions through children, at every depth (its
  tree, counted by `root_id`), like the items of one fan-out;
- child starts count against the project's start rate (`start_rate`, `start_burst`, per
  node, as a token's starts do): one over the rate waits, first come first started, until
  the rate allows it. Its task runs meanwhile, so its timeout counts and a cancel stops it.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any

from execflow.actions.subworkflow import MAX_DEPTH, WorkflowArgs
from execflow.definition import Definition, resolve_inputs
from execflow.engine.base import EngineBase, T
from execflow.engine.run import Attempt, Run, split_key
from execflow.errors import ExecflowError, InvalidInput, TaskFailure, Unavailable
from execflow.executors import Outcome
from execflow.levels import INFO
from execflow.masking import redact
from execflow.records import ExecutionRecord
from execflow.store.base import new_id
from execflow.store.ops import InsertExecution, Op, UpdateTaskRun
from execflow.store.trees import tree_size

Spawn = tuple[Run, Attempt, WorkflowArgs]
# a child start held by the rate is tried again no sooner than this (seconds): a tick then
# starts the children of several tokens at once, not one per tick
RETRY_HELD = 0.05


class Children(EngineBase):
    """The `workflow` tasks that started this tick (or wait for the rate) start their
    children, in the tick's transaction."""

    async def _spawn_children(
        self, now: datetime, ops: list[Op], starts: list[tuple[Run, Attempt, Any]]
    ) -> list[tuple[ExecutionRecord, Definition]]:
        """Create the children the rate allows now, in the order asked, per project; a child
        that cannot start fails its task; the others wait for a later tick."""
        new, self._spawns = self._spawns, []
        for spawn in new:
            self._held.setdefault(spawn[0].project_id, deque()).append(spawn)
        made: list[tuple[ExecutionRecord, Definition]] = []
        trees: dict[str, int] = {}  # executions in each tree, counted once per tick
        taken: set[int] = set()  # the attempts (by identity) no longer waiting
        for project, queue in list(self._held.items()):
            wait = 0.0
            while queue:
                run, attempt, args = queue[0]
                if self._current_spawn(run, attempt):
                    wait = self._child_starts.take(project, now)
                    if wait:
                        break
                    child = await self._spawn(run, attempt, args, now, ops, starts, trees)
                    if child is not None:
                        made.append(child)
                queue.popleft()
                taken.add(id(attempt))
            if queue:
                head = queue[0]
                when = now + timedelta(seconds=max(wait, RETRY_HELD))
                self._add_timer(when, "spawn", (head[0].id, head[1].task_id, head[1].attempt))
            else:
                del self._held[project]
        self._log_held([s for s in new if id(s[1]) not in taken], now, ops)
        return made

    def _current_spawn(self, run: Run, attempt: Attempt) -> bool:
        """Whether a child start asked for is still wanted: its execution is held here (the
        same one: not dropped and taken over again), its attempt runs and has no child."""
        return (
            self.runs.get(run.id) is run
            and run.attempts.get(attempt.task_id) is attempt
            and attempt.state is T.RUNNING
            and not (attempt.waiting or {}).get("child")
            and run.id not in self._faults
        )

    def _log_held(self, waiting: list[Spawn], now: datetime, ops: list[Op]) -> None:
        """Once per execution and tick, how many of the child starts it asked for wait."""
        counts: dict[str, int] = {}
        for asking, _, _ in waiting:
            counts[asking.id] = counts.get(asking.id, 0) + 1
        limits = self.settings
        for run_id, count in counts.items():
            run = self.runs.get(run_id)
            if run is None or run_id in self._faults:
                continue
            text = (
                f"{count} child start(s) wait for the project's start rate"
                f" ({limits.start_rate:g} a second, bursts of {limits.start_burst};"
                " EXECFLOW_START_RATE, EXECFLOW_START_BURST)"
            )
            self._log(run, ops, now, INFO, "task", text)

    async def _spawn(
        self,
        run: Run,
        attempt: Attempt,
        args: WorkflowArgs,
        now: datetime,
        ops: list[Op],
        starts: list[tuple[Run, Attempt, Any]],
        trees: dict[str, int],
    ) -> tuple[ExecutionRecord, Definition] | None:
        key = (run.id, attempt.task_id, attempt.attempt)
        try:
            child, definition = await self._child_of(run, attempt, args, now, trees)
        except Unavailable:
            raise  # the database, not the child: the tick fails and is tried again
        except (ExecflowError, TaskFailure) as exc:
            error = {"type": "workflow", "message": exc.message}
            self._record_result(key, Outcome(False, error=error, retryable=False), now, ops, starts)
            self._wake.set()
            return None
        except Exception as exc:
            self._fault(run.id, exc, f"starting the child of task {attempt.task_id}")
            return None
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
        text = f"task {attempt.task_id} started child execution {child.id} ({child.workflow_name})"
        self._log(run, ops, now, INFO, "task", text, attempt.task_id, attempt.attempt)
        return child, definition

    async def _child_of(
        self, run: Run, attempt: Attempt, args: WorkflowArgs, now: datetime, trees: dict[str, int]
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
        size = trees.get(run.root_id)
        if size is None:
            size = await self.store.read(tree_size, self.store, run.root_id)
        limit = self.settings.max_items
        if size >= limit:
            raise TaskFailure(
                f"execution {run.root_id} has made {size} executions through children;"
                f" one start makes at most {limit} (EXECFLOW_MAX_ITEMS)",
                "workflow",
                False,
            )
        trees[run.root_id] = size + 1
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
            started_by=run.id,
            log_level=run.log_level,
            parent_id=run.id,
            parent_task=attempt.task_id,
            depth=run.depth + 1,
            root_id=run.root_id,
        )
        return child, definition

    def _resume_child(self, run: Run, attempt: Attempt, now: datetime) -> None:
        """A running `workflow` attempt of an execution taken over. Its child runs on its own
        (its end comes back as a command); if it has none, none was made (it is made in the
        transaction that records it), so it is asked for again, its arguments rendered
        again. Either way its timeout is set again."""
        key = (run.id, attempt.task_id, attempt.attempt)
        timeout = run.task(attempt.task_id).timeout
        if timeout:
            self._add_timer(now + timedelta(seconds=timeout), "timeout", key)
        if (attempt.waiting or {}).get("child"):
            return
        tid, index = split_key(attempt.task_id)
        try:
            rendered = run.definition.renderers[tid](run.context(index, tid))
            args = WorkflowArgs.model_validate(rendered)
        except Exception as exc:
            error = self._start_error(run, attempt.task_id, exc)
            self._results.append((key, Outcome(False, error=error, retryable=False)))
            return
        self._spawns.append((run, attempt, args))
