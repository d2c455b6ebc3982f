"""Workflows, executions and the error contract of the native API, through the real ASGI app."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from execflow.api import create_app
from tests.test_api import HELLO, Api, api  # noqa: F401

YAML = "application/yaml"
ERROR_KEYS = {"id", "description", "details", "request_id"}

HELLO_YAML = """\
name: hello
parameters:
  who: {type: string, required: true}
  times: {type: integer, default: 2}
  secret: {type: string, secret: true}
tasks:
  greet:
    action: echo
    with: {text: "hello ${{ params.who }}"}
  again:
    action: echo
    needs: [greet]
    with:
      n: "${{ params.times }}"
      prev: "${{ tasks.greet.output.text }}"
outputs:
  text: "${{ tasks.again.output.prev }}"
  n: "${{ tasks.again.output.n }}"
"""


def single(name: str, task: str = "only", **extra: Any) -> dict[str, Any]:
    """A one-task workflow; `task` names the task so that a test can see which revision ran."""
    return {"name": name, "tasks": {task: {"action": "echo", "with": {"task": task}}}, **extra}


def pointers(r: httpx.Response) -> dict[str, str]:
    return {d["pointer"]: d["reason"] for d in r.json()["error"]["details"]}


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """The one error shape, with the request id of the response header."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["id"], str) and error["id"]
    assert isinstance(error["description"], str) and error["description"]
    assert isinstance(error["details"], list)
    assert error["request_id"] == r.headers["x-request-id"]
    return error


@asynccontextmanager
async def lenient(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client over a fresh app on the same runtime that returns 500s instead of raising."""
    transport = httpx.ASGITransport(app=create_app(api.runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def put(api: Api, definition: dict[str, Any], name: str | None = None) -> httpx.Response:
    path = f"/api/v1/workflows/{name or definition['name']}"
    return await api.client.put(path, json=definition, headers=api.auth())


async def put_yaml(api: Api, name: str, text: str | bytes) -> httpx.Response:
    headers = {**api.auth(), "Content-Type": YAML}
    return await api.client.put(f"/api/v1/workflows/{name}", content=text, headers=headers)


async def start(api: Api, workflow: str = "hello", **body: Any) -> httpx.Response:
    if workflow == "hello":
        body.setdefault("inputs", {"who": "ada"})
    return await api.client.post(
        f"/api/v1/workflows/{workflow}/executions", json=body, headers=api.auth()
    )


async def started(api: Api, workflow: str = "hello", **body: Any) -> str:
    r = await start(api, workflow, **body)
    assert r.status_code == 202, r.text
    execution_id: str = r.json()["id"]
    return execution_id


async def execution(api: Api, execution_id: str) -> dict[str, Any]:
    r = await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def listed(api: Api, **params: Any) -> list[str]:
    r = await api.client.get("/api/v1/executions", params=params, headers=api.auth())
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


# PUT / GET workflows ---------------------------------------------------------------------


async def test_put_creates_then_revises_and_an_identical_put_is_a_no_op(api: Api) -> None:
    r = await put(api, HELLO)
    assert r.status_code == 201, r.text
    assert r.json()["revision"] == 1
    assert r.json()["created"] is True
    r = await put(api, HELLO)
    assert r.status_code == 200, r.text
    assert (r.json()["revision"], r.json()["created"]) == (1, False)
    r = await put(api, {**HELLO, "description": "greets"})
    assert r.status_code == 200, r.text
    assert (r.json()["revision"], r.json()["created"]) == (2, False)
    assert r.json()["description"] == "greets"
    r = await put(api, {**HELLO, "description": "greets"})
    assert (r.status_code, r.json()["revision"]) == (200, 2)


async def test_yaml_and_json_of_the_same_definition_are_one_revision(api: Api) -> None:
    r = await put_yaml(api, "hello", HELLO_YAML)
    assert r.status_code == 201, r.text
    assert r.json()["revision"] == 1
    r = await put(api, HELLO)
    assert (r.status_code, r.json()["revision"]) == (200, 1)
    r = await put_yaml(api, "hello", HELLO_YAML.replace("required: true", "required: false"))
    assert (r.status_code, r.json()["revision"]) == (200, 2)
    r = await api.client.get("/api/v1/workflows/hello/revisions/1", headers=api.auth())
    assert r.json()["definition"] == HELLO


async def test_yaml_content_type_variants_are_accepted(api: Api) -> None:
    headers = {**api.auth(), "Content-Type": "application/x-yaml; charset=utf-8"}
    r = await api.client.put("/api/v1/workflows/hello", content=HELLO_YAML, headers=headers)
    assert r.status_code == 201, r.text
    headers = {**api.auth(), "Content-Type": "application/json; charset=utf-8"}
    r = await api.client.put("/api/v1/workflows/hello", content=json.dumps(HELLO), headers=headers)
    assert (r.status_code, r.json()["revision"]) == (200, 1)


async def test_list_and_get_workflows_and_revisions(api: Api) -> None:
    await put(api, single("zeta"))
    await put(api, HELLO)
    changed = {**HELLO, "description": "second"}
    await put(api, changed)
    r = await api.client.get("/api/v1/workflows", headers=api.auth())
    assert r.status_code == 200, r.text
    items = {wf["name"]: wf for wf in r.json()["items"]}
    assert set(items) == {"hello", "zeta"}
    assert (items["hello"]["revision"], items["zeta"]["revision"]) == (2, 1)
    assert items["hello"]["description"] == "second"

    r = await api.client.get("/api/v1/workflows/hello", headers=api.auth())
    assert r.status_code == 200, r.text
    latest = r.json()
    assert (latest["name"], latest["revision"]) == ("hello", 2)
    assert latest["definition"] == changed

    first = await api.client.get("/api/v1/workflows/hello/revisions/1", headers=api.auth())
    second = await api.client.get("/api/v1/workflows/hello/revisions/2", headers=api.auth())
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["revision"], first.json()["definition"]) == (1, HELLO)
    assert second.json() == latest
    assert first.json()["digest"] != second.json()["digest"]

    for path in ("/api/v1/workflows/hello/revisions/3", "/api/v1/workflows/hello/revisions/0"):
        assert_error(await api.client.get(path, headers=api.auth()), 404)
    assert_error(await api.client.get("/api/v1/workflows/nope", headers=api.auth()), 404)


async def test_invalid_definition_names_every_problem_and_stores_nothing(api: Api) -> None:
    bad = {
        "name": "broken",
        "tasks": {
            "a": {"action": "echo", "needs": ["b"]},
            "b": {"action": "echo", "needs": ["a"]},
            "c": {"action": "teleport"},
        },
    }
    error = assert_error(await put(api, bad), 422)
    assert error["id"] == "invalid_definition"
    found = {d["pointer"]: d["reason"] for d in error["details"]}
    assert "teleport" in found.pop("/tasks/c/action")
    [(where, why)] = found.items()
    assert re.fullmatch(r"/tasks/[ab]/needs", where), where
    assert "cycle" in why
    r = await api.client.get("/api/v1/workflows", headers=api.auth())
    assert r.json()["items"] == []
    assert_error(await api.client.get("/api/v1/workflows/broken", headers=api.auth()), 404)


async def test_an_invalid_revision_leaves_the_workflow_as_it_was(api: Api) -> None:
    await put(api, HELLO)
    broken = {**HELLO, "tasks": {"greet": {"action": "echo", "needs": ["ghost"]}}}
    error = assert_error(await put(api, broken), 422)
    assert "/tasks/greet/needs/0" in {d["pointer"] for d in error["details"]}
    r = await api.client.get("/api/v1/workflows/hello", headers=api.auth())
    assert (r.json()["revision"], r.json()["definition"]) == (1, HELLO)


async def test_a_name_in_the_body_must_match_the_path(api: Api) -> None:
    error = assert_error(await put(api, single("other"), name="hello"), 422)
    assert "/name" in {d["pointer"] for d in error["details"]}
    assert_error(await api.client.get("/api/v1/workflows/other", headers=api.auth()), 404)
    assert_error(await api.client.get("/api/v1/workflows/hello", headers=api.auth()), 404)


async def test_a_missing_name_is_taken_from_the_path(api: Api) -> None:
    body = single("x")
    del body["name"]
    r = await put(api, body, name="from-path")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "from-path"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"name": "hello", "tasks": '),
        ("application/json", b"\xff\xfe\x00garbage"),
        ("application/json", b""),
        ("application/json", b"[1, 2]"),
        ("application/json", b"null"),
        (YAML, b"name: hello\ntasks: [\n"),
        (YAML, b"name: hello\ntasks: *nowhere\n"),
        (YAML, b"!!python/object:os.system {}\n"),
        (YAML, b"- just\n- a list\n"),
        (YAML, b"? [a, b]\n: c\n"),
    ],
)
async def test_malformed_documents_get_422(api: Api, content_type: str, body: bytes) -> None:
    async with lenient(api) as client:
        headers = {**api.auth(), "Content-Type": content_type}
        r = await client.put("/api/v1/workflows/hello", content=body, headers=headers)
    assert_error(r, 422)
    r = await api.client.get("/api/v1/workflows", headers=api.auth())
    assert r.json()["items"] == []


async def test_duplicate_keys_are_reported_with_their_pointer(api: Api) -> None:
    text = b'{"name": "hello", "tasks": {"a": {"action": "echo"}, "a": {"action": "echo"}}}'
    headers = {**api.auth(), "Content-Type": "application/json"}
    r = await api.client.put("/api/v1/workflows/hello", content=text, headers=headers)
    assert "/tasks/a" in pointers(r)
    r = await put_yaml(api, "hello", "name: hello\nname: hello\ntasks: {a: {action: echo}}\n")
    assert "/name" in {d["pointer"] for d in assert_error(r, 422)["details"]}


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
async def test_an_unsupported_content_type_gets_415_saying_what_to_send(
    api: Api, content_type: str
) -> None:
    headers = {**api.auth(), "Content-Type": content_type}
    r = await api.client.put("/api/v1/workflows/hello", content=json.dumps(HELLO), headers=headers)
    error = assert_error(r, 415)
    [detail] = error["details"]
    assert detail["pointer"] == "header:Content-Type"
    assert "application/json" in detail["reason"] and "application/yaml" in detail["reason"]
    assert_error(await api.client.get("/api/v1/workflows/hello", headers=api.auth()), 404)


@pytest.mark.parametrize(
    "text",
    [
        "name: hello\ntasks:\n  1: {action: echo}\n",
        "name: hello\nparameters:\n  7: {type: string}\ntasks:\n  a: {action: echo}\n",
    ],
)
async def test_non_string_keys_in_yaml_get_422(api: Api, text: str) -> None:
    async with lenient(api) as client:
        headers = {**api.auth(), "Content-Type": YAML}
        r = await client.put("/api/v1/workflows/hello", content=text, headers=headers)
    assert_error(r, 422)


async def test_non_standard_json_constants_get_422(api: Api) -> None:
    text = b'{"name": "hello", "tasks": {"a": {"action": "echo", "with": {"x": NaN}}}}'
    headers = {**api.auth(), "Content-Type": "application/json"}
    r = await api.client.put("/api/v1/workflows/hello", content=text, headers=headers)
    assert_error(r, 422)


async def test_a_workflow_name_with_a_trailing_newline_is_rejected(api: Api) -> None:
    body = single("x")
    del body["name"]
    r = await put(api, body, name="hello%0A")
    assert_error(r, 422)


# DELETE -----------------------------------------------------------------------------------


async def test_delete_is_refused_while_an_execution_is_active(api: Api) -> None:
    await put(api, HELLO)
    execution_id = await started(api)
    assert (await execution(api, execution_id))["state"] == "INITIALIZING"
    error = assert_error(
        await api.client.delete("/api/v1/workflows/hello", headers=api.auth()), 409
    )
    assert error["id"] == "conflict"
    r = await api.client.get("/api/v1/workflows/hello", headers=api.auth())
    assert r.status_code == 200

    await api.idle()
    assert (await execution(api, execution_id))["state"] == "COMPLETED"
    r = await api.client.delete("/api/v1/workflows/hello", headers=api.auth())
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_error(await api.client.get("/api/v1/workflows/hello", headers=api.auth()), 404)
    assert_error(await api.client.delete("/api/v1/workflows/hello", headers=api.auth()), 404)
    path = f"/api/v1/executions/{execution_id}"
    assert_error(await api.client.get(path, headers=api.auth()), 404)
    r = await put(api, HELLO)
    assert (r.status_code, r.json()["revision"]) == (201, 1)


# POST executions ----------------------------------------------------------------------------


async def test_revision_pins_an_older_definition(api: Api) -> None:
    await put(api, single("pin", task="first"))
    r = await put(api, single("pin", task="second"))
    assert r.json()["revision"] == 2
    old = await started(api, "pin", revision=1)
    new = await started(api, "pin")
    await api.idle()
    old_detail, new_detail = await execution(api, old), await execution(api, new)
    assert (old_detail["revision"], old_detail["state"]) == (1, "COMPLETED")
    assert [t["task"] for t in old_detail["tasks"]] == ["first"]
    assert old_detail["tasks"][0]["output"] == {"task": "first"}
    assert (new_detail["revision"], [t["task"] for t in new_detail["tasks"]]) == (2, ["second"])


@pytest.mark.parametrize("revision", [0, 3, -1])
async def test_an_unknown_revision_gets_422_naming_revision(api: Api, revision: int) -> None:
    await put(api, single("pin", task="first"))
    await put(api, single("pin", task="second"))
    error = assert_error(await start(api, "pin", revision=revision), 422)
    assert "/revision" in {d["pointer"] for d in error["details"]}
    assert await listed(api) == []


async def test_an_unknown_workflow_gets_404(api: Api) -> None:
    assert_error(await start(api, "ghost"), 404)


async def test_a_name_reused_with_the_same_inputs_gives_the_same_execution(api: Api) -> None:
    await put(api, HELLO)
    await put(api, single("other"))
    first = await started(api, name="nightly-1")
    again = await start(api, name="nightly-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first
    assert again.headers["location"] == f"/api/v1/executions/{first}"
    assert await listed(api) == [first]
    # unique per workflow, not per project
    await started(api, "other", name="nightly-1")


async def test_a_name_reused_with_other_inputs_gets_409_naming_them(api: Api) -> None:
    await put(api, HELLO)
    first = await started(api, name="nightly-1", inputs={"who": "ada", "secret": "a"})
    r = await start(api, name="nightly-1", inputs={"who": "bob", "times": 2, "secret": "b"})
    error = assert_error(r, 409)
    assert "nightly-1" in error["description"] and first in error["description"]
    assert pointers(r) == {
        "/inputs/secret": "differs from the existing execution's",
        "/inputs/who": "differs from the existing execution's",
    }
    assert await listed(api) == [first]


async def test_bad_label_keys_get_422_naming_each_label(api: Api) -> None:
    await put(api, HELLO)
    labels = {"ok": "1", "-dash-first": "2", "has space": "3", "x" * 64: "4"}
    error = assert_error(await start(api, labels=labels), 422)
    found = {d["pointer"] for d in error["details"]}
    assert found == {"/labels/-dash-first", "/labels/has space", "/labels/" + "x" * 64}
    assert await listed(api) == []


async def test_an_unknown_field_in_a_start_body_gets_422(api: Api) -> None:
    await put(api, HELLO)
    error = assert_error(await start(api, colour="red"), 422)
    assert "/colour" in {d["pointer"] for d in error["details"]}
    r = await api.client.post(
        "/api/v1/workflows/hello/executions",
        content=b"{not json",
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert_error(r, 422)
    assert await listed(api) == []


@pytest.mark.parametrize(
    ("body", "pointer"),
    [({"name": "run\n"}, "/name"), ({"labels": {"team\n": "a"}}, "/labels/team\n")],
)
async def test_names_with_a_trailing_newline_are_rejected(
    api: Api, body: dict[str, Any], pointer: str
) -> None:
    await put(api, HELLO)
    error = assert_error(await start(api, **body), 422)
    assert pointer in {d["pointer"] for d in error["details"]}


# GET executions -------------------------------------------------------------------------------


async def test_executions_are_listed_newest_first_and_filtered(api: Api) -> None:
    await put(api, HELLO)
    await put(api, single("other"))
    a = await started(api, labels={"team": "a", "env": "prod"})
    b = await started(api, labels={"team": "b", "env": "prod"})
    c = await started(api, "other", labels={"team": "a"})
    await api.idle()
    d = await started(api, labels={"team": "a", "env": "dev"})

    assert await listed(api) == [d, c, b, a]
    assert await listed(api, workflow="hello") == [d, b, a]
    assert await listed(api, workflow="other") == [c]
    assert await listed(api, workflow="ghost") == []
    assert await listed(api, state="COMPLETED") == [c, b, a]
    assert await listed(api, state="INITIALIZING") == [d]
    assert await listed(api, state="FAILED") == []
    assert await listed(api, label="team=a") == [d, c, a]
    assert await listed(api, label=["team=a", "env=prod"]) == [a]
    assert await listed(api, label="env=prod", workflow="hello", state="COMPLETED") == [b, a]
    assert await listed(api, label="team=z") == []

    r = await api.client.get("/api/v1/executions", headers=api.auth())
    first = r.json()["items"][0]
    assert (first["id"], first["workflow"], first["labels"]) == (
        d,
        "hello",
        {"team": "a", "env": "dev"},
    )
    assert r.json()["next_cursor"] is None


async def test_keyset_pagination_walks_every_execution_once(api: Api) -> None:
    await put(api, HELLO)
    created = [await started(api) for _ in range(7)]
    await api.idle()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        r = await api.client.get("/api/v1/executions", params=params, headers=api.auth())
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    assert pages == 3
    # a page that ends exactly at the last item says there is no more
    r = await api.client.get("/api/v1/executions", params={"limit": 7}, headers=api.auth())
    assert (len(r.json()["items"]), r.json()["next_cursor"]) == (7, None)


@pytest.mark.parametrize(
    "params",
    [
        {"state": "DONE"},
        {"cursor": "not-a-cursor"},
        {"cursor": "!!!"},
        {"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()},
        {"label": "novalue"},
        {"label": "=x"},
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
    ],
)
async def test_bad_list_parameters_get_422(api: Api, params: dict[str, Any]) -> None:
    async with lenient(api) as client:
        r = await client.get("/api/v1/executions", params=params, headers=api.auth())
    assert_error(r, 422)


async def test_a_forged_cursor_without_a_timezone_gets_422(api: Api) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(["2020-01-01T00:00:00", "x"]).encode())
    async with lenient(api) as client:
        r = await client.get(
            "/api/v1/executions", params={"cursor": cursor.decode()}, headers=api.auth()
        )
    assert_error(r, 422)


# cancel --------------------------------------------------------------------------------------


async def test_cancel_ends_an_execution_and_cancelling_again_is_a_conflict(api: Api) -> None:
    await put(api, HELLO)
    execution_id = await started(api)
    r = await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=api.auth())
    assert r.status_code == 202, r.text
    assert r.json()["id"] == execution_id
    await api.idle()
    detail = await execution(api, execution_id)
    assert detail["state"] == "CANCELED"
    assert detail["cancel_requested"] is True
    assert detail["ended_at"] is not None
    assert detail["outputs"] is None
    r = await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=api.auth())
    assert assert_error(r, 409)["id"] == "conflict"


async def test_cancelling_a_completed_execution_is_a_conflict(api: Api) -> None:
    await put(api, HELLO)
    execution_id = await started(api)
    await api.idle()
    r = await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=api.auth())
    assert_error(r, 409)
    assert (await execution(api, execution_id))["state"] == "COMPLETED"
    r = await api.client.post("/api/v1/executions/ghost/cancel", headers=api.auth())
    assert_error(r, 404)


# request ids and the error shape -----------------------------------------------------------


async def test_every_response_carries_a_request_id(api: Api) -> None:
    responses = [
        await api.client.get("/healthz"),
        await put(api, HELLO),
        await api.client.get("/api/v1/workflows", headers=api.auth()),
        await api.client.get("/api/v1/workflows"),
        await api.client.get("/api/v1/workflows/ghost", headers=api.auth()),
        await api.client.delete("/api/v1/workflows/hello", headers=api.auth()),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("given", ["abc-123", "trace:1.2_3", "x" * 128])
async def test_a_well_formed_request_id_is_echoed(api: Api, given: str) -> None:
    headers = {**api.auth(), "X-Request-ID": given}
    ok = await api.client.get("/api/v1/workflows", headers=headers)
    assert ok.headers["x-request-id"] == given
    missing = await api.client.get("/api/v1/workflows/ghost", headers=headers)
    assert assert_error(missing, 404)["request_id"] == given


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "semi;colon", "<script>"])
async def test_a_malformed_request_id_is_replaced(api: Api, given: str) -> None:
    headers = {**api.auth(), "X-Request-ID": given}
    r = await api.client.get("/api/v1/workflows/ghost", headers=headers)
    rid = assert_error(r, 404)["request_id"]
    assert rid and rid != given
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid)


async def test_every_error_has_the_one_shape(api: Api) -> None:
    await put(api, HELLO)
    execution_id = await started(api, name="once")
    a = api.auth()
    cases: list[tuple[int, httpx.Response]] = [
        (401, await api.client.get("/api/v1/workflows")),
        (404, await api.client.get("/api/v1/workflows/ghost", headers=a)),
        (404, await api.client.get("/api/v1/executions/ghost", headers=a)),
        (404, await api.client.get("/api/v1/no-such-route", headers=a)),
        (405, await api.client.patch("/api/v1/workflows/hello", headers=a)),
        (409, await api.client.delete("/api/v1/workflows/hello", headers=a)),
        (409, await start(api, name="once", inputs={"who": "someone else"})),
        (422, await start(api, inputs={"times": "x"})),
        (422, await start(api, bogus=1)),
        (422, await api.client.get("/api/v1/workflows/hello/revisions/x", headers=a)),
        (422, await api.client.get("/api/v1/executions", params={"state": "NOPE"}, headers=a)),
        (422, await put(api, single("other"), name="hello")),
    ]
    for status, r in cases:
        assert_error(r, status)
    await api.idle()
    assert (await execution(api, execution_id))["state"] == "COMPLETED"


async def test_an_unexpected_error_still_has_the_shape_and_a_request_id(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(api.runtime.service, "list_workflows", boom)
    async with lenient(api) as client:
        r = await client.get(
            "/api/v1/workflows", headers={**api.auth(), "X-Request-ID": "trace-500"}
        )
    assert r.status_code == 500
    assert "database" not in r.text
    assert r.headers.get("x-request-id") == "trace-500"
    assert assert_error(r, 500)["id"] == "internal_error"


async def test_what_the_engine_could_not_run_is_refused_at_the_door(api: Api) -> None:
    """A sleep longer than any clock, an unknown filter and an expression that would run
    for seconds are refused when the workflow is stored, each at its pointer, at once."""
    bad = {
        "name": "poison",
        "parameters": {"x": {"type": "string", "default": "a"}},
        "tasks": {
            "nap": {"action": "sleep", "with": {"duration": "99999999999999999999d"}},
            "filtered": {"action": "echo", "with": {"v": "${{ params.x | nosuchfilter }}"}},
            "costly": {"action": "echo", "with": {"v": "${{ 7 ** (10 ** 7) }}"}},
            "wide": {"action": "echo", "with": {"v": "${{ 'a' * 10 ** 7 }}"}},
        },
    }
    error = assert_error(await put(api, bad), 422)
    found = pointers_of(error)
    assert set(found) == {
        "/tasks/nap/with/duration",
        "/tasks/filtered/with/v",
        "/tasks/costly/with/v",
        "/tasks/wide/with/v",
    }, found
    assert "nosuchfilter" in found["/tasks/filtered/with/v"]
    r = await api.client.get("/api/v1/workflows", headers=api.auth())
    assert r.json()["items"] == []


async def test_an_input_that_would_overflow_a_duration_fails_the_start(api: Api) -> None:
    wf = {
        "name": "waits",
        "parameters": {"wait": {"type": "string", "default": "1s"}},
        "tasks": {"nap": {"action": "sleep", "with": {"duration": "${{ params.wait }}"}}},
    }
    assert (await put(api, wf)).status_code == 201
    for wait in ("99999999999999999999d", "401d", "soon"):
        r = await api.client.post(
            "/api/v1/workflows/waits/executions",
            json={"inputs": {"wait": wait}},
            headers=api.auth(),
        )
        error = assert_error(r, 422)
        assert list(pointers_of(error)) == ["/inputs/wait"], error
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []


def pointers_of(error: dict[str, Any]) -> dict[str, str]:
    return {d["pointer"]: d["reason"] for d in error["details"]}
