"""NebulaGraph Explorer's workflow API over execflow: the documented requests as sent by
its curl examples, its cookie login, its error envelope, and who may call what."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

import httpx
from fastapi.routing import APIRoute

from execflow.api.dialects.base import id_of_number, number_of
from execflow.api.dialects.explorer import router
from execflow.api.dialects.explorer_shapes import STATUS
from execflow.auth import ROLE_PRIVILEGES, ROLES, Privilege
from execflow.states import ExecutionState, TaskRunState
from tests.test_access_keys import new_key
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token

V1 = "/api-open/v1"
SECRET = "correct-horse-battery-staple"

NBA: dict[str, Any] = {
    "name": "nba",
    "parameters": {
        "name": {"type": "string", "required": True},
        "limit": {"type": "integer", "default": 2},
        "password": {"type": "string", "secret": True},
    },
    "tasks": {
        "query_1": {
            "action": "echo",
            "with": {"player": "${{ params.name }}", "limit": "${{ params.limit }}"},
        },
        "pagerank": {
            "action": "echo",
            "needs": ["query_1"],
            "for_each": "${{ [[tasks.query_1.output.player, '0.150000'],"
            " ['team219', '0.452126']] }}",
            "with": {"vid": "${{ item[0] }}", "score": "${{ item[1] }}"},
        },
        "login": {"action": "echo", "with": {"dsn": "nebula://root:${{ params.password }}@graphd"}},
    },
}
GATE: dict[str, Any] = {
    "name": "gate",
    "tasks": {"wait": {"action": "signal", "with": {"name": "go"}}},
}
JOB_KEYS = {
    "id",
    "name",
    "workflowId",
    "workflowName",
    "status",
    "runBeginTime",
    "runEndTime",
    "createTime",
}


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"explorer_token={token}"}


def explorer_error(r: httpx.Response, status: int, code: int) -> str:
    """The message of an error in Explorer's envelope, after checking its shape."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code, body
    message: str = body["message"]
    return message


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"code", "data", "message"}, body
    assert (body["code"], body["message"]) == (0, "Success")
    return body["data"]


async def put_workflow(api: Api, token: str, definition: dict[str, Any]) -> int:
    """Store a workflow natively and give its Explorer id."""
    name = definition["name"]
    r = await api.client.put(f"/api/v1/workflows/{name}", json=definition, headers=api.auth(token))
    assert r.status_code in (200, 201), r.text
    service = api.runtime.service
    wf, _ = await service.get_workflow(await service.authenticate(token), name)
    return number_of(wf.id)


async def execution(api: Api, token: str, job: int) -> dict[str, Any]:
    """The execution behind a job, as the native API shows it."""
    service = api.runtime.service
    ident = await id_of_number(service, await service.authenticate(token), "execution", job)
    r = await api.client.get(f"/api/v1/executions/{ident}", headers=api.auth(token))
    assert r.status_code == 200, r.text
    detail: dict[str, Any] = r.json()
    return detail


async def add_job(api: Api, token: str, workflow: int, body: Any) -> httpx.Response:
    return await api.client.post(
        f"{V1}/workflows/{workflow}/jobs",
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **cookie(token)},
    )


async def started(api: Api, token: str, workflow: int, body: Any) -> int:
    job: int = ok(await add_job(api, token, workflow, body))["id"]
    return job


# the documented requests ----------------------------------------------------------------------


async def test_the_seed_request_starts_a_job_that_runs_to_its_end(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    # as the page's curl sends it: its body byte for byte, the token in a cookie
    r = await api.client.post(
        f"{V1}/workflows/{workflow}/jobs",
        content=b'{"input":{"query_1":{"name":"Tim Duncan"}}}',
        headers={"Content-Type": "application/json", "Cookie": f"explorer_token={api.token}"},
    )
    data = ok(r)
    assert set(data) == {"id"} and isinstance(data["id"], int)
    await api.idle()
    detail = await execution(api, api.token, data["id"])
    assert detail["state"] == "COMPLETED"
    assert detail["inputs"] == {"name": "Tim Duncan", "limit": 2, "password": None}
    assert number_of(detail["id"]) == data["id"]


async def test_companion_calls_follow_list_sample_and_cancel(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    job = await started(api, api.token, workflow, {"input": {"query_1": {"name": "Tim Duncan"}}})
    await api.idle()

    # the detail, with a status for every task
    detail = ok(await api.client.get(f"{V1}/jobs/{job}", headers=cookie(api.token)))
    assert set(detail) == JOB_KEYS | {"tasks"}
    assert (detail["id"], detail["workflowId"]) == (job, str(workflow))
    assert (detail["workflowName"], detail["status"]) == ("nba", 2)
    assert re.fullmatch(r"nba_\d{14}", detail["name"]), detail["name"]
    assert detail["runEndTime"] >= detail["runBeginTime"] >= detail["createTime"] > 0
    assert [t["id"] for t in detail["tasks"]] == ["query_1", "pagerank", "login"]
    for task in detail["tasks"]:
        assert set(task) == {"id", "name", "runBeginTime", "runEndTime", "status"}
        assert task["status"] == 2
        assert datetime.fromisoformat(task["runEndTime"]) >= datetime.fromisoformat(
            task["runBeginTime"]
        )

    # a task's result as rows of strings
    r = await api.client.get(
        f"{V1}/jobs/{job}/tasks/pagerank/sample_result?limit=1000",
        headers={"Content-Type": "application/x-www-form-urlencoded", **cookie(api.token)},
    )
    assert ok(r) == {"items": [["Tim Duncan", "0.150000"], ["team219", "0.452126"]]}
    r = await api.client.get(
        f"{V1}/jobs/{job}/tasks/pagerank/sample_result?limit=1", headers=cookie(api.token)
    )
    assert ok(r) == {"items": [["Tim Duncan", "0.150000"]]}
    r = await api.client.get(
        f"{V1}/jobs/{job}/tasks/query_1/sample_result", headers=cookie(api.token)
    )
    assert ok(r) == {"items": [["player", "Tim Duncan"], ["limit", "2"]]}

    # all jobs, with the page's own filter (status 2, oldest first)
    query = "filter=%7B%20%22status%22%3A%202%2C%20%20%22orderByCreateTime%22%3A%20%22asc%22%7D"
    r = await api.client.get(f"{V1}/jobs?{query}&pageSize=10&page=1", headers=cookie(api.token))
    listed = ok(r)
    assert set(listed) == {"items", "total", "Page", "PageSize"}
    assert (listed["total"], listed["Page"], listed["PageSize"]) == (1, 1, 10)
    assert listed["items"] == [{k: v for k, v in detail.items() if k != "tasks"}]

    # one workflow's jobs, created since a time
    since = quote(json.dumps({"status": 2, "fromCreateTime": detail["createTime"]}))
    r = await api.client.get(
        f"{V1}/workflows/{workflow}/jobs?filter={since}&pageSize=10&page=1",
        headers=cookie(api.token),
    )
    assert [j["id"] for j in ok(r)["items"]] == [job]

    # cancel: a waiting job stops; an ended one cannot be cancelled
    gate = await put_workflow(api, api.token, GATE)
    waiting = await started(api, api.token, gate, {})
    await api.idle()
    r = await api.client.get(f"{V1}/jobs/{waiting}", headers=cookie(api.token))
    assert ok(r)["status"] == 1
    r = await api.client.put(
        f"{V1}/jobs/{waiting}/cancel",
        headers={"Content-Type": "application/x-www-form-urlencoded", **cookie(api.token)},
    )
    assert ok(r) == {"success": True}
    await api.idle()
    assert (await execution(api, api.token, waiting))["state"] == "CANCELED"
    r = await api.client.get(f"{V1}/jobs/{waiting}", headers=cookie(api.token))
    assert ok(r)["status"] == 4
    message = explorer_error(
        await api.client.put(f"{V1}/jobs/{waiting}/cancel", headers=cookie(api.token)),
        400,
        40004000,
    )
    assert "already ended" in message


async def test_a_suspended_job_is_stopping_and_a_task_not_run_is_preparing(api: Api) -> None:
    gate = await put_workflow(api, api.token, GATE)
    job = await started(api, api.token, gate, None)
    await api.idle()
    detail = await execution(api, api.token, job)
    r = await api.client.post(f"/api/v1/executions/{detail['id']}/suspend", headers=api.auth())
    assert r.status_code in (200, 202), r.text
    await api.idle()
    shown = ok(await api.client.get(f"{V1}/jobs/{job}", headers=cookie(api.token)))
    assert shown["status"] == 5
    assert shown["runEndTime"] == 0

    workflow = await put_workflow(api, api.token, NBA)
    job = await started(api, api.token, workflow, {"input": {"query_1": {"name": "x"}}})
    shown = ok(await api.client.get(f"{V1}/jobs/{job}", headers=cookie(api.token)))
    assert shown["status"] == 0
    assert [t["status"] for t in shown["tasks"]] == [0, 0, 0]
    assert shown["tasks"][0]["runBeginTime"] is None


def test_every_state_has_an_explorer_status() -> None:
    assert set(STATUS) == {*ExecutionState, *TaskRunState}
    assert set(STATUS.values()) == {0, 1, 2, 3, 4, 5}


async def test_secret_inputs_stay_masked(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    body = {"input": {"query_1": {"name": "a"}, "login": {"password": SECRET}}}
    job = await started(api, api.token, workflow, body)
    await api.idle()
    for path in (f"/jobs/{job}", f"/jobs/{job}/tasks/login/sample_result", "/jobs"):
        r = await api.client.get(V1 + path, headers=cookie(api.token))
        assert r.status_code == 200 and SECRET not in r.text, r.text
    r = await api.client.get(
        f"{V1}/jobs/{job}/tasks/login/sample_result", headers=cookie(api.token)
    )
    assert ok(r)["items"] == [["dsn", "nebula://root:******@graphd"]]


async def test_workflows_are_listed_with_the_ids_that_start_them(api: Api) -> None:
    nba = await put_workflow(api, api.token, NBA)
    gate = await put_workflow(api, api.token, GATE)
    listed = ok(await api.client.get(f"{V1}/workflows", headers=cookie(api.token)))
    assert (listed["total"], listed["Page"], listed["PageSize"]) == (2, 1, 10)
    assert [(w["id"], w["name"]) for w in listed["items"]] == [(gate, "gate"), (nba, "nba")]
    r = await api.client.get(f"{V1}/workflows?pageSize=1&page=2", headers=cookie(api.token))
    assert [w["name"] for w in ok(r)["items"]] == ["nba"]


async def test_an_idempotency_key_starts_one_job(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    body = json.dumps({"input": {"query_1": {"name": "a"}}})
    headers = {"Idempotency-Key": "order-7", **cookie(api.token)}
    path = f"{V1}/workflows/{workflow}/jobs"
    first = ok(await api.client.post(path, content=body, headers=headers))
    again = ok(await api.client.post(path, content=body, headers=headers))
    assert first == again


# paging ---------------------------------------------------------------------------------------


async def test_jobs_are_paged_by_number_with_a_total(api: Api) -> None:
    gate = await put_workflow(api, api.token, GATE)
    workflow = await put_workflow(api, api.token, NBA)
    jobs = [await started(api, api.token, gate, {}) for _ in range(3)]
    named = await started(api, api.token, workflow, {"input": {"query_1": {"name": "n"}}})
    await api.idle()

    async def page(path: str, **query: Any) -> dict[str, Any]:
        params = {k: json.dumps(v) if k == "filter" else str(v) for k, v in query.items()}
        data: dict[str, Any] = ok(
            await api.client.get(V1 + path, params=params, headers=cookie(api.token))
        )
        return data

    first = await page("/jobs", pageSize=2, page=1)
    second = await page("/jobs", pageSize=2, page=2)
    assert (first["total"], second["total"]) == (4, 4)
    assert [j["id"] for j in first["items"] + second["items"]] == [named, *reversed(jobs)]
    assert (await page("/jobs", pageSize=2, page=3))["items"] == []
    oldest = await page("/jobs", filter={"orderByCreateTime": "asc"}, pageSize=1)
    assert [j["id"] for j in oldest["items"]] == [jobs[0]]
    assert (await page(f"/workflows/{gate}/jobs"))["total"] == 3
    running = await page("/jobs", filter={"status": 1})
    assert sorted(j["id"] for j in running["items"]) == sorted(jobs)
    name = (await page("/jobs", filter={"status": 2}))["items"][0]["name"]
    assert [j["id"] for j in (await page("/jobs", filter={"name": name}))["items"]] == [named]
    late = await page("/jobs", filter={"fromCreateTime": 4102444800000})  # 2100
    assert late == {"items": [], "total": 0, "Page": 1, "PageSize": 10}


BAD_LISTS = [
    ("filter=%7Bnope", "query:filter"),
    ("filter=%5B%5D", "query:filter"),
    ("filter=" + quote('{"status": 9}'), "query:filter/status"),
    ("filter=" + quote('{"colour": "red"}'), "query:filter/colour"),
    ("filter=" + quote('{"orderByCreateTime": "up"}'), "query:filter/orderByCreateTime"),
    ("filter=" + quote('{"fromCreateTime": "today"}'), "query:filter/fromCreateTime"),
    ("page=0", "query:page"),
    ("pageSize=100000", "query:pageSize"),
    ("pageSize=ten", "query:pageSize"),
]


async def test_a_bad_list_request_names_the_field(api: Api) -> None:
    for query, field in BAD_LISTS:
        r = await api.client.get(f"{V1}/jobs?{query}", headers=cookie(api.token))
        message = explorer_error(r, 400, 40004001)
        assert message.startswith("ErrParam::") and field in message, (query, message)


# bad requests ---------------------------------------------------------------------------------


BAD_INPUTS: list[tuple[Any, str, str]] = [
    (
        {"input": {"query_1": {"name": "a", "colour": "red"}}},
        "/input/query_1/colour",
        "unknown",
    ),
    (
        {"input": {"query_1": {"name": "a", "limit": "three"}}},
        "/input/query_1/limit",
        "integer",
    ),
    ({"input": {"query_1": {"limit": 3}}}, "/input", "'name'"),
    ({"input": {"query_9": {"name": "a"}}}, "/input/query_9", "no task"),
    (
        {"input": {"query_1": {"name": "a"}, "login": {"name": "b"}}},
        "/input/login/name",
        "differs from /input/query_1/name",
    ),
    ({"input": {"query_1": "a"}}, "/input/query_1", "object"),
    ({"input": [1]}, "/input", "object"),
    ({"inputs": {}}, "/inputs", "unknown field"),
    ([], "", "JSON object"),
]


async def test_bad_input_names_the_field_and_starts_nothing(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    for body, field, why in BAD_INPUTS:
        message = explorer_error(await add_job(api, api.token, workflow, body), 400, 40004001)
        assert f"{field}: " in message and why in message, message
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []


async def test_the_same_value_for_a_parameter_from_two_tasks_is_one_input(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    body = {"input": {"query_1": {"name": "a"}, "login": {"name": "a"}}}
    job = await started(api, api.token, workflow, body)
    assert (await execution(api, api.token, job))["inputs"]["name"] == "a"


KINDS: dict[str, Any] = {
    "name": "kinds",
    "parameters": {
        "limit": {"type": "integer", "default": 1},
        "ratio": {"type": "number", "default": 0.5},
        "dry": {"type": "boolean", "default": False},
        "label": {"type": "string", "default": "x"},
    },
    "tasks": {
        "query_1": {"action": "echo", "with": {"limit": "${{ params.limit }}"}},
        "query_2": {"action": "echo", "with": {"ratio": "${{ params.ratio }}"}},
    },
}


async def test_a_value_given_as_a_string_or_a_number_is_read_as_its_parameters_type(
    api: Api,
) -> None:
    """The page's param_value is "string or number": "3" for an integer parameter is 3."""
    workflow = await put_workflow(api, api.token, KINDS)
    body = {
        "input": {
            "query_1": {"limit": "3", "ratio": "2.5", "dry": "true", "label": "007"},
            "query_2": {"limit": 3.0, "ratio": 2.5},  # the same values, as numbers
        }
    }
    job = await started(api, api.token, workflow, body)
    inputs = (await execution(api, api.token, job))["inputs"]
    assert inputs == {"limit": 3, "ratio": 2.5, "dry": True, "label": "007"}
    assert isinstance(inputs["limit"], int)
    for task, name, value in [
        ("query_1", "limit", "3.5"),
        ("query_1", "limit", 3.5),
        ("query_1", "limit", " 3"),
        ("query_2", "ratio", "NaN"),
        ("query_2", "dry", "yes"),
    ]:
        r = await add_job(api, api.token, workflow, {"input": {task: {name: value}}})
        message = explorer_error(r, 400, 40004001)
        assert f"/input/{task}/{name}: expected " in message, message


async def test_a_body_that_is_not_json_is_a_bad_parameter(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    # (a body sent as application/json is parsed, and refused, before any route sees it)
    r = await api.client.post(
        f"{V1}/workflows/{workflow}/jobs",
        content=b"{input",
        headers={"Content-Type": "text/plain", **cookie(api.token)},
    )
    assert "not JSON" in explorer_error(r, 400, 40004001)


async def test_unknown_workflows_and_jobs_are_not_found(api: Api) -> None:
    for method, path in [
        ("POST", "/workflows/123/jobs"),
        ("GET", "/workflows/123/jobs"),
        ("GET", "/jobs/123"),
        ("PUT", "/jobs/123/cancel"),
        ("GET", "/jobs/123/tasks/query_1/sample_result"),
        ("GET", "/workflows/-1/jobs"),
    ]:
        r = await api.client.request(method, V1 + path, json={}, headers=cookie(api.token))
        explorer_error(r, 404, 40404000)


async def test_an_unknown_task_is_not_found(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    job = await started(api, api.token, workflow, {"input": {"query_1": {"name": "a"}}})
    r = await api.client.get(f"{V1}/jobs/{job}/tasks/nope/sample_result", headers=cookie(api.token))
    assert "no task 'nope'" in explorer_error(r, 404, 40404000)


async def test_an_id_that_is_not_a_number_is_a_bad_parameter(api: Api) -> None:
    r = await api.client.get(f"{V1}/jobs/abc", headers=cookie(api.token))
    assert "path:job_id" in explorer_error(r, 400, 40004001)


# credentials ----------------------------------------------------------------------------------


async def test_bad_credentials_get_explorers_unauthorized(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    key = await new_key(api, "default", "operator")
    body = {"input": {"query_1": {"name": "a"}}}
    path = f"{V1}/workflows/{workflow}/jobs"
    date = format_datetime(datetime.now(UTC), usegmt=True)
    for headers in (
        {},
        cookie("ef_unknown"),
        cookie(""),
        {"Authorization": f"OBS {key['id']}:bm90IHRoZSBzaWduYXR1cmU=", "Date": date},
        {"Authorization": "Basic " + base64.b64encode(f"{key['id']}:wrong".encode()).decode()},
    ):
        r = await api.client.post(path, json=body, headers=headers)
        assert explorer_error(r, 401, 40104000).startswith("ErrUnauthorized::")
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_connect_with_an_access_key_opens_a_session_of_its_role(api: Api) -> None:
    workflow = await put_workflow(api, api.token, NBA)
    key = await new_key(api, "default", "viewer")
    r = await api.client.post(
        f"{V1}/connect",
        json={"address": "192.168.8.111", "port": 9669},
        headers=basic(key["id"], key["secret"]),
    )
    assert ok(r) == {"success": True}
    set_cookie = r.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "samesite=strict" in set_cookie.lower() and "path=/" in set_cookie.lower()
    session = r.cookies["explorer_token"]
    assert session not in (key["secret"], api.token)
    # the session reads, and is refused what the key's role may not do
    assert ok(await api.client.get(f"{V1}/jobs", headers=cookie(session)))["total"] == 0
    r = await add_job(api, session, workflow, {"input": {"query_1": {"name": "a"}}})
    explorer_error(r, 403, 40304000)


async def test_connect_takes_explorers_own_bearer_account_and_a_token(api: Api) -> None:
    key = await new_key(api, "default", "operator")
    pair = base64.b64encode(json.dumps([key["id"], key["secret"]]).encode()).decode()
    colon = base64.b64encode(f"{key['id']}:{key['secret']}".encode()).decode()
    for value in (pair, colon):
        r = await api.client.post(f"{V1}/connect", headers={"Authorization": f"Bearer {value}"})
        assert ok(r) == {"success": True}
        assert r.cookies["explorer_token"].startswith("ef_")
    # a token (as a Basic password, or as Explorer's bearer) is its own session
    for headers in (basic("anyone", api.token), {"Authorization": f"Bearer {api.token}"}):
        r = await api.client.post(f"{V1}/connect", headers=headers)
        assert ok(r) == {"success": True}
        assert r.cookies["explorer_token"] == api.token


async def test_connect_refuses_what_is_not_a_credential(api: Api) -> None:
    for headers in (
        {},
        basic("anyone", "ef_not-a-token"),
        basic("EFAAAAAAAAAAAAAAAAAA", "secret"),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Digest abc"},
    ):
        r = await api.client.post(f"{V1}/connect", headers=headers)
        explorer_error(r, 401, 40104000)
        assert "set-cookie" not in r.headers


# who may call what ----------------------------------------------------------------------------

_S, _V, _M = Privilege.SCHEDULE_EXECUTIONS, Privilege.VIEW, Privilege.MANAGE_EXECUTIONS
# the privilege each route needs (None: any valid credential)
PRIVILEGES: dict[tuple[str, str], Privilege | None] = {
    ("POST", V1 + "/connect"): None,
    ("POST", V1 + "/workflows/{workflow_id}/jobs"): _S,
    ("GET", V1 + "/workflows/{workflow_id}/jobs"): _V,
    ("GET", V1 + "/jobs"): _V,
    ("GET", V1 + "/workflows"): _V,
    ("GET", V1 + "/jobs/{job_id}"): _V,
    ("PUT", V1 + "/jobs/{job_id}/cancel"): _M,
    ("GET", V1 + "/jobs/{job_id}/tasks/{task_id}/sample_result"): _V,
}


def routes() -> set[tuple[str, str]]:
    found = set()
    for route in router.routes:
        assert isinstance(route, APIRoute)
        found |= {(method, route.path) for method in route.methods or ()}
    return found


def test_every_route_is_in_the_privilege_table() -> None:
    assert routes() == set(PRIVILEGES)


async def call(api: Api, method: str, path: str, token: str, ids: dict[str, Any]) -> httpx.Response:
    """One call of a route, by a token, on the resources `ids` names."""
    url = path.format(**ids)
    if path.endswith("/connect"):
        return await api.client.post(url, headers=basic("user", token))
    body = {"input": {"query_1": {"name": "a"}}} if method == "POST" else None
    return await api.client.request(
        method, url, json=body, headers={"Content-Type": "application/json", **cookie(token)}
    )


async def test_each_role_may_call_exactly_what_its_privileges_allow(api: Api) -> None:
    admin = await new_token(api, "matrix", "admin")
    workflow = await put_workflow(api, admin, NBA)
    gate = await put_workflow(api, admin, GATE)
    for role in ROLES:
        job = await started(api, admin, gate, {})
        await api.idle()
        ids = {"workflow_id": workflow, "job_id": job, "task_id": "wait"}
        token = await new_token(api, "matrix", role)
        for (method, path), privilege in PRIVILEGES.items():
            r = await call(api, method, path, token, ids)
            if privilege is None or privilege in ROLE_PRIVILEGES[role]:
                assert r.status_code not in (401, 403), (role, method, path, r.text)
                assert r.json()["code"] == 0, (role, method, path, r.text)
            else:
                explorer_error(r, 403, 40304000)


async def test_another_projects_jobs_and_workflows_are_not_found_and_leak_nothing(
    api: Api,
) -> None:
    theirs = await new_token(api, "theirs", "admin")
    workflow = await put_workflow(api, theirs, NBA)
    job = await started(api, theirs, workflow, {"input": {"query_1": {"name": "Ginobili"}}})
    await api.idle()
    ids = {"workflow_id": workflow, "job_id": job, "task_id": "query_1"}
    mine = await new_token(api, "mine", "admin")
    await put_workflow(api, mine, GATE)
    for method, path in PRIVILEGES:
        if "{" not in path:
            continue
        r = await call(api, method, path, mine, ids)
        explorer_error(r, 404, 40404000)
        assert "Ginobili" not in r.text and "nba" not in r.text
    listed = ok(await api.client.get(f"{V1}/jobs", headers=cookie(mine)))
    assert listed["total"] == 0
    listed = ok(await api.client.get(f"{V1}/workflows", headers=cookie(mine)))
    assert [w["name"] for w in listed["items"]] == ["gate"]
    # and nothing of theirs changed
    assert (await execution(api, theirs, job))["state"] == "COMPLETED"
