"""Data+ template and graph documents as execflow workflows.

A template (`POST /v2/workflowtemplates/{name}`) or a graph made directly
(`POST /v2/workflows/{name}?x-workflow-create`) is `{description, states, inputs}`. Its
`states` come in one of two syntaxes, told apart by `type`, which Data+ requires of every
state and an execflow task never has:

- Data+'s own: a chain of states from the `start` one along `next`. Operation states call
  a function (`action: {function, parameters}`): an execflow action (`echo`, `http`, …)
  or a Python function (`package.module:function`); Delay states wait (`duration`); Noop
  states do nothing; End states end the chain. Each becomes a task that needs all the
  states before it (so its expressions may read any earlier output), and the workflow's
  output is the last state's, under its name.
- execflow's: each state is a task with a `name` (as `GET` shows templates).

`inputs` are parameters: `key` the name, `value` the default, the rest as execflow declares
parameters. Every problem, found here or when the workflow is checked, is reported at the
request's own path (`/states/0/type`, `/inputs/1/value`), never at execflow's (`/tasks/…`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from execflow.actions import ACTIONS
from execflow.definition import TASK_ID_RE
from execflow.errors import Detail, InvalidInput

# The Data+ state types execflow runs, and those it cannot, with the reason.
RUNS = ("OPERATION", "DELAY", "NOOP", "END")
CANNOT = {
    "SWITCH": "a Switch state chooses its next state by a condition; execflow runs every "
    "task of a workflow, with no branching",
    "EVENT": "an Event state waits for a cloud event; execflow has no event sources "
    "(a `signal` task of a native workflow waits for a message)",
}
# The fields of each type of state (besides `name`, `type`, `start`, `next`, `end`) and of
# an Operation's action.
FIELDS = {
    "OPERATION": {"action", "payload_filter_in", "payload_filter_out"},
    "DELAY": {"duration", "payload_filter_in", "payload_filter_out"},
    "NOOP": {"payload_filter_in", "payload_filter_out"},
    "END": set(),
}
_COMMON = {"name", "state_name", "type", "start", "next", "end"}
_ACTION = {"function", "parameters"}
_PYTHON = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass
class Translation:
    """A workflow document, and where its parts came from in the request."""

    doc: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)  # document pointer -> request's

    def pointer(self, pointer: str) -> str:
        """The request's path for a pointer into the document (its longest known prefix)."""
        for prefix in sorted(self.paths, key=len, reverse=True):
            if pointer == prefix or pointer.startswith(prefix + "/"):
                return self.paths[prefix] + pointer[len(prefix) :]
        return pointer

    def refused(self, exc: InvalidInput) -> InvalidInput:
        """The workflow's refusal, pointing into the request instead of the document."""
        details = [Detail(self.pointer(d.pointer), d.reason) for d in exc.details]
        return type(exc)(exc.message, details)


def translate(name: str, body: Mapping[str, Any]) -> Translation:
    """The workflow a template's (or a graph's) request stands for; InvalidArgument naming
    each part of the request that does not map."""
    problems: list[Detail] = []
    found = Translation({"name": name})
    found.doc["parameters"] = _parameters(body.get("inputs"), found, problems)
    states = body.get("states")
    if not isinstance(states, list) or not states:
        problems.append(Detail("/states", "a non-empty list of states, each with a name"))
    elif any(isinstance(state, dict) and "type" in state for state in states):
        _from_data_plus(states, found, problems)
    else:
        _from_tasks(states, found, problems)
    if body.get("tags"):
        problems.append(Detail("/tags", "execflow workflows have no tags; leave it out"))
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(Detail("/description", "must be a string"))
    elif description is not None:
        found.doc["description"] = description
    if problems:
        raise InvalidInput("the template request is not valid", problems)
    return found


def with_defaults(doc: dict[str, Any], given: Any) -> Translation:
    """A graph's document with parameter defaults given as `[{"name", "value"}]` or
    `{name: value}` (creating a graph from a template, updating one): where each came from."""
    found = Translation(doc)
    if isinstance(given, dict):
        for name in given:
            found.paths[f"/parameters/{name}/default"] = f"/parameters/{name}"
    elif isinstance(given, list):
        for i, item in enumerate(given):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                found.paths[f"/parameters/{item['name']}/default"] = f"/parameters/{i}/value"
    return found


def _parameters(inputs: Any, found: Translation, problems: list[Detail]) -> dict[str, Any]:
    """Each input (with a `key`, and its `value` as the default) a parameter."""
    parameters: dict[str, Any] = {}
    if inputs is not None and not isinstance(inputs, list):
        problems.append(Detail("/inputs", "a list of inputs, each with a key"))
        return parameters
    for i, item in enumerate(inputs or []):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            problems.append(Detail(f"/inputs/{i}", "an object with a string `key`"))
            continue
        spec = {k: v for k, v in item.items() if k not in ("key", "value")}
        if item.get("value") is not None:
            spec["default"] = item["value"]
        parameters[item["key"]] = spec
        found.paths[f"/parameters/{item['key']}"] = f"/inputs/{i}"
        found.paths[f"/parameters/{item['key']}/default"] = f"/inputs/{i}/value"
    return parameters


def _from_tasks(states: list[Any], found: Translation, problems: list[Detail]) -> None:
    """execflow's syntax: each state a task with a `name`."""
    tasks: dict[str, Any] = {}
    for i, state in enumerate(states):
        if not isinstance(state, dict) or not isinstance(state.get("name"), str):
            problems.append(Detail(f"/states/{i}", "an object with a string `name`"))
        elif state["name"] in tasks:
            problems.append(Detail(f"/states/{i}/name", f"{state['name']!r} is given twice"))
        else:
            tasks[state["name"]] = {k: v for k, v in state.items() if k != "name"}
            found.paths[f"/tasks/{state['name']}"] = f"/states/{i}"
    found.doc["tasks"] = tasks


def _from_data_plus(states: list[Any], found: Translation, problems: list[Detail]) -> None:
    """Data+'s syntax: the chain of states from the start one, each a task."""
    names: dict[str, int] = {}
    kinds: dict[int, str | None] = {}
    for i, state in enumerate(states):
        where = f"/states/{i}"
        if not isinstance(state, dict):
            problems.append(Detail(where, "a state: an object with a `name` and a `type`"))
            continue
        key = "name" if "name" in state or "state_name" not in state else "state_name"
        label = state.get(key)
        if not isinstance(label, str) or not TASK_ID_RE.fullmatch(label):
            why = "begins with a letter or _, then up to 63 letters, digits, _ and -"
            problems.append(Detail(f"{where}/{key}", f"a state's name {why}"))
        elif label in names:
            problems.append(Detail(f"{where}/{key}", f"{label!r} is given twice"))
        else:
            names[label] = i
        kinds[i] = _kind(state, where, problems)
    tasks: dict[str, Any] = {}
    order = _chain(states, names, kinds, problems)
    labels = {i: label for label, i in names.items()}
    for i in order:
        kind, label = kinds.get(i), labels.get(i)
        if kind == "END" or kind is None or label is None:
            continue  # an End makes no task; the others' problems are reported already
        task = _task(states[i], kind, f"/states/{i}", problems)
        tasks[label] = {**task, "needs": list(tasks)}
        found.paths[f"/tasks/{label}"] = f"/states/{i}"
        if task["action"] == "python":
            found.paths[f"/tasks/{label}/with/args"] = f"/states/{i}/action/parameters"
            found.paths[f"/tasks/{label}/with/function"] = f"/states/{i}/action/function"
        elif kind == "OPERATION":
            found.paths[f"/tasks/{label}/with"] = f"/states/{i}/action/parameters"
            found.paths[f"/tasks/{label}/action"] = f"/states/{i}/action/function"
        elif kind == "DELAY":
            found.paths[f"/tasks/{label}/with/duration"] = f"/states/{i}/duration"
    if names and not tasks and not problems:
        problems.append(Detail("/states", "at least one Operation, Delay or Noop state to run"))
    found.doc["tasks"] = tasks
    if tasks:
        last = list(tasks)[-1]
        found.doc["outputs"] = {last: "${{ tasks." + last + ".output }}"}


def _kind(state: dict[str, Any], where: str, problems: list[Detail]) -> str | None:
    """The state's type in Data+'s upper-case words (it writes `Operation` too)."""
    given = state.get("type")
    kind = given.upper() if isinstance(given, str) else None
    if kind in CANNOT:
        problems.append(Detail(f"{where}/type", f"not supported: {CANNOT[kind]}"))
        return None
    if kind not in FIELDS:
        known = ", ".join(w.title() for w in RUNS)
        problems.append(Detail(f"{where}/type", f"one of {known} (got {given!r})"))
        return None
    problems.extend(
        Detail(f"{where}/{key}", f"not a field of a {kind.title()} state")
        for key in state
        if key not in _COMMON | FIELDS[kind]
    )
    for key in ("payload_filter_in", "payload_filter_out"):
        if state.get(key, "$") != "$":
            why = "execflow passes whole values: a task reads what it needs by expression"
            problems.append(Detail(f"{where}/{key}", f"only `$` (no filter): {why}"))
    return kind


def _chain(
    states: list[Any], names: dict[str, int], kinds: dict[int, str | None], problems: list[Detail]
) -> list[int]:
    """The states in the order they run: from the start one (the first, if none says it
    starts) along `next`; every state must be on that chain."""
    starts: list[int] = []
    for i, state in enumerate(states):
        if not isinstance(state, dict) or "start" not in state:
            continue
        if not isinstance(state["start"], bool):
            problems.append(Detail(f"/states/{i}/start", "true or false"))
        elif state["start"] and starts:
            problems.append(Detail(f"/states/{i}/start", f"state {starts[0]} is the start"))
        elif state["start"]:
            starts.append(i)
    if not names:
        return []
    order: list[int] = []
    at: int | None = starts[0] if starts else min(names.values())
    while at is not None:
        order.append(at)
        at = _next(states[at], names, kinds.get(at), order, problems)
    for label, i in names.items():
        if i not in order:
            problems.append(Detail(f"/states/{i}", f"{label!r} is not reached from the start"))
    return order


def _next(
    state: dict[str, Any],
    names: dict[str, int],
    kind: str | None,
    order: list[int],
    problems: list[Detail],
) -> int | None:
    """The state after this one, if any."""
    following = state.get("next")
    where = f"/states/{order[-1]}/next"
    if following is None:
        return None
    if kind == "END" or state.get("end") is True:
        problems.append(Detail(where, "a state that ends the workflow has no next state"))
    elif following not in names:
        problems.append(Detail(where, f"no state named {following!r}"))
    elif names[following] in order:
        problems.append(Detail(where, f"goes back to {following!r}: each state runs once"))
    else:
        return names[following]
    return None


def _task(state: dict[str, Any], kind: str, where: str, problems: list[Detail]) -> dict[str, Any]:
    """The task of a state that runs: a Delay sleeps, a Noop echoes nothing, an Operation
    calls its function."""
    if kind == "DELAY":
        if "duration" not in state:
            problems.append(Detail(f"{where}/duration", "how long to wait ('30s', 5, '1h')"))
        return {"action": "sleep", "with": {"duration": state.get("duration")}}
    if kind == "NOOP":
        return {"action": "echo"}
    action = state.get("action")
    if isinstance(action, str):
        action = {"function": action}
    if not isinstance(action, dict):
        problems.append(Detail(f"{where}/action", "{function, parameters}: what to call"))
        return {"action": "echo"}
    problems.extend(
        Detail(f"{where}/action/{key}", f"unknown field (expected {', '.join(sorted(_ACTION))})")
        for key in action
        if key not in _ACTION
    )
    function, parameters = action.get("function"), action.get("parameters", {})
    if not isinstance(parameters, dict):
        problems.append(Detail(f"{where}/action/parameters", "an object of arguments"))
        parameters = {}
    if isinstance(function, str) and function in ACTIONS:
        return {"action": function, "with": parameters}
    if isinstance(function, str) and _PYTHON.fullmatch(function):
        return {"action": "python", "with": {"function": function, "args": parameters}}
    what = f"an execflow action ({', '.join(sorted(ACTIONS))}) or a Python function"
    what += " ('package.module:function')"
    if isinstance(function, str) and function.startswith("urn:"):
        what = f"a FunctionGraph function cannot run in execflow: name {what}"
    problems.append(Detail(f"{where}/action/function", what))
    return {"action": "echo"}
