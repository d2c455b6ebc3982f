"""Huawei Cloud OBS Data+ workflows (dialect `obs`): `/v2/workflows`, `/v2/workflowtemplates`
and `/v2/workflowexecutions` over the same service.

A Data+ graph is an execflow workflow (its name is the graph name), a template is a
workflow too, seen through its tasks and parameters, and an execution's name is its
execflow id. Shapes and vocabularies are in `obs_shapes.py`; docs/dialects.md maps them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from execflow.api.dialects import obs_shapes as shapes
from execflow.api.dialects import obs_templates as templates
from execflow.api.dialects import root
from execflow.api.dialects.base import caller, dialect_route, iso_ms, service_of
from execflow.auth import Privilege, require
from execflow.errors import Conflict, Detail, InvalidInput, NotFound
from execflow.masking import masked_document
from execflow.records import ExecutionRecord, Principal, WorkflowRecord
from execflow.service import Service, StartRequest
from execflow.states import ExecutionState

router = APIRouter(route_class=dialect_route(shapes.render), include_in_schema=False)

GRAPH = "x-workflow-graph-name"
TEMPLATE = "x-workflow-template-name"
CREATE = "x-workflow-create"
PREFIX = "x-workflow-prefix"
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
# A listing filtered by trigger type reads at most this many pages of the service before
# answering with what it found and a marker to go on from (one call costs a bounded amount).
MAX_SCANNED_PAGES = 20


def _number(request: Request, name: str, default: int, low: int, high: int) -> int:
    """The integer query parameter `name`, from `low` to `high`; InvalidArgument naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidInput(details=[Detail(f"query:{name}", f"an integer from {low} to {high}")])
    return value


def _graph_param(request: Request) -> str:
    """The workflow named by `x-workflow-graph-name`, which execution calls require."""
    graph = request.query_params.get(GRAPH)
    if not graph:
        raise InvalidInput(details=[Detail(f"query:{GRAPH}", "the workflow's name is required")])
    return graph


async def _absent(service: Service, who: Principal, name: str, kind: str) -> None:
    """Conflict when the caller's project already has a workflow of this name."""
    try:
        await service.workflow(who, name)
    except NotFound:
        return
    raise Conflict(f"{kind} {name!r} already exists")


# workflows (graphs) ------------------------------------------------------------------------


@router.post("/v2/workflows/{graph_name}")
async def start_or_create(graph_name: str, request: Request) -> Response:
    """Start an execution of the workflow (Data+'s asynchronous API start), or, with
    `x-workflow-template-name`, create the workflow from a template, or with
    `x-workflow-create`, from the document in the body."""
    if TEMPLATE in request.query_params:
        return await _create_graph(graph_name, request)
    if CREATE in request.query_params:
        wf, who = await _put_document(graph_name, request, "workflow")
        made = {
            "graph_name": wf.name,
            "graph_urn": shapes.graph_urn(who, wf.name),
            "created_at": iso_ms(wf.created_at),
        }
        return shapes.ok(request, made, 201)
    service, who = service_of(request), await caller(request)
    require(who, Privilege.SCHEDULE_EXECUTIONS)
    body = shapes.json_object(await request.body())
    problems = shapes.check_fields(body, {"bucket", "object", "inputs"})
    bucket = shapes.text_field(body, "bucket", problems)
    obj = shapes.text_field(body, "object", problems)
    inputs = body.get("inputs")
    if inputs is None:
        inputs = {}
    elif not isinstance(inputs, dict):
        problems.append(Detail("/inputs", "must be a JSON object of parameter values"))
    if problems:
        raise InvalidInput("the start request is not valid", problems)
    _, definition = await service.definition(who, graph_name)
    declared = definition.parameters
    # the bucket and object fill parameters of those names, unless `inputs` gives them
    filled = {k: v for k, v in (("bucket", bucket), ("object", obj)) if k in declared}
    request_ = StartRequest(
        inputs={**filled, **inputs},
        labels={shapes.BUCKET_LABEL: bucket, shapes.OBJECT_LABEL: obj},
    )
    record, _ = await service.start_or_find(who, graph_name, request_)
    return shapes.ok(
        request,
        {
            "execution_urn": shapes.execution_urn(who, record),
            "execution_name": record.id,
            "started_at": iso_ms(record.started_at),
        },
    )


async def _create_graph(graph_name: str, request: Request) -> Response:
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_WORKFLOWS)
    template_name = request.query_params.get(TEMPLATE)
    if not template_name:
        raise InvalidInput(details=[Detail(f"query:{TEMPLATE}", "the template's name is required")])
    body = shapes.json_object(await request.body())
    problems = shapes.check_fields(body, {"agency", "description", "parameters"})
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(Detail("/description", "must be a string"))
    _, rev = await service.get_workflow(who, template_name)
    declared = rev.definition.get("parameters", {})
    values, bad = shapes.parameter_values(body.get("parameters"), declared)
    if problems or bad:
        raise InvalidInput("the workflow request is not valid", problems + bad)
    await _absent(service, who, graph_name, "workflow")
    doc = shapes.with_defaults(rev.definition, graph_name, description, values)
    wf = await _put_defaults(service, who, graph_name, doc, body.get("parameters"))
    body = {
        "graph_name": wf.name,
        "graph_urn": shapes.graph_urn(who, wf.name),
        "created_at": iso_ms(wf.created_at),
    }
    return shapes.ok(request, body, 201)


async def _put_defaults(
    service: Service, who: Principal, name: str, doc: dict[str, Any], given: Any
) -> WorkflowRecord:
    """Store a graph with the parameter defaults `given`; a default that does not fit its
    parameter is named where the request gave it."""
    found = templates.with_defaults(doc, given)
    try:
        wf, _, _ = await service.put_workflow(who, name, found.doc)
    except InvalidInput as exc:
        raise found.refused(exc) from None
    return wf


@router.get("/v2/workflows/{graph_name}")
async def get_graph(graph_name: str, request: Request) -> Response:
    """One workflow with its latest definition; with `x-workflow-prefix`, a listing of the
    workflows whose names begin with the path's last segment."""
    if PREFIX in request.query_params:
        return await _list_graphs(request, graph_name)
    service, who = service_of(request), await caller(request)
    require(who, Privilege.VIEW)
    wf, rev = await service.get_workflow(who, graph_name)
    body = {
        "name": wf.name,
        "created_at": iso_ms(wf.created_at),
        "definition": masked_document(rev.definition),
        "graph_urn": shapes.graph_urn(who, wf.name),
        "description": wf.description,
        "revision": rev.number,
    }
    return shapes.ok(request, body)


@router.get("/v2/workflows")
@router.get("/v2/workflows/")
async def list_graphs(request: Request) -> Response:
    return await _list_graphs(request, "")


async def _page_of_workflows(
    request: Request, prefix: str, item: Callable[[Principal, Any], dict[str, Any]], key: str
) -> Response:
    service, who = service_of(request), await caller(request)
    require(who, Privilege.VIEW)
    start = _number(request, "x-workflow-start", 0, 0, 1 << 31)
    limit = _number(request, "x-workflow-limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    found = [wf for wf in await service.list_workflows(who) if wf.name.startswith(prefix)]
    page = found[start : start + limit]
    truncated = start + limit < len(found)
    body: dict[str, Any] = {
        "count": len(page),
        key: [item(who, wf) for wf in page],
        "is_truncated": truncated,
    }
    if truncated:
        body["next_start"] = start + limit
    return shapes.ok(request, body)


async def _list_graphs(request: Request, prefix: str) -> Response:
    return await _page_of_workflows(request, prefix, shapes.graph_item, "graphs")


@router.put("/v2/workflows/{graph_name}")
async def update_graph(graph_name: str, request: Request) -> Response:
    """A new revision with another description or other parameter defaults."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_WORKFLOWS)
    body = shapes.json_object(await request.body(), required=False)
    problems = shapes.check_fields(body, {"description", "parameters"})
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(Detail("/description", "must be a string"))
    _, rev = await service.get_workflow(who, graph_name)
    values, bad = shapes.parameter_values(
        body.get("parameters"), rev.definition.get("parameters", {})
    )
    if problems or bad:
        raise InvalidInput("the workflow update is not valid", problems + bad)
    doc = shapes.with_defaults(rev.definition, graph_name, description, values)
    wf = await _put_defaults(service, who, graph_name, doc, body.get("parameters"))
    body = {
        "graph_name": wf.name,
        "graph_urn": shapes.graph_urn(who, wf.name),
        "last_modified": iso_ms(wf.updated_at),
    }
    return shapes.ok(request, body)


@router.delete("/v2/workflows/{graph_name}")
async def delete_graph(graph_name: str, request: Request) -> Response:
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_WORKFLOWS)
    await service.delete_workflow(who, graph_name)
    return shapes.ok(request, None, 204)


# templates ---------------------------------------------------------------------------------


@router.post("/v2/workflowtemplates/{template_name}")
async def create_template(template_name: str, request: Request) -> Response:
    """A new workflow whose tasks are the template's `states` (in Data+'s syntax or
    execflow's, see obs_templates.py) and parameters its `inputs`."""
    wf, _ = await _put_document(template_name, request, "template")
    return shapes.ok(request, {"template_name": wf.name}, 201)


async def _put_document(name: str, request: Request, kind: str) -> tuple[WorkflowRecord, Principal]:
    """Store a new workflow from a template's or a graph's document (and say who asked);
    every problem is named at the request's own path."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_WORKFLOWS)
    body = shapes.json_object(await request.body())
    problems = shapes.check_fields(body, {"description", "states", "inputs", "tags"})
    if problems:
        raise InvalidInput(f"the {kind} request is not valid", problems)
    found = templates.translate(name, body)
    await _absent(service, who, name, kind)
    try:
        wf, _, _ = await service.put_workflow(who, name, found.doc)
    except InvalidInput as exc:
        raise found.refused(exc) from None
    return wf, who


@router.get("/v2/workflowtemplates/{template_name}")
async def get_template(template_name: str, request: Request) -> Response:
    """One template; with `x-workflow-prefix`, a listing of those whose names begin so."""
    if PREFIX in request.query_params:
        return await _list_templates(request, template_name)
    service, who = service_of(request), await caller(request)
    require(who, Privilege.VIEW)
    wf, rev = await service.get_workflow(who, template_name)
    return shapes.ok(request, shapes.template(wf, rev))


@router.get("/v2/workflowtemplates")
@router.get("/v2/workflowtemplates/")
async def list_templates(request: Request) -> Response:
    return await _list_templates(request, "")


async def _list_templates(request: Request, prefix: str) -> Response:
    return await _page_of_workflows(
        request, prefix, lambda _, wf: shapes.template_item(wf), "templates"
    )


@router.delete("/v2/workflowtemplates/{template_name}")
async def delete_template(template_name: str, request: Request) -> Response:
    """Deletes the workflow itself: workflows created from it are copies and stay."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_WORKFLOWS)
    await service.delete_workflow(who, template_name)
    return shapes.ok(request, None, 204)


# executions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Filter:
    """What `x-workflow-execution-type` and `x-workflow-execution-state` ask for: how an
    execution was started, and the execflow states a Data+ state stands for."""

    trigger: str | None = None
    states: frozenset[ExecutionState] | None = None

    def keep(self, record: ExecutionRecord) -> bool:
        """The states are filtered by the query; how it was started only here."""
        return self.trigger is None or shapes.execution_type(record) == self.trigger


def _filter(request: Request) -> _Filter:
    trigger: str | None = None
    states: frozenset[ExecutionState] | None = None
    for name in ("x-workflow-execution-type", "x-workflow-execution-state"):
        word = request.query_params.get(name)
        if not word:
            continue
        if word in (shapes.APICALL, shapes.TRIGGERCAL):
            trigger = word
            continue
        found = shapes.native_states(word)
        if not found:
            known = ", ".join(
                [shapes.APICALL, shapes.TRIGGERCAL, *sorted(set(shapes.STATES.values()))]
            )
            raise InvalidInput(
                details=[Detail(f"query:{name}", f"unknown value {word!r} ({known})")]
            )
        states = found if states is None else states & found
    return _Filter(trigger, states)


@router.get("/v2/workflowexecutions")
async def list_executions(request: Request) -> Response:
    """A page of one workflow's executions, newest first; `x-workflow-next-marker` goes on
    from where the previous page stopped."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.VIEW)
    graph = _graph_param(request)
    limit = _number(request, "x-workflow-limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    marker = request.query_params.get("x-workflow-next-marker") or None
    wanted = _filter(request)
    await service.workflow(who, graph)  # an unknown workflow is not an empty list
    found: list[ExecutionRecord] = []
    # Each page asked of the service is at most what is still wanted, so a page is never
    # cut: the service's cursor after it is where the next listing goes on.
    for _ in range(MAX_SCANNED_PAGES):
        page, marker = await service.list_executions(
            who, graph, None, None, limit - len(found), marker, states=wanted.states
        )
        found += [r for r in page if wanted.keep(r)]
        if marker is None or len(found) >= limit:
            break
    body: dict[str, Any] = {
        "count": len(found),
        "executions": [shapes.execution_item(who, r) for r in found],
        "is_truncated": marker is not None,
    }
    if marker is not None:
        body["next_marker"] = marker
    return shapes.ok(request, body)


async def _execution(request: Request, name: str, who: Principal) -> ExecutionRecord:
    """The caller's execution of this name in the workflow the query names."""
    graph = _graph_param(request)
    record = await service_of(request).get_execution(who, name)
    if record.workflow_name != graph:
        raise NotFound(f"workflow {graph!r} has no execution {name!r}")
    return record


@router.get("/v2/workflowexecutions/{execution_name}")
async def get_execution(execution_name: str, request: Request) -> Response:
    service, who = service_of(request), await caller(request)
    require(who, Privilege.VIEW)
    record = await _execution(request, execution_name, who)
    info = shapes.execution_info(who, record, await service.definition_of(record))
    return shapes.ok(request, {"execution_info": info})


@router.put("/v2/workflowexecutions/{execution_name}")
async def restore_execution(execution_name: str, request: Request) -> Response:
    """Run a failed execution again from where it failed; what completed keeps its output."""
    service, who = service_of(request), await caller(request)
    require(who, Privilege.MANAGE_EXECUTIONS)
    record = await _execution(request, execution_name, who)
    record = await service.retry(who, record.id)
    body = {
        "execution_urn": shapes.execution_urn(who, record),
        "execution_name": record.id,
        "restored_at": iso_ms(record.updated_at),
    }
    return shapes.ok(request, body)


# calls outside Data+ -------------------------------------------------------------------------

# The methods an OBS SDK uses on a bucket or at the root.
_OBS_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]


async def outside(request: Request) -> Response:
    """What an OBS SDK may call beside Data+'s workflow API: a bucket's trigger policy
    (`putTriggerPolicy`, `getTriggerPolicy`, `deleteTriggerPolicy`, at `/{bucket}?…` or,
    the bucket in the host name, `/?…`), or any other call signed OBS's way at `/`. Refused
    in OBS's shape as a method the resource does not allow, whoever asks: the answer says
    nothing of any project, so no credential is looked at."""
    if root.obs_subresource(request.scope):
        why = (
            "bucket trigger policies are not supported: execflow has no buckets or object "
            "events to trigger on; a workflow's `schedules` are its triggers"
        )
    else:
        why = (
            "execflow answers OBS's Data+ workflow calls only (/v2/workflows…, "
            "/v2/workflowtemplates…, /v2/workflowexecutions…)"
        )
    raise HTTPException(405, why)


# `/` and a bucket's path are shared with other APIs (see root.py): these routes answer
# only the requests that are OBS's
router.add_api_route(
    "/",
    outside,
    methods=_OBS_METHODS,
    route_class_override=dialect_route(shapes.render, root.claims("obs")),
)
router.add_api_route(
    "/{bucket}",
    outside,
    methods=_OBS_METHODS,
    route_class_override=dialect_route(shapes.render, root.obs_subresource),
)
