"""Writing one tick, and containing what the database refuses."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from execflow.engine.base import E, EngineBase, Fault, fault_text, log
from execflow.engine.run import Attempt, Run
from execflow.levels import ERROR
from execflow.masking import NO_SECRETS, Secrets, redact
from execflow.records import EventRecord
from execflow.states import ExecutionState
from execflow.store import LeaseLost
from execflow.store.database import is_outage
from execflow.store.ops import (
    AbortExecution,
    InsertCommand,
    InsertEvent,
    InsertExecution,
    InsertStoreEntry,
    InsertTaskRun,
    Op,
    UpdateExecution,
    UpdateTaskRun,
)


class Writing(EngineBase):
    """Writing a tick: secrets masked, faulted executions written off, a refused row traced
    to its execution, and what was committed announced."""

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
                began = time.perf_counter()
                self._kept |= await self.store.call(self.store.apply, self.node_id, ops)
                self.metrics.commit(time.perf_counter() - began)
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
        hidden = run.hidden if run is not None else NO_SECRETS
        message = fault_text(fault, hidden)
        error = {"type": "internal", "message": message}
        task_error = {"type": "internal", "message": f"the execution failed: {message}"}
        parent = run.parent_id if run is not None else fault.parent_id
        ops: list[Op] = [AbortExecution(run_id, error, task_error, now, parent)]
        self.metrics.internal_failure()
        if run is None or run.log_level >= ERROR:
            data = {"from": run.state.value if run is not None else None, "to": E.FAILED.value}
            text = f"execution failed: {message}"
            ops.append(InsertEvent(EventRecord(run_id, now, ERROR, "state", text, data=data)))
        if run is not None:
            run.state = E.FAILED
            self._ending.add(run_id)
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
                self._claim_wanted = True  # or one that was parked, which it woke
                self._wake.set()
            elif isinstance(op, InsertExecution):
                self.metrics.execution_started()
            elif isinstance(op, AbortExecution):
                self._commands_wanted = True  # its parent or children may be held here
                self._claim_wanted = True  # or parked, and woken
                self._wake.set()
                self._ended(op.execution_id, E.FAILED)
            elif isinstance(op, UpdateExecution):
                if op.state.terminal:
                    self._ended(op.execution_id, op.state)
                else:
                    for listener in self.listeners:
                        listener(op.execution_id, op.state)

    def _ended(self, execution_id: str, state: ExecutionState) -> None:
        self.metrics.execution_ended(state.value)
        for listener in self.listeners:
            listener(execution_id, state)
        run = self.runs.get(execution_id)
        if run is None or run.has_callback:
            for notify in self.callback_listeners:
                notify()
        for waiter in self._waiters.pop(execution_id, ()):
            if not waiter.done():
                waiter.set_result(None)


def _masked(op: Op, hidden: Secrets) -> Op:
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
