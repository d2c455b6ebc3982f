"""Request and response shapes of the native API (`XCreate / XPublic / XList`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from execflow import levels
from execflow.auth import ROLES
from execflow.definition import Definition, mask_secrets, secret_values
from execflow.masking import NO_SECRETS, Secrets, masked_document, redact
from execflow.project_actions import DEFAULT_ACTIONS
from execflow.records import (
    Admission,
    CallbackStatus,
    EventRecord,
    ExecutionRecord,
    ProjectRecord,
    RevisionRecord,
    TaskRunRecord,
    TokenRecord,
    WorkflowRecord,
)
from execflow.service import PendingSignal, Plan, pending_signals
from execflow.states import ExecutionState, TaskRunState


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorInfo(_Out):
    id: str = Field(description="A machine-readable code, such as `invalid_input`")
    description: str
    details: list[dict[str, str]] = Field(default_factory=list)
    request_id: str


class ErrorBody(_Out):
    error: ErrorInfo


class WorkflowPublic(_Out):
    name: str
    description: str
    revision: int = Field(description="The latest revision")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, wf: WorkflowRecord) -> WorkflowPublic:
        return cls(
            name=wf.name,
            description=wf.description,
            revision=wf.latest_revision,
            created_at=wf.created_at,
            updated_at=wf.updated_at,
        )


class WorkflowApplied(WorkflowPublic):
    created: bool = Field(description="True when this request created the workflow")


class WorkflowList(_Out):
    items: list[WorkflowPublic]


class RevisionPublic(_Out):
    name: str
    revision: int
    digest: str
    created_at: datetime
    definition: dict[str, Any] = Field(
        description="The document as stored, but each secret parameter's default and choices"
        " (and what schedules give it) masked"
    )

    @classmethod
    def of(cls, wf: WorkflowRecord, rev: RevisionRecord) -> RevisionPublic:
        return cls(
            name=wf.name,
            revision=rev.number,
            digest=rev.digest,
            created_at=rev.created_at,
            definition=masked_document(rev.definition),
        )


class ExecutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    revision: int | None = Field(default=None, ge=1, description="Defaults to the latest")
    name: str | None = Field(default=None, description="Unique per workflow; defaults to the id")
    labels: dict[str, str] = Field(default_factory=dict)
    log_level: str | int | None = Field(
        default=None,
        description="The floor of what the audit log keeps: emergency … debug (default info)",
    )
    scheduled_at: datetime | None = Field(
        default=None,
        description="Start the first task no earlier than this; `execution.scheduled_at`",
    )
    callback: str | None = Field(
        default=None,
        max_length=2048,
        description="A public http(s) URL that is POSTed the execution once it has ended",
    )
    stores: dict[str, Any] | None = Field(
        default=None, description="Initial content of the workflow's stores, by name"
    )


class RerunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_task: str = Field(description="This task and everything after it run again")
    inputs: dict[str, Any] | None = Field(
        default=None,
        description="Overrides of the original inputs, key by key; a rerun that changes"
        " any input is given every secret input again",
    )


class ExecutionStarted(_Out):
    id: str
    name: str
    urn: str
    workflow: str
    revision: int
    state: ExecutionState
    started_at: datetime

    @classmethod
    def of(cls, ex: ExecutionRecord) -> ExecutionStarted:
        return cls(
            id=ex.id,
            name=ex.name,
            urn=ex.urn,
            workflow=ex.workflow_name,
            revision=ex.revision,
            state=ex.state,
            started_at=ex.started_at,
        )


class ExecutionSummary(ExecutionStarted):
    ended_at: datetime | None
    labels: dict[str, str]

    @classmethod
    def of(cls, ex: ExecutionRecord) -> ExecutionSummary:
        return cls(**ExecutionStarted.of(ex).model_dump(), ended_at=ex.ended_at, labels=ex.labels)


class TaskRunPublic(_Out):
    task: str
    item: int | None = Field(default=None, description="The index of a fan-out item")
    child: str | None = Field(
        default=None, description="The child execution a `workflow` task started"
    )
    attempt: int
    round: int = Field(description="The retry round it ran in")
    state: TaskRunState
    output: Any = None
    error: dict[str, Any] | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: float | None = None

    @classmethod
    def of(cls, tr: TaskRunRecord, secrets: Secrets = NO_SECRETS) -> TaskRunPublic:
        duration = None
        if tr.started_at and tr.ended_at:
            duration = round((tr.ended_at - tr.started_at).total_seconds() * 1000, 3)
        return cls(
            task=tr.task_id,
            item=tr.item,
            child=(tr.waiting or {}).get("child"),
            attempt=tr.attempt,
            round=tr.round,
            state=tr.state,
            output=redact(tr.output, secrets),
            error=redact(tr.error, secrets),
            queued_at=tr.queued_at,
            started_at=tr.started_at,
            ended_at=tr.ended_at,
            duration_ms=duration,
        )


class SignalPublic(_Out):
    name: str
    task: str
    attempt: int
    schema_: dict[str, Any] | None = Field(
        alias="schema", description="JSON Schema of the payload (null: anything)"
    )
    description: str
    since: datetime | None
    timeout_seconds: float | None

    @classmethod
    def of(cls, p: PendingSignal) -> SignalPublic:
        return cls(
            name=p.name,
            task=p.task,
            attempt=p.attempt,
            schema=p.schema,
            description=p.description,
            since=p.since,
            timeout_seconds=p.timeout,
        )


class CallbackPublic(_Out):
    url: str
    state: str = Field(description="pending, delivered or failed")
    attempts: int
    next_at: datetime | None = Field(description="When the next delivery attempt is due")
    last_status: int | None = Field(description="The HTTP status of the last attempt")
    last_error: str | None

    @classmethod
    def of(cls, c: CallbackStatus) -> CallbackPublic:
        return cls(
            url=c.url,
            state=c.state,
            attempts=c.attempts,
            next_at=c.next_at,
            last_status=c.last_status,
            last_error=c.last_error,
        )


class ConcurrencyPublic(_Out):
    limit: int = Field(description="How many executions of the workflow run at once")
    waiting: bool = Field(
        description="Whether it waits (WAITING) for one of those slots; they go oldest first"
    )
    ahead: int | None = Field(
        description="Executions of the workflow in the line before it (null: not known yet)"
    )
    since: datetime | None = Field(description="When it joined the line, or was admitted")

    @classmethod
    def of(cls, ex: ExecutionRecord, limit: int, admission: Admission | None) -> ConcurrencyPublic:
        if admission is not None:
            return cls(
                limit=limit,
                waiting=admission.waiting,
                ahead=admission.ahead,
                since=admission.since,
            )
        # its engine has not asked for a slot yet (it just started), or it ended
        return cls(
            limit=limit,
            waiting=ex.state is ExecutionState.INITIALIZING,
            ahead=None,
            since=None,
        )


class ExecutionPublic(ExecutionSummary):
    inputs: dict[str, Any] = Field(description="Secret parameters are masked")
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    cancel_requested: bool
    started_by: str | None
    scheduled_at: datetime | None
    log_level: str
    round: int = Field(description="How many times it was retried")
    rerun_of: str | None = Field(description="The execution this one re-runs part of")
    parent_id: str | None = Field(description="The execution whose task started this one")
    callback: CallbackPublic | None
    pending_signals: list[SignalPublic] = Field(
        description="Signals the execution waits for, with the schema of their payload"
    )
    tasks: list[TaskRunPublic] = Field(description="Every attempt of every task, oldest first")
    concurrency: ConcurrencyPublic | None = Field(
        default=None,
        description="Where it stands under its workflow's `concurrency` (null: no limit)",
    )

    @classmethod
    def of_detail(
        cls, ex: ExecutionRecord, definition: Definition, admission: Admission | None = None
    ) -> ExecutionPublic:
        """Secret inputs are masked here and wherever their values reappear (outputs, errors)."""
        secrets = secret_values(definition, ex.inputs)
        limit = definition.concurrency
        return cls(
            **ExecutionSummary.of(ex).model_dump(),
            inputs=mask_secrets(definition, ex.inputs),
            outputs=redact(ex.outputs, secrets),
            error=redact(ex.error, secrets),
            created_at=ex.created_at,
            updated_at=ex.updated_at,
            cancel_requested=ex.cancel_requested,
            started_by=ex.started_by,
            scheduled_at=ex.scheduled_at,
            log_level=levels.name_of(ex.log_level),
            round=ex.round,
            rerun_of=ex.rerun_of,
            parent_id=ex.parent_id,
            callback=CallbackPublic.of(ex.callback) if ex.callback else None,
            pending_signals=[SignalPublic.of(p) for p in pending_signals(ex)],
            tasks=[TaskRunPublic.of(t, secrets) for t in ex.task_runs],
            concurrency=None if limit is None else ConcurrencyPublic.of(ex, limit, admission),
        )


class PlannedTaskPublic(_Out):
    id: str
    action: str
    needs: list[str]
    level: int = Field(
        description="0 for tasks that need nothing; tasks of a level may run together"
    )


class PlanPublic(_Out):
    dry_run: bool = True
    workflow: str
    revision: int
    inputs: dict[str, Any] = Field(description="Resolved with defaults; secrets masked")
    scheduled_at: datetime | None
    log_level: str
    tasks: list[PlannedTaskPublic] = Field(description="In an order that respects `needs`")

    @classmethod
    def of(cls, plan: Plan) -> PlanPublic:
        return cls(
            workflow=plan.workflow,
            revision=plan.revision,
            inputs=plan.inputs,
            scheduled_at=plan.scheduled_at,
            log_level=plan.log_level,
            tasks=[
                PlannedTaskPublic(id=t.id, action=t.action, needs=t.needs, level=t.level)
                for t in plan.tasks
            ],
        )


class EventPublic(_Out):
    id: int = Field(description="Increasing; pass as `after` (or `Last-Event-ID`) to go on")
    at: datetime
    level: str = Field(description="A syslog severity: emergency … debug")
    kind: str = Field(description="state, task, command, signal, or output of a task")
    task: str | None
    attempt: int | None
    message: str
    data: dict[str, Any] | None
    actor: str | None = Field(description="The token that asked for it, for commands")

    @classmethod
    def of(cls, ev: EventRecord) -> EventPublic:
        return cls(
            id=ev.id or 0,
            at=ev.at,
            level=levels.name_of(ev.level),
            kind=ev.kind,
            task=ev.task_id,
            attempt=ev.attempt,
            message=ev.message,
            data=ev.data,
            actor=ev.actor,
        )


class StorePage(_Out):
    name: str
    type: str = Field(description="list, map or value")
    total: int = Field(description="Items of a list, keys of a map, 1 for a value")
    items: list[Any] = Field(
        description="A list's items; a map's entries as {key, value}; a value as one item"
    )
    next_offset: int | None = Field(description="Pass as `offset` for the next page")


class ItemRunList(_Out):
    items: list[TaskRunPublic]
    next_offset: int | None


class EventList(_Out):
    items: list[EventPublic]
    next_after: int | None = Field(description="Pass as `after` for the next page")


class ExecutionList(_Out):
    items: list[ExecutionSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


_ACTIONS_DOC = (
    "The actions the project's workflows may use; null: every action. Code actions (python,"
    " command) run the workflow's own code on the workers."
)


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="Letters, digits, '-' and '_'")
    actions: list[str] | None = Field(
        default_factory=lambda: list(DEFAULT_ACTIONS),
        max_length=64,
        description=_ACTIONS_DOC + " Default: the actions that run no code of their own.",
    )


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: list[str] | None = Field(max_length=64, description=_ACTIONS_DOC)


class ProjectPublic(_Out):
    name: str
    created_at: datetime
    actions: list[str] | None = Field(description=_ACTIONS_DOC)

    @classmethod
    def of(cls, p: ProjectRecord) -> ProjectPublic:
        actions = None if p.actions is None else list(p.actions)
        return cls(name=p.name, created_at=p.created_at, actions=actions)


class ProjectList(_Out):
    items: list[ProjectPublic]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(description=f"One of {', '.join(ROLES)} (see docs/security.md)")
    description: str = Field(default="", max_length=500)
    expires_at: datetime | None = Field(default=None, description="When it stops working")
    expires_in: str | None = Field(
        default=None, max_length=32, description="Or a lifetime from now, such as `30d`"
    )


class TokenInfo(_Out):
    id: str
    project: str
    role: str
    description: str
    state: str = Field(description="active, expired or revoked")
    created_at: datetime
    created_by: str | None = Field(description="The id of the token that created it")
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded at most once a minute")

    @classmethod
    def of(cls, t: TokenRecord, project: str, now: datetime) -> TokenInfo:
        return cls(
            id=t.id,
            project=project,
            role=t.role,
            description=t.description,
            state=t.state(now),
            created_at=t.created_at,
            created_by=t.created_by,
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
            last_used_at=t.last_used_at,
        )


class TokenList(_Out):
    items: list[TokenInfo]


class TokenPublic(TokenInfo):
    token: str = Field(description="Shown once; only its hash is stored")


class AccessKeyPublic(TokenInfo):
    secret: str = Field(description="Shown once; stored sealed (it signs requests)")


class HealthPublic(_Out):
    status: str = Field(description="`ok`, or `unavailable` when a check fails")
    checks: dict[str, str] = Field(
        default_factory=dict, description="Each check (`database`, `engine`): `ok` or why not"
    )
