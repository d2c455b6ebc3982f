"""The ASGI application: `create_app(runtime)` wires routers, errors and request ids."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from execflow import __version__, console
from execflow.api import (
    dialects,
    errors,
    executions,
    health,
    metrics,
    projects,
    tokens,
    workflows,
)
from execflow.api.deps import SECURITY, SECURITY_SCHEMES
from execflow.api.dialects.base import failure_of
from execflow.api.guard import BodyGuard
from execflow.runtime import Runtime

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Every response carries `X-Request-ID`: the caller's if well-formed, else a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        rid = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(runtime: Runtime, *, manage_runtime: bool = False) -> FastAPI:
    """The API over a runtime; with `manage_runtime` the app's lifespan starts and stops it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            async with runtime.running():
                yield
        else:
            yield

    app = FastAPI(
        title="execflow",
        version=__version__,
        summary="A durable workflow execution service",
        lifespan=lifespan,
        # /docs is the console's (its assets from the package, nothing from a CDN); ReDoc
        # has no such offline bundle here, so it is not served
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = runtime.service
    app.state.runtime = runtime
    envelope = dialects.envelopes(runtime.settings.dialects)

    def in_dialect(request: Request, exc: HTTPException) -> Response | None:
        render = envelope(request.scope)
        return None if render is None else render(request, failure_of(request, exc))

    errors.install(app, in_dialect)
    app.include_router(workflows.router)
    app.include_router(executions.router)
    app.include_router(tokens.router)
    app.include_router(projects.router)
    if runtime.settings.metrics.mode == "token":  # "port" has a listener of its own
        app.include_router(metrics.router)
    dialects.mount(app, runtime.settings.dialects)
    console.install(app)

    app.state.readiness = health.Readiness(runtime.store, runtime.engine)
    app.include_router(health.router(app.state.readiness))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in schema["paths"].items():
                if path.startswith("/api/") or path == "/metrics":
                    for operation in operations.values():
                        operation["security"] = SECURITY
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.add_middleware(BodyGuard, limits=runtime.settings.limits, render_for=envelope)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer has an id
    return app
