"""Reading a response body within a limit: cut where the limit is, decoded as it comes."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from execflow.bodies import read_limited

TEXT = b"".join(b"line %d of a body that compresses well\n" % i for i in range(10_000))


class Pieces(httpx.AsyncByteStream):
    """A body arriving in the given pieces, counting how many were taken."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.taken += 1
            yield piece


def arriving(data: bytes, coding: str | None = None, size: int = 1000) -> httpx.Response:
    headers = {"Content-Encoding": coding} if coding else {}
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return httpx.Response(200, headers=headers, stream=Pieces(pieces))


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("limit", [0, 1, 4_000, len(TEXT) - 1])
async def test_a_body_over_the_limit_is_cut_there(limit: int) -> None:
    assert await read_limited(arriving(TEXT), limit) == (TEXT[:limit], True)


async def test_a_body_within_the_limit_is_whole() -> None:
    assert await read_limited(arriving(TEXT), len(TEXT)) == (TEXT, False)
    assert await read_limited(arriving(b""), 0) == (b"", False)


async def test_reading_stops_once_the_limit_is_passed() -> None:
    response = arriving(TEXT, size=1024)
    await read_limited(response, 1500)
    assert isinstance(response.stream, Pieces)
    assert response.stream.taken == 2


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "GZip": gzip.compress,
    "gzip, deflate": lambda data: zlib.compress(gzip.compress(data)),
    "gzip, identity": gzip.compress,
}


@pytest.mark.parametrize("coding", ENCODERS)
async def test_compressed_bodies_are_inflated(coding: str) -> None:
    encoded = ENCODERS[coding](TEXT)
    assert await read_limited(arriving(encoded, coding), len(TEXT)) == (TEXT, False)
    assert await read_limited(arriving(encoded, coding), 100) == (TEXT[:100], True)


async def test_deflate_without_its_zlib_header_is_inflated_too() -> None:
    # some servers send raw deflate; httpx reads it, so it is read here too
    response = arriving(raw_deflate(TEXT), "deflate")
    assert await read_limited(response, len(TEXT)) == (TEXT, False)


async def test_a_coding_not_known_here_is_passed_through_as_it_came() -> None:
    assert await read_limited(arriving(TEXT, "br"), len(TEXT)) == (TEXT, False)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_corrupt_body_is_a_decoding_error_naming_its_coding(coding: str) -> None:
    with pytest.raises(httpx.DecodingError, match=f"^the {coding} body is corrupt: "):
        await read_limited(arriving(b"\x1f\x8b\x08\x00 not really " * 10, coding), 1000)


async def test_more_codings_than_a_server_applies_are_refused_before_any_is_set_up() -> None:
    coding = ", ".join(["gzip"] * 4)
    with pytest.raises(httpx.DecodingError, match="4 content codings; at most 3"):
        await read_limited(arriving(b"", coding), 1000)


async def test_a_body_already_in_memory_is_cut_at_the_limit() -> None:
    response = httpx.Response(200, content=TEXT)  # as in-memory transports answer
    assert await read_limited(response, 10) == (TEXT[:10], True)
    assert await read_limited(response, len(TEXT)) == (TEXT, False)
