"""Attacks on secrets and on the bounds of sub-workflows, as found against a running server:
an operator pairing new inputs with sealed secrets, depth set by a label, secrets shown in
workflow views and errors, and transformed secrets that masking missed."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from jinja2.utils import htmlsafe_json_dumps

from execflow.actions.subworkflow import MAX_DEPTH
from execflow.api.dialects.emr_shapes import instance_id
from execflow.clock import ManualClock
from execflow.masking import Secrets, redact
from execflow.records import ExecutionRecord
from execflow.sealing import SECRET_MASK
from execflow.states import ExecutionState as E
from execflow.store import Store, connect, schema, upgrade
from execflow.store.base import new_id
from tests.harness import Harness, harness
from tests.test_api import Api, api  # noqa: F401
from tests.test_control import get, log_of
from tests.test_dialect_emr import ids, ok, rpc
from tests.test_dialect_onedata import EXECUTIONS as ONEDATA_EXECUTIONS
from tests.test_dialect_onedata import headers as onedata_headers

TOKEN = "tk-3f9a1c0e5b7d42a8"
SIGNING = "sk-default-signing-key"

# An operator's way to a secret: the task sends the token to `url`, which a rerun may change.
SENDER: dict[str, Any] = {
    "name": "sender",
    "parameters": {
        "url": {"type": "string", "required": True},
        "token": {"type": "string", "secret": True, "required": True},
        "signing": {"type": "string", "secret": True, "default": SIGNING},
        "note": {"type": "string", "default": "-"},
    },
    "tasks": {
        "gate": {"action": "signal", "with": {"name": "go"}},
        "send": {
            "action": "python",
            "needs": ["gate"],
            "with": {
                "function": "tests.fixtures.tasks:reveal",
                "args": {"value": "${{ params.url }} ${{ params.token }} ${{ params.signing }}"},
            },
        },
    },
    "outputs": {"sha256": "${{ tasks.send.output.sha256 }}"},
}


def digest(url: str, token: str = TOKEN, signing: str = SIGNING) -> str:
    """What `send` returns when it was handed these values."""
    return hashlib.sha256(f"{url} {token} {signing}".encode()).hexdigest()


async def native(api: Api, method: str, path: str, body: Any = None) -> Any:
    r = await api.client.request(method, f"/api/v1{path}", json=body, headers=api.auth())
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


async def sender(api: Api, cancel: bool = False) -> str:
    """An execution of SENDER sent to a partner's URL: completed, or cancelled at its gate."""
    await native(api, "PUT", "/workflows/sender", SENDER)
    started = await native(
        api,
        "POST",
        "/workflows/sender/executions",
        {"inputs": {"url": "https://partner.example/hook", "token": TOKEN}},
    )
    execution_id: str = started["id"]
    await api.idle()
    if cancel:
        await native(api, "POST", f"/executions/{execution_id}/cancel")
    else:
        await native(api, "POST", f"/executions/{execution_id}/signals/go", {})
    await api.idle()
    return execution_id


async def finished(api: Api, execution_id: str) -> dict[str, Any]:
    """Let the execution past its gate and run to its end."""
    await api.idle()
    await native(api, "POST", f"/executions/{execution_id}/signals/go", {})
    await api.idle()
    detail: dict[str, Any] = await native(api, "GET", f"/executions/{execution_id}")
    return detail


async def executions(api: Api) -> int:
    return len((await native(api, "GET", "/executions"))["items"])


# 1. a rerun that changes inputs is given the secrets again -------------------------------------


async def test_a_rerun_that_changes_an_input_must_be_given_every_secret_again(api: Api) -> None:
    original = await sender(api)
    path = f"/api/v1/executions/{original}/rerun"
    before = await executions(api)
    evil = "https://operator.example/collect"
    for inputs, missing in (
        # the URL the token goes to, pointed elsewhere
        ({"url": evil}, {"/inputs/token", "/inputs/signing"}),
        # a harmless-looking change is a change too
        ({"note": "again"}, {"/inputs/token", "/inputs/signing"}),
        # one secret given, the other still the original's
        ({"url": evil, "token": "tk-mine"}, {"/inputs/signing"}),
        # a secret changed, the other reused with it
        ({"token": "tk-mine"}, {"/inputs/signing"}),
    ):
        body = {"from_task": "send", "inputs": inputs}
        r = await api.client.post(path, json=body, headers=api.auth())
        assert r.status_code == 422, (inputs, r.text)
        details = {d["pointer"]: d["reason"] for d in r.json()["error"]["details"]}
        assert set(details) == missing, (inputs, details)
        assert all("give this secret again" in why for why in details.values())
        assert TOKEN not in r.text and SIGNING not in r.text
    assert await executions(api) == before  # nothing was started

    # the same inputs (none given, or the original's given again) reuse the sealed secrets
    for same in (None, {"url": "https://partner.example/hook", "note": "-"}):
        r = await api.client.post(
            path, json={"from_task": "send", "inputs": same}, headers=api.auth()
        )
        assert r.status_code == 202, r.text
        await api.idle()
        again = await native(api, "GET", f"/executions/{r.json()['id']}")
        assert again["outputs"]["sha256"] == digest("https://partner.example/hook")

    # given every secret again (null: the parameter's default), the new inputs run
    body = {"from_task": "send", "inputs": {"url": evil, "token": "tk-mine", "signing": None}}
    r = await api.client.post(path, json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    await api.idle()
    again = await native(api, "GET", f"/executions/{r.json()['id']}")
    assert again["outputs"]["sha256"] == digest(evil, "tk-mine")


async def retry_native(api: Api, execution_id: str) -> str:
    await native(api, "POST", f"/executions/{execution_id}/retry")
    return execution_id


async def rerun_native(api: Api, execution_id: str) -> str:
    body = {"from_task": "gate"}
    found: str = (await native(api, "POST", f"/executions/{execution_id}/rerun", body))["id"]
    return found


async def retry_onedata(api: Api, execution_id: str) -> str:
    lane = {"laneIndex": 1, "laneRunNumber": 1}
    r = await api.client.post(
        f"{ONEDATA_EXECUTIONS}/{execution_id}/retry", json=lane, headers=onedata_headers(api.token)
    )
    assert r.status_code == 204, r.text
    return execution_id


async def rerun_onedata(api: Api, execution_id: str) -> str:
    lane = {"laneIndex": 1, "laneRunNumber": 1}
    r = await api.client.post(
        f"{ONEDATA_EXECUTIONS}/{execution_id}/rerun", json=lane, headers=onedata_headers(api.token)
    )
    assert r.status_code == 204, r.text
    return r.headers["location"].rsplit("/", 1)[1]


async def rerun_emr(api: Api, execution_id: str, fail: bool) -> str:
    _, project = await ids(api, SENDER)
    ident = instance_id(execution_id)
    extra = {"ReRunFail": "true"} if fail else {}
    body = ok(await rpc(api, "RerunFlow", FlowInstanceId=ident, ProjectId=project, **extra))
    return execution_id if fail else str(body["Id"])[3:].lower()


async def retry_emr(api: Api, execution_id: str) -> str:
    return await rerun_emr(api, execution_id, True)


async def rerun_emr_anew(api: Api, execution_id: str) -> str:
    return await rerun_emr(api, execution_id, False)


async def restore_obs(api: Api, execution_id: str) -> str:
    r = await api.client.put(
        f"/v2/workflowexecutions/{execution_id}",
        params={"x-workflow-graph-name": "sender"},
        headers=api.auth(),
    )
    assert r.status_code == 200, r.text
    return execution_id


@pytest.mark.parametrize(
    "again",
    [
        retry_native,
        rerun_native,
        retry_onedata,
        rerun_onedata,
        retry_emr,
        rerun_emr_anew,
        restore_obs,
    ],
)
async def test_every_rerun_and_retry_reuses_the_secrets_only_with_the_original_inputs(
    api: Api, again: Any
) -> None:
    """No dialect's rerun or retry takes new inputs, so each reuses the sealed secrets with
    the inputs they were given with, and the task is handed them again."""
    original = await sender(api, cancel=True)
    execution_id = await again(api, original)
    detail = await finished(api, execution_id)
    assert detail["state"] == "COMPLETED", detail
    assert detail["outputs"]["sha256"] == digest("https://partner.example/hook")
    assert detail["inputs"] == {
        "url": "https://partner.example/hook",
        "token": "******",
        "signing": "******",
        "note": "-",
    }


# 4. masking catches a secret's common transforms -----------------------------------------------

# quotes, HTML's characters, a slash, a plus and letters outside ASCII: each encoding differs
CANARY = "Tk-9f3a\"<b>&'ünï/+ce"


def html_markupsafe(text: str) -> str:
    return html.escape(text, quote=False).replace('"', "&#34;").replace("'", "&#39;")


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
    "capitalize": str.capitalize,
    "swapcase": str.swapcase,
    "reversed": lambda t: t[::-1],
    "reversed upper": lambda t: t[::-1].upper(),
    "json": lambda t: json.dumps(t),
    "json unicode": lambda t: json.dumps(t, ensure_ascii=False),
    "tojson": lambda t: str(htmlsafe_json_dumps(t)),
    "url quote": lambda t: urllib.parse.quote(t),
    "url quote all": lambda t: urllib.parse.quote(t, safe=""),
    "url quote plus": urllib.parse.quote_plus,
    "html": html.escape,
    "html markupsafe": html_markupsafe,
    "hex": lambda t: t.encode().hex(),
    "HEX": lambda t: t.encode().hex().upper(),
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "base64 unpadded": lambda t: base64.b64encode(t.encode()).decode().rstrip("="),
    "urlsafe base64": lambda t: base64.urlsafe_b64encode(t.encode()).decode(),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_masking_catches_the_common_transforms_of_a_secret(name: str) -> None:
    transformed = TRANSFORMS[name](CANARY)
    secrets = Secrets([CANARY])
    text = f"before {transformed} after"
    masked = redact({"k": [text], transformed: 1}, secrets)
    assert masked["k"] == [masked["k"][0]] and transformed not in masked["k"][0], masked
    assert masked["k"][0].startswith("before ") and masked["k"][0].endswith(" after")
    assert SECRET_MASK in masked["k"][0] and transformed not in masked


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize(
    ("before", "after"), [(b"ada:", b""), (b"bob1:", b":x"), (b"carl1:", b""), (b"", b"-tail")]
)
def test_base64_of_a_secret_inside_a_longer_text_keeps_at_most_two_bytes_at_each_end(
    encode: Callable[[bytes], bytes], before: bytes, after: bytes
) -> None:
    """HTTP Basic sends `user:password` in base64: wherever the secret falls in the groups
    of three bytes, only the (at most two) bytes it shares a group with stay readable."""
    whole = encode(before + CANARY.encode() + after).decode()
    masked = redact(f"Basic {whole}", Secrets([CANARY]))
    head, _, tail = masked.removeprefix("Basic ").partition(SECRET_MASK)
    assert whole.startswith(head) and whole.endswith(tail) and SECRET_MASK in masked
    assert (
        len(base64.urlsafe_b64decode(head.replace("+", "-").replace("/", "_"))) - len(before) <= 2
    )
    tail_bytes = base64.urlsafe_b64decode(
        tail.replace("+", "-").replace("/", "_") + "=" * (-len(tail) % 4)
    )
    assert len(tail_bytes) - len(after) <= 2


def test_short_secrets_are_masked_in_any_form_only_as_a_whole_value() -> None:
    secrets = Secrets(["ab7"])
    assert redact(["ab7", "AB7", "7ba", "YWI3", "ab7 and AB7", "cab7"], secrets) == [
        SECRET_MASK,
        SECRET_MASK,
        SECRET_MASK,
        SECRET_MASK,
        "ab7 and AB7",
        "cab7",
    ]
    assert "ab7" not in repr(secrets) and CANARY not in repr(Secrets([CANARY]))


TRANSFORMING: dict[str, Any] = {
    "name": "transforming",
    "parameters": {"token": {"type": "string", "secret": True, "required": True}},
    "tasks": {
        "shout": {
            "action": "echo",
            "with": {
                "upper": "${{ params.token | upper }}",
                "lower": "${{ params.token | lower }}",
                "title": "${{ params.token | title }}",
                "capitalized": "${{ params.token | capitalize }}",
                "reversed": "${{ params.token | reverse }}",
                "url": "${{ params.token | urlencode }}",
                "json": "${{ params.token | tojson }}",
                "html": "${{ params.token | e }}",
                "sentence": "the token is ${{ params.token | upper }}!",
            },
        },
        "encode": {
            "action": "python",
            "with": {
                "function": "tests.fixtures.tasks:encode",
                "args": {"value": "${{ params.token }}"},
            },
        },
        "fail": {
            "action": "python",
            "needs": ["shout", "encode"],
            "with": {
                "function": "tests.fixtures.tasks:boom",
                "args": {"message": "${{ params.token | reverse | upper }}"},
            },
        },
    },
}


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


async def test_a_task_that_transforms_a_secret_shows_it_masked_everywhere(api: Api) -> None:
    await native(api, "PUT", "/workflows/transforming", TRANSFORMING)
    started = await native(
        api, "POST", "/workflows/transforming/executions", {"inputs": {"token": CANARY}}
    )
    await api.idle()
    detail = await native(api, "GET", f"/executions/{started['id']}")
    assert detail["state"] == "FAILED"
    logs = await native(api, "GET", f"/executions/{started['id']}/logs?limit=1000")
    shown = strings(detail) + strings(logs)
    forms = {name: transform(CANARY) for name, transform in TRANSFORMS.items()}
    leaked = {name for name, form in forms.items() for text in shown if form in text}
    assert not leaked, leaked
    shout = next(t for t in detail["tasks"] if t["task"] == "shout")["output"]
    assert shout["sentence"] == f"the token is {SECRET_MASK}!"
    assert all(SECRET_MASK in v for v in shout.values()), shout


# 3. a secret's default and choices are shown to nobody -----------------------------------------

DEFAULT = "Dflt-Vault-Pass-7q2w"
CHOICES = ["Choice-Alpha-k8v1", DEFAULT]
CHOOSY: dict[str, Any] = {
    "name": "choosy",
    "parameters": {
        "vault": {"type": "string", "secret": True, "default": DEFAULT, "enum": CHOICES},
        "region": {"type": "string", "default": "eu", "enum": ["eu", "us"]},
    },
    "schedules": [
        {
            "name": "nightly",
            "cron": "0 3 * * *",
            "enabled": False,
            "inputs": {"vault": CHOICES[0], "region": "us"},
        }
    ],
    "tasks": {"use": {"action": "echo", "with": {"region": "${{ params.region }}"}}},
}
HIDDEN = [*CHOICES, *(c.lower() for c in CHOICES)]


def shows_no_secret(r: httpx.Response) -> str:
    assert r.status_code < 500, r.text
    text = r.text.lower()
    assert not [c for c in HIDDEN if c.lower() in text], r.text
    return r.text


async def test_a_secret_parameters_default_and_choices_are_masked_in_every_workflow_view(
    api: Api,
) -> None:
    await native(api, "PUT", "/workflows/choosy", CHOOSY)
    await native(api, "PUT", "/workflows/sender", SENDER)  # a default that is not chosen
    masked = {"type": "string", "secret": True, "default": SECRET_MASK, "enum": [SECRET_MASK] * 2}
    plain = {"type": "string", "default": "eu", "enum": ["eu", "us"]}
    for path in ("/api/v1/workflows/choosy", "/api/v1/workflows/choosy/revisions/1"):
        shown = (await api.client.get(path, headers=api.auth())).json()["definition"]
        assert shown["parameters"] == {"vault": masked, "region": plain}
        assert shown["schedules"][0]["inputs"] == {"vault": SECRET_MASK, "region": "us"}
    r = await api.client.get("/api/v1/workflows/sender", headers=api.auth())
    signing = r.json()["definition"]["parameters"]["signing"]
    assert signing["default"] == SECRET_MASK and SIGNING not in r.text
    # OBS shows the definition and the template's inputs, vRO a workflow's typed inputs
    # with their defaults (no choices); the other dialects name workflows only (EMR's
    # ListFlow, Explorer's workflows) or show none (Onedata)
    graph = (await api.client.get("/v2/workflows/choosy", headers=api.auth())).json()
    assert graph["definition"]["parameters"]["vault"] == masked
    template = (await api.client.get("/v2/workflowtemplates/choosy", headers=api.auth())).json()
    (vault,) = [i for i in template["inputs"] if i["key"] == "vault"]
    assert (vault["value"], vault["enum"]) == (SECRET_MASK, [SECRET_MASK] * 2)
    vro = (await api.client.get("/vco/api/workflows/choosy", headers=api.auth())).json()
    (vault,) = [p for p in vro["input-parameters"] if p["name"] == "vault"]
    assert vault["value"] == {"secure-string": {"value": SECRET_MASK}}
    token = {"Cookie": f"explorer_token={api.token}"}
    for r in (
        await api.client.get("/vco/api/workflows/choosy", headers=api.auth()),
        await api.client.get("/api/v1/workflows", headers=api.auth()),
        await api.client.get("/v2/workflows/choosy", headers=api.auth()),
        await api.client.get("/v2/workflows", headers=api.auth()),
        await api.client.get("/v2/workflowtemplates/choosy", headers=api.auth()),
        await api.client.get("/v2/workflowtemplates", headers=api.auth()),
        await rpc(api, "ListFlow"),
        await api.client.get("/api-open/v1/workflows", headers=token),
    ):
        shows_no_secret(r)


async def test_a_refused_secret_input_names_no_choice_and_quotes_no_value(api: Api) -> None:
    """Through every start call: the reason names the field, not the secret's choices, and a
    reason that would quote a value (a duration that is none) quotes no secret one."""
    await native(api, "PUT", "/workflows/choosy", CHOOSY)
    wrong = "Wrong-Guess-x9z3"
    vro_id = await api.client.get("/vco/api/workflows/choosy/executions", headers=api.auth())
    workflow_href = vro_id.json()["href"].split("/workflows/")[1].split("/")[0]
    _, project = await ids(api, CHOOSY)
    space = api.runtime.store.project_id("default")
    schema = api.runtime.store.get_workflow(space or "", "choosy").id
    listed = await api.client.get(
        "/api-open/v1/workflows", headers={"Cookie": f"explorer_token={api.token}"}
    )
    (explorer,) = [w["id"] for w in listed.json()["data"]["items"] if w["name"] == "choosy"]
    refusals = [
        await api.client.post(
            "/api/v1/workflows/choosy/executions",
            json={"inputs": {"vault": wrong}},
            headers=api.auth(),
        ),
        await api.client.post(
            "/api/v1/workflows/choosy/executions?dry_run=true",
            json={"inputs": {"vault": wrong}},
            headers=api.auth(),
        ),
        await api.client.post(
            "/v2/workflows/choosy",
            json={"bucket": "b", "object": "o", "inputs": {"vault": wrong}},
            headers=api.auth(),
        ),
        await rpc(
            api, "SubmitFlow", FlowId="choosy", ProjectId=project, Conf=f'{{"vault": "{wrong}"}}'
        ),
        await api.client.post(
            ONEDATA_EXECUTIONS,
            json={
                "spaceId": space,
                "atmWorkflowSchemaId": schema,
                "atmWorkflowSchemaRevisionNumber": 1,
                "storeInitialContentOverlay": {"vault": wrong},
            },
            headers=onedata_headers(api.token),
        ),
        await api.client.post(
            f"/vco/api/workflows/{workflow_href}/executions",
            json={
                "parameters": [
                    {
                        "name": "vault",
                        "type": "SecureString",
                        "scope": "local",
                        "value": {"secure-string": {"value": wrong}},
                    }
                ]
            },
            headers=api.auth(),
        ),
        await api.client.post(
            f"/api-open/v1/workflows/{explorer}/jobs",
            json={"input": {"use": {"vault": wrong}}},
            headers={"Cookie": f"explorer_token={api.token}"},
        ),
    ]
    assert [r.status_code for r in refusals] == [422, 422, 400, 400, 400, 400, 400]
    for r in refusals:
        text = shows_no_secret(r)
        assert 400 <= r.status_code < 500 and "vault" in text and "not shown" in text, text
        assert wrong not in text and wrong.lower() not in text.lower(), text
    assert await executions(api) == 0

    # a secret that must be a duration, and is none: the reason quotes no secret
    waiting = {
        "name": "waiting",
        "parameters": {"pause": {"type": "string", "secret": True}},
        "tasks": {"nap": {"action": "sleep", "with": {"duration": "${{ params.pause }}"}}},
    }
    await native(api, "PUT", "/workflows/waiting", waiting)
    r = await api.client.post(
        "/api/v1/workflows/waiting/executions",
        json={"inputs": {"pause": "Not-A-Duration-q4"}},
        headers=api.auth(),
    )
    assert r.status_code == 422, r.text
    (detail,) = r.json()["error"]["details"]
    assert detail["pointer"] == "/inputs/pause" and "is not a duration" in detail["reason"]
    assert "not-a-duration-q4" not in r.text.lower() and SECRET_MASK in detail["reason"]


# 2. children: depth from the parent chain, bounded trees, counted starts -----------------------

LOOP: dict[str, Any] = {
    "name": "loop",
    "tasks": {"again": {"action": "workflow", "with": {"workflow": "loop"}}},
}


def swarm(width: int) -> dict[str, Any]:
    """A workflow that starts `width` children of itself, each of which does the same."""
    return {
        "name": "swarm",
        "tasks": {
            "spread": {
                "action": "workflow",
                "for_each": f"${{{{ range({width}) | list }}}}",
                "with": {"workflow": "swarm"},
            }
        },
    }


def tree(h: Harness) -> list[dict[str, Any]]:
    """Every execution in the store: its id, parent, depth, root and state."""
    e = schema.executions
    columns = (e.c.id, e.c.parent_id, e.c.depth, e.c.root_id, e.c.state, e.c.created_at)
    with h.store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(*columns))]


async def test_labels_under_execflow_are_refused_naming_the_label(api: Api) -> None:
    await native(api, "PUT", "/workflows/loop", LOOP)
    for labels, pointer in (
        ({"execflow.depth": "-40"}, "/labels/execflow.depth"),
        ({"team": "a", "EXECFLOW.Schedule": "nightly"}, "/labels/EXECFLOW.Schedule"),
    ):
        r = await api.client.post(
            "/api/v1/workflows/loop/executions", json={"labels": labels}, headers=api.auth()
        )
        assert r.status_code == 422, r.text
        (detail,) = r.json()["error"]["details"]
        assert detail["pointer"] == pointer and "execflow's own" in detail["reason"]
    assert await executions(api) == 0
    # other labels are the caller's, as before
    r = await api.client.post(
        "/api/v1/workflows/loop/executions",
        json={"labels": {"execflow": "x", "team.execflow.depth": "1"}},
        headers=api.auth(),
    )
    assert r.status_code == 202, r.text


async def test_a_self_calling_workflow_stops_at_the_max_depth_whatever_labels_say(
    store: Store,
) -> None:
    async with harness(store) as h:
        await h.apply(LOOP)
        root = await h.run("loop")
        found = sorted(tree(h), key=lambda x: x["depth"])
        assert [x["depth"] for x in found] == list(range(MAX_DEPTH + 1))
        assert {x["root_id"] for x in found[1:]} == {root.id} and found[0]["root_id"] is None
        deepest = await get(h, found[-1]["id"])
        assert deepest.error is not None and f"nest at most {MAX_DEPTH} deep" in str(deepest.error)
        assert (await get(h, root.id)).state == E.FAILED
        # an execution that carries the label anyway (stored before labels were checked)
        # nests no deeper: its depth is the engine's
        wf = await h.service.workflow(h.admin, "loop")
        labelled = ExecutionRecord.new(
            new_id(),
            h.admin.project_id,
            wf.id,
            "loop",
            1,
            {},
            h.clock.now(),
            labels={"execflow.depth": "-40"},
        )
        await h.store.start(labelled, None, None)
        h.engine.poke()
        await h.engine.run_until_idle()
        mine = [x for x in tree(h) if x["id"] == labelled.id or x["root_id"] == labelled.id]
        assert len(mine) == MAX_DEPTH + 1


async def test_a_self_calling_fan_out_makes_a_bounded_number_of_executions(
    store: Store,
) -> None:
    async with harness(store, max_items=20) as h:
        await h.apply(swarm(2))
        root = await h.run("swarm")
        made = tree(h)
        # the root and at most max_items executions through children, at every depth
        assert len(made) == 1 + 20, len(made)
        assert {x["root_id"] for x in made} == {None, root.id}
        assert (await get(h, root.id)).state == E.FAILED
        errors = [tr.error for x in made for tr in (await get(h, x["id"])).task_runs if tr.error]
        items = [item["message"] for error in errors for item in error.get("items", [])]
        refused = [m for m in items if "EXECFLOW_MAX_ITEMS" in m]
        assert refused and all("one start makes at most 20" in m for m in refused), refused


CHILD: dict[str, Any] = {
    "name": "child",
    "tasks": {"hi": {"action": "echo", "with": {"v": 1}}},
    "outputs": {"v": "${{ tasks.hi.output.v }}"},
}
FANNING: dict[str, Any] = {
    "name": "fanning",
    "tasks": {
        "spread": {
            "action": "workflow",
            "for_each": "${{ range(7) | list }}",
            "with": {"workflow": "child"},
        }
    },
    "outputs": {"n": "${{ tasks.spread.output | length }}"},
}


async def test_child_starts_wait_for_the_projects_start_rate(store: Store) -> None:
    clock = ManualClock()
    async with harness(store, clock, start_rate=2.0, start_burst=3) as h:
        await h.apply(CHILD)
        await h.apply(FANNING)
        began = clock.now()
        parent = await h.run("fanning")
        assert (parent.state, parent.outputs) == (E.COMPLETED, {"n": 7})
        children = sorted(x["created_at"] for x in tree(h) if x["parent_id"] == parent.id)
        waited = [(at - began).total_seconds() for at in children]
        # a burst of 3 at once, then 2 a second
        assert waited[:3] == [0, 0, 0] and len(waited) == 7, waited
        assert all(b - a >= 0.5 - 1e-6 for a, b in itertools.pairwise(waited[2:]))
        logs = await log_of(h, parent.id)
        assert any("4 child start(s) wait for the project's start rate" in m for m in logs), logs


async def test_a_child_start_that_waited_is_made_by_the_node_that_takes_over(
    store: Store,
) -> None:
    clock = ManualClock()
    async with harness(store, clock, node_id="a", start_rate=0.01, start_burst=2) as a:
        await a.apply(CHILD)
        await a.apply(FANNING)
        parent = await a.service.start(a.admin, "fanning", {})
        await a.engine.run_until_idle(until=clock.now())
        assert len([x for x in tree(a) if x["parent_id"] == parent.id]) == 2
        await a.crash()
    clock.advance(31)
    async with harness(store, clock, node_id="b") as b:
        await b.engine.run_until_idle()
        done = await get(b, parent.id)
        assert (done.state, done.outputs) == (E.COMPLETED, {"n": 7})
        # made once each: the waiting ones were not lost, nor made twice
        assert len([x for x in tree(b) if x["parent_id"] == parent.id]) == 7
        assert not [tr for tr in done.task_runs if tr.error and tr.error.get("type") == "lost"]


async def test_cancelling_an_execution_whose_child_starts_wait_makes_no_child(
    store: Store,
) -> None:
    clock = ManualClock()
    async with harness(store, clock, start_rate=0.01, start_burst=2) as h:
        await h.apply(CHILD)
        await h.apply(FANNING)
        parent = await h.service.start(h.admin, "fanning", {})
        await h.engine.run_until_idle(until=clock.now())
        await h.service.cancel(h.admin, parent.id, force=True)
        await h.engine.run_until_idle()
        assert (await get(h, parent.id)).state == E.CANCELED
        assert len([x for x in tree(h) if x["parent_id"] == parent.id]) == 2


def test_children_stored_before_the_upgrade_get_their_depth_from_their_parents(
    tmp_path: Path,
) -> None:
    """The label was all a child had, and a caller could set it: the migration that records
    depth and root reads the chain of parents instead."""
    engine = connect(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0015")  # the revision before depth and root were recorded
    now = datetime.now(UTC)
    old = sa.table(
        "executions",
        *(
            sa.column(c.name, c.type)
            for c in schema.executions.c
            if c.name not in ("depth", "root_id")
        ),
    )
    rows = []
    chain = [("r", None), ("c1", "r"), ("c2", "c1"), ("c3", "c2"), ("lone", None)]
    for ident, parent in chain:
        rows.append(
            {
                "id": ident,
                "project_id": "p",
                "workflow_id": "w",
                "workflow_name": "loop",
                "revision": 1,
                "name": ident,
                "state": "COMPLETED",
                "inputs": {},
                "labels": {"execflow.depth": "-40"},
                "created_at": now,
                "started_at": now,
                "updated_at": now,
                "cancel_requested": False,
                "log_level": 6,
                "round": 0,
                "parent_id": parent,
                "callback_attempts": 0,
            }
        )
    with engine.begin() as conn:
        conn.execute(schema.projects.insert().values(id="p", name="p", created_at=now))
        conn.execute(
            schema.workflows.insert().values(
                id="w",
                project_id="p",
                name="loop",
                latest_revision=1,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(old.insert(), rows)
    upgrade(engine)
    e = schema.executions
    with engine.connect() as conn:
        found = {
            r.id: (r.depth, r.root_id)
            for r in conn.execute(sa.select(e.c.id, e.c.depth, e.c.root_id))
        }
    assert found == {
        "r": (0, None),
        "c1": (1, "r"),
        "c2": (2, "r"),
        "c3": (3, "r"),
        "lone": (0, None),
    }
    engine.dispose()
