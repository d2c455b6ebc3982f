"""VMware vRealize / Aria Orchestrator's shapes: execution states, typed parameters,
the error body, workflows, executions, log entries and user interactions.

Pure translations, no I/O: `vro.py` parses requests with these and renders records with
them. docs/dialects.md (the vRO section) explains each mapping.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from execflow import levels
from execflow.api.dialects.vro_values import parameter, vro_type
from execflow.definition import Definition, ParamType, mask_secrets, secret_values
from execflow.errors import Detail
from execflow.masking import redact
from execflow.records import EventRecord, ExecutionRecord, WorkflowRecord
from execflow.sealing import SECRET_MASK
from execflow.service import PendingSignal
from execflow.states import ExecutionState, TaskRunState

# -- states ------------------------------------------------------------------------------


class VroState(NamedTuple):
    """A state as vRO's reference names it, and the word its servers write for it: the
    word is what execflow answers (as `state` and `…/state`); both are taken in filters."""

    name: str
    word: str


_E = ExecutionState
# In vRO a run that waits on a user interaction is WAITING, and one that waits on a timer
# or an event is STATE_WAITING_ON_SIGNAL. execflow's signal waits are what this dialect
# answers as interactions, and its WAITING means only timers are pending: hence the swap.
STATES: dict[ExecutionState, VroState] = {
    _E.INITIALIZING: VroState("INITIALIZING", "initializing"),
    _E.RUNNING: VroState("RUNNING", "running"),
    _E.WAITING: VroState("STATE_WAITING_ON_SIGNAL", "waiting-signal"),
    _E.WAITING_ON_SIGNAL: VroState("WAITING", "waiting"),
    _E.SUSPENDED: VroState("SUSPENDED", "suspended"),
    _E.COMPLETED: VroState("COMPLETED", "completed"),
    _E.FAILED: VroState("FAILED", "failed"),
    _E.CANCELED: VroState("CANCELED", "canceled"),
}


def state_of(text: str) -> ExecutionState | None:
    """The execflow state a vRO state names (its reference name or its word, any case)."""
    wanted = text.strip().lower()
    for state, vro in STATES.items():
        if wanted in (vro.name.lower(), vro.word):
            return state
    return None


# -- errors ------------------------------------------------------------------------------

# A failure's native code -> the status vRO answers it with; codes not listed keep theirs.
ERRORS: dict[str, int] = {
    "invalid_input": 400,
    "invalid_definition": 400,
    "bad_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "stale_state": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "too_many_requests": 429,
    "unavailable": 503,
    "internal_error": 500,
}

_WHERE = re.compile(r"^/(inputs|payload)/([^/]+)(.*)$")


def where(pointer: str) -> str:
    """A field at fault in vRO's words: inputs and answers are named parameters."""
    if pointer == "/name":
        return "executionId"
    if pointer == "/payload":
        return "parameter"
    if found := _WHERE.match(pointer):
        rest = found.group(3)
        return f"parameter '{found.group(2)}'" + (f" at {rest}" if rest else "")
    return pointer.lstrip("/") or "request"


def error_body(status: int, message: str, details: tuple[Detail, ...]) -> dict[str, Any]:
    """vRO's error body: the status, one message naming every field at fault, and each
    field's problem on its own."""
    problems = [f"{where(d.pointer)}: {d.reason}" for d in details]
    text = message + (": " + "; ".join(problems) if problems else "")
    body: dict[str, Any] = {"status": status, "message": text}
    if problems:
        body["details"] = problems
    return body


# -- ids and times -----------------------------------------------------------------------


def vro_id(ident: str) -> str:
    """An execflow id (32 hex digits) as vRO writes ids: a dashed UUID."""
    return str(uuid.UUID(hex=ident))


def hex_of(text: str) -> str | None:
    """The execflow id a vRO id stands for (dashed or not), or None if it is not one."""
    try:
        return uuid.UUID(text).hex
    except ValueError:
        return None


def vro_time(at: datetime | None) -> str | None:
    """`2024-06-27T01:46:55.891+00:00`: how vRO writes dates."""
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


# -- executions --------------------------------------------------------------------------

PROFILER_LABEL = "vro.profiler"


def _current_item(rec: ExecutionRecord) -> str | None:
    running = sorted({t.task_id for t in rec.task_runs if t.state is TaskRunState.RUNNING})
    if running:
        return ", ".join(running)
    return rec.task_runs[-1].task_id if rec.task_runs else None


def statistic(rec: ExecutionRecord) -> dict[str, Any]:
    """What the profiler records of a run: each task attempt's times and duration."""
    items = []
    for tr in rec.task_runs:
        ms = None
        if tr.started_at and tr.ended_at:
            ms = round((tr.ended_at - tr.started_at).total_seconds() * 1000, 3)
        items.append(
            {
                "item": tr.task_id if tr.item is None else f"{tr.task_id}[{tr.item}]",
                "attempt": tr.attempt,
                "state": tr.state.value.lower(),
                "start-date": vro_time(tr.started_at),
                "end-date": vro_time(tr.ended_at),
                "duration-ms": ms,
            }
        )
    total = None
    if rec.ended_at is not None:
        total = round((rec.ended_at - rec.started_at).total_seconds() * 1000, 3)
    return {"duration-ms": total, "items": items}


def execution(rec: ExecutionRecord, definition: Definition, href: str) -> dict[str, Any]:
    """A workflow-execution: its state, typed inputs (secrets masked) and outputs, dates,
    who started it and what failed."""
    secrets = secret_values(definition, rec.inputs)
    inputs = mask_secrets(definition, rec.inputs)
    params = definition.parameters
    out: dict[str, Any] = {
        "href": href,
        "relations": {
            "link": [
                {"rel": "up", "href": href.rsplit("/executions/", 1)[0] + "/"},
                {"rel": "down", "href": href + "state/"},
                {"rel": "down", "href": href + "logs/"},
            ]
        },
        "id": vro_id(rec.id),
        "state": STATES[rec.state].word,
        "name": rec.workflow_name,
        "input-parameters": [
            parameter(
                n,
                v,
                params[n].type if n in params else None,
                n in definition.secret_params or v == SECRET_MASK,
            )
            for n, v in inputs.items()
        ],
        "output-parameters": [
            parameter(n, v, None, False) for n, v in (redact(rec.outputs, secrets) or {}).items()
        ],
        "start-date": vro_time(rec.started_at),
        "end-date": vro_time(rec.ended_at),
        "started-by": rec.started_by,
        "current-item-display-name": _current_item(rec),
    }
    if rec.error:
        error = redact(rec.error, secrets)
        out["content-exception"] = str(error.get("message") or error)
    if rec.labels.get(PROFILER_LABEL) == "on":
        out["statistic"] = statistic(rec)
    return {k: v for k, v in out.items() if v is not None}


# -- workflows ---------------------------------------------------------------------------


def workflow(wf: WorkflowRecord, definition: Definition, href: str) -> dict[str, Any]:
    """A workflow as vRO describes one: id, name, version (`<revision>.0.0`), and its input
    parameters typed (a default shown as their value, a secret's masked) and its outputs,
    whose type is known only once they have a value (`Any`)."""
    inputs = []
    for name, param in definition.parameters.items():
        item = parameter(name, param.default, param.type, param.secret)
        inputs.append({**item, "description": param.description})
    outputs = [
        {"name": name, "type": "Any", "scope": "local", "updated": False, "description": ""}
        for name in definition.outputs
    ]
    return {
        "href": href,
        "relations": {
            "link": [
                {"rel": "down", "href": href + "executions/"},
                {"rel": "add", "href": href + "executions/"},
            ]
        },
        "id": vro_id(wf.id),
        "name": wf.name,
        "version": f"{wf.latest_revision}.0.0",
        "description": definition.description or wf.description,
        "customized-icon": False,
        "input-parameters": inputs,
        "output-parameters": outputs,
    }


def summary(rec: ExecutionRecord, href: str) -> dict[str, Any]:
    """One execution of a list: a link with its attributes."""
    attributes = {
        "id": vro_id(rec.id),
        "name": rec.workflow_name,
        "state": STATES[rec.state].word,
        "startedBy": rec.started_by,
        "StartDate": vro_time(rec.started_at),
        "EndDate": vro_time(rec.ended_at),
    }
    return {
        "rel": "down",
        "href": href,
        "attributes": [{"name": k, "value": v} for k, v in attributes.items() if v is not None],
    }


# -- logs --------------------------------------------------------------------------------

SEVERITIES = ("error", "warning", "info", "debug")


def severity(level: int) -> str:
    """vRO's four severities from the eight syslog levels."""
    if level <= levels.ERROR:
        return "error"
    if level == levels.WARNING:
        return "warning"
    return "info" if level <= levels.INFO else "debug"


def floor_of(name: str) -> int:
    """The least severe syslog level a vRO severity filter keeps."""
    return {"error": levels.ERROR, "warning": levels.WARNING, "info": levels.INFO}.get(
        name, levels.DEBUG
    )


def log_entry(event: EventRecord) -> dict[str, Any]:
    """One audit-log entry as a vRO log entry: what a task wrote comes from the `system`
    (its script), everything else from the `server`."""
    entry: dict[str, Any] = {
        "origin": "system" if event.kind == "output" else "server",
        "severity": severity(event.level),
        "short-description": event.message,
        "time-stamp": vro_time(event.at),
        "time-stamp-val": int(event.at.timestamp() * 1000),
    }
    if event.task_id:
        entry["long-description"] = f"{event.task_id}: {event.message}"
    if event.actor:
        entry["user"] = event.actor
    return {"entry": entry}


# -- user interactions -------------------------------------------------------------------

_SCHEMA_TYPES = {
    "string": ParamType.STRING,
    "integer": ParamType.INTEGER,
    "number": ParamType.NUMBER,
    "boolean": ParamType.BOOLEAN,
    "array": ParamType.ARRAY,
    "object": ParamType.OBJECT,
}


def asked(schema: dict[str, Any] | None) -> dict[str, tuple[ParamType | None, str]]:
    """The inputs an interaction asks for, from its signal's JSON Schema: each property of
    an object schema, by name, with its type and description."""
    if not schema or schema.get("type") not in (None, "object"):
        return {}
    props = schema.get("properties") or {}
    out: dict[str, tuple[ParamType | None, str]] = {}
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type")
        found = _SCHEMA_TYPES.get(kind) if isinstance(kind, str) else None
        out[name] = (found, str(spec.get("description", "")))
    return out


def interaction(pending: PendingSignal, execution_id: str, href: str) -> dict[str, Any]:
    """A user interaction: the signal an execution waits for, and the inputs it asks for."""
    inputs = []
    for name, (kind, description) in asked(pending.schema).items():
        item: dict[str, Any] = {"name": name, "type": vro_type(kind or ParamType.STRING)}
        item.update(scope="local", description=description, updated=False)
        inputs.append(item)
    deadline = None
    if pending.since is not None and pending.timeout is not None:
        deadline = pending.since + timedelta(seconds=pending.timeout)
    out = {
        "href": href,
        "id": f"{vro_id(execution_id)}:{pending.name}",
        "name": pending.description or pending.name,
        "state": "waiting",
        "assignee": [],
        "timeout-date": vro_time(deadline),
        "parameter": inputs,
        "input-parameters": inputs,
    }
    return {k: v for k, v in out.items() if v is not None}
