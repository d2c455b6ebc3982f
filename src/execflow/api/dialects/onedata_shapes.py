"""Onedata Oneprovider automation: execflow's records in Onedata's vocabulary.

The tables live here: execution states to Onedata statuses and phases, and failures to
Onedata's error envelope `{"error": {"id", "description", "details"?, "ctx"}}`. Lanes are
the levels of a workflow's DAG (a task's level is one more than its deepest need), each a
single parallel box holding the level's tasks; stores are addressed by reversible ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from execflow import __version__, levels
from execflow.api.dialects.base import Failure, loads
from execflow.definition import Definition
from execflow.errors import Detail, InvalidInput
from execflow.records import EventRecord, ExecutionRecord, TaskRunRecord
from execflow.states import ExecutionState, TaskRunState

_E = ExecutionState

# The one table of execution states. Onedata's `stopping` is an active execution whose
# cancel was asked for (see `status_of`); `interrupted` and `crashed` never occur: an
# execution whose node dies is taken over by another, not left interrupted.
STATUS: dict[ExecutionState, str] = {
    _E.INITIALIZING: "scheduled",
    _E.RUNNING: "active",
    _E.WAITING: "active",  # only timers pending: still running to Onedata
    _E.WAITING_ON_SIGNAL: "active",
    _E.SUSPENDED: "paused",
    _E.COMPLETED: "finished",
    _E.FAILED: "failed",
    _E.CANCELED: "cancelled",
}
_PHASE_OF_STATUS = {
    "scheduled": "waiting",
    "active": "ongoing",
    "paused": "suspended",
    "finished": "ended",
    "failed": "ended",
    "cancelled": "ended",
}
PHASES: dict[str, tuple[ExecutionState, ...]] = {
    phase: tuple(s for s, status in STATUS.items() if _PHASE_OF_STATUS[status] == phase)
    for phase in ("waiting", "ongoing", "suspended", "ended")
}


def status_of(rec: ExecutionRecord) -> str:
    """The Onedata status of an execution."""
    if rec.cancel_requested and not rec.state.terminal:
        return "stopping"
    return STATUS[rec.state]


# The one table of failures: execflow's native error code -> (HTTP status, Onedata id).
# Onedata answers a request that does not fit the resource's state with 400 and an id of
# its own; `Refused` carries such ids (and those of bad values) straight through.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_input": (400, "badData"),
    "invalid_definition": (400, "badData"),
    "bad_request": (400, "malformedData"),
    "unauthenticated": (401, "unauthorized"),
    "forbidden": (403, "forbidden"),
    "not_found": (404, "notFound"),
    "method_not_allowed": (405, "notSupported"),
    "conflict": (400, "atmInvalidStatusTransition"),
    "stale_state": (400, "atmInvalidStatusTransition"),
    "too_many_requests": (429, "limitReached"),
    "unavailable": (503, "serviceUnavailable"),
    "too_large": (413, "limitReached"),
    "unsupported_media_type": (415, "notSupported"),
    "internal_error": (500, "internalServerError"),
}
# How a bad value the service reports (`expected integer, got string`) is named by Onedata.
_BAD_VALUE = (
    ("a value is required", "missingRequiredValue"),
    ("expected integer", "badValueInteger"),
    ("expected number", "badValueFloat"),
    ("expected string", "badValueString"),
    ("expected boolean", "badValueBoolean"),
    ("expected object", "badValueJSON"),
    ("expected array", "badValueJSON"),
    ("must be one of", "badValueNotAllowed"),
    ("holds an array", "badValueJSON"),
    ("holds an object", "badValueJSON"),
    ("is not a log level", "badValueNotAllowed"),
)
# Where the service points (`/inputs/who`) and the request field Onedata names instead.
_KEYS = {
    "inputs": "storeInitialContentOverlay",
    "stores": "storeInitialContentOverlay",
    "revision": "atmWorkflowSchemaRevisionNumber",
    "log_level": "logLevel",
    "callback": "callback",
}


# Which revision of this vocabulary an answer follows (Onedata names the revision of its
# error definitions): the ids this dialect answers with, so it changes when they change.
ERRORS_REVISION = hashlib.sha256(
    json.dumps(sorted({i for _, i in ERRORS.values()} | {i for _, i in _BAD_VALUE})).encode()
).hexdigest()[:8]

# Onedata's description of `malformedData`; execflow adds what it could not read, and where.
MALFORMED = "Provided data could not be understood by the server"


class Refused(InvalidInput):
    """A request Onedata refuses with an error id of its own (`badValueInteger`, …)."""

    def __init__(self, error_id: str, message: str, key: str | None = None) -> None:
        super().__init__(message, [Detail(key, message)] if key else None)
        self.code = error_id


def malformed(why: str) -> Refused:
    """`malformedData`: the body is no document the server can read (no field at fault)."""
    return Refused("malformedData", f"{MALFORMED}: {why}")


def key_of(pointer: str) -> str:
    """The request field a service pointer names (`/inputs/x`: the overlay's `x`)."""
    head, _, rest = pointer.lstrip("/").partition("/")
    head = _KEYS.get(head, head)
    return f"{head}.{rest.replace('/', '.')}" if rest else head


def render(request: Request, failure: Failure) -> Response:
    """A failure in Onedata's envelope: the id, a description naming every field at fault,
    `details` with the field (`key`) when there is one, and the context of the answer."""
    if failure.unreadable:  # no document to point into: the reason says what and where
        parts = [f"{d.pointer}: {d.reason}" if d.pointer else d.reason for d in failure.details]
        why = "; ".join(parts)
        failure = Failure(400, "malformedData", f"{MALFORMED}: {why}", origin=failure.origin)
    # a code not in the table is an Onedata id already (Refused)
    status, error_id = ERRORS.get(failure.code, (400, failure.code))
    details: dict[str, Any] = {}
    if failure.details and failure.details[0].pointer:
        first = failure.details[0]
        details["key"] = key_of(first.pointer) if first.pointer.startswith("/") else first.pointer
        if failure.code == "invalid_input":
            error_id = next((i for why, i in _BAD_VALUE if why in first.reason), error_id)
    if error_id == "unauthorized" and _credential_given(request):
        details = {"authError": {"id": "badToken", "description": failure.message}}
    error: dict[str, Any] = {"id": error_id, "description": _describe(failure)}
    if details:
        error["details"] = details
    error["ctx"] = context(request, failure)
    return JSONResponse({"error": error}, status_code=status, headers=failure.headers())


def context(request: Request, failure: Failure) -> dict[str, Any]:
    """The `ctx` of an error, with the fields of the page's example: when, which service
    and version answered, the revision of the error vocabulary, and the module and line
    that refused the request."""
    module, line = failure.origin or ("", 0)
    return {
        "timestamp": int(time.time() * 1000),
        "service": "execflow",
        "serviceId": _service_id(request),
        "serviceReleaseVersion": __version__,
        "serviceBuildVersion": __version__,
        "serviceDomain": request.url.hostname or "",
        "onedataErrorsRevision": ERRORS_REVISION,
        "module": module,
        "line": line,
        "requestId": str(request.scope.get("state", {}).get("request_id", "")),
    }


def _service_id(request: Request) -> str:
    """The answering node, by an opaque id: a digest of its node id (which holds its host
    name), stable across its restarts."""
    state = getattr(request.scope.get("app"), "state", None)
    node = getattr(getattr(getattr(state, "runtime", None), "engine", None), "node_id", "")
    return hashlib.sha256(f"execflow node {node}".encode()).hexdigest()[:32]


def _credential_given(request: Request) -> bool:
    return "x-auth-token" in request.headers or "authorization" in request.headers


def _describe(failure: Failure) -> str:
    if not failure.details:
        return failure.message
    parts = [
        f"{key_of(d.pointer) if d.pointer.startswith('/') else d.pointer}: {d.reason}"
        if d.pointer
        else d.reason
        for d in failure.details
    ]
    if len(parts) == 1 and parts[0].endswith(failure.message):
        return parts[0]
    return failure.message + ": " + "; ".join(parts)


# lanes -----------------------------------------------------------------------------------------


def lanes(definition: Definition) -> list[list[str]]:
    """The levels of the DAG in topological order: lane n holds the tasks whose deepest
    chain of needs is n - 1 long (they may all run together)."""
    depth: dict[str, int] = {}
    for tid in definition.order:
        depth[tid] = 1 + max((depth[n] for n in definition.tasks[tid].needs), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for tid in definition.order:
        out[depth[tid]].append(tid)
    return out


# Lane run statuses from the latest attempts of its tasks, most telling first.
_LANE_STATUS = (
    (TaskRunState.FAILED, "failed"),
    (TaskRunState.CANCELED, "cancelled"),
    (TaskRunState.RUNNING, "active"),
    (TaskRunState.SCHEDULED, "active"),
)


def _lane_status(runs: list[TaskRunRecord], tasks: list[str]) -> str:
    latest = {tr.task_id: tr.state for tr in runs if tr.item is None}
    seen = [latest[t] for t in tasks if t in latest]
    for state, status in _LANE_STATUS:
        if state in seen:
            return status
    if seen and len(seen) == len(tasks):
        return "finished"
    return "active" if seen else "scheduled"


def store_id(execution_id: str, name: str) -> str:
    """A store's id: its execution's id and its name, which `store_of` splits again."""
    return f"{execution_id}.{name}"


# The audit log is a store too; a store name cannot hold "-", so this one is never taken.
AUDIT_LOG = "audit-log"


def store_of(ident: str) -> tuple[str, str]:
    execution_id, _, name = ident.partition(".")
    return execution_id, name


def execution(rec: ExecutionRecord, definition: Definition) -> dict[str, Any]:
    """Onedata's workflow execution record (`AtmWorkflowExecutionDetails`)."""
    run = rec.round + 1
    current = [tr for tr in rec.task_runs if tr.round == rec.round]
    ended = rec.state.terminal
    lane_list = []
    for index, tasks in enumerate(lanes(definition), start=1):
        status = _lane_status(current, tasks)
        box = {
            "schemaId": f"lane{index}-box1",
            "taskRegistry": {t: f"{rec.id}.{t}" for t in tasks},
        }
        lane_run = {
            "runNumber": run,
            "originRunNumber": run - 1 if run > 1 else None,
            "runType": "retry" if run > 1 else "regular",
            "status": status,
            "iteratedStoreId": None,
            "exceptionStoreId": None,
            "parallelBoxes": [box],
            "isRetriable": ended and status in ("failed", "cancelled"),
            "isRerunable": ended,
        }
        lane_list.append({"schemaId": f"lane{index}", "runs": [lane_run]})
    return {
        "atmWorkflowExecutionId": rec.id,
        "atmWorkflowSchemaSnapshotId": f"{rec.workflow_id}.{rec.revision}",
        "atmWorkflowSchemaId": rec.workflow_id,
        "atmWorkflowSchemaRevisionNumber": rec.revision,
        "name": rec.workflow_name,
        "atmInventoryId": rec.project_id,
        "spaceId": rec.project_id,
        "userId": rec.started_by,
        "status": status_of(rec),
        "scheduleTime": _seconds(rec.created_at.timestamp()),
        "startTime": 0 if rec.state is _E.INITIALIZING else _seconds(rec.started_at.timestamp()),
        "suspendTime": _seconds(rec.updated_at.timestamp()) if rec.state is _E.SUSPENDED else 0,
        "finishTime": _seconds(rec.ended_at.timestamp()) if rec.ended_at else 0,
        "lambdaSnapshotRegistry": {},
        "storeRegistry": {name: store_id(rec.id, name) for name in definition.stores},
        "systemAuditLogStoreId": store_id(rec.id, AUDIT_LOG),
        "lanes": lane_list,
    }


def _seconds(at: float) -> int:
    return int(at)


def audit_entries(events: Iterable[EventRecord]) -> list[dict[str, Any]]:
    """Audit log entries as Onedata dumps them: index, time, severity and content."""
    return [
        {
            "index": str(ev.id),
            "timestamp": int(ev.at.timestamp() * 1000),
            "severity": levels.name_of(ev.level),
            "content": {
                "description": ev.message,
                **({"task": ev.task_id} if ev.task_id else {}),
                **({"details": ev.data} if ev.data else {}),
            },
        }
        for ev in events
    ]


# paging ----------------------------------------------------------------------------------------


def encode_token(phase: str, cursor: str) -> str:
    """A listing position: the phase listed and the service's cursor in it."""
    raw = json.dumps([phase, cursor], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, phase: str) -> str:
    """The service's cursor in a token of this phase's listing; badData for another."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        given = loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        given = None
    if not (isinstance(given, list) and len(given) == 2 and given[0] == phase):
        raise Refused("badData", "not a page token of this listing and phase", "token")
    if not isinstance(given[1], str):
        raise Refused("badData", "not a page token of this listing and phase", "token")
    return given[1]
