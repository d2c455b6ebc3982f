"""`/console/executions`: the list with its filters, an execution's page, its live parts."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from execflow import levels
from execflow.api.schemas import EventPublic, ExecutionPublic, ExecutionSummary, TaskRunPublic
from execflow.console import forms, graph
from execflow.console.rendering import ENV, page
from execflow.console.routing import ConsoleRoute
from execflow.console.session import Visitor, VisitorDep, service_of
from execflow.errors import Detail, InvalidInput
from execflow.service import Service
from execflow.states import ACTIVE, TERMINAL, ExecutionState

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
PAGE_SIZE = 50
LOG_PAGE = 500
# Ended executions are counted over a recent window only: a count over every execution
# of a project scans them all, and a page must answer fast with millions stored.
ENDED_WINDOW = timedelta(hours=24)
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


def _time(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(details=[Detail(f"query:{field}", "expected a date and time")]) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _labels(value: str | None) -> dict[str, str]:
    out = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, sep, val = item.strip().partition("=")
        if not sep or not key:
            raise InvalidInput(details=[Detail("query:label", f"{item!r} is not key=value")])
        out[key] = val
    return out


async def _counts(service: Service, who: Visitor, workflow: str | None) -> list[tuple[str, int]]:
    """Executions per state: exactly for the live states, over ENDED_WINDOW for the ended
    ones; two grouped queries, each a range of the (project, state, created) index."""
    now = service.clock.now()
    live = await service.count_by_state(who.principal, workflow or None, ACTIVE)
    window = (now - ENDED_WINDOW, None)
    ended = await service.count_by_state(who.principal, workflow or None, TERMINAL, window)
    found = {**live, **ended}
    return [(state.value, found[state]) for state in ExecutionState]


@router.get("/executions")
async def executions(
    request: Request,
    who: VisitorDep,
    workflow: str = "",
    state: str = "",
    label: str = "",
    name: str = "",
    since: str = "",
    until: str = "",
    cursor: str | None = None,
    hx_target: Annotated[str | None, Header()] = None,
) -> Response:
    service = service_of(request)
    created = (_time(since, "since"), _time(until, "until"))
    items, next_cursor = await service.list_executions(
        who.principal,
        workflow or None,
        state or None,
        _labels(label),
        PAGE_SIZE,
        cursor or None,
        created=created,
        name=name or None,
    )
    filters = {
        "workflow": workflow,
        "state": state,
        "label": label,
        "name": name,
        "since": since,
        "until": until,
    }
    context: dict[str, Any] = {
        "items": [ExecutionSummary.of(e) for e in items],
        "next_cursor": next_cursor,
        "cursor": cursor,
        "filters": filters,
        "counts": await _counts(service, who, workflow),
        "states": [s.value for s in ExecutionState],
        "window_hours": int(ENDED_WINDOW.total_seconds() // 3600),
    }
    if hx_target == "results":  # the filters' partial refresh
        return page(request, "executions_results.html", who, **context)
    workflows = await service.list_workflows(who.principal)
    return page(request, "executions.html", who, workflows=workflows, **context)


async def _detail(request: Request, who: Visitor, execution_id: str) -> dict[str, Any]:
    service = service_of(request)
    record = await service.get_execution(who.principal, execution_id)
    definition = await service.definition_of(record)
    admission = await service.admission_of(record, definition)
    detail = ExecutionPublic.of_detail(record, definition, admission)
    bars, height = graph.timeline(detail.tasks, service.clock.now())
    signals = [(s, forms.schema_fields(s.schema_)) for s in detail.pending_signals]
    dag = graph.dag_json(definition, graph.task_states(detail.tasks))
    return {
        "ex": detail,
        "dag": dag,
        # what a keyed part shows: the same key, the same part (console.js keeps it as is)
        "dag_key": graph.key_of(dag),
        "signals_key": " ".join(f"{s.name}/{s.task}/{s.attempt}" for s in detail.pending_signals),
        "actions_key": f"{record.state.value}/{record.cancel_requested}",
        "bars": bars,
        "bars_height": height,
        "signals": [(s, *forms.split_one_click(fields)) for s, fields in signals],
        "task_ids": list(definition.tasks),
        "fanouts": [t for t, task in definition.tasks.items() if task.for_each is not None],
        "refused": None,  # a signal's form the server refused: {"signal", "problems"}
        "active": record.state in ACTIVE,
        "suspendable": record.state not in TERMINAL and record.state != ExecutionState.SUSPENDED,
    }


def _level(value: str) -> int:
    try:
        return levels.parse_level(value or "debug")
    except ValueError as exc:
        raise InvalidInput(details=[Detail("query:level", str(exc))]) from exc


@router.get("/executions/{execution_id}")
async def execution(
    request: Request,
    execution_id: str,
    who: VisitorDep,
    level: str = "info",
    waited: Annotated[float | None, Query(ge=0)] = None,
) -> Response:
    """An execution's page; `waited`: the start form waited that long and it had not ended."""
    context = await _detail(request, who, execution_id)
    return await _page(request, who, context, level, waited=waited)


async def _page(
    request: Request,
    who: Visitor,
    context: dict[str, Any],
    level: str = "info",
    status: int = 200,
    waited: float | None = None,
) -> Response:
    execution_id = context["ex"].id
    events = await service_of(request).logs(
        who.principal, execution_id, _level(level), None, 0, LOG_PAGE
    )
    log = [EventPublic.of(e) for e in events]
    after = log[-1].id if log else 0
    return page(
        request,
        "execution.html",
        who,
        status,
        log=log,
        after=after,
        level=level,
        levels=LEVELS,
        more=len(log) == LOG_PAGE,
        oob=False,
        waited=waited,
        **context,
    )


_REQUIRED = re.compile(r"^'(.+)' is a required property$")


def _field_of(detail: Detail, keys: set[str]) -> str | None:
    """The field of a signal's form a refusal is about, if one: `/payload/<key>/...`, or
    the property a `required` error names."""
    rest = detail.pointer.removeprefix("/payload")
    if rest.startswith("/"):
        key = rest[1:].split("/")[0].replace("~1", "/").replace("~0", "~")
        return key if key in keys else None
    named = _REQUIRED.match(detail.reason)
    return named.group(1) if named and named.group(1) in keys else None


async def refused_signal(
    request: Request,
    who: Visitor,
    execution_id: str,
    signal: str,
    form: dict[str, str],
    exc: InvalidInput,
) -> Response:
    """The execution's page answering 422 to a signal's form: the form as it was posted,
    each reason next to its field, the others above the buttons."""
    context = await _detail(request, who, execution_id)
    shown = []
    problems = []
    for s, fields, yes_no in context["signals"]:
        if s.name == signal:
            keys = {f.key for f in fields}
            errors: dict[str, str] = {}
            for d in exc.details:
                key = _field_of(d, keys)
                if key is None:
                    problems.append(d)
                else:
                    errors[key] = f"{errors[key]}; {d.reason}" if key in errors else d.reason
            fields = forms.with_posted(fields, form, errors)
            if not exc.details:
                problems.append(Detail("/payload", exc.message))
        shown.append((s, fields, yes_no))
    context.update(signals=shown, refused={"signal": signal, "problems": problems})
    return await _page(request, who, context, status=422)


@router.get("/executions/{execution_id}/live")
async def live(request: Request, execution_id: str, who: VisitorDep) -> Response:
    """The parts of the page that change as the execution runs (refreshed on its events),
    each an out-of-band swap."""
    context = await _detail(request, who, execution_id)
    return page(request, "execution_live.html", who, oob=True, **context)


@router.get("/executions/{execution_id}/items/{task}")
async def items(
    request: Request,
    execution_id: str,
    task: str,
    who: VisitorDep,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A page of a fan-out's item runs."""
    runs, secrets = await service_of(request).item_runs(
        who.principal, execution_id, task, offset, PAGE_SIZE + 1
    )
    shown = [TaskRunPublic.of(r, secrets) for r in runs[:PAGE_SIZE]]
    more = offset + PAGE_SIZE if len(runs) > PAGE_SIZE else None
    return page(
        request,
        "items.html",
        who,
        runs=shown,
        task=task,
        execution_id=execution_id,
        offset=offset,
        next_offset=more,
    )


@router.get("/executions/{execution_id}/stream", response_class=EventSourceResponse)
async def stream(
    request: Request,
    execution_id: str,
    who: VisitorDep,
    level: str = "info",
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """The audit log live: each entry as a `log` event (its row, as HTML), a `change` event
    after each batch, and `end` once the execution has ended."""
    service = service_of(request)
    if last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    floor = _level(level)
    await service.get_execution(who.principal, execution_id)
    row = ENV.get_template("log_row.html")
    # every entry moves the page on (a state change is `info`, a task's end `debug`); only
    # those at the level asked for are shown in the log
    async for event in service.follow(who.principal, execution_id, after, levels.DEBUG):
        body = EventPublic.of(event)
        if event.level <= floor:
            html = row.render(e=body).replace("\n", " ")
            yield ServerSentEvent(event="log", id=str(body.id), raw_data=html)
        yield ServerSentEvent(event="change", id=str(body.id), raw_data=str(body.id))
    yield ServerSentEvent(event="end", raw_data="end")
