"""The native API through the real ASGI app, with the engine driven until idle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from execflow.api import create_app
from execflow.runtime import Runtime
from execflow.settings import Settings


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    token: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def idle(self) -> None:
        await self.runtime.engine.run_until_idle()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    # the data directory is the server's alone (0700): tasks get files under tmp_path
    settings = Settings(
        data_dir=tmp_path / "data",
        workers=2,
        sqlite_synchronous="OFF",
        node_id="api",
        shutdown_grace=0,
    )
    runtime = Runtime.build(settings)
    token = runtime.prepare()
    assert token is not None
    async with runtime.running(loop=False):
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, runtime, token)


HELLO: dict[str, Any] = {
    "name": "hello",
    "parameters": {
        "who": {"type": "string", "required": True},
        "times": {"type": "integer", "default": 2},
        "secret": {"type": "string", "secret": True},
    },
    "tasks": {
        "greet": {"action": "echo", "with": {"text": "hello ${{ params.who }}"}},
        "again": {
            "action": "echo",
            "needs": ["greet"],
            "with": {"n": "${{ params.times }}", "prev": "${{ tasks.greet.output.text }}"},
        },
    },
    "outputs": {"text": "${{ tasks.again.output.prev }}", "n": "${{ tasks.again.output.n }}"},
}


async def test_start_runs_to_completion(api: Api) -> None:
    r = await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    assert r.status_code == 201, r.text
    assert r.json()["revision"] == 1
    r = await api.client.post(
        "/api/v1/workflows/hello/executions",
        json={"inputs": {"who": "ada", "secret": "s3cr3t"}, "labels": {"team": "a"}},
        headers=api.auth(),
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/api/v1/executions/{body['id']}"
    assert body["state"] == "INITIALIZING"
    assert set(body) == {"id", "name", "urn", "workflow", "revision", "state", "started_at"}
    await api.idle()
    r = await api.client.get(r.headers["location"], headers=api.auth())
    detail = r.json()
    assert detail["state"] == "COMPLETED"
    assert detail["outputs"] == {"text": "hello ada", "n": 2}
    assert detail["inputs"]["secret"] == "******"
    assert [t["task"] for t in detail["tasks"]] == ["greet", "again"]
    assert "s3cr3t" not in r.text


async def test_bad_inputs_name_each_field_and_store_nothing(api: Api) -> None:
    await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    r = await api.client.post(
        "/api/v1/workflows/hello/executions",
        json={"inputs": {"times": "three", "colour": "red"}},
        headers=api.auth(),
    )
    assert r.status_code == 422
    error = r.json()["error"]
    pointers = {d["pointer"]: d["reason"] for d in error["details"]}
    assert set(pointers) == {"/inputs/times", "/inputs/colour", "/inputs/who"}
    assert "integer" in pointers["/inputs/times"]
    assert error["request_id"] == r.headers["x-request-id"]
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []
