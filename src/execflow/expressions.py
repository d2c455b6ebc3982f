"""`${{ … }}` expressions, evaluated by Jinja2's immutable sandbox (never `eval`).

A string that is exactly one expression keeps the native type of its value
(`"${{ params.sizes }}"` is a list); a string mixing text and expressions
renders each value (JSON for lists and objects) into the text.
Templates are compiled once per revision and rendered many times.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    StrictUndefined,
    TemplateAssertionError,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
)
from jinja2.environment import TemplateExpression

from execflow.errors import TaskFailure
from execflow.sandbox import MAX_SIZE, json_text, sandbox, size_of

_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)

ROOTS = frozenset({"params", "tasks", "execution", "stores"})


_env = sandbox(undefined=StrictUndefined)


class ExpressionError(TaskFailure):
    """An expression could not be evaluated."""


def has_expression(value: object) -> bool:
    return isinstance(value, str) and "${{" in value


def expressions_in(value: object) -> Iterator[tuple[str, str]]:
    """Yield (json-pointer suffix, expression source) for every expression inside a JSON value."""
    if isinstance(value, str):
        for match in _EXPR.finditer(value):
            yield "", match.group(1).strip()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            for ptr, src in expressions_in(item):
                yield f"/{_escape(str(key))}{ptr}", src
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for ptr, src in expressions_in(item):
                yield f"/{i}{ptr}", src


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class References:
    """What an expression reads: parameter names, task ids, and unknown root names."""

    params: frozenset[str]
    tasks: frozenset[str]
    unknown: frozenset[str]
    stores: frozenset[str] = frozenset()


def check(source: str, roots: frozenset[str] = ROOTS) -> References:
    """Compile one expression as its renderer will, and list what it refers to; ValueError
    if it does not compile (a syntax error, an unknown filter or test), or if it reads
    nothing and its value fails (a constant is computed here, once, within the budgets)."""
    _compiled(source)
    try:
        tree = _env.parse("{{ " + source + " }}")
    except TemplateSyntaxError as exc:
        raise ValueError(f"expression {source!r} does not parse: {exc.message}") from exc
    params: set[str] = set()
    tasks: set[str] = set()
    stores: set[str] = set()
    unknown: set[str] = set()
    constant = True
    for name in tree.find_all(nodes.Name):
        if name.name not in _env.globals:
            constant = False
            if name.name not in roots:
                unknown.add(name.name)
    if constant:
        try:
            _compile_expression(source)({})
        except ExpressionError as exc:
            raise ValueError(exc.message) from None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        inner = node.node
        key = _static_key(node)
        if isinstance(inner, nodes.Name) and key is not None:
            if inner.name == "params":
                params.add(key)
            elif inner.name == "tasks":
                tasks.add(key)
            elif inner.name == "stores":
                stores.add(key)
    return References(frozenset(params), frozenset(tasks), frozenset(unknown), frozenset(stores))


def _static_key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


Renderer = Callable[[Mapping[str, Any]], Any]


def compile_value(value: Any) -> Renderer:
    """Compile a JSON value containing expressions into a function of the context."""
    if isinstance(value, str):
        return _compile_string(value)
    if isinstance(value, Mapping):
        items = [(k, compile_value(v)) for k, v in value.items()]
        if not any(has_expression(v) or isinstance(v, Mapping | list) for v in value.values()):
            frozen = dict(value)
            return lambda ctx: dict(frozen)
        return lambda ctx: {k: r(ctx) for k, r in items}
    if isinstance(value, list):
        parts = [compile_value(v) for v in value]
        return lambda ctx: [r(ctx) for r in parts]
    return lambda ctx: value


def is_single_expression(text: str) -> bool:
    """Whether `text` is exactly one `${{ … }}` (whose value keeps its type)."""
    matches = list(_EXPR.finditer(text))
    return len(matches) == 1 and matches[0].span() == (0, len(text))


def _compile_string(text: str) -> Renderer:
    matches = list(_EXPR.finditer(text))
    if not matches:
        return lambda ctx: text
    if len(matches) == 1 and matches[0].span() == (0, len(text)):
        return _compile_expression(matches[0].group(1).strip())
    pieces: list[Renderer] = []
    pos = 0
    for match in matches:
        literal = text[pos : match.start()]
        pieces.append(_constant(literal))
        pieces.append(_compile_expression(match.group(1).strip()))
        pos = match.end()
    tail = text[pos:]
    pieces.append(lambda ctx: tail)

    def render(ctx: Mapping[str, Any]) -> str:
        result = "".join(_as_text(p(ctx)) for p in pieces)
        if len(result) > MAX_SIZE:
            raise ExpressionError(f"{text[:80]!r}: {_TOO_LARGE}", "expression", False)
        return result

    return render


def _constant(value: Any) -> Renderer:
    return lambda ctx: value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json_text(value)


@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> TemplateExpression:
    """The compiled expression, shared by every revision that holds the same source (a
    revision is parsed when it is applied and again when an engine loads it)."""
    try:
        return _env.compile_expression(source, undefined_to_none=False)
    except TemplateAssertionError as exc:  # an unknown filter or test
        raise ValueError(f"expression {source!r} does not compile: {exc.message}") from exc
    except TemplateSyntaxError as exc:
        raise ValueError(f"expression {source!r} does not parse: {exc.message}") from exc


def _compile_expression(source: str) -> Renderer:
    compiled = _compiled(source)

    def render(ctx: Mapping[str, Any]) -> Any:
        try:
            result = compiled(**ctx)
        except UndefinedError as exc:
            raise _failure(source, exc.message or "undefined") from exc
        except Exception as exc:  # any evaluation error of user code is a task failure
            raise _failure(source, str(exc)) from exc
        if isinstance(result, StrictUndefined):
            raise ExpressionError(f"${{{{ {source} }}}} is undefined", "expression", False)
        if type(result) is str:
            if len(result) > MAX_SIZE:
                raise _failure(source, _TOO_LARGE)
        elif isinstance(result, dict | list | tuple) and size_of(result) > MAX_SIZE:
            raise _failure(source, _TOO_LARGE)
        return result

    return render


_TOO_LARGE = f"its value is larger than {MAX_SIZE} bytes, the most an expression may give"


def _failure(source: str, why: str) -> ExpressionError:
    return ExpressionError(f"${{{{ {source} }}}}: {why}", "expression", False)


def render(value: Any, ctx: Mapping[str, Any]) -> Any:
    """Render a value once (compiles on the fly; prefer compile_value for hot paths)."""
    return compile_value(value)(ctx)
