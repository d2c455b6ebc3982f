"""The console's route class: a failure becomes a page, never the API's JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from execflow.api.errors import STATUS, pointer, warn_unavailable
from execflow.console.rendering import page
from execflow.console.session import SignInNeeded, visitor
from execflow.errors import Detail, ExecflowError, NotAuthenticated

log = logging.getLogger("execflow.console")
LOGIN = "/console/login"


def status_of(exc: ExecflowError) -> int:
    """The HTTP status the API gives the same error: one table for both."""
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


async def failure_page(request: Request, exc: Exception) -> Response:
    """A page saying what went wrong, with the status the API would answer."""
    if isinstance(exc, SignInNeeded) or (
        isinstance(exc, NotAuthenticated) and request.method in ("GET", "HEAD")
    ):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{LOGIN}?next={quote(target, safe='')}", status_code=303)
    if isinstance(exc, RequestValidationError):
        details = [Detail(pointer(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        exc = ExecflowError("the request is not valid", details)
        status = 422
    elif isinstance(exc, ExecflowError):
        status = status_of(exc)
        warn_unavailable(request, exc)
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        exc, status = ExecflowError("an internal error occurred"), 500
    try:
        who = await visitor(request)
    except ExecflowError:
        who = None
    return page(request, "error.html", who, status, error=exc, code=status)


class ConsoleRoute(APIRoute):
    """Every failure, from parsing the request to the service's answer, as a page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return await failure_page(request, exc)

        return handle
