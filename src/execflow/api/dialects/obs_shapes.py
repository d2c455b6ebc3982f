"""Huawei Cloud OBS Data+ shapes: its state and error vocabularies, its URNs, and how its
request bodies are read and execflow's records written in its words.

The routes are in `obs.py`; nothing here calls the service except through the records it
is handed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from execflow.api.dialects.base import Failure, iso_ms, loads
from execflow.api.errors import request_id
from execflow.definition import Definition, mask_secrets, secret_values
from execflow.errors import Detail, InvalidInput
from execflow.masking import masked_document, redact
from execflow.records import ExecutionRecord, Principal, RevisionRecord, WorkflowRecord
from execflow.states import ExecutionState, TaskRunState

# The region part of every URN: execflow has no regions, so one fixed word.
REGION = "execflow"
# Where an execution keeps the bucket and object it was started for.
BUCKET_LABEL = "obs.bucket"
OBJECT_LABEL = "obs.object"
# Executions a schedule started carry this label (see scheduler.py): Data+ calls them
# triggered, every other one an API call.
SCHEDULE_LABEL = "execflow.schedule"
APICALL, TRIGGERCAL = "APICALL", "TRIGGERCAL"
MAX_LABEL_VALUE = 256

_S = ExecutionState
# The one table of states. Data+ publishes RUNNING, SUCCESS and FAILED; every state in
# which an execution may still move is RUNNING, and a cancelled one is FAILED because,
# like a failed one, it can be restored from where it stopped.
STATES: dict[ExecutionState, str] = {
    _S.INITIALIZING: "RUNNING",
    _S.RUNNING: "RUNNING",
    _S.WAITING: "RUNNING",
    _S.WAITING_ON_SIGNAL: "RUNNING",
    _S.SUSPENDED: "RUNNING",
    _S.COMPLETED: "SUCCESS",
    _S.FAILED: "FAILED",
    _S.CANCELED: "FAILED",
}


def native_states(vendor: str) -> frozenset[ExecutionState]:
    """The execflow states a Data+ state stands for (empty for an unknown word)."""
    return frozenset(s for s, word in STATES.items() if word == vendor)


# The one table of errors: execflow's native code (and, for a refused credential, words of
# its message that say which part was wrong) -> (HTTP status, OBS error code). OBS answers
# every credential problem with 403, as S3 does; a rate limit is its 503 SlowDown.
ERRORS: dict[tuple[str, str], tuple[int, str]] = {
    ("invalid_input", ""): (400, "InvalidArgument"),
    ("invalid_definition", ""): (400, "InvalidArgument"),
    ("callback_refused", ""): (400, "InvalidArgument"),
    ("bad_request", ""): (400, "InvalidArgument"),
    ("unsupported_media_type", ""): (400, "InvalidArgument"),
    ("too_large", ""): (400, "EntityTooLarge"),
    ("unauthenticated", ""): (403, "AccessDenied"),
    ("unauthenticated", "access key is unknown, revoked or expired"): (403, "InvalidAccessKeyId"),
    ("unauthenticated", "signature does not match"): (403, "SignatureDoesNotMatch"),
    ("unauthenticated", "from the server's time"): (403, "RequestTimeTooSkewed"),
    ("forbidden", ""): (403, "AccessDenied"),
    ("not_found", ""): (404, "NoSuchResource"),
    ("method_not_allowed", ""): (405, "MethodNotAllowed"),
    ("conflict", ""): (409, "Conflict"),
    ("stale_state", ""): (409, "Conflict"),
    ("too_many_requests", ""): (503, "SlowDown"),
    ("unavailable", ""): (503, "ServiceUnavailable"),
    ("internal_error", ""): (500, "InternalError"),
}


def error_code(failure: Failure) -> tuple[int, str]:
    """The HTTP status and OBS error code of a failure: the most specific entry of ERRORS
    that fits it, else its own status with a generic code."""
    for (code, words), answer in ERRORS.items():
        if words and code == failure.code and words in failure.message:
            return answer
    generic = (failure.status, "InvalidRequest") if failure.status < 500 else (500, "InternalError")
    return ERRORS.get((failure.code, ""), generic)


def render(request: Request, failure: Failure) -> Response:
    """OBS's JSON error envelope, as its SDK reads it: `code`, `message`, `request_id`."""
    status, code = error_code(failure)
    rid = request_id(request)
    body = {"code": code, "message": failure.describe(), "request_id": rid}
    return JSONResponse(body, status, headers={**failure.headers(), "x-obs-request-id": rid})


def ok(request: Request, body: Any, status: int = 200) -> Response:
    """A success in OBS's manner: JSON, with the request id also where its SDK looks."""
    headers = {"x-obs-request-id": request_id(request)}
    if body is None:
        return Response(status_code=status, headers=headers)
    return JSONResponse(body, status, headers=headers)


# URNs ------------------------------------------------------------------------------------


def graph_urn(who: Principal, graph: str) -> str:
    return f"urn:fgs:{REGION}:{who.project_id}:graph:{graph}"


def execution_urn(who: Principal, record: ExecutionRecord) -> str:
    """`urn:fgs:<region>:<project id>:execution:<graph>:<execution>:<domain>`: the project's
    id, and its name as the domain (the account it belongs to)."""
    return (
        f"urn:fgs:{REGION}:{record.project_id}:execution:"
        f"{record.workflow_name}:{record.id}:{who.project_name}"
    )


# Requests --------------------------------------------------------------------------------


def json_object(raw: bytes, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; InvalidArgument saying why it is not one."""
    if not raw.strip():
        if required:
            raise InvalidInput(details=[Detail("/", "a JSON object is required")])
        return {}
    try:
        body = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(details=[Detail("/", f"not JSON: {exc}")]) from None
    if not isinstance(body, dict):
        raise InvalidInput(details=[Detail("/", "must be a JSON object")])
    return body


def check_fields(body: Mapping[str, Any], known: set[str]) -> list[Detail]:
    """A detail for each field the call does not take."""
    return [
        Detail(f"/{key}", f"unknown field (expected {', '.join(sorted(known))})")
        for key in body
        if key not in known
    ]


def text_field(body: Mapping[str, Any], name: str, problems: list[Detail]) -> str:
    """A required, non-empty string of at most 256 characters (an execution label holds it)."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        problems.append(Detail(f"/{name}", "a non-empty string is required"))
        return ""
    if len(value) > MAX_LABEL_VALUE:
        problems.append(Detail(f"/{name}", f"at most {MAX_LABEL_VALUE} characters"))
    return value


def parameter_values(
    value: Any, declared: Mapping[str, Any]
) -> tuple[dict[str, Any], list[Detail]]:
    """Parameter values given as `[{"name": n, "value": v}]` or `{n: v}`, each checked
    against the declared parameters."""
    problems: list[Detail] = []
    given: dict[str, Any] = {}
    if value is None:
        return given, problems
    if isinstance(value, dict):
        items = [(f"/parameters/{k}", k, v) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                problems.append(Detail(f"/parameters/{i}", 'must be {"name": …, "value": …}'))
                continue
            items.append((f"/parameters/{i}/name", item["name"], item.get("value")))
    else:
        problems.append(Detail("/parameters", "must be a list of {name, value} or an object"))
        items = []
    for where, name, val in items:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none declared"
            problems.append(Detail(where, f"unknown parameter {name!r} ({known})"))
        else:
            given[name] = val
    return given, problems


def with_defaults(
    definition: Mapping[str, Any], name: str, description: Any, values: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of a definition document under `name`, with a new description (unless None)
    and the given parameters' defaults replaced."""
    doc: dict[str, Any] = json.loads(json.dumps(definition))
    doc["name"] = name
    if description is not None:
        doc["description"] = description
    params = doc.setdefault("parameters", {})
    for pname, value in values.items():
        params[pname] = {**params.get(pname, {}), "default": value}
    return doc


# Records ---------------------------------------------------------------------------------


def execution_type(record: ExecutionRecord) -> str:
    return TRIGGERCAL if SCHEDULE_LABEL in record.labels else APICALL


def execution_item(who: Principal, record: ExecutionRecord) -> dict[str, Any]:
    """An execution as Data+ lists it."""
    return {
        "execution_name": record.id,
        "execution_urn": execution_urn(who, record),
        "graph_name": record.workflow_name,
        "graph_urn": graph_urn(who, record.workflow_name),
        "execution_state": STATES[record.state],
        "execution_type": execution_type(record),
        "started_at": iso_ms(record.started_at),
        # Data+ writes an empty string until the execution stops
        "stopped_at": iso_ms(record.ended_at) or "",
        "end_at": iso_ms(record.ended_at),
    }


# A task run's state as Data+ writes a step's
STEP_STATES: dict[TaskRunState, str] = {
    TaskRunState.SCHEDULED: "NOTRUNNING",
    TaskRunState.RUNNING: "RUNNING",
    TaskRunState.COMPLETED: "SUCCESS",
    TaskRunState.FAILED: "FAILED",
    TaskRunState.CANCELED: "FAILED",
}


def execution_info(
    who: Principal, record: ExecutionRecord, definition: Definition
) -> dict[str, Any]:
    """An execution in detail; secret inputs masked, and wherever their values reappear."""
    secrets = secret_values(definition, record.inputs)
    given = {
        "bucket": record.labels.get(BUCKET_LABEL),
        "object": record.labels.get(OBJECT_LABEL),
        "inputs": mask_secrets(definition, record.inputs),
    }
    steps = [
        {
            "name": tr.task_id,
            "attempt": tr.attempt,
            "state": tr.state.value,
            "started_at": iso_ms(tr.started_at),
            "end_at": iso_ms(tr.ended_at),
            "output": redact(tr.output, secrets),
            "error": redact(tr.error, secrets),
        }
        for tr in record.task_runs
    ]
    latest = {tr.task_id: tr for tr in record.task_runs}  # runs come in order: the last wins
    state_map = {
        tid: {
            "state_name": tid,
            "type": "Operation",
            "status": STEP_STATES[latest[tid].state] if tid in latest else "NOTRUNNING",
            "started_at": iso_ms(latest[tid].started_at) if tid in latest else None,
            "stopped_at": (iso_ms(latest[tid].ended_at) if tid in latest else None) or "",
        }
        for tid in definition.order
    }
    return {
        **execution_item(who, record),
        "revision": record.revision,
        "start_state": definition.order[0],
        "state_map": state_map,
        "input": json.dumps(given, separators=(",", ":")),
        "output": json.dumps(redact(record.outputs, secrets), separators=(",", ":")),
        "error": redact(record.error, secrets),
        "steps": steps,
    }


def graph_item(who: Principal, wf: WorkflowRecord) -> dict[str, Any]:
    return {
        "name": wf.name,
        "graph_urn": graph_urn(who, wf.name),
        "description": wf.description,
        "created_at": iso_ms(wf.created_at),
        "last_modified": iso_ms(wf.updated_at),
    }


def template_item(wf: WorkflowRecord) -> dict[str, Any]:
    """A workflow as a template is listed."""
    return {
        "template_name": wf.name,
        "description": wf.description,
        "create_time": iso_ms(wf.created_at),
        "last_modify_time": iso_ms(wf.updated_at),
    }


def template(wf: WorkflowRecord, rev: RevisionRecord) -> dict[str, Any]:
    """A workflow seen as a template: its tasks are the states, its parameters the inputs."""
    return {
        **template_item(wf),
        "states": [{"name": tid, **task} for tid, task in rev.definition["tasks"].items()],
        "inputs": [
            {"key": name, "value": spec.get("default"), **_without(spec, "default")}
            for name, spec in masked_document(rev.definition).get("parameters", {}).items()
        ],
        "tags": [],
    }


def _without(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != key}
