"""VMware vRealize / Aria Orchestrator (vRO): its workflow-run service over `Service`.

`/vco/api/workflows/{workflowId}` (the workflow and its typed parameters) and its
`/executions…`: start a run with typed parameters, list, show, its state, cancel, logs
and user interactions. Ids are execflow's own as dashed
UUIDs; a workflow is also found by its name. Every path answers with and without the
trailing slash vRO writes in its links. The translations are in `vro_shapes.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from execflow.api.dialects import vro_shapes as shapes
from execflow.api.dialects import vro_values as typed_values
from execflow.api.dialects.base import Failure, caller, dialect_route, loads, service_of
from execflow.auth import Privilege, require
from execflow.definition import Definition, ParamType
from execflow.errors import Conflict, Detail, InvalidInput, NotFound
from execflow.records import EventRecord, ExecutionRecord, Principal, WorkflowRecord
from execflow.service import PendingSignal, Service, StartRequest, pending_signals
from execflow.states import ExecutionState


def render(request: Request, failure: Failure) -> Response:
    """Any failure in vRO's error body, with the status vRO gives it."""
    status = shapes.ERRORS.get(failure.code, failure.status)
    headers = failure.headers()
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="vco", Bearer'
    body = shapes.error_body(status, failure.message, failure.details)
    return JSONResponse(body, status_code=status, headers=headers)


router = APIRouter(route_class=dialect_route(render), include_in_schema=False)

WORKFLOW = "/vco/api/workflows/{workflow_id}"
EXECUTIONS = WORKFLOW + "/executions"
EXECUTION = EXECUTIONS + "/{execution_id}"
MAX_START = 1_000_000_000  # the largest `startIndex` (an offset the database can take)
# a list answers at most this many executions; `startIndex` pages on
MAX_PAGE = 1000
MAX_LOGS = 10_000
_SCAN = 500  # log entries read per query while paging

Handler = Callable[..., Awaitable[Response]]


def _route(method: str, path: str) -> Callable[[Handler], Handler]:
    """Register a handler for `path` and for `path/`, as vRO's clients write either."""

    def register(handler: Handler) -> Handler:
        for each in (path, path + "/"):
            router.add_api_route(each, handler, methods=[method])
        return handler

    return register


# -- lookups -----------------------------------------------------------------------------


async def _workflow(service: Service, who: Principal, ref: str) -> WorkflowRecord:
    """The caller's workflow by id (a UUID, dashed or not) or else by name."""
    ident = shapes.hex_of(ref)
    if ident is not None:
        try:
            return await service.workflow_by_id(who, ident)
        except NotFound:
            pass  # a workflow may be named like a UUID
    try:
        wf = await service.workflow(who, ref)
    except NotFound:
        raise NotFound(f"workflow {ref!r} not found") from None
    return wf


async def _execution(
    service: Service, who: Principal, workflow_ref: str, ref: str
) -> tuple[WorkflowRecord, ExecutionRecord]:
    """The caller's execution `ref` of workflow `workflow_ref`; NotFound for any other."""
    wf = await _workflow(service, who, workflow_ref)
    ident = shapes.hex_of(ref)
    missing = NotFound(f"execution {ref!r} of workflow {workflow_ref!r} not found")
    if ident is None:
        raise missing
    try:
        record = await service.get_execution(who, ident)
    except NotFound:
        raise missing from None
    if record.workflow_id != wf.id:
        raise missing
    return wf, record


def _workflow_href(request: Request, wf: WorkflowRecord) -> str:
    """The absolute URL of a workflow, as vRO writes it (with its trailing slash)."""
    return f"{str(request.base_url).rstrip('/')}/vco/api/workflows/{shapes.vro_id(wf.id)}/"


def _href(request: Request, wf: WorkflowRecord, record: ExecutionRecord | None = None) -> str:
    """The absolute URL of a workflow's runs, or of one run, as vRO writes them."""
    href = _workflow_href(request, wf) + "executions/"
    return href if record is None else f"{href}{shapes.vro_id(record.id)}/"


# -- request bodies ----------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object a request carries ({} for none); InvalidInput otherwise."""
    raw = await request.body()
    if not raw.strip():
        return {}
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind != "application/json" and not kind.endswith("+json"):
        detail = Detail("header:Content-Type", f"send application/json, not {kind}")
        raise InvalidInput("the request body is not JSON", [detail])
    try:
        body = loads(raw)
    except ValueError as exc:
        raise InvalidInput("the request body is not JSON", [Detail("body", str(exc))]) from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be an execution-context object")
    return body


_CONTEXT_KEYS = frozenset({"executionId", "parameter", "parameters", "profilerOptions"})
_PROFILER_KEYS = frozenset({"enabled", "debuggerEnabled", "tokenReplayEnabled"})


def _parameter_list(body: dict[str, Any], problems: list[Detail]) -> list[Any]:
    """The typed parameters of an execution-context (`parameter`, or `parameters` as vRO 8
    spells it)."""
    if "parameter" in body and "parameters" in body:
        problems.append(Detail("/parameters", "give either 'parameter' or 'parameters'"))
        return []
    key = "parameters" if "parameters" in body else "parameter"
    found = body.get(key)
    if found is None:
        return []
    if not isinstance(found, list):
        problems.append(Detail(f"/{key}", "must be a list of parameters"))
        return []
    return found


def _profiler(body: dict[str, Any], problems: list[Detail]) -> bool:
    """Whether the run is profiled (its `statistic` is kept); a debugger is refused."""
    options = body.get("profilerOptions")
    if options is None:
        return False
    if not isinstance(options, dict):
        problems.append(Detail("/profilerOptions", "must be an object"))
        return False
    for key in sorted(set(options) - _PROFILER_KEYS):
        problems.append(Detail(f"/profilerOptions/{key}", "unknown option"))
    for key in sorted(_PROFILER_KEYS & set(options)):
        if not isinstance(options[key], bool):
            problems.append(Detail(f"/profilerOptions/{key}", "must be true or false"))
    if options.get("debuggerEnabled") is True or options.get("tokenReplayEnabled") is True:
        problems.append(Detail("/profilerOptions", "execflow has no debugger or token replay"))
    return options.get("enabled") is True


def _typed(
    raws: list[Any], kinds: dict[str, tuple[ParamType, bool]], problems: list[Detail]
) -> dict[str, Any]:
    """Typed parameters as plain values, each checked against the type (and secrecy) of
    the parameter of that name in `kinds`; names not there are kept for the service to
    refuse."""
    values: dict[str, Any] = {}
    for i, raw in enumerate(raws):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"/inputs/{name}" if isinstance(name, str) and name else f"/parameter/{i}"
        try:
            typed = typed_values.read_parameter(raw, i)
            if typed.name in values:
                raise typed_values.ValueProblem("is given twice")
            kind = kinds.get(typed.name)
            values[typed.name] = typed.value if kind is None else typed_values.fit(typed, *kind)
        except typed_values.ValueProblem as exc:
            problems.append(Detail(where, str(exc)))
    return values


async def _start_request(
    service: Service, who: Principal, wf: WorkflowRecord, definition: Definition, body: Any
) -> StartRequest:
    """The start an execution-context asks for; InvalidInput naming every problem."""
    problems: list[Detail] = []
    for key in sorted(set(body) - _CONTEXT_KEYS):
        problems.append(Detail(f"/{key}", "unknown field of an execution-context"))
    execution_id = body.get("executionId")
    if execution_id is not None and not isinstance(execution_id, str):
        problems.append(Detail("/name", "executionId must be a string"))
        execution_id = None
    profiled = _profiler(body, problems)
    kinds = {n: (p.type, p.secret) for n, p in definition.parameters.items()}
    inputs = _typed(_parameter_list(body, problems), kinds, problems)
    request = StartRequest(
        inputs=inputs,
        revision=wf.latest_revision,
        name=execution_id or None,
        labels={shapes.PROFILER_LABEL: "on"} if profiled else None,
    )
    if problems:
        try:  # the service's checks too, so that every problem is named at once
            await service.plan(who, wf.name, request)
        except InvalidInput as exc:
            seen = {d.pointer for d in problems}
            problems += [d for d in exc.details if d.pointer not in seen]
        raise InvalidInput("the execution-context is not valid", problems)
    return request


# -- routes ------------------------------------------------------------------------------


@_route("GET", WORKFLOW)
async def get_workflow(request: Request, workflow_id: str) -> Response:
    """The workflow (its latest revision): id, name, version, and its input and output
    parameters with their vRO types."""
    service, who = service_of(request), await caller(request)
    wf = await _workflow(service, who, workflow_id)
    definition = await service.definitions.get(wf.id, wf.latest_revision)
    return JSONResponse(shapes.workflow(wf, definition, _workflow_href(request, wf)))


@_route("POST", EXECUTIONS)
async def start_execution(request: Request, workflow_id: str) -> Response:
    """202 once the run is committed, with its `Location` and the run itself; the same
    `executionId` with the same parameters answers 200 with the run it started."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.SCHEDULE_EXECUTIONS)
    body = await _body(request)
    wf = await _workflow(service, who, workflow_id)
    definition = await service.definitions.get(wf.id, wf.latest_revision)
    start = await _start_request(service, who, wf, definition, body)
    record, created = await service.start_or_find(who, wf.name, start)
    href = _href(request, wf, record)
    return JSONResponse(
        shapes.execution(record, definition, href),
        status_code=202 if created else 200,
        headers={"Location": href},
    )


def _state_filter(conditions: list[str]) -> str | None:
    """The state a list is filtered by: vRO's `conditions=state=…` (the only one here)."""
    state = None
    for condition in conditions:
        key, sep, value = condition.partition("=")
        found = shapes.state_of(value) if sep and key.strip() == "state" else None
        if found is None:
            known = ", ".join(s.word for s in shapes.STATES.values())
            why = f"{condition!r}: only state=<{known}> (or its upper-case name) is supported"
            raise InvalidInput("the list request is not valid", [Detail("query:conditions", why)])
        state = found.value
    return state


@_route("GET", EXECUTIONS)
async def list_executions(
    request: Request,
    workflow_id: str,
    max_result: Annotated[int, Query(alias="maxResult", ge=1)] = MAX_PAGE,
    start_index: Annotated[int, Query(alias="startIndex", ge=0, le=MAX_START)] = 0,
    conditions: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The workflow's runs, newest first: `startIndex` and `maxResult` (at most 1000) page
    through them; `total` counts them all."""
    service, who = service_of(request), await caller(request)
    wf = await _workflow(service, who, workflow_id)
    state = _state_filter(conditions or [])
    size = min(max_result, MAX_PAGE)
    page, _ = await service.list_executions(who, wf.name, state, limit=size, offset=start_index)
    only = None if state is None else {ExecutionState(state)}
    total = await service.count_executions(who, wf.name, only)
    href = _href(request, wf)
    links = [shapes.summary(r, _href(request, wf, r)) for r in page]
    # vRO 7 pages under `relations`; Aria Orchestrator 8 at the top level: both are given
    body = {
        "href": href,
        "relations": {"link": links, "total": total, "start": start_index},
        "link": links,
        "total": total,
        "startIndex": start_index,
        "count": len(links),
    }
    return JSONResponse(body)


@_route("GET", EXECUTION)
async def get_execution(request: Request, workflow_id: str, execution_id: str) -> Response:
    """The run: its state, typed inputs (secrets masked) and outputs, dates and error."""
    service, who = service_of(request), await caller(request)
    wf, record = await _execution(service, who, workflow_id, execution_id)
    definition = await service.definition_of(record)
    return JSONResponse(shapes.execution(record, definition, _href(request, wf, record)))


@_route("DELETE", EXECUTION)
async def delete_execution(request: Request, workflow_id: str, execution_id: str) -> Response:
    """Refused: execflow keeps every execution as the record of what ran."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_EXECUTIONS)
    _, record = await _execution(service, who, workflow_id, execution_id)
    hint = "" if record.state.terminal else "; cancel it with DELETE …/state"
    raise Conflict(
        f"execution {execution_id!r} cannot be deleted: execflow keeps every execution "
        f"in its audit history{hint}"
    )


@_route("GET", EXECUTION + "/state")
async def get_state(request: Request, workflow_id: str, execution_id: str) -> Response:
    """`{"value": <state>}` in vRO's vocabulary."""
    service, who = service_of(request), await caller(request)
    _, record = await _execution(service, who, workflow_id, execution_id)
    return JSONResponse({"value": shapes.STATES[record.state].word})


@_route("DELETE", EXECUTION + "/state")
async def cancel_execution(request: Request, workflow_id: str, execution_id: str) -> Response:
    """Cancel the run: 204; a run that has ended already is a conflict."""
    service, who = service_of(request), await caller(request)
    _, record = await _execution(service, who, workflow_id, execution_id)
    await service.cancel(who, record.id)
    return Response(status_code=204)


async def _log_entries(
    request: Request, workflow_id: str, execution_id: str, max_result: int, level: str | None
) -> list[EventRecord]:
    """Up to `max_result` entries of a run's audit log, `level` (a vRO severity) or worse."""
    service, who = service_of(request), await caller(request)
    _, record = await _execution(service, who, workflow_id, execution_id)
    if level is not None and level not in shapes.SEVERITIES:
        why = f"{level!r} is not one of {', '.join(shapes.SEVERITIES)}"
        raise InvalidInput("the log request is not valid", [Detail("query:severity", why)])
    floor = shapes.floor_of(level or "debug")
    wanted, after = min(max_result, MAX_LOGS), 0
    found: list[EventRecord] = []
    while len(found) < wanted:
        batch = await service.logs(who, record.id, floor, None, after, _SCAN)
        found += batch[: wanted - len(found)]
        if len(batch) < _SCAN:
            break
        after = batch[-1].id or after
    return found


MaxLogs = Annotated[int, Query(alias="maxResult", ge=1)]
Severity = Annotated[str | None, Query(description="error, warning, info or debug")]


@_route("GET", EXECUTION + "/logs")
async def execution_logs(
    request: Request,
    workflow_id: str,
    execution_id: str,
    max_result: MaxLogs = MAX_LOGS,
    severity: Severity = None,
) -> Response:
    """The run's audit log, oldest first: what its tasks wrote and what the server did."""
    events = await _log_entries(request, workflow_id, execution_id, max_result, severity)
    return JSONResponse({"logs": [shapes.log_entry(e) for e in events]})


@_route("GET", EXECUTION + "/syslogs")
async def execution_syslogs(
    request: Request,
    workflow_id: str,
    execution_id: str,
    max_result: MaxLogs = MAX_LOGS,
    severity: Severity = None,
) -> Response:
    """The server's entries of the run's audit log only (no task output)."""
    events = await _log_entries(request, workflow_id, execution_id, max_result, severity)
    kept = [shapes.log_entry(e) for e in events if e.kind != "output"]
    return JSONResponse({"logs": kept})


def _pending(record: ExecutionRecord, error: type[NotFound | Conflict]) -> PendingSignal:
    """The interaction a run waits on: the first signal it waits for, by name."""
    waits = sorted(pending_signals(record), key=lambda p: p.name)
    if not waits:
        raise error(f"execution {shapes.vro_id(record.id)} has no pending user interaction")
    return waits[0]


@_route("GET", EXECUTION + "/interaction")
async def get_interaction(request: Request, workflow_id: str, execution_id: str) -> Response:
    """The inputs the run waits for, from the schema of the signal it waits on."""
    service, who = service_of(request), await caller(request)
    wf, record = await _execution(service, who, workflow_id, execution_id)
    pending = _pending(record, NotFound)
    href = _href(request, wf, record) + "interaction/"
    return JSONResponse(shapes.interaction(pending, record.id, href))


@_route("POST", EXECUTION + "/interaction")
async def answer_interaction(request: Request, workflow_id: str, execution_id: str) -> Response:
    """Answer with typed parameters: they become the signal's payload (204)."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_EXECUTIONS)
    body = await _body(request)
    _, record = await _execution(service, who, workflow_id, execution_id)
    pending = _pending(record, Conflict)
    problems: list[Detail] = []
    for key in sorted(set(body) - _CONTEXT_KEYS):
        problems.append(Detail(f"/{key}", "unknown field of an execution-context"))
    asked = shapes.asked(pending.schema)
    kinds = {n: (k, True) for n, (k, _) in asked.items() if k is not None}
    values = _typed(_parameter_list(body, problems), kinds, problems)
    if problems:
        raise InvalidInput("the answer is not valid", [_answer_detail(d) for d in problems])
    schema_type = (pending.schema or {}).get("type")
    payload: Any = values
    if schema_type not in (None, "object") and len(values) == 1:
        payload = next(iter(values.values()))  # a signal whose payload is one plain value
    await service.signal(who, record.id, pending.name, payload)
    return Response(status_code=204)


def _answer_detail(detail: Detail) -> Detail:
    """An answer's parameters are the payload's fields."""
    if detail.pointer.startswith("/inputs/"):
        return Detail("/payload/" + detail.pointer.removeprefix("/inputs/"), detail.reason)
    return detail
