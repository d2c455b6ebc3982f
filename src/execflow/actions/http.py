"""`http`: make one HTTP request from the engine's event loop; the response is the output.

The request goes through the outbound guard (`outbound.send`): public addresses only unless
`EXECFLOW_HTTP_ALLOWED_NETWORKS` allows a network, the connection pinned to a checked address,
no proxy, no redirect followed (a 3xx is the answer). The body is read up to `response_limit`
bytes and no further; an output cut there says `truncated: true`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl, field_validator, model_validator

from execflow import outbound
from execflow.actions.base import Action, Args, Placement, Resources
from execflow.bodies import read_limited
from execflow.durations import parse_duration
from execflow.errors import TaskFailure

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpArgs(Args):
    method: Method = "GET"
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    expected_status: list[int] | None = None
    timeout: float = 30.0
    response_limit: int = Field(default=1_048_576, ge=0, le=16 * 1_048_576)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("expected_status", mode="before")
    @classmethod
    def _statuses(cls, value: object) -> object:
        return [value] if isinstance(value, int) else value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _one_body(self) -> HttpArgs:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give at most one of 'json' or 'body'")
        return self


async def run(args: HttpArgs, resources: Resources) -> Any:
    url = httpx.URL(str(args.url))
    body = args.body.encode() if args.body is not None else None
    what = f"{args.method} {args.url}"
    try:
        async with outbound.send(
            resources.http,
            args.method,
            url,
            resources.outbound,
            timeout=args.timeout,
            resolve=resources.resolve,
            headers=args.headers,
            params=args.params,
            content=body,
            json=args.json_body,
        ) as sent:
            response = sent.response
            content, truncated = await read_limited(response, args.response_limit)
    except outbound.Refused as exc:
        raise TaskFailure(f"{what} refused: {exc.reason}", "http_refused", retryable=False) from exc
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise TaskFailure(f"{what} timed out", "http_timeout") from exc
    except OSError as exc:  # from resolving the host name
        reason = f"could not resolve {outbound.host_of(url)}: {exc.strerror or exc}"
        raise TaskFailure(f"{what} failed: {reason}", "http_error") from exc
    except httpx.HTTPError as exc:
        raise TaskFailure(f"{what} failed: {exc}", "http_error") from exc
    output = _output(response, content, truncated)
    ok = (
        response.status_code in args.expected_status
        if args.expected_status is not None
        else 200 <= response.status_code < 300
    )
    if not ok:
        raise TaskFailure(
            f"{what} answered {response.status_code}",
            "http_status",
            retryable=response.status_code >= 500 or response.status_code in (408, 429),
            data={"response": output},
        )
    return output


def _output(response: httpx.Response, content: bytes, truncated: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers)}
    if truncated:
        out["truncated"] = True  # the body is its first `response_limit` bytes
    if "json" in response.headers.get("content-type", ""):
        try:
            out["json"] = json.loads(content)
            return out
        except ValueError:
            pass
    out["body"] = content.decode(response.encoding or "utf-8", errors="replace")
    return out


RULE = "the http action goes to public addresses only"


def policy(allowed_networks: tuple[outbound.Network, ...] = ()) -> outbound.OutboundPolicy:
    """Where `http` tasks may go: public addresses, and the networks configuration allows."""
    return outbound.OutboundPolicy(allowed_networks, RULE)


ACTION = Action("http", HttpArgs, Placement.INLINE, "Make an HTTP request", inline=run)
