"""NebulaGraph Explorer's vocabulary: job status codes, its error envelope, per-task inputs,
the list filter, and jobs and task results rendered in its shapes.

Pure translations, no I/O: `explorer.py` calls the service and hands the records here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from execflow.api.dialects.base import Failure, loads, number_of, timestamp_ms
from execflow.api.dialects.coercion import scalar
from execflow.definition import Definition, secret_values
from execflow.errors import Detail, InvalidInput
from execflow.masking import redact
from execflow.records import ExecutionRecord, TaskRunRecord, WorkflowRecord

SUCCESS = "Success"

# Explorer's job and task status codes, from execflow's execution and task-run states: one
# table for both (the states the two machines share mean the same and map alike). A
# suspended execution shows 5, Explorer's "paused/stopping"; so does one whose cancel is
# under way (see `job_status`).
STATUS: dict[str, int] = {
    "INITIALIZING": 0,  # Preparing
    "SCHEDULED": 0,  # a task run waiting for its retry time
    "RUNNING": 1,  # Running
    "WAITING": 1,  # only timers pending: still running to Explorer
    "WAITING_ON_SIGNAL": 1,
    "COMPLETED": 2,  # Success
    "FAILED": 3,  # Failed
    "CANCELED": 4,  # Interrupted
    "SUSPENDED": 5,  # Stopping (paused)
}
STOPPING = 5
STATUS_CODES = frozenset(STATUS.values())


@dataclass(frozen=True)
class ErrorCode:
    code: int
    name: str
    status: int


_BAD_REQUEST = ErrorCode(40004000, "ErrBadRequest", 400)
_PARAM = ErrorCode(40004001, "ErrParam", 400)
_UNAUTHORIZED = ErrorCode(40104000, "ErrUnauthorized", 401)
_FORBIDDEN = ErrorCode(40304000, "ErrForbidden", 403)
_NOT_FOUND = ErrorCode(40404000, "ErrNotFound", 404)
_INTERNAL = ErrorCode(50004000, "ErrInternalServer", 500)
_UNKNOWN = ErrorCode(90004000, "ErrUnknown", 500)

# Explorer's error codes by execflow's native failure code. Explorer answers with the HTTP
# status of the code's category (its first three digits). It has no conflict: a request the
# job's state refuses (cancelling an ended job) is a bad request. It has no rate limit
# either: 429 is kept (with Retry-After) so a client can back off.
ERRORS: dict[str, ErrorCode] = {
    "invalid_input": _PARAM,
    "invalid_definition": _PARAM,
    "bad_request": _BAD_REQUEST,
    "too_large": _BAD_REQUEST,
    "unsupported_media_type": _BAD_REQUEST,
    "method_not_allowed": _BAD_REQUEST,
    "conflict": _BAD_REQUEST,
    "stale_state": _BAD_REQUEST,
    "too_many_requests": ErrorCode(40004000, "ErrBadRequest", 429),
    # the database cannot be reached: 503 (not its category's 500) so a client retries
    "unavailable": ErrorCode(50004001, "ErrInternalDatabase", 503),
    "unauthenticated": _UNAUTHORIZED,
    "forbidden": _FORBIDDEN,
    "not_found": _NOT_FOUND,
    "internal_error": _INTERNAL,
}


def render(request: Request, failure: Failure) -> JSONResponse:
    """Any failure as Explorer's `{code, message}`, the message `ErrName::what went wrong`."""
    error = ERRORS.get(failure.code, _UNKNOWN)
    body = {"code": error.code, "message": f"{error.name}::{failure.describe()}"}
    return JSONResponse(body, status_code=error.status, headers=failure.headers())


def success(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "data": data, "message": SUCCESS})


# inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInputs:
    """Per-task inputs folded into the workflow's parameters, with where each came from."""

    inputs: dict[str, Any]
    source: dict[str, str]  # parameter -> the task that gave it

    def pointer(self, detail: Detail) -> Detail:
        """A problem the service found with `/inputs/<param>`, as the field the caller sent."""
        head, _, name = detail.pointer.rpartition("/")
        if head != "/inputs":
            return detail
        task = self.source.get(name)
        if task is None:
            return Detail("/input", f"parameter {name!r}: {detail.reason}")
        return Detail(f"/input/{task}/{name}", detail.reason)


def task_inputs(body: Any, definition: Definition) -> TaskInputs:
    """Explorer's `{"input": {task: {param: value}}}` as execflow inputs. A task must be one
    of the workflow's and a parameter one of its parameters; tasks that give the same
    parameter must give it the same value. Every problem is reported at once."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidInput(details=[Detail("", "the body must be a JSON object")])
    unknown = sorted(set(body) - {"input"})
    problems = [Detail(f"/{key}", "unknown field (expected: input)") for key in unknown]
    given = body.get("input") or {}
    if not isinstance(given, dict):
        problems.append(Detail("/input", "must be an object of task ids"))
        given = {}
    inputs: dict[str, Any] = {}
    source: dict[str, str] = {}
    tasks = ", ".join(definition.order)
    params = ", ".join(sorted(definition.parameters)) or "none"
    for task, values in given.items():
        if task not in definition.tasks:
            problems.append(Detail(f"/input/{task}", f"no task {task!r} (tasks: {tasks})"))
            continue
        if not isinstance(values, dict):
            problems.append(Detail(f"/input/{task}", "must be an object of parameters"))
            continue
        for name, given_value in values.items():
            where = f"/input/{task}/{name}"
            if name not in definition.parameters:
                problems.append(Detail(where, f"unknown parameter (parameters: {params})"))
                continue
            # Explorer takes "string or number" for any parameter: "3" is 3 for an integer
            value = scalar(given_value, definition.parameters[name].type)
            if name in inputs and inputs[name] != value:
                first = f"/input/{source[name]}/{name}"
                problems.append(Detail(where, f"differs from {first}: one value per parameter"))
            else:
                inputs.setdefault(name, value)
                source.setdefault(name, task)
    if problems:
        raise InvalidInput("the job's input is not valid", problems)
    return TaskInputs(inputs, source)


# the list filter ------------------------------------------------------------------------

_FILTER_KEYS = ("name", "status", "fromCreateTime", "toCreateTime", "orderByCreateTime")
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class JobFilter:
    name: str | None = None
    status: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    ascending: bool = False

    def keeps(self, record: ExecutionRecord) -> bool:
        created = timestamp_ms(record.created_at) or 0
        return (
            (self.name is None or job_name(record) == self.name)
            and (self.status is None or job_status(record) == self.status)
            and (self.from_ms is None or created >= self.from_ms)
            and (self.to_ms is None or created <= self.to_ms)
        )

    def past(self, record: ExecutionRecord) -> bool:
        """Whether this job, and every older one, was created before the filter's window."""
        created = timestamp_ms(record.created_at) or 0
        return self.from_ms is not None and created < self.from_ms


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_PAGE = 1_000_000


def job_filter(raw: str | None, page: int, page_size: int) -> JobFilter:
    """The `filter` parameter (JSON) and the page asked for, checked together."""
    problems: list[Detail] = []
    if not 1 <= page <= MAX_PAGE:
        problems.append(Detail("query:page", f"must be between 1 and {MAX_PAGE}"))
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        problems.append(Detail("query:pageSize", f"must be between 1 and {MAX_PAGE_SIZE}"))
    doc: Any = {}
    if raw:
        try:
            doc = loads(raw)
        except ValueError:
            problems.append(Detail("query:filter", "is not JSON"))
    if not isinstance(doc, dict):
        problems.append(Detail("query:filter", "must be a JSON object"))
        doc = {}
    for key in sorted(set(doc) - set(_FILTER_KEYS)):
        problems.append(Detail(f"query:filter/{key}", f"unknown ({', '.join(_FILTER_KEYS)})"))
    name, status = doc.get("name"), doc.get("status")
    if name is not None and not isinstance(name, str):
        problems.append(Detail("query:filter/name", "must be a string"))
    if status is not None and not (_integer(status) and status in STATUS_CODES):
        codes = ", ".join(str(c) for c in sorted(STATUS_CODES))
        problems.append(Detail("query:filter/status", f"must be a status code ({codes})"))
    for key in ("fromCreateTime", "toCreateTime"):
        if doc.get(key) is not None and not _integer(doc[key]):
            problems.append(Detail(f"query:filter/{key}", "must be milliseconds since the epoch"))
    order = doc.get("orderByCreateTime") or "desc"
    if order not in ("desc", "asc"):
        problems.append(Detail("query:filter/orderByCreateTime", "must be desc or asc"))
    if problems:
        raise InvalidInput("the list request is not valid", problems)
    return JobFilter(
        name, status, doc.get("fromCreateTime"), doc.get("toCreateTime"), order == "asc"
    )


# rendering ------------------------------------------------------------------------------


def job_status(record: ExecutionRecord) -> int:
    """The Explorer status of an execution: a cancel under way is `Stopping`."""
    if record.cancel_requested and not record.state.terminal:
        return STOPPING
    return STATUS[record.state]


def job_name(record: ExecutionRecord) -> str:
    """The execution's name; an unnamed one (named by its id) is called as Explorer calls
    its jobs: the workflow's name and the start time, `nba_20220715090915`."""
    if record.name != record.id:
        return record.name
    return f"{record.workflow_name}_{record.created_at.astimezone(UTC):%Y%m%d%H%M%S}"


def job(record: ExecutionRecord) -> dict[str, Any]:
    """A job as Explorer lists it (ids numbers, times in ms, 0 for a time not reached)."""
    return {
        "id": number_of(record.id),
        "name": job_name(record),
        # Explorer gives a workflow's id as a string of digits in its job records
        "workflowId": str(number_of(record.workflow_id)),
        "workflowName": record.workflow_name,
        "status": job_status(record),
        "runBeginTime": timestamp_ms(record.started_at) or 0,
        "runEndTime": timestamp_ms(record.ended_at) or 0,
        "createTime": timestamp_ms(record.created_at) or 0,
    }


def workflow(wf: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": number_of(wf.id),
        "name": wf.name,
        "description": wf.description,
        "revision": wf.latest_revision,
        "createTime": timestamp_ms(wf.created_at) or 0,
        "updateTime": timestamp_ms(wf.updated_at) or 0,
    }


def _rfc3339(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def latest_runs(record: ExecutionRecord) -> dict[str, TaskRunRecord]:
    """Each task's latest attempt (of the latest round); fan-out items are left out."""
    latest: dict[str, TaskRunRecord] = {}
    for run in record.task_runs:
        if run.item is not None:
            continue
        seen = latest.get(run.task_id)
        if seen is None or (run.round, run.attempt) >= (seen.round, seen.attempt):
            latest[run.task_id] = run
    return latest


def job_detail(record: ExecutionRecord, definition: Definition) -> dict[str, Any]:
    """A job with every task of its workflow, in order; a task not started yet is Preparing."""
    runs = latest_runs(record)
    tasks = []
    for task_id in definition.order:
        run = runs.get(task_id)
        tasks.append(
            {
                "id": task_id,
                "name": task_id,
                "runBeginTime": _rfc3339(run.started_at) if run else None,
                "runEndTime": _rfc3339(run.ended_at) if run else None,
                "status": STATUS[run.state] if run else STATUS["INITIALIZING"],
            }
        )
    return {**job(record), "tasks": tasks}


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _row(value: Any) -> list[str]:
    if isinstance(value, list):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return [_cell(v) for v in value.values()]
    return [_cell(value)]


def sample_rows(
    record: ExecutionRecord, definition: Definition, task_id: str, limit: int
) -> list[list[str]]:
    """A completed task's output as rows of strings, as Explorer samples a result: a list
    gives a row per item, an object a `[key, value]` row per key, anything else one row.
    A task with no output yet has no rows."""
    run = latest_runs(record).get(task_id)
    if run is None or run.output is None:
        return []
    output = redact(run.output, secret_values(definition, record.inputs))
    if isinstance(output, list):
        rows = [_row(item) for item in output[:limit]]
    elif isinstance(output, dict):
        rows = [[key, _cell(value)] for key, value in list(output.items())[:limit]]
    else:
        rows = [[_cell(output)]]
    return rows
