"""Execution-end callbacks: where they may go, how a delivery is signed, sent and retried.

The engine owns the outbox (what is owed to whom, and when to try again); this module holds the
rules it applies and performs one delivery at a time. Nothing here touches the store.

A callback URL is checked twice, by the outbound guard every request of the server goes
through (`outbound.py`). `check_url` refuses at start whatever the URL alone gives away (a
scheme, credentials, a literal address or `localhost`). `deliver` resolves the host again at
send time, refuses if any of its addresses is not public, and connects to an address it
checked (`outbound.send`), so DNS rebinding cannot turn a delivery towards an internal service.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import httpx

from execflow import outbound
from execflow.errors import Detail, InvalidInput
from execflow.outbound import Network, OutboundPolicy, Refused, Resolver

EVENT_ID_HEADER = "X-Execflow-Event-Id"
SIGNATURE_HEADER = "X-Execflow-Signature"

_PUBLIC_ONLY = "callbacks go to public addresses only"


class CallbackRefused(InvalidInput, Refused):
    """The callback URL is not allowed."""

    code = "callback_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason, [Detail("/callback", reason)])


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
        networks = outbound.parse_networks(allowed_networks)
        return replace(cls(), allowed_networks=networks, **settings)

    @property
    def outbound(self) -> OutboundPolicy:
        """Where deliveries may go, for the outbound guard."""
        return OutboundPolicy(self.allowed_networks, _PUBLIC_ONLY)


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
    if not outbound.host_of(parsed):
        raise CallbackRefused("the callback URL has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise CallbackRefused(f"the callback port {parsed.port} is out of range")
    try:
        outbound.check_host(outbound.host_of(parsed), policy.outbound)
    except Refused as exc:
        raise CallbackRefused(exc.reason) from exc
    return parsed


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
    """An HTTP client for `deliver` alone (`outbound.new_client`: no cookies, no proxies from
    the environment, no redirects); `ssl_context` replaces the default trust store."""
    return outbound.new_client(timeout=policy.timeout, ssl_context=ssl_context)


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
    }
    try:
        parsed = _checked(url, policy)
        host = outbound.host_of(parsed)
        async with asyncio.timeout(policy.timeout):
            try:
                async with outbound.send(
                    client,
                    "POST",
                    parsed,
                    policy.outbound,
                    timeout=policy.timeout,
                    resolve=resolve,
                    headers=headers,
                    content=body,
                ) as sent:
                    # the body is never read: only the status matters, and it could be any size
                    return _judged(sent.response, sent.address)
            except TimeoutError:
                raise
            except OSError as exc:  # the host name did not resolve
                return _failed(f"could not resolve {host}: {exc.strerror or exc}")
    except Refused as exc:
        return _failed(f"refused: {exc.reason}", retryable=False)
    except (TimeoutError, httpx.TimeoutException):
        return _failed("timed out")
    except httpx.HTTPError as exc:
        return _failed(_describe(exc))


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
