"""The headers of every console answer: a strict Content-Security-Policy and friends, and
`Server-Timing` (how long the server took until its answer began)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/console"
# No inline script or style anywhere: every script and stylesheet is a file of the package.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_ALWAYS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
# pages show a project's data: never kept by a shared cache nor the back-forward cache
_PAGES = [(b"cache-control", b"no-store")]


class ConsoleHeaders:
    """Adds the security headers to every answer under /console (static files included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        extra = _ALWAYS if path.startswith(PREFIX + "/static/") else _ALWAYS + _PAGES
        began = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                names = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in names)
                took = (time.perf_counter() - began) * 1000
                headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
            await send(message)

        await self.app(scope, receive, send_with_headers)
