"""Which actions a project may use: admins of the default project decide; a new project may
use the actions that run no code of its own; a workflow using another is refused when it is
stored and when it is started, naming its tasks."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

from execflow.project_actions import CODE_ACTIONS, DEFAULT_ACTIONS
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import assert_error, ensure_project, new_token

CODE: dict[str, Any] = {
    "name": "code",
    "tasks": {
        "hi": {"action": "echo", "with": {"x": 1}},
        "run": {"action": "command", "with": {"argv": ["true"]}},
        "py": {"action": "python", "with": {"function": "tests.fixtures.tasks:add", "args": {}}},
    },
}
PLAIN: dict[str, Any] = {"name": "plain", "tasks": {"hi": {"action": "echo", "with": {"x": 1}}}}


def test_code_actions_are_the_ones_that_run_on_workers() -> None:
    assert {"python", "command"} == CODE_ACTIONS
    assert not CODE_ACTIONS & set(DEFAULT_ACTIONS)
    assert {"echo", "http", "sleep", "signal", "workflow"} <= set(DEFAULT_ACTIONS)


async def test_a_new_project_may_not_store_code_and_default_may(api: Api) -> None:
    await ensure_project(api, "beta")
    r = await api.client.get("/api/v1/projects/beta", headers=api.auth())
    assert r.json()["actions"] == list(DEFAULT_ACTIONS)
    developer = await new_token(api, "beta", "developer")
    r = await api.client.put("/api/v1/workflows/code", json=CODE, headers=api.auth(developer))
    error = assert_error(r, 403)
    assert {d["pointer"] for d in error["details"]} == {"/tasks/run/action", "/tasks/py/action"}
    assert "may not use the 'command' action" in str(error["details"])
    r = await api.client.get("/api/v1/workflows", headers=api.auth(developer))
    assert r.json()["items"] == []  # nothing stored
    r = await api.client.put("/api/v1/workflows/plain", json=PLAIN, headers=api.auth(developer))
    assert r.status_code == 201, r.text
    # default keeps every action
    r = await api.client.get("/api/v1/projects/default", headers=api.auth())
    assert r.json()["actions"] is None
    r = await api.client.put("/api/v1/workflows/code", json=CODE, headers=api.auth())
    assert r.status_code == 201, r.text


async def test_admins_of_default_widen_and_narrow_a_projects_actions(api: Api) -> None:
    await ensure_project(api, "beta")
    developer = await new_token(api, "beta", "developer")
    r = await api.client.patch("/api/v1/projects/beta", json={"actions": None}, headers=api.auth())
    assert r.status_code == 200 and r.json()["actions"] is None, r.text
    r = await api.client.put("/api/v1/workflows/code", json=CODE, headers=api.auth(developer))
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/api/v1/workflows/code/executions", json={}, headers=api.auth(developer)
    )
    assert r.status_code == 202, r.text
    # narrowed again: what is stored stays, but may not start (nor be rerun)
    r = await api.client.patch(
        "/api/v1/projects/beta", json={"actions": ["echo", "python"]}, headers=api.auth()
    )
    assert r.json()["actions"] == ["echo", "python"]
    r = await api.client.post(
        "/api/v1/workflows/code/executions", json={}, headers=api.auth(developer)
    )
    error = assert_error(r, 403)
    assert [d["pointer"] for d in error["details"]] == ["/tasks/run/action"]


async def test_only_admins_of_default_change_a_projects_actions(api: Api) -> None:
    await ensure_project(api, "beta")
    beta_admin = await new_token(api, "beta", "admin")
    r = await api.client.patch(
        "/api/v1/projects/beta", json={"actions": None}, headers=api.auth(beta_admin)
    )
    assert_error(r, 403)
    await ensure_project(api, "gamma")
    r = await api.client.patch(
        "/api/v1/projects/gamma", json={"actions": None}, headers=api.auth(beta_admin)
    )
    assert_error(r, 404)  # another project is as good as absent
    r = await api.client.get("/api/v1/projects/beta", headers=api.auth())
    assert r.json()["actions"] == list(DEFAULT_ACTIONS)  # nothing changed


async def test_unknown_actions_are_refused_naming_them(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/projects", json={"name": "delta", "actions": ["echo", "shell"]}, headers=api.auth()
    )
    error = assert_error(r, 422)
    assert error["details"][0]["pointer"] == "/actions"
    assert "'shell'" in error["details"][0]["reason"]
    r = await api.client.get("/api/v1/projects/delta", headers=api.auth())
    assert_error(r, 404)  # not created
    await ensure_project(api, "beta")
    r = await api.client.patch(
        "/api/v1/projects/beta", json={"actions": ["nope"]}, headers=api.auth()
    )
    assert_error(r, 422)
    r = await api.client.post(
        "/api/v1/projects", json={"name": "eps", "actions": None}, headers=api.auth()
    )
    assert r.status_code == 201 and r.json()["actions"] is None
