"""`/console/workflows`: the list, a workflow's page (definition, DAG, revisions and their
diff, schedules, the start form), and starting an execution from that form."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from execflow.api.executions import MAX_WAIT
from execflow.api.schemas import PlanPublic, RevisionPublic
from execflow.console import forms, graph
from execflow.console.rendering import page
from execflow.console.routing import ConsoleRoute
from execflow.console.session import ActingDep, VisitorDep, service_of
from execflow.errors import Detail, InvalidInput
from execflow.schedules import next_slot
from execflow.service import StartRequest

router = APIRouter(prefix="/console/workflows", route_class=ConsoleRoute, include_in_schema=False)


def as_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


@router.get("")
async def workflows(request: Request, who: VisitorDep) -> Response:
    items = await service_of(request).list_workflows(who.principal)
    return page(request, "workflows.html", who, items=items)


@router.get("/{name}")
async def workflow(
    request: Request,
    name: str,
    who: VisitorDep,
    a: Annotated[int | None, Query(ge=1)] = None,
    b: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    service = service_of(request)
    wf, rev = await service.get_workflow(who.principal, name)
    _, definition = await service.definition(who.principal, name)
    shown = RevisionPublic.of(wf, rev)  # secret defaults masked as the API masks them
    diff = ""
    if a is not None and b is not None:
        diff = await _diff(request, who.principal, name, a, b)
    now = service.clock.now()
    schedules = [(s, next_slot(s, now) if s.enabled else None) for s in definition.schedules]
    return page(
        request,
        "workflow.html",
        who,
        wf=wf,
        definition=definition,
        source=as_yaml(shown.definition),
        dag=graph.dag_json(definition, {}),
        fields=forms.parameter_fields(definition.parameters),
        schedules=schedules,
        revisions=list(range(wf.latest_revision, 0, -1)),
        a=a or max(wf.latest_revision - 1, 1),
        b=b or wf.latest_revision,
        diff=diff,
        max_wait=int(MAX_WAIT),
    )


async def _diff(request: Request, who: Any, name: str, a: int, b: int) -> str:
    service = service_of(request)
    texts = []
    for number in (a, b):
        wf, rev = await service.get_workflow(who, name, number)
        texts.append(as_yaml(RevisionPublic.of(wf, rev).definition).splitlines(keepends=True))
    lines = difflib.unified_diff(texts[0], texts[1], f"revision {a}", f"revision {b}")
    return "".join(lines) or "(no difference)"


@router.post("/{name}/start")
async def start(
    request: Request,
    name: str,
    who: ActingDep,
    dry_run: Annotated[bool, Form()] = False,
    execution_name: Annotated[str, Form()] = "",
    wait: Annotated[str, Form()] = "",
) -> Response:
    """Start an execution from the generated form, then show it; a dry run shows the plan.
    With `wait`, the answer waits up to that many seconds for the end, as the API's
    `Prefer: wait=N` does, so an execution that ends in time is shown ended."""
    service = service_of(request)
    seconds = _seconds(wait)
    _, definition = await service.definition(who.principal, name)
    fields = forms.parameter_fields(definition.parameters)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    inputs, problems = forms.read_values(fields, form, "/inputs")
    if problems:
        raise InvalidInput("the start request is not valid", problems)
    start = StartRequest(inputs=inputs, name=execution_name.strip() or None)
    if dry_run:
        plan = PlanPublic.of(await service.plan(who.principal, name, start))
        return page(request, "plan.html", who, plan=plan, workflow=name)
    record, _ = await service.start_or_find(who.principal, name, start)
    target = f"/console/executions/{record.id}"
    if seconds and await service.wait_ended(who.principal, record, seconds) is None:
        target += f"?waited={seconds:g}"  # the page says it had not ended by then
    return RedirectResponse(target, status_code=303)


def _seconds(wait: str) -> float:
    """The seconds to wait for the end: as `Prefer: wait=N`, at most MAX_WAIT."""
    if not wait.strip():
        return 0.0
    try:
        seconds = float(wait)
    except ValueError:
        raise InvalidInput(details=[Detail("/wait", "expected a number of seconds")]) from None
    if not 0 <= seconds <= MAX_WAIT:
        raise InvalidInput(details=[Detail("/wait", f"between 0 and {MAX_WAIT:g} seconds")])
    return seconds
