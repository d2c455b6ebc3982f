"""`signal`: wait for a named signal from outside (an approval, a human's input).

The attempt stays RUNNING with what it waits for recorded on its row, so the
API can list pending signals with their payload schema (a UI renders a form
from it). A delivered signal's payload, once it fits the schema, becomes the
task's output. Nothing runs meanwhile: a restart changes nothing.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from pydantic import Field, field_validator
from referencing import Registry
from referencing.exceptions import Unresolvable

from execflow.actions.base import Action, Args, Placement
from execflow.durations import parse_duration
from execflow.errors import Detail

SIGNAL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class SignalArgs(Args):
    name: str = Field(pattern=SIGNAL_NAME)
    # a JSON Schema (draft 2020-12) the payload must satisfy
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    timeout: float | None = None
    description: str = ""

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
            remote = next(_remote_refs(value), None)
            if remote is not None:
                raise ValueError(f"$ref {remote!r}: only references within the schema (#...)")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)


def waiting(args: SignalArgs) -> dict[str, Any]:
    """What the task run records while it waits."""
    return {"signal": args.name, "schema": args.schema_, "description": args.description}


def _remote_refs(schema: Any) -> Any:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef") and not str(value).startswith("#"):
                yield value
            else:
                yield from _remote_refs(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _remote_refs(item)


# An empty registry: a schema never makes the server fetch anything.
_NO_REMOTE: Registry[Any] = Registry()


def check_payload(schema: dict[str, Any] | None, payload: Any) -> list[Detail]:
    """Every way `payload` misses `schema`, each with a JSON pointer into the payload."""
    if schema is None:
        return []
    validator = Draft202012Validator(schema, registry=_NO_REMOTE)
    problems = []
    try:
        errors = sorted(validator.iter_errors(payload), key=lambda e: [str(p) for p in e.path])
    except Unresolvable as exc:
        return [Detail("/payload", f"the schema cannot be applied: {exc}")]
    for err in errors:
        pointer = "".join(f"/{p}" for p in err.absolute_path)
        problems.append(Detail(f"/payload{pointer}", err.message))
    return problems


ACTION = Action("signal", SignalArgs, Placement.SIGNAL, "Wait for a named signal and its payload")
