"""Frozen records that cross layers: what the store returns and the service hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from execflow.states import ExecutionState, TaskRunState


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token of one project with one role."""

    token_id: str
    project_id: str
    project_name: str
    role: str
    # when the credential expires (None: never); what is made with it expires no later
    expires_at: datetime | None = field(default=None, compare=False)
    # the actions the project's workflows may use (None: every action)
    actions: frozenset[str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ProjectRecord:
    id: str
    name: str
    created_at: datetime
    # the actions its workflows may use (None: every action)
    actions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TokenRecord:
    """A token as listed: everything but its secret, of which only a hash is stored."""

    id: str
    project_id: str
    role: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_by: str | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class WorkflowRecord:
    id: str
    project_id: str
    name: str
    description: str
    latest_revision: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RevisionRecord:
    workflow_id: str
    number: int
    digest: str
    definition: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class TaskRunRecord:
    execution_id: str
    task_id: str
    attempt: int
    state: TaskRunState
    output: Any = None
    error: dict[str, Any] | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wake_at: datetime | None = None
    waiting: dict[str, Any] | None = None
    round: int = 0
    item: int | None = None


@dataclass(frozen=True)
class StoreEntry:
    """One write to a store: an appended item, a put under a key, or a set value."""

    execution_id: str
    store: str
    seq: int
    value: Any
    key: str | None = None
    task_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class ExecutionRecord:
    id: str
    project_id: str
    workflow_id: str
    workflow_name: str
    revision: int
    name: str
    state: ExecutionState
    inputs: dict[str, Any]
    labels: dict[str, str]
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    cancel_requested: bool = False
    started_by: str | None = None
    scheduled_at: datetime | None = None
    log_level: int = 6
    round: int = 0
    rerun_of: str | None = None
    parent_id: str | None = None
    parent_task: str | None = None
    # how many parents it has, and the execution at the top of its chain (None: itself),
    # set by the engine from the parent when it creates a child
    depth: int = 0
    root_id: str | None = None
    callback: CallbackStatus | None = None
    store_overlay: dict[str, Any] | None = None
    store_entries: tuple[StoreEntry, ...] = ()
    task_runs: tuple[TaskRunRecord, ...] = field(default=())

    @classmethod
    def new(
        cls,
        id: str,
        project_id: str,
        workflow_id: str,
        workflow_name: str,
        revision: int,
        inputs: dict[str, Any],
        now: datetime,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        started_by: str | None = None,
        scheduled_at: datetime | None = None,
        log_level: int = 6,
        rerun_of: str | None = None,
        parent_id: str | None = None,
        parent_task: str | None = None,
        depth: int = 0,
        root_id: str | None = None,
        callback: CallbackStatus | None = None,
        store_overlay: dict[str, Any] | None = None,
    ) -> ExecutionRecord:
        """An execution about to be created: INITIALIZING since `now`, named by its id
        unless given a name."""
        return cls(
            id=id,
            project_id=project_id,
            workflow_id=workflow_id,
            workflow_name=workflow_name,
            revision=revision,
            name=name or id,
            state=ExecutionState.INITIALIZING,
            inputs=inputs,
            labels=labels or {},
            outputs=None,
            error=None,
            created_at=now,
            started_at=now,
            ended_at=None,
            updated_at=now,
            started_by=started_by,
            scheduled_at=scheduled_at,
            log_level=log_level,
            rerun_of=rerun_of,
            parent_id=parent_id,
            parent_task=parent_task,
            depth=depth,
            root_id=root_id,
            callback=callback,
            store_overlay=store_overlay,
        )

    @property
    def urn(self) -> str:
        return f"urn:execflow:{self.project_id}:execution:{self.workflow_name}:{self.id}"


@dataclass(frozen=True)
class Admission:
    """Where an execution stands in the line for its workflow's `concurrency` slots."""

    waiting: bool
    ahead: int  # executions of its workflow in the line before it (0 once it holds a slot)
    since: datetime  # when it joined the line, or was admitted


@dataclass(frozen=True)
class CallbackStatus:
    """An execution's end-of-execution callback and how its delivery goes."""

    url: str
    state: str  # pending, delivered or failed
    attempts: int = 0
    next_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class CommandRecord:
    """A request for a running execution (cancel, suspend, resume, signal) its engine
    carries out."""

    id: int
    execution_id: str
    kind: str
    payload: dict[str, Any]
    actor: str | None
    created_at: datetime


@dataclass(frozen=True)
class EventRecord:
    """One entry of an execution's audit log; `level` is a syslog severity (0-7)."""

    execution_id: str
    at: datetime
    level: int
    kind: str
    message: str
    task_id: str | None = None
    attempt: int | None = None
    data: dict[str, Any] | None = None
    actor: str | None = None
    id: int | None = None
