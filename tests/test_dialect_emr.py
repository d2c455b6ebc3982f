"""The Alibaba Cloud E-MapReduce dialect (API 2016-04-08): its RPC requests as the vendor's
page and SDK send them, answered in its JSON or XML, its errors, and who may call what."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.composer.rpc_signature_composer import get_signed_url
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import RpcRequest
from aliyunsdkemr.request.v20160408 import (
    DescribeFlowInstanceRequest,
    DescribeFlowNodeInstanceLauncherLogRequest,
    DescribeFlowNodeInstanceRequest,
    KillFlowJobRequest,
    ListFlowInstanceRequest,
    ListFlowNodeInstanceRequest,
    ListFlowProjectRequest,
    ListFlowRequest,
    RerunFlowRequest,
    ResumeFlowRequest,
    SubmitFlowRequest,
    SuspendFlowRequest,
)
from fastapi.routing import APIRoute

from execflow.api.dialects import emr
from execflow.api.dialects.emr_shapes import ERRORS, STATUS
from execflow.auth import ROLE_PRIVILEGES, ROLES, Privilege
from execflow.states import ExecutionState
from tests.test_access_keys import acs_signed_query, new_key
from tests.test_api import Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_attacks_live import Live
from tests.test_server import poll

COMMON = {"Version": "2016-04-08", "RegionId": "cn-hangzhou"}
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}

DAILY: dict[str, Any] = {
    "name": "daily",
    "parameters": {
        "who": {"type": "string", "default": "world"},
        "times": {"type": "integer", "default": 2},
        "secret": {"type": "string", "secret": True},
    },
    "tasks": {
        "greet": {"action": "echo", "with": {"text": "hello ${{ params.who }}"}},
        "again": {
            "action": "echo",
            "needs": ["greet"],
            "with": {"n": "${{ params.times }}", "prev": "${{ tasks.greet.output.text }}"},
        },
    },
    "outputs": {"text": "${{ tasks.again.output.prev }}"},
}
STRICT: dict[str, Any] = {
    "name": "strict",
    "parameters": {"who": {"type": "string", "required": True}, "times": {"type": "integer"}},
    "tasks": {"greet": {"action": "echo", "with": {"text": "${{ params.who }}"}}},
}
GATE: dict[str, Any] = {
    "name": "gate",
    "tasks": {
        "wait": {"action": "signal", "with": {"name": "go"}},
        "after": {"action": "echo", "needs": ["wait"], "with": {"done": True}},
    },
}
BROKEN: dict[str, Any] = {
    "name": "broken",
    "tasks": {
        "first": {"action": "echo", "with": {"ok": True}},
        "t": {
            "action": "python",
            "needs": ["first"],
            "with": {"function": "tests.fixtures.tasks:boom", "args": {"message": "kaput"}},
        },
    },
}


async def put(api: Api, definition: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    r = await api.client.put(
        f"/api/v1/workflows/{definition['name']}", json=definition, headers=api.auth(token)
    )
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


async def ids(
    api: Api, definition: dict[str, Any], token: str | None = None, project: str = "default"
) -> tuple[str, str]:
    """(flow id, project id) of a workflow put into the token's project, as ListFlowProject
    and ListFlow give them."""
    await put(api, definition, token)
    body = ok(await rpc(api, "ListFlowProject", token))
    (mine,) = body["Projects"]["Project"]
    assert mine["Name"] == project and mine["Id"].startswith("FP-")
    body = ok(await rpc(api, "ListFlow", token, Name=definition["name"]))
    (flow,) = body["Flow"]["Flow"]
    assert (flow["Name"], flow["ProjectId"]) == (definition["name"], mine["Id"])
    return str(flow["Id"]), str(mine["Id"])


async def rpc(
    api: Api, action: str, token: str | None = None, method: str = "GET", **params: str
) -> httpx.Response:
    """An RPC call with a token, its parameters in the query (GET) or a form body (POST)."""
    sent = {"Action": action, **COMMON, **params}
    if method == "GET":
        return await api.client.get("/", params=sent, headers=api.auth(token))
    return await api.client.post("/", data=sent, headers=api.auth(token))


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert len(body["RequestId"]) == 36
    return body


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == ERROR_KEYS, body
    assert body["Code"] == code, body
    return body


# The seed page's sample request -------------------------------------------------------------


async def test_the_sample_request_signed_as_the_sdk_signs_starts_a_flow_that_runs(
    api: Api,
) -> None:
    flow, project = await ids(api, DAILY)
    key = await new_key(api, "default", "operator")
    # the page's request with its common parameters (Version, Format and the signature)
    query = acs_signed_query(
        key, "GET", Action="SubmitFlow", FlowId=flow, ProjectId=project, **COMMON
    )
    r = await api.client.get(f"/?{query}")
    body = ok(r)
    assert set(body) == {"RequestId", "Id", "InstanceId", "Data"}
    assert body["Id"] == body["InstanceId"] == body["Data"]
    assert body["Id"].startswith("FI-") and len(body["Id"]) == 35
    await api.idle()
    detail = ok(await rpc(api, "DescribeFlowInstance", Id=body["Id"], ProjectId=project))
    assert (detail["Id"], detail["FlowId"], detail["FlowName"]) == (body["Id"], flow, "daily")
    assert (detail["Status"], detail["ProjectId"], detail["HasNodeFailed"]) == (
        "SUCCEEDED",
        project,
        False,
    )
    nodes = detail["NodeInstance"]["NodeInstance"]
    assert [(n["NodeName"], n["Status"], n["JobType"]) for n in nodes] == [
        ("greet", "SUCCESS", "ECHO"),
        ("again", "SUCCESS", "ECHO"),
    ]
    assert json.loads(detail["Graph"])["edges"] == [{"source": "greet", "target": "again"}]
    assert detail["EndTime"] >= detail["StartTime"] and detail["Duration"] >= 0
    r = await api.client.get(f"/api/v1/executions/{body['Id'][3:].lower()}", headers=api.auth())
    assert r.json()["outputs"] == {"text": "hello world"}


async def test_the_sample_request_in_xml_and_as_a_form_body(api: Api) -> None:
    flow, project = await ids(api, DAILY)
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Format="XML")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8"?><SubmitFlowResponse>')
    root = ET.fromstring(r.text)
    assert [e.tag for e in root] == ["RequestId", "Id", "InstanceId", "Data"]
    ident = root.findtext("Id")
    assert ident and ident.startswith("FI-")
    # the same call as a form body, signed there too (the SDK's POST with body parameters)
    key = await new_key(api, "default", "operator")
    signed = acs_signed_query(
        key, "POST", Action="SubmitFlow", FlowId="daily", ProjectId="default", **COMMON
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await api.client.post("/", content=signed, headers=form)
    second = ok(r)["Id"]
    await api.idle()
    r = await rpc(api, "DescribeFlowInstance", Id=second, ProjectId=project, Format="XML")
    root = ET.fromstring(r.text)
    assert root.tag == "DescribeFlowInstanceResponse"
    assert root.findtext("Status") == "SUCCEEDED"
    assert [n.findtext("NodeName") for n in root.iter("NodeInstance") if n.find("Id") is not None]
    # a signature sent in a form body is checked like one in the query
    tampered = signed.replace("FlowId=daily", "FlowId=other")
    error(await api.client.post("/", content=tampered, headers=form), 400, "SignatureDoesNotMatch")
    # the SDK's way with body parameters: the signature in the query covers the body too
    body = {"FlowId": "daily", "ProjectId": "default", "Conf": '{"who": "form"}'}
    query = {"Action": "SubmitFlow", **COMMON}
    url, _ = get_signed_url(query, key["id"], key["secret"], "JSON", "POST", body)
    ok(await api.client.post(str(url), content=urlencode(body), headers=form))
    url, _ = get_signed_url(query, key["id"], key["secret"], "JSON", "POST", body)
    sent = urlencode({**body, "Conf": '{"who": "mallory"}'})
    error(await api.client.post(str(url), content=sent, headers=form), 400, "SignatureDoesNotMatch")


async def test_conf_schedules_the_instance_and_gives_the_parameters(api: Api) -> None:
    flow, project = await ids(api, DAILY)
    conf = {"cyctime": "1542783967503", "who": "ada", "times": "3", "secret": "s3cr3t"}
    r = await rpc(
        api, "SubmitFlow", "", "POST", FlowId=flow, ProjectId=project, Conf=json.dumps(conf)
    )
    ident = ok(r)["Id"]
    await api.idle()
    r = await rpc(api, "DescribeFlowInstance", Id=ident, ProjectId=project)
    detail = ok(r)
    assert detail["ScheduleTime"] == 1542783967503
    assert detail["Status"] == "SUCCEEDED"
    assert "s3cr3t" not in r.text
    native = await api.client.get(f"/api/v1/executions/{ident[3:].lower()}", headers=api.auth())
    body = native.json()
    assert body["inputs"] == {"who": "ada", "times": 3, "secret": "******"}
    assert body["outputs"] == {"text": "hello ada"}


# Companion calls ------------------------------------------------------------------------------


async def submit(api: Api, flow: str, project: str, token: str | None = None, **conf: Any) -> str:
    extra = {"Conf": json.dumps(conf)} if conf else {}
    ident: str = ok(await rpc(api, "SubmitFlow", token, FlowId=flow, ProjectId=project, **extra))[
        "Id"
    ]
    return ident


async def status(api: Api, ident: str, project: str) -> str:
    body = ok(await rpc(api, "DescribeFlowInstance", Id=ident, ProjectId=project))
    state: str = body["Status"]
    return state


async def test_suspend_resume_kill_and_rerun_a_flow_instance(api: Api) -> None:
    flow, project = await ids(api, GATE)
    ident = await submit(api, flow, project)
    await api.idle()
    assert await status(api, ident, project) == "RUNNING"  # waiting for its signal
    for action, expected in (("SuspendFlow", "SUSPENDED"), ("ResumeFlow", "RUNNING")):
        body = ok(await rpc(api, action, "", "POST", FlowInstanceId=ident, ProjectId=project))
        assert body["Data"] is True
        await api.idle()
        assert await status(api, ident, project) == expected
    r = await rpc(api, "ResumeFlow", FlowInstanceId=ident, ProjectId=project)
    assert "is not suspended" in error(r, 409, "OperationConflict")["Message"]
    # a submitted instance runs already: StartFlow says so, and resumes a suspended one
    assert ok(await rpc(api, "StartFlow", FlowInstanceId=ident, ProjectId=project))["Data"]
    ok(await rpc(api, "SuspendFlow", FlowInstanceId=ident, ProjectId=project))
    await api.idle()
    assert ok(await rpc(api, "StartFlow", FlowInstanceId=ident, ProjectId=project))["Data"]
    await api.idle()
    assert await status(api, ident, project) == "RUNNING"
    # the node waiting for its signal, by its own id
    detail = ok(await rpc(api, "DescribeFlowInstance", Id=ident, ProjectId=project))
    (node,) = detail["NodeInstance"]["NodeInstance"]
    assert (node["NodeName"], node["Status"], node["FlowInstanceId"]) == ("wait", "RUNNING", ident)
    one = ok(await rpc(api, "DescribeFlowNodeInstance", Id=node["Id"], ProjectId=project))
    assert {k: one[k] for k in node} == node
    # killing the node's job cancels the instance it belongs to
    assert ok(await rpc(api, "KillFlowJob", JobInstanceId=node["Id"], ProjectId=project))["Data"]
    await api.idle()
    assert await status(api, ident, project) == "KILLED"
    # rerun the failed (here: killed) nodes in the same instance
    body = ok(
        await rpc(api, "RerunFlow", FlowInstanceId=ident, ProjectId=project, ReRunFail="true")
    )
    assert body == {"RequestId": body["RequestId"], "Data": True, "Id": ident}
    await api.idle()
    assert await status(api, ident, project) == "RUNNING"
    ok(await rpc(api, "KillFlowJob", JobInstanceId=ident, ProjectId=project))
    await api.idle()
    # the whole flow anew: a new instance
    body = ok(await rpc(api, "RerunFlow", FlowInstanceId=ident, ProjectId=project))
    assert body["Id"] != ident
    await api.idle()
    assert await status(api, body["Id"], project) == "RUNNING"
    r = await rpc(api, "RerunFlow", FlowInstanceId=body["Id"], ProjectId=project)
    assert "has not ended" in error(r, 409, "OperationConflict")["Message"]
    r = await rpc(api, "StartFlow", FlowInstanceId=ident, ProjectId=project)
    assert "has ended (KILLED)" in error(r, 409, "OperationConflict")["Message"]


async def test_rerun_fail_runs_the_failed_node_again(api: Api) -> None:
    flow, project = await ids(api, BROKEN)
    ident = await submit(api, flow, project)
    await api.idle()
    detail = ok(await rpc(api, "DescribeFlowInstance", Id=ident, ProjectId=project))
    assert (detail["Status"], detail["HasNodeFailed"]) == ("FAILED", True)
    failed = {n["NodeName"]: n for n in detail["NodeInstance"]["NodeInstance"]}
    assert failed["t"]["Status"] == "FAILED" and "kaput" in failed["t"]["ExternalInfo"]
    assert failed["first"]["Status"] == "SUCCESS"
    ok(await rpc(api, "RerunFlow", FlowInstanceId=ident, ProjectId=project, ReRunFail="true"))
    await api.idle()
    detail = ok(await rpc(api, "DescribeFlowInstance", Id=ident, ProjectId=project))
    again = {n["NodeName"]: n for n in detail["NodeInstance"]["NodeInstance"]}
    assert again["t"]["Retries"] == 1 and again["first"]["Id"] == failed["first"]["Id"]
    r = await rpc(
        api,
        "DescribeFlowNodeInstanceLauncherLog",
        NodeInstanceId=again["t"]["Id"],
        ProjectId=project,
    )
    log = ok(r)
    lines = [e["Content"] for e in log["LogEntrys"]["LogEntry"]]
    assert log["LogEnd"] is True and any("kaput" in line for line in lines), lines
    r = await rpc(
        api,
        "DescribeFlowNodeInstanceLauncherLog",
        NodeInstanceId=again["t"]["Id"],
        ProjectId=project,
        Lines="1",
        Reverse="true",
    )
    assert [e["Content"] for e in ok(r)["LogEntrys"]["LogEntry"]] == lines[-1:]
    r = await rpc(api, "ListFlowNodeInstance", ProjectId=project, **{"StatusList.1": "FAILED"})
    listed = ok(r)["FlowNodeInstances"]["FlowNodeInstance"]
    assert [(n["FlowInstanceId"], n["NodeName"]) for n in listed] == [(ident, "t")]


async def test_list_flow_instances_pages_and_filters(api: Api) -> None:
    flow, project = await ids(api, DAILY)
    gate, _ = await ids(api, GATE)
    done = [await submit(api, flow, project) for _ in range(3)]
    waiting = await submit(api, gate, project)
    await api.idle()

    async def listed(**params: str) -> dict[str, Any]:
        return ok(await rpc(api, "ListFlowInstance", ProjectId=project, **params))

    body = await listed(PageSize="2")
    assert (body["Total"], body["PageNumber"], body["PageSize"]) == (4, 1, 2)
    first = [i["Id"] for i in body["FlowInstances"]["FlowInstance"]]
    assert first == [waiting, done[2]]
    body = await listed(PageSize="2", PageNumber="2")
    assert [i["Id"] for i in body["FlowInstances"]["FlowInstance"]] == [done[1], done[0]]
    body = await listed(OrderType="ASC", PageSize="1")
    assert [i["Id"] for i in body["FlowInstances"]["FlowInstance"]] == [done[0]]
    body = await listed(**{"StatusList.1": "RUNNING"})
    (item,) = body["FlowInstances"]["FlowInstance"]
    assert (item["Id"], item["Status"], item["FlowName"]) == (waiting, "RUNNING", "gate")
    body = await listed(**{"StatusList.1": "SUCCEEDED", "StatusList.2": "KILLED"})
    assert body["Total"] == 3
    assert (await listed(FlowId=flow))["Total"] == 3
    assert (await listed(FlowName="gate"))["Total"] == 1
    assert (await listed(InstanceId=done[1]))["Total"] == 1
    assert (await listed(InstanceId="FI-" + "C" * 32))["Total"] == 0
    r = await rpc(api, "ListFlowInstance", ProjectId=project, NodeInstanceId="FNI-1")
    assert "NodeInstanceId" in error(r, 400, "InvalidParameter")["Message"]
    assert (await listed(TimeRange=json.dumps({"type": "range", "from": 0, "to": 1})))["Total"] == 0
    whole = json.dumps({"type": "range", "from": 1, "to": 10**13})
    assert (await listed(TimeRange=whole, PageSize="1"))["Total"] == 4
    assert (await listed(TimeRange=json.dumps({"from": 10**17})))["Total"] == 0  # past 9999
    r = await rpc(api, "ListFlowInstance", ProjectId=project, TimeRange='{"from": 1e400}')
    assert "TimeRange" in error(r, 400, "InvalidParameter")["Message"]
    deep = "[" * 3000 + "]" * 3000
    r = await rpc(api, "ListFlowInstance", ProjectId=project, TimeRange=deep)
    assert "TimeRange" in error(r, 400, "InvalidParameter")["Message"]
    r = await rpc(api, "ListFlowInstance", ProjectId=project, **{"StatusList.1": "DONE"})
    assert "StatusList" in error(r, 400, "InvalidParameter")["Message"]
    r = await rpc(api, "ListFlowInstance", ProjectId=project, PageSize="1000")
    assert "PageSize" in error(r, 400, "InvalidParameter")["Message"]
    r = await rpc(api, "ListFlowInstance", ProjectId=project, Format="XML")
    root = ET.fromstring(r.text)
    assert root.tag == "ListFlowInstanceResponse" and root.findtext("Total") == "4"
    assert len(root.findall("FlowInstances/FlowInstance")) == 4
    r = await rpc(api, "ListFlowNodeInstance", ProjectId=project, PageSize="3")
    body = ok(r)
    assert body["Total"] == 7 and len(body["FlowNodeInstances"]["FlowNodeInstance"]) == 3
    later = str(10**13)  # the year 2286
    r = await rpc(api, "ListFlowNodeInstance", ProjectId=project, StartTime=later)
    assert ok(r)["Total"] == 0
    r = await rpc(api, "ListFlowNodeInstance", StartTime="1542783967503")
    assert ok(r)["Total"] == 7


# Errors ----------------------------------------------------------------------------------------


async def test_bad_requests_get_alibabas_errors_and_start_nothing(api: Api) -> None:
    flow, project = await ids(api, STRICT)
    r = await rpc(api, "SubmitFlow", FlowId="F-" + "0" * 32, ProjectId=project)
    assert "not found" in error(r, 404, "EntityNotExist")["Message"]
    r = await rpc(api, "SubmitFlow", FlowId="nope", ProjectId=project)
    error(r, 404, "EntityNotExist")
    conf = json.dumps({"times": "three", "colour": "red"})
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Conf=conf)
    message = error(r, 400, "InvalidParameter")["Message"]
    assert "Conf.times: expected integer, got string" in message
    assert "Conf.colour: unknown parameter" in message
    assert "Conf.who: a value is required" in message
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Conf="[1]")
    assert "Conf" in error(r, 400, "InvalidParameter")["Message"]
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Conf='{"cyctime": "soon"}')
    assert "Conf.cyctime" in error(r, 400, "InvalidParameter")["Message"]
    r = await rpc(api, "SubmitFlow", ProjectId=project)
    assert "FlowId" in error(r, 400, "MissingParameter")["Message"]
    r = await rpc(api, "SubmitFlow", FlowId=flow)
    assert "ProjectId" in error(r, 400, "MissingParameter")["Message"]
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId="FP-" + "A" * 32)
    error(r, 404, "EntityNotExist")
    r = await rpc(api, "DescribeFlowInstance", Id="FI-123", ProjectId=project)
    assert "Id" in error(r, 400, "InvalidParameter")["Message"]
    r = await rpc(api, "DescribeFlowInstance", Id="FI-" + "B" * 32, ProjectId=project)
    error(r, 404, "EntityNotExist")
    r = await rpc(api, "DeleteFlow", Id=flow, ProjectId=project)
    error(r, 404, "InvalidAction.NotFound")
    r = await api.client.get("/", params={"Version": "2016-04-08"}, headers=api.auth())
    assert "Action" in error(r, 400, "MissingParameter")["Message"]
    r = await api.client.get("/", params={"Action": "SubmitFlow"}, headers=api.auth())
    error(r, 400, "MissingParameter")
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Version="2020-01-01")
    error(r, 400, "InvalidVersion")
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Format="YAML")
    error(r, 400, "InvalidParameter")
    r = await rpc(api, "SubmitFlow", FlowId=flow, ProjectId=project, Format="XML", Conf="{")
    assert r.status_code == 400
    root = ET.fromstring(r.text)
    assert root.tag == "Error"
    assert [e.tag for e in root] == ["RequestId", "HostId", "Code", "Message", "Recommend"]
    assert root.findtext("Code") == "InvalidParameter"
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []


async def test_bad_credentials_get_alibabas_errors(api: Api) -> None:
    flow, project = await ids(api, DAILY)
    params = {"Action": "SubmitFlow", "FlowId": flow, "ProjectId": project, **COMMON}
    r = await api.client.get("/", params=params)
    assert "token is required" in error(r, 400, "MissingParameter")["Message"]
    r = await api.client.get("/", params=params, headers=api.auth("not-a-token"))
    error(r, 404, "InvalidAccessKeyId.NotFound")
    key = await new_key(api, "default", "operator")
    query = acs_signed_query(key, "GET", **params)
    r = await api.client.get(f"/?{query.replace('cn-hangzhou', 'cn-beijing')}")
    error(r, 400, "SignatureDoesNotMatch")
    ok(await api.client.get(f"/?{query}"))
    error(await api.client.get(f"/?{query}"), 400, "SignatureNonceUsed")
    unknown = {**key, "id": "EF" + "A" * 18}
    error(
        await api.client.get(f"/?{acs_signed_query(unknown, **params)}"),
        404,
        "InvalidAccessKeyId.NotFound",
    )
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert len(r.json()["items"]) == 1


MISMATCH = "Specified signature is not matched with our calculation. server string to sign is:"


async def test_a_wrong_signature_is_told_as_alibaba_tells_it(api: Api) -> None:
    """`Specified signature is not matched with our calculation. server string to sign
    is:<string>`: the SDK splits it on ':' and compares the string with its own, to tell a
    wrong secret (InvalidAccessKeySecret) from parameters that changed after signing."""
    flow, project = await ids(api, DAILY)
    key = await new_key(api, "default", "operator")
    sdk = AcsClient(key["id"], key["secret"], "cn-hangzhou")
    params = {"Action": "SubmitFlow", "FlowId": flow, "ProjectId": project, **COMMON}
    url, signed = get_signed_url(params, key["id"], "not-the-secret", "JSON", "GET", {})
    r = await api.client.get(str(url))
    assert error(r, 400, "SignatureDoesNotMatch")["Message"] == MISMATCH + signed
    # the SDK's own reading of the answer: the same string, so the secret is wrong
    raised = sdk._get_server_exception(400, r.content, "127.0.0.1", signed)
    assert isinstance(raised, ServerException)
    assert (raised.get_error_code(), raised.get_http_status()) == ("InvalidAccessKeySecret", 400)
    assert raised.get_request_id() == r.json()["RequestId"]
    # a parameter changed after signing: the strings differ, and the SDK says so
    url, signed = get_signed_url(params, key["id"], key["secret"], "JSON", "GET", {})
    r = await api.client.get(str(url).replace("cn-hangzhou", "cn-beijing"))
    message = error(r, 400, "SignatureDoesNotMatch")["Message"]
    assert message == MISMATCH + signed.replace("cn-hangzhou", "cn-beijing")
    raised = sdk._get_server_exception(400, r.content, "127.0.0.1", signed)
    assert (raised.get_error_code(), raised.get_error_msg()) == ("SignatureDoesNotMatch", message)
    # in XML too
    params["Format"] = "XML"
    url, signed = get_signed_url(params, key["id"], "not-the-secret", "XML", "GET", {})
    r = await api.client.get(str(url))
    assert r.status_code == 400, r.text
    doc = ET.fromstring(r.text)
    assert (doc.findtext("Code"), doc.findtext("Message")) == (
        "SignatureDoesNotMatch",
        MISMATCH + signed,
    )
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []  # nothing was started


def test_every_state_and_error_is_mapped() -> None:
    assert set(STATUS) == set(ExecutionState)
    assert len({row[:2] for row in ERRORS}) == len(ERRORS)


# Who may call what --------------------------------------------------------------------------

# Each route and action, and the privilege it needs; a route or action not here fails.
PRIVILEGES: dict[tuple[str, str, str], Privilege] = {
    (path, method, action): privilege
    for path, method in (("/", "GET"), ("/", "POST"))
    for action, privilege in {
        "ListFlowProject": Privilege.VIEW,
        "ListFlow": Privilege.VIEW,
        "SubmitFlow": Privilege.SCHEDULE_EXECUTIONS,
        "DescribeFlowInstance": Privilege.VIEW,
        "ListFlowInstance": Privilege.VIEW,
        "DescribeFlowNodeInstance": Privilege.VIEW,
        "DescribeFlowNodeInstanceLauncherLog": Privilege.VIEW,
        "ListFlowNodeInstance": Privilege.VIEW,
        "SuspendFlow": Privilege.MANAGE_EXECUTIONS,
        "ResumeFlow": Privilege.MANAGE_EXECUTIONS,
        "RerunFlow": Privilege.MANAGE_EXECUTIONS,
        "KillFlowJob": Privilege.MANAGE_EXECUTIONS,
        "StartFlow": Privilege.SCHEDULE_EXECUTIONS,
    }.items()
}


def routes() -> Iterator[tuple[str, str, str]]:
    for route in emr.router.routes:
        assert isinstance(route, APIRoute)
        for method in sorted(route.methods or ()):
            for action in emr.ACTIONS:
                yield route.path, method, action


def test_every_route_and_action_has_a_privilege() -> None:
    assert set(routes()) == set(PRIVILEGES)


async def test_route_matrix_by_role_and_project(api: Api) -> None:
    admin = await new_token(api, "alpha", "admin")
    flow, project = await ids(api, GATE, admin, "alpha")
    ident = await submit(api, flow, project, admin)
    await api.idle()
    node = ok(await rpc(api, "DescribeFlowInstance", admin, Id=ident, ProjectId=project))[
        "NodeInstance"
    ]["NodeInstance"][0]["Id"]
    args = {
        "ListFlowProject": {},
        "ListFlow": {},
        "SubmitFlow": {"FlowId": flow},
        "DescribeFlowInstance": {"Id": ident},
        "ListFlowInstance": {},
        "DescribeFlowNodeInstance": {"Id": node},
        "DescribeFlowNodeInstanceLauncherLog": {"NodeInstanceId": node},
        "ListFlowNodeInstance": {},
        "SuspendFlow": {"FlowInstanceId": ident},
        "ResumeFlow": {"FlowInstanceId": ident},
        "RerunFlow": {"FlowInstanceId": ident, "ReRunFail": "true"},
        "KillFlowJob": {"JobInstanceId": ident},
        "StartFlow": {"FlowInstanceId": ident},
    }
    for role in ROLES:
        token = await new_token(api, "alpha", role)
        for (_, method, action), privilege in PRIVILEGES.items():
            r = await rpc(api, action, token, method, ProjectId=project, **args[action])
            if privilege in ROLE_PRIVILEGES[role]:
                assert r.status_code not in (401, 403), (role, action, r.text)
            else:
                error(r, 403, "Forbidden.RAM")
    # another project's admin, naming alpha's project, flow, instance and node by their ids
    other = await new_token(api, "beta", "admin")
    _, beta = await ids(api, DAILY, other, "beta")
    for (_, method, action), _privilege in PRIVILEGES.items():
        for where in (beta, project):
            if action == "ListFlowProject" or (where == beta and not args[action]):
                continue  # no ProjectId, or beta's own lists: below
            r = await rpc(api, action, other, method, ProjectId=where, **args[action])
            body = error(r, 404, "EntityNotExist")
            assert "gate" not in r.text and "wait" not in r.text, body
    for action in ("ListFlowInstance", "ListFlowNodeInstance", "ListFlow"):
        body = ok(await rpc(api, action, other, ProjectId=beta))
        assert body["Total"] == (1 if action == "ListFlow" else 0)
        assert "gate" not in json.dumps(body) and project not in json.dumps(body)


# The official SDK against a real server ---------------------------------------------------


@pytest.mark.slow
def test_the_aliyun_sdk_unmodified_submits_and_steers_flows(tmp_path: Path) -> None:
    live = Live(tmp_path / "data")
    try:
        r = live.client.post(
            "/api/v1/projects/default/access-keys", json={"role": "operator", "description": "sdk"}
        )
        assert r.status_code == 201, r.text
        key = r.json()
        for definition in (DAILY, GATE):
            assert live.client.put(
                f"/api/v1/workflows/{definition['name']}", json=definition
            ).is_success
        client = AcsClient(key["id"], key["secret"], "cn-hangzhou")

        def call(request: RpcRequest, sdk: AcsClient = client, **params: Any) -> dict[str, Any]:
            request.set_endpoint(f"127.0.0.1:{live.port}")
            request.set_protocol_type("http")
            for name, value in params.items():
                getattr(request, f"set_{name}")(value)
            answer: dict[str, Any] = json.loads(sdk.do_action_with_exception(request))
            return answer

        (project,) = call(ListFlowProjectRequest.ListFlowProjectRequest())["Projects"]["Project"]
        assert project["Name"] == "default"
        flows = call(ListFlowRequest.ListFlowRequest(), Name="daily", ProjectId=project["Id"])
        (flow,) = flows["Flow"]["Flow"]
        submitted = call(
            SubmitFlowRequest.SubmitFlowRequest(),
            FlowId=flow["Id"],
            ProjectId="default",
            Conf=json.dumps({"who": "sdk"}),
        )
        ident = submitted["Id"]
        assert submitted["InstanceId"] == submitted["Data"] == ident

        def described() -> dict[str, Any] | None:
            body = call(
                DescribeFlowInstanceRequest.DescribeFlowInstanceRequest(),
                Id=ident,
                ProjectId="default",
            )
            return body if body["Status"] == "SUCCEEDED" else None

        detail = poll("the flow instance to succeed", described)
        assert detail["FlowName"] == "daily"
        listed = call(
            ListFlowInstanceRequest.ListFlowInstanceRequest(), ProjectId="default", PageSize=10
        )
        assert [i["Id"] for i in listed["FlowInstances"]["FlowInstance"]] == [ident]

        gate = call(SubmitFlowRequest.SubmitFlowRequest(), FlowId="gate", ProjectId="default")["Id"]

        def gate_status(expected: str) -> bool:
            body = call(
                DescribeFlowInstanceRequest.DescribeFlowInstanceRequest(),
                Id=gate,
                ProjectId="default",
            )
            return bool(body["Status"] == expected and body["NodeInstance"]["NodeInstance"])

        poll("the gate to wait", lambda: gate_status("RUNNING"))
        assert call(
            SuspendFlowRequest.SuspendFlowRequest(), FlowInstanceId=gate, ProjectId="default"
        )["Data"]
        poll("the gate to be suspended", lambda: gate_status("SUSPENDED"))
        assert call(
            ResumeFlowRequest.ResumeFlowRequest(), FlowInstanceId=gate, ProjectId="default"
        )["Data"]
        poll("the gate to run again", lambda: gate_status("RUNNING"))
        nodes = call(
            ListFlowNodeInstanceRequest.ListFlowNodeInstanceRequest(),
            ProjectId="default",
            StatusLists=["RUNNING"],
        )
        (node,) = nodes["FlowNodeInstances"]["FlowNodeInstance"]
        one = call(
            DescribeFlowNodeInstanceRequest.DescribeFlowNodeInstanceRequest(),
            Id=node["Id"],
            ProjectId="default",
        )
        assert (one["NodeName"], one["FlowInstanceId"]) == ("wait", gate)
        log = call(
            DescribeFlowNodeInstanceLauncherLogRequest.DescribeFlowNodeInstanceLauncherLogRequest(),
            NodeInstanceId=node["Id"],
            ProjectId="default",
            Lines=10,
        )
        # a signal wait prints nothing, and its debug entries are below the default level
        assert (log["LogEntrys"], log["LogEnd"]) == ({"LogEntry": []}, True)
        assert call(
            KillFlowJobRequest.KillFlowJobRequest(), JobInstanceId=node["Id"], ProjectId="default"
        )["Data"]
        poll("the gate to be killed", lambda: gate_status("KILLED"))
        rerun = call(
            RerunFlowRequest.RerunFlowRequest(),
            FlowInstanceId=gate,
            ProjectId="default",
            ReRunFail=True,
        )
        assert rerun["Data"] is True
        poll("the gate to run again", lambda: gate_status("RUNNING"))
        with pytest.raises(ServerException) as caught:
            call(
                DescribeFlowInstanceRequest.DescribeFlowInstanceRequest(),
                Id=gate,
                ProjectId="FP-" + "0" * 32,
            )
        assert (caught.value.get_http_status(), caught.value.get_error_code()) == (
            404,
            "EntityNotExist",
        )
        # a wrong secret: the SDK reads Alibaba's message and tells it apart
        wrong = AcsClient(key["id"], "not-the-secret", "cn-hangzhou")
        try:
            with pytest.raises(ServerException) as caught:
                call(
                    SubmitFlowRequest.SubmitFlowRequest(),
                    wrong,
                    FlowId="daily",
                    ProjectId="default",
                )
        finally:
            wrong.session.close()
        assert (caught.value.get_http_status(), caught.value.get_error_code()) == (
            400,
            "InvalidAccessKeySecret",
        )
    finally:
        live.stop()
