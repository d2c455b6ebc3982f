"""`http`: make one HTTP request from the engine's event loop; the response is the output."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl, field_validator, model_validator

from execflow.actions.base import Action, Args, Placement, Resources
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
    request: dict[str, Any] = {"headers": args.headers, "params": args.params}
    if args.json_body is not None:
        request["json"] = args.json_body
    elif args.body is not None:
        request["content"] = args.body.encode()
    try:
        response = await resources.http.request(
            args.method, str(args.url), timeout=args.timeout, follow_redirects=False, **request
        )
    except httpx.TimeoutException as exc:
        raise TaskFailure(f"{args.method} {args.url} timed out", "http_timeout") from exc
    except httpx.HTTPError as exc:
        raise TaskFailure(f"{args.method} {args.url} failed: {exc}", "http_error") from exc
    output = _output(response, args.response_limit)
    ok = (
        response.status_code in args.expected_status
        if args.expected_status is not None
        else 200 <= response.status_code < 300
    )
    if not ok:
        raise TaskFailure(
            f"{args.method} {args.url} answered {response.status_code}",
            "http_status",
            retryable=response.status_code >= 500 or response.status_code in (408, 429),
            data={"response": output},
        )
    return output


def _output(response: httpx.Response, limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers)}
    content = response.content[:limit]
    if "json" in response.headers.get("content-type", ""):
        try:
            out["json"] = json.loads(content)
            return out
        except ValueError:
            pass
    out["body"] = content.decode(response.encoding or "utf-8", errors="replace")
    return out


ACTION = Action("http", HttpArgs, Placement.INLINE, "Make an HTTP request", inline=run)
