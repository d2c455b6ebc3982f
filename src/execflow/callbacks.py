"""Execution-end callbacks: where they may go, how a delivery is signed, sent and retried.

The engine owns the outbox (what is owed to whom, and when to try again); this module holds the
rules it applies and performs one delivery at a time. Nothing here touches the store.

A callback URL is checked twice. `check_url` refuses at start whatever the URL alone gives away (a
scheme, credentials, a literal address or `localhost`). `deliver` resolves the host again at send
time, refuses if any of its addresses is not public, and connects to an address it checked, so a
DNS answer that changes between the check and the connection (rebinding) cannot turn a delivery
towards an internal service. The Host header and, for https, the TLS server name and certificate
check stay on the URL's host name.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TypeAlias

import httpx

from execflow.errors import Detail, InvalidInput

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]
"""Host name and port to IP address strings; `system_resolve` unless a test injects one."""

EVENT_ID_HEADER = "X-Execflow-Event-Id"
SIGNATURE_HEADER = "X-Execflow-Signature"

# Instance metadata services hand credentials to any process on the host that asks; they are
# named on their own so a refusal says what was at stake (AWS/GCP/Azure, AWS over IPv6, Alibaba).
METADATA_ADDRESSES: frozenset[Address] = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# On an IPv6-only host behind DNS64, IPv4-only names resolve into this prefix and the gateway
# connects to the embedded IPv4 address, so that address is the one to judge.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACKS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_PUBLIC_ONLY = "callbacks go to public addresses only"
_NO_COOKIES = DefaultCookiePolicy(allowed_domains=[])


class CallbackRefused(InvalidInput, ValueError):
    """The callback URL is not allowed."""

    code = "callback_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason, [Detail("/callback", reason)])


def parse_networks(values: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse allowed networks from strings (or one comma-separated string, as in a variable)."""
    items = values.split(",") if isinstance(values, str) else list(values)
    networks: list[Network] = []
    for item in items:
        text = item.strip()
        if not text and isinstance(values, str):
            continue
        try:
            # strict: "10.0.0.1/8" is more likely a typo than a wish to allow all of 10/8
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise ValueError(f"allowed callback network {item!r} is not valid: {exc}") from exc
    return tuple(networks)


@dataclass(frozen=True)
class CallbackPolicy:
    """Which non-public networks callbacks may reach, and how deliveries are timed (seconds)."""

    allowed_networks: tuple[Network, ...] = ()
    timeout: float = 10.0  # one whole delivery: resolving, connecting, sending, the answer's head
    retry_for: float = 86400.0  # counted from the first attempt
    initial_delay: float = 5.0
    multiplier: float = 2.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("callback timeout must be positive")
        if self.retry_for < 0 or self.initial_delay < 0:
            raise ValueError("callback retry_for and initial_delay must not be negative")
        if self.multiplier < 1:
            raise ValueError("callback retry multiplier must be at least 1")
        if self.max_delay < self.initial_delay:
            raise ValueError("callback max_delay must be at least initial_delay")

    @classmethod
    def from_config(
        cls, allowed_networks: str | Iterable[str] = (), **settings: float
    ) -> CallbackPolicy:
        """A policy from configuration values, networks given as strings."""
        return replace(cls(), allowed_networks=parse_networks(allowed_networks), **settings)

    def allows(self, address: Address) -> bool:
        """Whether configuration explicitly allows `address` (whatever range it is in)."""
        return any(address in network for network in self.allowed_networks)


def check_url(url: str, policy: CallbackPolicy) -> None:
    """Refuse a callback URL that can already be known to be unacceptable, before resolving it."""
    _checked(url, policy)


def _checked(url: str, policy: CallbackPolicy) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CallbackRefused(f"the callback is not a valid URL: {exc}") from exc
    if not parsed.scheme:
        raise CallbackRefused("the callback must be an absolute http or https URL")
    if parsed.scheme not in ("http", "https"):
        raise CallbackRefused(f"the callback scheme must be http or https, not {parsed.scheme!r}")
    if parsed.userinfo:
        # they would be stored with the execution and shown to everyone who can read it; the
        # signature is how a receiver authenticates deliveries
        raise CallbackRefused("the callback URL must not carry credentials")
    host = _host(parsed)
    if not host:
        raise CallbackRefused("the callback URL has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise CallbackRefused(f"the callback port {parsed.port} is out of range")
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        # resolvers answer these with loopback without asking DNS (RFC 6761)
        if not any(policy.allows(a) for a in _LOOPBACKS):
            raise CallbackRefused(f"the host {host} is loopback; {_PUBLIC_ONLY}")
    elif (literal := _literal(host)) is not None:
        _check_address(literal, policy)
    return parsed


def _host(url: httpx.URL) -> str:
    # the ASCII (IDNA) form is what resolvers, TLS and the Host header use
    return url.raw_host.decode("ascii")


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # "127.1", "0x7f.0.0.1" and "2130706433" are not dotted quads, but the system resolver
        # reads them as IPv4 addresses all the same
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _check_address(address: Address, policy: CallbackPolicy) -> None:
    if policy.allows(address):
        return
    for target in _reached(address):
        if policy.allows(target):
            continue
        kind = _kind(target)
        if kind is None:
            continue
        if target == address:
            raise CallbackRefused(f"the address {address} is {kind}; {_PUBLIC_ONLY}")
        raise CallbackRefused(
            f"the address {_shown(address)} reaches {target}, which is {kind}; {_PUBLIC_ONLY}"
        )


def _shown(address: Address) -> str:
    # Python before 3.13 prints ::ffff:127.0.0.1 as ::ffff:7f00:1, which hides the point
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _reached(address: Address) -> list[Address]:
    """The addresses a connection to `address` may end up at."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address, address.sixtofour]
    return [address]


def _kind(address: Address) -> str | None:
    """Why `address` is not public, or None if it is."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:  # before is_private, which also covers 240.0.0.0/4
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not public"
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    """Resolve with the event loop's getaddrinfo (in its executor, so the loop never blocks)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def resolve_public(
    host: str, port: int, policy: CallbackPolicy, *, resolve: Resolver | None = None
) -> list[str]:
    """The addresses of `host`, in the resolver's order; refused if any of them is not allowed.

    One bad address is enough: a name that answers with a public and an internal address could
    otherwise be steered to the internal one. Resolution failures raise `OSError`.
    """
    literal = _literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        answer = await (resolve or system_resolve)(host, port)
        addresses = list(dict.fromkeys(answer))
    if not addresses:
        raise OSError(f"{host} has no addresses")
    for address in addresses:
        _check_address(ipaddress.ip_address(address), policy)
    return addresses


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Execflow-Signature` value: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str) -> bool:
    """Whether `signature` signs `body`, compared in constant time."""
    expected = sign(secret, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def next_delay(attempt: int, policy: CallbackPolicy) -> float:
    """Seconds to wait after failed attempt number `attempt` (the first is 1) before the next."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    try:
        delay = policy.initial_delay * policy.multiplier ** (attempt - 1)
    except OverflowError:
        return policy.max_delay
    return min(delay, policy.max_delay)


def give_up(first_attempt: datetime, now: datetime, policy: CallbackPolicy) -> bool:
    """Whether the retry period that began with the first attempt is over."""
    return now - first_attempt >= timedelta(seconds=policy.retry_for)


def next_attempt_at(
    attempt: int, first_attempt: datetime, now: datetime, policy: CallbackPolicy
) -> datetime | None:
    """When to try again after failed (retryable) attempt `attempt`, or None to give up.

    A back-off that would overshoot the retry period is cut short, so the last attempt happens
    when the period ends rather than up to `max_delay` before it.
    """
    if give_up(first_attempt, now, policy):
        return None
    deadline = first_attempt + timedelta(seconds=policy.retry_for)
    return min(now + timedelta(seconds=next_delay(attempt, policy)), deadline)


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery attempt; `retryable` says whether another may succeed."""

    delivered: bool
    status: int | None
    error: str | None
    retryable: bool
    duration: float  # seconds
    address: str | None = None  # the IP address the request went to, if it was sent


def new_client(
    policy: CallbackPolicy, *, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """An HTTP client for `deliver` alone; `ssl_context` replaces the default trust store.

    It keeps no cookies (receivers would otherwise grow its jar without bound and see each
    other's), ignores proxy variables (a proxy would connect on its own, and for https through a
    proxy httpx checks the certificate against the pinned IP rather than the host name) and does
    not pool connections with other traffic: a pooled connection is keyed by IP address and port
    only, so it could carry a request for a host name its certificate was never checked against.
    """
    return httpx.AsyncClient(
        # an explicit transport is what keeps httpx from mounting proxies from the environment;
        # SSL_CERT_FILE and SSL_CERT_DIR are still honoured
        transport=httpx.AsyncHTTPTransport(verify=ssl_context or True),
        cookies=CookieJar(policy=_NO_COOKIES),
        timeout=policy.timeout,
        follow_redirects=False,
    )


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    event_id: str,
    secret: bytes,
    policy: CallbackPolicy,
    resolve: Resolver | None = None,
) -> DeliveryResult:
    """POST `body` to `url` once, to an address checked just before connecting.

    Never raises for the receiver's sake: refusals, network errors and answers are all results.
    Redirects are not followed (a redirect could lead anywhere); a 3xx is a failed delivery.
    """
    started = time.perf_counter()
    result = await _deliver(client, url, body, event_id, secret, policy, resolve)
    return replace(result, duration=time.perf_counter() - started)


async def _deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    event_id: str,
    secret: bytes,
    policy: CallbackPolicy,
    resolve: Resolver | None,
) -> DeliveryResult:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "execflow",
        EVENT_ID_HEADER: event_id,
        SIGNATURE_HEADER: sign(secret, body),
        # a connection verified for one host name is never reused for another at the same IP
        "Connection": "close",
    }
    try:
        parsed = _checked(url, policy)
        host = _host(parsed)
        headers["Host"] = parsed.netloc.decode("ascii")
        async with asyncio.timeout(policy.timeout):
            try:
                addresses = await resolve_public(host, _port(parsed), policy, resolve=resolve)
            except OSError as exc:
                return _failed(f"could not resolve {host}: {exc.strerror or exc}")
            return await _post(client, parsed, host, addresses, headers, body, policy)
    except CallbackRefused as exc:
        return _failed(f"refused: {exc.reason}", retryable=False)
    except (TimeoutError, httpx.TimeoutException):
        return _failed("timed out")
    except httpx.HTTPError as exc:
        return _failed(_describe(exc))


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def _post(
    client: httpx.AsyncClient,
    url: httpx.URL,
    host: str,
    addresses: list[str],
    headers: dict[str, str],
    body: bytes,
    policy: CallbackPolicy,
) -> DeliveryResult:
    # httpcore hands "sni_hostname" to TLS as server_hostname, which sets SNI and is also the
    # name the certificate is checked against, so pinning the IP keeps https verification intact
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    failure: httpx.ConnectError | None = None
    for address in addresses:
        try:
            async with client.stream(
                "POST",
                url.copy_with(host=address),
                content=body,
                headers=headers,
                extensions=extensions,
                follow_redirects=False,
                timeout=policy.timeout,
            ) as response:
                # the body is never read: only the status matters, and it could be any size
                return _judged(response, address)
        except httpx.ConnectError as exc:
            failure = exc  # nothing was sent, so the next address may be tried safely
    assert failure is not None
    raise failure


def _judged(response: httpx.Response, address: str) -> DeliveryResult:
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult(True, status, None, False, 0.0, address)
    if 300 <= status < 400:
        # never followed, so the same answer would come back: the URL needs fixing
        location = response.headers.get("location", "")[:200]
        error = f"answered {status}, a redirect to {location or 'nowhere'} (not followed)"
        return DeliveryResult(False, status, error, False, 0.0, address)
    retryable = status >= 500 or status in (408, 429)
    return DeliveryResult(False, status, f"answered {status}", retryable, 0.0, address)


def _failed(error: str, *, retryable: bool = True) -> DeliveryResult:
    return DeliveryResult(False, None, error, retryable, 0.0)


def _describe(exc: httpx.HTTPError) -> str:
    """A short cause for a transport error, found down the chain httpx and httpcore build."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate not accepted: {cause.verify_message}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return f"connection failed: {cause.strerror.lower()}"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
