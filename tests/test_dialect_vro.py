"""The vRO dialect: VMware vRealize / Aria Orchestrator's workflow-run API over execflow,
through the real ASGI app, with the engine driven until idle. Requests are sent as vRO's
reference and its clients write them (there is no official vRO Python SDK)."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from execflow.api.dialects import vro
from execflow.api.dialects.vro_shapes import STATES
from execflow.states import ExecutionState
from tests.test_access_keys import new_key
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token

DEFAULTS: dict[str, Any] = {
    "name": "defaults",
    "parameters": {"who": {"type": "string", "default": "world"}},
    "tasks": {"greet": {"action": "echo", "with": {"text": "hello ${{ params.who }}"}}},
    "outputs": {"text": "${{ tasks.greet.output.text }}"},
}

PROVISION: dict[str, Any] = {
    "name": "provision",
    "parameters": {
        "host": {"type": "string", "required": True},
        "cpus": {"type": "integer", "default": 1},
        "ratio": {"type": "number", "default": 0.5},
        "dry": {"type": "boolean", "default": False},
        "tags": {"type": "array", "default": []},
        "meta": {"type": "object", "default": {}},
        "when": {"type": "string"},
        "password": {"type": "string", "secret": True},
    },
    "tasks": {
        "plan": {
            "action": "echo",
            "with": {
                "host": "${{ params.host }}",
                "cpus": "${{ params.cpus }}",
                "tags": "${{ params.tags }}",
                "meta": "${{ params.meta }}",
            },
        },
        "apply": {"action": "echo", "needs": ["plan"], "with": {"dry": "${{ params.dry }}"}},
    },
    "outputs": {
        "host": "${{ tasks.plan.output.host }}",
        "cpus": "${{ tasks.plan.output.cpus }}",
        "tags": "${{ tasks.plan.output.tags }}",
        "meta": "${{ tasks.plan.output.meta }}",
        "dry": "${{ tasks.apply.output.dry }}",
    },
}

APPROVAL: dict[str, Any] = {
    "name": "approval",
    "tasks": {
        "ask": {
            "action": "signal",
            "with": {
                "name": "approve",
                "description": "Approve the change",
                "schema": {
                    "type": "object",
                    "properties": {
                        "approved": {"type": "boolean", "description": "Go ahead?"},
                        "comment": {"type": "string"},
                    },
                    "required": ["approved"],
                },
            },
        },
        "done": {
            "action": "echo",
            "needs": ["ask"],
            "with": {"approved": "${{ tasks.ask.output.approved }}"},
        },
    },
    "outputs": {"approved": "${{ tasks.done.output.approved }}"},
}

FAILS: dict[str, Any] = {
    "name": "fails",
    "tasks": {
        "boom": {
            "action": "python",
            "with": {"function": "tests.fixtures.tasks:boom", "args": {"message": "disk full"}},
        }
    },
}

BASE = "/vco/api/workflows"


async def put(api: Api, definition: dict[str, Any], token: str | None = None) -> str:
    """Store a workflow natively; its vRO id (a UUID), as the dialect's own links name it."""
    name = definition["name"]
    r = await api.client.put(f"/api/v1/workflows/{name}", json=definition, headers=api.auth(token))
    assert r.status_code in (200, 201), r.text
    r = await api.client.get(f"{BASE}/{name}/executions", headers=api.auth(token))
    assert r.status_code == 200, r.text
    workflow_id: str = r.json()["href"].split("/workflows/")[1].split("/")[0]
    assert str(uuid.UUID(workflow_id)) == workflow_id
    return workflow_id


def typed(name: str, kind: str, value: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": kind, "scope": "local", **extra}
    if value is not None:
        out["value"] = value
    return out


def params(body: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in body[key]}


def assert_vro_error(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """vRO's error body: the status and a message naming what is wrong."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"status", "message", "details"}, body
    for word in words:
        assert word in body["message"], (word, body)
    return body


async def start(api: Api, workflow: str, body: Any, token: str | None = None) -> httpx.Response:
    return await api.client.post(
        f"{BASE}/{workflow}/executions", json=body, headers=api.auth(token)
    )


# the seed page's sample ------------------------------------------------------------------


async def test_the_documented_sample_starts_a_run_that_completes(api: Api) -> None:
    workflow_id = await put(api, DEFAULTS)
    # the page's curl: -X POST -H 'Authorization: <value>' -H 'Content-Type: …' -d '{}'
    r = await api.client.post(
        f"{BASE}/{workflow_id}/executions",
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        content="{}",
    )
    assert r.status_code == 202, r.text
    run = r.json()
    location = r.headers["location"]
    assert location == f"http://test{BASE}/{workflow_id}/executions/{run['id']}/"
    assert run["href"] == location
    assert str(uuid.UUID(run["id"])) == run["id"]
    assert (run["state"], run["name"]) == ("initializing", "defaults")
    await api.idle()
    r = await api.client.get(location, headers=api.auth())
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "completed"
    assert done["end-date"] >= done["start-date"]
    assert "statistic" not in done  # only a profiled run keeps one
    assert params(done, "input-parameters")["who"]["value"] == {"string": {"value": "world"}}
    text = params(done, "output-parameters")["text"]
    assert text == {
        "name": "text",
        "type": "string",
        "scope": "local",
        "updated": False,
        "value": {"string": {"value": "hello world"}},
    }


async def test_the_documented_body_with_every_type_runs_with_those_values(api: Api) -> None:
    workflow_id = await put(api, PROVISION)
    password = "pw-" + uuid.uuid4().hex
    body = {
        "executionId": "build-42",
        "parameter": [
            typed("host", "string", {"string": {"value": "db1"}}, description="the host"),
            typed("cpus", "number", {"number": {"value": 4}}, updated=False),
            typed("ratio", "number", {"number": {"value": 0.75}}),
            typed("dry", "boolean", {"boolean": {"value": True}}),
            typed(
                "tags",
                "Array/string",
                {"array": {"elements": [{"string": {"value": "a"}}, {"string": {"value": "b"}}]}},
            ),
            typed(
                "meta",
                "Properties",
                {
                    "properties": {
                        "property": [
                            {"key": "owner", "value": {"string": {"value": "ops"}}},
                            {"key": "size", "value": {"number": {"value": 3}}},
                        ]
                    }
                },
            ),
            typed("when", "Date", {"date": {"value": "2026-01-02T03:04:05.000Z"}}),
            typed(
                "password",
                "SecureString",
                {"secure-string": {"value": password}},
                **{"encrypt-value": True},
            ),
        ],
        "profilerOptions": {"enabled": True, "debuggerEnabled": False},
    }
    r = await start(api, workflow_id, body)
    assert r.status_code == 202, r.text
    assert password not in r.text
    await api.idle()
    r = await api.client.get(r.headers["location"], headers=api.auth())
    run = r.json()
    assert run["state"] == "completed", run
    assert password not in r.text
    inputs = params(run, "input-parameters")
    assert inputs["cpus"]["value"] == {"number": {"value": 4}}
    assert inputs["tags"]["type"] == "Array/string"
    assert inputs["meta"]["value"]["properties"]["property"][0] == {
        "key": "owner",
        "value": {"string": {"value": "ops"}},
    }
    assert inputs["when"]["value"] == {"string": {"value": "2026-01-02T03:04:05.000Z"}}
    assert inputs["password"]["type"] == "SecureString"
    assert inputs["password"]["value"] == {"secure-string": {"value": "******"}}
    outputs = params(run, "output-parameters")
    assert outputs["host"]["value"] == {"string": {"value": "db1"}}
    assert outputs["cpus"]["value"] == {"number": {"value": 4}}
    assert outputs["dry"]["value"] == {"boolean": {"value": True}}
    assert outputs["tags"]["value"]["array"]["elements"] == [
        {"string": {"value": "a"}},
        {"string": {"value": "b"}},
    ]
    assert run["started-by"] and run["current-item-display-name"] == "apply"
    stats = run["statistic"]
    assert [i["item"] for i in stats["items"]] == ["plan", "apply"]
    assert stats["duration-ms"] >= 0
    logs = await api.client.get(run["href"] + "logs", headers=api.auth())
    assert logs.status_code == 200 and password not in logs.text
    # the native API sees the same run, with the same values
    native = await api.client.get(
        f"/api/v1/executions/{uuid.UUID(run['id']).hex}", headers=api.auth()
    )
    assert native.json()["inputs"]["tags"] == ["a", "b"]
    assert native.json()["name"] == "build-42"


async def test_an_execution_id_is_idempotent(api: Api) -> None:
    await put(api, DEFAULTS)
    one = {
        "executionId": "nightly-1",
        "parameter": [typed("who", "string", {"string": {"value": "a"}})],
    }
    first = await start(api, "defaults", one)
    again = await start(api, "defaults", one)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = {**one, "parameter": [typed("who", "string", {"string": {"value": "b"}})]}
    assert_vro_error(await start(api, "defaults", other), 409, "parameter 'who'")


# companion calls ------------------------------------------------------------------------


async def test_list_state_logs_and_delete_of_a_finished_run(api: Api) -> None:
    workflow_id = await put(api, DEFAULTS)
    ids = []
    for who in ("a", "b", "c"):
        r = await start(
            api, workflow_id, {"parameter": [typed("who", "string", {"string": {"value": who}})]}
        )
        ids.append(r.json()["id"])
    await api.idle()
    url = f"{BASE}/{workflow_id}/executions"
    r = await api.client.get(url, headers=api.auth())
    listed = r.json()["relations"]
    assert (listed["total"], listed["start"]) == (3, 0)
    first = listed["link"][0]
    attributes = {a["name"]: a["value"] for a in first["attributes"]}
    assert attributes["id"] == ids[-1]  # newest first
    assert attributes["state"] == "completed" and attributes["name"] == "defaults"
    assert {"startedBy", "StartDate", "EndDate"} <= set(attributes)
    assert first["href"] == f"http://test{url}/{ids[-1]}/"
    r = await api.client.get(url + "/?maxResult=1&startIndex=1", headers=api.auth())
    page = r.json()["relations"]
    assert page["total"] == 3 and page["link"][0]["attributes"][0]["value"] == ids[1]
    top = r.json()  # as Aria Orchestrator 8 pages: at the top level
    assert (top["total"], top["startIndex"], top["count"], top["link"]) == (3, 1, 1, page["link"])
    for word in ("COMPLETED", "completed"):
        r = await api.client.get(url, params={"conditions": f"state={word}"}, headers=api.auth())
        assert r.json()["relations"]["total"] == 3
    r = await api.client.get(url, params={"conditions": "state=FAILED"}, headers=api.auth())
    assert r.json()["relations"]["total"] == 0
    bad = await api.client.get(url, params={"conditions": "name~x"}, headers=api.auth())
    assert_vro_error(bad, 400, "conditions")

    one = f"{url}/{ids[0]}"
    r = await api.client.get(one + "/state", headers=api.auth())
    assert r.json() == {"value": "completed"}
    # an id without dashes and a path without the trailing slash name the same run
    r = await api.client.get(f"{url}/{uuid.UUID(ids[0]).hex}/state/", headers=api.auth())
    assert r.json() == {"value": "completed"}
    r = await api.client.get(one + "/logs", headers=api.auth())
    entries = [e["entry"] for e in r.json()["logs"]]
    assert entries and {e["severity"] for e in entries} <= {"error", "warning", "info", "debug"}
    assert {"origin", "short-description", "time-stamp", "time-stamp-val"} <= set(entries[0])
    r = await api.client.get(one + "/syslogs", params={"severity": "info"}, headers=api.auth())
    assert all(e["entry"]["origin"] == "server" for e in r.json()["logs"])
    bad = await api.client.get(one + "/logs", params={"severity": "loud"}, headers=api.auth())
    assert_vro_error(bad, 400, "severity")
    assert_vro_error(await api.client.delete(one, headers=api.auth()), 409, "cannot be deleted")
    assert_vro_error(await api.client.delete(one + "/state", headers=api.auth()), 409, "ended")


async def test_a_failed_run_shows_its_exception(api: Api) -> None:
    await put(api, FAILS)
    r = await start(api, "fails", {})
    await api.idle()
    run = (await api.client.get(r.headers["location"], headers=api.auth())).json()
    assert run["state"] == "failed"
    assert "disk full" in run["content-exception"]
    assert run["current-item-display-name"] == "boom"


async def test_a_run_waiting_on_an_interaction_is_answered_with_typed_parameters(api: Api) -> None:
    workflow_id = await put(api, APPROVAL)
    r = await start(api, workflow_id, {})
    location = r.headers["location"]
    await api.idle()
    run = (await api.client.get(location, headers=api.auth())).json()
    assert run["state"] == "waiting"
    assert run["current-item-display-name"] == "ask"
    r = await api.client.get(location + "interaction", headers=api.auth())
    assert r.status_code == 200, r.text
    asked = r.json()
    assert (asked["state"], asked["name"]) == ("waiting", "Approve the change")
    fields = params(asked, "parameter")
    assert fields["approved"]["type"] == "boolean" and fields["comment"]["type"] == "string"
    assert fields["approved"]["description"] == "Go ahead?"

    answer = location + "interaction/"
    wrong = {"parameter": [typed("approved", "string", {"string": {"value": "yes"}})]}
    r = await api.client.post(answer, json=wrong, headers=api.auth())
    assert_vro_error(r, 400, "parameter 'approved'")
    missing = {"parameter": [typed("comment", "string", {"string": {"value": "ok"}})]}
    r = await api.client.post(answer, json=missing, headers=api.auth())
    assert_vro_error(r, 400, "approved")
    good = {
        "parameters": [
            typed("approved", "boolean", {"boolean": {"value": True}}),
            typed("comment", "string", {"string": {"value": "fine"}}),
        ]
    }
    r = await api.client.post(answer, json=good, headers=api.auth())
    assert r.status_code == 204, r.text
    await api.idle()
    run = (await api.client.get(location, headers=api.auth())).json()
    assert run["state"] == "completed"
    assert params(run, "output-parameters")["approved"]["value"] == {"boolean": {"value": True}}
    assert_vro_error(await api.client.get(answer, headers=api.auth()), 404, "no pending")
    assert_vro_error(await api.client.post(answer, json=good, headers=api.auth()), 409)


async def test_cancel_stops_a_waiting_run(api: Api) -> None:
    await put(api, APPROVAL)
    r = await start(api, "approval", {})
    location = r.headers["location"]
    await api.idle()
    r = await api.client.delete(location + "state", headers=api.auth())
    assert r.status_code == 204, r.text
    await api.idle()
    r = await api.client.get(location + "state", headers=api.auth())
    assert r.json() == {"value": "canceled"}


def test_one_state_table_speaks_the_documented_vocabulary() -> None:
    assert set(STATES) == set(ExecutionState)
    assert {s.name for s in STATES.values()} == {
        "CANCELED",
        "COMPLETED",
        "RUNNING",
        "SUSPENDED",
        "WAITING",
        "STATE_WAITING_ON_SIGNAL",
        "FAILED",
        "INITIALIZING",
    }
    assert STATES[ExecutionState.WAITING_ON_SIGNAL].name == "WAITING"  # an interaction
    # what vRO servers write (and VMware's build tools, PowervRO, vmwvro and vmwvro2 read)
    assert {s.word for s in STATES.values()} == {
        "canceled",
        "completed",
        "running",
        "suspended",
        "waiting",
        "waiting-signal",
        "failed",
        "initializing",
    }
    assert STATES[ExecutionState.WAITING_ON_SIGNAL].word == "waiting"


async def test_states_and_fields_are_written_as_vro_servers_write_them(api: Api) -> None:
    """Lower-case state words and hyphenated field names, as vRO puts them on the wire
    (its reference's upper-case names and camelCase fields are what its Java model calls
    them); the reference's names are still taken in a list's conditions."""
    workflow_id = await put(api, APPROVAL)
    r = await start(api, workflow_id, {})
    started = r.json()
    assert started["state"] == "initializing"
    assert {"input-parameters", "output-parameters", "start-date"} <= set(started)
    assert not {"inputParameters", "outputParameters"} & set(started)
    location = r.headers["location"]
    await api.idle()
    ident = uuid.UUID(started["id"]).hex
    url = f"{BASE}/{workflow_id}/executions"
    seen = []
    for native in ("suspend", "resume"):
        r = await api.client.post(f"/api/v1/executions/{ident}/{native}", headers=api.auth())
        assert r.status_code in (200, 202), r.text
        await api.idle()
        state = (await api.client.get(location + "state", headers=api.auth())).json()["value"]
        run = (await api.client.get(location, headers=api.auth())).json()
        assert run["state"] == state
        link = (await api.client.get(url, headers=api.auth())).json()["relations"]["link"][0]
        assert {"name": "state", "value": state} in link["attributes"]
        for word in (state, state.upper()):
            r = await api.client.get(
                url, params={"conditions": f"state={word}"}, headers=api.auth()
            )
            assert r.json()["total"] == 1, (word, r.text)
        seen.append(state)
    assert seen == ["suspended", "waiting"]
    r = await api.client.get(
        url, params={"conditions": "state=STATE_WAITING_ON_SIGNAL"}, headers=api.auth()
    )
    assert r.json()["total"] == 0
    r = await api.client.get(url, params={"conditions": "state=waiting-signal"}, headers=api.auth())
    assert r.json()["total"] == 0
    bad = await api.client.get(url, params={"conditions": "state=paused"}, headers=api.auth())
    assert "waiting-signal" in assert_vro_error(bad, 400, "conditions")["message"]


async def test_numbers_and_booleans_sent_as_text_are_read_as_vro_reads_them(api: Api) -> None:
    """vmwvro, PowervRO and VMware's build tools send `{"number": {"value": "4"}}`."""
    await put(api, PROVISION)
    body = {
        "parameters": [
            typed("host", "string", {"string": {"value": "db1"}}),
            typed("cpus", "number", {"number": {"value": "4"}}),
            typed("ratio", "number", {"number": {"value": "0.25"}}),
            typed("dry", "boolean", {"boolean": {"value": "True"}}),
        ]
    }
    r = await start(api, "provision", body)
    assert r.status_code == 202, r.text
    inputs = params(r.json(), "input-parameters")
    assert inputs["cpus"]["value"] == {"number": {"value": 4}}
    assert inputs["ratio"]["value"] == {"number": {"value": 0.25}}
    assert inputs["dry"]["value"] == {"boolean": {"value": True}}
    for entry, words in [
        (typed("cpus", "number", {"number": {"value": "4.5"}}), ["'cpus'", "integer"]),
        (typed("cpus", "number", {"number": {"value": "four"}}), ["'cpus'", "finite number"]),
        (typed("ratio", "number", {"number": {"value": "1e999"}}), ["'ratio'", "finite"]),
        (typed("dry", "boolean", {"boolean": {"value": "yes"}}), ["'dry'", "true or false"]),
    ]:
        host = typed("host", "string", {"string": {"value": "db1"}})
        assert_vro_error(await start(api, "provision", {"parameter": [host, entry]}), 400, *words)


async def test_a_workflow_is_described_with_its_typed_parameters(api: Api) -> None:
    workflow_id = await put(api, {**PROVISION, "description": "Provision a host"})
    for ref in (workflow_id, uuid.UUID(workflow_id).hex, "provision"):
        r = await api.client.get(f"{BASE}/{ref}", headers=api.auth())
        assert r.status_code == 200, r.text
        wf = r.json()
        assert (wf["id"], wf["name"], wf["version"]) == (workflow_id, "provision", "1.0.0")
        assert wf["href"] == f"http://test{BASE}/{workflow_id}/"
        assert wf["description"] == "Provision a host"
    inputs = params(wf, "input-parameters")
    assert {n: p["type"] for n, p in inputs.items()} == {
        "host": "string",
        "cpus": "number",
        "ratio": "number",
        "dry": "boolean",
        "tags": "Array/Any",
        "meta": "Properties",
        "when": "string",
        "password": "SecureString",
    }
    assert inputs["cpus"]["value"] == {"number": {"value": 1}}  # the default
    assert "value" not in inputs["host"] and "value" not in inputs["password"]
    outputs = params(wf, "output-parameters")
    assert sorted(outputs) == ["cpus", "dry", "host", "meta", "tags"]
    assert {p["type"] for p in outputs.values()} == {"Any"}
    # the links lead to its runs, where a start by the workflow's own id works
    (add,) = [link for link in wf["relations"]["link"] if link["rel"] == "add"]
    body = {"parameter": [typed("host", "string", {"string": {"value": "db1"}})]}
    r = await api.client.post(add["href"], json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    r = await api.client.get(f"{BASE}/{wf['id']}/", headers=api.auth())
    assert r.json()["version"] == "1.0.0"
    definition = {**PROVISION, "description": "v2"}
    r = await api.client.put("/api/v1/workflows/provision", json=definition, headers=api.auth())
    r = await api.client.get(f"{BASE}/{wf['id']}", headers=api.auth())
    assert (r.json()["version"], r.json()["description"]) == ("2.0.0", "v2")
    assert_vro_error(await api.client.get(f"{BASE}/nope", headers=api.auth()), 404, "'nope'")


# errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (
            typed("colour", "string", {"string": {"value": "red"}}),
            ["parameter 'colour'", "unknown"],
        ),
        (typed("cpus", "string", {"string": {"value": "four"}}), ["parameter 'cpus'"]),
        (typed("cpus", "number", {"number": {"value": 1.5}}), ["parameter 'cpus'", "integer"]),
        (typed("cpus", "string", {"number": {"value": 2}}), ["parameter 'cpus'", "does not match"]),
        (typed("tags", "Properties", None), ["parameter 'tags'"]),
        (typed("host", "SecureString", {"secure-string": {"value": "x"}}), ["'host'", "secret"]),
        (
            typed("host", "string", {"string": {"value": "x"}}, **{"encrypt-value": True}),
            ["'host'", "secret"],
        ),
        (typed("host", "VC:VirtualMachine", {"sdk-object": {"id": "vm-1"}}), ["'host'"]),
        (typed("host", "string", {"string": {"value": 3}}), ["'host'", "string"]),
    ],
)
async def test_bad_parameters_are_named_and_start_nothing(
    api: Api, entry: dict[str, Any], words: list[str]
) -> None:
    await put(api, PROVISION)
    host = typed("host", "string", {"string": {"value": "db1"}})
    body = {"parameter": [host, entry] if entry["name"] != "host" else [entry]}
    r = await start(api, "provision", body)
    assert_vro_error(r, 400, *words)
    r = await api.client.get(f"{BASE}/provision/executions", headers=api.auth())
    assert r.json()["relations"]["total"] == 0


async def test_every_problem_is_named_at_once(api: Api) -> None:
    await put(api, PROVISION)
    body = {
        "executionId": "no spaces allowed",
        "parameter": [typed("cpus", "string", {"string": {"value": "x"}})],
        "color": 1,
    }
    error = assert_vro_error(await start(api, "provision", body), 400)
    joined = " ".join(error["details"])
    for word in ("parameter 'cpus'", "parameter 'host'", "executionId", "color"):
        assert word in joined, (word, error)


async def test_missing_required_and_unknown_workflow(api: Api) -> None:
    await put(api, PROVISION)
    assert_vro_error(await start(api, "provision", {}), 400, "parameter 'host'", "required")
    assert_vro_error(await start(api, str(uuid.uuid4()), {}), 404, "not found")
    assert_vro_error(await start(api, "nope", {}), 404, "'nope'")
    r = await api.client.post(
        f"{BASE}/provision/executions",
        content="<xml/>",
        headers={**api.auth(), "Content-Type": "application/xml"},
    )
    assert_vro_error(r, 400, "application/json")
    assert_vro_error(await start(api, "provision", [1]), 400, "execution-context")


async def test_bad_credentials_get_vro_401(api: Api) -> None:
    await put(api, DEFAULTS)
    url = f"{BASE}/defaults/executions"
    r = await api.client.post(url, json={})
    assert_vro_error(r, 401)
    assert "Basic" in r.headers["www-authenticate"]
    assert_vro_error(await api.client.post(url, json={}, headers=api.auth("nope")), 401)
    key = await new_key(api, "default", "operator")

    def basic(user: str, password: str) -> dict[str, str]:
        return {
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    assert_vro_error(await api.client.post(url, json={}, headers=basic(key["id"], "wrong")), 401)
    assert_vro_error(await api.client.post(url, json={}, headers=basic("admin", "nope")), 401)
    ok = await api.client.post(url, json={}, headers=basic(key["id"], key["secret"]))
    assert ok.status_code == 202, ok.text
    ok = await api.client.post(url, json={}, headers=basic("vcoadmin", api.token))
    assert ok.status_code == 202, ok.text


# who may do what --------------------------------------------------------------------------

NEEDS = {
    ("GET", ""): "view",
    ("POST", "/executions"): "schedule_executions",
    ("GET", "/executions"): "view",
    ("GET", "/executions/{execution_id}"): "view",
    ("DELETE", "/executions/{execution_id}"): "manage_executions",
    ("GET", "/executions/{execution_id}/state"): "view",
    ("DELETE", "/executions/{execution_id}/state"): "manage_executions",
    ("GET", "/executions/{execution_id}/logs"): "view",
    ("GET", "/executions/{execution_id}/syslogs"): "view",
    ("GET", "/executions/{execution_id}/interaction"): "view",
    ("POST", "/executions/{execution_id}/interaction"): "manage_executions",
}
GRANTS = {
    "viewer": {"view"},
    "scheduler": {"view", "schedule_executions"},
    "operator": {"view", "schedule_executions", "manage_executions"},
    "developer": {"view", "schedule_executions", "manage_executions"},
    "admin": {"view", "schedule_executions", "manage_executions"},
}
PREFIX = "/vco/api/workflows/{workflow_id}"


def routes() -> set[tuple[str, str]]:
    found = set()
    for route in vro.router.routes:
        assert isinstance(route, APIRoute)
        assert route.path.startswith(PREFIX), route.path
        for method in route.methods or ():
            found.add((method, route.path.removeprefix(PREFIX).rstrip("/")))
    return found


def test_every_route_is_in_the_privilege_table() -> None:
    assert routes() == set(NEEDS)


async def call(
    api: Api, method: str, path: str, workflow: str, execution: str, token: str
) -> httpx.Response:
    url = (PREFIX + path).format(workflow_id=workflow, execution_id=execution)
    body: dict[str, Any] | None = {} if method == "POST" else None
    return await api.client.request(method, url, json=body, headers=api.auth(token))


async def test_each_role_may_do_what_its_privileges_allow(api: Api) -> None:
    workflow_id = await put(api, DEFAULTS)
    execution_id = (await start(api, workflow_id, {})).json()["id"]
    await api.idle()
    for role, granted in GRANTS.items():
        token = await new_token(api, "default", role)
        for (method, path), needed in NEEDS.items():
            r = await call(api, method, path, workflow_id, execution_id, token)
            if needed in granted:
                assert r.status_code not in (401, 403), (role, method, path, r.text)
            else:
                assert_vro_error(r, 403, "lacks")


async def test_another_projects_runs_and_workflows_are_not_found(api: Api) -> None:
    other = await new_token(api, "other", "admin")
    secret_definition = {**DEFAULTS, "name": "hidden-payroll"}
    theirs = await put(api, secret_definition, other)
    r = await start(
        api,
        theirs,
        {"parameter": [typed("who", "string", {"string": {"value": "ceo-salary"}})]},
        other,
    )
    their_run = r.json()["id"]
    await api.idle()
    mine = await put(api, DEFAULTS)
    for (method, path), _ in NEEDS.items():
        for workflow in (theirs, mine, "hidden-payroll"):
            r = await call(api, method, path, workflow, their_run, api.token)
            if workflow == mine and "{execution_id}" not in path:
                continue  # my own workflow's collection: fine to answer
            assert_vro_error(r, 404, "not found")
            assert "ceo-salary" not in r.text and "payroll" not in r.text.replace(
                "'hidden-payroll'", ""
            )


async def test_a_secret_parameter_also_takes_a_plain_string_and_stays_masked(api: Api) -> None:
    await put(api, PROVISION)
    password = "pw-" + uuid.uuid4().hex
    body = {
        "parameter": [
            typed("host", "string", {"string": {"value": "db1"}}),
            typed("password", "string", {"string": {"value": password}}),
        ]
    }
    r = await start(api, "provision", body)
    assert r.status_code == 202, r.text
    await api.idle()
    r = await api.client.get(r.headers["location"], headers=api.auth())
    shown = params(r.json(), "input-parameters")["password"]
    assert shown["value"] == {"secure-string": {"value": "******"}}
    assert password not in r.text


async def test_a_refused_value_is_not_echoed_in_the_error(api: Api) -> None:
    """The value may be a secret's: errors say what is wrong with it, never what it is."""
    hidden = {
        "name": "hidden",
        "parameters": {"pw": {"type": "string", "secret": True}, "pin": {"type": "integer"}},
        "tasks": {"t": {"action": "echo"}},
    }
    await api.client.put("/api/v1/workflows/hidden", json=hidden, headers=api.auth())
    body = {
        "parameter": [
            {"name": "pw", "type": "Date", "value": {"date": {"value": "hunter2-TOPSECRET"}}},
            {"name": "pin", "type": "number", "value": {"number": {"value": 98765.5}}},
        ]
    }
    r = await api.client.post("/vco/api/workflows/hidden/executions", json=body, headers=api.auth())
    assert r.status_code == 400, r.text
    assert "TOPSECRET" not in r.text and "98765" not in r.text
    assert "not an ISO 8601 date" in r.text and "with a fraction" in r.text
