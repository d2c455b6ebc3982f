"""What every dialect shares: one failure shape to translate, routes that answer any
error in the vendor's envelope, the caller from a vendor's credentials, and numeric ids.

A dialect is a router over `Service`: it parses the vendor's request, calls the same use
cases as the native API and renders the result in the vendor's vocabulary. It owns no
engine logic and no SQL.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from execflow.api.deps import get_principal
from execflow.api.errors import (
    HTTP_CODES,
    STATUS,
    pointer,
    retry_after,
    retry_header,
    warn_unavailable,
)
from execflow.errors import Conflict, Detail, ExecflowError, NotAuthenticated, NotFound
from execflow.limits import Limits, parse_json
from execflow.records import Principal
from execflow.service import Service

log = logging.getLogger("execflow.api")


@dataclass(frozen=True)
class Failure:
    """Any error, as every dialect sees it: the status execflow gives it, its native id
    (`invalid_input`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    `too_many_requests`, `unavailable`, `internal_error`, …), a message and the fields at fault.

    `unreadable` says the request's body could not be read as a document at all (not JSON,
    not UTF-8, or JSON execflow refuses to hold), as opposed to a document with a bad value;
    `origin` is the module and line of execflow that refused the request, for envelopes that
    say where an error was raised (Onedata's)."""

    status: int
    code: str
    message: str
    details: tuple[Detail, ...] = ()
    retry_after: float | None = None
    unreadable: bool = False
    origin: tuple[str, int] | None = None

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return retry_header(self.retry_after)

    def describe(self) -> str:
        """The message with every field at fault: for envelopes with one text field."""
        if not self.details:
            return self.message
        fields = "; ".join(
            f"{d.pointer}: {d.reason}" if d.pointer else d.reason for d in self.details
        )
        return self.message.rstrip(".") + ": " + fields


def failure_of(request: Request, exc: Exception) -> Failure:
    """The failure an exception stands for; unexpected ones are logged and hidden."""
    origin = raised_at(exc.__traceback__)
    if isinstance(exc, ExecflowError):
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        warn_unavailable(request, exc)
        details = tuple(exc.details)
        return Failure(status, exc.code, exc.message, details, retry_after(exc), origin=origin)
    if isinstance(exc, RequestValidationError):
        details = tuple(Detail(pointer(tuple(e["loc"])), e["msg"]) for e in exc.errors())
        return Failure(422, "invalid_input", "the request is not valid", details, origin=origin)
    if isinstance(exc, HTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return Failure(exc.status_code, code, exc.detail, origin=origin)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Failure(500, "internal_error", "an internal error occurred", origin=origin)


def raised_at(tb: TracebackType | None) -> tuple[str, int] | None:
    """The module and line where an exception was raised: the innermost frame of execflow's
    own code (else the innermost frame at all, as for a route that no path matched)."""
    own: tuple[str, int] | None = None
    last: tuple[str, int] | None = None
    while tb is not None:
        last = (str(tb.tb_frame.f_globals.get("__name__", "")), tb.tb_lineno)
        if last[0].startswith("execflow."):
            own = last
        tb = tb.tb_next
    return own or last


def here() -> tuple[str, int]:
    """The module and line of the caller's caller: where a failure made without an
    exception (the body guard's refusals) was decided."""
    frame = sys._getframe(2)
    return str(frame.f_globals.get("__name__", "")), frame.f_lineno


Render = Callable[[Request, Failure], Response]


def dialect_route(render: Render, claim: Callable[[Scope], bool] | None = None) -> type[APIRoute]:
    """A route class whose every failure, from parsing the request to the service's
    answer, is rendered by `render` in the vendor's own error envelope. With `claim`, a
    route answers only the requests it claims (see `root.py`: several APIs share `/`), and
    leaves the others to the next route."""

    class DialectRoute(APIRoute):
        def matches(self, scope: Scope) -> tuple[Match, Scope]:
            if claim is not None and scope["type"] == "http" and not claim(scope):
                return Match.NONE, {}
            return super().matches(scope)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:  # every failure, in the vendor's shape
                    return render(request, failure_of(request, exc))

            return handle

    return DialectRoute


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


KEY_ID = re.compile(r"^EF[A-Z2-7]{18}$")


async def caller(request: Request, token: str | None = None) -> Principal:
    """The caller, by any credential execflow knows: HTTP Basic (an access key id and its
    secret, or any user name and a token), the native headers and signatures, or else the
    vendor's own token (`token`, from a cookie or a parameter)."""
    service = service_of(request)
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
            user, sep, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if not sep:
            raise NotAuthenticated("Basic credentials must be base64 of `user:password`")
        if KEY_ID.fullmatch(user):
            return await service.authenticate_key(user, password)
        return await service.authenticate(password)
    if token and not scheme and "x-auth-token" not in request.headers:
        return await service.authenticate(token)
    return await get_principal(request)


# Numeric ids. Some vendors' ids are numbers (NebulaGraph Explorer's come from a MySQL
# sequence). execflow's ids are 32 lower-case hex digits; the number of an id is its
# first 13 digits, 52 bits, which a JavaScript client holds exactly. It is found again
# by a range scan of the primary key. Two ids of one project sharing 13 digits is a
# birthday problem over 2^52: about one chance in 9,000 with a million executions, and
# then the number is refused as ambiguous rather than answered for the wrong one.
NUMBER_DIGITS = 13
MAX_NUMBER = (1 << (4 * NUMBER_DIGITS)) - 1


def number_of(ident: str) -> int:
    return int(ident[:NUMBER_DIGITS], 16)


async def id_of_number(service: Service, who: Principal, kind: str, number: int) -> str:
    """The id of the caller's workflow or execution (`kind`) with this number."""
    if not 0 <= number <= MAX_NUMBER:
        raise NotFound(f"{kind} {number} not found")
    found = await service.ids_with_prefix(who, kind, f"{number:0{NUMBER_DIGITS}x}")
    if not found:
        raise NotFound(f"{kind} {number} not found")
    if len(found) > 1:
        raise Conflict(f"{kind} number {number} is ambiguous: use its full id")
    return found[0]


def loads(text: str | bytes) -> Any:
    """`json.loads` for what a client sends a dialect, in its body or in a parameter: a
    ValueError also for what execflow refuses to store (nesting deeper than its limit,
    numbers that are not finite, NUL, lone surrogates), and for text that is not UTF-8,
    whatever media type it came as."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    doc, problem = parse_json(raw, Limits().max_depth)
    if problem is not None:
        raise ValueError(f"{problem.pointer or 'the document'}: {problem.reason}")
    return doc


def timestamp_ms(at: datetime | None) -> int | None:
    """Milliseconds since the epoch, as several vendors give times."""
    return None if at is None else int(at.timestamp() * 1000)


_LAST_MS = 253_402_300_799_000  # the end of year 9999, the last time a datetime holds


def from_ms(ms: float | None) -> datetime | None:
    """A time given in milliseconds since the epoch (clamped to 1970…9999); None for none
    (None or infinite): as a bound of a listing's creation times."""
    if ms is None or math.isinf(ms):
        return None
    return datetime.fromtimestamp(max(0.0, min(ms, _LAST_MS)) / 1000, UTC)


def iso_ms(at: datetime | None) -> str | None:
    """`2020-04-23T13:37:43.847Z`: ISO 8601 in UTC to the millisecond."""
    if at is None:
        return None
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
