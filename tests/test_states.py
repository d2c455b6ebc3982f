"""The execution and task-run state machines."""

from __future__ import annotations

import pytest

from execflow.states import (
    ACTIVE,
    EXECUTION_TRANSITIONS,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    TERMINAL,
    ExecutionState,
    TaskRunState,
    can_transition,
    task_can_transition,
)

E = ExecutionState
T = TaskRunState

ALLOWED_EXECUTION = {
    (E.INITIALIZING, E.RUNNING),
    (E.INITIALIZING, E.WAITING),
    (E.INITIALIZING, E.WAITING_ON_SIGNAL),
    (E.INITIALIZING, E.SUSPENDED),
    (E.INITIALIZING, E.COMPLETED),
    (E.INITIALIZING, E.FAILED),
    (E.INITIALIZING, E.CANCELED),
    (E.RUNNING, E.WAITING),
    (E.RUNNING, E.WAITING_ON_SIGNAL),
    (E.RUNNING, E.SUSPENDED),
    (E.RUNNING, E.COMPLETED),
    (E.RUNNING, E.FAILED),
    (E.RUNNING, E.CANCELED),
    (E.WAITING, E.RUNNING),
    (E.WAITING, E.WAITING_ON_SIGNAL),
    (E.WAITING, E.SUSPENDED),
    (E.WAITING, E.COMPLETED),
    (E.WAITING, E.FAILED),
    (E.WAITING, E.CANCELED),
    (E.WAITING_ON_SIGNAL, E.RUNNING),
    (E.WAITING_ON_SIGNAL, E.WAITING),
    (E.WAITING_ON_SIGNAL, E.SUSPENDED),
    (E.WAITING_ON_SIGNAL, E.COMPLETED),
    (E.WAITING_ON_SIGNAL, E.FAILED),
    (E.WAITING_ON_SIGNAL, E.CANCELED),
    (E.SUSPENDED, E.RUNNING),
    (E.SUSPENDED, E.WAITING),
    (E.SUSPENDED, E.WAITING_ON_SIGNAL),
    (E.SUSPENDED, E.COMPLETED),
    (E.SUSPENDED, E.FAILED),
    (E.SUSPENDED, E.CANCELED),
    (E.FAILED, E.RUNNING),
    (E.CANCELED, E.RUNNING),
}

ALLOWED_TASK = {
    (T.SCHEDULED, T.RUNNING),
    (T.SCHEDULED, T.CANCELED),
    (T.RUNNING, T.COMPLETED),
    (T.RUNNING, T.FAILED),
    (T.RUNNING, T.CANCELED),
}


def test_states_are_string_values() -> None:
    assert [s.value for s in E] == [
        "INITIALIZING",
        "RUNNING",
        "WAITING",
        "WAITING_ON_SIGNAL",
        "SUSPENDED",
        "COMPLETED",
        "FAILED",
        "CANCELED",
    ]
    assert [s.value for s in T] == ["SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELED"]
    assert E("RUNNING") == "RUNNING"


# --- executions -----------------------------------------------------------------------------


def test_terminal_and_active_execution_states() -> None:
    assert frozenset({E.COMPLETED, E.FAILED, E.CANCELED}) == TERMINAL
    assert frozenset(E) - TERMINAL == ACTIVE
    assert not ACTIVE & TERMINAL


@pytest.mark.parametrize("state", list(E))
def test_terminal_property_matches_the_terminal_set(state: ExecutionState) -> None:
    assert state.terminal is (state in {E.COMPLETED, E.FAILED, E.CANCELED})


def test_every_execution_state_has_a_row() -> None:
    assert set(EXECUTION_TRANSITIONS) == set(E)


@pytest.mark.parametrize("old", list(E))
@pytest.mark.parametrize("new", list(E))
def test_execution_transitions(old: ExecutionState, new: ExecutionState) -> None:
    expected = old == new or (old, new) in ALLOWED_EXECUTION
    assert can_transition(old, new) is expected


@pytest.mark.parametrize("state", list(E))
def test_staying_in_the_same_execution_state_is_allowed(state: ExecutionState) -> None:
    assert can_transition(state, state)


@pytest.mark.parametrize("new", [s for s in E if s is not E.COMPLETED])
def test_a_completed_execution_never_changes(new: ExecutionState) -> None:
    assert not can_transition(E.COMPLETED, new)


@pytest.mark.parametrize("old", [E.FAILED, E.CANCELED])
def test_failed_or_canceled_execution_can_only_run_again(old: ExecutionState) -> None:
    assert {new for new in E if new != old and can_transition(old, new)} == {E.RUNNING}


def test_a_suspended_execution_completes_when_its_last_running_task_does() -> None:
    # suspending stops new task runs, not the running ones: the last of them may end it
    assert can_transition(E.SUSPENDED, E.COMPLETED)
    assert can_transition(E.SUSPENDED, E.CANCELED)
    assert not can_transition(E.SUSPENDED, E.INITIALIZING)


@pytest.mark.parametrize("old", list(ACTIVE))
def test_every_active_execution_can_be_canceled_and_failed(old: ExecutionState) -> None:
    assert can_transition(old, E.CANCELED)
    assert can_transition(old, E.FAILED)


def test_nothing_returns_to_initializing() -> None:
    assert [old for old in E if can_transition(old, E.INITIALIZING)] == [E.INITIALIZING]


# --- task runs ------------------------------------------------------------------------------


def test_terminal_task_states() -> None:
    assert frozenset({T.COMPLETED, T.FAILED, T.CANCELED}) == TASK_TERMINAL
    assert [s for s in T if s.terminal] == [T.COMPLETED, T.FAILED, T.CANCELED]
    assert set(TASK_TRANSITIONS) == set(T)


@pytest.mark.parametrize("old", list(T))
@pytest.mark.parametrize("new", list(T))
def test_task_transitions(old: TaskRunState, new: TaskRunState) -> None:
    assert task_can_transition(old, new) is ((old, new) in ALLOWED_TASK)


@pytest.mark.parametrize("old", list(TASK_TERMINAL))
def test_finished_task_runs_never_change(old: TaskRunState) -> None:
    assert not any(task_can_transition(old, new) for new in T)


@pytest.mark.parametrize("state", list(T))
def test_task_runs_do_not_transition_to_their_own_state(state: TaskRunState) -> None:
    assert not task_can_transition(state, state)


def test_a_scheduled_task_cannot_finish_without_running() -> None:
    assert not task_can_transition(T.SCHEDULED, T.COMPLETED)
    assert not task_can_transition(T.SCHEDULED, T.FAILED)
