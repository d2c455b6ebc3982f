"""Workflow definitions: one model for YAML and JSON, validated all at once.

`parse_definition` returns a `Definition` or raises `InvalidDefinition` listing
every problem with a JSON pointer to the field; `resolve_inputs` checks a
start's inputs against the parameters the same way.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from execflow import dag, expressions
from execflow.actions import ACTIONS
from execflow.documents import pointer as _pointer
from execflow.durations import parse_duration
from execflow.errors import Detail, InvalidDefinition, InvalidInput
from execflow.masking import Secrets, redact
from execflow.schedules import Schedule
from execflow.sealing import SECRET_MASK, Sealed

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TASK_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Store names may also begin with a digit (Onedata names its stores by hex ids); such a store
# is read as `stores['83cf…']`.
STORE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_]{0,63}$")


class ParamType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"


def type_error(kind: ParamType, value: Any) -> str | None:
    """Why `value` is not of `kind`, or None when it is."""
    ok = {
        ParamType.STRING: isinstance(value, str),
        ParamType.INTEGER: isinstance(value, int) and not isinstance(value, bool),
        ParamType.NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
        ParamType.BOOLEAN: isinstance(value, bool),
        ParamType.OBJECT: isinstance(value, dict),
        ParamType.ARRAY: isinstance(value, list),
    }[kind]
    if ok:
        return None
    return f"expected {kind.value}, got {_json_type(value)}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, types in (("boolean", bool), ("integer", int), ("number", float), ("string", str)):
        if isinstance(value, types):
            return kind
    return "array" if isinstance(value, list) else "object"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Parameter(_Model):
    type: ParamType = ParamType.STRING
    default: Any = None
    required: bool = False
    enum: list[Any] | None = Field(default=None, min_length=1)
    description: str = ""
    secret: bool = False


class RetryPolicy(_Model):
    max_attempts: int = Field(default=1, ge=1, le=100)
    initial_delay: float = 1.0
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay: float = 300.0

    @field_validator("initial_delay", "max_delay", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    def delay(self, failed_attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when attempts are used up."""
        if failed_attempt >= self.max_attempts:
            return None
        try:
            growth = self.multiplier ** (failed_attempt - 1)
        except OverflowError:  # far past max_delay anyway
            growth = math.inf
        return min(self.initial_delay * growth, self.max_delay)


NO_RETRY = RetryPolicy()


class StoreKind(enum.StrEnum):
    LIST = "list"
    MAP = "map"
    VALUE = "value"


class StoreSpec(_Model):
    """A store: data an execution keeps beside its tasks, read by expressions (`stores.x`)
    and written by tasks' results."""

    type: StoreKind = StoreKind.LIST
    initial: Any = None
    description: str = ""

    def empty(self) -> Any:
        if self.initial is not None:
            return copy.deepcopy(self.initial)
        return [] if self.type is StoreKind.LIST else {} if self.type is StoreKind.MAP else None


class StoreWrite(_Model):
    """Where a task's result goes: appended to a list (`extend` adds a list's elements),
    put into a map under `key` (an expression that may read `output`), or set as a value."""

    name: str
    key: str | None = None
    extend: bool = False


class ItemFailure(enum.StrEnum):
    FAIL_FAST = "fail_fast"  # no new item starts after one fails for good
    RUN_ALL = "run_all"  # every item runs; the task fails afterwards if any did


MAX_ITEMS = 100_000
# executions of one workflow that may run at once, at most (`concurrency` of a definition)
MAX_CONCURRENCY = 10_000


class Task(_Model):
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    retry: RetryPolicy = NO_RETRY
    timeout: float | None = None
    description: str = ""
    # fan-out: one run per item of the list this expression gives (`item`, `index`)
    for_each: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=MAX_ITEMS)
    on_item_failure: ItemFailure = ItemFailure.FAIL_FAST
    store: StoreWrite | None = None

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> float | None:
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("a timeout must be positive")
        return seconds


class _Shape(_Model):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    tasks: dict[str, Any] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)
    schedules: list[Any] = Field(default_factory=list, max_length=64)
    stores: dict[str, Any] = Field(default_factory=dict)
    # executions of this workflow that run at once; the others wait in order (strict: a
    # string or a boolean is no count)
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY, strict=True)


# the action arguments that are durations
_DURATION_ARGS = {"sleep": ("duration",), "signal": ("timeout",), "http": ("timeout",)}


@dataclass(frozen=True)
class InputCheck:
    """A duration argument computed from parameters alone (`${{ params.wait }}`)."""

    param: str
    where: str
    source: str

    def problem(self, params: Mapping[str, Any]) -> str | None:
        """Why these parameters make no valid duration here, or None."""
        if any(isinstance(v, Sealed) for v in params.values()):
            return None  # a rerun's secret: checked when it was first given
        try:
            value = expressions.compile_value("${{ " + self.source + " }}")({"params": params})
            if value is not None:
                parse_duration(value)
        except (ValueError, expressions.ExpressionError) as exc:
            why = exc.message if isinstance(exc, expressions.ExpressionError) else str(exc)
            return f"{self.where}: {why}"
        return None


@dataclass(frozen=True)
class Definition:
    """A validated workflow definition; `source` is the canonical JSON-compatible form."""

    name: str
    description: str
    parameters: dict[str, Parameter]
    tasks: dict[str, Task]
    outputs: dict[str, Any]
    source: dict[str, Any]
    schedules: tuple[Schedule, ...] = ()
    stores: dict[str, StoreSpec] = field(default_factory=dict)
    # how many executions of the workflow run at once (None: no limit); see engine/admission.py
    concurrency: int | None = None

    @cached_property
    def digest(self) -> str:
        canonical = json.dumps(self.source, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @cached_property
    def needs(self) -> dict[str, list[str]]:
        return {tid: list(t.needs) for tid, t in self.tasks.items()}

    @cached_property
    def order(self) -> list[str]:
        return dag.topological_order(self.needs)

    def compile(self) -> None:
        """Build every renderer now (each expression is compiled once and shared)."""
        for built in (self.renderers, self.for_each_renderers, self.store_key_renderers):
            assert len(built) <= len(self.tasks)
        assert callable(self.outputs_renderer)

    @cached_property
    def renderers(self) -> dict[str, expressions.Renderer]:
        """Each task's `with`, compiled once per revision."""
        return {tid: expressions.compile_value(t.with_) for tid, t in self.tasks.items()}

    @cached_property
    def for_each_renderers(self) -> dict[str, expressions.Renderer]:
        return {
            tid: expressions.compile_value(t.for_each)
            for tid, t in self.tasks.items()
            if t.for_each is not None
        }

    @cached_property
    def store_key_renderers(self) -> dict[str, expressions.Renderer]:
        return {
            tid: expressions.compile_value(t.store.key)
            for tid, t in self.tasks.items()
            if t.store is not None and t.store.key is not None
        }

    @cached_property
    def outputs_renderer(self) -> expressions.Renderer:
        return expressions.compile_value(self.outputs)

    @cached_property
    def dependants(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {tid: [] for tid in self.tasks}
        for tid, task in self.tasks.items():
            for dep in task.needs:
                out[dep].append(tid)
        return out

    @cached_property
    def input_checks(self) -> tuple[InputCheck, ...]:
        """The durations that are one expression over parameters only, so that a start whose
        inputs make them out of range fails at once instead of at run time."""
        found = []
        for tid, task in self.tasks.items():
            for name in _DURATION_ARGS.get(task.action, ()):
                value = task.with_.get(name)
                if not isinstance(value, str) or not expressions.is_single_expression(value):
                    continue
                [(_, src)] = expressions.expressions_in(value)
                refs = expressions.check(src)
                other = refs.tasks or refs.stores or refs.unknown or "execution" in src
                if refs.params and not other:
                    where = _pointer("tasks", tid, "with", name)
                    found.append(InputCheck(sorted(refs.params)[0], where, src))
        return tuple(found)

    @cached_property
    def secret_params(self) -> frozenset[str]:
        return frozenset(n for n, p in self.parameters.items() if p.secret)


def _pydantic_details(exc: ValidationError, *prefix: object) -> list[Detail]:
    return [Detail(_pointer(*prefix, *e["loc"]), e["msg"]) for e in exc.errors()]


def parse_definition(raw: Any, name: str | None = None) -> Definition:
    """Validate a definition document; `name`, if given, must match (or fills a missing name)."""
    if not isinstance(raw, Mapping):
        raise InvalidDefinition("a workflow definition must be an object")
    raw = dict(raw)
    if name is not None:
        raw.setdefault("name", name)
    problems: list[Detail] = []
    shape = _shape(raw, problems)
    if not any(p.pointer == "/name" for p in problems) and not NAME_RE.fullmatch(shape.name):
        problems.append(Detail("/name", f"{shape.name!r} does not match {NAME_RE.pattern}"))
    if name is not None and shape.name != name:
        problems.append(Detail("/name", f"{shape.name!r} differs from {name!r} in the path"))
    parameters = _parameters(shape.parameters, problems)
    tasks = _tasks(shape.tasks, problems)
    needs = {tid: [n for n in t.needs if isinstance(n, str)] for tid, t in tasks.items()}
    _check_graph(shape.tasks, needs, problems)
    _check_references(shape, tasks, parameters, needs, problems)
    schedules = _schedules(shape.schedules, parameters, problems)
    stores = _stores(shape.stores, problems)
    _check_task_extras(shape, tasks, parameters, needs, stores, problems)
    if problems:
        raise InvalidDefinition(details=problems)
    source = json.loads(json.dumps(raw, default=str))
    definition = Definition(
        shape.name,
        shape.description,
        parameters,
        tasks,
        dict(shape.outputs),
        source,
        schedules,
        stores,
        shape.concurrency,
    )
    # Every expression compiled above; building the renderers here means the engine finds
    # nothing at run time that the door could have found.
    definition.compile()
    return definition


def _schedules(
    raw: list[Any], parameters: dict[str, Parameter], problems: list[Detail]
) -> tuple[Schedule, ...]:
    """Each schedule's shape, unique names, and inputs that fit the parameters."""
    out: list[Schedule] = []
    seen: set[str] = set()
    probe = Definition("", "", parameters, {}, {}, {})
    for i, spec in enumerate(raw):
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(Detail(_pointer("schedules", i, "name"), "repeats another schedule"))
        seen.add(name if isinstance(name, str) else "")
        try:
            schedule = Schedule.model_validate(spec)
        except ValidationError as exc:
            problems.extend(_pydantic_details(exc, "schedules", i))
            continue
        try:
            resolve_inputs(probe, schedule.inputs)
        except InvalidInput as exc:
            problems.extend(Detail(f"/schedules/{i}{d.pointer}", d.reason) for d in exc.details)
        out.append(schedule)
    return tuple(out)


def _shape(raw: dict[str, Any], problems: list[Detail]) -> _Shape:
    """The top-level shape; on errors, keep the parts that are usable so that the
    rest of the document is still checked and every problem reported at once."""
    try:
        return _Shape.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_details(exc))

    def part(key: str) -> dict[str, Any]:
        value = raw.get(key)
        return value if isinstance(value, dict) else {}

    name = raw.get("name")
    return _Shape.model_construct(
        name=name if isinstance(name, str) else "",
        description="",
        parameters=part("parameters"),
        tasks=part("tasks"),
        outputs=part("outputs"),
        schedules=raw["schedules"] if isinstance(raw.get("schedules"), list) else [],
        stores=part("stores"),
        concurrency=None,
    )


def _parameters(raw: dict[str, Any], problems: list[Detail]) -> dict[str, Parameter]:
    out: dict[str, Parameter] = {}
    for pname, spec in raw.items():
        where = ("parameters", pname)
        if not isinstance(pname, str) or not PARAM_RE.fullmatch(pname):
            problems.append(Detail(_pointer(*where), f"{pname!r} is not a valid parameter name"))
        try:
            param = Parameter.model_validate(spec)
        except ValidationError as exc:
            problems.extend(_pydantic_details(exc, *where))
            continue
        if param.default is not None and (why := type_error(param.type, param.default)):
            problems.append(Detail(_pointer(*where, "default"), why))
        for i, choice in enumerate(param.enum or []):
            if why := type_error(param.type, choice):
                problems.append(Detail(_pointer(*where, "enum", i), why))
        if param.enum and param.default is not None and param.default not in param.enum:
            problems.append(Detail(_pointer(*where, "default"), "the default is not in 'enum'"))
        out[pname] = param
    return out


def _tasks(raw: dict[str, Any], problems: list[Detail]) -> dict[str, Task]:
    out: dict[str, Task] = {}
    for tid, spec in raw.items():
        if not isinstance(tid, str) or not TASK_ID_RE.fullmatch(tid):
            problems.append(Detail(_pointer("tasks", tid), f"{tid!r} is not a valid task id"))
        try:
            task = Task.model_validate(spec)
        except ValidationError as exc:
            problems.extend(_pydantic_details(exc, "tasks", tid))
            continue
        action = ACTIONS.get(task.action)
        if action is None:
            known = ", ".join(sorted(ACTIONS))
            reason = f"unknown action {task.action!r} (known: {known})"
            problems.append(Detail(_pointer("tasks", tid, "action"), reason))
        else:
            problems.extend(_check_args(action.args, task.with_, ("tasks", tid, "with")))
        out[tid] = task
    return out


def _check_args(
    model: type[BaseModel], args: dict[str, Any], where: tuple[str, ...]
) -> list[Detail]:
    """Validate static arguments; a field holding an expression is checked when rendered."""
    try:
        model.model_validate(args)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            static = err["type"] in ("missing", "extra_forbidden")
            if not static and _is_dynamic(args, err["loc"]):
                continue
            found.append(Detail(_pointer(*where, *err["loc"]), err["msg"]))
        return found
    return []


def _is_dynamic(args: Any, loc: tuple[int | str, ...]) -> bool:
    value = args
    for part in loc:
        if expressions.has_expression(value):
            return True
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and part < len(value)
        if in_dict or in_list:
            value = value[part]
        else:
            return False
    return expressions.has_expression(value)


def _check_graph(raw: dict[str, Any], needs: dict[str, list[str]], problems: list[Detail]) -> None:
    for tid, deps in needs.items():
        seen: set[str] = set()
        for i, dep in enumerate(deps):
            where = _pointer("tasks", tid, "needs", i)
            if dep == tid:
                problems.append(Detail(where, f"task {tid!r} cannot need itself"))
            elif dep not in raw:
                problems.append(Detail(where, f"unknown task {dep!r}"))
            elif dep in seen:
                problems.append(Detail(where, f"{dep!r} is listed twice"))
            seen.add(dep)
    known = {t: [d for d in deps if d in raw and d != t] for t, deps in needs.items()}
    cycle = dag.find_cycle(known)
    if cycle:
        path = " -> ".join(cycle)
        problems.append(Detail(_pointer("tasks", cycle[0], "needs"), f"dependency cycle: {path}"))


def _stores(raw: dict[str, Any], problems: list[Detail]) -> dict[str, StoreSpec]:
    out: dict[str, StoreSpec] = {}
    for name, spec in raw.items():
        where = ("stores", name)
        if not isinstance(name, str) or not STORE_RE.fullmatch(name):
            problems.append(Detail(_pointer(*where), f"{name!r} is not a valid store name"))
        try:
            store = StoreSpec.model_validate(spec)
        except ValidationError as exc:
            problems.extend(_pydantic_details(exc, *where))
            continue
        if why := store_content_error(store.type, store.initial):
            problems.append(Detail(_pointer(*where, "initial"), why))
        out[name] = store
    return out


def store_content_error(kind: StoreKind, content: Any) -> str | None:
    if content is None or kind is StoreKind.VALUE:
        return None
    if kind is StoreKind.LIST and not isinstance(content, list):
        return "a list store holds an array"
    if kind is StoreKind.MAP and not isinstance(content, dict):
        return "a map store holds an object"
    return None


def _check_task_extras(
    shape: _Shape,
    tasks: dict[str, Task],
    parameters: dict[str, Parameter],
    needs: dict[str, list[str]],
    stores: dict[str, StoreSpec],
    problems: list[Detail],
) -> None:
    """Fan-out expressions, store writes, and what stores expressions read."""
    for tid, task in tasks.items():
        before = dag.upstream(needs, tid)
        base = ("tasks", tid)
        for ptr, src in expressions.expressions_in(task.with_):
            problems.extend(_unknown_stores(src, _pointer(*base, "with") + ptr, stores))
        if task.for_each is not None:
            where = _pointer(*base, "for_each")
            whole = expressions.expressions_in(task.for_each)
            if not expressions.is_single_expression(task.for_each):
                problems.append(Detail(where, "must be one whole expression: ${{ … }}"))
            for _, src in whole:
                problems.extend(_check_expression(src, where, parameters, tasks, before))
                problems.extend(_unknown_stores(src, where, stores))
        elif task.concurrency is not None:
            problems.append(Detail(_pointer(*base, "concurrency"), "only with 'for_each'"))
        if task.store is not None:
            problems.extend(_check_store_write(task, base, stores))
    for ptr, src in expressions.expressions_in(shape.outputs):
        problems.extend(_unknown_stores(src, "/outputs" + ptr, stores))


def _check_store_write(
    task: Task, base: tuple[str, ...], stores: dict[str, StoreSpec]
) -> list[Detail]:
    assert task.store is not None
    where = (*base, "store")
    spec = stores.get(task.store.name)
    if spec is None:
        known = ", ".join(sorted(stores)) or "none declared"
        return [Detail(_pointer(*where, "name"), f"unknown store {task.store.name!r} ({known})")]
    if spec.type is StoreKind.MAP and task.store.key is None:
        return [Detail(_pointer(*where, "key"), "a map store needs a key")]
    if spec.type is not StoreKind.MAP and task.store.key is not None:
        return [Detail(_pointer(*where, "key"), f"a {spec.type} store takes no key")]
    if task.store.extend and spec.type is not StoreKind.LIST:
        return [Detail(_pointer(*where, "extend"), "only a list store is extended")]
    return []


def _unknown_stores(src: str, where: str, stores: dict[str, StoreSpec]) -> list[Detail]:
    try:
        refs = expressions.check(src, expressions.ROOTS | _ITEM_ROOTS)
    except ValueError:
        return []  # reported with the expression's other checks
    return [
        Detail(where, f"unknown store {name!r} in {src!r}")
        for name in sorted(refs.stores - set(stores))
    ]


_ITEM_ROOTS = frozenset({"item", "index", "output"})


def _check_references(
    shape: _Shape,
    tasks: dict[str, Task],
    parameters: dict[str, Parameter],
    needs: dict[str, list[str]],
    problems: list[Detail],
) -> None:
    for tid, task in tasks.items():
        before = dag.upstream(needs, tid)
        base = ("tasks", tid, "with")
        roots = expressions.ROOTS | ({"item", "index"} if task.for_each else set())
        for ptr, src in expressions.expressions_in(task.with_):
            problems.extend(
                _check_expression(src, _pointer(*base) + ptr, parameters, tasks, before, roots)
            )
        if task.store is not None and task.store.key is not None:
            where = _pointer("tasks", tid, "store", "key")
            key_roots = roots | {"output"}
            for _, src in expressions.expressions_in(task.store.key):
                problems.extend(_check_expression(src, where, parameters, tasks, before, key_roots))
    every = set(tasks)
    for ptr, src in expressions.expressions_in(shape.outputs):
        problems.extend(_check_expression(src, "/outputs" + ptr, parameters, tasks, every))


def _check_expression(
    src: str,
    where: str,
    parameters: Mapping[str, Any],
    tasks: Mapping[str, Any],
    visible: set[str],
    roots: frozenset[str] = expressions.ROOTS,
) -> list[Detail]:
    try:
        refs = expressions.check(src, roots)
    except ValueError as exc:
        return [Detail(where, str(exc))]
    found = [Detail(where, f"unknown name {n!r} in {src!r}") for n in sorted(refs.unknown)]
    for p in sorted(refs.params - set(parameters)):
        found.append(Detail(where, f"unknown parameter {p!r} in {src!r}"))
    for t in sorted(refs.tasks):
        if t not in tasks:
            found.append(Detail(where, f"unknown task {t!r} in {src!r}"))
        elif t not in visible:
            found.append(Detail(where, f"task {t!r} is used in {src!r} but is not in 'needs'"))
    return found


def resolve_inputs(definition: Definition, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check inputs against the parameters and fill defaults; InvalidInput naming each field."""
    inputs = dict(inputs or {})
    problems: list[Detail] = []
    resolved: dict[str, Any] = {}
    for key in inputs:
        if key not in definition.parameters:
            problems.append(Detail(_pointer("inputs", key), f"unknown parameter {key!r}"))
    for pname, param in definition.parameters.items():
        where = _pointer("inputs", pname)
        if isinstance(inputs.get(pname), Sealed):
            resolved[pname] = inputs[pname]  # checked before it was sealed (a rerun's)
        elif pname in inputs and inputs[pname] is not None:
            value = inputs[pname]
            if why := type_error(param.type, value):
                problems.append(Detail(where, why))
                continue
            if param.enum is not None and value not in param.enum:
                # a secret's choices are as secret as its value
                choices = "its choices (not shown: it is secret)" if param.secret else None
                problems.append(
                    Detail(where, f"must be one of {choices or json.dumps(param.enum)}")
                )
                continue
            resolved[pname] = inputs[pname]
        elif param.default is not None:
            resolved[pname] = copy.deepcopy(param.default)
        elif param.required:
            problems.append(Detail(where, "a value is required"))
        else:
            resolved[pname] = None
    if not problems:
        problems = _input_check_problems(definition, resolved)
    if problems:
        # a reason may quote a value (a duration that is none): never a secret one
        secrets = secret_values(definition, inputs)
        problems = [Detail(d.pointer, redact(d.reason, secrets)) for d in problems]
        raise InvalidInput("the inputs do not fit the workflow's parameters", problems)
    return resolved


def _input_check_problems(definition: Definition, resolved: dict[str, Any]) -> list[Detail]:
    found = []
    for checked in definition.input_checks:
        if why := checked.problem(resolved):
            found.append(Detail(_pointer("inputs", checked.param), why))
    return found


def mask_secrets(definition: Definition, values: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs as shown to people: secret parameters (and any sealed value) replaced by a
    fixed mask."""
    secret = definition.secret_params
    return {
        k: (SECRET_MASK if (k in secret and v is not None) or isinstance(v, Sealed) else v)
        for k, v in values.items()
    }


def secret_texts(definition: Definition, inputs: Mapping[str, Any]) -> set[str]:
    """The text of every secret input not sealed (sealed ones read as the mask)."""
    found = set()
    for name in definition.secret_params:
        value = inputs.get(name)
        if value is not None and value != "" and not isinstance(value, Sealed):
            try:
                found.add(value if isinstance(value, str) else json.dumps(value))
            except ValueError:
                continue  # an int too long to write as text: nothing can show it as text
    return found


def secret_values(definition: Definition, inputs: Mapping[str, Any]) -> Secrets:
    """What to mask of these inputs: every form of each secret's text, computed once."""
    return Secrets(secret_texts(definition, inputs))
