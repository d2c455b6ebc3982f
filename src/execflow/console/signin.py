"""`/console/login` and `/console/logout`."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from execflow.console import session
from execflow.console.rendering import page
from execflow.console.routing import ConsoleRoute
from execflow.console.session import ActingDep, service_of
from execflow.errors import NotAuthenticated

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
HOME = "/console/executions"
# the sign-in form's own token lives as long as a person may take to fill it in
_LOGIN_SECONDS = 3600.0


def _local(target: str | None) -> str:
    """Where to go after signing in: a console path of this site, never another site."""
    if not target:
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return HOME
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _form(request: Request, next_: str | None, error: str = "", status: int = 200) -> Response:
    token = session.new_login_token()
    response = page(
        request, "login.html", None, status, login_csrf=token, next=_local(next_), error=error
    )
    session.set_cookie(request, response, session.LOGIN_COOKIE, token, _LOGIN_SECONDS)
    return response


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    return _form(request, next)


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form()] = "",
    key_id: Annotated[str, Form()] = "",
    key_secret: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    await session.check_login_token(request)
    try:
        secret = await session.sign_in(
            service_of(request), token.strip(), key_id.strip(), key_secret.strip()
        )
    except NotAuthenticated as exc:
        return _form(request, next, exc.message, status=401)
    response = RedirectResponse(_local(next), status_code=303)
    session.set_cookie(request, response, session.COOKIE, secret, session.SESSION_SECONDS)
    response.delete_cookie(session.LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, who: ActingDep) -> Response:
    await service_of(request).close_session(who.principal)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/")
async def home() -> Response:
    return RedirectResponse(HOME, status_code=303)
