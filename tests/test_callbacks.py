"""Callbacks: the address rules, signatures, back-off, and deliveries to a real local server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest

from execflow.callbacks import (
    CallbackPolicy,
    CallbackRefused,
    DeliveryResult,
    check_url,
    deliver,
    give_up,
    new_client,
    next_attempt_at,
    next_delay,
    sign,
    verify,
)
from execflow.errors import InvalidInput
from execflow.outbound import Refused, Resolver, parse_networks, resolve_allowed

SECRET = b"project-secret"
BODY = b'{"id":"ex_1","name":"nightly","state":"COMPLETED"}'
PUBLIC_ONLY = "callbacks go to public addresses only"
LOCAL = CallbackPolicy.from_config(["127.0.0.0/8"])
ANYWHERE_PUBLIC = CallbackPolicy().outbound
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def names(table: dict[str, list[str]]) -> Resolver:
    """A resolver answering from `table`, standing in for DNS."""

    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} should not have been resolved")


# -- the static check at start ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/execflow?token=abc",
        "http://93.184.216.34:8080/",
        "https://[2606:4700::1111]/hook",
        "http://[::ffff:8.8.8.8]/",
        "https://bücher.example/hook",
        "https://hooks.example.com./",
    ],
)
def test_public_urls_are_accepted(url: str) -> None:
    check_url(url, CallbackPolicy())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/", "the callback scheme must be http or https, not 'ftp'"),
        ("file:///etc/passwd", "the callback scheme must be http or https, not 'file'"),
        ("hooks.example.com/end", "the callback must be an absolute http or https URL"),
        ("https://user:secret@hooks.example.com/", "the callback URL must not carry credentials"),
        ("http:///end", "the callback URL has no host"),
        ("http://hooks.example.com:0/", "the callback port 0 is out of range"),
        ("http://localhost:8080/", f"the host localhost is loopback; {PUBLIC_ONLY}"),
        ("http://LOCALHOST./", f"the host localhost. is loopback; {PUBLIC_ONLY}"),
        ("http://api.localhost/", f"the host api.localhost is loopback; {PUBLIC_ONLY}"),
    ],
)
def test_urls_refused_by_their_shape(url: str, reason: str) -> None:
    with pytest.raises(CallbackRefused) as caught:
        check_url(url, CallbackPolicy())
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("host", "address", "kind"),
    [
        ("127.0.0.1", "127.0.0.1", "loopback"),
        ("127.1", "127.0.0.1", "loopback"),
        ("2130706433", "127.0.0.1", "loopback"),
        ("0x7f.0.0.1", "127.0.0.1", "loopback"),
        ("[::1]", "::1", "loopback"),
        ("10.1.2.3", "10.1.2.3", "private"),
        ("172.16.0.1", "172.16.0.1", "private"),
        ("192.168.1.1", "192.168.1.1", "private"),
        ("[fc00::1]", "fc00::1", "private"),
        ("169.254.10.10", "169.254.10.10", "link-local"),
        ("[fe80::1]", "fe80::1", "link-local"),
        ("169.254.169.254", "169.254.169.254", "a cloud metadata address"),
        ("[fd00:ec2::254]", "fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "100.100.100.200", "a cloud metadata address"),
        ("224.0.0.1", "224.0.0.1", "multicast"),
        ("[ff02::1]", "ff02::1", "multicast"),
        ("0.0.0.0", "0.0.0.0", "unspecified"),
        ("[::]", "::", "unspecified"),
        ("240.0.0.1", "240.0.0.1", "reserved"),
        ("100.64.0.1", "100.64.0.1", "not public"),
    ],
)
def test_literal_addresses_outside_public_ranges_are_refused(
    host: str, address: str, kind: str
) -> None:
    with pytest.raises(CallbackRefused) as caught:
        check_url(f"http://{host}:8080/end", CallbackPolicy())
    assert str(caught.value) == f"the address {address} is {kind}; {PUBLIC_ONLY}"


@pytest.mark.parametrize(
    ("host", "reached", "kind"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "169.254.169.254", "a cloud metadata address"),
        ("64:ff9b::a00:1", "10.0.0.1", "private"),
        ("2002:7f00:1::", "127.0.0.1", "loopback"),
    ],
)
def test_ipv6_addresses_are_judged_by_the_ipv4_address_they_reach(
    host: str, reached: str, kind: str
) -> None:
    with pytest.raises(CallbackRefused) as caught:
        check_url(f"http://[{host}]/", CallbackPolicy())
    reason = f"the address {host} reaches {reached}, which is {kind}; {PUBLIC_ONLY}"
    assert str(caught.value) == reason


def test_a_refusal_is_invalid_input_about_the_callback() -> None:
    with pytest.raises(ValueError) as caught:
        check_url("http://10.0.0.1/", CallbackPolicy())
    refusal = caught.value
    assert isinstance(refusal, CallbackRefused)
    assert isinstance(refusal, InvalidInput)
    assert [d.as_dict() for d in refusal.details] == [
        {"pointer": "/callback", "reason": f"the address 10.0.0.1 is private; {PUBLIC_ONLY}"}
    ]


def test_allowed_networks_override_the_ranges_they_cover() -> None:
    for url in ("http://127.0.0.1:8080/", "http://[::ffff:127.0.0.1]/", "http://localhost:80/"):
        check_url(url, LOCAL)
    for url in ("http://10.0.0.1/", "http://[::1]/"):
        with pytest.raises(CallbackRefused):
            check_url(url, LOCAL)

    metadata = CallbackPolicy.from_config(["169.254.169.254/32"])
    check_url("http://169.254.169.254/latest", metadata)
    with pytest.raises(CallbackRefused, match=r"169\.254\.1\.1 is link-local"):
        check_url("http://169.254.1.1/", metadata)


# -- the policy ------------------------------------------------------------------------------


def test_policy_from_config_parses_networks() -> None:
    policy = CallbackPolicy.from_config("127.0.0.0/8, ::1/128", timeout=2.0, retry_for=60.0)
    assert [str(n) for n in policy.allowed_networks] == ["127.0.0.0/8", "::1/128"]
    assert (policy.timeout, policy.retry_for, policy.max_delay) == (2.0, 60.0, 3600.0)
    assert parse_networks(["10.0.0.0/8"]) == parse_networks("10.0.0.0/8")
    assert parse_networks("") == ()


@pytest.mark.parametrize("value", ["10.0.0.1/8", "nonsense", "", "10.0.0.0/33"])
def test_invalid_networks_are_named(value: str) -> None:
    with pytest.raises(ValueError, match=f"allowed network '{value}' is not valid: "):
        parse_networks([value])


@pytest.mark.parametrize(
    "settings",
    [{"timeout": 0.0}, {"retry_for": -1.0}, {"multiplier": 0.5}, {"max_delay": 1.0}],
)
def test_inconsistent_timing_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="callback"):
        CallbackPolicy.from_config((), **settings)


# -- resolving at send time (the outbound guard, with the callbacks' policy) ------------------


async def test_resolution_returns_every_address_once_in_order() -> None:
    resolve = names({"hooks.example": ["93.184.216.34", "2606:2800:220:1::", "93.184.216.34"]})
    addresses = await resolve_allowed("hooks.example", 443, ANYWHERE_PUBLIC, resolve=resolve)
    assert addresses == ["93.184.216.34", "2606:2800:220:1::"]


async def test_one_internal_address_among_public_ones_refuses_the_host() -> None:
    resolve = names({"hooks.example": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(Refused) as caught:
        await resolve_allowed("hooks.example", 443, ANYWHERE_PUBLIC, resolve=resolve)
    assert caught.value.reason == f"the address 10.0.0.7 is private; {PUBLIC_ONLY}"


async def test_literal_addresses_are_not_resolved() -> None:
    assert await resolve_allowed("127.1", 80, LOCAL.outbound, resolve=no_dns) == ["127.0.0.1"]


async def test_a_name_without_addresses_is_an_os_error() -> None:
    resolve = names({"empty.example": []})
    with pytest.raises(OSError, match=r"^empty\.example has no addresses$"):
        await resolve_allowed("empty.example", 80, ANYWHERE_PUBLIC, resolve=resolve)


async def test_the_system_resolver_is_checked_too() -> None:
    with pytest.raises(Refused, match="is loopback"):
        await resolve_allowed("localhost", 80, ANYWHERE_PUBLIC)
    loopback = CallbackPolicy.from_config(["127.0.0.0/8", "::1/128"])
    assert "127.0.0.1" in await resolve_allowed("localhost", 80, loopback.outbound)


# -- signatures and back-off -----------------------------------------------------------------


def test_signature_matches_a_known_hmac_sha256_vector() -> None:
    # RFC 4231, test case 2
    assert sign(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_signature_round_trip() -> None:
    signature = sign(SECRET, BODY)
    assert verify(SECRET, BODY, signature)
    assert not verify(SECRET, BODY + b" ", signature)
    assert not verify(b"another-secret", BODY, signature)
    assert not verify(SECRET, BODY, signature.removeprefix("sha256="))
    assert not verify(SECRET, BODY, "sha256=é")


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = CallbackPolicy()
    assert [next_delay(n, policy) for n in range(1, 8)] == [5, 10, 20, 40, 80, 160, 320]
    assert next_delay(11, policy) == 3600.0
    assert next_delay(100_000, policy) == 3600.0
    with pytest.raises(ValueError):
        next_delay(0, policy)


def test_retries_stop_when_the_period_is_over() -> None:
    policy = CallbackPolicy(retry_for=100.0, initial_delay=5.0, multiplier=2.0, max_delay=60.0)
    assert not give_up(T0, T0 + timedelta(seconds=99), policy)
    assert give_up(T0, T0 + timedelta(seconds=100), policy)
    assert next_attempt_at(1, T0, T0, policy) == T0 + timedelta(seconds=5)
    # the fourth back-off (40 s) would overshoot: the last attempt is at the end of the period
    assert next_attempt_at(4, T0, T0 + timedelta(seconds=80), policy) == T0 + timedelta(seconds=100)
    assert next_attempt_at(5, T0, T0 + timedelta(seconds=100), policy) is None


# -- deliveries to a real server -------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records requests and answers as told."""

    tls: ssl.SSLContext | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # read the request, never answer
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _open: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        # ending the connections lets each handler finish on its own; cancelling a handler makes
        # asyncio (3.11) report the cancellation as an error in a callback
        for writer in self._open.values():
            writer.transport.abort()
        await asyncio.gather(*list(self._open), return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        self.connections += 1
        try:
            await self._answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            del self._open[task]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.hang:
            await reader.read()  # until the client gives up and closes
            return
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Seen(method, target, headers, body))
        answer = [
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}",
            "Content-Length: 0",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        writer.write(("\r\n".join(answer) + "\r\n\r\n").encode())
        await writer.drain()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with new_client(LOCAL) as http:
        yield http


async def send(
    client: httpx.AsyncClient,
    url: str,
    policy: CallbackPolicy = LOCAL,
    resolve: Resolver = no_dns,
) -> DeliveryResult:
    return await deliver(
        client, url, BODY, event_id="evt_1", secret=SECRET, policy=policy, resolve=resolve
    )


async def test_delivers_signed_body_to_the_checked_address_under_the_host_name(
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    url = f"http://callback.test:{receiver.port}/hooks/end?source=execflow"
    result = await send(client, url, resolve=names({"callback.test": ["127.0.0.1"]}))

    assert result == DeliveryResult(True, 200, None, False, result.duration, "127.0.0.1")
    assert 0 < result.duration < 1
    [seen] = receiver.requests
    assert (seen.method, seen.target, seen.body) == ("POST", "/hooks/end?source=execflow", BODY)
    assert seen.headers["host"] == f"callback.test:{receiver.port}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "execflow"
    assert seen.headers["x-execflow-event-id"] == "evt_1"
    assert verify(SECRET, seen.body, seen.headers["x-execflow-signature"])


async def test_the_next_address_is_tried_when_one_refuses_the_connection(
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    # the receiver listens on 127.0.0.1 only, so 127.0.0.2 refuses
    resolve = names({"callback.test": ["127.0.0.2", "127.0.0.1"]})
    result = await send(client, f"http://callback.test:{receiver.port}/", resolve=resolve)
    assert (result.delivered, result.address) == (True, "127.0.0.1")
    assert len(receiver.requests) == 1


async def test_a_redirect_is_a_failure_and_not_followed(
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    elsewhere = f"http://127.0.0.1:{receiver.port}/elsewhere"
    receiver.status, receiver.headers = 302, {"Location": elsewhere}
    result = await send(client, f"http://127.0.0.1:{receiver.port}/end")

    assert (result.delivered, result.status, result.retryable) == (False, 302, False)
    assert result.error == f"answered 302, a redirect to {elsewhere} (not followed)"
    assert [seen.target for seen in receiver.requests] == ["/end"]


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (429, True), (404, False), (400, False), (410, False)],
)
async def test_error_answers_say_whether_to_retry(
    receiver: Receiver, client: httpx.AsyncClient, status: int, retryable: bool
) -> None:
    receiver.status = status
    result = await send(client, f"http://127.0.0.1:{receiver.port}/end")
    assert (result.delivered, result.status, result.retryable) == (False, status, retryable)
    assert result.error == f"answered {status}"


async def test_connection_refused_is_retryable(client: httpx.AsyncClient) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        result = await send(client, f"http://127.0.0.1:{port}/end")
    assert (result.delivered, result.status, result.retryable) == (False, None, True)
    assert result.error == "connection refused"


async def test_a_silent_receiver_times_out(receiver: Receiver, client: httpx.AsyncClient) -> None:
    receiver.hang = True
    policy = replace(LOCAL, timeout=0.1)
    result = await send(client, f"http://127.0.0.1:{receiver.port}/end", policy=policy)
    assert (result.delivered, result.status, result.error) == (False, None, "timed out")
    assert result.retryable


async def test_loopback_is_refused_without_connecting_unless_allowed(
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    refusal = f"refused: the address 127.0.0.1 is loopback; {PUBLIC_ONLY}"
    literal = await send(client, f"http://127.0.0.1:{receiver.port}/", policy=CallbackPolicy())
    # a public-looking name that resolves inward at send time (DNS rebinding)
    rebound = await send(
        client,
        f"http://callback.test:{receiver.port}/",
        policy=CallbackPolicy(),
        resolve=names({"callback.test": ["127.0.0.1"]}),
    )
    for result in (literal, rebound):
        assert (result.delivered, result.status, result.retryable) == (False, None, False)
        assert result.error == refusal
    assert receiver.connections == 0


async def test_a_url_refused_by_its_shape_is_not_retried(client: httpx.AsyncClient) -> None:
    result = await send(client, "https://user:pw@hooks.example/")
    assert result.error == "refused: the callback URL must not carry credentials"
    assert not result.retryable


async def test_an_unresolvable_host_is_retryable(client: httpx.AsyncClient) -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    result = await send(client, "https://nowhere.example/", resolve=nxdomain)
    assert result.error == "could not resolve nowhere.example: Name or service not known"
    assert result.retryable


async def test_the_client_keeps_no_cookies(receiver: Receiver, client: httpx.AsyncClient) -> None:
    receiver.headers = {"Set-Cookie": "session=abc; Path=/"}
    for _ in range(2):
        assert (await send(client, f"http://127.0.0.1:{receiver.port}/")).delivered
    assert "cookie" not in receiver.requests[1].headers
    assert not client.cookies


# -- https: the address is pinned, the certificate is still checked against the host name -----


@dataclass
class TlsReceiver:
    receiver: Receiver
    server_names: list[str | None]
    client: httpx.AsyncClient


@pytest.fixture
async def tls(certificate: tuple[Path, Path]) -> AsyncIterator[TlsReceiver]:
    cert, key = certificate
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _conn, name, _context: server_names.append(name)
    receiver = Receiver(tls=context)
    await receiver.start()
    trusting = ssl.create_default_context(cafile=str(cert))
    async with new_client(LOCAL, ssl_context=trusting) as http:
        yield TlsReceiver(receiver, server_names, http)
    await receiver.stop()


async def test_https_to_a_pinned_address_sends_the_host_name_for_sni(tls: TlsReceiver) -> None:
    port = tls.receiver.port
    resolve = names({"callback.test": ["127.0.0.1"]})
    result = await send(tls.client, f"https://callback.test:{port}/end", resolve=resolve)

    assert (result.delivered, result.status, result.address) == (True, 200, "127.0.0.1")
    assert tls.server_names == ["callback.test"]
    [seen] = tls.receiver.requests
    assert seen.headers["host"] == f"callback.test:{port}"


async def test_https_certificate_must_match_the_host_name(tls: TlsReceiver) -> None:
    # same server and address, but the URL names a host its certificate does not cover
    resolve = names({"other.test": ["127.0.0.1"]})
    result = await send(tls.client, f"https://other.test:{tls.receiver.port}/", resolve=resolve)

    assert (result.delivered, result.status, result.retryable) == (False, None, True)
    assert result.error is not None
    assert result.error.startswith("certificate not accepted: ")
    assert "other.test" in result.error
    assert tls.server_names == ["other.test"]
    assert tls.receiver.requests == []
