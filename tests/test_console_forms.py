"""The console's generated forms: the start form waiting for the end (as `Prefer: wait`),
and a signal's form carrying its schema's constraints, with the server's refusal shown
next to each field when the browser's check is bypassed."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import html
import re

import httpx

from tests.test_api import Api, api  # noqa: F401
from tests.test_console import hidden, sign_in, state_of, waiting_approval

QUICK = {"name": "quick", "tasks": {"say": {"action": "echo", "with": {"text": "hi"}}}}
CHECKED = {
    "name": "checked",
    "tasks": {
        "ask": {
            "action": "signal",
            "with": {
                "name": "order",
                "schema": {
                    "type": "object",
                    "required": ["amount", "code"],
                    "properties": {
                        "amount": {"type": "integer", "minimum": 1, "maximum": 10},
                        "code": {
                            "type": "string",
                            "pattern": "^[A-Z]{2}-[0-9]+$",
                            "minLength": 4,
                            "maxLength": 12,
                        },
                        "size": {"type": "string", "enum": ["S", "M"]},
                        "note": {"type": "string"},
                    },
                },
            },
        }
    },
}


async def _posted_while_driven(
    api: Api, client: httpx.AsyncClient, path: str, data: dict[str, str]
) -> httpx.Response:
    """POST while the engine is driven: the answer waits for an execution to end."""
    posting = asyncio.ensure_future(client.post(path, data=data))
    while not posting.done():
        await api.idle()
        await asyncio.sleep(0.01)
    return posting.result()


async def test_the_start_form_waits_for_the_end_as_prefer_wait_does(api: Api) -> None:
    await api.client.put("/api/v1/workflows/quick", json=QUICK, headers=api.auth())
    client = await sign_in(api)
    page = await client.get("/console/workflows/quick")
    assert 'name="wait" min="0" max="60"' in page.text
    form = {"_csrf": hidden(page.text), "wait": "20"}
    r = await _posted_while_driven(api, client, "/console/workflows/quick/start", form)
    assert r.status_code == 303, r.text
    target = r.headers["location"]
    assert re.fullmatch(r"/console/executions/[0-9a-f]+", target), target  # ended in time
    assert await state_of(api, target.rsplit("/", 1)[1]) == "COMPLETED"
    shown = await client.get(target)
    assert 'class="state s-COMPLETED"' in shown.text and 'id="waited"' not in shown.text
    # one that waits for a person does not end in time: shown running, and said so
    await waiting_approval(api)
    page = await client.get("/console/workflows/approval")
    form = {"_csrf": hidden(page.text), "wait": "0.2"}
    r = await _posted_while_driven(api, client, "/console/workflows/approval/start", form)
    assert r.status_code == 303 and r.headers["location"].endswith("?waited=0.2")
    shown = await client.get(r.headers["location"])
    assert 'id="waited"' in shown.text and "had not ended after 0.2 s" in shown.text
    for wrong in ("61", "-1", "soon"):
        r = await client.post("/console/workflows/quick/start", data={**form, "wait": wrong})
        assert r.status_code == 422 and "/wait" in r.text, wrong


async def test_a_signal_form_carries_its_schema_and_shows_each_refusal_by_field(
    api: Api,
) -> None:
    await api.client.put("/api/v1/workflows/checked", json=CHECKED, headers=api.auth())
    r = await api.client.post(
        "/api/v1/workflows/checked/executions", json={"inputs": {}}, headers=api.auth()
    )
    execution_id = r.json()["id"]
    await api.idle()
    client = await sign_in(api)
    page = (await client.get(f"/console/executions/{execution_id}")).text
    assert '<input type="number" step="1" name="in.amount" required min="1" max="10"' in page
    code = re.search(r'<input type="text" name="in.code"[^>]*>', page)
    assert code is not None
    attributes = html.unescape(code.group(0))
    assert "required" in attributes and 'minlength="4"' in attributes
    assert 'maxlength="12"' in attributes
    assert r'pattern="[\s\S]*(?:^[A-Z]{2}-[0-9]+$)[\s\S]*"' in attributes
    assert '<select name="in.size">' in page and '<option value="&#34;M&#34;">M</option>' in page
    # what a browser refuses, sent anyway: the server refuses it, field by field
    form = {"_csrf": hidden(page), "in.amount": "0", "in.code": "x1", "in.note": "<b>kept</b>"}
    r = await client.post(f"/console/executions/{execution_id}/signals/order", data=form)
    assert r.status_code == 422
    fields = dict(
        re.findall(r'<label class="field invalid" data-field="(\w+)">(.*?)</label>', r.text, re.S)
    )
    assert set(fields) == {"amount", "code"}
    assert "0 is less than the minimum of 1" in fields["amount"]
    assert 'value="0"' in fields["amount"]
    assert "does not match" in fields["code"] and "is too short" in fields["code"]
    assert 'value="&lt;b&gt;kept&lt;/b&gt;"' in r.text  # the other values are kept, escaped
    assert await state_of(api, execution_id) == "WAITING_ON_SIGNAL"
    # not even a number: said at its field too
    r = await client.post(
        f"/console/executions/{execution_id}/signals/order",
        data={**form, "in.amount": "many", "in.code": "AB-12"},
    )
    assert r.status_code == 422
    assert re.search(r'data-field="amount">.*?expected an integer', r.text, re.S)
    r = await client.post(
        f"/console/executions/{execution_id}/signals/order",
        data={**form, "in.amount": "3", "in.code": "AB-12"},
    )
    assert r.status_code == 303, r.text
    await api.idle()
    assert await state_of(api, execution_id) == "COMPLETED"
