"""`${{ … }}` expressions: native values, interpolation, strict undefined, sandbox, references."""

from __future__ import annotations

import time
from typing import Any

import pytest

from execflow.errors import TaskFailure
from execflow.expressions import (
    ROOTS,
    ExpressionError,
    References,
    check,
    compile_value,
    expressions_in,
    has_expression,
    render,
)
from execflow.sandbox import MAX_SIZE


def context() -> dict[str, Any]:
    return {
        "params": {
            "name": "cat",
            "n": 5,
            "ratio": 1.5,
            "flag": True,
            "nothing": None,
            "sizes": [64, 256],
            "meta": {"k": "v"},
            "quoted": 'say "hi"',
        },
        "tasks": {"probe": {"output": {"width": 640, "path": "/tmp/cat.png"}}},
        "execution": {"id": "ex-1"},
    }


# --- whole expressions keep native types ----------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${{ params.name }}", "cat"),
        ("${{ params.n }}", 5),
        ("${{ params.ratio }}", 1.5),
        ("${{ params.flag }}", True),
        ("${{ params.nothing }}", None),
        ("${{ params.sizes }}", [64, 256]),
        ("${{ params.meta }}", {"k": "v"}),
        ("${{ params.n + 1 }}", 6),
        ("${{ params.n > 3 }}", True),
        ("${{ params.sizes[1] }}", 256),
        ("${{ params['name'] | upper }}", "CAT"),
        ("${{ params.sizes | length }}", 2),
        ("${{ tasks.probe.output.width // 2 }}", 320),
        ("${{ execution.id }}", "ex-1"),
        ("${{ none }}", None),
        ("${{params.n}}", 5),
        ("${{\n  params.n\n}}", 5),
        ("${{ params.missing | default('fallback') }}", "fallback"),
        ("${{ params.meta | json }}", '{"k":"v"}'),
    ],
)
def test_whole_expression_keeps_the_native_type(template: str, expected: Any) -> None:
    result = render(template, context())

    assert result == expected
    assert type(result) is type(expected)


# --- interpolation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("hello ${{ params.name }}!", "hello cat!"),
        ("n=${{ params.n }}", "n=5"),
        ("r=${{ params.ratio }}", "r=1.5"),
        ("${{ params.flag }} ", "true "),
        (" ${{ params.nothing }}", " null"),
        ("sizes=${{ params.sizes }}", "sizes=[64,256]"),
        ("meta=${{ params.meta }}", 'meta={"k":"v"}'),
        ("q=${{ params.quoted }}", 'q=say "hi"'),
        ("${{ params.name }}${{ params.n }}", "cat5"),
        ("${{ params.name }}/${{ tasks.probe.output.width }}.png", "cat/640.png"),
    ],
)
def test_mixed_text_interpolates_values(template: str, expected: str) -> None:
    assert render(template, context()) == expected


@pytest.mark.parametrize(
    "text", ["plain", "", "{{ params.n }}", "$ {{ params.n }}", "${ params.n }", "${{ open"]
)
def test_text_without_a_complete_expression_is_left_alone(text: str) -> None:
    assert render(text, context()) == text


# --- structures -----------------------------------------------------------------------------


def test_nested_structures_are_rendered_throughout() -> None:
    value = {
        "argv": ["convert", "${{ tasks.probe.output.path }}", "-resize", "${{ params.n }}"],
        "opts": {"sizes": "${{ params.sizes }}", "label": "${{ params.name }}-x"},
        "literal": 3,
        "none": None,
    }

    assert render(value, context()) == {
        "argv": ["convert", "/tmp/cat.png", "-resize", 5],
        "opts": {"sizes": [64, 256], "label": "cat-x"},
        "literal": 3,
        "none": None,
    }


@pytest.mark.parametrize("value", [7, 2.5, True, None, "text"])
def test_scalars_render_to_themselves(value: Any) -> None:
    assert render(value, {}) == value


@pytest.mark.parametrize(
    "value", [{"a": 1, "b": "x"}, {"a": {"b": 1}}, [1, [2]], {"a": "${{ params.n }}"}]
)
def test_each_render_returns_a_fresh_structure(value: Any) -> None:
    renderer = compile_value(value)
    first = renderer(context())
    second = renderer(context())

    assert first == second
    assert first is not second
    assert first is not value


def test_compiled_value_renders_many_contexts() -> None:
    renderer = compile_value({"v": "${{ params.n * 2 }}", "s": "n${{ params.n }}"})

    assert renderer({"params": {"n": 1}}) == {"v": 2, "s": "n1"}
    assert renderer({"params": {"n": 21}}) == {"v": 42, "s": "n21"}


def test_expression_that_does_not_parse_fails_at_compile_time() -> None:
    with pytest.raises(ValueError, match="does not parse") as caught:
        compile_value({"a": ["ok", "x ${{ params.n + }}"]})
    assert not isinstance(caught.value, ExpressionError)


# --- strict undefined -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "${{ params.missing }}",
        "${{ params.missing.deeper }}",
        "${{ params.missing + 1 }}",
        "${{ params.missing | list }}",
        "${{ tasks.unknown.output }}",
        "${{ tasks.probe.output.height }}",
        "${{ params.sizes[5] }}",
        "${{ undefined_root }}",
        "size: ${{ params.missing }}",
        "${{ params.name }} and ${{ params.missing }}",
    ],
)
def test_undefined_values_raise_expression_error(template: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render({"field": template}, context())

    assert "${{" in caught.value.message


def test_expression_error_names_the_expression_and_is_not_retryable() -> None:
    with pytest.raises(ExpressionError) as caught:
        render("${{ params.missing }}", context())

    error = caught.value
    assert isinstance(error, TaskFailure)
    assert "${{ params.missing }}" in str(error)
    assert error.kind == "expression"
    assert error.retryable is False
    assert error.as_error() == {"type": "expression", "message": error.message}


@pytest.mark.parametrize(
    "template", ["${{ 1 / 0 }}", "${{ 'a' + 1 }}", "${{ params.name.nope() }}", "${{ 1 % 0 }}"]
)
def test_runtime_errors_become_expression_errors(template: str) -> None:
    with pytest.raises(ExpressionError, match="\\$\\{\\{"):
        render(template, context())


# --- the sandbox ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "${{ params.__class__ }}",
        "${{ ''.__class__.__mro__ }}",
        "${{ ''.__class__.__mro__[1].__subclasses__() }}",
        "${{ params.__class__.__mro__[1].__subclasses__() }}",
        "${{ params.name.__class__.__name__ }}",
        "${{ params.__init__.__globals__ }}",
        "${{ cycler.__init__.__globals__ }}",
        "${{ lipsum.__globals__ }}",
        "${{ params.sizes.pop.__self__ }}",
        "${{ '{0.__class__}'.format(params) }}",
        "${{ range(10 ** 9) | list }}",
        "x ${{ params.__class__ }}",
    ],
)
def test_sandbox_refuses_unsafe_access(template: str) -> None:
    with pytest.raises(ExpressionError):
        render(template, context())


@pytest.mark.parametrize(
    "template",
    [
        "${{ params.meta.update({'k': 'changed'}) }}",
        "${{ params.meta.clear() }}",
        "${{ params.sizes.append(1) }}",
        "${{ params.sizes.pop() }}",
        "${{ params.pop('name') }}",
        "${{ params.__setitem__('name', 'dog') }}",
    ],
)
def test_sandbox_refuses_to_mutate_the_context(template: str) -> None:
    ctx = context()

    with pytest.raises(ExpressionError):
        render(template, ctx)

    assert ctx == context()


def test_sandbox_allows_reading_methods() -> None:
    assert render("${{ params.meta.keys() | list }}", context()) == ["k"]
    assert render("${{ params.name.upper() }}", context()) == "CAT"


# --- has_expression and expressions_in ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${{ x }}", True),
        ("a ${{ x }} b", True),
        ("${{", True),
        ("{{ x }}", False),
        ("", False),
        (5, False),
        (None, False),
        (["${{ x }}"], False),
    ],
)
def test_has_expression(value: object, expected: bool) -> None:
    assert has_expression(value) is expected


def test_expressions_in_yields_pointers_and_stripped_sources() -> None:
    value = {
        "argv": ["ls", "${{ params.dir }}"],
        "env": {"A/B": "x${{ params.a }}y${{  tasks.t.output  }}", "C~D": "${{ params.c }}"},
        "n": 3,
        "plain": "no expression",
    }

    assert list(expressions_in(value)) == [
        ("/argv/1", "params.dir"),
        ("/env/A~1B", "params.a"),
        ("/env/A~1B", "tasks.t.output"),
        ("/env/C~0D", "params.c"),
    ]


def test_expressions_in_a_bare_string_have_an_empty_pointer() -> None:
    assert list(expressions_in("${{ a }}-${{ b }}")) == [("", "a"), ("", "b")]


@pytest.mark.parametrize("value", [None, 1, "plain", [], {}, {"k": [1, "x"]}])
def test_expressions_in_finds_nothing_without_expressions(value: object) -> None:
    assert list(expressions_in(value)) == []


# --- check ----------------------------------------------------------------------------------


def refs(
    params: set[str] | None = None, tasks: set[str] | None = None, unknown: set[str] | None = None
) -> References:
    return References(frozenset(params or ()), frozenset(tasks or ()), frozenset(unknown or ()))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("params.object", refs(params={"object"})),
        ("params['object']", refs(params={"object"})),
        ("params.a.b.c", refs(params={"a"})),
        ("params.a + params.b", refs(params={"a", "b"})),
        ("tasks.probe.output.width", refs(tasks={"probe"})),
        ("tasks['probe'].output", refs(tasks={"probe"})),
        ("execution.id", refs()),
        ("params.x | default(tasks.t.output)", refs(params={"x"}, tasks={"t"})),
        ("[params.a, {'k': tasks.b}]", refs(params={"a"}, tasks={"b"})),
        ("params.a if tasks.b.ok else 0", refs(params={"a"}, tasks={"b"})),
        ("range(3) | list", refs()),
        ("dict(a=1)", refs()),
        ("secrets.token", refs(unknown={"secrets"})),
        ("params[key]", refs(unknown={"key"})),
        ("foo + bar", refs(unknown={"foo", "bar"})),
        ("1 + 2", refs()),
        ("params", refs()),
    ],
)
def test_check_lists_references(source: str, expected: References) -> None:
    assert check(source) == expected


@pytest.mark.parametrize("source", ["params.", "1 +", "params[", "a b", "(1"])
def test_check_refuses_what_does_not_parse(source: str) -> None:
    with pytest.raises(ValueError, match="does not parse"):
        check(source)


def test_default_roots() -> None:
    assert frozenset({"params", "tasks", "execution", "stores"}) == ROOTS


def test_check_lists_the_stores_read() -> None:
    assert check("stores.found | length + stores['seen'].x").stores == {"found", "seen"}


def test_check_with_other_roots_reports_names_outside_them() -> None:
    found = check("item.x + params.y + execution.id", frozenset({"item"}))
    assert found.unknown == frozenset({"params", "execution"})


def test_a_key_named_like_a_dict_method_reads_the_value() -> None:
    render = compile_value("${{ params.items + [params.keys] }}")
    assert render({"params": {"items": [1], "keys": 2}}) == [1, 2]


# --- budgets: no expression blocks the event loop, at compile time or when rendered -------

# Each costs far more than its text; `N` is the large number, written as a constant or read
# from an input. The second field is a word of the reason given.
HOSTILE = [
    ("7 ** N", 10**7, "bits"),
    ("2 ** (2 ** N)", 40, "bits"),
    ("'a' * N", 10**7, "repeating"),
    ("('a' * 1000) * 1000 * N", 1000, "repeating"),
    ("[[1] * 1000] * N", 1000, "repeating"),
    ("[0] * N", 10**6, "at most"),
    ("range(N)", 10**9, "range"),
    ("'x' | center(N)", 10**9, "wide"),
    ("'x'.ljust(N)", 10**9, "wide"),
    ("('\\t' * 100).expandtabs(N)", 10**7, "expandtabs"),
    ("('%' ~ N ~ 's') % 'x'", 10**9, "width"),
    ("'%*s' % (N, 'x')", 10**9, "width"),
    ("('%.' ~ N ~ 'f') | format(1.5)", 10**9, "width"),
    ("('{:' ~ N ~ '}').format('x')", 10**9, "width"),
    ("range(100000) | join('x' * N)", 1000, "joining"),
    ("'-'.join(['x' * N, 'x' * N])", 600000, "joining"),
    ("('a\\n' * 1000) | indent(N)", 10**6, "indent"),
    ("('ab' * 100000) | replace('a', 'x' * N)", 1000, "replace"),
    ("[1] | batch(N, 'x')", 10**9, "batch"),
    ("[1] | slice(N)", 10**9, "slice"),
    ("([[1, 2]] * N) | sum(start=[])", 50000, "sum"),
    ("('hello ' * N) | wordwrap(1)", 100000, "wordwrap"),
    ("('a' * N) ~ ('a' * N)", 1000000, "larger than"),
    ("'a' * N + 'b' * N", 1000000, "joining"),
    ("(['x' * 1000] * 100) * N", 100, "repeating"),
    ("['x' * N, 'x' * N, 'x' * N] | string", 400000, "too large"),
    ("['x' * N, 'x' * N, 'x' * N] | tojson", 400000, "too large"),
    ("['x' * N, 'x' * N, 'x' * N] | json", 400000, "too large"),
]
# CPU seconds of this thread (not wall time, which a busy machine or another thread of the
# test process stretches): each refusal takes a few milliseconds; making the value would
# take seconds and gigabytes
BUDGET_SECONDS = 0.05


@pytest.mark.parametrize(("source", "n", "word"), HOSTILE)
def test_a_hostile_expression_over_inputs_fails_its_render_quickly(
    source: str, n: int, word: str
) -> None:
    renderer = compile_value("${{ " + source.replace("N", "params.n") + " }}")

    started = time.thread_time()
    with pytest.raises(ExpressionError) as caught:
        renderer({"params": {"n": n}})
    elapsed = time.thread_time() - started

    assert elapsed < BUDGET_SECONDS
    assert word in caught.value.message.lower()
    assert caught.value.kind == "expression"
    assert not caught.value.retryable


@pytest.mark.parametrize(("source", "n", "word"), HOSTILE)
def test_a_hostile_constant_is_refused_when_checked_and_quickly(
    source: str, n: int, word: str
) -> None:
    constant = source.replace("N", f"({n})")

    started = time.thread_time()
    with pytest.raises(ValueError, match="(?i)" + word):
        check(constant)
    elapsed = time.thread_time() - started

    assert elapsed < BUDGET_SECONDS


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("2 ** 64", 2**64),
        ("'ab' * 3", "ababab"),
        ("[0] * 3", [0, 0, 0]),
        ("'%05.1f' % 2.25", "002.2"),
        ("'{:>6}'.format('x')", "     x"),
        ("'x' | center(5)", "  x  "),
        ("range(3) | join('-')", "0-1-2"),
        ("'-'.join(['a', 'b'])", "a-b"),
        ("[1, 2, 3] | batch(2, 0) | list", [[1, 2], [3, 0]]),
        ("[1, 2, 3] | sum", 6),
        ("'a b' | replace(' ', '--')", "a--b"),
        ("'a\\nb' | indent(2)", "a\n  b"),
        ("{'a': [1]} | tojson", '{"a": [1]}'),
        ("[1, 'x'] | json", '[1,"x"]'),
    ],
)
def test_ordinary_uses_of_guarded_operations_still_work(source: str, value: Any) -> None:
    check(source)
    assert compile_value("${{ " + source + " }}")({}) == value


def test_a_rendered_value_over_the_size_limit_fails_with_a_clear_message() -> None:
    renderer = compile_value("${{ params.big }}")
    big = "x" * (MAX_SIZE + 1)

    with pytest.raises(ExpressionError, match=f"larger than {MAX_SIZE} bytes"):
        renderer({"params": {"big": big}})
    assert renderer({"params": {"big": big[:MAX_SIZE]}}) == big[:MAX_SIZE]


def test_a_text_mixing_expressions_over_the_size_limit_fails() -> None:
    half = "x" * (MAX_SIZE // 2 + 1)
    renderer = compile_value("${{ params.a }}${{ params.a }}")

    with pytest.raises(ExpressionError, match="larger than"):
        renderer({"params": {"a": half}})


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("params.x | nosuchfilter", "No filter named 'nosuchfilter'"),
        ("params.x is nosuchtest", "No test named 'nosuchtest'"),
        ("params.x | urlize", "No filter named 'urlize'"),
    ],
)
def test_unknown_filters_and_tests_do_not_compile(source: str, reason: str) -> None:
    with pytest.raises(ValueError, match="does not compile") as caught:
        check(source)

    assert reason in str(caught.value)


def test_lipsum_is_not_available() -> None:
    assert check("lipsum(3)").unknown == frozenset({"lipsum"})


def test_dict_fromkeys_is_refused() -> None:
    with pytest.raises(ExpressionError, match="fromkeys"):
        compile_value("${{ dict.fromkeys(range(params.n), 'x') }}")({"params": {"n": 10}})
