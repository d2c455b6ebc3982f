"""The actions of the E-MapReduce dialect: each parses its parameters, calls the service
and gives the fields of its answer (`emr.py` adds the RequestId and writes JSON or XML)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from execflow import levels
from execflow.api.dialects.base import from_ms, iso_ms, timestamp_ms
from execflow.api.dialects.emr_shapes import (
    FLOW,
    INSTANCE,
    NODE,
    NODE_STATES_OF,
    PROJECT,
    STATES_OF,
    STATUS,
    MissingParameter,
    conf_of,
    flow_id,
    flow_instance,
    flow_instance_detail,
    hex_of,
    instance_id,
    invalid,
    latest_runs,
    node_instance,
    page,
    project_id,
    split_node_id,
    time_range,
)
from execflow.auth import Privilege, require
from execflow.definition import secret_values
from execflow.errors import Conflict, NotFound
from execflow.masking import redact
from execflow.records import ExecutionRecord, Principal
from execflow.service import Service, StartRequest
from execflow.states import ExecutionState, TaskRunState

# ListFlowNodeInstance reads each execution with its task runs: at most this many of them.
MAX_NODE_SCAN = 500
MAX_PAGE_SIZE = 100
# a task keeps at most 10,000 lines of output (and a few of its own state changes)
MAX_LOG_LINES = 20_000
_STATUS_LIST = re.compile(r"^StatusList\.\d+$")


@dataclass(frozen=True)
class Call:
    """One RPC call: the caller and the parameters it sent (query and form body)."""

    service: Service
    who: Principal
    params: dict[str, str]

    def required(self, name: str) -> str:
        value = self.params.get(name, "")
        if not value:
            raise MissingParameter(name)
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        given = self.params.get(name, "")
        if not given:
            return default
        if not re.fullmatch(r"\d{1,15}", given) or not low <= int(given) <= high:
            raise invalid(name, f"an integer from {low} to {high}, not {given!r}")
        return int(given)

    def boolean(self, name: str) -> bool:
        given = self.params.get(name, "false").lower()
        if given not in ("true", "false"):
            raise invalid(name, f"true or false, not {given!r}")
        return given == "true"

    def statuses(self) -> list[str]:
        return [v for k, v in sorted(self.params.items()) if _STATUS_LIST.fullmatch(k) and v]

    def project(self, required: bool = True) -> None:
        """ProjectId must name the caller's own project: its FP- id, its hex or its name."""
        given = self.required("ProjectId") if required else self.params.get("ProjectId")
        if not given:
            return
        mine = self.who.project_id
        if given not in (self.who.project_name, mine.upper()) and hex_of(given, PROJECT) != mine:
            raise NotFound(f"project {given!r} not found")

    def execution_id(self, name: str) -> str:
        given = self.required(name)
        found = hex_of(given, INSTANCE)
        if found is None:
            raise invalid(name, f"a flow instance id (FI- and 32 hex digits), not {given!r}")
        return found

    async def workflow(self, given: str) -> str:
        """The name of the caller's workflow that `given` names: its F- id, or its name."""
        found = hex_of(given, FLOW)
        if found is not None:
            try:
                return (await self.service.workflow_by_id(self.who, found)).name
            except NotFound:
                pass  # a workflow may be named like an id
        return (await self.service.workflow(self.who, given)).name


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


# Actions ---------------------------------------------------------------------------------


async def submit_flow(call: Call) -> dict[str, Any]:
    """Start an execution of the flow; Conf's `cyctime` puts it off until then, its other
    keys are the workflow's parameters."""
    call.project()
    name = await call.workflow(call.required("FlowId"))
    _, definition = await call.service.definition(call.who, name)
    inputs, at = conf_of(call.params.get("Conf", ""), definition.source.get("parameters", {}))
    request = StartRequest(inputs=inputs, scheduled_at=at)
    record, _ = await call.service.start_or_find(call.who, name, request)
    ident = instance_id(record.id)
    return {"Id": ident, "InstanceId": ident, "Data": ident}


async def describe_flow_instance(call: Call) -> dict[str, Any]:
    call.project()
    record = await call.service.get_execution(call.who, call.execution_id("Id"))
    return flow_instance_detail(record, await call.service.definition_of(record))


async def list_flow_instance(call: Call) -> dict[str, Any]:
    """A page of the project's flow instances, newest first (OrderType=ASC: oldest)."""
    call.project()
    number = call.integer("PageNumber", 1, 1, 1_000_000)
    size = call.integer("PageSize", 20, 1, MAX_PAGE_SIZE)
    ascending = _order(call)
    states = _states(call, STATES_OF)
    workflow = None
    if flow := call.params.get("FlowId"):
        workflow = await call.workflow(flow)
    if (name := call.params.get("FlowName")) and workflow not in (None, name):
        return page([], number, size, "FlowInstances", "FlowInstance")
    workflow = workflow or name or None
    since, until = time_range(call.params.get("TimeRange", ""))
    only = {k: call.params[k] for k in ("InstanceId", "NodeInstanceId") if call.params.get(k)}
    if only:
        # one instance named: read it alone rather than scan the project for it
        found = [
            flow_instance(ex)
            async for ex in _named(call, only)
            if since <= ex.created_at.timestamp() * 1000 <= until
            and (not states or ex.state in states)
            and workflow in (None, ex.workflow_name)
        ]
        return page(found, number, size, "FlowInstances", "FlowInstance")
    created = (from_ms(since), from_ms(until + 1))  # TimeRange's `to` is inclusive
    wanted = states or None
    rows, _ = await call.service.list_executions(
        call.who,
        workflow,
        limit=size,
        states=wanted,
        created=created,
        offset=(number - 1) * size,
        oldest_first=ascending,
    )
    total = await call.service.count_executions(call.who, workflow, wanted, created)
    listed = page([flow_instance(ex) for ex in rows], 1, size, "FlowInstances", "FlowInstance")
    return {**listed, "PageNumber": number, "Total": total}


async def _named(call: Call, given: dict[str, str]) -> AsyncIterator[ExecutionRecord]:
    """The execution that InstanceId and NodeInstanceId both name, if it is the caller's."""
    hexes = set()
    for name, ident in given.items():
        split = split_node_id(ident)
        found = split[0] if split else hex_of(ident, INSTANCE)
        if found is None:
            why = f"a flow ({INSTANCE}…) or node ({NODE}…) instance id, not {ident!r}"
            raise invalid(name, why)
        hexes.add(found)
    if len(hexes) == 1:
        try:
            yield await call.service.get_execution(call.who, hexes.pop())
        except NotFound:
            return


S = TypeVar("S", ExecutionState, TaskRunState)


def _states(call: Call, table: Mapping[str, Iterable[S]]) -> set[S]:
    """The execflow states the StatusList.N parameters stand for (none: every state)."""
    states: set[S] = set()
    for status in call.statuses():
        if status not in table:
            raise invalid("StatusList", f"unknown status {status!r} ({', '.join(sorted(table))})")
        states |= set(table[status])
    return states


def _order(call: Call) -> bool:
    """True for oldest first. Instances are ordered by creation, whatever OrderBy names."""
    order_by = call.params.get("OrderBy", "id")
    if order_by not in ("id", "gmt_create", "start_time", "schedule_time"):
        raise invalid("OrderBy", "id, gmt_create, start_time or schedule_time")
    order = call.params.get("OrderType", "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise invalid("OrderType", f"ASC or DESC, not {order!r}")
    return order == "ASC"


async def start_flow(call: Call) -> dict[str, Any]:
    """Start a submitted instance. An execflow execution runs from the moment its start is
    committed, so a submitted instance has started already: `Data: true` while it has not
    ended (a suspended one is resumed), a conflict once it has."""
    call.project()
    ident = call.execution_id("FlowInstanceId")
    record = await call.service.get_execution(call.who, ident)
    require(call.who, Privilege.SCHEDULE_EXECUTIONS)
    if record.state.terminal:
        raise Conflict(f"flow instance {instance_id(record.id)} has ended ({STATUS[record.state]})")
    if record.state is ExecutionState.SUSPENDED:
        await call.service.resume(call.who, ident)
    return {"Data": True}


async def suspend_flow(call: Call) -> dict[str, Any]:
    call.project()
    await call.service.suspend(call.who, call.execution_id("FlowInstanceId"))
    return {"Data": True}


async def resume_flow(call: Call) -> dict[str, Any]:
    call.project()
    await call.service.resume(call.who, call.execution_id("FlowInstanceId"))
    return {"Data": True}


async def rerun_flow(call: Call) -> dict[str, Any]:
    """ReRunFail=true: the failed nodes and what follows them run again in the same
    instance. Otherwise a new instance runs the flow from its first node (its `Id` is
    given besides `Data`)."""
    call.project()
    ident = call.execution_id("FlowInstanceId")
    if call.boolean("ReRunFail"):
        record = await call.service.retry(call.who, ident)
    else:
        original = await call.service.get_execution(call.who, ident)
        first = (await call.service.definition_of(original)).order[0]
        record = await call.service.rerun(call.who, ident, first)
    return {"Data": True, "Id": instance_id(record.id)}


async def kill_flow_job(call: Call) -> dict[str, Any]:
    """Kill a node instance: execflow stops a task only by cancelling its execution, so the
    instance it belongs to is cancelled (a flow instance id is taken too)."""
    call.project()
    given = call.required("JobInstanceId")
    split = split_node_id(given)
    ident = split[0] if split else hex_of(given, INSTANCE)
    if ident is None:
        raise invalid("JobInstanceId", f"a node ({NODE}…) or flow instance id, not {given!r}")
    await call.service.cancel(call.who, ident)
    return {"Data": True}


async def describe_flow_node_instance(call: Call) -> dict[str, Any]:
    call.project()
    given = call.required("Id")
    split = split_node_id(given)
    if split is None:
        raise invalid("Id", f"a node instance id ({NODE}…), not {given!r}")
    record = await call.service.get_execution(call.who, split[0])
    run = next((tr for tr in latest_runs(record) if tr.task_id == split[1]), None)
    if run is None:
        raise NotFound(f"node instance {given!r} not found")
    return node_instance(record, run, await call.service.definition_of(record))


async def list_flow_node_instance(call: Call) -> dict[str, Any]:
    """A page of the project's node instances, of its newest executions, latest first."""
    call.project(required=False)
    number = call.integer("PageNumber", 1, 1, 1_000_000)
    size = call.integer("PageSize", 20, 1, MAX_PAGE_SIZE)
    ascending = _order(call)
    states = _states(call, NODE_STATES_OF)
    since = call.integer("StartTime", 0, 0, 10**15 - 1) if call.params.get("StartTime") else 0
    found: list[dict[str, Any]] = []
    newest, _ = await call.service.list_executions(call.who, limit=MAX_NODE_SCAN)
    for summary in newest:
        record = await call.service.get_execution(call.who, summary.id)
        definition = await call.service.definition_of(record)
        for tr in reversed(latest_runs(record)):
            started = (tr.started_at or tr.queued_at or record.created_at).timestamp() * 1000
            if (not states or tr.state in states) and started >= since:
                found.append(node_instance(record, tr, definition))
    if ascending:
        found.reverse()
    return page(found, number, size, "FlowNodeInstances", "FlowNodeInstance")


async def describe_flow_node_instance_launcher_log(call: Call) -> dict[str, Any]:
    """A node's lines of the audit log (what its task printed and logged, its state
    changes): `Lines` of them from line `Start`, or the last ones with `Reverse=true`."""
    call.project()
    given = call.required("NodeInstanceId")
    split = split_node_id(given)
    if split is None:
        raise invalid("NodeInstanceId", f"a node instance id ({NODE}…), not {given!r}")
    start = call.integer("Start", 0, 0, MAX_LOG_LINES)
    count = call.integer("Lines", 100, 1, 1000)
    record = await call.service.get_execution(call.who, split[0])
    definition = await call.service.definition_of(record)
    if split[1] not in definition.tasks:
        raise NotFound(f"node instance {given!r} not found")
    reverse = call.boolean("Reverse")
    wanted = MAX_LOG_LINES if reverse else start + count + 1
    events = await call.service.logs(call.who, record.id, levels.DEBUG, split[1], 0, wanted)
    if reverse:  # the last lines, still oldest first
        chosen, end = events[max(0, len(events) - start - count) : len(events) - start], start == 0
    else:
        chosen, end = events[start : start + count], len(events) <= start + count
    secrets = secret_values(definition, record.inputs)
    entries = [
        {
            "Content": redact(
                f"{iso_ms(e.at)} {levels.name_of(e.level).upper()} {e.message}", secrets
            )
        }
        for e in chosen
    ]
    return {"LogEntrys": {"LogEntry": entries}, "LogEnd": end}


async def list_flow_project(call: Call) -> dict[str, Any]:
    """The caller's project: the one a credential of execflow belongs to."""
    who = call.who
    mine = {"Id": project_id(who.project_id), "Name": who.project_name, "Description": ""}
    wanted = call.params.get("Name")
    return page(
        [mine] if wanted in (None, "", who.project_name) else [], 1, 1, "Projects", "Project"
    )


async def list_flow(call: Call) -> dict[str, Any]:
    """A page of the project's workflows, by name."""
    call.project(required=False)
    number = call.integer("PageNumber", 1, 1, 1_000_000)
    size = call.integer("PageSize", 20, 1, MAX_PAGE_SIZE)
    name, ident = call.params.get("Name"), call.params.get("Id")
    flows = [
        {
            "Id": flow_id(wf.id),
            "Name": wf.name,
            "Description": wf.description,
            "ProjectId": project_id(wf.project_id),
            "Periodic": False,
            "GmtCreate": timestamp_ms(wf.created_at),
            "GmtModified": timestamp_ms(wf.updated_at),
        }
        for wf in await call.service.list_workflows(call.who)
        if name in (None, "", wf.name) and ident in (None, "", flow_id(wf.id))
    ]
    return page(flows, number, size, "Flow", "Flow")


ACTIONS: dict[str, Handler] = {
    "ListFlowProject": list_flow_project,
    "ListFlow": list_flow,
    "SubmitFlow": submit_flow,
    "StartFlow": start_flow,
    "DescribeFlowInstance": describe_flow_instance,
    "ListFlowInstance": list_flow_instance,
    "SuspendFlow": suspend_flow,
    "ResumeFlow": resume_flow,
    "RerunFlow": rerun_flow,
    "KillFlowJob": kill_flow_job,
    "DescribeFlowNodeInstance": describe_flow_node_instance,
    "DescribeFlowNodeInstanceLauncherLog": describe_flow_node_instance_launcher_log,
    "ListFlowNodeInstance": list_flow_node_instance,
}
