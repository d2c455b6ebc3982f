"""Replaying a request signed in OBS's style (V2: the signature covers neither the body nor
most of the query): a signed request that changes something is taken once, whatever body or
query comes with it the second time; a `Content-MD5` the client sends must be the body's."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from execflow.records import Principal
from tests.test_access_keys import new_key, sdk_sign
from tests.test_api import HELLO, Api, api  # noqa: F401


async def _count(api: Api, who: Principal) -> int:
    items, _ = await api.runtime.service.list_executions(who, limit=500)
    return len(items)


async def _setup(api: Api) -> tuple[dict[str, Any], Principal]:
    r = await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    assert r.status_code in (200, 201), r.text
    key = await new_key(api, "default", "operator")
    return key, await api.runtime.service.authenticate(api.token)


async def test_a_signed_dry_run_cannot_be_replayed_as_a_real_start(api: Api) -> None:
    key, who = await _setup(api)
    path = "/api/v1/workflows/hello/executions"
    headers = sdk_sign(key, "POST", path, headers={"Content-Type": "application/json"})
    start = {"inputs": {"who": "x"}}
    r = await api.client.post(f"{path}?dry_run=true", json=start, headers=headers)
    assert r.status_code == 200, r.text
    for query in ("", "?dry_run=false", "?force=true"):
        r = await api.client.post(f"{path}{query}", json=start, headers=headers)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["id"] == "unavailable" and r.headers["Retry-After"] == "1"
        assert "taken already" in r.json()["error"]["description"]
    assert await _count(api, who) == 0


async def test_a_signed_start_cannot_be_replayed_with_another_body(api: Api) -> None:
    key, who = await _setup(api)
    path = "/api/v1/workflows/hello/executions"
    headers = sdk_sign(key, "POST", path, headers={"Content-Type": "application/json"})
    r = await api.client.post(path, json={"inputs": {"who": "a"}}, headers=headers)
    assert r.status_code == 202, r.text
    r = await api.client.post(path, json={"inputs": {"who": "b"}}, headers=headers)
    assert r.status_code == 503, r.text
    r = await api.client.post(path, json={"inputs": {"who": "a"}}, headers=headers)
    assert r.status_code == 503, r.text  # the very same request again is a replay too
    assert await _count(api, who) == 1


async def test_in_obs_words_a_replay_is_service_unavailable_which_its_sdk_retries(
    api: Api,
) -> None:
    key, _ = await _setup(api)
    await api.client.put(
        "/api/v1/workflows/media",
        json={"name": "media", "tasks": {"a": {"action": "echo"}}},
        headers=api.auth(),
    )
    path = "/v2/workflows/media"
    headers = sdk_sign(key, "POST", path, headers={"Content-Type": "application/json"})
    body = json.dumps({"bucket": "b", "object": "o", "inputs": {}}).encode()
    assert (await api.client.post(path, content=body, headers=headers)).status_code == 200
    r = await api.client.post(path, content=body, headers=headers)
    assert r.status_code == 503 and r.json()["code"] == "ServiceUnavailable", r.text


async def test_reads_may_be_sent_again(api: Api) -> None:
    key, _ = await _setup(api)
    path = "/api/v1/workflows/hello"
    headers = sdk_sign(key, "GET", path)
    for _ in range(3):
        r = await api.client.get(path, headers=headers)
        assert r.status_code == 200, r.text


async def test_a_content_md5_must_be_the_bodys(api: Api) -> None:
    key, who = await _setup(api)
    path = "/api/v1/workflows/hello/executions"
    body = json.dumps({"inputs": {"who": "a"}}).encode()
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    extra = {"Content-Type": "application/json", "Content-MD5": md5}
    signed = sdk_sign(key, "POST", path, headers=extra)
    r = await api.client.post(path, content=body, headers=signed)
    assert r.status_code == 202, r.text
    other = json.dumps({"inputs": {"who": "b"}}).encode()
    r = await api.client.post(
        path, content=other, headers=sdk_sign(key, "POST", path, headers=extra)
    )
    assert r.status_code == 401, r.text
    assert "Content-MD5" in r.json()["error"]["description"]
    assert await _count(api, who) == 1
