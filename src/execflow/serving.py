"""The HTTP server under the API: uvicorn with its fast parser, a cap on what a request's
head may hold (so headers cannot fill memory before anyone is authenticated), and an
access log that never shows a credential."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A request line and its headers: far above what any client sends (browsers stay under
# 16 KiB, proxies commonly cap at 8 to 64 KiB), far below what would hurt.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100

_TOO_LARGE = json.dumps(
    {
        "error": {
            "id": "headers_too_large",
            "message": f"The request's headers exceed {MAX_HEAD_BYTES} bytes or "
            f"{MAX_HEADERS} fields.",
        }
    }
).encode()


class CappedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 and closing the connection once a
    request's head passes MAX_HEAD_BYTES or MAX_HEADERS, before the app (and so before
    authentication) sees it. What it buffers meanwhile is bounded by the cap and one read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between requests, or reading a head
        self._head_bytes = 0  # the request line and headers parsed so far
        self._buffered = 0  # bytes read since the head began, beyond the read it began in
        self._began = False  # a request began in the data being parsed
        self._fields = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._began = False
        super().data_received(data)
        if self._in_head and not self._refused:
            # What the parser holds of an unfinished head: a head that began in this read
            # is bounded by the read's size, one that goes on over reads is counted.
            self._buffered = 0 if self._began else self._buffered + len(data)
            if self._buffered > MAX_HEAD_BYTES:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._began, self._fields, self._head_bytes = True, True, 0, 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._fields <= MAX_HEADERS and self._head_bytes <= MAX_HEAD_BYTES:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._fields > MAX_HEADERS or self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # the rest of this read, if any, is the next request's head
        self._in_head, self._began = True, True

    def _refuse(self) -> None:
        self._refused = True
        self.logger.warning("refused a request whose head was too large (431)")
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"connection: close\r\n"
            b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head + _TOO_LARGE)
            self.transport.close()


# Query parameters whose values are credentials: Alibaba's and S3's signed queries, tokens.
_SECRET_PARAM = re.compile(r"sign|token|secret|password|credential|key", re.IGNORECASE)


def redact_path(full_path: str) -> str:
    """A request's path with the values of credential-like query parameters replaced."""
    path, sep, query = full_path.partition("?")
    if not sep:
        return full_path
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs]
    return f"{path}?{urlencode(shown, safe='/:,*')}"


class _RedactQuery(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def run(app: Any, host: str, port: int, *, access_log: bool) -> None:
    """Serve `app` until stopped (SIGINT/SIGTERM)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=CappedHeadProtocol,
        log_level="warning",
        access_log=access_log,
    )
    if access_log:
        # uvicorn sets its access logger to the server's level, which hides every line
        access = logging.getLogger("uvicorn.access")
        access.setLevel(logging.INFO)
        access.addFilter(_RedactQuery())
    uvicorn.Server(config).run()
