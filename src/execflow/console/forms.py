"""Forms generated from a workflow's parameters and from a signal's JSON Schema, and the
typed values read back from what a browser posts.

A field knows its type, so what comes back as text becomes the value the service checks:
the service (`Service.start_or_find`, `Service.signal`) stays the judge of what is valid;
what is caught here is only what cannot be read as the type at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from execflow.definition import Parameter
from execflow.errors import Detail

PREFIX = "in."  # every generated field's name starts so: nothing clashes with `_csrf`


@dataclass(frozen=True)
class Choice:
    value: str  # the JSON text of the choice
    label: str
    selected: bool = False


@dataclass(frozen=True)
class Field:
    """One input of a generated form."""

    key: str
    kind: str  # text, password, integer, number, boolean, choice, json
    required: bool = False
    description: str = ""
    value: str = ""
    checked: bool = False
    choices: list[Choice] = field(default_factory=list)
    # HTML constraints from the JSON Schema (min, max, minlength, maxlength, pattern), so
    # the browser refuses before sending; the service checks the schema again anyway
    limits: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why the server refused the value last posted

    @property
    def name(self) -> str:
        return PREFIX + self.key


_KINDS = {"string": "text", "integer": "integer", "number": "number", "boolean": "boolean"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _field(
    key: str,
    type_: str | None,
    required: bool,
    description: str,
    default: Any,
    enum: list[Any] | None,
    secret: bool = False,
    limits: dict[str, str] | None = None,
) -> Field:
    if secret:  # never prefilled: a page shows no secret, not even a default
        return Field(key, "password", required, description)
    if enum:
        choices = [Choice(json.dumps(c), _text(c), c == default) for c in enum]
        return Field(key, "choice", required, description, choices=choices)
    kind = _KINDS.get(type_ or "", "json")
    if kind == "boolean":
        return Field(key, kind, required, description, checked=default is True)
    return Field(key, kind, required, description, _text(default), limits=limits or {})


def parameter_fields(parameters: Mapping[str, Parameter]) -> list[Field]:
    """The start form of a workflow: a field per parameter."""
    return [
        _field(name, p.type.value, p.required, p.description, p.default, p.enum, secret=p.secret)
        for name, p in parameters.items()
    ]


def schema_fields(schema: Mapping[str, Any] | None) -> list[Field]:
    """The form of a signal: a field per property of an object schema; otherwise one
    JSON field for the whole payload (key "")."""
    if not schema or schema.get("type") != "object" or not schema.get("properties"):
        return [Field("", "json", False, "The payload, as JSON")]
    required = set(schema.get("required") or ())
    out = []
    for key, prop in schema["properties"].items():
        prop = prop if isinstance(prop, Mapping) else {}
        type_ = prop.get("type") if isinstance(prop.get("type"), str) else None
        enum = prop.get("enum") if isinstance(prop.get("enum"), list) else None
        description = str(prop.get("description") or prop.get("title") or "")
        default = prop.get("default")
        limits = html_limits(prop, type_)
        out.append(_field(key, type_, key in required, description, default, enum, False, limits))
    return out


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def html_limits(prop: Mapping[str, Any], type_: str | None) -> dict[str, str]:
    """The HTML attributes that say in the page what the schema of a property says."""
    out: dict[str, str] = {}
    if type_ in ("integer", "number"):
        for keyword, attribute in (("minimum", "min"), ("maximum", "max")):
            if (number := _number(prop.get(keyword))) is not None:
                out[attribute] = number
        # an integer above (below) an exclusive bound is at least (most) the next one
        low, high = prop.get("exclusiveMinimum"), prop.get("exclusiveMaximum")
        if type_ == "integer" and isinstance(low, int) and not isinstance(low, bool):
            out["min"] = str(low + 1)
        if type_ == "integer" and isinstance(high, int) and not isinstance(high, bool):
            out["max"] = str(high - 1)
    if type_ == "string":
        for keyword, attribute in (("minLength", "minlength"), ("maxLength", "maxlength")):
            value = prop.get(keyword)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                out[attribute] = str(value)
        if isinstance(prop.get("pattern"), str):
            # a schema's pattern matches anywhere in the value, HTML's the whole value
            out["pattern"] = f"[\\s\\S]*(?:{prop['pattern']})[\\s\\S]*"
            out["title"] = f"must match {prop['pattern']}"
    return out


def with_posted(
    fields: list[Field], form: Mapping[str, str], errors: Mapping[str, str]
) -> list[Field]:
    """The fields again with what was posted in them, and why the server refused each."""
    out = []
    for f in fields:
        raw = form.get(f.name)
        error = errors.get(f.key, "")
        if f.kind == "password" or raw is None:
            out.append(replace(f, error=error))
        elif f.kind == "boolean":
            out.append(replace(f, checked=raw in ("true", "on"), error=error))
        elif f.kind == "choice":
            choices = [replace(c, selected=c.value == raw) for c in f.choices]
            out.append(replace(f, choices=choices, error=error))
        else:
            out.append(replace(f, value=raw, error=error))
    return out


def split_one_click(fields: list[Field]) -> tuple[list[Field], Field | None]:
    """A signal form's required yes/no field, which its two buttons answer in one click
    (an approval), apart from the other fields; None when it has none."""
    yes_no = next((f for f in fields if f.kind == "boolean" and f.required), None)
    return [f for f in fields if f is not yes_no], yes_no


def _read(f: Field, raw: str) -> Any:
    if f.kind in ("text", "password"):
        return raw
    if f.kind == "integer":
        return int(raw)
    if f.kind == "number":
        number = float(raw)
        return int(number) if number.is_integer() and "." not in raw else number
    return json.loads(raw)  # choice, json


def read_values(
    fields: list[Field], form: Mapping[str, str], pointer: str
) -> tuple[dict[str, Any], list[Detail]]:
    """The typed values of a posted form, leaving out fields left empty (the defaults, or
    the service's 'a value is required'); and a Detail per value that is not its type."""
    values: dict[str, Any] = {}
    problems = []
    for f in fields:
        if f.kind == "boolean":
            values[f.key] = form.get(f.name) in ("true", "on")
            continue
        raw = form.get(f.name, "")
        if raw == "" and f.kind != "text":
            continue
        if raw == "" and not f.required:
            continue
        try:
            values[f.key] = _read(f, raw)
        except ValueError:
            expected = {"integer": "an integer", "number": "a number"}.get(f.kind, "JSON")
            problems.append(Detail(f"{pointer}/{f.key}".rstrip("/"), f"expected {expected}"))
    return values, problems
