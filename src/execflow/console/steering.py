"""The console's buttons on an execution: cancel, suspend, resume, retry, rerun, signals.

Each is a form posted with the session's CSRF token, calling the same service method as
the API, which decides whether the caller's role may: a button a role may not press is
not shown, and the server refuses the request anyway.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from execflow.console import executions, forms
from execflow.console.routing import ConsoleRoute
from execflow.console.session import ActingDep, service_of
from execflow.errors import InvalidInput, NotFound
from execflow.service import pending_signals

router = APIRouter(prefix="/console/executions", route_class=ConsoleRoute, include_in_schema=False)


def _back(execution_id: str) -> Response:
    return RedirectResponse(f"/console/executions/{execution_id}", status_code=303)


@router.post("/{execution_id}/cancel")
async def cancel(
    request: Request, execution_id: str, who: ActingDep, mode: Annotated[str, Form()] = "graceful"
) -> Response:
    force = mode == "force"
    await service_of(request).cancel(who.principal, execution_id, force=force)
    return _back(execution_id)


@router.post("/{execution_id}/suspend")
async def suspend(request: Request, execution_id: str, who: ActingDep) -> Response:
    await service_of(request).suspend(who.principal, execution_id)
    return _back(execution_id)


@router.post("/{execution_id}/resume")
async def resume(request: Request, execution_id: str, who: ActingDep) -> Response:
    await service_of(request).resume(who.principal, execution_id)
    return _back(execution_id)


@router.post("/{execution_id}/retry")
async def retry(request: Request, execution_id: str, who: ActingDep) -> Response:
    await service_of(request).retry(who.principal, execution_id)
    return _back(execution_id)


@router.post("/{execution_id}/rerun")
async def rerun(
    request: Request, execution_id: str, who: ActingDep, from_task: Annotated[str, Form()]
) -> Response:
    record = await service_of(request).rerun(who.principal, execution_id, from_task, None)
    return _back(record.id)


@router.post("/{execution_id}/signals/{signal}")
async def signal(request: Request, execution_id: str, signal: str, who: ActingDep) -> Response:
    """Deliver a signal from its generated form: the fields read by the schema's types,
    then checked against the schema by the service, as for the API."""
    service = service_of(request)
    record = await service.get_execution(who.principal, execution_id)
    pending = next((p for p in pending_signals(record) if p.name == signal), None)
    if pending is None:
        raise NotFound(f"execution {execution_id!r} waits for no signal {signal!r}")
    fields = forms.schema_fields(pending.schema)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    try:
        values, problems = forms.read_values(fields, form, "/payload")
        if problems:
            raise InvalidInput("the signal's payload is not valid", problems)
        payload = values.get("") if fields and fields[0].key == "" else values
        await service.signal(who.principal, execution_id, signal, payload)
    except InvalidInput as exc:
        # the page again, the form as it was posted and each reason next to its field
        return await executions.refused_signal(request, who, execution_id, signal, form, exc)
    return _back(execution_id)
