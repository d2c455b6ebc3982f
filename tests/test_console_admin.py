"""The console's admin pages: the last admin token of `default` is kept however many
console sessions are open, and a project's settings are edited by admins of `default` only."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

from tests.test_api import Api, api  # noqa: F401
from tests.test_api_admin import tokens_of
from tests.test_console import csrf_of, sign_in


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
