"""A small HTTP client of the native API, used by the CLI.

It is built on `urllib.request` rather than httpx: a command imports it in a few
milliseconds, where httpx and its CA bundle took most of a command's time (bench/README.md,
CLI). Like httpx's defaults, it honours the `*_PROXY` variables, verifies certificates (the
system's, or `SSL_CERT_FILE`) and follows no redirect: a redirect is an error, so the token
is never sent on to another address."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.client import HTTPException, HTTPMessage, HTTPResponse
from json import dumps, loads
from typing import IO, Any

from execflow import __version__
from execflow.errors import ExecflowError


class ApiError(ExecflowError):
    """The server refused the request."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = str(error.get("id", "http_error"))
        self.problems: list[dict[str, str]] = list(error.get("details") or [])
        super().__init__(str(error.get("description") or f"HTTP {status}"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Leaves a redirect unfollowed, so that it ends as an HTTPError like any other status."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> None:
        return None


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.base_url = url.rstrip("/")
        self._timeout = timeout
        self._headers = {"User-Agent": f"execflow/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._opener = urllib.request.build_opener(_NoRedirect)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request and return its JSON answer (None for an empty one); ApiError if
        the server refuses it, ExecflowError if it cannot be reached."""
        sent = dict(headers or {})
        body = content.encode() if isinstance(content, str) else content
        if json is not None:
            body = dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            sent.setdefault("Content-Type", "application/json")
        with self._exchange(method, path, params, body, sent, self._timeout) as response:
            data = response.read()
        return loads(data) if data else None

    @contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> Iterator[HTTPResponse]:
        """The response to one request; what fails while it is sent or read is raised as
        ApiError (a status of 300 or more) or ExecflowError (no answer)."""
        # urllib would also open file:, ftp: and data: URLs
        if urllib.parse.urlsplit(self.base_url).scheme.lower() not in ("http", "https"):
            raise ExecflowError(f"cannot reach {self.base_url}: not an http(s) URL")
        url = self.base_url + urllib.parse.quote(path, safe="/")
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            request = urllib.request.Request(url, body, {**self._headers, **headers}, method=method)
        except ValueError as exc:  # no host
            raise ExecflowError(f"cannot reach {self.base_url}: {exc}") from exc
        try:
            with self._opener.open(request, timeout=timeout) as response:
                yield response
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError(exc.code, _error_body(exc.read())) from None
        except (OSError, HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ExecflowError(f"cannot reach {self.base_url}: {reason}") from exc

    def apply(self, name: str, text: str, yaml: bool) -> Any:
        ctype = "application/yaml" if yaml else "application/json"
        return self.request(
            "PUT", f"/api/v1/workflows/{name}", content=text, headers={"Content-Type": ctype}
        )

    def workflow(self, name: str) -> Any:
        return self.request("GET", f"/api/v1/workflows/{name}")

    def start(self, workflow: str, body: dict[str, Any]) -> Any:
        return self.request("POST", f"/api/v1/workflows/{workflow}/executions", json=body)

    def execution(self, execution_id: str) -> Any:
        return self.request("GET", f"/api/v1/executions/{execution_id}")

    def executions(self, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", "/api/v1/executions", params=query)

    def cancel(self, execution_id: str, force: bool = False, grace: float | None = None) -> Any:
        params: dict[str, Any] = {"force": "true"} if force else {}
        if grace is not None:
            params["grace"] = grace
        return self.request("POST", f"/api/v1/executions/{execution_id}/cancel", params=params)

    def rerun(self, execution_id: str, from_task: str, inputs: dict[str, Any]) -> Any:
        body: dict[str, Any] = {"from_task": from_task}
        if inputs:
            body["inputs"] = inputs
        return self.request("POST", f"/api/v1/executions/{execution_id}/rerun", json=body)

    def control(self, execution_id: str, verb: str) -> Any:
        """suspend, resume or retry"""
        return self.request("POST", f"/api/v1/executions/{execution_id}/{verb}")

    def signal(self, execution_id: str, name: str, payload: Any) -> Any:
        path = f"/api/v1/executions/{execution_id}/signals/{name}"
        return self.request("POST", path, json=payload)

    def follow(self, execution_id: str, level: str | None = None) -> Iterator[Any]:
        """The audit-log entries of an execution as they come (Server-Sent Events), until
        it has ended."""
        params = {"level": level} if level else None
        path = f"/api/v1/executions/{execution_id}/events"
        with self._exchange("GET", path, params, None, {}, None) as response:
            kind = ""
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:") and kind != "end":
                    yield loads(line.partition(":")[2])
                elif line.startswith("data:"):
                    return

    def logs(self, execution_id: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", f"/api/v1/executions/{execution_id}/logs", params=query)

    def create_project(self, name: str, actions: list[str] | None = None) -> Any:
        body: dict[str, Any] = {"name": name}
        if actions is not None:
            body["actions"] = actions
        return self.request("POST", "/api/v1/projects", json=body)

    def update_project(self, name: str, actions: list[str] | None) -> Any:
        return self.request("PATCH", f"/api/v1/projects/{name}", json={"actions": actions})

    def list_projects(self) -> Any:
        return self.request("GET", "/api/v1/projects")

    def create_token(
        self,
        project: str,
        role: str,
        description: str,
        expires_in: str | None = None,
        kind: str = "tokens",
    ) -> Any:
        """A new credential: `kind` is "tokens" or "access-keys"."""
        body = {"role": role, "description": description, "expires_in": expires_in}
        return self.request("POST", f"/api/v1/projects/{project}/{kind}", json=body)

    def list_tokens(self, project: str, kind: str = "tokens") -> Any:
        return self.request("GET", f"/api/v1/projects/{project}/{kind}")

    def revoke_token(self, project: str, token_id: str, kind: str = "tokens") -> Any:
        return self.request("DELETE", f"/api/v1/projects/{project}/{kind}/{token_id}")


def _error_body(data: bytes) -> Any:
    try:
        return loads(data)
    except ValueError:
        return {"error": {"description": data.decode(errors="replace")[:200]}}
