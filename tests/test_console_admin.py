"""The console's admin pages: the last admin token of `default` is kept however many
console sessions are open, and a project's settings are edited by admins of `default` only."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_api_admin import tokens_of
from tests.test_console import csrf_of, hidden, sign_in


async def test_a_console_session_does_not_count_as_the_last_admin_token(api: Api) -> None:
    (own,) = [t for t in await tokens_of(api, "default") if t["created_by"] is None]
    client = await sign_in(api)
    second = await sign_in(api)  # two sessions of the same admin token
    csrf = await csrf_of(client, "/console/admin/projects/default")
    r = await client.post(
        f"/console/admin/projects/default/tokens/{own['id']}/revoke", data={"_csrf": csrf}
    )
    assert r.status_code == 409 and "last live admin token" in r.text
    r = await api.client.delete(f"/api/v1/projects/default/tokens/{own['id']}", headers=api.auth())
    assert r.status_code == 409, r.text
    # nobody is locked out: the token and both sessions still work
    assert (await api.client.get("/api/v1/workflows", headers=api.auth())).is_success
    for session in (client, second):
        assert (await session.get("/console/admin/projects/default")).status_code == 200


async def project_actions(api: Api, project: str) -> list[str] | None:
    r = await api.client.get(f"/api/v1/projects/{project}", headers=api.auth())
    assert r.status_code == 200, r.text
    actions: list[str] | None = r.json()["actions"]
    return actions


async def test_admins_of_default_edit_a_projects_actions_others_only_read_them(api: Api) -> None:
    team_admin = await new_token(api, "team-a", "admin")
    before = await project_actions(api, "team-a")
    client = await sign_in(api)
    page = await client.get("/console/admin/projects/team-a")
    assert 'action="/console/admin/projects/team-a/settings"' in page.text
    assert 'value="python"> <span>python <span class="muted">(runs code' in page.text
    settings = "/console/admin/projects/team-a/settings"
    csrf = hidden(page.text)
    r = await client.post(
        settings, data={"_csrf": csrf, "scope": "listed", "actions": ["echo", "python"]}
    )
    assert r.status_code == 303, r.text
    assert await project_actions(api, "team-a") == ["echo", "python"]
    page = await client.get("/console/admin/projects/team-a")
    assert 'name="actions" value="python" checked' in page.text
    assert 'name="actions" value="sleep">' in page.text
    r = await client.post(settings, data={"_csrf": csrf, "scope": "all"})
    assert r.status_code == 303 and await project_actions(api, "team-a") is None
    r = await client.post(settings, data={"_csrf": csrf, "actions": ["teleport"]})
    assert r.status_code == 422 and "unknown action" in r.text
    r = await client.post(settings, data={"scope": "listed", "actions": ["echo"]})  # no CSRF
    assert r.status_code == 403 and await project_actions(api, "team-a") is None
    # the project's own admin sees its settings, cannot change them
    own = await sign_in(api, team_admin)
    page = await own.get("/console/admin/projects/team-a")
    assert page.status_code == 200 and 'id="actions-allowed">every action<' in page.text
    assert "/settings" not in page.text
    r = await own.post(settings, data={"_csrf": hidden(page.text), "actions": ["echo"]})
    assert r.status_code == 403 and await project_actions(api, "team-a") is None
    assert before != ["echo"]
