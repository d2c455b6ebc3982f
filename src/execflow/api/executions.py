"""`/api/v1/executions`: start, follow, list and cancel executions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from execflow import levels
from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import (
    ErrorBody,
    EventList,
    EventPublic,
    ExecutionCreate,
    ExecutionList,
    ExecutionPublic,
    ExecutionStarted,
    ExecutionSummary,
    ItemRunList,
    PlanPublic,
    RerunCreate,
    StorePage,
    TaskRunPublic,
)
from execflow.definition import StoreKind
from execflow.errors import Detail, InvalidInput
from execflow.records import EventRecord
from execflow.service import StartRequest

router = APIRouter(prefix="/api/v1", tags=["executions"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


MAX_WAIT = 60.0


def wait_preference(prefer: str | None) -> float:
    """Seconds asked for by `Prefer: wait=N` (RFC 7240), at most 60; 0 when absent."""
    for part in (prefer or "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "wait":
            try:
                return max(0.0, min(float(value.strip().strip('"')), MAX_WAIT))
            except ValueError:
                return 0.0
    return 0.0


@router.post(
    "/workflows/{name}/executions",
    status_code=202,
    response_model=ExecutionStarted | ExecutionPublic | PlanPublic,
    responses={
        200: {
            "model": ExecutionPublic | ExecutionStarted | PlanPublic,
            "description": "Ended within `Prefer: wait=N`; or the execution this same request "
            "already started (by name or Idempotency-Key); or, with `dry_run`, the plan",
        },
        409: {"model": ErrorBody},
        **_ERRORS,
    },
    summary="Start an execution (asynchronously)",
)
async def start_execution(
    name: str,
    body: ExecutionCreate,
    response: Response,
    service: ServiceDep,
    who: PrincipalDep,
    prefer: Annotated[str | None, Header(description="`wait=N`: wait up to N ≤ 60 s")] = None,
    idempotency_key: Annotated[
        str | None,
        Header(description="Repeating the request with the same key gives the same execution"),
    ] = None,
    dry_run: Annotated[
        bool, Query(description="Validate and show the plan; start nothing, store nothing")
    ] = False,
) -> ExecutionStarted | ExecutionPublic | PlanPublic:
    """202 once the execution is committed; follow it at the `Location` it names.

    The same `name` (unique per workflow) with the same inputs, or the same `Idempotency-Key`
    with the same request, answers 200 with the execution already started; other inputs, 409.
    With `Prefer: wait=N`, answers 200 with the ended execution if it ends within N seconds.
    """
    request = StartRequest(
        inputs=body.inputs,
        revision=body.revision,
        name=body.name,
        labels=body.labels,
        log_level=body.log_level,
        scheduled_at=body.scheduled_at,
        callback=body.callback,
        stores=body.stores,
        idempotency_key=idempotency_key,
    )
    if dry_run:
        response.status_code = 200
        return PlanPublic.of(await service.plan(who, name, request))
    record, created = await service.start_or_find(who, name, request)
    response.headers["Location"] = f"/api/v1/executions/{record.id}"
    if not created:
        response.status_code = 200
    wait = wait_preference(prefer)
    if wait:
        ended = await service.wait_ended(who, record, wait)
        if ended is not None:
            response.status_code = 200
            response.headers["Preference-Applied"] = f"wait={wait:g}"
            return ExecutionPublic.of_detail(ended, await service.definition_of(ended))
    return ExecutionStarted.of(record)


@router.get(
    "/executions/{execution_id}",
    response_model=ExecutionPublic,
    responses=_ERRORS,
    summary="Get an execution with every task run",
)
async def get_execution(
    execution_id: str, service: ServiceDep, who: PrincipalDep
) -> ExecutionPublic:
    record = await service.get_execution(who, execution_id)
    definition = await service.definition_of(record)
    admission = await service.admission_of(record, definition)
    return ExecutionPublic.of_detail(record, definition, admission)


@router.get(
    "/executions",
    response_model=ExecutionList,
    responses=_ERRORS,
    summary="List executions, newest first",
)
async def list_executions(
    service: ServiceDep,
    who: PrincipalDep,
    workflow: str | None = None,
    state: str | None = None,
    label: Annotated[list[str] | None, Query(description="`key=value`, repeatable")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> ExecutionList:
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(details=[Detail("query:label", f"{item!r} is not key=value")])
        labels[key] = value
    items, next_cursor = await service.list_executions(who, workflow, state, labels, limit, cursor)
    return ExecutionList(items=[ExecutionSummary.of(e) for e in items], next_cursor=next_cursor)


_CONTROL = {409: {"model": ErrorBody}, **_ERRORS}


@router.get(
    "/executions/{execution_id}/stores/{name}",
    response_model=StorePage,
    responses=_ERRORS,
    summary="Dump one of an execution's stores, a page at a time",
)
async def store_content(
    execution_id: str,
    name: str,
    service: ServiceDep,
    who: PrincipalDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> StorePage:
    kind, content = await service.store_content(who, execution_id, name)
    if kind is StoreKind.LIST:
        entries: list[Any] = content
    elif kind is StoreKind.MAP:
        entries = [{"key": k, "value": v} for k, v in content.items()]
    else:
        entries = [content]
    page = entries[offset : offset + limit]
    more = offset + limit < len(entries)
    return StorePage(
        name=name,
        type=kind.value,
        total=len(entries),
        items=page,
        next_offset=offset + limit if more else None,
    )


@router.get(
    "/executions/{execution_id}/tasks/{task}/items",
    response_model=ItemRunList,
    responses=_ERRORS,
    summary="The runs of a fan-out task's items, a page at a time",
)
async def item_runs(
    execution_id: str,
    task: str,
    service: ServiceDep,
    who: PrincipalDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ItemRunList:
    """Every attempt of every item, by item then attempt."""
    runs, secrets = await service.item_runs(who, execution_id, task, offset, limit + 1)
    return ItemRunList(
        items=[TaskRunPublic.of(r, secrets) for r in runs[:limit]],
        next_offset=offset + limit if len(runs) > limit else None,
    )


def _level(value: str | None) -> int:
    try:
        return levels.DEBUG if value is None else levels.parse_level(value)
    except ValueError as exc:
        raise InvalidInput(details=[Detail("query:level", str(exc))]) from exc


@router.get(
    "/executions/{execution_id}/logs",
    response_model=EventList,
    responses=_ERRORS,
    summary="Page through an execution's audit log",
)
async def execution_logs(
    execution_id: str,
    service: ServiceDep,
    who: PrincipalDep,
    level: Annotated[
        str | None, Query(description="Only entries this severe or more (e.g. warning)")
    ] = None,
    task: Annotated[str | None, Query(description="Only entries of this task")] = None,
    after: Annotated[int, Query(ge=0, description="Entries after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    """State changes, retries, who did what, and what tasks logged, oldest first."""
    items = await service.logs(who, execution_id, _level(level), task, after, limit)
    next_after = items[-1].id if len(items) == limit else None
    return EventList(items=[EventPublic.of(e) for e in items], next_after=next_after)


async def _followable(
    execution_id: str,
    service: ServiceDep,
    who: PrincipalDep,
    level: Annotated[
        str | None, Query(description="Only entries this severe or more (e.g. notice)")
    ] = None,
    after: Annotated[int, Query(ge=0, description="Entries after this id")] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[EventRecord]:
    """Checked before the stream starts, so that a 401, 403, 404 or 422 is a plain answer."""
    if last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    floor = _level(level)
    await service.get_execution(who, execution_id)
    return service.follow(who, execution_id, after, floor)


@router.get(
    "/executions/{execution_id}/events",
    response_class=EventSourceResponse,
    responses=_ERRORS,
    summary="Follow an execution live (Server-Sent Events)",
)
async def execution_events(
    entries: Annotated[AsyncIterator[EventRecord], Depends(_followable)],
) -> AsyncIterator[ServerSentEvent]:
    """Each audit-log entry as an event named by its kind (`state` for state changes), with
    its id, so that a reconnecting client resumes where it left off (`Last-Event-ID`). The
    stream ends with an `end` event once the execution has ended."""
    async for event in entries:
        yield _sse(event)
    yield ServerSentEvent(event="end", data={})


def _sse(event: EventRecord) -> ServerSentEvent:
    body = EventPublic.of(event)
    return ServerSentEvent(event=event.kind, id=str(body.id), data=body.model_dump(mode="json"))


@router.post(
    "/executions/{execution_id}/cancel",
    status_code=202,
    response_model=ExecutionSummary,
    responses=_CONTROL,
    summary="Cancel an execution",
)
async def cancel_execution(
    execution_id: str,
    service: ServiceDep,
    who: PrincipalDep,
    force: Annotated[bool, Query(description="Stop running tasks at once")] = False,
    grace: Annotated[
        float | None, Query(description="Seconds running tasks may take to finish")
    ] = None,
) -> ExecutionSummary:
    """Nothing new starts; sleeps, retries and signal waits end at once. Running tasks may
    finish within a grace period (30 s unless `grace` says otherwise); with `force=true`, or
    once the period is over, they are stopped (processes killed) and end CANCELED. Cancelling
    again, with `force=true` say, shortens the period."""
    record = await service.cancel(who, execution_id, force=force, grace=grace)
    return ExecutionSummary.of(record)


@router.post(
    "/executions/{execution_id}/retry",
    status_code=202,
    response_model=ExecutionSummary,
    responses=_CONTROL,
    summary="Retry a failed or cancelled execution from where it stopped",
)
async def retry_execution(
    execution_id: str, service: ServiceDep, who: PrincipalDep
) -> ExecutionSummary:
    """The failed and cancelled tasks, and everything after them, run again; completed tasks
    keep their outputs. Earlier attempts stay in the execution's history (`round` counts the
    retries)."""
    return ExecutionSummary.of(await service.retry(who, execution_id))


@router.post(
    "/executions/{execution_id}/rerun",
    status_code=202,
    response_model=ExecutionStarted,
    responses=_CONTROL,
    summary="Start a new execution that re-runs part of this one",
)
async def rerun_execution(
    execution_id: str,
    body: RerunCreate,
    response: Response,
    service: ServiceDep,
    who: PrincipalDep,
) -> ExecutionStarted:
    """A new execution of the same revision, linked by `rerun_of`: `from_task` and everything
    after it run again; every other task this one completed gives its output unchanged.
    `inputs` override the original inputs key by key; a rerun that changes any of them is
    given every secret input again (422 naming each one otherwise)."""
    record = await service.rerun(who, execution_id, body.from_task, body.inputs)
    response.headers["Location"] = f"/api/v1/executions/{record.id}"
    return ExecutionStarted.of(record)


@router.post(
    "/executions/{execution_id}/suspend",
    status_code=202,
    response_model=ExecutionSummary,
    responses=_CONTROL,
    summary="Suspend an execution",
)
async def suspend_execution(
    execution_id: str, service: ServiceDep, who: PrincipalDep
) -> ExecutionSummary:
    """No new task run starts; the running ones finish. The execution shows SUSPENDED."""
    return ExecutionSummary.of(await service.suspend(who, execution_id))


@router.post(
    "/executions/{execution_id}/resume",
    status_code=202,
    response_model=ExecutionSummary,
    responses=_CONTROL,
    summary="Resume a suspended execution",
)
async def resume_execution(
    execution_id: str, service: ServiceDep, who: PrincipalDep
) -> ExecutionSummary:
    return ExecutionSummary.of(await service.resume(who, execution_id))


@router.post(
    "/executions/{execution_id}/signals/{signal}",
    status_code=202,
    response_model=ExecutionSummary,
    responses=_CONTROL,
    summary="Deliver a signal (an approval, a person's input) to a waiting task",
)
async def send_signal(
    execution_id: str,
    signal: str,
    service: ServiceDep,
    who: PrincipalDep,
    payload: Annotated[Any, Body(description="Becomes the waiting task's output")] = None,
) -> ExecutionSummary:
    """The payload must fit the JSON Schema the waiting task declares (see `pending_signals`
    of the execution): otherwise 422 naming each field. A signal nobody waits for: 409."""
    if isinstance(payload, bytes):  # a body that is not JSON (YAML, say) arrives as it came
        raise InvalidInput(details=[Detail("header:Content-Type", "send application/json")])
    return ExecutionSummary.of(await service.signal(who, execution_id, signal, payload))
