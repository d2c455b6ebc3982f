"""Alibaba Cloud E-MapReduce (API 2016-04-08) shapes: ids, states, errors and the JSON or
XML a response is written in. Pure translation; the routes are in `emr.py`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from fastapi import Request, Response

from execflow.api.dialects.base import Failure, loads, timestamp_ms
from execflow.api.dialects.coercion import scalar
from execflow.api.errors import request_id
from execflow.definition import Definition, secret_values
from execflow.errors import Detail, InvalidInput
from execflow.masking import redact
from execflow.records import ExecutionRecord, TaskRunRecord
from execflow.signing import acs_string_to_sign
from execflow.states import ExecutionState, TaskRunState

VERSION = "2016-04-08"

# Ids: execflow's are 32 lower-case hex digits; EMR's are a kind prefix and upper-case hex.
# A flow instance's node is one task of it: its id is the instance's hex and the task id.
FLOW, INSTANCE, PROJECT, NODE = "F-", "FI-", "FP-", "FNI-"
_HEX = re.compile(r"^[0-9A-Fa-f]{32}$")


def flow_id(workflow_id: str) -> str:
    return FLOW + workflow_id.upper()


def instance_id(execution_id: str) -> str:
    return INSTANCE + execution_id.upper()


def project_id(ident: str) -> str:
    return PROJECT + ident.upper()


def node_id(execution_id: str, task: str) -> str:
    return f"{NODE}{execution_id.upper()}-{task}"


def hex_of(ident: str, prefix: str) -> str | None:
    """The execflow id an EMR id of this kind stands for, or None if it is not one."""
    if not ident.startswith(prefix) or not _HEX.fullmatch(ident[len(prefix) :]):
        return None
    return ident[len(prefix) :].lower()


def split_node_id(ident: str) -> tuple[str, str] | None:
    """(execution id, task) of a node instance id, or None if it is not one."""
    rest = ident[len(NODE) :] if ident.startswith(NODE) else ""
    hexpart, dash, task = rest[:32], rest[32:33], rest[33:]
    if not _HEX.fullmatch(hexpart) or dash != "-" or not task:
        return None
    return hexpart.lower(), task


# The one table of flow instance states. WAITING (timers: a sleep, a retry's back-off, a
# start put off by `cyctime`) and WAITING_ON_SIGNAL are still running to EMR's eyes.
STATUS: dict[ExecutionState, str] = {
    ExecutionState.INITIALIZING: "PREP",
    ExecutionState.RUNNING: "RUNNING",
    ExecutionState.WAITING: "RUNNING",
    ExecutionState.WAITING_ON_SIGNAL: "RUNNING",
    ExecutionState.SUSPENDED: "SUSPENDED",
    ExecutionState.COMPLETED: "SUCCEEDED",
    ExecutionState.FAILED: "FAILED",
    ExecutionState.CANCELED: "KILLED",
}
STATES_OF: dict[str, frozenset[ExecutionState]] = {
    status: frozenset(s for s, v in STATUS.items() if v == status) for status in STATUS.values()
}

# Node instances are task runs: one per task, its latest attempt.
NODE_STATUS: dict[TaskRunState, str] = {
    TaskRunState.SCHEDULED: "SUBMITTED",
    TaskRunState.RUNNING: "RUNNING",
    TaskRunState.COMPLETED: "SUCCESS",
    TaskRunState.FAILED: "FAILED",
    TaskRunState.CANCELED: "KILL_SUCCESS",
}
NODE_STATES_OF: dict[str, frozenset[TaskRunState]] = {
    status: frozenset(s for s, v in NODE_STATUS.items() if v == status)
    for status in (*NODE_STATUS.values(), "KILL_FAILED")
}


# The one table of errors: (execflow's code, a phrase of its message or "") -> (HTTP status,
# Alibaba's code, what to do). The first row that fits wins; the phrases tell apart the
# reasons a credential is refused, which execflow gives one code.
ERRORS: list[tuple[str, str, int, str, str]] = [
    ("missing_parameter", "", 400, "MissingParameter", "Give every mandatory parameter."),
    ("unknown_action", "", 404, "InvalidAction.NotFound", "Check Action and Version."),
    ("unknown_version", "", 400, "InvalidVersion", f"Send Version={VERSION}."),
    ("invalid_input", "", 400, "InvalidParameter", "Correct the parameters named."),
    ("invalid_definition", "", 400, "InvalidParameter", "Correct the parameters named."),
    ("unauthenticated", "token is required", 400, "MissingParameter", "Sign the request."),
    ("unauthenticated", "SignatureNonce was used", 400, "SignatureNonceUsed", "Use new nonces."),
    ("unauthenticated", "needs a SignatureNonce", 400, "MissingParameter", "Sign the request."),
    ("unauthenticated", "server's time", 400, "InvalidTimeStamp.Expired", "Check the clock."),
    ("unauthenticated", "Timestamp must", 400, "InvalidTimeStamp.Format", "Use ISO 8601 UTC."),
    ("unauthenticated", "SignatureMethod", 400, "IncompleteSignature", "Use HMAC-SHA1."),
    ("unauthenticated", "does not match", 400, "SignatureDoesNotMatch", "Check the secret."),
    ("unauthenticated", "", 404, "InvalidAccessKeyId.NotFound", "Check the credential."),
    ("forbidden", "", 403, "Forbidden.RAM", "Use a credential whose role allows this."),
    ("not_found", "", 404, "EntityNotExist", "Check the ids given."),
    ("conflict", "", 409, "OperationConflict", "Check the flow instance's status."),
    ("stale_state", "", 409, "OperationConflict", "Try again."),
    ("too_many_requests", "", 400, "Throttling.User", "Try again later."),
    ("unavailable", "", 503, "ServiceUnavailable", "Try again later."),
    ("too_large", "", 400, "InvalidParameter", "Send a smaller request."),
    ("method_not_allowed", "", 400, "InvalidParameter", "Use GET or POST."),
]
INTERNAL = (500, "InternalError", "Try again later; report the RequestId if it persists.")


def vendor_error(failure: Failure) -> tuple[int, str, str]:
    """(status, code, recommendation) of a failure, by the table."""
    for code, phrase, status, vendor, recommend in ERRORS:
        if failure.code == code and phrase in failure.message:
            return status, vendor, recommend
    if 400 <= failure.status < 500:
        return 400, "InvalidParameter", "Correct the request."
    return INTERNAL


class MissingParameter(InvalidInput):
    """A mandatory parameter is not supplied."""

    code = "missing_parameter"

    def __init__(self, name: str) -> None:
        super().__init__(f"The input parameter {name} that is mandatory here is not supplied")


class UnknownAction(InvalidInput):
    """The action is not one this API answers."""

    code = "unknown_action"


class UnknownVersion(InvalidInput):
    """The API version is not this one."""

    code = "unknown_version"


def invalid(name: str, why: str) -> InvalidInput:
    return InvalidInput("The specified parameter is not valid", [Detail(name, why)])


# Service details point into the native shapes; EMR names parameters.
_POINTERS = (("/inputs/", "Conf."), ("/scheduled_at", "Conf.cyctime"), ("/from_task", "FlowId"))


def parameter_name(pointer: str) -> str:
    for native, vendor in _POINTERS:
        if pointer.startswith(native):
            return vendor + pointer[len(native) :].replace("~1", "/").replace("~0", "~")
    return pointer.lstrip("/") or "request"


def describe(failure: Failure) -> str:
    if not failure.details:
        return failure.message
    fields = "; ".join(f"{parameter_name(d.pointer)}: {d.reason}" for d in failure.details)
    return f"{failure.message}: {fields}"


def wants_xml(request: Request) -> bool:
    """XML when `Format=XML` (the route notes a form body's Format; else the query's)."""
    given = getattr(request.state, "emr_format", None) or request.query_params.get("Format", "")
    return str(given).upper() == "XML"


def alibaba_request_id(request: Request) -> str:
    """The request's id, written as Alibaba writes its own (8-4-4-4-12 upper-case hex)."""
    rid = request_id(request)
    if re.fullmatch(r"[0-9a-f]{32}", rid):
        rid = "-".join((rid[:8], rid[8:12], rid[12:16], rid[16:20], rid[20:])).upper()
    return rid


# Alibaba's message for a wrong signature, followed by the string it signed. The SDK splits
# the message on ":" and compares the rest with its own string to sign: the same string
# means the parameters were signed right, with the wrong secret (it then raises
# InvalidAccessKeySecret). The string is percent-encoded, so it holds no ":" itself.
SIGNATURE_MISMATCH = (
    "Specified signature is not matched with our calculation. server string to sign is:"
)


def signature_message(request: Request) -> str | None:
    """Alibaba's message for a request signed in its RPC style whose signature is wrong:
    the string the server signed (the request's own parameters, no secret)."""
    pairs: list[tuple[str, str]] | None = getattr(request.state, "emr_params", None)
    if not pairs or not {"Signature", "AccessKeyId"} <= {k for k, _ in pairs}:
        return None
    return SIGNATURE_MISMATCH + acs_string_to_sign(request.method, pairs)


def render(request: Request, failure: Failure) -> Response:
    """Any failure as Alibaba's error document, in the format the request asked for."""
    status, code, recommend = vendor_error(failure)
    message = signature_message(request) if code == "SignatureDoesNotMatch" else None
    body = {
        "RequestId": alibaba_request_id(request),
        "HostId": request.url.hostname or "",
        "Code": code,
        "Message": message or describe(failure),
        "Recommend": recommend,
    }
    return document(request, "Error", body, status, failure.headers())


def document(
    request: Request,
    root: str,
    body: Mapping[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A response body in JSON or, with `Format=XML`, as XML under `root`."""
    if wants_xml(request):
        text = '<?xml version="1.0" encoding="UTF-8"?>' + _xml(root, body)
        return Response(text, status, headers, media_type="text/xml;charset=utf-8")
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(content, status, headers, media_type="application/json;charset=utf-8")


def _xml(name: str, value: Any) -> str:
    if isinstance(value, list):  # a list repeats its element, as Alibaba's XML does
        return "".join(_xml(name, item) for item in value)
    if isinstance(value, Mapping):
        inner = "".join(_xml(k, v) for k, v in value.items() if v is not None)
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = escape(str(value))
    return f"<{name}>{inner}</{name}>"


# Request values ------------------------------------------------------------------------


def conf_of(text: str, parameters: dict[str, Any]) -> tuple[dict[str, Any], datetime | None]:
    """Inputs and the scheduled time a Conf gives. EMR's Conf values are strings: one given
    for a parameter of another type is read as that type when it reads exactly."""
    if not text:
        return {}, None
    try:
        conf = loads(text)
    except ValueError:
        conf = None
    if not isinstance(conf, dict):
        raise invalid("Conf", 'a JSON object such as {"cyctime": "1542783967503"}')
    at = None
    if "cyctime" in conf:
        ms = conf.pop("cyctime")
        if isinstance(ms, str) and re.fullmatch(r"\d{1,15}", ms):
            ms = int(ms)
        # up to the end of year 9999, the last time a datetime holds
        if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms < 253_402_300_800_000:
            raise invalid("Conf.cyctime", f"milliseconds since the epoch, not {ms!r}")
        at = datetime.fromtimestamp(ms / 1000, UTC)
    inputs = {}
    for key, value in conf.items():
        kind = parameters.get(key, {}).get("type", "string") if key in parameters else None
        inputs[key] = typed(value, kind) if isinstance(value, str) and kind else value
    return inputs, at


def typed(value: str, kind: str) -> Any:
    """`value` read as a parameter of type `kind` when it reads exactly, else as it is."""
    if kind in ("object", "array"):
        try:
            parsed = loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict if kind == "object" else list) else value
    return scalar(value, kind)


def time_range(text: str) -> tuple[float, float]:
    """(from, to) in milliseconds of a TimeRange such as {"type": "range", "from": 0}."""
    if not text:
        return 0.0, float("inf")
    try:
        given = loads(text)
    except ValueError:
        given = None
    ok = isinstance(given, dict) and all(
        isinstance(given.get(k, 0), int | float)
        and not isinstance(given.get(k), bool)
        and abs(given.get(k, 0)) < 10**18  # milliseconds, not a number a float cannot hold
        for k in ("from", "to")
    )
    if not ok or not isinstance(given, dict):
        raise invalid("TimeRange", '{"type": "range", "from": <ms>, "to": <ms>}')
    return float(given.get("from", 0)), float(given.get("to", float("inf")))


def page(
    items: list[dict[str, Any]], number: int, size: int, outer: str, inner: str
) -> dict[str, Any]:
    """Page `number` of `items` in EMR's list shape: `{outer: {inner: [...]}}` and counts."""
    start = (number - 1) * size
    return {
        "PageNumber": number,
        "PageSize": size,
        "Total": len(items),
        outer: {inner: items[start : start + size]},
    }


# Records -------------------------------------------------------------------------------


def _duration(start: int | None, end: int | None) -> int | None:
    return None if start is None or end is None else max(0, end - start)


def flow_instance(ex: ExecutionRecord) -> dict[str, Any]:
    """An execution as a flow instance (what ListFlowInstance lists)."""
    start, end = timestamp_ms(ex.started_at), timestamp_ms(ex.ended_at)
    return _present(
        {
            "Id": instance_id(ex.id),
            "FlowId": flow_id(ex.workflow_id),
            "FlowName": ex.workflow_name,
            "ProjectId": project_id(ex.project_id),
            "Status": STATUS[ex.state],
            "HasNodeFailed": ex.state is ExecutionState.FAILED,
            "ScheduleTime": timestamp_ms(ex.scheduled_at or ex.created_at),
            "StartTime": start,
            "EndTime": end,
            "Duration": _duration(start, end),
            "GmtCreate": timestamp_ms(ex.created_at),
            "GmtModified": timestamp_ms(ex.updated_at),
        }
    )


def latest_runs(ex: ExecutionRecord) -> list[TaskRunRecord]:
    """The latest attempt of each task (fan-out items left out), in the order tasks ran."""
    latest: dict[str, TaskRunRecord] = {}
    for tr in ex.task_runs:
        if tr.item is None:
            latest[tr.task_id] = tr
    return list(latest.values())


def node_instance(ex: ExecutionRecord, tr: TaskRunRecord, definition: Definition) -> dict[str, Any]:
    """A task's latest run as a node instance; secret values masked in its error."""
    start, end = timestamp_ms(tr.started_at), timestamp_ms(tr.ended_at)
    task = definition.tasks.get(tr.task_id)
    error = redact(tr.error, secret_values(definition, ex.inputs)) if tr.error else None
    return _present(
        {
            "Id": node_id(ex.id, tr.task_id),
            "NodeName": tr.task_id,
            "JobId": tr.task_id,
            "JobName": tr.task_id,
            "JobType": task.action.upper() if task else "",
            "Type": "JOB",
            "Status": NODE_STATUS[tr.state],
            "ExternalInfo": str(error.get("message", "")) if isinstance(error, dict) else None,
            "Pending": tr.state is TaskRunState.SCHEDULED,
            "Retries": tr.attempt - 1,
            "MaxRetry": str(task.retry.max_attempts - 1) if task else None,
            "FailAct": "STOP",
            "ProjectId": project_id(ex.project_id),
            "FlowId": flow_id(ex.workflow_id),
            "FlowInstanceId": instance_id(ex.id),
            "StartTime": start,
            "EndTime": end,
            "Duration": _duration(start, end),
            "GmtCreate": timestamp_ms(tr.queued_at or tr.started_at),
            "GmtModified": timestamp_ms(tr.ended_at or tr.started_at or tr.queued_at),
        }
    )


def flow_instance_detail(ex: ExecutionRecord, definition: Definition) -> dict[str, Any]:
    """An execution as DescribeFlowInstance gives it: with its graph and node instances."""
    graph = {
        "nodes": [
            {"id": t, "label": t, "type": definition.tasks[t].action} for t in definition.order
        ],
        "edges": [
            {"source": need, "target": t} for t in definition.order for need in definition.needs[t]
        ],
    }
    nodes = [node_instance(ex, tr, definition) for tr in latest_runs(ex)]
    return {
        **flow_instance(ex),
        "HasNodeFailed": any(n["Status"] == "FAILED" for n in nodes),
        "Graph": json.dumps(graph, separators=(",", ":")),
        "NodeInstance": {"NodeInstance": nodes},
    }


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields without a value are left out, as Alibaba's responses leave them out."""
    return {k: v for k, v in fields.items() if v is not None}
