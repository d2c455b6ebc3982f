"""Requests to `/` (and to a bucket's path) find their API by what they are: EMR's RPC
calls, OBS's calls in virtual-host and path style, each answered, and refused, in its own
vendor's shape."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import pytest

from execflow.api.dialects.root import kind_of
from tests.test_access_keys import new_key, sdk_sign
from tests.test_api import Api, api  # noqa: F401
from tests.test_dialect_obs import assert_obs_error

EMR = {"Version": "2016-04-08", "RegionId": "cn-hangzhou"}
FORM = "application/x-www-form-urlencoded"
EMR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


def scope(path: str, query: str = "", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize(
    ("path", "query", "headers", "kind"),
    [
        ("/", "obsworkflowtriggerpolicy", {}, "obs"),
        ("/", "obsworkflowtriggerpolicy=&Action=SubmitFlow", {}, "obs"),
        ("/demo-bucket", "obsworkflowtriggerpolicy", {}, "obs"),
        ("/", "Action=SubmitFlow&Version=2016-04-08", {}, "emr"),
        ("/", "", {"content_type": f"{FORM}; charset=utf-8"}, "emr"),
        ("/", "Action=ListFlow", {"authorization": "OBS EFKEY:c2ln"}, "emr"),
        ("/", "", {"authorization": "OBS EFKEY:c2ln"}, "obs"),
        ("/", "", {"x_obs_date": "Thu, 27 Aug 2020 12:38:10 GMT"}, "obs"),
        ("/", "", {"authorization": "Bearer t"}, "emr"),
        ("/", "", {}, "emr"),
        # a browser's page request goes to the console; an RPC call asking for HTML does not
        ("/", "", {"accept": "text/html,application/xhtml+xml"}, "console"),
        ("/", "Action=ListFlow", {"accept": "text/html"}, "emr"),
        ("/", "", {"accept": "text/html", "content_type": FORM}, "emr"),
        ("/", "", {"accept": "application/json"}, "emr"),
        ("/demo-bucket/an/object", "", {"authorization": "AWS EFKEY:c2ln"}, "obs"),
        ("/demo-bucket", "", {}, None),
        ("/livez", "", {}, None),
        # a path with a prefix of its own is its API's whatever else it carries
        ("/api/v1/executions", "obsworkflowtriggerpolicy", {"authorization": "OBS k:s"}, None),
        ("/v2/workflows/x", "Action=SubmitFlow", {}, None),
        ("/vco/api/workflows", "", {"authorization": "OBS k:s"}, None),
    ],
)
def test_what_a_request_is_decides_its_api(
    path: str, query: str, headers: dict[str, str], kind: str | None
) -> None:
    assert kind_of(scope(path, query, **headers)) == kind


async def test_trigger_policies_are_refused_in_obs_shape_in_both_styles(api: Api) -> None:
    auth = api.auth()
    for method, path in (
        ("GET", "/?obsworkflowtriggerpolicy"),
        ("PUT", "/?obsworkflowtriggerpolicy"),
        ("DELETE", "/?obsworkflowtriggerpolicy"),
        ("GET", "/demo-bucket?obsworkflowtriggerpolicy"),
        ("PUT", "/demo-bucket?obsworkflowtriggerpolicy"),
        ("DELETE", "/demo-bucket?obsworkflowtriggerpolicy"),
    ):
        body = {"rules": [{"event_source": "OBS"}]} if method == "PUT" else None
        r = await api.client.request(method, path, json=body, headers=auth)
        message = assert_obs_error(r, 405, "MethodNotAllowed")
        assert "trigger policies are not supported" in message, message
    # refused before any route (a body that is no JSON): still OBS's shape, not EMR's
    r = await api.client.put(
        "/?obsworkflowtriggerpolicy",
        content=b"{rules",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert "not JSON" in assert_obs_error(r, 400, "InvalidArgument")
    # no credential is looked at: the answer says nothing of any project
    r = await api.client.get("/demo-bucket?obsworkflowtriggerpolicy")
    assert_obs_error(r, 405, "MethodNotAllowed")


async def test_other_obs_calls_at_the_root_get_obs_errors_and_emr_calls_still_work(
    api: Api,
) -> None:
    key = await new_key(api, "default", "operator")
    signed = sdk_sign(key, "GET", "/")  # what ObsClient.listBuckets sends
    message = assert_obs_error(await api.client.get("/", headers=signed), 405, "MethodNotAllowed")
    assert "Data+ workflow calls only" in message
    # an OBS-signed call to a path nothing answers is OBS's NoSuchResource, not the native 404
    r = await api.client.get("/demo-bucket/an/object", headers=sdk_sign(key, "GET", "/x"))
    assert_obs_error(r, 404, "NoSuchResource")

    auth = api.auth()
    r = await api.client.get("/", params={"Action": "ListFlowProject", **EMR}, headers=auth)
    assert r.status_code == 200 and r.json()["Projects"]["Project"], r.text
    form = {"Action": "ListFlowProject", **EMR}
    r = await api.client.post("/", data=form, headers=auth)
    assert r.status_code == 200, r.text
    for r in (
        await api.client.get("/", headers=auth),
        await api.client.delete("/", headers=auth),
        await api.client.post("/", content=b"{bad", headers={**auth, "Content-Type": FORM}),
    ):
        assert 400 <= r.status_code < 500 and set(r.json()) == EMR_KEYS, r.text
    # the native API and the probes are nobody else's
    assert (await api.client.get("/livez")).status_code == 200
    r = await api.client.get("/nothing-here", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["id"] == "not_found"
