"""The OBS Data+ dialect: its seed page's request as written, the calls around it, its error
envelope, who may call what, tenant isolation, and Huawei's own SDK against a live server."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from obs import WorkflowClient

from execflow.api.dialects.obs import router
from execflow.api.dialects.obs_shapes import ERRORS, STATES
from execflow.api.errors import HTTP_CODES
from execflow.auth import ROLES, Privilege, allows
from execflow.errors import ExecflowError
from execflow.records import Principal
from execflow.states import ExecutionState
from tests.test_access_keys import new_key, sdk_sign, url
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_attacks_live import Live
from tests.test_control import flaky_chain
from tests.test_server import poll


def states(tasks: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks as a template's states."""
    return [{"name": name, **task} for name, task in tasks.items()]


def as_inputs(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameters as a template's inputs: a key, the default as the value, the rest as is."""
    return [
        {
            "key": name,
            "value": spec.get("default"),
            **{k: v for k, v in spec.items() if k != "default"},
        }
        for name, spec in parameters.items()
    ]


MEDIA: dict[str, Any] = {
    "name": "media",
    "description": "transcode an uploaded object",
    "parameters": {
        "bucket": {"type": "string", "required": True},
        "object": {"type": "string", "required": True},
        "preset": {"type": "string", "default": "sd", "enum": ["sd", "hd"]},
        "copies": {"type": "integer", "default": 1},
        "api_key": {"type": "string", "secret": True},
    },
    "tasks": {
        "probe": {
            "action": "echo",
            "with": {"source": "${{ params.bucket }}/${{ params.object }}"},
        },
        "transcode": {
            "action": "echo",
            "needs": ["probe"],
            "with": {"from": "${{ tasks.probe.output.source }}", "preset": "${{ params.preset }}"},
        },
    },
    "outputs": {"from": "${{ tasks.transcode.output.from }}"},
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ERROR_KEYS = {"code", "message", "request_id"}
CANARY = "canary-7f3e9a"


def assert_obs_error(r: httpx.Response, status: int, code: str) -> str:
    """The response is OBS's JSON error envelope with this status and code; its message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"  # the SDK reads exactly this
    body = r.json()
    assert set(body) == ERROR_KEYS, body
    assert body["code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"] == r.headers["x-obs-request-id"]
    message: str = body["message"]
    return message


async def put(api: Api, doc: dict[str, Any], token: str | None = None) -> None:
    r = await api.client.put(f"/api/v1/workflows/{doc['name']}", json=doc, headers=api.auth(token))
    assert r.status_code in (200, 201), r.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start(
    api: Api, headers: dict[str, str], graph: str = "media", **body: Any
) -> httpx.Response:
    body = {"bucket": "demo-bucket", "object": "/mpc/demo.mp4", **body}
    return await api.client.post(f"/v2/workflows/{graph}", json=body, headers=headers)


# the seed page ------------------------------------------------------------------------------


async def test_the_seed_pages_request_starts_an_execution_that_runs_to_its_end(api: Api) -> None:
    await put(api, MEDIA)
    key = await new_key(api, "default", "operator")
    path = "/v2/workflows/media"
    body = json.dumps(
        {"bucket": "demo-bucket", "object": "/mpc/demo.mp4", "inputs": {"preset": "hd"}}, indent=4
    ).encode()
    headers = sdk_sign(key, "POST", path, headers={"Content-Type": "application/json"})
    r = await api.client.post(path, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"]
    started = r.json()
    assert set(started) == {"execution_urn", "execution_name", "started_at"}
    assert ISO_MS.match(started["started_at"])
    name = started["execution_name"]
    who = await api.runtime.service.authenticate(api.token)
    assert started["execution_urn"] == (
        f"urn:fgs:execflow:{who.project_id}:execution:media:{name}:default"
    )
    await api.idle()
    record = await api.runtime.service.get_execution(who, name)
    assert record.state is ExecutionState.COMPLETED
    assert record.outputs == {"from": "demo-bucket//mpc/demo.mp4"}
    assert record.inputs["preset"] == "hd" and record.inputs["bucket"] == "demo-bucket"
    assert record.labels == {"obs.bucket": "demo-bucket", "obs.object": "/mpc/demo.mp4"}
    assert record.started_by == key["id"]


async def test_bucket_and_object_are_kept_even_when_the_workflow_does_not_declare_them(
    api: Api,
) -> None:
    plain = {"name": "plain", "tasks": {"t": {"action": "echo", "with": {"x": 1}}}}
    await put(api, plain)
    r = await start(api, api.auth(), graph="plain")
    assert r.status_code == 200, r.text
    await api.idle()
    path = f"/v2/workflowexecutions/{r.json()['execution_name']}"
    r = await api.client.get(url(path, {"x-workflow-graph-name": "plain"}), headers=api.auth())
    info = r.json()["execution_info"]
    assert json.loads(info["input"]) == {
        "bucket": "demo-bucket",
        "object": "/mpc/demo.mp4",
        "inputs": {},
    }
    assert info["execution_state"] == "SUCCESS"


# the companion calls ------------------------------------------------------------------------


async def test_get_and_list_executions_in_data_plus_words(api: Api) -> None:
    await put(api, MEDIA)
    names = []
    for preset in ("sd", "hd", "sd"):
        r = await start(api, api.auth(), inputs={"preset": preset, "api_key": CANARY})
        names.append(r.json()["execution_name"])
    await api.idle()
    path = f"/v2/workflowexecutions/{names[1]}"
    r = await api.client.get(url(path, {"x-workflow-graph-name": "media"}), headers=api.auth())
    assert r.status_code == 200, r.text
    assert CANARY not in r.text  # the secret input, masked everywhere
    info = r.json()["execution_info"]
    assert info["execution_name"] == names[1]
    assert info["execution_state"] == "SUCCESS" and info["execution_type"] == "APICALL"
    assert info["graph_urn"].endswith(":graph:media")
    assert ISO_MS.match(info["started_at"]) and ISO_MS.match(info["end_at"])
    given = json.loads(info["input"])
    assert given["inputs"]["api_key"] == "******" and given["inputs"]["preset"] == "hd"
    assert [s["name"] for s in info["steps"]] == ["probe", "transcode"]
    # Data+'s own view of the steps: a map by state name, from the start state
    assert info["start_state"] == "probe" and ISO_MS.match(info["stopped_at"])
    assert {k: v["status"] for k, v in info["state_map"].items()} == {
        "probe": "SUCCESS",
        "transcode": "SUCCESS",
    }
    # newest first, two at a time, the marker going on where the page stopped
    query: dict[str, str | None] = {"x-workflow-graph-name": "media", "x-workflow-limit": "2"}
    r = await api.client.get(url("/v2/workflowexecutions", query), headers=api.auth())
    page = r.json()
    assert (page["count"], page["is_truncated"]) == (2, True)
    assert [e["execution_name"] for e in page["executions"]] == names[::-1][:2]
    assert set(page["executions"][0]) == {
        "execution_name",
        "execution_urn",
        "graph_name",
        "graph_urn",
        "execution_state",
        "execution_type",
        "started_at",
        "stopped_at",
        "end_at",
    }
    query["x-workflow-next-marker"] = page["next_marker"]
    r = await api.client.get(url("/v2/workflowexecutions", query), headers=api.auth())
    rest = r.json()
    assert [e["execution_name"] for e in rest["executions"]] == names[:1]
    assert rest["is_truncated"] is False and "next_marker" not in rest
    # filters: by state (one execflow state or several) and by how it was started
    for word, count in (("SUCCESS", 3), ("RUNNING", 0), ("FAILED", 0), ("APICALL", 3)):
        q: dict[str, str | None] = {
            "x-workflow-graph-name": "media",
            "x-workflow-execution-type": word,
        }
        r = await api.client.get(url("/v2/workflowexecutions", q), headers=api.auth())
        assert r.json()["count"] == count, (word, r.text)
    q = {
        "x-workflow-graph-name": "media",
        "x-workflow-execution-type": "TRIGGERCAL",
    }
    r = await api.client.get(url("/v2/workflowexecutions", q), headers=api.auth())
    assert r.json() == {"count": 0, "executions": [], "is_truncated": False}


async def test_a_filter_that_maps_to_several_states_pages_without_losing_any(api: Api) -> None:
    await put(api, MEDIA)
    started = [(await start(api, api.auth())).json()["execution_name"] for _ in range(5)]
    await api.idle()
    found: list[str] = []
    query: dict[str, str | None] = {
        "x-workflow-graph-name": "media",
        "x-workflow-execution-state": "SUCCESS",
        "x-workflow-execution-type": "APICALL",
        "x-workflow-limit": "2",
    }
    while True:
        page = (
            await api.client.get(url("/v2/workflowexecutions", query), headers=api.auth())
        ).json()
        found += [e["execution_name"] for e in page["executions"]]
        if not page["is_truncated"]:
            break
        query["x-workflow-next-marker"] = page["next_marker"]
    assert found == started[::-1]


async def test_restore_runs_a_failed_execution_again_from_its_failure(
    api: Api, tmp_path: Path
) -> None:
    await put(api, flaky_chain(tmp_path / "marker", failures=1))
    r = await start(api, api.auth(), graph="chain")
    name = r.json()["execution_name"]
    await api.idle()
    path = url(f"/v2/workflowexecutions/{name}", {"x-workflow-graph-name": "chain"})
    r = await api.client.get(path, headers=api.auth())
    info = r.json()["execution_info"]
    assert info["execution_state"] == "FAILED" and info["error"]
    r = await api.client.put(path, headers=api.auth())
    assert r.status_code == 200, r.text
    restored = r.json()
    assert set(restored) == {"execution_urn", "execution_name", "restored_at"}
    assert restored["execution_name"] == name and ISO_MS.match(restored["restored_at"])
    await api.idle()
    info = (await api.client.get(path, headers=api.auth())).json()["execution_info"]
    assert info["execution_state"] == "SUCCESS"
    # what completed before ran once; the failed task and what follows ran again
    runs = [(s["name"], s["state"]) for s in info["steps"]]
    assert runs == [
        ("a", "COMPLETED"),
        ("b", "FAILED"),
        ("b", "COMPLETED"),
        ("c", "COMPLETED"),
    ]
    # a finished execution cannot be restored
    assert_obs_error(await api.client.put(path, headers=api.auth()), 409, "Conflict")


async def test_workflows_and_templates_map_onto_execflow_workflows(api: Api) -> None:
    tasks = MEDIA["tasks"]
    r = await api.client.post(
        "/v2/workflowtemplates/transcode",
        json={
            "description": "a template",
            "states": states(tasks),
            "inputs": as_inputs(MEDIA["parameters"]),
        },
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"template_name": "transcode"}
    r = await api.client.post(
        "/v2/workflowtemplates/transcode", json={"states": states(tasks)}, headers=api.auth()
    )
    assert "already exists" in assert_obs_error(r, 409, "Conflict")
    template = (await api.client.get("/v2/workflowtemplates/transcode", headers=api.auth())).json()
    assert template["states"] == states(tasks)
    assert template["inputs"] == as_inputs(MEDIA["parameters"])
    # a workflow from the template: a copy under its own name, with other defaults
    r = await api.client.post(
        url("/v2/workflows/hd-media", {"x-workflow-template-name": "transcode"}),
        json={
            "agency": "none",
            "description": "in HD",
            "parameters": [{"name": "preset", "value": "hd"}],
        },
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"graph_name", "graph_urn", "created_at"}
    graph = (await api.client.get("/v2/workflows/hd-media", headers=api.auth())).json()
    assert graph["definition"]["parameters"]["preset"]["default"] == "hd"
    assert (graph["name"], graph["description"]) == ("hd-media", "in HD")
    r = await api.client.put(
        "/v2/workflows/hd-media", json={"parameters": {"copies": 3}}, headers=api.auth()
    )
    assert r.status_code == 200 and set(r.json()) == {"graph_name", "graph_urn", "last_modified"}
    graph = (await api.client.get("/v2/workflows/hd-media", headers=api.auth())).json()
    assert graph["revision"] == 2
    assert graph["definition"]["parameters"]["copies"]["default"] == 3
    # listings: by prefix, a page at a time
    q: dict[str, str | None] = {"x-workflow-prefix": None, "x-workflow-limit": "1"}
    r = await api.client.get(url("/v2/workflows/", q), headers=api.auth())
    assert r.json()["count"] == 1 and r.json()["is_truncated"] and r.json()["next_start"] == 1
    r = await api.client.get(
        url("/v2/workflows/hd", {"x-workflow-prefix": None}), headers=api.auth()
    )
    assert [g["name"] for g in r.json()["graphs"]] == ["hd-media"]
    r = await api.client.get(
        url("/v2/workflowtemplates/", {"x-workflow-prefix": None}), headers=api.auth()
    )
    assert {t["template_name"] for t in r.json()["templates"]} == {"transcode", "hd-media"}
    # what does not map is refused, naming the field
    r = await api.client.post(
        "/v2/workflowtemplates/tagged",
        json={"states": states(tasks), "tags": ["a"]},
        headers=api.auth(),
    )
    assert "/tags" in assert_obs_error(r, 400, "InvalidArgument")
    r = await api.client.put(
        "/v2/workflows/hd-media", json={"parameters": {"colour": "red"}}, headers=api.auth()
    )
    assert "colour" in assert_obs_error(r, 400, "InvalidArgument")
    # deleting the template leaves the workflow made from it
    r = await api.client.delete("/v2/workflowtemplates/transcode", headers=api.auth())
    assert r.status_code == 204
    assert (await api.client.get("/v2/workflows/hd-media", headers=api.auth())).status_code == 200
    assert (
        await api.client.delete("/v2/workflows/hd-media", headers=api.auth())
    ).status_code == 204
    r = await api.client.get("/v2/workflows/hd-media", headers=api.auth())
    assert_obs_error(r, 404, "NoSuchResource")


# A template in Data+'s own syntax: a chain of states from the start one along `next`, in
# any order in the list; Operation states call a function (here Python functions of the
# media example), a Delay waits, an End ends.
DATA_PLUS: dict[str, Any] = {
    "description": "probe an object, settle, then plan a thumbnail",
    "states": [
        {"name": "done", "type": "End"},
        {
            "name": "probe",
            "type": "Operation",
            "start": True,
            "next": "settle",
            "payload_filter_in": "$",
            "action": {
                "function": "execflow.examples.media:probe",
                "parameters": {"bucket": "${{ params.bucket }}", "key": "${{ params.object }}"},
            },
        },
        {"name": "settle", "type": "DELAY", "duration": 0, "next": "thumbnail"},
        {
            "name": "thumbnail",
            "type": "Operation",
            "next": "done",
            "action": {
                "function": "execflow.examples.media:rendition",
                "parameters": {
                    "width": "${{ tasks.probe.output.width }}",
                    "height": "${{ tasks.probe.output.height }}",
                    "size": "${{ params.size }}",
                },
            },
        },
    ],
    "inputs": [
        {"key": "bucket", "type": "string", "required": True},
        {"key": "object", "type": "string", "required": True},
        {"key": "size", "type": "integer", "value": 64, "description": "thumbnail size"},
    ],
}


def with_state(index: int, **changes: Any) -> dict[str, Any]:
    """DATA_PLUS with one state changed (a value of None drops the field)."""
    states = [dict(s) for s in DATA_PLUS["states"]]
    states[index] = {k: v for k, v in {**states[index], **changes}.items() if v is not None}
    return {**DATA_PLUS, "states": states}


async def test_data_plus_templates_and_graphs_in_their_own_syntax_run_to_their_end(
    api: Api,
) -> None:
    r = await api.client.post("/v2/workflowtemplates/thumbs", json=DATA_PLUS, headers=api.auth())
    assert r.status_code == 201 and r.json() == {"template_name": "thumbs"}, r.text
    template = (await api.client.get("/v2/workflowtemplates/thumbs", headers=api.auth())).json()
    assert [s["name"] for s in template["states"]] == ["probe", "settle", "thumbnail"]
    assert template["description"] == DATA_PLUS["description"]
    # a workflow from it, with another default, and one made directly from the document
    r = await api.client.post(
        url("/v2/workflows/thumbs-hd", {"x-workflow-template-name": "thumbs"}),
        json={"agency": "x", "parameters": [{"name": "size", "value": 128}]},
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    r = await api.client.post(
        url("/v2/workflows/direct", {"x-workflow-create": None}), json=DATA_PLUS, headers=api.auth()
    )
    assert r.status_code == 201 and set(r.json()) == {"graph_name", "graph_urn", "created_at"}
    assert r.json()["graph_name"] == "direct"
    r = await api.client.post(
        url("/v2/workflows/direct", {"x-workflow-create": None}), json=DATA_PLUS, headers=api.auth()
    )
    assert_obs_error(r, 409, "Conflict")
    for graph, size in (("thumbs-hd", 128), ("direct", 64)):
        started = await start(api, api.auth(), graph=graph, object="clip.mp4")
        assert started.status_code == 200, started.text
        await api.idle()
        name = started.json()["execution_name"]
        q: dict[str, str | None] = {"x-workflow-graph-name": graph}
        info = await api.client.get(url(f"/v2/workflowexecutions/{name}", q), headers=api.auth())
        info = info.json()["execution_info"]
        assert info["execution_state"] == "SUCCESS", info
        assert info["start_state"] == "probe"
        assert {k: v["status"] for k, v in info["state_map"].items()} == {
            "probe": "SUCCESS",
            "settle": "SUCCESS",
            "thumbnail": "SUCCESS",
        }
        assert json.loads(info["output"])["thumbnail"]["size"] == size


async def test_a_data_plus_template_that_does_not_map_is_refused_at_its_own_paths(
    api: Api,
) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        # the finding's case: Data+'s words, refused before at execflow's /tasks/…/type
        (with_state(1, action={"function": "transcode"}), "/states/1/action/function", "Python"),
        (
            with_state(1, action={"function": "urn:fss:cn-north-4:p:function:default:f:latest"}),
            "/states/1/action/function",
            "FunctionGraph function cannot run",
        ),
        (with_state(2, type="Switch"), "/states/2/type", "no branching"),
        (with_state(2, type="Event"), "/states/2/type", "not supported"),
        (with_state(2, type="Parallel"), "/states/2/type", "one of Operation, Delay, Noop, End"),
        (with_state(1, next="nowhere"), "/states/1/next", "no state named 'nowhere'"),
        (with_state(3, next="probe"), "/states/3/next", "goes back to 'probe'"),
        (with_state(2, next=None), "/states/3", "'thumbnail' is not reached"),
        (with_state(2, start=True), "/states/2/start", "state 1 is the start"),
        (with_state(0, next="probe"), "/states/0/next", "ends the workflow"),
        (with_state(1, payload_filter_out="$.width"), "/states/1/payload_filter_out", "only `$`"),
        (with_state(2, duration=None), "/states/2/duration", "how long to wait"),
        (with_state(1, retry=3), "/states/1/retry", "not a field of a Operation state"),
        (with_state(1, name="1probe"), "/states/1/name", "begins with a letter"),
        (with_state(1, action={"function": "echo", "timeout": 3}), "/states/1/action/timeout", ""),
        # found when the workflow is checked, still named at the request's path
        (with_state(2, duration="soon"), "/states/2/duration", "not a duration"),
        (
            with_state(1, action={"function": "http", "parameters": {}}),
            "/states/1/action/parameters/url",
            "",
        ),
        (
            with_state(1, action={"function": "echo", "parameters": {"x": "${{ params.nope }}"}}),
            "/states/1/action/parameters/x",
            "nope",
        ),
        (
            {
                **DATA_PLUS,
                "inputs": [
                    *DATA_PLUS["inputs"][:2],
                    {"key": "size", "type": "integer", "value": "big"},
                ],
            },
            "/inputs/2/value",
            "",
        ),
        # execflow's own syntax is named at the request's paths too
        ({"states": [{"name": "t", "action": "echo", "retries": 2}]}, "/states/0/retries", ""),
    ]
    for body, where, says in cases:
        r = await api.client.post("/v2/workflowtemplates/bad", json=body, headers=api.auth())
        message = assert_obs_error(r, 400, "InvalidArgument")
        assert f"{where}:" in message and says in message, (where, message)
        assert "/tasks/" not in message and ": /parameters/" not in message, message
    r = await api.client.post(
        url("/v2/workflows/bad", {"x-workflow-create": None}),
        json=with_state(2, type="Switch"),
        headers=api.auth(),
    )
    assert "/states/2/type" in assert_obs_error(r, 400, "InvalidArgument")
    r = await api.client.get(
        url("/v2/workflowtemplates/", {"x-workflow-prefix": None}), headers=api.auth()
    )
    assert r.json()["count"] == 0  # nothing was stored


async def test_a_default_that_does_not_fit_is_named_where_the_request_gave_it(api: Api) -> None:
    await put(api, MEDIA)
    for method, path, body, where in (
        ("PUT", "/v2/workflows/media", {"parameters": {"copies": "three"}}, "/parameters/copies"),
        (
            "PUT",
            "/v2/workflows/media",
            {"parameters": [{"name": "preset", "value": "4k"}]},
            "/parameters/0/value",
        ),
        (
            "POST",
            url("/v2/workflows/copy", {"x-workflow-template-name": "media"}),
            {"parameters": [{"name": "preset", "value": "hd"}, {"name": "copies", "value": []}]},
            "/parameters/1/value",
        ),
    ):
        r = await api.client.request(method, path, json=body, headers=api.auth())
        message = assert_obs_error(r, 400, "InvalidArgument")
        assert f"is not valid: {where}: " in message, message
    graph = (await api.client.get("/v2/workflows/media", headers=api.auth())).json()
    assert graph["revision"] == 1


# errors ---------------------------------------------------------------------------------------


def test_every_native_error_and_state_has_its_data_plus_word() -> None:
    kinds: list[type[ExecflowError]] = [ExecflowError]
    codes = set(HTTP_CODES.values())
    while kinds:
        kind = kinds.pop()
        if not kind.__module__.startswith("execflow.api.dialects"):  # not dialects' own
            codes.add(kind.code)
        kinds += kind.__subclasses__()
    assert {code for code, _ in ERRORS} == codes
    assert set(STATES) == set(ExecutionState)
    assert set(STATES.values()) == {"RUNNING", "SUCCESS", "FAILED"}


async def test_secret_defaults_stay_masked_in_workflows_and_templates(api: Api) -> None:
    keyed = {**MEDIA, "name": "keyed"}
    keyed["parameters"] = {**MEDIA["parameters"], "api_key": {"secret": True, "default": CANARY}}
    # a schedule's inputs hold a secret value too
    keyed["schedules"] = [
        {
            "name": "nightly",
            "cron": "0 3 * * *",
            "inputs": {"api_key": CANARY + "-cron", "bucket": "b", "object": "o"},
        }
    ]
    await put(api, keyed)
    for path in ("/v2/workflows/keyed", "/v2/workflowtemplates/keyed"):
        r = await api.client.get(path, headers=api.auth())
        assert r.status_code == 200 and CANARY not in r.text and "******" in r.text
    # a workflow made from it still has the real default
    r = await api.client.post(
        url("/v2/workflows/copy", {"x-workflow-template-name": "keyed"}),
        json={"agency": "x"},
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    r = await start(api, api.auth(), graph="copy")
    await api.idle()
    who = await api.runtime.service.authenticate(api.token)
    record = await api.runtime.service.get_execution(who, r.json()["execution_name"])
    assert record.state is ExecutionState.COMPLETED
    path = url(f"/v2/workflowexecutions/{record.id}", {"x-workflow-graph-name": "copy"})
    assert CANARY not in (await api.client.get(path, headers=api.auth())).text


async def test_bad_starts_get_a_precise_error_and_change_nothing(api: Api) -> None:
    await put(api, MEDIA)
    r = await start(api, api.auth(), graph="nosuch")
    assert "nosuch" in assert_obs_error(r, 404, "NoSuchResource")
    r = await start(api, api.auth(), inputs={"colour": "red"})
    assert "/inputs/colour" in assert_obs_error(r, 400, "InvalidArgument")
    r = await start(api, api.auth(), inputs={"copies": "three"})
    message = assert_obs_error(r, 400, "InvalidArgument")
    assert "/inputs/copies" in message and "integer" in message
    required = {
        "name": "needs-who",
        "parameters": {"who": {"required": True}},
        "tasks": {"t": {"action": "echo", "with": {"who": "${{ params.who }}"}}},
    }
    await put(api, required)
    r = await start(api, api.auth(), graph="needs-who")
    assert "/inputs/who" in assert_obs_error(r, 400, "InvalidArgument")
    r = await api.client.post("/v2/workflows/media", json={"inputs": []}, headers=api.auth())
    message = assert_obs_error(r, 400, "InvalidArgument")
    assert "/bucket" in message and "/object" in message and "/inputs" in message
    # (a body declared JSON that does not parse is refused earlier, by the body guard)
    plain = {**api.auth(), "Content-Type": "text/plain"}
    r = await api.client.post("/v2/workflows/media", content=b"{nope", headers=plain)
    assert "not JSON" in assert_obs_error(r, 400, "InvalidArgument")
    r = await start(api, api.auth(), object="x" * 300)
    assert "/object" in assert_obs_error(r, 400, "InvalidArgument")
    q: dict[str, str | None] = {"x-workflow-graph-name": "media", "x-workflow-limit": "0"}
    r = await api.client.get(url("/v2/workflowexecutions", q), headers=api.auth())
    assert "x-workflow-limit" in assert_obs_error(r, 400, "InvalidArgument")
    q = {
        "x-workflow-graph-name": "media",
        "x-workflow-execution-type": "DONE",
    }
    r = await api.client.get(url("/v2/workflowexecutions", q), headers=api.auth())
    assert "DONE" in assert_obs_error(r, 400, "InvalidArgument")
    r = await api.client.get("/v2/workflowexecutions", headers=api.auth())
    assert "x-workflow-graph-name" in assert_obs_error(r, 400, "InvalidArgument")
    q = {"x-workflow-graph-name": "media"}
    r = await api.client.get(url("/v2/workflowexecutions", q), headers=api.auth())
    assert r.json()["count"] == 0  # nothing was started by the refused requests
    r = await api.client.get(
        url("/v2/workflowexecutions", {"x-workflow-graph-name": "needs-who"}), headers=api.auth()
    )
    assert r.json()["count"] == 0


async def test_bad_credentials_get_obs_errors(api: Api) -> None:
    await put(api, MEDIA)
    key = await new_key(api, "default", "operator")
    path = "/v2/workflows/media"
    body = json.dumps({"bucket": "b", "object": "o"}).encode()
    signed = sdk_sign(key, "POST", path, headers={"Content-Type": "application/json"})
    r = await api.client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert_obs_error(r, 403, "AccessDenied")
    r = await api.client.post(path, content=body, headers=bearer("not-a-token"))
    assert "unknown" in assert_obs_error(r, 403, "AccessDenied")
    wrong = {**signed, "Authorization": signed["Authorization"][:-4] + "AAA="}
    r = await api.client.post(path, content=body, headers=wrong)
    assert_obs_error(r, 403, "SignatureDoesNotMatch")
    stranger = {**signed, "Authorization": "OBS EFAAAAAAAAAAAAAAAAAA:" + "A" * 28}
    r = await api.client.post(path, content=body, headers=stranger)
    assert_obs_error(r, 403, "InvalidAccessKeyId")
    # the seed page's own Date, years off the server's time
    stale = sdk_sign(
        key,
        "POST",
        path,
        headers={"Content-Type": "application/json"},
        when=datetime(2020, 8, 27, 12, 38, 10, tzinfo=UTC),
    )
    assert stale["Date"] == "Thu, 27 Aug 2020 12:38:10 GMT"
    r = await api.client.post(path, content=body, headers=stale)
    assert_obs_error(r, 403, "RequestTimeTooSkewed")
    # signed for another path: the signature does not cover this request
    r = await api.client.post("/v2/workflows/other", content=body, headers=signed)
    assert_obs_error(r, 403, "SignatureDoesNotMatch")
    q: dict[str, str | None] = {"x-workflow-graph-name": "media"}
    r = await api.client.get(url("/v2/workflowexecutions", q), headers=api.auth())
    assert r.json()["count"] == 0
    # every other credential execflow knows works here too
    basic = base64.b64encode(f"{key['id']}:{key['secret']}".encode()).decode()
    for headers in ({"Authorization": f"Basic {basic}"}, {"X-Auth-Token": api.token}):
        r = await api.client.get(url("/v2/workflowexecutions", q), headers=headers)
        assert r.status_code == 200, r.text
    wrong_secret = base64.b64encode(f"{key['id']}:nope".encode()).decode()
    r = await api.client.get(
        url("/v2/workflowexecutions", q), headers={"Authorization": f"Basic {wrong_secret}"}
    )
    assert_obs_error(r, 403, "AccessDenied")


# who may call what ---------------------------------------------------------------------------

START, CREATE, DOCUMENT = "start", "create from template", "create from a document"
OUTSIDE = ("GET", "HEAD", "PUT", "POST", "DELETE")
GET, LIST = "get", "list by prefix"
# Every route of the dialect and the privilege it needs; a route that answers two calls
# (told apart by a query parameter) needs one privilege for each.
PRIVILEGES: dict[tuple[str, str], dict[str, Privilege]] = {
    ("POST", "/v2/workflows/{graph_name}"): {
        START: Privilege.SCHEDULE_EXECUTIONS,
        CREATE: Privilege.MANAGE_WORKFLOWS,
        DOCUMENT: Privilege.MANAGE_WORKFLOWS,
    },
    ("GET", "/v2/workflows/{graph_name}"): {GET: Privilege.VIEW, LIST: Privilege.VIEW},
    ("GET", "/v2/workflows"): {LIST: Privilege.VIEW},
    ("GET", "/v2/workflows/"): {LIST: Privilege.VIEW},
    ("PUT", "/v2/workflows/{graph_name}"): {"update": Privilege.MANAGE_WORKFLOWS},
    ("DELETE", "/v2/workflows/{graph_name}"): {"delete": Privilege.MANAGE_WORKFLOWS},
    ("POST", "/v2/workflowtemplates/{template_name}"): {"create": Privilege.MANAGE_WORKFLOWS},
    ("GET", "/v2/workflowtemplates/{template_name}"): {GET: Privilege.VIEW, LIST: Privilege.VIEW},
    ("GET", "/v2/workflowtemplates"): {LIST: Privilege.VIEW},
    ("GET", "/v2/workflowtemplates/"): {LIST: Privilege.VIEW},
    ("DELETE", "/v2/workflowtemplates/{template_name}"): {"delete": Privilege.MANAGE_WORKFLOWS},
    ("GET", "/v2/workflowexecutions"): {LIST: Privilege.VIEW},
    ("GET", "/v2/workflowexecutions/{execution_name}"): {GET: Privilege.VIEW},
    ("PUT", "/v2/workflowexecutions/{execution_name}"): {"restore": Privilege.MANAGE_EXECUTIONS},
    # calls outside Data+ (trigger policies, other OBS calls): refused alike for everyone
    **{(method, path): {} for method in OUTSIDE for path in ("/", "/{bucket}")},
}


def dialect_routes() -> Iterator[tuple[str, str]]:
    for route in router.routes:
        assert isinstance(route, APIRoute)
        for method in route.methods or ():
            yield method, route.path


def test_every_route_has_a_privilege_in_the_table() -> None:
    routes = set(dialect_routes())
    assert routes == set(PRIVILEGES), routes ^ set(PRIVILEGES)


def call_for(
    method: str, path: str, variant: str, role: str, failed: str
) -> tuple[str, dict[str, Any]]:
    """A request of this route's call, valid as far as it can be for a caller allowed it."""
    names = {
        "{graph_name}": "media" if variant not in (CREATE, DOCUMENT) else f"made-by-{role}",
        "{template_name}": f"template-of-{role}" if method == "POST" else "media",
        "{execution_name}": failed,
    }
    if method == "DELETE":
        names = {k: "nothing-here" for k in names}
    for part, value in names.items():
        path = path.replace(part, value)
    query: dict[str, str | None] = {}
    body: Any = None
    if variant == LIST and not path.endswith(
        ("workflows", "workflows/", "templates", "templates/")
    ):
        query["x-workflow-prefix"] = None
    if "workflowexecutions" in path:
        query["x-workflow-graph-name"] = "chain" if path.endswith(failed) else "media"
    if variant == START:
        body = {"bucket": "b", "object": "o"}
    elif variant == CREATE:
        query["x-workflow-template-name"] = "media"
        body = {"agency": "x"}
    elif variant == DOCUMENT:
        query["x-workflow-create"] = None
        body = {"states": states(MEDIA["tasks"])}
    elif method == "POST":
        body = {"states": states(MEDIA["tasks"])}
    elif variant == "update":
        body = {"description": f"by {role}"}
    return method, {"url": url(path, query), "json": body}


async def test_each_role_may_call_what_its_privileges_allow(api: Api, tmp_path: Path) -> None:
    admin = await new_token(api, "alpha", "admin")
    # the failing chain runs a python task: a new project may use it once allowed to
    r = await api.client.patch("/api/v1/projects/alpha", json={"actions": None}, headers=api.auth())
    assert r.status_code == 200, r.text
    await put(api, MEDIA, admin)
    await put(api, flaky_chain(tmp_path / "m", failures=10), admin)
    chain = await start(api, bearer(admin), graph="chain")
    failed = chain.json()["execution_name"]
    await api.idle()
    for role in ROLES:
        token = await new_token(api, "alpha", role)
        who = Principal("t", "p", "alpha", role)
        for (method, path), variants in PRIVILEGES.items():
            for variant, privilege in variants.items():
                method_, request = call_for(method, path, variant, role, failed)
                r = await api.client.request(method_, headers=bearer(token), **request)
                where = (role, method, path, variant, r.text)
                if allows(who, privilege):
                    assert r.status_code not in (401, 403), where
                    assert r.status_code < 500, where
                else:
                    assert "lacks" in assert_obs_error(r, 403, "AccessDenied"), where


async def test_another_projects_executions_and_workflows_are_not_found(api: Api) -> None:
    beta = await new_token(api, "beta", "admin")
    secret_doc = {**MEDIA, "name": "beta-only", "description": CANARY}
    await put(api, secret_doc, beta)
    r = await start(api, bearer(beta), graph="beta-only", inputs={"preset": "hd"})
    theirs = r.json()["execution_name"]
    await api.idle()
    alpha = await new_token(api, "alpha", "admin")
    await put(api, MEDIA, alpha)
    q: dict[str, str | None] = {"x-workflow-graph-name": "beta-only"}
    asks = [
        ("GET", url(f"/v2/workflowexecutions/{theirs}", q)),
        ("PUT", url(f"/v2/workflowexecutions/{theirs}", q)),
        ("GET", url(f"/v2/workflowexecutions/{theirs}", {"x-workflow-graph-name": "media"})),
        ("GET", url("/v2/workflowexecutions", q)),
        ("GET", "/v2/workflows/beta-only"),
        ("GET", "/v2/workflowtemplates/beta-only"),
        ("PUT", "/v2/workflows/beta-only"),
        ("DELETE", "/v2/workflows/beta-only"),
        ("DELETE", "/v2/workflowtemplates/beta-only"),
        ("POST", url("/v2/workflows/mine", {"x-workflow-template-name": "beta-only"})),
    ]
    for method, target in asks:
        body = {"agency": "x"} if method == "POST" else None
        r = await api.client.request(method, target, json=body, headers=bearer(alpha))
        assert_obs_error(r, 404, "NoSuchResource")
        assert CANARY not in r.text and "demo-bucket" not in r.text
    r = await start(api, bearer(alpha), graph="beta-only")
    assert_obs_error(r, 404, "NoSuchResource")
    listed = await api.client.get(
        url("/v2/workflows/", {"x-workflow-prefix": None}), headers=bearer(alpha)
    )
    assert [g["name"] for g in listed.json()["graphs"]] == ["media"]
    # and it is all still there for its own project
    r = await api.client.get(url(f"/v2/workflowexecutions/{theirs}", q), headers=bearer(beta))
    assert r.json()["execution_info"]["execution_state"] == "SUCCESS"


# Huawei's SDK, unmodified, against a live server ------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server = Live(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


def test_the_obs_sdk_drives_workflows_and_executions(live: Live, tmp_path: Path) -> None:
    r = live.client.post(
        "/api/v1/projects/default/access-keys", json={"role": "developer", "description": "sdk"}
    )
    assert r.status_code == 201, r.text
    key = r.json()
    for doc in (MEDIA, flaky_chain(tmp_path / "marker", failures=1)):
        assert live.client.put(f"/api/v1/workflows/{doc['name']}", json=doc).status_code == 201
    sdk = WorkflowClient(access_key_id=key["id"], secret_access_key=key["secret"], server=live.url)
    try:
        resp = sdk.asyncAPIStartWorkflow(
            "media", "demo-bucket", "/mpc/demo.mp4", inputs={"preset": "hd"}
        )
        assert resp.status == 200, (resp.errorCode, resp.errorMessage)
        name = resp.body.executionName
        assert resp.body.executionUrn.endswith(f":media:{name}:default")

        def finished(graph: str, execution: str, state: str) -> dict[str, Any] | None:
            got = sdk.getWorkflowExecution(execution, graph)
            assert got.status == 200, got.errorMessage
            info: dict[str, Any] = got.body.executionInfo
            return info if info["execution_state"] == state else None

        info = poll("the execution to end", lambda: finished("media", name, "SUCCESS"))
        assert json.loads(info["output"]) == {"from": "demo-bucket//mpc/demo.mp4"}
        second = sdk.asyncAPIStartWorkflow("media", "b", "o").body.executionName
        poll("the second to end", lambda: finished("media", second, "SUCCESS"))
        listed = sdk.listWorkflowExecution("media", limit=5, executionState="SUCCESS")
        assert listed.status == 200
        assert [e["execution_name"] for e in listed.body.executions] == [second, name]
        first = sdk.listWorkflowExecution("media", limit=1)
        assert first.body.isTruncated and first.body.executions[0]["execution_name"] == second
        rest = sdk.listWorkflowExecution("media", limit=1, nextMarker=first.body.nextMarker)
        assert [e["execution_name"] for e in rest.body.executions] == [name]
        assert not rest.body.isTruncated
        # Starts in a loop fall within one second, with one date and so one signature
        # (V2 covers no body): each is answered 503 after the first, which the SDK retries,
        # signing anew. Every start is taken once.
        quick = [sdk.asyncAPIStartWorkflow("media", "b", f"o{i}") for i in range(4)]
        assert [resp.status for resp in quick] == [200] * 4
        assert len({resp.body.executionName for resp in quick}) == 4
        # restore a failed one
        failing = sdk.asyncAPIStartWorkflow("chain", "b", "o").body.executionName
        poll("the execution to fail", lambda: finished("chain", failing, "FAILED"))
        restored = sdk.restoreFailedWorkflowExecution(failing, "chain")
        assert restored.status == 200 and restored.body.executionName == failing
        poll("the execution to succeed", lambda: finished("chain", failing, "SUCCESS"))
        # templates and workflows
        made = sdk.createWorkflowTemplate(
            "tpl",
            description="d",
            states=states(MEDIA["tasks"]),
            inputs=as_inputs(MEDIA["parameters"]),
        )
        assert made.status == 201 and made.body.templateName == "tpl"
        assert sdk.getWorkflowTemplate("tpl").body.states == states(MEDIA["tasks"])
        assert sdk.listWorkflowTemplate("t").body.count == 1
        graph = sdk.createWorkflow("tpl", "from-tpl", "agency", description="copy")
        assert graph.status == 201 and graph.body.graphName == "from-tpl"
        assert sdk.getWorkflow("from-tpl").body.description == "copy"
        updated = sdk.updateWorkflow("from-tpl", description="changed")
        assert updated.status == 200 and updated.body.graphName == "from-tpl"
        names = [g["name"] for g in sdk.listWorkflow().body.graphs]
        assert sorted(names) == ["chain", "from-tpl", "media", "tpl"]
        assert sdk.deleteWorkflow("from-tpl").status == 204
        assert sdk.deleteWorkflowTemplate("tpl").status == 204
        # errors reach the SDK's own fields
        missing = sdk.getWorkflow("from-tpl")
        assert (missing.status, missing.errorCode) == (404, "NoSuchResource")
        assert missing.requestId
        refused = sdk.asyncAPIStartWorkflow("media", "b", "o", inputs={"colour": "red"})
        assert refused.errorCode == "InvalidArgument" and "colour" in refused.errorMessage
    finally:
        sdk.close()


def test_the_obs_sdk_gets_obs_errors_for_trigger_policies_in_both_styles(live: Live) -> None:
    """Path style (`/{bucket}?…`, what the SDK sends to an IP address) and the bucket in the
    host name (`/?…`, here by `is_cname`): both are OBS's, not EMR's RPC at `/`."""
    key = live.client.post("/api/v1/projects/default/access-keys", json={"role": "developer"})
    assert key.status_code == 201, key.text
    for cname in (False, True):
        sdk = WorkflowClient(
            access_key_id=key.json()["id"],
            secret_access_key=key.json()["secret"],
            server=live.url,
            is_cname=cname,
        )
        try:
            for resp in (
                sdk.getTriggerPolicy("demo-bucket"),
                sdk.putTriggerPolicy("demo-bucket", [{"event_source": "OBS"}]),
                sdk.deleteTriggerPolicy("demo-bucket"),
            ):
                assert (resp.status, resp.errorCode) == (405, "MethodNotAllowed"), cname
                assert "trigger policies are not supported" in resp.errorMessage
                assert resp.requestId
        finally:
            sdk.close()
    log = live.log.read_text()
    assert "/demo-bucket?obsworkflowtriggerpolicy" in log and "/?obsworkflowtriggerpolicy" in log


def test_the_obs_sdk_runs_a_data_plus_template_to_its_end(live: Live) -> None:
    """A template in Data+'s own syntax, created and used as a Data+ user does: template,
    workflow from it, start, poll to the end, outputs; a state execflow cannot run is
    refused at the request's own path."""
    key = live.client.post("/api/v1/projects/default/access-keys", json={"role": "developer"})
    assert key.status_code == 201, key.text
    sdk = WorkflowClient(
        access_key_id=key.json()["id"], secret_access_key=key.json()["secret"], server=live.url
    )
    try:
        made = sdk.createWorkflowTemplate(
            "thumbs",
            description=DATA_PLUS["description"],
            states=DATA_PLUS["states"],
            inputs=DATA_PLUS["inputs"],
        )
        assert made.status == 201, (made.errorCode, made.errorMessage)
        got = sdk.getWorkflowTemplate("thumbs")
        assert [s["name"] for s in got.body.states] == ["probe", "settle", "thumbnail"]
        graph = sdk.createWorkflow("thumbs", "thumbs-hd", "agency", parameters={"size": 96})
        assert graph.status == 201, (graph.errorCode, graph.errorMessage)
        started = sdk.asyncAPIStartWorkflow("thumbs-hd", "demo-bucket", "/mpc/demo.mp4")
        assert started.status == 200, (started.errorCode, started.errorMessage)
        name = started.body.executionName

        def ended() -> dict[str, Any] | None:
            info: dict[str, Any] = sdk.getWorkflowExecution(name, "thumbs-hd").body.executionInfo
            return info if info["execution_state"] != "RUNNING" else None

        info = poll("the execution to end", ended)
        assert info["execution_state"] == "SUCCESS", info
        assert json.loads(info["output"])["thumbnail"]["size"] == 96
        refused = sdk.createWorkflowTemplate(
            "branching", states=with_state(2, type="Switch")["states"]
        )
        assert (refused.status, refused.errorCode) == (400, "InvalidArgument")
        assert "/states/2/type" in refused.errorMessage
    finally:
        sdk.close()
