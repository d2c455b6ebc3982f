"""Attacks on what the server fetches: the `http` action aimed at loopback in every spelling a
resolver accepts, at names that resolve inward, through proxy variables, and at bodies far
larger than `response_limit`, compressed or not; and the same against a running server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ssl
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from execflow import outbound
from execflow.records import ExecutionRecord, Principal
from execflow.runtime import load_examples
from execflow.settings import Settings
from execflow.states import ExecutionState
from execflow.store import Store
from tests.harness import Harness, harness
from tests.test_server import Server, free_port, start_server

Body = Callable[[], Iterator[bytes]]
OK_JSON = b'{"status": "ok"}'


@dataclass
class Origin:
    """An HTTP/1.1 server on loopback that counts connections, records request heads and
    answers every request alike; a body is produced lazily, piece by piece."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: Body = lambda: iter([OK_JSON])
    length: int | None = None  # Content-Length; None: the body's, computed
    tls: ssl.SSLContext | None = None
    host: str = "127.0.0.1"  # where it listens
    connections: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    sent: int = 0  # body bytes written, all requests together
    port: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            seen = {"request": request_line}
            for line in filter(None, lines):
                name, _, value = line.partition(":")
                seen[name.strip().lower()] = value.strip()
            self.requests.append(seen)
            length = self.length
            if length is None:
                length = sum(len(piece) for piece in self.body())
            head_lines = [f"HTTP/1.1 {self.status} X", f"Content-Length: {length}"]
            head_lines += [f"{name}: {value}" for name, value in self.headers.items()]
            head_lines.append("Connection: close")
            writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode())
            for piece in self.body():
                writer.write(piece)
                self.sent += len(piece)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the client went away, as it should once it has read enough
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    await server.start()
    yield server
    await server.stop()


def names(table: dict[str, list[str]]) -> outbound.Resolver:
    """A resolver answering from `table`, standing in for DNS."""

    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


async def scheduler(h: Harness) -> Principal:
    """A principal with the `scheduler` role: it may start executions, nothing more."""
    now = h.clock.now()
    _, secret = h.store.create_token(h.store.ensure_project("default", now), "scheduler", now)
    return await h.service.authenticate(secret)


async def health_check(h: Harness, url: str) -> ExecutionRecord:
    """The shipped `service-health-check` example (it retries), started by a scheduler."""
    load_examples(h.store, h.clock.now())
    who = await scheduler(h)
    started = await h.service.start(who, "service-health-check", {"url": url})
    await h.engine.run_until_idle()
    return await h.service.get_execution(h.admin, started.id)


def fetch(url: str, **settings: Any) -> dict[str, Any]:
    """A workflow of one `http` task; its output is the workflow's output."""
    return {
        "name": "fetch",
        "tasks": {"get": {"action": "http", "with": {"url": url, **settings}}},
        "outputs": {"response": "${{ tasks.get.output }}"},
    }


def attempts(ex: ExecutionRecord) -> int:
    return len(ex.task_runs)


def response_of(ex: ExecutionRecord) -> Any:
    assert ex.outputs is not None, ex.error
    return ex.outputs["response"]


# -- loopback in every spelling ----------------------------------------------------------------


def _hosts_file_loopback_name() -> str | None:
    """A name other than localhost that /etc/hosts maps to a loopback address, if any."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            address, *hostnames = line.split("#")[0].split() or [""]
            if address.startswith("127.") or address == "::1":
                for name in hostnames:
                    if name != "localhost" and not name.endswith(".localhost"):
                        return name
    return None


HOSTS_NAME = _hosts_file_loopback_name()
LOOPBACK_SPELLINGS = [
    ("127.0.0.1", "the address 127.0.0.1 is loopback"),
    ("0.0.0.0", "the address 0.0.0.0 is unspecified"),
    ("[::ffff:127.0.0.1]", "the address ::ffff:127.0.0.1 reaches 127.0.0.1, which is loopback"),
    ("2130706433", "the address 127.0.0.1 is loopback"),
    ("0177.0.0.1", "the address 127.0.0.1 is loopback"),
    ("127.1", "the address 127.0.0.1 is loopback"),
    ("0x7f000001", "the address 127.0.0.1 is loopback"),
    ("localhost", "the host localhost is loopback"),
    ("LOCALHOST.", "the host localhost. is loopback"),
    pytest.param(
        HOSTS_NAME or "-",
        "is loopback",
        marks=pytest.mark.skipif(HOSTS_NAME is None, reason="/etc/hosts names no other"),
        id="hosts-file-name",
    ),
]


@pytest.mark.parametrize(("host", "reason"), LOOPBACK_SPELLINGS)
async def test_a_scheduler_cannot_make_the_http_action_reach_loopback(
    store: Store, origin: Origin, host: str, reason: str
) -> None:
    async with harness(store) as h:
        ex = await health_check(h, f"http://{host}:{origin.port}/healthz")
    assert ex.state == ExecutionState.FAILED
    assert ex.error is not None and ex.error["type"] == "http_refused"
    assert reason in ex.error["message"]
    assert "the http action goes to public addresses only" in ex.error["message"]
    assert attempts(ex) == 1  # a refusal is not retried: it would be refused again
    assert origin.connections == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3:8080/", "the address 10.1.2.3 is private"),
        ("http://169.254.169.254/latest/meta-data/", "is a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "is a cloud metadata address"),
        ("http://[::127.0.0.1]/", "the address ::127.0.0.1 reaches 127.0.0.1, which is loopback"),
        ("http://[64:ff9b::7f00:1]/", "reaches 127.0.0.1, which is loopback"),
        ("http://[fe80::1]/", "is link-local"),
        ("http://224.0.0.1/", "is multicast"),
        ("http://240.0.0.1/", "is reserved"),
    ],
)
async def test_internal_addresses_are_refused_before_connecting(
    store: Store, url: str, reason: str
) -> None:
    async with harness(store) as h:
        await h.apply(fetch(url, timeout="1s"))
        ex = await h.run("fetch")
    assert ex.error is not None and ex.error["type"] == "http_refused", ex.error
    assert reason in ex.error["message"]


@pytest.mark.parametrize(
    "answer",
    [["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["::1"], ["::ffff:127.0.0.1"]],
)
async def test_a_name_that_resolves_inward_is_refused_when_it_is_resolved(
    store: Store, origin: Origin, answer: list[str]
) -> None:
    # a public-looking name whose DNS answer points inside (rebinding): one such address is
    # enough, or the connection could be steered to it
    async with harness(store, resolve=names({"status.example": answer})) as h:
        ex = await health_check(h, f"http://status.example:{origin.port}/healthz")
    assert ex.error is not None and ex.error["type"] == "http_refused", ex.error
    assert "is loopback" in ex.error["message"]
    assert origin.connections == 0


async def test_an_allowed_network_is_reached_on_the_checked_address_under_the_host_name(
    store: Store, origin: Origin
) -> None:
    resolve = names({"status.internal": ["127.0.0.1"]})
    async with harness(store, resolve=resolve, http_allowed_networks="127.0.0.0/8") as h:
        ex = await health_check(h, f"http://status.internal:{origin.port}/healthz?deep=1")
        refused = await health_check(h, f"http://[::1]:{origin.port}/healthz")
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert ex.outputs == {"healthy": True, "status": 200}
    [seen] = origin.requests
    assert seen["request"] == "GET /healthz?deep=1 HTTP/1.1"
    assert seen["host"] == f"status.internal:{origin.port}"
    # the allowed network is IPv4 loopback only
    assert refused.error is not None and refused.error["type"] == "http_refused"
    assert "the address ::1 is loopback" in refused.error["message"]


def test_the_http_action_allow_list_comes_from_its_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECFLOW_HTTP_ALLOWED_NETWORKS", "10.0.0.0/8, ::1/128")
    monkeypatch.delenv("EXECFLOW_CALLBACK_ALLOWED_NETWORKS", raising=False)
    settings = Settings.from_env()
    assert settings.http_allowed_networks == outbound.parse_networks(["10.0.0.0/8", "::1/128"])
    assert settings.callback_allowed_networks == ()
    monkeypatch.setenv("EXECFLOW_HTTP_ALLOWED_NETWORKS", "127.0.0.1/8")
    with pytest.raises(ValueError, match=r"^EXECFLOW_HTTP_ALLOWED_NETWORKS: allowed network"):
        Settings.from_env()


# -- no proxy, no redirect ---------------------------------------------------------------------


async def test_proxy_variables_do_not_carry_the_http_action(
    store: Store, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = Origin()
    await proxy.start()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
            monkeypatch.setenv(name.lower(), proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        async with harness(store, http_allowed_networks="127.0.0.1/32") as h:
            ex = await health_check(h, f"{origin.url}/healthz")
    finally:
        await proxy.stop()
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert (origin.connections, proxy.connections) == (1, 0)


async def test_a_redirect_is_the_answer_and_is_not_followed(store: Store, origin: Origin) -> None:
    origin.status, origin.headers = 302, {"Location": "http://169.254.169.254/latest/"}
    async with harness(store, http_allowed_networks="127.0.0.1/32") as h:
        await h.apply(fetch(f"{origin.url}/go"))
        failed = await h.run("fetch")
        await h.apply(fetch(f"{origin.url}/go", expected_status=302))
        answered = await h.run("fetch")
    assert failed.error is not None and failed.error["type"] == "http_status"
    assert answered.state == ExecutionState.COMPLETED, answered.error
    assert response_of(answered)["status"] == 302
    assert response_of(answered)["headers"]["location"] == "http://169.254.169.254/latest/"
    assert origin.connections == 2


async def test_the_urls_query_is_kept_and_params_are_added_to_it(
    store: Store, origin: Origin
) -> None:
    async with harness(store, http_allowed_networks="127.0.0.1/32") as h:
        await h.apply(fetch(f"{origin.url}/q?deep=1&a=x", params={"b": "2", "a": "y"}))
        ex = await h.run("fetch")
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert [seen["request"] for seen in origin.requests] == ["GET /q?deep=1&a=y&b=2 HTTP/1.1"]


async def test_https_is_pinned_to_the_checked_address_and_verified_for_the_host_name(
    store: Store, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _conn, name, _context: server_names.append(name)
    origin = Origin(tls=context)
    await origin.start()
    resolve = names({"callback.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        async with (
            outbound.new_client(ssl_context=trusting) as http,
            harness(store, http=http, resolve=resolve, http_allowed_networks="127.0.0.1/32") as h,
        ):
            await h.apply(fetch(f"https://callback.test:{origin.port}/x"))
            ex = await h.run("fetch")
            # the same address under a name the certificate does not cover
            await h.apply(fetch(f"https://other.test:{origin.port}/x"))
            mismatch = await h.run("fetch")
    finally:
        await origin.stop()
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert response_of(ex)["json"] == {"status": "ok"}
    assert origin.requests[0]["host"] == f"callback.test:{origin.port}"
    assert server_names == ["callback.test", "other.test"]
    assert mismatch.error is not None and mismatch.error["type"] == "http_error"
    assert "certificate" in mismatch.error["message"].lower()
    assert len(origin.requests) == 1


# -- the response limit bounds memory ----------------------------------------------------------

PIECE = b"x" * 65_536
LARGE = 200 * 1_048_576  # 200 MiB, produced lazily by the origin
ALLOWANCE = 4 * 1_048_576  # what a run may allocate at its peak, whatever the body's size


def lazily(total: int, piece: bytes = PIECE) -> Body:
    return lambda: (piece for _ in range(total // len(piece)))


async def peak_of(h: Harness, workflow: dict[str, Any]) -> tuple[ExecutionRecord, int]:
    """Run `workflow` and measure the largest memory the process allocated meanwhile."""
    await h.apply(workflow)
    gc.collect()
    tracemalloc.start()
    try:
        ex = await h.run(workflow["name"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ex, peak


async def test_a_large_body_costs_the_limit_not_its_size(store: Store, origin: Origin) -> None:
    origin.headers = {"Content-Type": "text/plain"}
    origin.body, origin.length = lazily(LARGE), LARGE
    async with harness(store, http_allowed_networks="127.0.0.1/32") as h:
        ex, peak = await peak_of(h, fetch(f"{origin.url}/big", response_limit=1024))
    assert ex.state == ExecutionState.COMPLETED, ex.error
    response = response_of(ex)
    assert (response["body"], response["truncated"]) == ("x" * 1024, True)
    assert peak < ALLOWANCE, f"{peak:,} bytes at the peak"
    assert origin.sent < LARGE // 10  # the rest was never read


@functools.cache
def gzipped(mebibytes: int, times: int) -> bytes:
    """`mebibytes` MiB of zero bytes, gzip-compressed `times` over (made once, in pieces)."""
    if times > 1:
        return zlib.compress(gzipped(mebibytes, times - 1), 9, wbits=zlib.MAX_WBITS | 16)
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    once = b"".join(compressor.compress(bytes(1_048_576)) for _ in range(mebibytes))
    return once + compressor.flush()


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip"])
async def test_a_compressed_body_is_inflated_no_further_than_the_limit(
    store: Store, origin: Origin, coding: str
) -> None:
    bomb = gzipped(64, coding.count("gzip"))  # 64 MiB of zeros in 65 KiB, or 300 bytes
    origin.headers = {"Content-Type": "text/plain", "Content-Encoding": coding}
    origin.body = lambda: iter([bomb])
    async with harness(store, http_allowed_networks="127.0.0.1/32") as h:
        ex, peak = await peak_of(h, fetch(f"{origin.url}/bomb", response_limit=4096))
    assert ex.state == ExecutionState.COMPLETED, ex.error
    response = response_of(ex)
    # (NUL is kept as U+FFFD: no database stores it)
    assert (response["body"], response["truncated"]) == ("\ufffd" * 4096, True)
    assert peak < ALLOWANCE, f"{peak:,} bytes at the peak"


async def test_a_body_within_the_limit_is_whole_and_not_marked(
    store: Store, origin: Origin
) -> None:
    async with harness(store, http_allowed_networks="127.0.0.1/32") as h:
        await h.apply(fetch(f"{origin.url}/", response_limit=len(OK_JSON)))
        ex = await h.run("fetch")
    assert response_of(ex)["json"] == {"status": "ok"}
    assert "truncated" not in response_of(ex)


# -- the same against a running server ---------------------------------------------------------


class ThreadedOrigin:
    """`Origin` on a loop of its own thread, for tests that drive a server synchronously."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.origin = Origin(host=host)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.origin.start(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.origin.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def scheduler_client(server: Server) -> httpx.Client:
    r = server.client.post("/api/v1/projects/default/tokens", json={"role": "scheduler"})
    assert r.status_code == 201, r.text
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=10
    )


def check_health(server: Server, client: httpx.Client, url: str) -> Any:
    r = client.post(
        "/api/v1/workflows/service-health-check/executions", json={"inputs": {"url": url}}
    )
    assert r.status_code == 202, r.text
    return server.wait_state(r.json()["id"], {"COMPLETED", "FAILED", "CANCELED"})


@pytest.mark.slow
def test_a_running_server_reaches_loopback_only_where_it_is_allowed(tmp_path: Path) -> None:
    # one server allowing 127.0.0.2 alone: the listener on 127.0.0.1 stands for every loopback
    # service it must not reach, the one on 127.0.0.2 for a network an operator allowed
    closed, allowed, proxy = (ThreadedOrigin(h) for h in ("127.0.0.1", "127.0.0.2", "127.0.0.1"))
    env = {"EXECFLOW_HTTP_ALLOWED_NETWORKS": "127.0.0.2/32"}
    # proxy variables in the server's environment must be ignored
    env |= {name: proxy.origin.url for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY")}
    server = None
    try:
        server = start_server(tmp_path / "data", free_port(), "--examples", env=env)
        scheduler = scheduler_client(server)
        port = closed.origin.port
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001", "localhost"):
            ex = check_health(server, scheduler, f"http://{host}:{port}/healthz")
            assert ex["state"] == "FAILED", ex
            assert ex["error"]["type"] == "http_refused", ex["error"]
        ex = check_health(server, scheduler, f"{allowed.origin.url}/healthz")
        scheduler.close()
        assert ex["state"] == "COMPLETED", ex
        assert ex["outputs"] == {"healthy": True, "status": 200}
        assert closed.origin.connections == 0
        assert (allowed.origin.connections, proxy.origin.connections) == (1, 0)
    finally:
        if server is not None:
            server.stop()
        for origin in (closed, allowed, proxy):
            origin.close()
