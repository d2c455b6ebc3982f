"""The state machines of executions and task runs: pure tables, no I/O.

Every state change in the store is guarded by the state it expects to leave,
so the tables here are the single authority on which changes are legal.
"""

from __future__ import annotations

import enum


class ExecutionState(enum.StrEnum):
    INITIALIZING = "INITIALIZING"  # committed, not yet picked up by an engine
    RUNNING = "RUNNING"  # at least one task is running or ready to run
    WAITING = "WAITING"  # only timers are pending (sleeps, retry back-off, a scheduled start)
    WAITING_ON_SIGNAL = "WAITING_ON_SIGNAL"  # only waits for signals are pending
    SUSPENDED = "SUSPENDED"  # paused by a person: no new task run starts
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELED})
ACTIVE = frozenset(ExecutionState) - TERMINAL

_E = ExecutionState
EXECUTION_TRANSITIONS: dict[ExecutionState, frozenset[ExecutionState]] = {
    _E.INITIALIZING: frozenset(
        {_E.RUNNING, _E.WAITING, _E.WAITING_ON_SIGNAL, _E.SUSPENDED, *TERMINAL}
    ),
    _E.RUNNING: frozenset({_E.WAITING, _E.WAITING_ON_SIGNAL, _E.SUSPENDED, *TERMINAL}),
    _E.WAITING: frozenset({_E.RUNNING, _E.WAITING_ON_SIGNAL, _E.SUSPENDED, *TERMINAL}),
    _E.WAITING_ON_SIGNAL: frozenset({_E.RUNNING, _E.WAITING, _E.SUSPENDED, *TERMINAL}),
    # running tasks finish while suspended: the last one may complete the execution
    _E.SUSPENDED: frozenset({_E.RUNNING, _E.WAITING, _E.WAITING_ON_SIGNAL, *TERMINAL}),
    _E.COMPLETED: frozenset(),
    # a failed or cancelled execution may be retried from the failure (it runs again)
    _E.FAILED: frozenset({_E.RUNNING}),
    _E.CANCELED: frozenset({_E.RUNNING}),
}


def can_transition(old: ExecutionState, new: ExecutionState) -> bool:
    return old == new or new in EXECUTION_TRANSITIONS[old]


class TaskRunState(enum.StrEnum):
    SCHEDULED = "SCHEDULED"  # waiting for its start time (retry back-off)
    RUNNING = "RUNNING"  # handed to an executor (or a timer)
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TASK_TERMINAL


TASK_TERMINAL = frozenset({TaskRunState.COMPLETED, TaskRunState.FAILED, TaskRunState.CANCELED})

_T = TaskRunState
TASK_TRANSITIONS: dict[TaskRunState, frozenset[TaskRunState]] = {
    _T.SCHEDULED: frozenset({_T.RUNNING, _T.CANCELED}),
    _T.RUNNING: frozenset({_T.COMPLETED, _T.FAILED, _T.CANCELED}),
    _T.COMPLETED: frozenset(),
    _T.FAILED: frozenset(),
    _T.CANCELED: frozenset(),
}


def task_can_transition(old: TaskRunState, new: TaskRunState) -> bool:
    return new in TASK_TRANSITIONS[old]
