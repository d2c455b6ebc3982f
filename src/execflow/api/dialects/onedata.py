"""Onedata Oneprovider automation (`/api/v3/oneprovider/…`): schedule workflow executions
in a space, list, show and steer them, and dump their stores, over the same service as the
native API. docs/dialects.md maps the concepts."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from execflow import levels
from execflow.api.dialects import onedata_shapes as shapes
from execflow.api.dialects.base import caller, dialect_route, loads, service_of
from execflow.api.dialects.onedata_shapes import Refused, render
from execflow.auth import Privilege, require
from execflow.errors import Conflict, NotFound, PermissionDenied
from execflow.records import Principal, WorkflowRecord
from execflow.service import Service, StartRequest

router = APIRouter(route_class=dialect_route(render), include_in_schema=False)

PREFIX = "/api/v3/oneprovider"
EXECUTIONS = f"{PREFIX}/automation/execution/workflows"
STORES = f"{PREFIX}/automation/execution/stores"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 10_000
LOG_PAGE = 1000
_ID = re.compile(r"^[0-9a-f]{32}$")
OVERLAY = "storeInitialContentOverlay"


@router.post(EXECUTIONS)
async def schedule_execution(request: Request) -> Response:
    """201 with the new execution's id once it is committed, and its absolute `Location`."""
    who = await caller(request)
    require(who, Privilege.SCHEDULE_EXECUTIONS)
    body = await _body(request)
    _own_space(who, _text(body, "spaceId"))
    service = service_of(request)
    wf = await _workflow(service, who, _text(body, "atmWorkflowSchemaId"))
    revision = _revision(body.get("atmWorkflowSchemaRevisionNumber"), wf)
    _, definition = await service.definition(who, wf.name, revision)
    inputs, stores = _overlay(body.get(OVERLAY), definition.source)
    callback = body.get("callback")
    if callback is not None and not isinstance(callback, str):
        raise Refused("badValueString", "the callback is a URL string", "callback")
    start = StartRequest(
        inputs=inputs,
        revision=revision,
        log_level=_log_level(body.get("logLevel")),
        callback=callback,
        stores=stores,
    )
    record, _ = await service.start_or_find(who, wf.name, start)
    location = str(request.base_url).rstrip("/") + f"{EXECUTIONS}/{record.id}"
    return JSONResponse(
        {"atmWorkflowExecutionId": record.id}, status_code=201, headers={"Location": location}
    )


@router.get(f"{PREFIX}/spaces/{{space_id}}/automation/execution/workflows")
async def list_executions(space_id: str, request: Request) -> Response:
    """The ids of the space's executions in one phase, newest first, a page at a time."""
    who = await caller(request)
    _own_space(who, space_id)
    query = request.query_params
    phase = query.get("phase", "ongoing")
    if phase not in shapes.PHASES:
        allowed = ", ".join(shapes.PHASES)
        raise Refused("badValueNotAllowed", f"the phase is one of {allowed}", "phase")
    limit = _number(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _number(query.get("offset"), "offset", 0, 0, MAX_OFFSET)
    token = query.get("token") or query.get("index")
    cursor = shapes.decode_token(token, phase) if token else None
    page, after = await service_of(request).list_executions(
        who, limit=limit, cursor=cursor, states=shapes.PHASES[phase], offset=offset
    )
    body: dict[str, Any] = {"atmWorkflowExecutions": [r.id for r in page], "isLast": not after}
    if after:
        body["nextPageToken"] = shapes.encode_token(phase, after)
    return JSONResponse(body)


@router.get(f"{EXECUTIONS}/{{execution_id}}")
async def get_execution(execution_id: str, request: Request) -> Response:
    """Onedata's execution record: status, times, stores and lanes."""
    who = await caller(request)
    service = service_of(request)
    record = await service.get_execution(who, execution_id)
    return JSONResponse(shapes.execution(record, await service.definition_of(record)))


@router.delete(f"{EXECUTIONS}/{{execution_id}}")
async def delete_execution(execution_id: str, request: Request) -> Response:
    """execflow keeps every execution (its audit trail): refused as not supported."""
    who = await caller(request)
    require(who, Privilege.MANAGE_EXECUTIONS)
    await service_of(request).get_execution(who, execution_id)
    raise Refused("notSupported", "executions are kept for their audit trail; none is deleted")


@router.post(f"{EXECUTIONS}/{{execution_id}}/cancel")
async def cancel_execution(execution_id: str, request: Request) -> Response:
    """Nothing new starts; running tasks get the engine's grace period to finish."""
    who = await _steerer(request)
    try:
        await service_of(request).cancel(who, execution_id)
    except Conflict as exc:
        raise Refused("atmWorkflowExecutionEnded", exc.message) from None
    return Response(status_code=204)


@router.post(f"{EXECUTIONS}/{{execution_id}}/pause")
async def pause_execution(execution_id: str, request: Request) -> Response:
    """No new task starts; running ones finish; the execution shows `paused`."""
    who = await _steerer(request)
    try:
        await service_of(request).suspend(who, execution_id)
    except Conflict as exc:
        raise Refused("atmInvalidStatusTransition", exc.message) from None
    return Response(status_code=204)


@router.post(f"{EXECUTIONS}/{{execution_id}}/resume")
async def resume_execution(execution_id: str, request: Request) -> Response:
    who = await _steerer(request)
    try:
        await service_of(request).resume(who, execution_id)
    except Conflict as exc:
        raise Refused("atmWorkflowExecutionNotResumable", exc.message) from None
    return Response(status_code=204)


@router.post(f"{EXECUTIONS}/{{execution_id}}/retry")
async def retry_execution(execution_id: str, request: Request) -> Response:
    """The execution runs again from its failure (failed and cancelled tasks and what
    follows them); the lane run named must exist."""
    who = await _steerer(request)
    await _lane(request, who, execution_id)
    try:
        await service_of(request).retry(who, execution_id)
    except Conflict as exc:
        raise Refused("atmLaneExecutionRetryFailed", exc.message) from None
    return Response(status_code=204)


@router.post(f"{EXECUTIONS}/{{execution_id}}/rerun")
async def rerun_execution(execution_id: str, request: Request) -> Response:
    """A new execution runs the lane's first task and all that follows it, reusing the
    outputs of the rest; `Location` names it."""
    who = await _steerer(request)
    first_task = await _lane(request, who, execution_id)
    try:
        record = await service_of(request).rerun(who, execution_id, first_task)
    except Conflict as exc:
        raise Refused("atmWorkflowExecutionNotEnded", exc.message) from None
    location = str(request.base_url).rstrip("/") + f"{EXECUTIONS}/{record.id}"
    return Response(status_code=204, headers={"Location": location})


@router.get(f"{STORES}/{{store_id}}/content_dump")
async def store_content_dump(store_id: str, request: Request) -> Response:
    """A store's whole content as JSON: a list, a map, a value, or the audit log's entries."""
    who = await caller(request)
    service = service_of(request)
    execution_id, name = shapes.store_of(store_id)
    if not execution_id or not name:
        raise NotFound(f"store {store_id!r} not found")
    headers = {"Content-Disposition": f'attachment; filename="{store_id}.json"'}
    if name == shapes.AUDIT_LOG:
        # an execution's log may be long: streamed a page at a time, never held whole
        first = await service.logs(who, execution_id, levels.DEBUG, None, 0, LOG_PAGE)

        async def entries() -> AsyncIterator[bytes]:
            batch, sep = first, b"["
            while True:
                for entry in shapes.audit_entries(batch):
                    yield sep + json.dumps(entry, separators=(",", ":")).encode()
                    sep = b","
                if len(batch) < LOG_PAGE:
                    break
                after = batch[-1].id or 0
                batch = await service.logs(who, execution_id, levels.DEBUG, None, after, LOG_PAGE)
            yield b"]" if sep == b"," else b"[]"

        return StreamingResponse(entries(), media_type="application/octet-stream", headers=headers)
    _, content = await service.store_content(who, execution_id, name)
    return Response(
        json.dumps(content, separators=(",", ":")).encode(),
        media_type="application/octet-stream",
        headers=headers,
    )


# request parts ---------------------------------------------------------------------------------


async def _steerer(request: Request) -> Principal:
    """The caller, who must hold Onedata's manage privilege before anything is looked up."""
    who = await caller(request)
    require(who, Privilege.MANAGE_EXECUTIONS)
    return who


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = loads(raw) if raw.strip() else {}
    except UnicodeDecodeError as exc:
        raise shapes.malformed(f"the body is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise shapes.malformed(str(exc)) from None
    if not isinstance(body, dict):
        raise shapes.malformed("the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise Refused("missingRequiredValue", f"missing required value: {key}", key)
    if not isinstance(value, str) or not value:
        raise Refused("badValueString", f"{key} must be a non-empty string", key)
    return value


def _own_space(who: Principal, space: str) -> None:
    """A space is the caller's project, named by id or name; any other is forbidden alike,
    whether or not it exists."""
    if space not in (who.project_id, who.project_name):
        raise PermissionDenied(f"space {space!r} is not the token's space")


async def _workflow(service: Service, who: Principal, schema: str) -> WorkflowRecord:
    """The caller's workflow named by its id, or else by its name."""
    if _ID.fullmatch(schema):
        try:
            return await service.workflow_by_id(who, schema)
        except NotFound:
            pass
    try:
        wf = await service.workflow(who, schema)
    except NotFound:
        raise NotFound(f"workflow schema {schema!r} not found") from None
    return wf


def _revision(value: Any, wf: WorkflowRecord) -> int:
    """The revision number, given as a number or as a string of digits (the API documents
    a string; its own examples send a number)."""
    key = "atmWorkflowSchemaRevisionNumber"
    if value is None:
        raise Refused("missingRequiredValue", f"missing required value: {key}", key)
    number = _integer(value, key)
    if number < 1:
        raise Refused("badValueTooLow", f"{key} must be at least 1", key)
    if number > wf.latest_revision:
        why = f"workflow schema {wf.name!r} has revisions 1 to {wf.latest_revision}"
        raise Refused("badValueIdNotFound", why, key)
    return number


def _integer(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        return int(value)
    raise Refused("badValueInteger", f"{key} must be an integer", key)


def _number(value: str | None, key: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    number = _integer(value, key)
    if number < low:
        raise Refused("badValueTooLow", f"{key} must be at least {low}", key)
    if number > high:
        raise Refused("badValueTooHigh", f"{key} must be at most {high}", key)
    return number


def _log_level(value: Any) -> str | None:
    if value is None:
        return None
    if value not in levels.NAMES:
        why = f"logLevel is one of {', '.join(levels.NAMES)}"
        raise Refused("badValueNotAllowed", why, "logLevel")
    return str(value)


def _overlay(value: Any, source: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The overlay split into stores' initial content and parameters' values: a key names a
    store of the workflow, or else one of its parameters (execflow's parameters play the
    part of Onedata's single-value stores)."""
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        raise Refused("badValueJSON", "the overlay maps store schema ids to content", OVERLAY)
    declared: dict[str, Any] = source.get("stores") or {}
    parameters: dict[str, Any] = source.get("parameters") or {}
    inputs: dict[str, Any] = {}
    stores: dict[str, Any] = {}
    for key, content in value.items():
        if key in declared and key in parameters:
            why = f"{key!r} names both a store and a parameter of this workflow"
            raise Refused("badValueAmbiguousId", why, f"{OVERLAY}.{key}")
        if key in declared:
            stores[key] = content
        elif key in parameters:
            inputs[key] = content
        else:
            known = ", ".join(sorted({*declared, *parameters})) or "none"
            why = f"no store or parameter {key!r} in this workflow (known: {known})"
            raise Refused("badValueNotAllowed", why, f"{OVERLAY}.{key}")
    return inputs, stores


async def _lane(request: Request, who: Principal, execution_id: str) -> str:
    """The first task of the lane run `{laneIndex, laneRunNumber}` of the body names."""
    body = await _body(request)
    service = service_of(request)
    record = await service.get_execution(who, execution_id)
    lanes = shapes.lanes(await service.definition_of(record))
    index = _integer(_required(body, "laneIndex"), "laneIndex")
    run = _integer(_required(body, "laneRunNumber"), "laneRunNumber")
    if not 1 <= index <= len(lanes):
        why = f"laneIndex is between 1 and {len(lanes)}"
        raise Refused("badValueNotInRange", why, "laneIndex")
    if not 1 <= run <= record.round + 1:
        why = f"lane {index} has runs 1 to {record.round + 1}"
        raise Refused("badValueNotInRange", why, "laneRunNumber")
    return lanes[index - 1][0]


def _required(body: dict[str, Any], key: str) -> Any:
    if body.get(key) is None:
        raise Refused("missingRequiredValue", f"missing required value: {key}", key)
    return body[key]
