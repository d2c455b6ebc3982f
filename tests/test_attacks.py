"""Tests that attack the native API: every route, every role, another project's resource,
malformed bodies on every route that takes one, a canary secret hunted everywhere, and a
bounded property-based fuzz run of the OpenAPI document."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from execflow.auth import ROLE_PRIVILEGES, Privilege
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_control import APPROVAL

CANARY = "canary-" + secrets.token_hex(8)  # only the other project's data holds it

# What each operation needs. A route missing here fails the matrix: every new route must
# say who may call it. "system" is an admin of the `default` project (the server's admin).
NEEDS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/workflows"): Privilege.VIEW,
    ("PUT", "/api/v1/workflows/{name}"): Privilege.MANAGE_WORKFLOWS,
    ("GET", "/api/v1/workflows/{name}"): Privilege.VIEW,
    ("DELETE", "/api/v1/workflows/{name}"): Privilege.MANAGE_WORKFLOWS,
    ("GET", "/api/v1/workflows/{name}/revisions/{number}"): Privilege.VIEW,
    ("POST", "/api/v1/workflows/{name}/executions"): Privilege.SCHEDULE_EXECUTIONS,
    ("GET", "/api/v1/executions"): Privilege.VIEW,
    ("GET", "/api/v1/executions/{execution_id}"): Privilege.VIEW,
    ("GET", "/api/v1/executions/{execution_id}/stores/{name}"): Privilege.VIEW,
    ("GET", "/api/v1/executions/{execution_id}/tasks/{task}/items"): Privilege.VIEW,
    ("GET", "/api/v1/executions/{execution_id}/logs"): Privilege.VIEW,
    ("GET", "/api/v1/executions/{execution_id}/events"): Privilege.VIEW,
    ("POST", "/api/v1/executions/{execution_id}/cancel"): Privilege.MANAGE_EXECUTIONS,
    ("POST", "/api/v1/executions/{execution_id}/retry"): Privilege.MANAGE_EXECUTIONS,
    ("POST", "/api/v1/executions/{execution_id}/rerun"): Privilege.MANAGE_EXECUTIONS,
    ("POST", "/api/v1/executions/{execution_id}/suspend"): Privilege.MANAGE_EXECUTIONS,
    ("POST", "/api/v1/executions/{execution_id}/resume"): Privilege.MANAGE_EXECUTIONS,
    ("POST", "/api/v1/executions/{execution_id}/signals/{signal}"): Privilege.MANAGE_EXECUTIONS,
    ("GET", "/api/v1/projects"): Privilege.VIEW,
    ("POST", "/api/v1/projects"): "system",
    ("GET", "/api/v1/projects/{project}"): Privilege.VIEW,
    ("PATCH", "/api/v1/projects/{project}"): "system",
    ("GET", "/api/v1/projects/{project}/callback-secret"): Privilege.ADMIN,
    ("POST", "/api/v1/projects/{project}/tokens"): Privilege.ADMIN,
    ("GET", "/api/v1/projects/{project}/tokens"): Privilege.ADMIN,
    ("GET", "/api/v1/projects/{project}/tokens/{token_id}"): Privilege.ADMIN,
    ("DELETE", "/api/v1/projects/{project}/tokens/{token_id}"): Privilege.ADMIN,
    ("POST", "/api/v1/projects/{project}/access-keys"): Privilege.ADMIN,
    ("GET", "/api/v1/projects/{project}/access-keys"): Privilege.ADMIN,
    ("GET", "/api/v1/projects/{project}/access-keys/{key_id}"): Privilege.ADMIN,
    ("DELETE", "/api/v1/projects/{project}/access-keys/{key_id}"): Privilege.ADMIN,
    # the node's metrics count every project's executions: tokens of `default` only
    ("GET", "/metrics"): "system",
}
OPEN = {("GET", "/livez"), ("GET", "/readyz"), ("GET", "/healthz")}

# Requests in the order the matrix sends them: reads first, then what changes things, the
# destructive last, so that each role's request finds what it names.
ORDER = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass
class World:
    api: Api
    alpha: dict[str, str]  # path parameters naming the caller's own resources
    beta: dict[str, str]  # ... and the other project's
    tokens: dict[str, str]  # alpha's token per role
    beta_admin: str


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def body_for(method: str, path: str, values: dict[str, str], role: str) -> Any:
    if (method, path) == ("PUT", "/api/v1/workflows/{name}"):
        return {**copy.deepcopy(APPROVAL), "name": values["name"]}
    if path == "/api/v1/workflows/{name}/executions":
        return {"inputs": {}}
    if path.endswith("/rerun"):
        return {"from_task": "approve"}
    if path.endswith("/signals/{signal}"):
        return {"approved": True, "by": role}
    if (method, path) == ("POST", "/api/v1/projects"):
        return {"name": f"gamma-{role}"}
    if (method, path) == ("PATCH", "/api/v1/projects/{project}"):
        return {"actions": None}
    if (method, path) == ("POST", "/api/v1/projects/{project}/access-keys"):
        return {"role": "viewer", "description": f"made by {role}"}
    if (method, path) == ("POST", "/api/v1/projects/{project}/tokens"):
        return {"role": "viewer", "description": f"made by {role}"}
    return None


@pytest.fixture
async def world(api: Api) -> AsyncIterator[World]:
    c = api.client
    tokens = {role: await new_token(api, "alpha", role) for role in ROLE_PRIVILEGES}
    beta_admin = await new_token(api, "beta", "admin")
    ids: dict[str, dict[str, str]] = {}
    for project, admin in (("alpha", tokens["admin"]), ("beta", beta_admin)):
        h = api.auth(admin)
        name = "approval" if project == "alpha" else "beta-only"
        definition = {**copy.deepcopy(APPROVAL), "name": name}
        if project == "beta":
            definition["description"] = CANARY
            # the same name in both projects must still be two workflows
            same = {**copy.deepcopy(APPROVAL), "description": CANARY}
            assert (
                await c.put("/api/v1/workflows/approval", json=same, headers=h)
            ).status_code == 201
        assert (
            await c.put(f"/api/v1/workflows/{name}", json=definition, headers=h)
        ).status_code == 201
        r = await c.post(
            f"/api/v1/workflows/{name}/executions",
            json={"labels": {"mark": CANARY if project == "beta" else "alpha"}},
            headers=h,
        )
        assert r.status_code == 202, r.text
        made = await c.post(
            f"/api/v1/projects/{project}/tokens",
            json={"role": "viewer", "description": CANARY if project == "beta" else "alpha"},
            headers=h,
        )
        key = await c.post(
            f"/api/v1/projects/{project}/access-keys",
            json={"role": "viewer", "description": CANARY if project == "beta" else "alpha"},
            headers=h,
        )
        ids[project] = {
            "key_id": key.json()["id"],
            "name": name,
            "execution_id": r.json()["id"],
            "number": "1",
            "task": "approve",
            "signal": "approval",
            "project": project,
            "token_id": made.json()["id"],
        }
    # an ended execution, for the live events stream (which follows until the end)
    h = api.auth(tokens["admin"])
    r = await c.post("/api/v1/workflows/approval/executions", json={}, headers=h)
    await api.idle()
    await c.post(f"/api/v1/executions/{r.json()['id']}/cancel?force=true", headers=h)
    await api.idle()
    ids["alpha"]["ended"] = r.json()["id"]
    yield World(api, ids["alpha"], ids["beta"], tokens, beta_admin)


def allowed(role: str, need: str) -> bool:
    if need == "system":
        return False  # alpha's admins are not the server's
    return Privilege(need) in ROLE_PRIVILEGES[role]


async def test_every_route_every_role_and_another_projects_resources(world: World) -> None:
    api, c = world.api, world.api.client
    spec = (await c.get("/openapi.json")).json()
    operations = sorted(
        ((m.upper(), p) for p, ops in spec["paths"].items() for m in ops),
        key=lambda op: (ORDER.index(op[0]), op[1]),
    )
    unlisted = [op for op in operations if op not in NEEDS and op not in OPEN]
    assert not unlisted, f"say what these need in NEEDS: {unlisted}"
    tried = 0
    for role in ROLE_PRIVILEGES:  # least privileged first
        headers = api.auth(world.tokens[role])
        for method, path in operations:
            if (method, path) in OPEN:
                continue
            need = NEEDS[(method, path)]
            # the caller's own project
            own = world.alpha
            if path.endswith("/events"):  # the stream of a live execution does not end
                own = {**own, "execution_id": own["ended"]}
            r = await c.request(
                method, fill(path, own), json=body_for(method, path, own, role), headers=headers
            )
            where = f"{role} {method} {fill(path, own)}: {r.status_code} {r.text[:300]}"
            assert r.status_code < 500, where
            if allowed(role, need):
                assert r.status_code not in (401, 403), where
            else:
                assert r.status_code == 403, where
                assert r.json()["error"]["id"] == "forbidden", where
            assert CANARY not in r.text, where
            tried += 1
            # another project's resource, named by its ids (a workflow created by PUT is the
            # caller's own: names are per project)
            if "{" not in path or (method, path) == ("PUT", "/api/v1/workflows/{name}"):
                continue
            r = await c.request(
                method,
                fill(path, world.beta),
                json=body_for(method, path, world.beta, role),
                headers=headers,
            )
            where = f"{role} {method} {fill(path, world.beta)}: {r.status_code} {r.text[:300]}"
            assert r.status_code in (403, 404), where
            assert CANARY not in r.text and world.beta["execution_id"] not in r.text.replace(
                f"'{world.beta['execution_id']}'", ""
            ), where
            tried += 1
    assert tried > 5 * len(NEEDS)
    # nothing of beta changed: its execution still waits, its workflows and tokens are as made
    hb = api.auth(world.beta_admin)
    ex = (await c.get(f"/api/v1/executions/{world.beta['execution_id']}", headers=hb)).json()
    assert ex["state"] == "WAITING_ON_SIGNAL" and ex["labels"] == {"mark": CANARY}
    for name in ("approval", "beta-only"):
        wf = (await c.get(f"/api/v1/workflows/{name}", headers=hb)).json()
        assert (wf["revision"], wf["definition"]["description"]) == (1, CANARY)
    tokens = (await c.get("/api/v1/projects/beta/tokens", headers=hb)).json()["items"]
    assert all(t["state"] == "active" for t in tokens) and len(tokens) == 2
    keys = (await c.get("/api/v1/projects/beta/access-keys", headers=hb)).json()["items"]
    assert [k["state"] for k in keys] == ["active"]


async def test_lists_show_nothing_of_another_project(world: World) -> None:
    api, c = world.api, world.api.client
    for role, token in world.tokens.items():
        for path in ("/api/v1/workflows", "/api/v1/executions", "/api/v1/projects"):
            r = await c.get(
                path, params={"limit": 100} if "exec" in path else None, headers=api.auth(token)
            )
            assert r.status_code == 200, (role, path, r.text)
            assert CANARY not in r.text and world.beta["execution_id"] not in r.text, (role, path)
            assert '"beta' not in r.text, (role, path, r.text)
        r = await c.get(
            "/api/v1/executions", params={"workflow": "beta-only"}, headers=api.auth(token)
        )
        assert r.json()["items"] == []


# malformed bodies on every route that takes one ---------------------------------------------

MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/json"),
    ("not JSON", b"{'a': 1}", "application/json"),
    ("a JSON string", b'"text"', "application/json"),
    ("a JSON list", b"[1, 2]", "application/json"),
    ("invalid UTF-8", b'{"a": "\xc3\x28"}', "application/json"),
    ("NUL byte", b'{"a": "x\x00y"}', "application/json"),
    ("escaped NUL", b'{"a": "x\\u0000y", "name": "x\\u0000y"}', "application/json"),
    ("1e400", b'{"a": 1e400, "inputs": {"n": 1e400}}', "application/json"),
    ("NaN", b'{"a": NaN}', "application/json"),
    ("deep", b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json"),
    ("huge", b'{"a": "' + b"x" * (2 << 20) + b'"}', "application/json"),
    ("lone surrogate", b'{"name": "\\udc00"}', "application/json"),
    ("wrong media type", b"a=1&b=2", "application/x-www-form-urlencoded"),
    (
        "yaml bomb",
        b"a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        + b"".join(
            f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n".encode()
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "application/yaml",
    ),
]


async def snapshot(api: Api) -> Any:
    c, h = api.client, api.auth()
    return [
        (await c.get("/api/v1/workflows", headers=h)).json(),
        (await c.get("/api/v1/executions", params={"limit": 100}, headers=h)).json(),
        (await c.get("/api/v1/projects", headers=h)).json(),
        (await c.get("/api/v1/projects/default/tokens", headers=h)).json(),
    ]


async def test_malformed_bodies_get_4xx_on_every_route_and_change_nothing(world: World) -> None:
    api, c = world.api, world.api.client
    spec = (await c.get("/openapi.json")).json()
    with_bodies = [
        (m.upper(), p)
        for p, ops in spec["paths"].items()
        for m, op in ops.items()
        if "requestBody" in op
    ]
    assert len(with_bodies) >= 6
    before = await snapshot(api)
    for method, path in with_bodies:
        url = fill(path, {**world.alpha, "project": "default"})
        for what, body, kind in MALFORMED:
            r = await c.request(
                method, url, content=body, headers={**api.auth(), "Content-Type": kind}
            )
            assert 400 <= r.status_code < 500, (what, method, url, r.status_code, r.text[:300])
            assert r.json()["error"]["id"], (what, method, url)
    assert await snapshot(api) == before


async def test_a_dag_of_ten_thousand_tasks_or_with_a_cycle_is_refused(api: Api) -> None:
    wide = {"name": "wide", "tasks": {f"t{i}": {"action": "echo"} for i in range(10_000)}}
    cycle = {
        "name": "cycle",
        "tasks": {
            "a": {"action": "echo", "needs": ["c"]},
            "b": {"action": "echo", "needs": ["a"]},
            "c": {"action": "echo", "needs": ["b"]},
        },
    }
    for definition in (wide, cycle):
        r = await api.client.put(
            f"/api/v1/workflows/{definition['name']}", json=definition, headers=api.auth()
        )
        assert r.status_code == 422, r.text[:300]
    assert (await api.client.get("/api/v1/workflows", headers=api.auth())).json()["items"] == []
