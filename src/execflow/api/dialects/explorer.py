"""NebulaGraph Explorer's workflow API (`/api-open/v1`): log in for an `explorer_token`
cookie, add a job (an execution) with per-task inputs, list and show jobs, cancel one, and
sample a task's result.

Workflow and job ids are numbers (`number_of` an execflow id); a task id is the task's
name. Vocabularies (status codes, error codes, shapes) are in `explorer_shapes`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from execflow.api.dialects.base import (
    KEY_ID,
    caller,
    dialect_route,
    from_ms,
    id_of_number,
    loads,
    number_of,
    service_of,
)
from execflow.api.dialects.explorer_shapes import (
    JobFilter,
    job,
    job_detail,
    job_filter,
    render,
    sample_rows,
    success,
    task_inputs,
    workflow,
)
from execflow.auth import Privilege, require
from execflow.errors import Detail, InvalidInput, NotAuthenticated, NotFound
from execflow.records import ExecutionRecord, Principal, WorkflowRecord
from execflow.service import Service, StartRequest
from execflow.states import ExecutionState

router = APIRouter(route_class=dialect_route(render), include_in_schema=False)

PREFIX = "/api-open/v1"
COOKIE = "explorer_token"
# Explorer's default session lifetime (its cookie's Max-Age): three days
SESSION_SECONDS = 259200
# A list filtered by name or by a status that is not one state walks the caller's
# executions newest first, a page of the store at a time, to count and page them as
# Explorer does (by page number, with a total); it stops here.
MAX_SCAN = 10_000
# Statuses that stand for execflow states whatever else holds (no filter: every state)
EXACT_STATUSES: dict[int | None, frozenset[ExecutionState] | None] = {
    None: None,
    2: frozenset({ExecutionState.COMPLETED}),
    3: frozenset({ExecutionState.FAILED}),
    4: frozenset({ExecutionState.CANCELED}),
}
_SCAN_BATCH = 500


async def _who(request: Request) -> Principal:
    return await caller(request, request.cookies.get(COOKIE))


def _account(request: Request) -> tuple[str, str]:
    """The (user, password) of a login: HTTP Basic, or Explorer's own `Bearer` with base64
    of `user:password` or of the JSON `["user", "password"]`; a bare token is a password."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme not in ("basic", "bearer") or not value:
        raise NotAuthenticated(
            "log in with Authorization: Basic base64(user:password), where the user is an "
            "access key id and the password its secret, or the password is a token"
        )
    if scheme == "bearer" and value.startswith("ef_"):
        return "", value
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        if scheme == "bearer":
            return "", value
        raise NotAuthenticated("Basic credentials must be base64 of `user:password`") from None
    if decoded.startswith("["):
        try:
            pair = loads(decoded)
        except ValueError:
            pair = None
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
            return pair[0], pair[1]
    user, sep, password = decoded.partition(":")
    if not sep:
        raise NotAuthenticated("the credentials must be base64 of `user:password`")
    return user, password


@router.post(PREFIX + "/connect")
async def connect(request: Request) -> JSONResponse:
    """Log in: the `explorer_token` cookie carries a token from then on. An access key and
    its secret open a session token of the key's role; a token is its own session. The
    body (Explorer's graph address and port) is not needed and is ignored."""
    service = service_of(request)
    user, password = _account(request)
    if KEY_ID.fullmatch(user):
        who = await service.authenticate_key(user, password)
        token = await service.open_session(who, SESSION_SECONDS, "explorer session")
    else:
        await service.authenticate(password)
        token = password
    response = success({"success": True})
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _workflow(service: Service, who: Principal, number: int) -> WorkflowRecord:
    ident = await id_of_number(service, who, "workflow", number)
    return await service.workflow_by_id(who, ident)


async def _job_id(service: Service, who: Principal, number: int) -> str:
    try:
        return await id_of_number(service, who, "execution", number)
    except NotFound:
        raise NotFound(f"job {number} not found") from None


async def _job(service: Service, who: Principal, number: int) -> ExecutionRecord:
    return await service.get_execution(who, await _job_id(service, who, number))


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return loads(raw)
    except ValueError:
        raise InvalidInput(details=[Detail("", "the body is not JSON")]) from None


@router.post(PREFIX + "/workflows/{workflow_id}/jobs")
async def add_job(workflow_id: int, request: Request) -> JSONResponse:
    """Start an execution of the workflow's latest revision; answers its job id."""
    service, who = service_of(request), await _who(request)
    require(who, Privilege.SCHEDULE_EXECUTIONS)
    wf = await _workflow(service, who, workflow_id)
    definition = await service.definitions.get(wf.id, wf.latest_revision)
    given = task_inputs(await _body(request), definition)
    start = StartRequest(
        inputs=given.inputs,
        revision=wf.latest_revision,
        idempotency_key=request.headers.get("idempotency-key"),
    )
    try:
        record, _ = await service.start_or_find(who, wf.name, start)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, [given.pointer(d) for d in exc.details]) from None
    return success({"id": number_of(record.id)})


async def _page(
    service: Service, who: Principal, workflow: str | None, wanted: JobFilter, page: int, size: int
) -> dict[str, Any]:
    if wanted.name is None and wanted.status in EXACT_STATUSES:
        # a filter of states and creation times only: the database pages and counts
        states = EXACT_STATUSES[wanted.status]
        to = None if wanted.to_ms is None else wanted.to_ms + 1  # inclusive
        created = (from_ms(wanted.from_ms), from_ms(to))
        rows, _ = await service.list_executions(
            who,
            workflow,
            limit=size,
            states=states,
            created=created,
            offset=(page - 1) * size,
            oldest_first=wanted.ascending,
        )
        total = await service.count_executions(who, workflow, states, created)
        return {"items": [job(r) for r in rows], "total": total, "Page": page, "PageSize": size}
    # a job's name and Stopping status are not columns: walk the newest jobs
    found: list[ExecutionRecord] = []
    cursor: str | None = None
    scanned = 0
    while scanned < MAX_SCAN:
        batch, cursor = await service.list_executions(
            who, workflow, None, None, _SCAN_BATCH, cursor
        )
        scanned += len(batch)
        older = [r for r in batch if wanted.past(r)]
        found += [r for r in batch if wanted.keeps(r)]
        if older or cursor is None:
            break
    if wanted.ascending:
        found.reverse()
    items = found[(page - 1) * size : page * size]
    return {"items": [job(r) for r in items], "total": len(found), "Page": page, "PageSize": size}


@router.get(PREFIX + "/jobs")
async def list_jobs(
    request: Request,
    filter: str | None = None,
    page: int = 1,
    page_size: Annotated[int, Query(alias="pageSize")] = 10,
) -> JSONResponse:
    """Every job of the caller's project, newest first unless asked otherwise."""
    service, who = service_of(request), await _who(request)
    wanted = job_filter(filter, page, page_size)
    return success(await _page(service, who, None, wanted, page, page_size))


@router.get(PREFIX + "/workflows")
async def list_workflows(
    request: Request,
    page: int = 1,
    page_size: Annotated[int, Query(alias="pageSize")] = 10,
) -> JSONResponse:
    """The caller's workflows with their numeric ids, by name: not one of Explorer's open
    calls (its ids are read off its web pages), but how a client finds the id to start."""
    service, who = service_of(request), await _who(request)
    job_filter(None, page, page_size)
    found = sorted(await service.list_workflows(who), key=lambda wf: wf.name)
    items = [workflow(wf) for wf in found[(page - 1) * page_size : page * page_size]]
    return success({"items": items, "total": len(found), "Page": page, "PageSize": page_size})


@router.get(PREFIX + "/workflows/{workflow_id}/jobs")
async def list_workflow_jobs(
    workflow_id: int,
    request: Request,
    filter: str | None = None,
    page: int = 1,
    page_size: Annotated[int, Query(alias="pageSize")] = 10,
) -> JSONResponse:
    """The jobs of one workflow."""
    service, who = service_of(request), await _who(request)
    wanted = job_filter(filter, page, page_size)
    wf = await _workflow(service, who, workflow_id)
    return success(await _page(service, who, wf.name, wanted, page, page_size))


@router.get(PREFIX + "/jobs/{job_id}")
async def get_job(job_id: int, request: Request) -> JSONResponse:
    """A job with the status and times of each of its tasks."""
    service, who = service_of(request), await _who(request)
    record = await _job(service, who, job_id)
    return success(job_detail(record, await service.definition_of(record)))


@router.put(PREFIX + "/jobs/{job_id}/cancel")
async def cancel_job(job_id: int, request: Request) -> JSONResponse:
    """Ask a job to stop: it shows Stopping until its running tasks have ended."""
    service, who = service_of(request), await _who(request)
    require(who, Privilege.MANAGE_EXECUTIONS)
    await service.cancel(who, await _job_id(service, who, job_id))
    return success({"success": True})


@router.get(PREFIX + "/jobs/{job_id}/tasks/{task_id}/sample_result")
async def sample_result(
    job_id: int,
    task_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10,
) -> JSONResponse:
    """Up to `limit` rows of a task's output."""
    service, who = service_of(request), await _who(request)
    record = await _job(service, who, job_id)
    definition = await service.definition_of(record)
    if task_id not in definition.tasks:
        raise NotFound(f"job {job_id} has no task {task_id!r}")
    return success({"items": sample_rows(record, definition, task_id, limit)})
