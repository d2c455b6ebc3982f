"""vRO's typed values: reading a request's `parameter` list into plain values that fit a
workflow's parameters, and writing plain values back as vRO's typed values.

`{"string": {"value": …}}`, `{"number": …}`, `{"boolean": …}`, `{"date": …}`,
`{"secure-string": …}`, `{"array": {"elements": […]}}`, `{"properties": {"property":
[{"key", "value"}]}}` and composites map onto execflow's six parameter types; other vRO
types (SDK objects, attachments, regular expressions) have no equivalent and are refused.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, NamedTuple

from execflow.api.dialects.coercion import boolean_of_text, number_of_text
from execflow.definition import ParamType
from execflow.sealing import SECRET_MASK


# A ValueProblem's message never holds the value itself: it may be a secret's.
class ValueProblem(ValueError):
    """A typed value that cannot be read, or that does not fit where it goes."""


_SECURE = ("secure-string", "encrypted-string")
# vRO's wrapper of a value -> the execflow type it carries
_WRAPPERS: dict[str, ParamType] = {
    "string": ParamType.STRING,
    "secure-string": ParamType.STRING,
    "encrypted-string": ParamType.STRING,
    "date": ParamType.STRING,
    "number": ParamType.NUMBER,
    "boolean": ParamType.BOOLEAN,
    "array": ParamType.ARRAY,
    "properties": ParamType.OBJECT,
    "composite": ParamType.OBJECT,
}
_SECURE_TYPES = ("securestring", "encryptedstring")
_TYPES: dict[str, ParamType] = {
    "string": ParamType.STRING,
    "securestring": ParamType.STRING,
    "encryptedstring": ParamType.STRING,
    "date": ParamType.STRING,
    "number": ParamType.NUMBER,
    "boolean": ParamType.BOOLEAN,
    "properties": ParamType.OBJECT,
    "any": ParamType.OBJECT,
}


class Typed(NamedTuple):
    """One parameter of a request, read: its value and whether it was sent as secret."""

    name: str
    value: Any
    kind: ParamType | None  # what its type and value say; None when no value came
    secure: bool


def type_kind(vro_type: str) -> ParamType | None:
    """The execflow type a vRO type name stands for; None for types execflow has not."""
    low = vro_type.strip().lower()
    if low.startswith("array/") or low == "array":
        return ParamType.ARRAY
    if low.startswith("compositetype("):
        return ParamType.OBJECT
    return _TYPES.get(low)


def read_value(wrapped: Any, at: str = "value") -> tuple[Any, ParamType, bool]:
    """A vRO typed value unwrapped: the plain value, the type it carries, and whether it
    came as a secure string. ValueProblem saying what is wrong with it."""
    if not isinstance(wrapped, dict) or len(wrapped) != 1:
        raise ValueProblem(f"{at} must be an object with one key naming its type, e.g. 'string'")
    key, inner = next(iter(wrapped.items()))
    kind = _WRAPPERS.get(key)
    if kind is None:
        known = ", ".join(sorted(_WRAPPERS))
        raise ValueProblem(f"{at}: values of type {key!r} are not supported ({known})")
    if not isinstance(inner, dict):
        raise ValueProblem(f"{at}.{key} must be an object")
    if kind is ParamType.ARRAY:
        elements = inner.get("elements", [])
        if not isinstance(elements, list):
            raise ValueProblem(f"{at}.array.elements must be a list")
        items = [read_value(e, f"{at}.array.elements[{i}]")[0] for i, e in enumerate(elements)]
        return items, kind, False
    if kind is ParamType.OBJECT:
        return _read_entries(key, inner, at), kind, False
    return _read_scalar(key, kind, inner.get("value"), at)


def _read_scalar(key: str, kind: ParamType, value: Any, at: str) -> tuple[Any, ParamType, bool]:
    """A string, date, secure string, number or boolean's value: ValueProblem if it is not
    one."""
    if kind is ParamType.STRING:
        if not isinstance(value, str):
            raise ValueProblem(f"{at}.{key}.value must be a string")
        if key == "date":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueProblem(f"{at}.date.value is not an ISO 8601 date") from None
        return value, kind, key in _SECURE
    # vRO's clients (vmwvro, PowervRO, VMware's build tools) send numbers and booleans as
    # text, `{"number": {"value": "3"}}`, which vRO reads: so does execflow, exactly
    if isinstance(value, str):
        value = number_of_text(value) if kind is ParamType.NUMBER else boolean_of_text(value)
    if kind is ParamType.NUMBER:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueProblem(f"{at}.number.value must be a finite number (or its digits)")
        return value, kind, False
    if not isinstance(value, bool):
        raise ValueProblem(f"{at}.boolean.value must be true or false")
    return value, kind, False


def _read_entries(key: str, inner: dict[str, Any], at: str) -> dict[str, Any]:
    """A Properties' (`key`) or a composite's (`id`) entries as an object."""
    entries = inner.get("property", [])
    label = "key" if key == "properties" else "id"
    if not isinstance(entries, list):
        raise ValueProblem(f"{at}.{key}.property must be a list")
    out: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        here = f"{at}.{key}.property[{i}]"
        name = entry.get(label) if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise ValueProblem(f"{here}.{label} must be a string")
        if name in out:
            raise ValueProblem(f"{here}: {label} {name!r} is given twice")
        out[name] = read_value(entry.get("value"), f"{here}.value")[0]
    return out


def read_parameter(raw: Any, index: int) -> Typed:
    """One entry of a request's `parameter` list, read: ValueProblem naming what is wrong."""
    if not isinstance(raw, dict):
        raise ValueProblem(f"parameter[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueProblem(f"parameter[{index}].name must be a non-empty string")
    declared = raw.get("type")
    declared_kind = None
    if declared is not None:
        if not isinstance(declared, str):
            raise ValueProblem("type must be a string")
        declared_kind = type_kind(declared)
        if declared_kind is None:
            raise ValueProblem(f"type {declared!r} has no execflow equivalent")
    secure = declared is not None and declared.strip().lower() in (
        "securestring",
        "encryptedstring",
    )
    encrypt = raw.get("encrypt-value", False)
    if not isinstance(encrypt, bool):
        raise ValueProblem("encrypt-value must be true or false")
    wrapped = raw.get("value")
    if wrapped is None or wrapped == {}:
        return Typed(name, None, declared_kind, secure or encrypt)
    value, kind, sent_secure = read_value(wrapped)
    if declared_kind is not None and declared_kind is not kind:
        raise ValueProblem(f"type {declared!r} does not match its value ({next(iter(wrapped))})")
    return Typed(name, value, kind, secure or encrypt or sent_secure)


def fit(typed: Typed, param_type: ParamType, secret: bool) -> Any:
    """The value for a parameter of `param_type`: ValueProblem if it does not fit."""
    if typed.secure and not secret:
        raise ValueProblem("sent as a secure value, but the parameter is not declared secret")
    value, kind = typed.value, typed.kind
    if kind is None:
        return value
    if param_type is ParamType.INTEGER and kind is ParamType.NUMBER:
        if value is None or float(value).is_integer():
            return None if value is None else int(value)
        raise ValueProblem("expected an integer, got a number with a fraction")
    if kind is not param_type:
        raise ValueProblem(f"a {vro_type(param_type)} value is expected, got {kind.value}")
    return value


def vro_type(param_type: ParamType, value: Any = None) -> str:
    """The vRO type name of an execflow type (of a value, for arrays)."""
    if param_type is ParamType.ARRAY:
        kinds = {_kind_of(v) for v in value or []}
        return f"Array/{vro_type(kinds.pop())}" if len(kinds) == 1 else "Array/Any"
    return {
        ParamType.STRING: "string",
        ParamType.INTEGER: "number",
        ParamType.NUMBER: "number",
        ParamType.BOOLEAN: "boolean",
        ParamType.OBJECT: "Properties",
    }[param_type]


def _kind_of(value: Any) -> ParamType:
    if isinstance(value, bool):
        return ParamType.BOOLEAN
    if isinstance(value, int | float):
        return ParamType.NUMBER
    if isinstance(value, list):
        return ParamType.ARRAY
    if isinstance(value, dict):
        return ParamType.OBJECT
    return ParamType.STRING


def wrap(value: Any) -> dict[str, Any]:
    """A plain JSON value as vRO's typed value."""
    kind = _kind_of(value)
    if kind is ParamType.ARRAY:
        return {"array": {"elements": [wrap(v) for v in value]}}
    if kind is ParamType.OBJECT:
        entries = [{"key": str(k), "value": wrap(v)} for k, v in value.items()]
        return {"properties": {"property": entries}}
    if kind is ParamType.STRING and not isinstance(value, str):
        value = "" if value is None else str(value)
    return {kind.value: {"value": value}}


def parameter(name: str, value: Any, param_type: ParamType | None, secret: bool) -> dict[str, Any]:
    """One typed parameter as vRO lists them; a secret one shows only the mask."""
    kind = param_type or _kind_of(value)
    out: dict[str, Any] = {"name": name, "scope": "local", "updated": False}
    if secret:
        out["type"] = "SecureString"
        out["encrypt-value"] = True
        if value is not None:
            out["value"] = {"secure-string": {"value": SECRET_MASK}}
        return out
    out["type"] = vro_type(kind, value)
    if value is not None:
        out["value"] = wrap(value)
    return out
