"""Reading a response body within a limit, decoding it as it comes.

A body is read from the wire piece by piece and stops being read once the limit is passed, so
a large body costs the limit, not its size. Compressed bodies are inflated by this module
rather than by httpx, whose decoders inflate each piece whole: a few kilobytes of gzip can
stand for gigabytes, and a coding applied twice multiplies that. Here every coding yields at
most `_PIECE` bytes at a time and nothing more is inflated once the limit is reached.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

_PIECE = 65_536
# a coding costs its window (32 KiB) and more: a header listing thousands would be a way to
# spend memory without sending any; real servers apply one
_MAX_CODINGS = 3


class _Inflater:
    """One zlib coding (`gzip`, or `deflate` with or without its zlib header)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._raw_fallback = coding == "deflate"
        gzip = coding in ("gzip", "x-gzip")
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | (16 if gzip else 0))

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The inflated bytes of `data`, lazily, at most `_PIECE` at a time."""
        while True:
            try:
                out = self._inflate.decompress(data, _PIECE)
            except zlib.error as exc:
                if not self._raw_fallback:
                    raise httpx.DecodingError(f"the {self.coding} body is corrupt: {exc}") from exc
                # some servers send "deflate" without the zlib header, as httpx also allows
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                self._raw_fallback = False
                continue
            self._raw_fallback = False
            if not out:
                return
            yield out
            data = self._inflate.unconsumed_tail


def _codings(header: str) -> list[_Inflater]:
    """The decoders for a Content-Encoding, in the order they apply to what arrives; codings
    this module does not know are passed through as they are, as httpx does."""
    names = [name.strip().lower() for name in header.split(",") if name.strip()]
    known = [name for name in names if name in ("gzip", "x-gzip", "deflate")]
    if len(known) > _MAX_CODINGS:
        raise httpx.DecodingError(
            f"the body has {len(known)} content codings; at most {_MAX_CODINGS} are read"
        )
    return [_Inflater(name) for name in reversed(known)]


def _through(layers: list[_Inflater], data: bytes) -> Iterator[bytes]:
    if not layers:
        yield data
        return
    first, rest = layers[0], layers[1:]
    for piece in first.feed(data):
        yield from _through(rest, piece)


async def read_limited(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The first `limit` bytes of the decoded body, and whether there was more.

    Reads no further than needed to tell; the caller closes the response, which drops the
    connection with the rest unread.
    """
    if response.is_stream_consumed:
        # read already, as an in-memory transport's responses are: nothing left to bound
        return response.content[:limit], len(response.content) > limit
    layers = _codings(response.headers.get("content-encoding", ""))
    body = bytearray()
    async for chunk in response.aiter_raw():
        for piece in _through(layers, chunk):
            body += piece[: limit + 1 - len(body)]
            if len(body) > limit:
                return bytes(body[:limit]), True
    return bytes(body), False
