"""Who is signed in to the console: the session cookie, its CSRF token, sign-in and out.

The cookie carries the secret of a *session token* (`Service.open_session`), never the
credential the person signed in with: a token of the same project and role that expires
after `SESSION_SECONDS` and that signing out revokes, so a copied cookie dies with the
session. Every form that changes something carries a CSRF token derived from that secret
(HMAC-SHA256), which a page of another origin can neither read nor compute; SameSite=Strict
on the cookie is a second wall, not the only one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from execflow.auth import Privilege, allows, is_system_admin
from execflow.errors import NotAuthenticated, PermissionDenied
from execflow.records import Principal
from execflow.service import Service

COOKIE = "execflow_console"
# the double-submitted token of the sign-in form, before there is a session to bind to
LOGIN_COOKIE = "execflow_console_login"
SESSION_SECONDS = 12 * 3600.0
DESCRIPTION = "console session"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
_CSRF_LABEL = b"execflow console csrf v1"


class SignInNeeded(NotAuthenticated):
    """Sign in to use the console."""


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def csrf_of(session_secret: str) -> str:
    """The CSRF token of a session: a MAC of a fixed label under the session's secret."""
    return hmac.new(session_secret.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Visitor:
    """A signed-in person: their principal, and the CSRF token their forms carry."""

    principal: Principal
    csrf: str

    def can(self, privilege: Privilege) -> bool:
        return allows(self.principal, privilege)

    @property
    def steers(self) -> bool:
        return self.can(Privilege.MANAGE_EXECUTIONS)

    @property
    def starts(self) -> bool:
        return self.can(Privilege.SCHEDULE_EXECUTIONS)

    @property
    def admin(self) -> bool:
        return self.can(Privilege.ADMIN)

    @property
    def system_admin(self) -> bool:
        return is_system_admin(self.principal)


async def visitor(request: Request) -> Visitor:
    """The person signed in, or SignInNeeded (the pages answer it with the sign-in page)."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        raise SignInNeeded()
    try:
        who = await service_of(request).authenticate_session(secret)
    except NotAuthenticated as exc:
        raise SignInNeeded(f"your session ended ({exc.message}); sign in again") from None
    return Visitor(who, csrf_of(secret))


async def _given_csrf(request: Request) -> str:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given or ""


async def acting_visitor(request: Request) -> Visitor:
    """The person signed in, for a request that changes something: its CSRF token (form
    field `_csrf` or header `X-CSRF-Token`) must be the session's, else PermissionDenied."""
    who = await visitor(request)
    if not hmac.compare_digest((await _given_csrf(request)).encode(), who.csrf.encode()):
        raise PermissionDenied("the form's CSRF token is missing or wrong: reload the page")
    return who


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


async def check_login_token(request: Request) -> None:
    """The sign-in form's own CSRF check (double submit): the field equals its cookie."""
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = await _given_csrf(request)
    if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
        raise PermissionDenied("the sign-in form expired or came from elsewhere: reload it")


async def sign_in(service: Service, token: str, key_id: str, key_secret: str) -> str:
    """Check a token, or an access key's id and secret, and open a session: its secret."""
    if key_id:
        who = await service.authenticate_key(key_id, key_secret)
    elif token:
        who = await service.authenticate(token)
    else:
        raise NotAuthenticated("give a token, or an access key id and its secret")
    return await service.open_session(who, SESSION_SECONDS, DESCRIPTION, own=True)


def set_cookie(request: Request, response: Response, name: str, value: str, age: float) -> None:
    """A cookie for the console: HttpOnly, SameSite=Strict, Secure on https."""
    response.set_cookie(
        name,
        value,
        max_age=int(age),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


VisitorDep = Annotated[Visitor, Depends(visitor)]
ActingDep = Annotated[Visitor, Depends(acting_visitor)]
