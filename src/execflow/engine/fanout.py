"""Fan-out (`for_each`): items started up to a concurrency, then aggregated; store writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from execflow.definition import ItemFailure, StoreKind
from execflow.engine.base import EngineBase, T
from execflow.engine.run import Attempt, FanOut, Run, item_key, split_key
from execflow.errors import TaskFailure
from execflow.levels import DEBUG, ERROR
from execflow.records import StoreEntry
from execflow.store.ops import InsertStoreEntry, Op, UpdateTaskRun


class FanOuts(EngineBase):
    """`for_each` tasks and the stores tasks write to."""

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
