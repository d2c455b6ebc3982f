"""Attacks on secrets and on the bounds of sub-workflows, as found against a running server:
an operator pairing new inputs with sealed secrets, depth set by a label, secrets shown in
workflow views and errors, and transformed secrets that masking missed."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import hashlib
import html
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from jinja2.utils import htmlsafe_json_dumps

from execflow.api.dialects.emr_shapes import instance_id
from execflow.masking import Secrets, redact
from execflow.sealing import SECRET_MASK
from tests.test_api import Api, api  # noqa: F401
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
    # OBS shows the definition and the template's inputs; the other dialects name workflows
    # only (EMR's ListFlow, Explorer's workflows) or show none (vRO, Onedata)
    graph = (await api.client.get("/v2/workflows/choosy", headers=api.auth())).json()
    assert graph["definition"]["parameters"]["vault"] == masked
    template = (await api.client.get("/v2/workflowtemplates/choosy", headers=api.auth())).json()
    (vault,) = [i for i in template["inputs"] if i["key"] == "vault"]
    assert (vault["value"], vault["enum"]) == (SECRET_MASK, [SECRET_MASK] * 2)
    token = {"Cookie": f"explorer_token={api.token}"}
    for r in (
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
