"""Commands: steering, signals, and a child's end told to its parent."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from execflow.actions.signal import check_payload
from execflow.engine.base import E, EngineBase, T
from execflow.engine.run import Attempt, Run
from execflow.executors import Outcome
from execflow.levels import NOTICE, WARNING
from execflow.records import CommandRecord
from execflow.store.ops import FinishCommand, InsertCommand, Op


class Commands(EngineBase):
    """Requests recorded for an execution (cancel, suspend, resume, signals, a child's
    end), carried out in the tick that marks them done."""

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
