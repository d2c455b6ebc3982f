"""Who may do what through the native API: tokens, roles, projects, and secret masking."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from tests.test_api import HELLO, Api, api  # noqa: F401

ERROR_KEYS = {"id", "description", "details", "request_id"}


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["request_id"] == r.headers["x-request-id"]
    return error


async def ensure_project(api: Api, project: str) -> None:
    r = await api.client.post("/api/v1/projects", json={"name": project}, headers=api.auth())
    assert r.status_code in (201, 409), r.text


async def new_token(api: Api, project: str, role: str, as_token: str | None = None) -> str:
    if as_token is None:
        await ensure_project(api, project)
    r = await api.client.post(
        f"/api/v1/projects/{project}/tokens",
        json={"role": role, "description": f"{role} of {project}"},
        headers=api.auth(as_token),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["project"], body["role"]) == (project, role)
    assert body["token"] and body["id"]
    token: str = body["token"]
    return token


async def put_hello(api: Api, token: str | None = None) -> httpx.Response:
    return await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth(token))


async def start_hello(api: Api, token: str | None = None, **body: Any) -> httpx.Response:
    body.setdefault("inputs", {"who": "ada"})
    return await api.client.post(
        "/api/v1/workflows/hello/executions", json=body, headers=api.auth(token)
    )


# authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/workflows"),
        ("GET", "/api/v1/workflows/hello"),
        ("PUT", "/api/v1/workflows/hello"),
        ("DELETE", "/api/v1/workflows/hello"),
        ("POST", "/api/v1/workflows/hello/executions"),
        ("GET", "/api/v1/executions"),
        ("POST", "/api/v1/executions/x/cancel"),
        ("POST", "/api/v1/projects/default/tokens"),
    ],
)
async def test_no_token_gets_401_with_a_challenge(api: Api, method: str, path: str) -> None:
    r = await api.client.request(method, path, json={})
    error = assert_error(r, 401)
    assert error["id"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer ef_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"X-Auth-Token": "ef_not-a-real-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
async def test_a_bad_token_gets_401(api: Api, headers: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/workflows", headers=headers)
    assert_error(r, 401)
    assert "www-authenticate" in r.headers


async def test_a_token_works_as_bearer_and_as_x_auth_token(api: Api) -> None:
    r = await api.client.get("/api/v1/workflows", headers={"Authorization": f"Bearer {api.token}"})
    assert r.status_code == 200, r.text
    r = await api.client.put(
        "/api/v1/workflows/hello", json=HELLO, headers={"X-Auth-Token": api.token}
    )
    assert r.status_code == 201, r.text
    r = await api.client.get("/api/v1/workflows", headers={"X-Auth-Token": api.token})
    assert [wf["name"] for wf in r.json()["items"]] == ["hello"]


async def test_health_and_docs_need_no_token(api: Api) -> None:
    for path in ("/livez", "/readyz", "/healthz"):
        r = await api.client.get(path)
        assert (r.status_code, r.json()["status"]) == (200, "ok"), path
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200, r.text
    spec = r.json()
    assert "/api/v1/workflows/{name}" in spec["paths"]
    assert "/api/v1/executions" in spec["paths"]
    put = spec["paths"]["/api/v1/workflows/{name}"]["put"]
    assert {"application/json", "application/yaml"} <= set(put["requestBody"]["content"])
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "openapi.json" in r.text


# roles ---------------------------------------------------------------------------------------


async def test_a_viewer_reads_but_changes_nothing(api: Api) -> None:
    await put_hello(api)
    r = await start_hello(api)
    execution_id = r.json()["id"]
    viewer = await new_token(api, "default", "viewer")

    for path in (
        "/api/v1/workflows",
        "/api/v1/workflows/hello",
        "/api/v1/workflows/hello/revisions/1",
        "/api/v1/executions",
        f"/api/v1/executions/{execution_id}",
    ):
        r = await api.client.get(path, headers=api.auth(viewer))
        assert r.status_code == 200, (path, r.text)

    changed = {**HELLO, "description": "by a viewer"}
    r = await api.client.put("/api/v1/workflows/hello", json=changed, headers=api.auth(viewer))
    assert assert_error(r, 403)["id"] == "forbidden"
    assert_error(await start_hello(api, viewer), 403)
    r = await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=api.auth(viewer))
    assert_error(r, 403)
    r = await api.client.delete("/api/v1/workflows/hello", headers=api.auth(viewer))
    assert_error(r, 403)
    r = await api.client.post(
        "/api/v1/projects/default/tokens", json={"role": "viewer"}, headers=api.auth(viewer)
    )
    assert_error(r, 403)

    await api.idle()
    r = await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())
    assert (r.json()["state"], r.json()["cancel_requested"]) == ("COMPLETED", False)
    r = await api.client.get("/api/v1/workflows/hello", headers=api.auth())
    assert r.json()["revision"] == 1
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert [e["id"] for e in r.json()["items"]] == [execution_id]


async def test_an_operator_starts_and_cancels_but_cannot_create_tokens(api: Api) -> None:
    await put_hello(api)
    operator = await new_token(api, "default", "operator")
    r = await start_hello(api, operator)
    assert r.status_code == 202, r.text
    execution_id = r.json()["id"]
    r = await api.client.post(
        f"/api/v1/executions/{execution_id}/cancel", headers=api.auth(operator)
    )
    assert r.status_code == 202, r.text
    await api.idle()
    r = await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth(operator))
    assert r.json()["state"] == "CANCELED"
    for role in ("viewer", "operator", "admin"):
        r = await api.client.post(
            "/api/v1/projects/default/tokens", json={"role": role}, headers=api.auth(operator)
        )
        assert_error(r, 403)


async def test_an_admin_creates_tokens_with_a_known_role_only(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/projects/default/tokens", json={"role": "root"}, headers=api.auth()
    )
    assert "/role" in {d["pointer"] for d in assert_error(r, 422)["details"]}
    admin = await new_token(api, "default", "admin")
    assert admin != api.token
    assert (await put_hello(api, admin)).status_code == 201


# projects ------------------------------------------------------------------------------------


async def test_another_projects_token_sees_nothing_of_this_project(api: Api) -> None:
    await put_hello(api)
    r = await start_hello(api, name="mine", labels={"team": "a"})
    execution_id = r.json()["id"]
    other = await new_token(api, "elsewhere", "admin")
    h = api.auth(other)

    r = await api.client.get("/api/v1/workflows", headers=h)
    assert (r.status_code, r.json()["items"]) == (200, [])
    r = await api.client.get("/api/v1/executions", headers=h)
    assert (r.status_code, r.json()["items"]) == (200, [])
    r = await api.client.get("/api/v1/executions", params={"workflow": "hello"}, headers=h)
    assert r.json()["items"] == []
    for r in (
        await api.client.get("/api/v1/workflows/hello", headers=h),
        await api.client.get("/api/v1/workflows/hello/revisions/1", headers=h),
        await api.client.delete("/api/v1/workflows/hello", headers=h),
        await start_hello(api, other),
        await api.client.get(f"/api/v1/executions/{execution_id}", headers=h),
        await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=h),
    ):
        assert_error(r, 404)

    # the same name is free in the other project, and stays separate
    r = await api.client.put(
        "/api/v1/workflows/hello", json={**HELLO, "description": "theirs"}, headers=h
    )
    assert (r.status_code, r.json()["revision"]) == (201, 1)
    r = await start_hello(api, other, name="mine")
    assert r.status_code == 202, r.text
    theirs = r.json()["id"]
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert [e["id"] for e in r.json()["items"]] == [execution_id]
    r = await api.client.get("/api/v1/executions", headers=h)
    assert [e["id"] for e in r.json()["items"]] == [theirs]
    r = await api.client.get("/api/v1/workflows/hello", headers=api.auth())
    assert r.json()["definition"] == HELLO

    await api.idle()
    r = await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())
    assert (r.json()["state"], r.json()["cancel_requested"]) == ("COMPLETED", False)


async def test_an_admin_of_another_project_administers_only_its_own(api: Api) -> None:
    team_admin = await new_token(api, "team-b", "admin")
    viewer = await new_token(api, "team-b", "viewer", as_token=team_admin)
    r = await api.client.get("/api/v1/workflows", headers=api.auth(viewer))
    assert r.status_code == 200, r.text
    await ensure_project(api, "team-c")
    for project in ("default", "team-c", "no-such-project"):
        r = await api.client.post(
            f"/api/v1/projects/{project}/tokens",
            json={"role": "admin"},
            headers=api.auth(team_admin),
        )
        assert_error(r, 404)  # another tenant's project is as good as absent


# secrets -------------------------------------------------------------------------------------


def assert_secret_absent(secret: str, responses: list[httpx.Response]) -> None:
    assert responses
    for r in responses:
        assert secret not in r.text, (r.request.method, str(r.request.url), r.text)


async def test_secret_values_never_appear_in_a_response(api: Api) -> None:
    secret = "s-" + secrets.token_hex(16)
    seen: list[httpx.Response] = [await put_hello(api)]
    started = await start_hello(api, inputs={"who": "ada", "secret": secret}, name="with-secret")
    assert started.status_code == 202, started.text
    execution_id = started.json()["id"]
    path = f"/api/v1/executions/{execution_id}"
    seen += [started, await api.client.get(path, headers=api.auth())]
    # refused starts carrying the secret must not echo it back either
    seen += [
        await start_hello(api, inputs={"who": "ada", "secret": secret}, name="with-secret"),
        await start_hello(api, inputs={"who": "bob", "secret": secret}, name="with-secret"),
        await start_hello(api, inputs={"who": "ada", "secret": secret + "x"}, name="with-secret"),
        await start_hello(api, inputs={"who": 1, "secret": secret, "extra": secret}),
        await start_hello(api, inputs={"who": "ada", "secret": secret}, labels={"-": "x"}),
    ]
    assert [r.status_code for r in seen[-5:]] == [200, 409, 409, 422, 422]
    await api.idle()
    detail = await api.client.get(path, headers=api.auth())
    assert detail.json()["state"] == "COMPLETED"
    assert detail.json()["inputs"]["secret"] == "******"
    seen += [
        detail,
        await api.client.get("/api/v1/executions", headers=api.auth()),
        await api.client.get("/api/v1/executions", params={"limit": 1}, headers=api.auth()),
        await api.client.get("/api/v1/workflows/hello", headers=api.auth()),
        await api.client.post(f"{path}/cancel", headers=api.auth()),
    ]
    assert_secret_absent(secret, seen)


async def test_secret_values_passed_to_tasks_are_masked_in_outputs(api: Api) -> None:
    secret = "s-" + secrets.token_hex(16)
    workflow = {
        "name": "login",
        "parameters": {"password": {"type": "string", "secret": True}},
        "tasks": {"use": {"action": "echo", "with": {"auth": "${{ params.password }}"}}},
        "outputs": {"auth": "${{ tasks.use.output.auth }}"},
    }
    r = await api.client.put("/api/v1/workflows/login", json=workflow, headers=api.auth())
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/api/v1/workflows/login/executions",
        json={"inputs": {"password": secret}},
        headers=api.auth(),
    )
    assert r.status_code == 202, r.text
    await api.idle()
    detail = await api.client.get(f"/api/v1/executions/{r.json()['id']}", headers=api.auth())
    assert detail.json()["state"] == "COMPLETED"
    assert_secret_absent(secret, [detail])
