"""A small HTTP client of the native API, used by the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from execflow.errors import ExecflowError


class ApiError(ExecflowError):
    """The server refused the request."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = str(error.get("id", "http_error"))
        self.problems: list[dict[str, str]] = list(error.get("details") or [])
        super().__init__(str(error.get("description") or f"HTTP {status}"))


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ExecflowError(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"description": response.text[:200]}}
            raise ApiError(response.status_code, body)
        return response.json() if response.content else None

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
        params = {"level": level} if level else {}
        path = f"/api/v1/executions/{execution_id}/events"
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, response.json())
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                    elif line.startswith("data:") and kind != "end":
                        yield json.loads(line.partition(":")[2])
                    elif line.startswith("data:"):
                        return
        except httpx.HTTPError as exc:
            raise ExecflowError(f"cannot reach {self._http.base_url}: {exc}") from exc

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
