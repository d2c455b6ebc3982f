"""Requests are bounded before the app reads them: the body's size, and a JSON body's shape.

An ASGI middleware, so it guards every route alike (the native API and the vendor
dialects): a body over the limit is refused with 413 as soon as its `Content-Length` says
so, or as soon as that many bytes have come, without reading the rest; a JSON body that does
not parse, or holds what execflow refuses to store (see `limits.document_problem`), is
refused with 422 before any route sees it (on a vendor dialect's paths, in that dialect's error
envelope); the native API takes JSON bodies only (YAML for
workflow definitions): another media type is 415.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from execflow.api.dialects.base import Failure, Render, here
from execflow.api.errors import error_response
from execflow.errors import Detail
from execflow.limits import Limits, parse_json

NATIVE = "/api/"  # the native API speaks JSON (and YAML for definitions); dialects their own
YAML = (b"application/yaml", b"application/x-yaml", b"text/yaml")


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        limits: Limits,
        render_for: Callable[[Scope], Render | None] = lambda scope: None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.render_for = render_for  # a dialect's request: its envelope, not the native one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if (length is None or length == b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body comes: nothing to bound or check
            return
        if length is not None and (not length.isdigit() or int(length) > limit):
            if length.isdigit():
                await self._refuse(scope, send, 413, _too_large(limit))
            else:
                detail = Detail("header:Content-Length", "not a number of bytes")
                await self._refuse(scope, send, 400, detail)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, send, 413, _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        is_json = kind == b"application/json" or kind.endswith(b"+json")
        if body and not is_json and scope["path"].startswith(NATIVE) and kind not in YAML:
            detail = Detail(
                "header:Content-Type",
                f"send application/json (a workflow definition also as application/yaml), "
                f"not {kind.decode(errors='replace')}",
            )
            await self._refuse(scope, send, 415, detail)
            return
        if body and is_json:
            _, problem = parse_json(body, self.limits.max_depth)
            if problem is not None:
                await self._refuse(scope, send, 422, problem)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, send: Send, status: int, detail: Detail) -> None:
        origin = here()  # the line of __call__ that refused
        request = Request(scope)
        if status == 413:
            code, text = "too_large", "the request body is too large"
        elif status == 400:
            code, text = "bad_request", "the request is malformed"
        elif status == 415:
            code, text = "unsupported_media_type", "the body's media type is not accepted here"
        else:
            code, text = "invalid_input", "the request body is not acceptable JSON"
        render = self.render_for(scope)
        if render is not None:
            # a 422 here is a body that is no document execflow can read, not a bad value
            unreadable = status == 422
            failure = Failure(status, code, text, (detail,), unreadable=unreadable, origin=origin)
            response = render(request, failure)
        else:
            response = error_response(request, status, code, text, [detail.as_dict()])
        if status == 413:
            response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, _nothing, send)


def _too_large(limit: int) -> Detail:
    return Detail("", f"at most {limit} bytes (EXECFLOW_MAX_BODY)")


def _replay(body: bytes, receive: Receive) -> Receive:
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # what comes after the body: a disconnect

    return replay


async def _nothing() -> Any:
    return {"type": "http.disconnect"}
