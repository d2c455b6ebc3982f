"""Where the server's own HTTP requests may go, and how they get there.

One guard for everything the server fetches: the `http` action and callbacks. A destination is
checked twice. `check_host` refuses what the host alone gives away: `localhost` and a literal
address in any spelling a resolver reads as one (`127.1`, `0x7f000001`, `2130706433`,
`::ffff:127.0.0.1`). `send` resolves the host again, refuses if any of its addresses is not
allowed, and connects to an address it checked, so a DNS answer that changes between a check
and the connection (rebinding) cannot turn a request towards an internal service. The Host
header and, for https, the TLS server name and certificate check stay on the URL's host name.

Nothing here follows a redirect: a caller that wanted to would have to check each hop again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeAlias

import httpx

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]
"""Host name and port to IP address strings; `system_resolve` unless a test injects one."""

# Instance metadata services hand credentials to any process on the host that asks; they are
# named on their own so a refusal says what was at stake (AWS/GCP/Azure, AWS over IPv6, Alibaba).
METADATA_ADDRESSES: frozenset[Address] = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# On an IPv6-only host behind DNS64, IPv4-only names resolve into this prefix and the gateway
# connects to the embedded IPv4 address, so that address is the one to judge.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACKS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_NO_COOKIES = DefaultCookiePolicy(allowed_domains=[])
# the content codings `bodies.read_limited` decodes within its limit
ACCEPT_ENCODING = "gzip, deflate"


class Refused(ValueError):
    """The destination is not allowed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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
            raise ValueError(f"allowed network {item!r} is not valid: {exc}") from exc
    return tuple(networks)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which non-public networks one kind of request may reach anyway; `rule` ends a refusal."""

    allowed_networks: tuple[Network, ...] = ()
    rule: str = "requests go to public addresses only"

    def allows(self, address: Address) -> bool:
        """Whether configuration explicitly allows `address` (whatever range it is in)."""
        return any(address in network for network in self.allowed_networks)


def host_of(url: httpx.URL) -> str:
    """The host as resolvers, TLS and the Host header see it (the ASCII, IDNA form)."""
    return url.raw_host.decode("ascii")


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def check_host(host: str, policy: OutboundPolicy) -> None:
    """Refuse a host that is already known to be unacceptable, before resolving it."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        # resolvers answer these with loopback without asking DNS (RFC 6761)
        if not any(policy.allows(a) for a in _LOOPBACKS):
            raise Refused(f"the host {host} is loopback; {policy.rule}")
    elif (address := literal(host)) is not None:
        check_address(address, policy)


def literal(host: str) -> Address | None:
    """The address `host` spells, if it is one in any form the system resolver accepts."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        # "127.1", "0x7f.0.0.1", "0177.0.0.1" and "2130706433" are not dotted quads, but the
        # system resolver reads them as IPv4 addresses all the same
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def check_address(address: Address, policy: OutboundPolicy) -> None:
    """Refuse `address` unless it, and every address a connection to it reaches, is public
    or allowed."""
    if policy.allows(address):
        return
    for target in _reached(address):
        if policy.allows(target):
            continue
        kind = _kind(target)
        if kind is None:
            continue
        if target == address:
            raise Refused(f"the address {address} is {kind}; {policy.rule}")
        raise Refused(
            f"the address {_shown(address)} reaches {target}, which is {kind}; {policy.rule}"
        )


def _shown(address: Address) -> str:
    # Python before 3.13 prints ::ffff:127.0.0.1 as ::ffff:7f00:1, which hides the point
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    if isinstance(address, ipaddress.IPv6Address) and _compatible(address):
        return f"::{ipaddress.IPv4Address(int(address))}"
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
    if _compatible(address):
        # IPv4-compatible (::a.b.c.d, deprecated): some stacks still route it to a.b.c.d
        return [ipaddress.IPv4Address(int(address)), address]
    return [address]


def _compatible(address: ipaddress.IPv6Address) -> bool:
    return int(address) >> 32 == 0 and int(address) > 1  # not :: nor ::1


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


async def resolve_allowed(
    host: str, port: int, policy: OutboundPolicy, *, resolve: Resolver | None = None
) -> list[str]:
    """The addresses of `host`, in the resolver's order; refused if any of them is not allowed.

    One bad address is enough: a name that answers with a public and an internal address could
    otherwise be steered to the internal one. Resolution failures raise `OSError`.
    """
    address = literal(host)
    if address is not None:
        addresses = [str(address)]
    else:
        answer = await (resolve or system_resolve)(host, port)
        addresses = list(dict.fromkeys(answer))
    if not addresses:
        raise OSError(f"{host} has no addresses")
    for each in addresses:
        check_address(ipaddress.ip_address(each), policy)
    return addresses


def new_client(
    *, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """An HTTP client for `send`; `ssl_context` replaces the default trust store.

    It keeps no cookies (servers would otherwise grow its jar without bound and see each
    other's), ignores proxy variables (a proxy would resolve and connect on its own, and for
    https through a proxy httpx checks the certificate against the pinned IP rather than the
    host name) and follows no redirect.
    """
    return httpx.AsyncClient(
        # an explicit transport is what keeps httpx from mounting proxies from the environment;
        # SSL_CERT_FILE and SSL_CERT_DIR are still honoured
        transport=httpx.AsyncHTTPTransport(verify=ssl_context or True),
        trust_env=False,
        cookies=CookieJar(policy=_NO_COOKIES),
        timeout=timeout,
        follow_redirects=False,
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


@dataclass(frozen=True)
class Sent:
    """A response whose body is still to be read, and the address it came from."""

    response: httpx.Response
    address: str


@asynccontextmanager
async def send(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    policy: OutboundPolicy,
    *,
    timeout: float,
    resolve: Resolver | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    content: bytes | None = None,
    json: Any = None,
) -> AsyncIterator[Sent]:
    """Send one request to an allowed address of `url`'s host; yields the response unread and
    closes it on exit (a body not read by then is never read).

    Raises `Refused`, `OSError` when the host does not resolve, `TimeoutError` when resolving
    takes longer than `timeout`, and httpx's errors. The addresses are tried in the resolver's
    order while a connection is refused, since nothing was sent yet.
    """
    if url.scheme not in ("http", "https"):
        raise Refused(f"the scheme must be http or https, not {url.scheme!r}")
    host = host_of(url)
    check_host(host, policy)
    async with asyncio.timeout(timeout):
        addresses = await resolve_allowed(host, port_of(url), policy, resolve=resolve)
    sent_headers = httpx.Headers(headers or {})
    sent_headers.setdefault("Host", url.netloc.decode("ascii"))
    # the client pools connections by IP address and port only, so a pooled connection could
    # carry a request for a host name its certificate was never checked against
    sent_headers["Connection"] = "close"
    # httpcore hands "sni_hostname" to TLS as server_hostname, which sets SNI and is also the
    # name the certificate is checked against, so pinning the IP keeps https verification intact
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    if params:
        # merged into the URL's own query: httpx's `params` would replace it
        url = url.copy_merge_params(params)
    failure: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request(
            method,
            url.copy_with(host=address),
            headers=sent_headers,
            content=content,
            json=json,
            extensions=extensions,
            timeout=timeout,
        )
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError as exc:
            failure = exc
            continue
        try:
            yield Sent(response, address)
        finally:
            await response.aclose()
        return
    assert failure is not None
    raise failure
