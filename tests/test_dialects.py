"""What every dialect shares: switching them, failures in a vendor's envelope, callers by
HTTP Basic, and numeric ids that find their workflow or execution again."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from execflow.api import create_app
from execflow.api.dialects import ENVELOPES, ROUTERS
from execflow.api.dialects.base import (
    MAX_NUMBER,
    Failure,
    caller,
    dialect_route,
    id_of_number,
    iso_ms,
    number_of,
)
from execflow.definition import parse_definition
from execflow.errors import Conflict, NotFound
from execflow.records import ExecutionRecord
from execflow.runtime import Runtime
from execflow.settings import DIALECTS, Settings, parse_dialects
from execflow.store import Store
from tests.test_access_keys import new_key
from tests.test_api import HELLO, Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_attacks import MALFORMED, snapshot


def test_dialects_are_all_on_by_default_and_switch_by_name() -> None:
    assert Settings().dialects == DIALECTS == {"obs", "emr", "explorer", "onedata", "vro"}
    assert parse_dialects("all") == DIALECTS and parse_dialects("none") == frozenset()
    assert parse_dialects(" OBS, vro ,") == {"obs", "vro"}
    with pytest.raises(ValueError, match="EXECFLOW_DIALECTS: unknown dialect 'sfn'"):
        parse_dialects("obs,sfn")


def test_settings_from_the_environment_name_the_dialects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECFLOW_DIALECTS", "onedata")
    assert Settings.from_env().dialects == {"onedata"}


def render(request: Request, failure: Failure) -> Response:
    """A vendor envelope of the test's own."""
    body = {"Code": failure.code, "Message": failure.describe(), "Status": failure.status}
    return JSONResponse(body, status_code=failure.status, headers=failure.headers())


class Body(BaseModel):
    n: int


probe = APIRouter(route_class=dialect_route(render), include_in_schema=False)


@probe.post("/probe/{what}")
async def probe_route(what: str, body: Body, request: Request) -> dict[str, Any]:
    who = await caller(request, request.cookies.get("probe_token"))
    if what == "missing":
        raise NotFound("no such thing")
    if what == "boom":
        raise RuntimeError("a bug")
    return {"project": who.project_name, "role": who.role, "n": body.n}


@pytest.fixture
async def probed(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api.runtime)
    app.include_router(probe)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_every_failure_is_rendered_in_the_dialects_envelope(
    api: Api, probed: httpx.AsyncClient
) -> None:
    ok = await probed.post("/probe/x", json={"n": 1}, headers=api.auth())
    assert ok.json() == {"project": "default", "role": "admin", "n": 1}
    cases = [
        ({"n": 1}, {}, "x", 401, "unauthenticated"),
        ({"n": "many"}, api.auth(), "x", 422, "invalid_input"),
        ({"n": 1}, api.auth(), "missing", 404, "not_found"),
        ({"n": 1}, api.auth(), "boom", 500, "internal_error"),
    ]
    for body, headers, what, status, code in cases:
        r = await probed.post(f"/probe/{what}", json=body, headers=headers)
        assert (r.status_code, r.json()["Code"]) == (status, code), r.text
        assert "x-request-id" in r.headers
    invalid = await probed.post("/probe/x", json={"n": "many"}, headers=api.auth())
    assert invalid.json()["Message"].startswith("the request is not valid: /n: ")
    assert "a bug" not in (await probed.post("/probe/boom", json={"n": 1}, headers=api.auth())).text


async def test_basic_credentials_are_an_access_key_and_its_secret_or_a_token(
    api: Api, probed: httpx.AsyncClient
) -> None:
    key = await new_key(api, "alpha", "operator")
    r = await probed.post("/probe/x", json={"n": 2}, headers=basic(key["id"], key["secret"]))
    assert (r.status_code, r.json()["project"], r.json()["role"]) == (200, "alpha", "operator")
    r = await probed.post("/probe/x", json={"n": 2}, headers=basic("anyone", api.token))
    assert r.json()["role"] == "admin"
    for headers in (
        # a wrong secret (one character changed, whichever it was)
        basic(key["id"], key["secret"][:-1] + ("y" if key["secret"].endswith("x") else "x")),
        basic("anyone", "not-a-token"),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no colon").decode()},
    ):
        r = await probed.post("/probe/x", json={"n": 2}, headers=headers)
        assert (r.status_code, r.json()["Code"]) == (401, "unauthenticated"), headers
    # a vendor's own token (a cookie here) is used only when no other credential is given
    probed.cookies.set("probe_token", api.token)
    assert (await probed.post("/probe/x", json={"n": 3})).json()["role"] == "admin"
    r = await probed.post("/probe/x", json={"n": 3}, headers={"X-Auth-Token": "wrong"})
    assert r.status_code == 401


async def test_a_number_finds_its_id_and_refuses_when_ambiguous(api: Api) -> None:
    service, store = api.runtime.service, api.runtime.store
    admin = await service.authenticate(api.token)
    wf, _, _ = await service.put_workflow(admin, "hello", HELLO)
    record = await service.start(admin, "hello", {"who": "x"})
    number = number_of(record.id)
    assert 0 <= number <= MAX_NUMBER < 2**53
    assert await id_of_number(service, admin, "execution", number) == record.id
    assert await id_of_number(service, admin, "workflow", number_of(wf.id)) == wf.id
    for missing in (number ^ 1, -1, MAX_NUMBER + 1):
        with pytest.raises(NotFound):
            await id_of_number(service, admin, "execution", missing)
    # another project's ids are not found by number
    viewer = await service.authenticate(await new_token(api, "beta", "viewer"))
    with pytest.raises(NotFound):
        await id_of_number(service, viewer, "workflow", number_of(wf.id))
    # another execution whose id shares the 13 digits: the number names neither
    twin = replace(record, id=record.id[:13] + "0" * 19, name="twin")
    await store.call(store.create_execution, twin)
    with pytest.raises(Conflict, match="ambiguous"):
        await id_of_number(service, admin, "execution", number)


def test_ids_with_a_prefix_are_found_by_a_range_of_the_primary_key(store: Store) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    project = store.ensure_project("p", now)
    other = store.ensure_project("q", now)
    wf, _, _ = store.put_workflow(project, parse_definition(HELLO, name="hello"), now)
    ids = ["0" * 32, "0" * 12 + "f" + "0" * 19, "0" * 13 + "f" * 19, "0" * 14 + "1" * 18, "f" * 32]
    for ident in ids:
        rec = ExecutionRecord.new(ident, project, wf.id, "hello", 1, {"who": "x"}, now)
        store.create_execution(rec)
    assert store.ids_with_prefix("execution", project, "0" * 13, limit=5) == [
        ids[0],
        ids[3],
        ids[2],
    ]
    assert store.ids_with_prefix("execution", project, "0" * 13) == [ids[0], ids[3]]
    assert store.ids_with_prefix("execution", project, "0" * 14, limit=5) == [ids[0], ids[3]]
    assert store.ids_with_prefix("execution", project, "0" * 12 + "f") == [ids[1]]
    assert store.ids_with_prefix("execution", project, "f" * 13) == [ids[4]]
    assert store.ids_with_prefix("execution", other, "0" * 13) == []
    assert store.ids_with_prefix("workflow", project, wf.id[:13]) == [wf.id]
    assert store.ids_with_prefix("workflow", other, wf.id[:13]) == []


def test_times_are_rendered_to_the_millisecond_in_utc() -> None:
    at = datetime(2020, 4, 23, 13, 37, 43, 847_999, tzinfo=UTC)
    assert iso_ms(at) == "2020-04-23T13:37:43.847Z" and iso_ms(None) is None
    assert iso_ms(datetime(2020, 4, 23, 15, 0, tzinfo=timezone(timedelta(hours=2)))) == (
        "2020-04-23T13:00:00.000Z"
    )


def dialect_routes() -> list[tuple[str, str, str]]:
    """(dialect, method, path) of every route a dialect answers."""
    return [
        (name, method, route.path)
        for name, router in ROUTERS.items()
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
    ]


def envelope_keys(name: str) -> set[str]:
    """The keys every error body of the dialect has (and those of its `error` object)."""
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    body = json.loads(bytes(ENVELOPES[name][1](Request(scope), Failure(400, "x", "y")).body))
    return set(body) | {f"error.{k}" for k in body.get("error", {})}


# Explorer's login reads its credentials from a header and ignores the body it is sent
IGNORE_THEIR_BODY = {("POST", "/api-open/v1/connect")}


async def test_malformed_bodies_on_every_dialect_route_get_its_4xx_and_change_nothing(
    api: Api,
) -> None:
    routes = dialect_routes()
    assert {name for name, _, _ in routes} == DIALECTS
    with_bodies = [(n, m, p) for n, m, p in routes if m in ("POST", "PUT")]
    assert len(with_bodies) >= 10
    before = await snapshot(api)
    for name, method, path in with_bodies:
        url = re.sub(r"\{[^}]+\}", "1", path)
        if name == "obs" and not path.startswith("/v2/"):
            url += "?obsworkflowtriggerpolicy"  # what makes `/` OBS's (see root.py)
        expected = envelope_keys(name)
        for what, body, kind in MALFORMED:
            r = await api.client.request(
                method, url, content=body, headers={**api.auth(), "Content-Type": kind}
            )
            where = (name, what, method, url, r.status_code, r.text[:200])
            if (method, path) in IGNORE_THEIR_BODY and r.status_code == 200:
                continue  # a well-formed body it does not read
            assert 400 <= r.status_code < 500, where
            got = r.json()
            assert expected <= set(got) | {f"error.{k}" for k in got.get("error", {})}, where
    assert await snapshot(api) == before


async def test_no_such_route_on_a_dialects_paths_answers_in_its_envelope(api: Api) -> None:
    paths = {
        "obs": "/v2/nothing/here",
        "emr": "/",
        "explorer": "/api-open/v1/nothing",
        "onedata": "/api/v3/oneprovider/nothing",
        "vro": "/vco/api/nothing",
    }
    for name, path in paths.items():
        r = await api.client.request("DELETE", path, headers=api.auth())
        assert 400 <= r.status_code < 500, (name, r.text)
        got = r.json()
        assert envelope_keys(name) <= set(got) | {f"error.{k}" for k in got.get("error", {})}
    native = await api.client.get("/api/v1/nothing", headers=api.auth())
    assert native.status_code == 404 and native.json()["error"]["id"] == "not_found"


async def test_a_dialect_switched_off_answers_nothing_at_its_paths(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, workers=1, sqlite_synchronous="OFF", dialects=frozenset({"vro"})
    )
    runtime = Runtime.build(settings)
    token = runtime.prepare()
    async with runtime.running(loop=False):
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            auth = {"Authorization": f"Bearer {token}"}
            off = await client.get("/api-open/v1/jobs", headers=auth)
            assert off.status_code == 404 and off.json()["error"]["id"] == "not_found"
            on = await client.get("/vco/api/workflows/nothing/executions", headers=auth)
            assert on.status_code == 404 and "status" in on.json()


DEEP = "[" * 3000 + "]" * 3000
BAD_INPUTS = '{"bucket": "b", "object": "o", "inputs": {"who": {"k": NaN, "s": "a\\u0000b"}}}'
# Requests that once answered 500 or stored what execflow refuses to store: a body that is
# not JSON by its media type but parsed as JSON, or JSON carried in a query parameter
ODD: list[tuple[str, str, dict[str, str], str]] = [
    ("POST", "/v2/workflows/hello", {}, '{"bucket": "b", "object": "o", "inputs": ' + DEEP + "}"),
    ("POST", "/v2/workflows/hello", {}, BAD_INPUTS),
    ("POST", "/api-open/v1/workflows/{number}/jobs", {}, '{"input": ' + DEEP + "}"),
    ("POST", "/api-open/v1/workflows/{number}/jobs", {}, '{"input": {"greet": {"who": NaN}}}'),
    ("GET", "/api-open/v1/jobs", {"page": "1" + "0" * 25}, ""),
    ("GET", "/api-open/v1/jobs", {"filter": DEEP}, ""),
    ("GET", "/vco/api/workflows/hello/executions", {"startIndex": "1" + "0" * 25}, ""),
    (
        "GET",
        "/v2/workflowexecutions",
        {
            "x-workflow-graph-name": "hello",
            "x-workflow-next-marker": base64.urlsafe_b64encode(DEEP.encode()).decode(),
        },
        "",
    ),
    (
        "GET",
        "/api/v3/oneprovider/spaces/default/automation/execution/workflows",
        {"token": base64.urlsafe_b64encode(DEEP.encode()).decode()},
        "",
    ),
    (
        "POST",
        "/",
        {
            "Action": "SubmitFlow",
            "Version": "2016-04-08",
            "FlowId": "hello",
            "ProjectId": "default",
            "Conf": '{"who": {"x": NaN}}',
        },
        "",
    ),
    (
        "POST",
        "/",
        {
            "Action": "SubmitFlow",
            "Version": "2016-04-08",
            "FlowId": "hello",
            "ProjectId": "default",
            "Conf": '{"who": "x", "cyctime": 999999999999999}',
        },
        "",
    ),
    (
        "POST",
        "/",
        {
            "Action": "SubmitFlow",
            "Version": "2016-04-08",
            "FlowId": "hello",
            "ProjectId": "default",
            "Conf": DEEP,
        },
        "",
    ),
]


async def test_odd_bodies_and_parameters_get_a_4xx_and_store_nothing(api: Api) -> None:
    await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    listed = await api.client.get("/api-open/v1/workflows", headers=api.auth())
    number = str(listed.json()["data"]["items"][0]["id"])
    before = await snapshot(api)
    for method, path, params, body in ODD:
        r = await api.client.request(
            method,
            path.replace("{number}", number),
            params=params,
            content=body.encode(),
            headers={**api.auth(), "Content-Type": "text/plain"} if body else api.auth(),
        )
        assert 400 <= r.status_code < 500, (path, params, r.status_code, r.text[:300])
    assert await snapshot(api) == before
