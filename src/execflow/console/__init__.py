"""The web console: server-rendered pages (Jinja2 and htmx) over the same service as the
API, at /console; and /docs with its assets from the package. `install` adds it to an app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from execflow.api.dialects import root
from execflow.console import admin, docs, executions, signin, steering, workflows
from execflow.console.headers import ConsoleHeaders

STATIC = Path(__file__).parent / "static"

__all__ = ["install"]


class _BrowserAtRoot(APIRoute):
    """`/` answers a browser's page request only (`root.kind_of` says `console`): the
    other requests there are another API's (Alibaba EMR's RPC calls)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and root.kind_of(scope) != "console":
            return Match.NONE, {}
        return super().matches(scope)


async def _to_console() -> Response:
    return RedirectResponse("/console/", status_code=303)


def install(app: FastAPI) -> None:
    """Add the console's routes, its static files, /docs and its headers to `app`."""
    for module in (signin, executions, steering, workflows, admin, docs):
        app.include_router(module.router)
    app.router.routes.append(
        _BrowserAtRoot("/", _to_console, methods=["GET", "HEAD"], include_in_schema=False)
    )
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_middleware(ConsoleHeaders)
