"""`/console/admin`: projects, a project's settings (the actions its workflows may use) and
its tokens and access keys (admins).

The pages call `execflow.admin`, as the API's routes do, so the same rules hold: admins
of `default` see and administer every project and change its settings, other admins only
see their own (its settings read only), and a project one may not see is not found. A new
secret is shown once, in the answer to its creation, never stored in a page that can be
loaded again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from execflow import admin
from execflow.actions import ACTIONS
from execflow.api.schemas import ProjectPublic, TokenInfo
from execflow.auth import ROLES
from execflow.console.rendering import page
from execflow.console.routing import ConsoleRoute
from execflow.console.session import ActingDep, VisitorDep, service_of
from execflow.errors import PermissionDenied
from execflow.project_actions import CODE_ACTIONS
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
    record = await admin.get_project(service, who.principal, project)
    return {
        "project": project,
        "settings": ProjectPublic.of(record),
        # every action, the code-running ones marked: what the settings form offers
        "all_actions": [(name, name in CODE_ACTIONS) for name in sorted(ACTIONS)],
        "tokens": [TokenInfo.of(t, project, now) for t in tokens],
        "keys": [TokenInfo.of(k, project, now) for k in keys],
        "roles": ROLES,
    }


@router.get("/projects/{project}")
async def credentials(request: Request, project: str, who: VisitorDep) -> Response:
    context = await _credentials(request, who, project)
    return page(request, "credentials.html", who, created=None, **context)


# declared before the credentials' routes, whose `{kinds}` would match `settings`
@router.post("/projects/{project}/settings")
async def settings(
    request: Request,
    project: str,
    who: ActingDep,
    scope: Annotated[str, Form()] = "listed",
    actions: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Set the actions a project's workflows may use (admins of `default`, as the API's
    `PATCH /projects/{p}`): every action (`scope=all`), or those checked."""
    allowed = None if scope == "all" else (actions or [])
    await admin.update_project(service_of(request), who.principal, project, allowed)
    return RedirectResponse(f"/console/admin/projects/{project}", status_code=303)


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
