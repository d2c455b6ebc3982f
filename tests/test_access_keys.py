"""Access keys: an id and a secret that sign requests (as the OBS SDKs do), resolving to the
same principals, roles and projects as tokens. Requests here are signed by the OBS SDK's own
signer, so what execflow checks is what those clients send."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
import sqlalchemy as sa
from aliyunsdkcore.auth.composer.rpc_signature_composer import get_signed_url  # Alibaba's
from obs.auth import Authentication  # the OBS SDK's signer
from obs.convertor import Adapter

from execflow.clock import ManualClock
from execflow.signing import (
    NonceCache,
    acs_signature,
    acs_string_to_sign,
    obs_signature,
    obs_string_to_sign,
)
from execflow.store import schema
from tests.test_api import HELLO, Api, api  # noqa: F401
from tests.test_api_access import assert_error, ensure_project


async def new_key(api: Api, project: str, role: str, **extra: Any) -> dict[str, Any]:
    await ensure_project(api, project)
    r = await api.client.post(
        f"/api/v1/projects/{project}/access-keys",
        json={"role": role, "description": f"{role} key", **extra},
        headers=api.auth(),
    )
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


def sdk_sign(
    key: dict[str, Any],
    method: str,
    path: str,
    query: dict[str, str | None] | None = None,
    headers: dict[str, str] | None = None,
    when: datetime | None = None,
    scheme: str = "obs",
) -> dict[str, str]:
    """Headers the OBS SDK would send: its Date and its Authorization for this request."""
    signer = Authentication(key["id"], key["secret"], True, Adapter(scheme), "localhost", False)
    headers = dict(headers or {})
    headers["Date"] = format_datetime(when or datetime.now(UTC), usegmt=True)
    # the SDK signs an object key (the path without its leading slash) and path arguments
    signed = signer.doAuth(method, None, path.lstrip("/"), query or {}, headers)
    return {**headers, "Authorization": signed["Authorization"]}


def url(path: str, query: dict[str, str | None] | None = None) -> str:
    if not query:
        return path
    parts = [quote(k) if v is None else f"{quote(k)}={quote(v)}" for k, v in query.items()]
    return path + "?" + "&".join(parts)


async def test_an_access_key_is_shown_once_and_stored_sealed(api: Api) -> None:
    key = await new_key(api, "alpha", "developer")
    assert key["id"].startswith("EF") and len(key["id"]) == 20
    assert len(key["secret"]) >= 40 and key["state"] == "active"
    listed = await api.client.get("/api/v1/projects/alpha/access-keys", headers=api.auth())
    one = await api.client.get(
        f"/api/v1/projects/alpha/access-keys/{key['id']}", headers=api.auth()
    )
    assert [k["id"] for k in listed.json()["items"]] == [key["id"]]
    assert one.json()["role"] == "developer"
    assert key["secret"] not in listed.text + one.text
    # keys and tokens are listed apart
    tokens = await api.client.get("/api/v1/projects/alpha/tokens", headers=api.auth())
    assert tokens.json()["items"] == []
    # at rest: neither the secret nor anything that gives it back without the sealing keys
    with api.runtime.store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(schema.tokens))]
    assert key["secret"] not in json.dumps(rows, default=str)


async def test_a_request_signed_by_the_sdk_resolves_to_the_keys_project_and_role(
    api: Api,
) -> None:
    key = await new_key(api, "alpha", "developer")
    body = json.dumps(HELLO).encode()
    headers = sdk_sign(
        key, "PUT", "/api/v1/workflows/hello", headers={"Content-Type": "application/json"}
    )
    r = await api.client.put("/api/v1/workflows/hello", content=body, headers=headers)
    assert r.status_code == 201, r.text
    # the workflow is alpha's, not default's
    assert (await api.client.get("/api/v1/workflows", headers=api.auth())).json()["items"] == []
    headers = sdk_sign(
        key,
        "POST",
        "/api/v1/workflows/hello/executions",
        headers={"Content-Type": "application/json"},
    )
    r = await api.client.post(
        "/api/v1/workflows/hello/executions",
        content=json.dumps({"inputs": {"who": "ada"}}).encode(),
        headers=headers,
    )
    assert r.status_code == 202, r.text
    execution_id = r.json()["id"]
    path = f"/api/v1/executions/{execution_id}"
    r = await api.client.get(path, headers=sdk_sign(key, "GET", path))
    assert r.json()["started_by"] == key["id"]  # who did what: the key
    # query parameters and x-obs- headers as the SDK signs them
    query: dict[str, str | None] = {
        "limit": "5",
        "x-workflow-limit": "5",
        "x-workflow-prefix": None,
    }
    headers = sdk_sign(
        key, "GET", "/api/v1/executions", query, headers={"x-obs-meta-note": " n ", "x-obs-x": "1"}
    )
    r = await api.client.get(url("/api/v1/executions", query), headers=headers)
    assert r.status_code == 200, r.text
    # last used, recorded at most once a minute
    r = await api.client.get(f"/api/v1/projects/alpha/access-keys/{key['id']}", headers=api.auth())
    assert r.json()["last_used_at"] is not None


async def test_the_sdks_aws_style_signature_is_accepted_too(api: Api) -> None:
    key = await new_key(api, "alpha", "viewer")
    headers = sdk_sign(key, "GET", "/api/v1/workflows", headers={"x-amz-date": "x"}, scheme="v2")
    headers.pop("x-amz-date")  # signed over x-amz-date: without it, it does not match
    r = await api.client.get("/api/v1/workflows", headers=headers)
    assert_error(r, 401)
    headers = sdk_sign(key, "GET", "/api/v1/workflows", scheme="v2")
    assert headers["Authorization"].startswith("AWS ")
    assert (await api.client.get("/api/v1/workflows", headers=headers)).status_code == 200


async def test_a_viewer_key_may_read_but_not_write(api: Api) -> None:
    key = await new_key(api, "alpha", "viewer")
    assert (
        await api.client.get("/api/v1/workflows", headers=sdk_sign(key, "GET", "/api/v1/workflows"))
    ).status_code == 200
    headers = sdk_sign(
        key, "PUT", "/api/v1/workflows/hello", headers={"Content-Type": "application/json"}
    )
    r = await api.client.put("/api/v1/workflows/hello", content=json.dumps(HELLO), headers=headers)
    assert assert_error(r, 403)["id"] == "forbidden"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("secret", "the signature does not match the request"),
        ("path", "the signature does not match the request"),
        ("method", "the signature does not match the request"),
        ("content-type", "the signature does not match the request"),
        ("key", "the access key is unknown, revoked or expired"),
        ("late", "more than 15 minutes from the server's time"),
        ("early", "more than 15 minutes from the server's time"),
        ("no date", "a signed request needs a Date (or x-obs-date) header"),
        ("bad date", "is not an HTTP date"),
        ("no colon", "give `Authorization: OBS <access key id>:<signature>`"),
    ],
)
async def test_a_request_that_does_not_match_its_signature_is_401(
    api: Api, tamper: str, reason: str
) -> None:
    key = await new_key(api, "alpha", "admin")
    path, method = "/api/v1/workflows", "GET"
    headers = {"Content-Type": "application/json"}
    when = datetime.now(UTC)
    if tamper == "secret":
        last = "y" if key["secret"].endswith("x") else "x"  # a character changed, surely
        key = {**key, "secret": key["secret"][:-1] + last}
    if tamper == "key":
        key = {**key, "id": "EFAAAAAAAAAAAAAAAAAA"}
    if tamper in ("late", "early"):
        when += timedelta(minutes=16 if tamper == "early" else -16)
    signed = sdk_sign(key, method, path, headers=headers, when=when)
    if tamper == "path":
        path = "/api/v1/executions"
    if tamper == "method":
        method = "DELETE"
        path = "/api/v1/workflows/hello"
    if tamper == "content-type":
        signed["Content-Type"] = "text/plain"
    if tamper == "no date":
        signed.pop("Date")
    if tamper == "bad date":
        signed["Date"] = "yesterday"
    if tamper == "no colon":
        signed["Authorization"] = f"OBS {key['id']}"
    r = await api.client.request(method, path, headers=signed)
    error = assert_error(r, 401)
    assert reason in error["description"], error


async def test_a_revoked_or_expired_key_stops_working_at_once(api: Api) -> None:
    key = await new_key(api, "alpha", "viewer", expires_in="1h")
    path = "/api/v1/workflows"
    assert (await api.client.get(path, headers=sdk_sign(key, "GET", path))).status_code == 200
    # an hour later: expired (the signature's date moves with the clock)
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    api.runtime.service.clock = ManualClock(later)
    r = await api.client.get(path, headers=sdk_sign(key, "GET", path, when=later))
    assert "unknown, revoked or expired" in assert_error(r, 401)["description"]
    api.runtime.service.clock = ManualClock(datetime.now(UTC))
    other = await new_key(api, "alpha", "viewer")
    r = await api.client.delete(
        f"/api/v1/projects/alpha/access-keys/{other['id']}", headers=api.auth()
    )
    assert r.json()["state"] == "revoked"
    assert_error(await api.client.get(path, headers=sdk_sign(other, "GET", path)), 401)
    # a token id is not a key id, nor the other way round
    r = await api.client.delete(f"/api/v1/projects/alpha/tokens/{other['id']}", headers=api.auth())
    assert_error(r, 404)


async def test_a_keys_secret_is_not_a_bearer_token(api: Api) -> None:
    key = await new_key(api, "alpha", "admin")
    r = await api.client.get("/api/v1/workflows", headers=api.auth(key["secret"]))
    assert_error(r, 401)


async def test_only_admins_of_the_project_manage_its_keys(api: Api) -> None:
    key = await new_key(api, "alpha", "operator")
    path = "/api/v1/projects/alpha/access-keys"
    r = await api.client.get(path, headers=sdk_sign(key, "GET", path))
    assert assert_error(r, 403)["id"] == "forbidden"
    beta = await new_key(api, "beta", "admin")
    r = await api.client.get(path, headers=sdk_sign(beta, "GET", path))
    assert_error(r, 404)  # another project's keys are as good as absent


def test_our_string_to_sign_is_the_sdks() -> None:
    signer = Authentication("AK", "SK", True, Adapter("obs"), "localhost", False)
    headers = {
        "Content-Type": "application/json",
        "Content-MD5": "abc==",
        "Date": "Thu, 27 Aug 2020 12:38:10 GMT",
        "x-obs-meta-a": "  spaced  ",
        "x-obs-b": "2",
    }
    query = {"x-workflow-limit": "5", "x-workflow-prefix": None, "limit": "9", "acl": None}
    sdk = signer.getSignature("POST", None, "v2/workflows/demo", query, headers)
    ours = obs_string_to_sign(
        "POST",
        "/v2/workflows/demo",
        "limit=9&x-workflow-limit=5&x-workflow-prefix&acl",
        {k.lower(): v for k, v in headers.items()},
    )
    assert ours == sdk["CanonicalString"]
    assert obs_signature("SK", ours) == sdk["Signature"]


# Alibaba Cloud's RPC signatures, made by its SDK's own composer ----------------------------


def acs_signed_query(key: dict[str, Any], method: str = "GET", **params: str) -> str:
    signed_url, _ = get_signed_url(dict(params), key["id"], key["secret"], "JSON", method, {})
    return str(signed_url).removeprefix("/?")


async def test_a_request_signed_in_alibabas_style_resolves_to_the_key(api: Api) -> None:
    key = await new_key(api, "alpha", "viewer")
    listing = {"Action": "ListFlowProject", "Version": "2016-04-08"}
    query = acs_signed_query(key, **listing)
    r = await api.client.get(f"/?{query}")
    assert r.status_code == 200, r.text
    assert r.json()["Projects"]["Project"][0]["Name"] == "alpha"
    # the same request again: its nonce was used
    r = await api.client.get(f"/?{query}")
    assert (r.status_code, r.json()["Code"]) == (400, "SignatureNonceUsed")
    # and another node, which has not seen it, knows it from the database
    api.runtime.service._nonces = NonceCache()
    r = await api.client.get(f"/?{query}")
    assert (r.status_code, r.json()["Code"]) == (400, "SignatureNonceUsed")
    # a changed parameter no longer matches
    query = acs_signed_query(key, **listing)
    r = await api.client.get(f"/?{query.replace('ListFlowProject', 'ListFlow')}")
    assert (r.status_code, r.json()["Code"]) == (400, "SignatureDoesNotMatch")
    # the secret is not the signature's: another key's
    other = await new_key(api, "alpha", "viewer")
    query = acs_signed_query({**key, "secret": other["secret"]}, **listing)
    assert (await api.client.get(f"/?{query}")).json()["Code"] == "SignatureDoesNotMatch"


async def test_an_alibaba_signature_is_taken_for_rpc_calls_only(api: Api) -> None:
    """It covers the parameters, not the path nor a JSON body: anywhere else, or with such a
    body, it would let one signed query be replayed as any request."""
    key = await new_key(api, "alpha", "admin")
    listing = {"Action": "ListFlowProject", "Version": "2016-04-08"}
    r = await api.client.post(
        f"/api/v1/projects/alpha/tokens?{acs_signed_query(key, 'POST', **listing)}",
        json={"role": "admin"},
    )
    assert "RPC calls only" in assert_error(r, 401)["description"]
    r = await api.client.post(f"/?{acs_signed_query(key, 'POST', **listing)}", json={"a": 1})
    assert "RPC calls only" in r.json()["Message"], r.text
    tokens = await api.client.get("/api/v1/projects/alpha/tokens", headers=api.auth())
    assert tokens.json()["items"] == []


def test_our_alibaba_string_to_sign_is_the_sdks() -> None:
    params = {"Action": "SubmitFlow", "Conf": '{"cyctime": "2030-01-01 00:00:00"}', "Name": "a b*~"}
    signed_url, sdk = get_signed_url(params, "EFKEY", "secret", "JSON", "POST", {})
    sent = parse_qsl(str(signed_url).removeprefix("/?"), keep_blank_values=True)
    ours = acs_string_to_sign("POST", sent)
    assert ours == sdk
    assert acs_signature("secret", ours) == dict(sent)["Signature"]
