"""The web console through the real ASGI app: signing in, the session cookie, CSRF, what a
role sees and may do, escaping, the Content-Security-Policy, `/` and `/docs`."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import copy
import re
from typing import Any

import httpx

from execflow.console.headers import CSP
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_control import APPROVAL

XSS = "<script>alert(1)</script>"
HTML = {"Accept": "text/html,application/xhtml+xml"}


def hidden(html: str, name: str = "_csrf") -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no field {name} in the page"
    return found.group(1)


async def sign_in(api: Api, token: str | None = None) -> httpx.AsyncClient:
    """A browser-like client of the same app, signed in with `token` (the admin's)."""
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://test")
    page = await client.get("/console/login")
    assert page.status_code == 200, page.text
    r = await client.post(
        "/console/login",
        data={"_csrf": hidden(page.text), "token": token or api.token, "next": ""},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console/executions"
    return client


async def csrf_of(client: httpx.AsyncClient, path: str = "/console/executions") -> str:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    return hidden(r.text)


async def waiting_approval(api: Api) -> str:
    r = await api.client.put("/api/v1/workflows/approval", json=APPROVAL, headers=api.auth())
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/api/v1/workflows/approval/executions", json={"inputs": {}}, headers=api.auth()
    )
    assert r.status_code == 202, r.text
    await api.idle()
    execution_id: str = r.json()["id"]
    return execution_id


async def state_of(api: Api, execution_id: str) -> str:
    r = await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())
    state: str = r.json()["state"]
    return state


async def test_sign_in_sets_a_strict_http_only_session_cookie_that_is_not_the_token(
    api: Api,
) -> None:
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://test")
    page = await client.get("/console/login")
    r = await client.post(
        "/console/login", data={"_csrf": hidden(page.text), "token": api.token, "next": ""}
    )
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if v.startswith("execflow_console="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http here; https requests get Secure
    assert "max-age=43200" in flags
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value != api.token and api.token not in cookie
    # the session works, and signing out ends it on the server, not just in the browser
    assert (await client.get("/console/executions")).status_code == 200
    r = await client.post("/console/logout", data={"_csrf": await csrf_of(client)})
    assert r.status_code == 303
    stale = {"Cookie": f"execflow_console={value}"}
    r = await api.client.get("/console/executions", headers=stale)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    r = await api.client.get("/api/v1/executions", headers=api.auth(value))
    assert r.status_code == 401  # the session's token itself is revoked


async def test_a_wrong_token_is_refused_on_the_sign_in_page(api: Api) -> None:
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://test")
    page = await client.get("/console/login")
    r = await client.post(
        "/console/login", data={"_csrf": hidden(page.text), "token": "ef_nope", "next": ""}
    )
    assert r.status_code == 401
    assert "execflow_console=" not in r.headers.get("set-cookie", "")
    assert "unknown, revoked or expired" in r.text


async def test_sign_in_without_its_form_token_is_refused(api: Api) -> None:
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://test")
    r = await client.post("/console/login", data={"token": api.token})
    assert r.status_code == 403
    assert "execflow_console=" not in r.headers.get("set-cookie", "")


async def test_sign_in_with_an_access_key(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/projects/default/access-keys", json={"role": "viewer"}, headers=api.auth()
    )
    key = r.json()
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://test")
    page = await client.get("/console/login")
    form = {"_csrf": hidden(page.text), "key_id": key["id"], "key_secret": key["secret"]}
    r = await client.post("/console/login", data=form)
    assert r.status_code == 303, r.text
    r = await client.get("/console/executions")
    assert r.status_code == 200 and ">viewer<" in r.text


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    api: Api,
) -> None:
    execution_id = await waiting_approval(api)
    client = await sign_in(api)
    for data in ({}, {"_csrf": "0" * 64}, {"_csrf": ""}):
        r = await client.post(f"/console/executions/{execution_id}/cancel", data=data)
        assert r.status_code == 403, r.text
        assert "CSRF" in r.text
    r = await client.post(
        f"/console/executions/{execution_id}/cancel", headers={"X-CSRF-Token": "bad"}
    )
    assert r.status_code == 403
    assert await state_of(api, execution_id) == "WAITING_ON_SIGNAL"
    # a token of another session is no good either
    other = await sign_in(api)
    r = await client.post(
        f"/console/executions/{execution_id}/cancel", data={"_csrf": await csrf_of(other)}
    )
    assert r.status_code == 403
    assert await state_of(api, execution_id) == "WAITING_ON_SIGNAL"
    r = await client.post(
        f"/console/executions/{execution_id}/cancel",
        data={"_csrf": await csrf_of(client), "mode": "force"},
    )
    assert r.status_code == 303
    await api.idle()
    assert await state_of(api, execution_id) == "CANCELED"


async def test_a_viewer_sees_no_buttons_and_the_server_refuses_its_requests(api: Api) -> None:
    execution_id = await waiting_approval(api)
    viewer = await sign_in(api, await new_token(api, "default", "viewer"))
    page = await viewer.get(f"/console/executions/{execution_id}")
    assert page.status_code == 200
    assert "WAITING_ON_SIGNAL" in page.text
    for action in ("/cancel", "/suspend", "/retry", "/signals/approval"):
        assert f'action="/console/executions/{execution_id}{action}"' not in page.text
    assert "may not answer it" in page.text
    csrf = hidden(page.text)
    for action, data in (
        ("cancel", {"mode": "force"}),
        ("suspend", {}),
        ("signals/approval", {"in.approved": "true"}),
    ):
        r = await viewer.post(
            f"/console/executions/{execution_id}/{action}", data={"_csrf": csrf, **data}
        )
        assert r.status_code == 403, r.text
        assert "lacks the &#39;manage_executions&#39; privilege" in r.text
    await api.idle()
    assert await state_of(api, execution_id) == "WAITING_ON_SIGNAL"
    # the admin's page has them
    admin = await sign_in(api)
    page = await admin.get(f"/console/executions/{execution_id}")
    assert f'action="/console/executions/{execution_id}/cancel"' in page.text
    r = await viewer.get("/console/admin")
    assert r.status_code == 403


async def test_the_signal_form_is_generated_from_its_schema_and_approves_in_one_click(
    api: Api,
) -> None:
    execution_id = await waiting_approval(api)
    client = await sign_in(api)
    page = await client.get(f"/console/executions/{execution_id}")
    assert 'name="in.approved" value="true"' in page.text  # the one-click buttons
    assert 'name="in.by"' in page.text
    form = {"_csrf": hidden(page.text), "in.approved": "true", "in.by": "ada"}
    r = await client.post(f"/console/executions/{execution_id}/signals/approval", data=form)
    assert r.status_code == 303, r.text
    await api.idle()
    assert await state_of(api, execution_id) == "COMPLETED"
    page = await client.get(f"/console/executions/{execution_id}")
    assert "COMPLETED" in page.text and "ada" in page.text


async def test_start_form_from_parameters_starts_and_shows_the_execution(api: Api) -> None:
    definition = {
        "name": "typed",
        "parameters": {
            "who": {"type": "string", "required": True},
            "times": {"type": "integer", "default": 2},
            "colour": {"type": "string", "enum": ["red", "blue"], "default": "blue"},
            "loud": {"type": "boolean"},
            "key": {"type": "string", "secret": True, "default": "hunter2-default"},
        },
        "tasks": {"say": {"action": "echo", "with": {"n": "${{ params.times }}"}}},
    }
    await api.client.put("/api/v1/workflows/typed", json=definition, headers=api.auth())
    client = await sign_in(api)
    page = await client.get("/console/workflows/typed")
    assert page.status_code == 200
    assert 'type="password" name="in.key"' in page.text
    assert "hunter2-default" not in page.text
    assert 'type="number" step="1" name="in.times" value="2"' in page.text
    assert '<option value="&#34;blue&#34;" selected>blue</option>' in page.text
    csrf = hidden(page.text)
    base = {"_csrf": csrf, "in.who": "ada", "in.times": "3", "in.colour": '"red"'}
    r = await client.post("/console/workflows/typed/start", data={**base, "in.times": "x"})
    assert r.status_code == 422 and "/inputs/times" in r.text
    r = await client.post("/console/workflows/typed/start", data={**base, "dry_run": "true"})
    assert r.status_code == 200 and "Dry run" in r.text
    listed = await api.client.get("/api/v1/executions", headers=api.auth())
    assert listed.json()["items"] == []
    r = await client.post("/console/workflows/typed/start", data={**base, "in.key": "s3cr3t"})
    assert r.status_code == 303, r.text
    execution_id = r.headers["location"].rsplit("/", 1)[1]
    await api.idle()
    detail = (await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())).json()
    assert detail["state"] == "COMPLETED"
    assert detail["tasks"][0]["output"] == {"n": 3}
    page = await client.get(f"/console/executions/{execution_id}")
    assert "s3cr3t" not in page.text and "******" in page.text


async def test_a_script_in_a_description_or_a_task_output_is_shown_as_text(api: Api) -> None:
    definition: dict[str, Any] = {
        "name": "xss",
        "description": XSS,
        "tasks": {"say": {"action": "echo", "with": {"text": XSS}}},
        "outputs": {"text": "${{ tasks.say.output.text }}"},
    }
    await api.client.put("/api/v1/workflows/xss", json=definition, headers=api.auth())
    r = await api.client.post(
        "/api/v1/workflows/xss/executions",
        json={"inputs": {}, "labels": {"x": XSS}},
        headers=api.auth(),
    )
    execution_id = r.json()["id"]
    await api.idle()
    client = await sign_in(api)
    for path in (
        "/console/workflows",
        "/console/workflows/xss",
        f"/console/executions/{execution_id}",
        f"/console/executions/{execution_id}/live",
        "/console/executions",
    ):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert XSS not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path


async def test_every_console_answer_has_a_strict_csp(api: Api) -> None:
    client = await sign_in(api)
    for path in ("/console/login", "/console/executions", "/console/static/console.js"):
        r = await client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["server-timing"]), path
    assert "script-src 'self';" in CSP and "unsafe" not in CSP
    page = (await client.get("/console/executions")).text
    assert "<script>" not in page and " style=" not in page
    assert all(src.startswith("/console/static/") for src in re.findall(r'src="([^"]+)"', page))


async def test_root_leads_browsers_to_the_console_and_keeps_emr_calls(api: Api) -> None:
    r = await api.client.get("/", headers=HTML)
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    r = await api.client.get("/console/", headers=HTML)
    assert r.status_code == 303 and r.headers["location"] == "/console/executions"
    # an RPC call stays EMR's, whatever it accepts
    r = await api.client.get("/?Action=ListFlow", headers=HTML)
    assert r.status_code != 303 and "RequestId" in r.json()
    r = await api.client.post("/", data={"Action": "ListFlow"}, headers=HTML)
    assert r.status_code != 303 and "RequestId" in r.json()
    r = await api.client.get("/")
    assert "RequestId" in r.json()


async def test_docs_load_only_local_assets(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert "cdn" not in r.text.lower()
    for asset in assets:
        got = await api.client.get(asset)
        assert got.status_code == 200, asset
    assert (await api.client.get("/redoc")).status_code == 404


async def test_executions_list_filters_and_pages(api: Api) -> None:
    hello = copy.deepcopy(APPROVAL)
    await api.client.put("/api/v1/workflows/approval", json=hello, headers=api.auth())
    for i in range(3):
        await api.client.post(
            "/api/v1/workflows/approval/executions",
            json={"inputs": {}, "name": f"run-{i}", "labels": {"n": str(i)}},
            headers=api.auth(),
        )
    await api.idle()
    client = await sign_in(api)
    page = await client.get("/console/executions", params={"label": "n=1"})
    assert "run-1" in page.text and "run-0" not in page.text
    page = await client.get("/console/executions", params={"name": "run-2"})
    assert "run-2" in page.text and "run-1" not in page.text
    part = await client.get(
        "/console/executions", headers={"HX-Request": "true", "HX-Target": "results"}
    )
    assert "<html" not in part.text and "run-0" in part.text
    page = await client.get("/console/executions", params={"state": "NOPE"})
    assert page.status_code == 422


async def test_revisions_diff_escaped_and_admin_creates_and_revokes_a_token(api: Api) -> None:
    first = copy.deepcopy(APPROVAL)
    second = {**copy.deepcopy(APPROVAL), "description": XSS}
    for definition in (first, second):
        await api.client.put("/api/v1/workflows/approval", json=definition, headers=api.auth())
    client = await sign_in(api)
    page = await client.get("/console/workflows/approval", params={"a": 1, "b": 2})
    assert '<span class="add">+description: &lt;script&gt;alert(1)' in page.text
    assert XSS not in page.text
    page = await client.get("/console/admin/projects/default")
    r = await client.post(
        "/console/admin/projects/default/tokens",
        data={"_csrf": hidden(page.text), "role": "viewer", "description": "from the console"},
    )
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    secret = re.search(r'id="new-secret">([^<]+)<', r.text)
    assert secret is not None
    token_id = re.search(r"<h2>New token <code>([^<]+)</code>", r.text)
    assert token_id is not None
    assert (await api.client.get("/api/v1/workflows", headers=api.auth(secret.group(1)))).is_success
    r = await client.post(
        f"/console/admin/projects/default/tokens/{token_id.group(1)}/revoke",
        data={"_csrf": hidden(page.text)},
    )
    assert r.status_code == 303
    r = await api.client.get("/api/v1/workflows", headers=api.auth(secret.group(1)))
    assert r.status_code == 401
    # the secret is shown once: the page loaded again holds it no more
    assert secret.group(1) not in (await client.get("/console/admin/projects/default")).text
