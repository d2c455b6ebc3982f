"""The Onedata Oneprovider automation dialect through the real ASGI app: the page's sample
request, the companion calls, Onedata's errors, and who may call which route."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from execflow.api.dialects import onedata
from execflow.api.dialects.onedata import router
from execflow.auth import ROLE_PRIVILEGES, ROLES, Privilege
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_control import APPROVAL

BASE = "/api/v3/oneprovider"
EXECUTIONS = f"{BASE}/automation/execution/workflows"
# The page's store schema ids are those of its example workflow: its stores are named so.
FILES = "de6d2e524459dd235f80aa8652a68879b5dbe9"
CONFIG = "83cf895501eb11f9bc71e4b2b41a252e8561b5"

SAMPLE: dict[str, Any] = {
    "name": "sample",
    "parameters": {
        "label": {"type": "string", "default": "batch"},
        "token": {"type": "string", "secret": True, "default": "tk-very-secret-value"},
    },
    "stores": {
        FILES: {"type": "list"},
        CONFIG: {"type": "value"},
        "results": {"type": "list"},
    },
    "tasks": {
        "files": {"action": "echo", "with": {"files": "${{ stores['" + FILES + "'] }}"}},
        "config": {"action": "echo", "with": {"config": "${{ stores['" + CONFIG + "'] }}"}},
        "count": {
            "action": "echo",
            "needs": ["files", "config"],
            "with": {
                "label": "${{ params.label }}",
                "n": "${{ tasks.files.output.files | length }}",
                "first": "${{ tasks.config.output.config.fileId }}",
                "token": "${{ params.token }}",
            },
            "store": {"name": "results"},
        },
    },
    "outputs": {"n": "${{ tasks.count.output.n }}", "label": "${{ tasks.count.output.label }}"},
}

NEEDY: dict[str, Any] = {
    "name": "needy",
    "parameters": {
        "who": {"type": "string", "required": True},
        "times": {"type": "integer", "default": 2},
    },
    "stores": {"items": {"type": "list"}},
    "tasks": {"greet": {"action": "echo", "with": {"who": "${{ params.who }}"}}},
}

# The page's request, as its curl sends it, placeholders in capitals.
PAGE_BODY = """{
"spaceId": "'$SPACE_ID'",
"atmWorkflowSchemaId": "'$ATM_WORKFLOW_SCHEMA_ID'",
"atmWorkflowSchemaRevisionNumber": 3,
"storeInitialContentOverlay": {
"de6d2e524459dd235f80aa8652a68879b5dbe9": [
{
"fileId": "0000000000523261677569642330376134636136616638613431366334386338343366356338643562323662"
}
],
"83cf895501eb11f9bc71e4b2b41a252e8561b5": {
"fileId": "000000000052A6E0677569642334653938663463616538386232366437366539636462393634633031653733"
}
},
"logLevel": "debug",
"callback": "https://my-server.example.com/execution-callback"
}"""

ERROR_KEYS = {"id", "description", "details", "ctx"}


def headers(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def assert_error(r: httpx.Response, status: int, error_id: str) -> dict[str, Any]:
    """Onedata's envelope: `{"error": {"id", "description", "details"?, "ctx"}}`."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"id", "description", "ctx"} <= set(error) <= ERROR_KEYS, error
    assert error["id"] == error_id, error
    assert isinstance(error["ctx"]["timestamp"], int)
    return error


async def put(api: Api, definition: dict[str, Any], token: str | None = None) -> None:
    name = definition["name"]
    r = await api.client.put(f"/api/v1/workflows/{name}", json=definition, headers=api.auth(token))
    assert r.status_code in (200, 201), r.text


def ids(api: Api, project: str = "default", workflow: str = "sample") -> tuple[str, str]:
    """The project's id and the workflow's id, as a client reads them off its own records."""
    store = api.runtime.store
    project_id = store.project_id(project)
    assert project_id is not None
    return project_id, store.get_workflow(project_id, workflow).id


async def three_revisions(api: Api) -> None:
    for n in (1, 2, 3):
        await put(api, {**SAMPLE, "description": f"revision {n}"})


def page_body(space: str, schema: str) -> str:
    return PAGE_BODY.replace("'$SPACE_ID'", space).replace("'$ATM_WORKFLOW_SCHEMA_ID'", schema)


async def schedule(api: Api, body: Any, token: str | None = None) -> httpx.Response:
    return await api.client.post(EXECUTIONS, json=body, headers=headers(token or api.token))


async def steer(api: Api, execution_id: str, what: str, body: Any = None) -> httpx.Response:
    return await api.client.post(
        f"{EXECUTIONS}/{execution_id}/{what}", json=body, headers=headers(api.token)
    )


async def detail(api: Api, execution_id: str) -> dict[str, Any]:
    r = await api.client.get(f"{EXECUTIONS}/{execution_id}", headers=headers(api.token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def native(api: Api, execution_id: str) -> dict[str, Any]:
    r = await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())
    body: dict[str, Any] = r.json()
    return body


async def dump(api: Api, store_id: str) -> Any:
    r = await api.client.get(
        f"{BASE}/automation/execution/stores/{store_id}/content_dump", headers=headers(api.token)
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    return json.loads(r.content)


# the page's request ----------------------------------------------------------------------------


async def test_the_page_request_schedules_an_execution_that_runs_to_its_end(api: Api) -> None:
    await three_revisions(api)
    space, schema = ids(api)
    r = await api.client.post(
        EXECUTIONS,
        content=page_body(space, schema),
        headers={"X-Auth-Token": api.token, "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    execution_id = r.json()["atmWorkflowExecutionId"]
    assert r.json() == {"atmWorkflowExecutionId": execution_id}
    assert r.headers["location"] == f"http://test{EXECUTIONS}/{execution_id}"

    await api.idle()
    ran = await native(api, execution_id)
    assert (ran["state"], ran["revision"], ran["log_level"]) == ("COMPLETED", 3, "debug")
    assert ran["outputs"] == {"n": 1, "label": "batch"}
    assert ran["callback"]["url"] == "https://my-server.example.com/execution-callback"
    assert ran["inputs"]["token"] == "******"

    record = await detail(api, execution_id)
    assert record["atmWorkflowExecutionId"] == execution_id
    assert (record["status"], record["spaceId"], record["name"]) == ("finished", space, "sample")
    assert record["atmWorkflowSchemaRevisionNumber"] == 3
    assert record["scheduleTime"] <= record["startTime"] <= record["finishTime"]
    assert record["suspendTime"] == 0
    assert set(record["storeRegistry"]) == {FILES, CONFIG, "results"}
    lanes = record["lanes"]
    assert [lane["runs"][0]["parallelBoxes"][0]["taskRegistry"] for lane in lanes] == [
        {"files": f"{execution_id}.files", "config": f"{execution_id}.config"},
        {"count": f"{execution_id}.count"},
    ]
    assert {lane["runs"][0]["status"] for lane in lanes} == {"finished"}
    assert "tk-very-secret-value" not in json.dumps(record)

    overlay = json.loads(page_body(space, schema))["storeInitialContentOverlay"]
    assert await dump(api, record["storeRegistry"][FILES]) == overlay[FILES]
    config = overlay[CONFIG]
    results = await dump(api, record["storeRegistry"]["results"])
    assert results == [{"label": "batch", "n": 1, "first": config["fileId"], "token": "******"}]
    log = await dump(api, record["systemAuditLogStoreId"])
    assert log and {"index", "timestamp", "severity", "content"} == set(log[0])
    assert "debug" in {entry["severity"] for entry in log}
    assert "tk-very-secret-value" not in json.dumps([results, log])
    # the log is streamed a page at a time: pages of two give the same entries
    for page in (2, len(log), len(log) + 1):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(onedata, "LOG_PAGE", page)
            assert await dump(api, record["systemAuditLogStoreId"]) == log


async def test_the_revision_may_be_a_string_and_the_schema_and_space_names(api: Api) -> None:
    await three_revisions(api)
    body = {"spaceId": "default", "atmWorkflowSchemaId": "sample"}
    r = await schedule(api, {**body, "atmWorkflowSchemaRevisionNumber": "2"})
    assert r.status_code == 201, r.text
    await api.idle()
    assert (await native(api, r.json()["atmWorkflowExecutionId"]))["revision"] == 2
    r = await api.client.post(
        EXECUTIONS,
        json={**body, "atmWorkflowSchemaRevisionNumber": 1},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert r.status_code == 201, r.text
    await api.idle()
    first = await listing(api, phase="ended", limit=1)
    second = await listing(api, phase="ended", index=first["nextPageToken"])
    assert first["atmWorkflowExecutions"] + second["atmWorkflowExecutions"] == [
        r.json()["atmWorkflowExecutionId"],
        *(await listing(api, phase="ended"))["atmWorkflowExecutions"][1:],
    ]


# companion calls -------------------------------------------------------------------------------


async def started(api: Api, workflow: str = "sample") -> str:
    space, schema = ids(api, workflow=workflow)
    body = {"spaceId": space, "atmWorkflowSchemaId": schema, "atmWorkflowSchemaRevisionNumber": 1}
    r = await schedule(api, body)
    assert r.status_code == 201, r.text
    execution_id: str = r.json()["atmWorkflowExecutionId"]
    return execution_id


async def listing(api: Api, space: str = "default", **params: Any) -> dict[str, Any]:
    r = await api.client.get(
        f"{BASE}/spaces/{space}/automation/execution/workflows",
        params=params,
        headers=headers(api.token),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_listing_by_phase_pages_with_tokens(api: Api) -> None:
    await put(api, SAMPLE)
    await put(api, APPROVAL)
    done = [await started(api) for _ in range(3)]
    await api.idle()
    waiting = await started(api, "approval")
    assert await listing(api, phase="waiting") == {
        "atmWorkflowExecutions": [waiting],
        "isLast": True,
    }
    await api.idle()
    assert (await listing(api))["atmWorkflowExecutions"] == [waiting]  # ongoing by default
    assert (await listing(api, phase="ongoing"))["atmWorkflowExecutions"] == [waiting]

    seen: list[str] = []
    page = await listing(api, phase="ended", limit=2)
    while True:
        seen += page["atmWorkflowExecutions"]
        if page["isLast"]:
            assert "nextPageToken" not in page
            break
        page = await listing(api, phase="ended", limit=2, token=page["nextPageToken"])
    assert seen == done[::-1]
    assert (await listing(api, phase="ended", offset=1, limit=1))["atmWorkflowExecutions"] == [
        done[1]
    ]

    r = await steer(api, waiting, "pause")
    assert r.status_code == 204, r.text
    await api.idle()
    assert (await listing(api, phase="suspended"))["atmWorkflowExecutions"] == [waiting]
    assert (await detail(api, waiting))["status"] == "paused"
    assert (await detail(api, waiting))["suspendTime"] > 0
    # a listing goes on where it was, though an execution changed phase meanwhile
    page = await listing(api, phase="ended", limit=1)
    r = await steer(api, waiting, "cancel")
    assert r.status_code == 204, r.text
    await api.idle()
    rest = await listing(api, phase="ended", token=page["nextPageToken"])
    assert page["atmWorkflowExecutions"] + rest["atmWorkflowExecutions"] == done[::-1]
    assert (await listing(api, phase="ended"))["atmWorkflowExecutions"] == [waiting, *done[::-1]]

    for params, key, error_id in (
        ({"phase": "later"}, "phase", "badValueNotAllowed"),
        ({"limit": "0"}, "limit", "badValueTooLow"),
        ({"limit": "1001"}, "limit", "badValueTooHigh"),
        ({"limit": "many"}, "limit", "badValueInteger"),
        ({"offset": "-1"}, "offset", "badValueTooLow"),
        ({"phase": "waiting", "token": page["nextPageToken"]}, "token", "badData"),
        ({"token": "%%%"}, "token", "badData"),
    ):
        r = await api.client.get(
            f"{BASE}/spaces/default/automation/execution/workflows",
            params=params,
            headers=headers(api.token),
        )
        assert assert_error(r, 400, error_id)["details"] == {"key": key}


async def test_pause_resume_cancel_retry_and_rerun(api: Api) -> None:
    await put(api, APPROVAL)
    execution_id = await started(api, "approval")
    await api.idle()
    record = await detail(api, execution_id)
    assert record["status"] == "active"
    assert [len(lane["runs"][0]["parallelBoxes"][0]["taskRegistry"]) for lane in record["lanes"]]
    assert [lane["runs"][0]["status"] for lane in record["lanes"]] == [
        "finished",
        "active",
        "scheduled",
    ]

    assert (await steer(api, execution_id, "pause")).status_code == 204
    await api.idle()
    assert_error(await steer(api, execution_id, "pause"), 400, "atmInvalidStatusTransition")
    assert (await native(api, execution_id))["state"] == "SUSPENDED"
    assert (await steer(api, execution_id, "resume")).status_code == 204
    await api.idle()
    assert_error(await steer(api, execution_id, "resume"), 400, "atmWorkflowExecutionNotResumable")
    assert (await detail(api, execution_id))["status"] == "active"

    lane = {"laneIndex": 2, "laneRunNumber": 1}
    assert_error(await steer(api, execution_id, "retry", lane), 400, "atmLaneExecutionRetryFailed")
    assert_error(await steer(api, execution_id, "rerun", lane), 400, "atmWorkflowExecutionNotEnded")
    assert (await steer(api, execution_id, "cancel")).status_code == 204
    await api.idle()
    record = await detail(api, execution_id)
    assert record["status"] == "cancelled"
    assert [run["isRetriable"] for lane_ in record["lanes"] for run in lane_["runs"]] == [
        False,
        True,
        False,
    ]
    assert_error(await steer(api, execution_id, "cancel"), 400, "atmWorkflowExecutionEnded")

    for body, key, error_id in (
        ({"laneRunNumber": 1}, "laneIndex", "missingRequiredValue"),
        ({"laneIndex": 4, "laneRunNumber": 1}, "laneIndex", "badValueNotInRange"),
        ({"laneIndex": 2, "laneRunNumber": 2}, "laneRunNumber", "badValueNotInRange"),
        ({"laneIndex": "two", "laneRunNumber": 1}, "laneIndex", "badValueInteger"),
    ):
        r = await steer(api, execution_id, "retry", body)
        assert assert_error(r, 400, error_id)["details"] == {"key": key}

    assert (await steer(api, execution_id, "retry", lane)).status_code == 204
    await api.idle()
    record = await detail(api, execution_id)
    assert record["status"] == "active"
    run = record["lanes"][1]["runs"][0]
    assert (run["runNumber"], run["originRunNumber"], run["runType"]) == (2, 1, "retry")
    assert (await native(api, execution_id))["round"] == 1

    await api.client.post(
        f"/api/v1/executions/{execution_id}/signals/approval",
        json={"approved": True, "by": "ada"},
        headers=api.auth(),
    )
    await api.idle()
    assert (await detail(api, execution_id))["status"] == "finished"
    r = await steer(api, execution_id, "rerun", {"laneIndex": 3, "laneRunNumber": 2})
    assert r.status_code == 204, r.text
    rerun_id = r.headers["location"].rsplit("/", 1)[1]
    assert r.headers["location"] == f"http://test{EXECUTIONS}/{rerun_id}"
    await api.idle()
    rerun = await native(api, rerun_id)
    assert (rerun["state"], rerun["rerun_of"]) == ("COMPLETED", execution_id)
    # only "pay", the third lane, ran again
    assert [t["task"] for t in rerun["tasks"]] == ["prepare", "approve", "pay"]

    r = await api.client.delete(f"{EXECUTIONS}/{execution_id}", headers=headers(api.token))
    assert_error(r, 400, "notSupported")
    assert (await native(api, execution_id))["state"] == "COMPLETED"
    r = await api.client.delete(f"{EXECUTIONS}/{'0' * 32}", headers=headers(api.token))
    assert_error(r, 404, "notFound")


# errors ----------------------------------------------------------------------------------------


async def test_bad_requests_get_onedata_errors_naming_the_field_and_start_nothing(
    api: Api,
) -> None:
    await put(api, NEEDY)
    space, schema = ids(api, workflow="needy")
    good = {"spaceId": space, "atmWorkflowSchemaId": schema, "atmWorkflowSchemaRevisionNumber": 1}
    overlay = "storeInitialContentOverlay"
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({**good, "atmWorkflowSchemaId": "nope"}, 404, "notFound", None),
        ({**good, "atmWorkflowSchemaId": "0" * 32}, 404, "notFound", None),
        (
            {**good, overlay: {"who": "ada", "colour": "red"}},
            400,
            "badValueNotAllowed",
            f"{overlay}.colour",
        ),
        (
            {**good, overlay: {"who": "ada", "times": "three"}},
            400,
            "badValueInteger",
            f"{overlay}.times",
        ),
        ({**good, overlay: {"items": []}}, 400, "missingRequiredValue", f"{overlay}.who"),
        ({**good, overlay: {"who": 7}}, 400, "badValueString", f"{overlay}.who"),
        (
            {**good, overlay: {"who": "ada", "items": {"a": 1}}},
            400,
            "badValueJSON",
            f"{overlay}.items",
        ),
        ({**good, overlay: ["who"]}, 400, "badValueJSON", overlay),
        ({k: v for k, v in good.items() if k != "spaceId"}, 400, "missingRequiredValue", "spaceId"),
        (
            {k: v for k, v in good.items() if k != "atmWorkflowSchemaRevisionNumber"},
            400,
            "missingRequiredValue",
            "atmWorkflowSchemaRevisionNumber",
        ),
        (
            {**good, "atmWorkflowSchemaRevisionNumber": "x"},
            400,
            "badValueInteger",
            "atmWorkflowSchemaRevisionNumber",
        ),
        (
            {**good, "atmWorkflowSchemaRevisionNumber": 0},
            400,
            "badValueTooLow",
            "atmWorkflowSchemaRevisionNumber",
        ),
        (
            {**good, "atmWorkflowSchemaRevisionNumber": 9},
            400,
            "badValueIdNotFound",
            "atmWorkflowSchemaRevisionNumber",
        ),
        (
            {**good, overlay: {"who": "a"}, "logLevel": "loud"},
            400,
            "badValueNotAllowed",
            "logLevel",
        ),
        (
            {**good, overlay: {"who": "a"}, "callback": "ftp://x.example"},
            400,
            "badData",
            "callback",
        ),
        ({**good, "spaceId": "elsewhere"}, 403, "forbidden", None),
    ]
    for body, status, error_id, key in cases:
        error = assert_error(await schedule(api, body), status, error_id)
        assert error.get("details", {}).get("key") == key, (body, error)
    # (a body that is not JSON at all is refused before any route, by the body guard)
    for text in ("[1]", '"x"', ""):
        r = await api.client.post(EXECUTIONS, content=text, headers=headers(api.token))
        assert_error(r, 400, "malformedData" if text else "missingRequiredValue")

    assert "details" not in assert_error(
        await api.client.post(EXECUTIONS, json=good), 401, "unauthorized"
    )
    error = assert_error(await schedule(api, good, token="not-a-token"), 401, "unauthorized")
    assert error["details"]["authError"]["id"] == "badToken"
    r = await api.client.get(f"{EXECUTIONS}/{'0' * 32}", headers=headers("not-a-token"))
    assert_error(r, 401, "unauthorized")
    assert (await listing(api, phase="waiting"))["atmWorkflowExecutions"] == []
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []


# The context the seed page's error example carries (execflow adds `requestId`).
SEED_CTX = {
    "timestamp",
    "serviceReleaseVersion",
    "serviceId",
    "serviceDomain",
    "serviceBuildVersion",
    "service",
    "onedataErrorsRevision",
    "module",
    "line",
}


async def test_a_body_that_is_not_json_is_malformed_data_and_errors_carry_the_seeds_context(
    api: Api,
) -> None:
    await put(api, NEEDY)
    json_headers = {**headers(api.token), "Content-Type": "application/json"}
    for body, says in (
        (b"{bad", "line 1 column 2"),
        (b'{"spaceId": "default",}', "line 1 column 23"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"n": NaN}', "NaN"),
        (b"[" * 200 + b"]" * 200, "nested deeper"),
    ):
        r = await api.client.post(EXECUTIONS, content=body, headers=json_headers)
        error = assert_error(r, 400, "malformedData")
        assert "details" not in error, error
        description = error["description"]
        assert description.startswith("Provided data could not be understood by the server")
        assert says in description and ": :" not in description, description
    # the same body sent as another media type reaches the route, which says the same
    r = await api.client.post(EXECUTIONS, content=b"{bad", headers=headers(api.token))
    assert "details" not in assert_error(r, 400, "malformedData")

    space, schema = ids(api, workflow="needy")
    good = {"spaceId": space, "atmWorkflowSchemaId": schema, "atmWorkflowSchemaRevisionNumber": 1}
    answers = [
        await api.client.post(EXECUTIONS, content=b"{bad", headers=json_headers),
        await api.client.post(EXECUTIONS, json=good),
        await schedule(api, {**good, "storeInitialContentOverlay": {"who": 7}}),
        await schedule(api, {**good, "spaceId": "elsewhere"}),
        await api.client.get(f"{EXECUTIONS}/{'0' * 32}", headers=headers(api.token)),
        await api.client.get(f"{BASE}/nothing/here", headers=headers(api.token)),
    ]
    service_ids = set()
    for r in answers:
        ctx = r.json()["error"]["ctx"]
        assert set(ctx) >= SEED_CTX, (r.text, SEED_CTX - set(ctx))
        assert isinstance(ctx["timestamp"], int) and isinstance(ctx["line"], int), ctx
        assert ctx["line"] > 0 and ctx["module"], ctx
        assert ctx["service"] == "execflow"
        assert len(ctx["onedataErrorsRevision"]) == 8
        int(ctx["onedataErrorsRevision"], 16)
        service_ids.add(ctx["serviceId"])
    # one service answered them all, named by an opaque id (not the host name)
    [service_id] = service_ids
    assert len(service_id) == 32 and int(service_id, 16) >= 0
    # where the refusal was made: the service's check of inputs, the space check of the route
    assert answers[2].json()["error"]["ctx"]["module"] == "execflow.service"
    assert answers[3].json()["error"]["ctx"]["module"] == "execflow.api.dialects.onedata"


# who may call what -----------------------------------------------------------------------------

# Every route of the dialect and the privilege it needs; a route missing here fails the test.
PRIVILEGES: dict[tuple[str, str], Privilege] = {
    ("POST", EXECUTIONS): Privilege.SCHEDULE_EXECUTIONS,
    ("GET", f"{BASE}/spaces/{{space_id}}/automation/execution/workflows"): Privilege.VIEW,
    ("GET", f"{EXECUTIONS}/{{execution_id}}"): Privilege.VIEW,
    ("DELETE", f"{EXECUTIONS}/{{execution_id}}"): Privilege.MANAGE_EXECUTIONS,
    ("POST", f"{EXECUTIONS}/{{execution_id}}/cancel"): Privilege.MANAGE_EXECUTIONS,
    ("POST", f"{EXECUTIONS}/{{execution_id}}/pause"): Privilege.MANAGE_EXECUTIONS,
    ("POST", f"{EXECUTIONS}/{{execution_id}}/resume"): Privilege.MANAGE_EXECUTIONS,
    ("POST", f"{EXECUTIONS}/{{execution_id}}/retry"): Privilege.MANAGE_EXECUTIONS,
    ("POST", f"{EXECUTIONS}/{{execution_id}}/rerun"): Privilege.MANAGE_EXECUTIONS,
    ("GET", f"{BASE}/automation/execution/stores/{{store_id}}/content_dump"): Privilege.VIEW,
}


def routes() -> list[tuple[str, str]]:
    found = [
        (method, route.path)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
    ]
    assert found, "the dialect has no routes"
    return found


async def call(
    api: Api, method: str, path: str, token: str, space: str, execution_id: str, body: Any
) -> httpx.Response:
    url = (
        path.replace("{space_id}", space)
        .replace("{execution_id}", execution_id)
        .replace("{store_id}", f"{execution_id}.results")
    )
    return await api.client.request(method, url, json=body, headers=headers(token))


async def test_every_route_checks_its_privilege_and_hides_other_projects(api: Api) -> None:
    assert set(routes()) == set(PRIVILEGES), "every route needs a privilege in PRIVILEGES"
    await put(api, SAMPLE)
    space, schema = ids(api)
    execution_id = await started(api)
    await api.idle()
    start = {"spaceId": space, "atmWorkflowSchemaId": schema, "atmWorkflowSchemaRevisionNumber": 1}
    lane = {"laneIndex": 1, "laneRunNumber": 1}
    for role in ROLES:
        token = await new_token(api, "default", role)
        for method, path in routes():
            body = start if path == EXECUTIONS else lane if method == "POST" else None
            r = await call(api, method, path, token, space, execution_id, body)
            if PRIVILEGES[(method, path)] in ROLE_PRIVILEGES[role]:
                assert r.status_code not in (401, 403), (role, method, path, r.text)
            else:
                assert_error(r, 403, "forbidden")
    await api.idle()

    # another project's execution, workflow and space, named by their ids
    other = await new_token(api, "other", "admin")
    await put(api, SAMPLE, token=other)
    other_space, other_schema = ids(api, project="other")
    r = await api.client.post(
        "/api/v1/workflows/sample/executions", json={}, headers=api.auth(other)
    )
    theirs = r.json()["id"]
    await api.idle()
    before = await native(api, execution_id)
    r = await api.client.get(f"/api/v1/executions/{theirs}", headers=api.auth(other))
    their_state = r.json()["state"]
    for method, path in routes():
        body = (
            {**start, "atmWorkflowSchemaId": other_schema}
            if path == EXECUTIONS
            else lane
            if method == "POST"
            else None
        )
        r = await call(api, method, path, api.token, other_space, theirs, body)
        assert r.status_code in (403, 404), (method, path, r.text)
        assert_error(r, r.status_code, "forbidden" if r.status_code == 403 else "notFound")
        # nothing of theirs but what the request named itself
        assert "sample" not in r.text and "batch" not in r.text, (method, path, r.text)
    assert (await native(api, execution_id))["state"] == before["state"]
    r = await api.client.get(f"/api/v1/executions/{theirs}", headers=api.auth(other))
    assert (r.json()["state"], r.json()["round"]) == (their_state, 0)
    r = await api.client.get("/api/v1/executions", headers=api.auth(other))
    assert [e["id"] for e in r.json()["items"]] == [theirs]
    r = await schedule(api, {**start, "spaceId": other_space})
    assert_error(r, 403, "forbidden")
