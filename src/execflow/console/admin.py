"""`/console/admin`: projects, and a project's tokens and access keys (admins).

The pages call `execflow.admin`, as the API's routes do, so the same rules hold: admins
of `default` see and administer every project, other admins only their own, and a
project one may not see is not found. A new secret is shown once, in the answer to its
creation, never stored in a page that can be loaded again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from execflow import admin
from execflow.api.schemas import ProjectPublic, TokenInfo
from execflow.auth import ROLES
from execflow.console.rendering import page
from execflow.console.routing import ConsoleRoute
from execflow.console.session import ActingDep, VisitorDep, service_of
from execflow.errors import PermissionDenied
from execflow.store.credentials import ACCESS_KEY, TOKEN

router = APIRouter(prefix="/console/admin", route_class=ConsoleRoute, include_in_schema=False)
KINDS = {"tokens": TOKEN, "access-keys": ACCESS_KEY}


def _kind(kinds: str) -> str:
    if kinds not in KINDS:
        raise PermissionDenied(f"no credentials of kind {kinds!r}")
    return KINDS[kinds]


@router.get("")
async def projects(request: Request, who: VisitorDep) -> Response:
    if not who.admin:
        raise PermissionDenied(f"role {who.principal.role!r} lacks the 'admin' privilege")
    found = await admin.list_projects(service_of(request), who.principal)
    return page(request, "admin.html", who, projects=[ProjectPublic.of(p) for p in found])


async def _credentials(request: Request, who: VisitorDep, project: str) -> dict[str, Any]:
    service = service_of(request)
    now = service.clock.now()
    tokens = await admin.list_tokens(service, who.principal, project)
    keys = await admin.list_tokens(service, who.principal, project, ACCESS_KEY)
    return {
        "project": project,
        "tokens": [TokenInfo.of(t, project, now) for t in tokens],
        "keys": [TokenInfo.of(k, project, now) for k in keys],
        "roles": ROLES,
    }


@router.get("/projects/{project}")
async def credentials(request: Request, project: str, who: VisitorDep) -> Response:
    context = await _credentials(request, who, project)
    return page(request, "credentials.html", who, created=None, **context)


@router.post("/projects/{project}/{kinds}")
async def create(
    request: Request,
    project: str,
    kinds: str,
    who: ActingDep,
    role: Annotated[str, Form()],
    description: Annotated[str, Form()] = "",
    expires_in: Annotated[str, Form()] = "",
) -> Response:
    """Create a token or an access key; the answer shows its secret, once."""
    kind = _kind(kinds)
    service = service_of(request)
    record, secret = await admin.create_token(
        service, who.principal, project, role, description, None, expires_in or None, kind=kind
    )
    context = await _credentials(request, who, project)
    created = {"kind": kinds, "id": record.id, "secret": secret}
    return page(request, "credentials.html", who, status=201, created=created, **context)


@router.post("/projects/{project}/{kinds}/{token_id}/revoke")
async def revoke(
    request: Request, project: str, kinds: str, token_id: str, who: ActingDep
) -> Response:
    kind = _kind(kinds)
    await admin.revoke_token(service_of(request), who.principal, project, token_id, kind)
    return RedirectResponse(f"/console/admin/projects/{project}", status_code=303)
