"""The environment expressions run in: Jinja2's immutable sandbox with budgets.

Expressions come from workflow authors and read inputs from callers, and they are
evaluated on the event loop the API shares with the engine. So every operation that can
make a value much larger than its operands, or cost far more than their size, is checked
*before* it runs and refused with a `SecurityError` naming the limit: `**` on integers,
`*` and `+` on strings and lists, `%` and `str.format` widths, `range`, the string
methods and filters that pad, repeat or join. Intercepted operators are never folded at
compile time, and the guarded filters refuse before they work, so compiling an
expression is bounded too.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterable, Iterator
from functools import update_wrapper
from typing import Any

from jinja2 import filters, pass_environment, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SandboxedFormatter

# The largest value an expression may make or give: characters of a string, or the size of
# a list or object written as JSON. A rendered argument is stored with its task run.
MAX_SIZE = 1024 * 1024
# Items of a list an expression makes (the same as `range`'s limit).
MAX_ITEMS = MAX_RANGE
# Bits of an integer `**` may make (a 1,234-digit number; Python prints at most 4,300 digits).
MAX_INT_BITS = 4096
# Characters `wordwrap` takes (the text wrapper costs about 1 ms per 1,000 characters).
MAX_WRAP = 10_000
# Slices `slice` makes (it loops once per slice, whatever the list's length).
MAX_SLICES = 10_000

_SEQUENCES = (list, tuple)
_TEXTS = (str, bytes)


def size_of(value: Any, budget: int = MAX_SIZE) -> int:
    """About how many bytes `value` takes as JSON, counting shared parts each time;
    counting stops just past `budget`, so the cost is bounded whatever the value."""
    total = 0
    stack = [value]
    while stack and total <= budget:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            total += len(item) + 3
        elif kind is dict:
            total += 2
            for key, element in item.items():
                total += len(key) + 4 if type(key) is str else 12
                if type(element) in _FLAT:
                    total += _flat_size(element)
                else:
                    stack.append(element)
        elif kind is list or kind is tuple:
            total += 2
            for element in item:
                if type(element) in _FLAT:
                    total += _flat_size(element)
                else:
                    stack.append(element)
                if total > budget:
                    break
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, str):
            total += len(item) + 3
        elif isinstance(item, dict | list | tuple):
            stack.extend(item.values() if isinstance(item, dict) else item)
        else:
            total += 8
    return total


_FLAT = frozenset({str, int, float, bool, type(None)})


def _flat_size(value: Any) -> int:
    if type(value) is str:
        return len(value) + 3
    if type(value) is int:
        return value.bit_length() // 3 + 2
    return 8


def _refuse(what: str) -> SecurityError:
    return SecurityError(f"{what} (expressions are limited to make values of {MAX_SIZE} bytes)")


def _check_pow(base: Any, exponent: Any) -> None:
    ints = isinstance(base, int) and isinstance(exponent, int)
    if ints and exponent > 0 and base.bit_length() * exponent > MAX_INT_BITS and abs(base) > 1:
        raise SecurityError(
            f"{_short(base)} ** {_short(exponent)} is too large: "
            f"an integer made by ** has at most {MAX_INT_BITS} bits"
        )


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(right, int) and isinstance(left, _TEXTS + _SEQUENCES):
        seq, times = left, right
    elif isinstance(left, int) and isinstance(right, _TEXTS + _SEQUENCES):
        seq, times = right, left
    else:
        return
    if times <= 1:
        return
    if isinstance(seq, _TEXTS):
        if len(seq) * times > MAX_SIZE:
            raise _refuse(f"repeating {len(seq)} characters {_short(times)} times is too much")
    elif len(seq) * times > MAX_ITEMS:
        raise SecurityError(f"a list made by * has at most {MAX_ITEMS} items")
    elif size_of(seq, MAX_SIZE // times) * times > MAX_SIZE:
        raise _refuse(f"repeating a list {_short(times)} times is too much")


def _check_concat(left: Any, right: Any) -> None:
    if isinstance(left, _TEXTS) and isinstance(right, _TEXTS):
        if len(left) + len(right) > MAX_SIZE:
            raise _refuse("joining these texts is too much")
    elif (
        isinstance(left, _SEQUENCES)
        and isinstance(right, _SEQUENCES)
        and len(left) + len(right) > MAX_ITEMS
    ):
        raise SecurityError(f"a list made by + has at most {MAX_ITEMS} items")


# a printf conversion (`%-10.3f`, `%(name)s`, `%*d`): the part that holds width and precision
_PRINTF = re.compile(r"%(?:\([^)]*\))?([^a-zA-Z%(]*)")
_NUMBER = re.compile(r"\d+")


def _check_spec(spec: str) -> None:
    """Refuse a width or precision that would pad or print past MAX_SIZE."""
    for number in _NUMBER.findall(spec):
        if len(number) > 7 or int(number) > MAX_SIZE:
            raise _refuse(f"the width or precision {_short(int(number))} is too large")


def _check_printf(text: str, args: Any) -> None:
    for spec in _PRINTF.findall(text):
        _check_spec(spec)
        if "*" in spec:  # a width given by an argument
            values = args if isinstance(args, tuple) else (args,)
            for value in values:
                if isinstance(value, int) and abs(value) > MAX_SIZE:
                    raise _refuse(f"the width or precision {_short(value)} is too large")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else "a huge int"
    return text if len(text) <= 40 else text[:37] + "..."


class _Formatter(SandboxedFormatter):
    """`str.format` whose fields may not ask for a huge width or precision."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(format_spec)
        return super().format_field(value, format_spec)


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call of a string method that would make a text past MAX_SIZE."""
    text = method.__self__
    name = method.__name__
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int) and width > MAX_SIZE:
            raise _refuse(f"{name}({_short(width)}) is too wide")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = text.count("\t" if isinstance(text, str) else b"\t")
        if isinstance(size, int) and size * tabs > MAX_SIZE:
            raise _refuse(f"expandtabs({_short(size)}) makes too long a text")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name == "translate":
        table = args[0] if args else None
        if isinstance(table, dict):
            longest = max((len(v) for v in table.values() if isinstance(v, _TEXTS)), default=1)
            if len(text) * longest > MAX_SIZE:
                raise _refuse("translate makes too long a text")


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, _TEXTS) and isinstance(old, _TEXTS) and isinstance(new, _TEXTS)):
        return
    if len(new) <= len(old):
        return
    found = text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    if len(text) + found * (len(new) - len(old)) > MAX_SIZE:
        raise _refuse("replace makes too long a text")


def _join_texts(items: Iterable[Any], separator: Any) -> Any:
    """`separator.join(items)`, refused as soon as the text would pass MAX_SIZE."""
    parts = []
    total = 0
    step = len(separator) if isinstance(separator, _TEXTS) else 0
    for item in items:
        parts.append(item)
        total += (len(item) if isinstance(item, _TEXTS) else 0) + step
        if total > MAX_SIZE:
            raise _refuse("joining these items makes too long a text")
    return separator.join(parts)


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with budgets. `a.b` on data reads the key `b` first, so that a
    parameter or field named like a method of dict (`items`, `keys`, `values`…) reads the
    value, not the method."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # JSON data is made of dicts; a concrete check is much cheaper than Mapping's ABC
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            _check_concat(left, right)
        elif operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_pow(left, right)
        elif isinstance(left, str):  # "%" formatting
            _check_printf(left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(
            getattr(__obj, "__self__", None), _TEXTS
        ):
            if __obj.__name__ == "join" and args:
                return _join_texts(args[0], __obj.__self__)
            _check_method(__obj, args, kwargs)
        elif getattr(__obj, "__name__", "") == "fromkeys":
            raise SecurityError("dict.fromkeys is not available in expressions")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if (
            not isinstance(value, types.MethodType | types.BuiltinMethodType)
            or value.__name__ not in ("format", "format_map")
            or type(value.__self__) is not str
        ):
            return None
        text: str = value.__self__
        formatter = _Formatter(self)
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if not is_map:
                return formatter.vformat(text, args, kwargs)
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            return formatter.vformat(text, (), args[0])

        return update_wrapper(wrapper, value)


# --- filters that can grow their output: the same as Jinja's, refused past the budgets ----


def _center(value: str, width: int = 80) -> str:
    if isinstance(width, int) and width > MAX_SIZE:
        raise _refuse(f"center({_short(width)}) is too wide")
    return filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if len(text) + (text.count("\n") + 1) * step > MAX_SIZE:
        raise _refuse("indent makes too long a text")
    return filters.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(environment: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    text = str(s)
    if len(text) > MAX_WRAP:
        raise SecurityError(f"wordwrap takes at most {MAX_WRAP} characters")
    wrapstring = args[1] if len(args) > 1 else kwargs.get("wrapstring")
    if isinstance(wrapstring, str) and (len(text) + 1) * (len(wrapstring) + 1) > MAX_SIZE:
        raise _refuse("wordwrap makes too long a text")
    return filters.do_wordwrap(environment, s, width, *args, **kwargs)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value), args or tuple(kwargs.values()))
    return filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    if attribute is not None:
        value = map(filters.make_attrgetter(eval_ctx.environment, attribute), value)
    return str(_join_texts((str(v) for v in value), str(d)))


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    _check_replace(str(s), str(old), str(new), -1 if count is None else count)
    return filters.do_replace(eval_ctx, s, old, new, count)


def _check_fill(fill_with: Any, times: Any, what: str) -> None:
    if fill_with is None or not isinstance(times, int) or times <= 1:
        return
    if size_of(fill_with, MAX_SIZE // times) * times > MAX_SIZE:
        raise _refuse(f"{what} fills with too much")


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if isinstance(linecount, int) and linecount > MAX_ITEMS:
        raise SecurityError(f"batch makes lists of at most {MAX_ITEMS} items")
    _check_fill(fill_with, linecount, "batch")
    return filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if isinstance(slices, int) and slices > MAX_SLICES:
        raise SecurityError(f"slice makes at most {MAX_SLICES} slices")
    _check_fill(fill_with, slices, "slice")
    return filters.sync_do_slice(value, slices, fill_with)


def json_text(value: Any) -> str:
    """Compact JSON of `value`, refused past MAX_SIZE before it is written."""
    if size_of(value) > MAX_SIZE:
        raise _refuse("this value is too large to write as JSON")
    return json.dumps(value, separators=(",", ":"), default=str)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    if size_of(value) > MAX_SIZE or (isinstance(indent, int) and indent > 64):
        raise _refuse("this value is too large to write as JSON")
    return filters.do_tojson(eval_ctx, value, indent)


def _string(value: Any) -> str:
    if not isinstance(value, str) and size_of(value) > MAX_SIZE:
        raise _refuse("this value is too large to write as text")
    return str(value)


def _pprint(value: Any) -> str:
    if size_of(value) > MAX_SIZE:
        raise _refuse("this value is too large to write as text")
    return filters.do_pprint(value)


@pass_environment
def _sum(
    environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    # adding lists or texts one by one costs the square of their length
    if not isinstance(start, int | float):
        raise SecurityError("sum adds numbers only")
    return filters.sync_do_sum(environment, iterable, attribute, start)


GUARDED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "tojson": _tojson,
    "json": json_text,
    "string": _string,
    "pprint": _pprint,
}
# HTML helpers with no use in a workflow, and a text generator
REMOVED_FILTERS = ("urlize",)
REMOVED_GLOBALS = ("lipsum",)


def sandbox(**options: Any) -> Sandbox:
    """A new sandbox with the guarded filters in place of Jinja's."""
    env = Sandbox(autoescape=False, **options)
    env.filters.update(GUARDED_FILTERS)
    for name in REMOVED_FILTERS:
        del env.filters[name]
    for name in REMOVED_GLOBALS:
        del env.globals[name]
    return env


__all__ = ["MAX_INT_BITS", "MAX_ITEMS", "MAX_SIZE", "Sandbox", "sandbox", "size_of"]
