"""Projects, tokens and roles through the admin API: lifecycle, bad input, who may do what."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from execflow.auth import ROLE_PRIVILEGES, Privilege
from execflow.clock import ManualClock
from tests.test_api import HELLO, Api, api  # noqa: F401
from tests.test_api_access import assert_error, ensure_project, new_token, start_hello
from tests.test_api_control import post, waiting_for_approval

ROOT = Path(__file__).resolve().parent.parent


async def tokens_of(api: Api, project: str, as_token: str | None = None) -> list[dict[str, Any]]:
    r = await api.client.get(f"/api/v1/projects/{project}/tokens", headers=api.auth(as_token))
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# projects -----------------------------------------------------------------------------------


async def test_an_admin_of_default_creates_and_lists_projects(api: Api) -> None:
    r = await api.client.post("/api/v1/projects", json={"name": "team-a"}, headers=api.auth())
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "team-a"
    assert r.headers["location"] == "/api/v1/projects/team-a"
    r = await api.client.post("/api/v1/projects", json={"name": "team-a"}, headers=api.auth())
    assert assert_error(r, 409)["id"] == "conflict"
    r = await api.client.get("/api/v1/projects", headers=api.auth())
    assert [p["name"] for p in r.json()["items"]] == ["default", "team-a"]
    r = await api.client.get("/api/v1/projects/team-a", headers=api.auth())
    assert r.json()["name"] == "team-a"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "has space"}, "/name"),
        ({"name": "-leading"}, "/name"),
        ({"name": "x" * 65}, "/name"),
        ({}, "/name"),
        ({"name": "ok", "owner": "me"}, "/owner"),
    ],
)
async def test_a_bad_project_is_refused_precisely(
    api: Api, body: dict[str, Any], pointer: str
) -> None:
    r = await api.client.post("/api/v1/projects", json=body, headers=api.auth())
    error = assert_error(r, 422)
    assert pointer in [d["pointer"] for d in error["details"]], error
    r = await api.client.get("/api/v1/projects", headers=api.auth())
    assert [p["name"] for p in r.json()["items"]] == ["default"]


async def test_a_project_admin_sees_only_its_own_project(api: Api) -> None:
    await ensure_project(api, "team-b")
    team_admin = await new_token(api, "team-a", "admin")
    r = await api.client.get("/api/v1/projects", headers=api.auth(team_admin))
    assert [p["name"] for p in r.json()["items"]] == ["team-a"]
    for name in ("team-b", "default", "nowhere"):
        r = await api.client.get(f"/api/v1/projects/{name}", headers=api.auth(team_admin))
        assert_error(r, 404)
    r = await api.client.post(
        "/api/v1/projects", json={"name": "team-c"}, headers=api.auth(team_admin)
    )
    assert_error(r, 403)


async def test_a_token_for_a_project_that_does_not_exist_is_refused(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/projects/nowhere/tokens", json={"role": "viewer"}, headers=api.auth()
    )
    assert_error(r, 404)
    r = await api.client.get("/api/v1/projects", headers=api.auth())
    assert [p["name"] for p in r.json()["items"]] == ["default"]


# tokens -------------------------------------------------------------------------------------


async def test_a_token_is_listed_without_its_secret_and_stops_working_once_revoked(
    api: Api,
) -> None:
    r = await api.client.post(
        "/api/v1/projects/default/tokens",
        json={"role": "viewer", "description": "dashboard", "expires_in": "30d"},
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret, token_id = created["token"], created["id"]
    assert r.headers["cache-control"] == "no-store"
    assert (created["state"], created["role"], created["description"]) == (
        "active",
        "viewer",
        "dashboard",
    )
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)

    assert (await api.client.get("/api/v1/workflows", headers=api.auth(secret))).status_code == 200
    listed = {t["id"]: t for t in await tokens_of(api, "default")}
    assert listed[token_id]["last_used_at"] is not None
    assert listed[token_id]["created_by"] is not None  # the admin token that made it
    r = await api.client.get("/api/v1/projects/default/tokens", headers=api.auth())
    assert secret not in r.text and "secret_hash" not in r.text

    first = await api.client.delete(
        f"/api/v1/projects/default/tokens/{token_id}", headers=api.auth()
    )
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "revoked"
    r = await api.client.get("/api/v1/workflows", headers=api.auth(secret))
    assert assert_error(r, 401)["id"] == "unauthenticated"
    # revoking again changes nothing
    again = await api.client.delete(
        f"/api/v1/projects/default/tokens/{token_id}", headers=api.auth()
    )
    assert again.json() == first.json()
    r = await api.client.get(f"/api/v1/projects/default/tokens/{token_id}", headers=api.auth())
    assert r.json()["state"] == "revoked"


async def test_an_expired_token_stops_working(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/projects/default/tokens",
        json={"role": "viewer", "expires_in": "1h"},
        headers=api.auth(),
    )
    secret, token_id = r.json()["token"], r.json()["id"]
    assert (await api.client.get("/api/v1/workflows", headers=api.auth(secret))).status_code == 200
    api.runtime.service.clock = ManualClock(datetime.now(UTC) + timedelta(hours=1, seconds=1))
    r = await api.client.get("/api/v1/workflows", headers=api.auth(secret))
    assert_error(r, 401)
    r = await api.client.get(f"/api/v1/projects/default/tokens/{token_id}", headers=api.auth())
    assert r.json()["state"] == "expired"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"role": "root"}, "/role"),
        ({"role": "viewer", "expires_in": "soon"}, "/expires_in"),
        ({"role": "viewer", "expires_in": "0s"}, "/expires_in"),
        (
            {"role": "viewer", "expires_in": "1h", "expires_at": "2099-01-01T00:00:00Z"},
            "/expires_in",
        ),
        ({"role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}, "/expires_at"),
        ({"role": "viewer", "expires_at": "2099-01-01T00:00:00"}, "/expires_at"),
        ({"role": "viewer", "description": "x" * 501}, "/description"),
        ({"role": "viewer", "token": "ef_mine"}, "/token"),
    ],
)
async def test_a_bad_token_request_is_refused_precisely_and_creates_nothing(
    api: Api, body: dict[str, Any], pointer: str
) -> None:
    before = await tokens_of(api, "default")
    r = await api.client.post("/api/v1/projects/default/tokens", json=body, headers=api.auth())
    error = assert_error(r, 422)
    assert pointer in [d["pointer"] for d in error["details"]], error
    assert await tokens_of(api, "default") == before


async def test_the_last_admin_token_of_default_cannot_be_revoked(api: Api) -> None:
    (own,) = await tokens_of(api, "default")
    r = await api.client.delete(f"/api/v1/projects/default/tokens/{own['id']}", headers=api.auth())
    assert "last live admin token" in assert_error(r, 409)["description"]
    other = await new_token(api, "default", "admin")
    r = await api.client.delete(
        f"/api/v1/projects/default/tokens/{own['id']}", headers=api.auth(other)
    )
    assert r.status_code == 200, r.text
    assert_error(await api.client.get("/api/v1/workflows", headers=api.auth()), 401)


async def test_project_admins_manage_only_their_own_tokens(api: Api) -> None:
    team_admin = await new_token(api, "team-a", "admin")
    other = await new_token(api, "team-b", "viewer")
    (other_info,) = await tokens_of(api, "team-b")
    viewer = await new_token(api, "team-a", "viewer", as_token=team_admin)
    assert [t["role"] for t in await tokens_of(api, "team-a", team_admin)] == ["admin", "viewer"]
    # another project's tokens are as good as absent
    for method, path in [
        ("GET", "/api/v1/projects/team-b/tokens"),
        ("GET", f"/api/v1/projects/team-b/tokens/{other_info['id']}"),
        ("DELETE", f"/api/v1/projects/team-b/tokens/{other_info['id']}"),
        ("GET", f"/api/v1/projects/team-a/tokens/{other_info['id']}"),
        ("DELETE", f"/api/v1/projects/team-a/tokens/{other_info['id']}"),
    ]:
        r = await api.client.request(method, path, headers=api.auth(team_admin))
        assert_error(r, 404)
        assert "viewer of team-b" not in r.text
    assert (await api.client.get("/api/v1/workflows", headers=api.auth(other))).status_code == 200
    # a viewer of the project may not see its tokens
    r = await api.client.get("/api/v1/projects/team-a/tokens", headers=api.auth(viewer))
    assert_error(r, 403)


# roles --------------------------------------------------------------------------------------


def test_docs_show_the_roles_table_of_the_code() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("<!-- roles -->")[1].split("<!-- /roles -->")[0]
    header, _, *rows = [line for line in section.splitlines() if line.startswith("|")]
    privileges = [c.strip(" `") for c in header.strip("|").split("|")][1:]
    assert set(privileges) == {p.value for p in Privilege}
    documented = {}
    for row in rows:
        role, *marks = [c.strip(" `") for c in row.strip("|").split("|")]
        documented[role] = frozenset(
            Privilege(p) for p, mark in zip(privileges, marks, strict=True) if mark == "✓"
        )
    assert documented == ROLE_PRIVILEGES


async def test_each_role_does_what_its_privileges_allow(api: Api) -> None:
    r = await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    assert r.status_code in (200, 201)
    tokens = {role: await new_token(api, "default", role) for role in ROLE_PRIVILEGES}
    for role, token in tokens.items():
        allowed = ROLE_PRIVILEGES[role]
        r = await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth(token))
        assert r.status_code == (200 if Privilege.MANAGE_WORKFLOWS in allowed else 403), role
        r = await start_hello(api, token)
        assert r.status_code == (202 if Privilege.SCHEDULE_EXECUTIONS in allowed else 403), role
        started = await start_hello(api)
        r = await api.client.post(
            f"/api/v1/executions/{started.json()['id']}/cancel", headers=api.auth(token)
        )
        assert r.status_code == (202 if Privilege.MANAGE_EXECUTIONS in allowed else 403), role
        r = await api.client.get("/api/v1/projects/default/tokens", headers=api.auth(token))
        assert r.status_code == (200 if Privilege.ADMIN in allowed else 403), role


# authentication everywhere ------------------------------------------------------------------

# The only paths open without a credential.
OPEN = {
    "/livez",
    "/readyz",
    "/healthz",
    "/openapi.json",
    "/docs",  # Swagger UI from the package (the console's docs.py); no ReDoc, no OAuth redirect
}


async def test_every_route_but_health_and_the_api_document_needs_a_credential(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    ]
    assert len(operations) > 25
    for method, template in operations:
        path = re.sub(r"\{[^}]+\}", "x", template)
        r = await api.client.request(method, path, json={})
        if template in OPEN:
            assert r.status_code == 200, (method, path)
            continue
        assert r.status_code == 401, (method, path, r.status_code)
    for path in sorted(OPEN - set(document["paths"])):  # the document and its pages
        assert (await api.client.get(path)).status_code == 200, path
    # matched exactly: nothing hides behind the open paths
    for path in ("/healthz/", "/healthz/../api/v1/workflows", "/healthzx", "/api/v1/healthz"):
        r = await api.client.get(path)
        if r.status_code == 307:  # a trailing slash is only redirected to the exact path
            assert r.headers["location"].endswith("/healthz"), path
            continue
        assert r.status_code in (401, 404), (path, r.status_code)
        assert "items" not in r.text


# who did what -------------------------------------------------------------------------------


async def test_every_steering_request_is_logged_with_the_token_that_made_it(api: Api) -> None:
    await ensure_project(api, "default")
    r = await api.client.post(
        "/api/v1/projects/default/tokens", json={"role": "operator"}, headers=api.auth()
    )
    operator, operator_id = r.json()["token"], r.json()["id"]

    async def actions_by(execution_id: str) -> dict[str, str | None]:
        r = await api.client.get(
            f"/api/v1/executions/{execution_id}/logs?limit=500", headers=api.auth()
        )
        return {e["message"]: e["actor"] for e in r.json()["items"] if e["kind"] != "state"}

    approved = await waiting_for_approval(api)
    for step in ("suspend", "resume"):
        assert (await post(api, f"{approved}/{step}", operator)).status_code == 202
        await api.idle()
    r = await post(api, f"{approved}/signals/approval", operator, json={"approved": True})
    assert r.status_code == 202, r.text
    await api.idle()
    logged = await actions_by(approved)
    for message in ("suspend requested", "resume requested", "signal approval received"):
        assert logged.get(message) == operator_id, (message, logged)

    r = await api.client.post(
        "/api/v1/workflows/approval/executions", json={}, headers=api.auth(operator)
    )
    cancelled = r.json()["id"]
    await api.idle()
    assert (await post(api, f"{cancelled}/cancel?force=true", operator)).status_code == 202
    await api.idle()
    assert (await post(api, f"{cancelled}/retry", operator)).status_code == 202
    await api.idle()
    r = await api.client.get(f"/api/v1/executions/{cancelled}", headers=api.auth())
    assert r.json()["started_by"] == operator_id
    logged = await actions_by(cancelled)
    by_operator = {m for m, actor in logged.items() if actor == operator_id}
    assert any(m.startswith("cancel requested") for m in by_operator), logged
    assert any("retry" in m for m in by_operator), logged
