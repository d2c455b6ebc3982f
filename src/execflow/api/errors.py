"""The one place that turns errors into HTTP responses, all in one shape."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from execflow.errors import (
    Conflict,
    ExecflowError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)

log = logging.getLogger("execflow.api")

STATUS: list[tuple[type[ExecflowError], int]] = [
    (InvalidInput, 422),
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (Unavailable, 503),
]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def retry_after(exc: ExecflowError) -> float | None:
    """How long a caller should wait before trying again, for errors that say so."""
    return exc.retry_after if isinstance(exc, RateLimited | Unavailable) else None


def retry_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def warn_unavailable(request: Request, exc: ExecflowError) -> None:
    """One line per refused request while the database is away, not a traceback."""
    if isinstance(exc, Unavailable):
        cause = exc.__cause__ or exc
        why = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        log.warning("503 on %s %s: %s", request.method, request.url.path, why)


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(
    request: Request,
    status: int,
    code: str,
    description: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": {
            "id": code,
            "description": description,
            "details": details or [],
            "request_id": request_id(request),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def pointer(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts.pop(0)
        if where != "body":
            return f"{where}:" + "/".join(str(p) for p in parts)
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def install(
    app: FastAPI, elsewhere: Callable[[Request, HTTPException], Response | None] | None = None
) -> None:
    """Answer every error in the native shape; `elsewhere` may answer a routing error (no such
    route or method) in another shape, as on a vendor dialect's paths."""

    @app.exception_handler(ExecflowError)
    async def _domain(request: Request, exc: ExecflowError) -> JSONResponse:
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        details = [d.as_dict() for d in exc.details]
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if (wait := retry_after(exc)) is not None:
            headers = retry_header(wait)
        warn_unavailable(request, exc)
        return error_response(request, status, exc.code, exc.message, details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"pointer": pointer(tuple(e["loc"])), "reason": e["msg"]} for e in exc.errors()]
        return error_response(request, 422, "invalid_input", "the request is not valid", details)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if elsewhere is not None and (answer := elsewhere(request, exc)) is not None:
            return answer
        code = HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request, exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        rid = {"X-Request-ID": request_id(request)}
        return error_response(
            request, 500, "internal_error", "an internal error occurred", None, rid
        )
