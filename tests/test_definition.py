"""Definitions: parsing, validation of every problem at once, inputs, secrets and retry delays."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from execflow.actions.sleep import SleepArgs, wake_at
from execflow.definition import (
    NO_RETRY,
    Definition,
    ParamType,
    RetryPolicy,
    mask_secrets,
    parse_definition,
    resolve_inputs,
)
from execflow.documents import load_text
from execflow.durations import MAX_DURATION
from execflow.errors import Detail, InvalidDefinition, InvalidInput
from execflow.sealing import SECRET_MASK

EXAMPLE_YAML = """\
name: thumbnails
description: Make thumbnails of an uploaded image
parameters:
  object: {type: string, required: true, description: Object key}
  sizes:  {type: array, default: [64, 256]}
  api_key: {type: string, secret: true}
tasks:
  probe:
    action: python
    with: {function: "myapp.media:probe", args: {key: "${{ params.object }}"}}
    retry: {max_attempts: 3, initial_delay: 1s, multiplier: 2, max_delay: 30s}
    timeout: 30s
  resize:
    needs: [probe]
    action: command
    with: {argv: ["convert", "${{ tasks.probe.output.path }}", "-resize", "256", "out.png"]}
  notify:
    needs: [resize]
    action: http
    with: {method: POST, url: "https://example.com/hook", json: {key: "${{ params.object }}"}}
outputs:
  width: "${{ tasks.probe.output.width }}"
"""


def example() -> dict[str, Any]:
    raw = load_text(EXAMPLE_YAML, "application/yaml")
    assert isinstance(raw, dict)
    return raw


def echo(**fields: Any) -> dict[str, Any]:
    """An `echo` task; `with_` becomes the task's `with`."""
    task: dict[str, Any] = {"action": "echo"}
    if "with_" in fields:
        task["with"] = fields.pop("with_")
    task.update(fields)
    return task


def workflow(tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "wf", "tasks": tasks, **top}


def problems(raw: Any, name: str | None = None) -> list[Detail]:
    """The details of the InvalidDefinition that `raw` must raise."""
    with pytest.raises(InvalidDefinition) as caught:
        parse_definition(raw, name)
    return caught.value.details


def pointers(raw: Any) -> list[str]:
    return [d.pointer for d in problems(raw)]


def input_problems(definition: Definition, inputs: dict[str, Any] | None) -> list[Detail]:
    with pytest.raises(InvalidInput) as caught:
        resolve_inputs(definition, inputs)
    assert not isinstance(caught.value, InvalidDefinition)
    return caught.value.details


# --- the example and what a valid definition offers ----------------------------------------


def test_example_definition_validates() -> None:
    definition = parse_definition(example())

    assert definition.name == "thumbnails"
    assert definition.description == "Make thumbnails of an uploaded image"
    assert list(definition.tasks) == ["probe", "resize", "notify"]
    assert definition.order == ["probe", "resize", "notify"]
    assert definition.needs == {"probe": [], "resize": ["probe"], "notify": ["resize"]}
    assert definition.dependants == {"probe": ["resize"], "resize": ["notify"], "notify": []}
    assert definition.secret_params == frozenset({"api_key"})
    assert definition.outputs == {"width": "${{ tasks.probe.output.width }}"}


def test_example_durations_and_parameters_are_parsed() -> None:
    definition = parse_definition(example())

    probe = definition.tasks["probe"]
    assert probe.timeout == 30.0
    assert probe.retry == RetryPolicy(
        max_attempts=3, initial_delay=1.0, multiplier=2.0, max_delay=30.0
    )
    assert definition.tasks["resize"].retry == NO_RETRY
    assert definition.tasks["resize"].timeout is None
    assert definition.parameters["object"].required
    assert definition.parameters["sizes"].type is ParamType.ARRAY
    assert definition.parameters["sizes"].default == [64, 256]
    assert definition.parameters["api_key"].secret


def test_example_renderers_produce_native_arguments() -> None:
    definition = parse_definition(example())
    ctx = {
        "params": {"object": "cat.png"},
        "tasks": {"probe": {"output": {"path": "/tmp/cat.png", "width": 640}}},
    }

    assert definition.renderers["resize"](ctx) == {
        "argv": ["convert", "/tmp/cat.png", "-resize", "256", "out.png"]
    }
    assert definition.renderers["notify"](ctx)["json"] == {"key": "cat.png"}
    assert definition.outputs_renderer(ctx) == {"width": 640}


def test_source_keeps_the_document_as_written() -> None:
    raw = example()
    definition = parse_definition(raw)

    assert definition.source == raw
    assert definition.source["tasks"]["probe"]["timeout"] == "30s"


def test_name_from_the_path_fills_a_missing_name() -> None:
    raw = example()
    del raw["name"]

    definition = parse_definition(raw, name="thumbnails")

    assert definition.name == "thumbnails"
    assert definition.source["name"] == "thumbnails"
    assert "name" not in raw, "the caller's document is not modified"


def test_name_differing_from_the_path_is_reported() -> None:
    details = problems(example(), name="other")

    assert [d.pointer for d in details] == ["/name"]
    assert "other" in details[0].reason


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidDefinition, match="must be an object"):
        parse_definition(["name", "wf"])


# --- digest ---------------------------------------------------------------------------------


def _reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_digest_does_not_depend_on_key_order() -> None:
    raw = example()
    reordered = _reordered(raw)
    assert list(reordered) != list(raw)

    assert parse_definition(reordered).digest == parse_definition(raw).digest


def test_digest_is_the_same_for_yaml_and_json_documents() -> None:
    from_json = load_text(json.dumps(example()))

    assert parse_definition(from_json).digest == parse_definition(example()).digest


def test_digest_is_the_same_when_the_name_comes_from_the_path() -> None:
    raw = example()
    nameless = {k: v for k, v in raw.items() if k != "name"}

    assert parse_definition(nameless, "thumbnails").digest == parse_definition(raw).digest


def test_digest_changes_with_the_content() -> None:
    raw = example()
    changed = copy.deepcopy(raw)
    changed["tasks"]["resize"]["with"]["argv"][3] = "128"

    digest = parse_definition(raw).digest
    assert len(digest) == 64
    assert parse_definition(changed).digest != digest


def test_list_order_is_part_of_the_digest() -> None:
    raw = workflow({"a": echo(), "b": echo(), "c": echo(needs=["a", "b"])})
    swapped = workflow({"a": echo(), "b": echo(), "c": echo(needs=["b", "a"])})

    assert parse_definition(raw).digest != parse_definition(swapped).digest


# --- load_text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/yaml", "application/x-yaml", "text/yaml; charset=utf-8", "yml"]
)
def test_yaml_content_types_parse_yaml(content_type: str) -> None:
    assert load_text("name: wf\nlist: [1, two]\n", content_type) == {
        "name": "wf",
        "list": [1, "two"],
    }


@pytest.mark.parametrize("text", ['{"name": "wf"}', b'{"name": "wf"}'])
def test_json_is_the_default(text: str | bytes) -> None:
    assert load_text(text) == {"name": "wf"}


def test_yaml_is_not_accepted_as_json() -> None:
    with pytest.raises(InvalidDefinition, match="does not parse"):
        load_text("name: wf\n")


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        ('{"name": ', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        ("name: [unclosed\n", "application/yaml"),
        ("a: b: c\n", "application/yaml"),
    ],
)
def test_unparsable_documents_raise_invalid_definition(
    text: str | bytes, content_type: str
) -> None:
    with pytest.raises(InvalidDefinition, match="does not parse") as caught:
        load_text(text, content_type)
    assert caught.value.details == []


def test_yaml_is_loaded_safely() -> None:
    with pytest.raises(InvalidDefinition, match="does not parse"):
        load_text("!!python/object/apply:os.system ['true']\n", "application/yaml")


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        ('{"name": "a", "tasks": {}, "name": "b"}', "application/json"),
        ("name: a\ntasks: {}\nname: b\n", "application/yaml"),
    ],
)
def test_duplicate_keys_are_refused(text: str, content_type: str) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        load_text(text, content_type)

    [detail] = caught.value.details
    assert detail.pointer == "/name"
    assert "duplicate key 'name'" in detail.reason


def test_yaml_duplicate_key_names_the_line() -> None:
    with pytest.raises(InvalidDefinition) as caught:
        load_text("name: a\ntasks: {}\nname: b\n", "application/yaml")

    assert "line 3" in caught.value.details[0].reason


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        ('{"name": "wf", "tasks": {"a": {}, "a": {}}}', "application/json"),
        ("name: wf\ntasks:\n  a: {}\n  a: {}\n", "application/yaml"),
    ],
)
def test_nested_duplicate_key_is_reported_with_its_full_pointer(
    text: str, content_type: str
) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        load_text(text, content_type)

    assert [d.pointer for d in caught.value.details] == ["/tasks/a"]


def test_unhashable_yaml_key_is_an_invalid_definition() -> None:
    with pytest.raises(InvalidDefinition):
        load_text("? [a, b]\n: 1\n", "application/yaml")


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0ad", "thumb_nails-2", "x" * 64])
def test_valid_workflow_names(name: str) -> None:
    assert parse_definition(workflow({"a": echo()}) | {"name": name}).name == name


@pytest.mark.parametrize("name", ["", "has space", "-lead", "_lead", "dot.ted", "x" * 65, "é"])
def test_invalid_workflow_names_are_reported(name: str) -> None:
    details = problems(workflow({"a": echo()}) | {"name": name})

    assert [d.pointer for d in details] == ["/name"]
    assert repr(name) in details[0].reason


@pytest.mark.parametrize("tid", ["a", "_a", "A-b_9", "t" * 64])
def test_valid_task_ids(tid: str) -> None:
    assert list(parse_definition(workflow({tid: echo()})).tasks) == [tid]


@pytest.mark.parametrize("tid", ["9a", "-a", "a b", "a.b", "a/b", "t" * 65])
def test_invalid_task_ids_are_reported(tid: str) -> None:
    details = problems(workflow({tid: echo()}))

    assert [d.reason for d in details] == [f"{tid!r} is not a valid task id"]
    assert details[0].pointer == "/tasks/" + tid.replace("/", "~1")


@pytest.mark.parametrize("pname", ["a", "_a", "snake_Case9", "p" * 64])
def test_valid_parameter_names(pname: str) -> None:
    raw = workflow({"a": echo()}, parameters={pname: {}})
    assert list(parse_definition(raw).parameters) == [pname]


@pytest.mark.parametrize("pname", ["9a", "kebab-case", "a b", "p" * 65])
def test_invalid_parameter_names_are_reported(pname: str) -> None:
    details = problems(workflow({"a": echo()}, parameters={pname: {}}))

    assert [(d.pointer, d.reason) for d in details] == [
        (f"/parameters/{pname}", f"{pname!r} is not a valid parameter name")
    ]


# --- shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "pointer"),
    [
        ({"tasks": {"a": echo()}}, "/name"),
        ({"name": "wf"}, "/tasks"),
        ({"name": "wf", "tasks": {}}, "/tasks"),
        ({"name": "wf", "tasks": []}, "/tasks"),
        ({"name": 7, "tasks": {"a": echo()}}, "/name"),
        ({"name": "wf", "tasks": {"a": echo()}, "output": {}}, "/output"),
        ({"name": "wf", "tasks": {"a": echo()}, "parameters": []}, "/parameters"),
    ],
)
def test_shape_problems_are_reported_with_pointers(raw: dict[str, Any], pointer: str) -> None:
    assert pointers(raw) == [pointer]


def test_top_level_unknown_key_does_not_hide_task_problems() -> None:
    raw = workflow({"a": {"action": "nope"}}, output={})

    assert set(pointers(raw)) == {"/output", "/tasks/a/action"}


# --- tasks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "pointer"),
    [
        ({"with": {}}, "/tasks/a/action"),
        ({"action": "echo", "colour": "red"}, "/tasks/a/colour"),
        ({"action": "echo", "with": ["x"]}, "/tasks/a/with"),
        ({"action": "echo", "needs": "b"}, "/tasks/a/needs"),
        ({"action": "echo", "timeout": 0}, "/tasks/a/timeout"),
        ({"action": "echo", "timeout": "soon"}, "/tasks/a/timeout"),
        ({"action": "echo", "timeout": -1}, "/tasks/a/timeout"),
        ({"action": "echo", "retry": {"max_attempts": 0}}, "/tasks/a/retry/max_attempts"),
        ({"action": "echo", "retry": {"max_attempts": 101}}, "/tasks/a/retry/max_attempts"),
        ({"action": "echo", "retry": {"multiplier": 0.5}}, "/tasks/a/retry/multiplier"),
        ({"action": "echo", "retry": {"initial_delay": "-1s"}}, "/tasks/a/retry/initial_delay"),
        ({"action": "echo", "retry": {"max_delay": "forever"}}, "/tasks/a/retry/max_delay"),
        ({"action": "echo", "retry": {"jitter": True}}, "/tasks/a/retry/jitter"),
    ],
)
def test_task_field_problems_are_reported_with_pointers(task: dict[str, Any], pointer: str) -> None:
    assert pointers(workflow({"a": task})) == [pointer]


def test_timeout_must_be_positive() -> None:
    [detail] = problems(workflow({"a": echo(timeout="0s")}))

    assert detail.pointer == "/tasks/a/timeout"
    assert "positive" in detail.reason


def test_unknown_action_names_the_known_ones() -> None:
    [detail] = problems(workflow({"a": {"action": "shell"}}))

    assert detail.pointer == "/tasks/a/action"
    assert "unknown action 'shell'" in detail.reason
    for known in ("command", "echo", "http", "python", "sleep"):
        assert known in detail.reason


@pytest.mark.parametrize(
    ("task", "pointer"),
    [
        ({"action": "command"}, "/tasks/a/with/argv"),
        ({"action": "command", "with": {"argv": []}}, "/tasks/a/with/argv"),
        ({"action": "command", "with": {"argv": "ls -l"}}, "/tasks/a/with/argv"),
        ({"action": "command", "with": {"argv": ["ls", 1.5]}}, "/tasks/a/with/argv/1"),
        ({"action": "command", "with": {"argv": ["ls"], "shell": True}}, "/tasks/a/with/shell"),
        ({"action": "command", "with": {"argv": ["ls"], "env": {"A": 1}}}, "/tasks/a/with/env/A"),
        ({"action": "http", "with": {}}, "/tasks/a/with/url"),
        ({"action": "http", "with": {"url": "not a url"}}, "/tasks/a/with/url"),
        (
            {"action": "http", "with": {"url": "https://x.io", "method": "FETCH"}},
            "/tasks/a/with/method",
        ),
        ({"action": "http", "with": {"url": "https://x.io", "jsn": {}}}, "/tasks/a/with/jsn"),
        (
            {"action": "http", "with": {"url": "https://x.io", "json": {}, "body": "b"}},
            "/tasks/a/with",
        ),
        ({"action": "python", "with": {"function": "no_colon"}}, "/tasks/a/with/function"),
        ({"action": "python", "with": {"function": "m:f", "args": []}}, "/tasks/a/with/args"),
        ({"action": "sleep", "with": {}}, "/tasks/a/with"),
        (
            {"action": "sleep", "with": {"duration": "1s", "until": "2030-01-01T00:00:00Z"}},
            "/tasks/a/with",
        ),
        ({"action": "sleep", "with": {"duration": "a while"}}, "/tasks/a/with/duration"),
    ],
)
def test_arguments_that_do_not_fit_the_action_are_reported(
    task: dict[str, Any], pointer: str
) -> None:
    assert pointers(workflow({"a": task})) == [pointer]


def test_echo_accepts_any_arguments() -> None:
    raw = workflow({"a": echo(with_={"anything": [1, {"x": None}], "n": 2})})
    assert parse_definition(raw).tasks["a"].with_ == {"anything": [1, {"x": None}], "n": 2}


@pytest.mark.parametrize(
    "task",
    [
        {"action": "command", "with": {"argv": "${{ params.p }}"}},
        {"action": "command", "with": {"argv": ["ls", "${{ params.p }}"]}},
        {"action": "command", "with": {"argv": ["ls"], "env": "${{ params.p }}"}},
        {"action": "command", "with": {"argv": ["ls"], "ok_exit_codes": ["${{ params.p }}"]}},
        {"action": "command", "with": {"argv": ["ls"], "tail_bytes": "n=${{ params.p }}"}},
        {"action": "http", "with": {"url": "${{ params.p }}"}},
        {"action": "http", "with": {"url": "https://${{ params.p }}/hook"}},
        {"action": "http", "with": {"url": "https://x.io", "method": "${{ params.p }}"}},
        {"action": "http", "with": {"url": "https://x.io", "timeout": "${{ params.p }}"}},
        {"action": "python", "with": {"function": "${{ params.p }}", "args": "${{ params.p }}"}},
        {"action": "sleep", "with": {"duration": "${{ params.p }}"}},
        {"action": "sleep", "with": {"until": "${{ params.p }}"}},
    ],
)
def test_fields_holding_expressions_are_not_type_checked(task: dict[str, Any]) -> None:
    raw = workflow({"a": task}, parameters={"p": {}})
    assert parse_definition(raw).tasks["a"].with_ == task["with"]


def test_required_arguments_are_reported_even_beside_expressions() -> None:
    task = {"action": "http", "with": {"method": "${{ params.p }}"}}
    raw = workflow({"a": task}, parameters={"p": {}})

    assert [(d.pointer, d.reason) for d in problems(raw)] == [
        ("/tasks/a/with/url", "Field required")
    ]


def test_unknown_argument_keys_are_reported_even_when_holding_an_expression() -> None:
    task = {"action": "command", "with": {"argv": ["ls"], "bogus": "${{ params.p }}"}}
    raw = workflow({"a": task}, parameters={"p": {}})

    assert pointers(raw) == ["/tasks/a/with/bogus"]


# --- the graph ------------------------------------------------------------------------------


def test_cycle_is_reported_with_its_path() -> None:
    raw = workflow({"a": echo(needs=["c"]), "b": echo(needs=["a"]), "c": echo(needs=["b"])})

    [detail] = problems(raw)
    assert detail.pointer == "/tasks/a/needs"
    assert detail.reason == "dependency cycle: a -> c -> b -> a"


def test_two_task_cycle_is_reported_behind_a_valid_prefix() -> None:
    raw = workflow({"start": echo(), "x": echo(needs=["start", "y"]), "y": echo(needs=["x"])})

    [detail] = problems(raw)
    assert detail.pointer == "/tasks/x/needs"
    assert detail.reason == "dependency cycle: x -> y -> x"


def test_self_dependency_is_reported_and_not_as_a_cycle() -> None:
    [detail] = problems(workflow({"a": echo(needs=["a"])}))

    assert detail.pointer == "/tasks/a/needs/0"
    assert detail.reason == "task 'a' cannot need itself"


def test_unknown_need_is_reported_at_its_index() -> None:
    [detail] = problems(workflow({"a": echo(), "b": echo(needs=["a", "ghost"])}))

    assert detail.pointer == "/tasks/b/needs/1"
    assert detail.reason == "unknown task 'ghost'"


def test_need_listed_twice_is_reported() -> None:
    [detail] = problems(workflow({"a": echo(), "b": echo(needs=["a", "a"])}))

    assert detail.pointer == "/tasks/b/needs/1"
    assert "'a' is listed twice" in detail.reason


def test_diamond_is_valid_and_ordered() -> None:
    raw = workflow(
        {
            "join": echo(needs=["left", "right"]),
            "left": echo(needs=["root"]),
            "right": echo(needs=["root"]),
            "root": echo(),
        }
    )
    definition = parse_definition(raw)

    order = definition.order
    assert order[0] == "root"
    assert order[-1] == "join"
    assert definition.dependants["root"] == ["left", "right"]


# --- references in expressions --------------------------------------------------------------


def test_unknown_parameter_in_an_expression_is_reported_at_its_field() -> None:
    task = echo(with_={"deep": [{"k": "x ${{ params.nope }}"}]})
    [detail] = problems(workflow({"a": task}, parameters={"p": {}}))

    assert detail.pointer == "/tasks/a/with/deep/0/k"
    assert "unknown parameter 'nope'" in detail.reason


def test_unknown_task_in_an_expression_is_reported() -> None:
    [detail] = problems(workflow({"a": echo(with_={"v": "${{ tasks.ghost.output }}"})}))

    assert detail.pointer == "/tasks/a/with/v"
    assert "unknown task 'ghost'" in detail.reason


def test_unknown_root_name_in_an_expression_is_reported() -> None:
    [detail] = problems(workflow({"a": echo(with_={"v": "${{ secrets.token }}"})}))

    assert detail.pointer == "/tasks/a/with/v"
    assert "unknown name 'secrets'" in detail.reason


def test_expression_that_does_not_parse_is_reported() -> None:
    [detail] = problems(workflow({"a": echo(with_={"v": "${{ 1 + }}"})}))

    assert detail.pointer == "/tasks/a/with/v"
    assert "does not parse" in detail.reason


def test_pointer_of_an_expression_escapes_the_key() -> None:
    [detail] = problems(workflow({"a": echo(with_={"a/b~c": "${{ params.nope }}"})}))

    assert detail.pointer == "/tasks/a/with/a~1b~0c"


@pytest.mark.parametrize(
    "expression",
    ["${{ tasks.a.output }}", "${{ tasks['a'].output.x }}", "n=${{ tasks.a.output | length }}"],
)
def test_using_output_without_needing_the_task_is_reported(expression: str) -> None:
    [detail] = problems(workflow({"a": echo(), "b": echo(with_={"v": expression})}))

    assert detail.pointer == "/tasks/b/with/v"
    assert "task 'a'" in detail.reason
    assert "not in 'needs'" in detail.reason


def test_using_its_own_output_is_reported() -> None:
    [detail] = problems(workflow({"a": echo(with_={"v": "${{ tasks.a.output }}"})}))

    assert "task 'a'" in detail.reason
    assert "not in 'needs'" in detail.reason


def test_using_output_of_a_transitive_dependency_is_allowed() -> None:
    raw = workflow(
        {
            "a": echo(),
            "b": echo(needs=["a"]),
            "c": echo(needs=["b"], with_={"v": "${{ tasks.a.output }}"}),
        }
    )
    assert parse_definition(raw).tasks["c"].needs == ["b"]


def test_using_output_of_a_dependant_is_reported() -> None:
    raw = workflow(
        {"a": echo(with_={"v": "${{ tasks.b.output }}"}), "b": echo(needs=["a"])},
    )
    [detail] = problems(raw)

    assert detail.pointer == "/tasks/a/with/v"
    assert "not in 'needs'" in detail.reason


def test_cycle_elsewhere_does_not_hide_a_missing_need() -> None:
    raw = workflow(
        {
            "a": echo(),
            "b": echo(with_={"v": "${{ tasks.a.output }}"}),
            "c": echo(needs=["c"]),
        }
    )
    assert set(pointers(raw)) == {"/tasks/b/with/v", "/tasks/c/needs/0"}


def test_outputs_may_use_any_task_and_parameter() -> None:
    raw = workflow(
        {"a": echo(), "b": echo()},
        parameters={"p": {}},
        outputs={"x": "${{ tasks.a.output }}", "y": ["${{ tasks.b.output }}", "${{ params.p }}"]},
    )
    assert parse_definition(raw).outputs["y"] == ["${{ tasks.b.output }}", "${{ params.p }}"]


def test_outputs_referring_to_unknown_names_are_reported() -> None:
    raw = workflow(
        {"a": echo()},
        outputs={"x": "${{ tasks.nope.output }}", "y": {"z": "${{ params.nope }}"}},
    )
    details = problems(raw)

    assert [d.pointer for d in details] == ["/outputs/x", "/outputs/y/z"]
    assert "unknown task 'nope'" in details[0].reason
    assert "unknown parameter 'nope'" in details[1].reason


def test_execution_is_a_known_root() -> None:
    raw = workflow({"a": echo(with_={"id": "${{ execution.id }}"})})
    assert parse_definition(raw).tasks["a"].with_ == {"id": "${{ execution.id }}"}


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "pointer"),
    [
        ("string", "/parameters/p"),
        ({"type": "float"}, "/parameters/p/type"),
        ({"type": "integer", "default": "3"}, "/parameters/p/default"),
        ({"type": "integer", "default": True}, "/parameters/p/default"),
        ({"type": "integer", "default": 1.5}, "/parameters/p/default"),
        ({"type": "number", "default": False}, "/parameters/p/default"),
        ({"type": "boolean", "default": 0}, "/parameters/p/default"),
        ({"type": "array", "default": {}}, "/parameters/p/default"),
        ({"type": "object", "default": []}, "/parameters/p/default"),
        ({"enum": []}, "/parameters/p/enum"),
        ({"enum": ["a", 2]}, "/parameters/p/enum/1"),
        ({"enum": ["a", "b"], "default": "c"}, "/parameters/p/default"),
        ({"secret": "yes please"}, "/parameters/p/secret"),
        ({"hidden": True}, "/parameters/p/hidden"),
    ],
)
def test_bad_parameters_are_reported(spec: Any, pointer: str) -> None:
    assert pointers(workflow({"a": echo()}, parameters={"p": spec})) == [pointer]


def test_wrong_default_type_names_both_types() -> None:
    [detail] = problems(
        workflow({"a": echo()}, parameters={"p": {"type": "integer", "default": "3"}})
    )

    assert detail.reason == "expected integer, got string"


def test_default_not_in_enum_is_explained() -> None:
    spec = {"enum": ["a", "b"], "default": "c"}
    [detail] = problems(workflow({"a": echo()}, parameters={"p": spec}))

    assert "enum" in detail.reason


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"type": "number", "default": 1},
        {"type": "number", "default": 1.5},
        {"type": "integer", "default": 3, "enum": [1, 3]},
        {"type": "boolean", "default": False},
        {"type": "object", "default": {"k": [1]}},
        {"type": "string", "required": True, "secret": True, "description": "d"},
    ],
)
def test_good_parameters_validate(spec: dict[str, Any]) -> None:
    definition = parse_definition(workflow({"a": echo()}, parameters={"p": spec}))
    assert definition.parameters["p"].default == spec.get("default")


# --- every problem at once ------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        "name": "not valid!",
        "parameters": {
            "bad-name": {},
            "n": {"type": "integer", "default": "x"},
        },
        "tasks": {
            "cyc1": echo(needs=["cyc2"]),
            "cyc2": echo(needs=["cyc1"]),
            "self": echo(needs=["self"]),
            "lost": echo(needs=["ghost"]),
            "bad id": echo(),
            "unknown": {"action": "teleport"},
            "cmd": {"action": "command", "with": {"cwd": "/"}},
            "web": {"action": "http", "with": {"url": "nope", "extra": 1}},
            "refs": echo(with_={"p": "${{ params.missing }}", "t": "${{ tasks.nowhere.x }}"}),
        },
        "outputs": {"o": "${{ params.also_missing }}"},
    }
    found = {(d.pointer, d.reason.split(":")[0]) for d in problems(raw)}
    expected_pointers = {
        "/name",
        "/parameters/bad-name",
        "/parameters/n/default",
        "/tasks/cyc1/needs",
        "/tasks/self/needs/0",
        "/tasks/lost/needs/0",
        "/tasks/bad id",
        "/tasks/unknown/action",
        "/tasks/cmd/with/argv",
        "/tasks/web/with/url",
        "/tasks/web/with/extra",
        "/tasks/refs/with/p",
        "/tasks/refs/with/t",
        "/outputs/o",
    }

    assert {pointer for pointer, _ in found} == expected_pointers
    assert ("/tasks/cyc1/needs", "dependency cycle") in found


def test_all_problems_are_details_with_pointer_and_reason() -> None:
    raw = workflow({"a": {"action": "nope", "needs": ["a"]}, "b": echo(needs=["zz"])})
    details = problems(raw)

    assert len(details) == 3
    for detail in details:
        assert detail.pointer.startswith("/")
        assert detail.reason
        assert detail.as_dict() == {"pointer": detail.pointer, "reason": detail.reason}


# --- resolve_inputs -------------------------------------------------------------------------


def test_inputs_are_resolved_with_defaults() -> None:
    definition = parse_definition(example())

    assert resolve_inputs(definition, {"object": "cat.png"}) == {
        "object": "cat.png",
        "sizes": [64, 256],
        "api_key": None,
    }


def test_given_values_win_over_defaults() -> None:
    definition = parse_definition(example())

    resolved = resolve_inputs(definition, {"object": "o", "sizes": [1], "api_key": "k"})

    assert resolved == {"object": "o", "sizes": [1], "api_key": "k"}


def test_null_counts_as_not_given() -> None:
    definition = parse_definition(example())

    assert resolve_inputs(definition, {"object": "o", "sizes": None})["sizes"] == [64, 256]
    [detail] = input_problems(definition, {"object": None})
    assert (detail.pointer, detail.reason) == ("/inputs/object", "a value is required")


@pytest.mark.parametrize("inputs", [None, {}])
def test_missing_required_value_is_reported(inputs: dict[str, Any] | None) -> None:
    [detail] = input_problems(parse_definition(example()), inputs)

    assert detail.pointer == "/inputs/object"
    assert detail.reason == "a value is required"


def test_required_parameter_with_a_default_takes_the_default() -> None:
    raw = workflow({"a": echo()}, parameters={"p": {"required": True, "default": "d"}})
    assert resolve_inputs(parse_definition(raw), {}) == {"p": "d"}


def _typed(kind: str, **spec: Any) -> Definition:
    return parse_definition(workflow({"a": echo()}, parameters={"p": {"type": kind, **spec}}))


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("string", ""),
        ("integer", 0),
        ("integer", -7),
        ("number", 3),
        ("number", 2.5),
        ("boolean", False),
        ("object", {}),
        ("array", [1, "a"]),
    ],
)
def test_values_of_the_right_type_are_kept(kind: str, value: Any) -> None:
    resolved = resolve_inputs(_typed(kind), {"p": value})
    assert resolved == {"p": value}
    assert type(resolved["p"]) is type(value)


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("integer", True, "expected integer, got boolean"),
        ("integer", 1.5, "expected integer, got number"),
        ("integer", "1", "expected integer, got string"),
        ("number", False, "expected number, got boolean"),
        ("number", "1.5", "expected number, got string"),
        ("boolean", 1, "expected boolean, got integer"),
        ("boolean", "true", "expected boolean, got string"),
        ("string", 5, "expected string, got integer"),
        ("string", [], "expected string, got array"),
        ("array", {}, "expected array, got object"),
        ("object", [], "expected object, got array"),
    ],
)
def test_wrong_types_are_reported(kind: str, value: Any, reason: str) -> None:
    [detail] = input_problems(_typed(kind), {"p": value})

    assert (detail.pointer, detail.reason) == ("/inputs/p", reason)


@pytest.mark.parametrize(
    ("kind", "choices", "value", "ok"),
    [
        ("string", ["small", "large"], "small", True),
        ("string", ["small", "large"], "medium", False),
        ("integer", [1, 2], 2, True),
        ("integer", [1, 2], 3, False),
        ("number", [1.5, 2], 2, True),
        ("number", [1.5, 2], 1, False),
    ],
)
def test_enum_is_enforced(kind: str, choices: list[Any], value: Any, ok: bool) -> None:
    definition = _typed(kind, enum=choices)
    if ok:
        assert resolve_inputs(definition, {"p": value}) == {"p": value}
    else:
        [detail] = input_problems(definition, {"p": value})
        assert detail.pointer == "/inputs/p"
        assert detail.reason == f"must be one of {json.dumps(choices)}"


def test_unknown_input_is_reported() -> None:
    definition = parse_definition(example())

    [detail] = input_problems(definition, {"object": "o", "colour": "red"})

    assert detail.pointer == "/inputs/colour"
    assert "unknown parameter 'colour'" in detail.reason


def test_every_input_problem_is_reported_at_once() -> None:
    raw = workflow(
        {"a": echo()},
        parameters={
            "req": {"required": True},
            "count": {"type": "integer"},
            "size": {"enum": ["s", "m"]},
            "ok": {"type": "boolean", "default": True},
        },
    )
    details = input_problems(
        parse_definition(raw), {"count": True, "size": "xl", "extra": 1, "more/x": 2}
    )

    assert sorted(d.pointer for d in details) == [
        "/inputs/count",
        "/inputs/extra",
        "/inputs/more~1x",
        "/inputs/req",
        "/inputs/size",
    ]


# --- mask_secrets ---------------------------------------------------------------------------


def test_secrets_are_masked_for_display() -> None:
    definition = parse_definition(example())
    values = {"object": "o", "sizes": [1], "api_key": "hunter2"}

    assert mask_secrets(definition, values) == {
        "object": "o",
        "sizes": [1],
        "api_key": SECRET_MASK,
    }
    assert values["api_key"] == "hunter2", "the values themselves are not changed"
    assert "hunter2" not in SECRET_MASK


def test_absent_secret_is_shown_as_absent() -> None:
    definition = parse_definition(example())
    assert mask_secrets(definition, {"api_key": None}) == {"api_key": None}


@pytest.mark.parametrize("value", ["", 0, False, [], {"k": "v"}])
def test_falsy_or_structured_secrets_are_masked(value: Any) -> None:
    raw = workflow({"a": echo()}, parameters={"s": {"type": "string", "secret": True}})
    assert mask_secrets(parse_definition(raw), {"s": value}) == {"s": SECRET_MASK}


def test_nothing_is_masked_without_secret_parameters() -> None:
    definition = parse_definition(workflow({"a": echo()}, parameters={"p": {}}))
    assert mask_secrets(definition, {"p": "visible"}) == {"p": "visible"}


# --- what the engine would only find at run time --------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "outputs", "pointer"),
    [
        ({"a": echo(with_={"x": "${{ params.x | nosuchfilter }}"})}, {}, "/tasks/a/with/x"),
        ({"a": echo(with_={"x": ["${{ params.x is nosuchtest }}"]})}, {}, "/tasks/a/with/x/0"),
        ({"a": echo(for_each="${{ params.x | nosuchfilter }}")}, {}, "/tasks/a/for_each"),
        (
            {"a": echo(store={"name": "m", "key": "${{ output | nosuchfilter }}"})},
            {},
            "/tasks/a/store/key",
        ),
        ({"a": echo()}, {"o": "n=${{ params.x | nosuchfilter }}"}, "/outputs/o"),
    ],
)
def test_unknown_filters_and_tests_are_refused_with_their_pointer(
    tasks: dict[str, Any], outputs: dict[str, Any], pointer: str
) -> None:
    raw = workflow(tasks, outputs=outputs, parameters={"x": {}}, stores={"m": {"type": "map"}})

    [detail] = problems(raw)

    assert detail.pointer == pointer
    assert "does not compile" in detail.reason and "No " in detail.reason


def test_every_bad_expression_is_reported_at_once() -> None:
    raw = workflow(
        {
            "a": echo(with_={"x": "${{ 7 ** (10 ** 7) }}", "y": "${{ 1 | nosuch }}"}),
            "b": {"action": "sleep", "with": {"duration": "99999999999999999999d"}},
        },
        outputs={"o": "${{ 'a' * 10 ** 7 }}"},
    )

    started = time.perf_counter()
    found = problems(raw)
    elapsed = time.perf_counter() - started

    assert sorted(d.pointer for d in found) == [
        "/outputs/o",
        "/tasks/a/with/x",
        "/tasks/a/with/y",
        "/tasks/b/with/duration",
    ]
    assert elapsed < 0.2
    reasons = {d.pointer: d.reason for d in found}
    assert "bits" in reasons["/tasks/a/with/x"]
    assert "repeating" in reasons["/outputs/o"]


def test_a_constant_expression_that_fails_is_refused() -> None:
    [detail] = problems(workflow({"a": echo(with_={"x": "${{ 1 // 0 }}"})}))

    assert detail.pointer == "/tasks/a/with/x"
    assert "division" in detail.reason


def test_a_parsed_definition_has_its_renderers_ready() -> None:
    definition = parse_definition(
        workflow({"a": echo(with_={"x": "${{ params.x ~ '!' }}"})}, parameters={"x": {}})
    )

    assert "renderers" in vars(definition)
    assert definition.renderers["a"]({"params": {"x": "hi"}}) == {"x": "hi!"}


# --- RetryPolicy.delay ----------------------------------------------------------------------


def test_delays_grow_geometrically_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=1.0, multiplier=3.0, max_delay=20.0)

    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 3.0, 9.0, 20.0, 20.0, None]


def test_constant_delay_with_multiplier_one() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=5.0, multiplier=1.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [5.0, 5.0, 5.0]


@pytest.mark.parametrize("failed", [1, 2, 10])
def test_no_retry_by_default(failed: int) -> None:
    assert NO_RETRY.max_attempts == 1
    assert NO_RETRY.delay(failed) is None


@pytest.mark.parametrize(("failed", "delay"), [(2, 4.0), (3, None), (4, None)])
def test_delay_is_none_once_attempts_are_used_up(failed: int, delay: float | None) -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=2.0, multiplier=2.0)
    assert policy.delay(failed) == delay


def test_initial_delay_larger_than_the_cap_is_capped() -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay=60.0, max_delay=10.0)
    assert policy.delay(1) == 10.0


def test_retry_policy_accepts_duration_strings() -> None:
    policy = RetryPolicy.model_validate({"initial_delay": "250ms", "max_delay": "1m30s"})

    assert policy.initial_delay == 0.25
    assert policy.max_delay == 90.0


def test_delays_never_overflow_whatever_the_attempt() -> None:
    policy = RetryPolicy(max_attempts=100, initial_delay="400d", multiplier=10.0, max_delay="400d")

    assert [policy.delay(n) for n in (1, 50, 99)] == [MAX_DURATION] * 3
    assert RetryPolicy(max_attempts=100, multiplier=10.0).delay(10**6) is None
    assert (
        RetryPolicy.model_construct(
            max_attempts=10**6, initial_delay=1.0, multiplier=10.0, max_delay=60.0
        ).delay(10**5)
        == 60.0
    )


@pytest.mark.parametrize(
    ("task", "pointer"),
    [
        (echo(timeout="99999999999999999999d"), "/tasks/a/timeout"),
        (echo(retry={"initial_delay": "401d"}), "/tasks/a/retry/initial_delay"),
        (echo(retry={"max_delay": 1e300}), "/tasks/a/retry/max_delay"),
        (
            {"action": "sleep", "with": {"duration": "99999999999999999999d"}},
            "/tasks/a/with/duration",
        ),
        ({"action": "signal", "with": {"name": "ok", "timeout": "500d"}}, "/tasks/a/with/timeout"),
        (
            {"action": "http", "with": {"url": "https://example.com", "timeout": "1000d"}},
            "/tasks/a/with/timeout",
        ),
    ],
)
def test_durations_beyond_the_maximum_are_refused_at_the_door(
    task: dict[str, Any], pointer: str
) -> None:
    [detail] = problems(workflow({"a": task}))

    assert detail.pointer == pointer
    assert "at most 400d" in detail.reason


@pytest.mark.parametrize("until", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_sleep_until_a_time_outside_the_calendar_in_utc_is_refused(until: str) -> None:
    [detail] = problems(workflow({"a": {"action": "sleep", "with": {"until": until}}}))

    assert detail.pointer == "/tasks/a/with/until"


def test_a_sleep_until_a_far_time_wakes_then() -> None:
    definition = parse_definition(
        workflow({"a": {"action": "sleep", "with": {"until": "9999-12-31T23:59:59Z"}}})
    )
    args = SleepArgs.model_validate(definition.tasks["a"].with_)

    assert wake_at(args, datetime.now(UTC)).year == 9999


# schedules ---------------------------------------------------------------------------------


def test_schedules_are_parsed_with_their_inputs() -> None:
    raw = workflow(
        {"a": echo()},
        parameters={"day": {"type": "string", "required": True}},
        schedules=[
            {
                "name": "nightly",
                "cron": "0 2 * * *",
                "timezone": "Europe/Berlin",
                "inputs": {"day": "x"},
            },
            {"name": "hourly", "cron": "@hourly", "inputs": {"day": "y"}, "missed": "catch_up"},
        ],
    )
    definition = parse_definition(raw)
    assert [s.name for s in definition.schedules] == ["nightly", "hourly"]
    assert definition.schedules[0].timezone == "Europe/Berlin"


def test_every_schedule_problem_is_reported_with_its_pointer() -> None:
    raw = workflow(
        {"a": echo()},
        parameters={"day": {"type": "string", "required": True}},
        schedules=[
            {"name": "one", "cron": "61 * * * *", "inputs": {"day": "x"}},
            {
                "name": "two",
                "cron": "0 * * * *",
                "timezone": "Mars/Olympus",
                "inputs": {"day": "x"},
            },
            {"name": "one", "cron": "0 * * * *", "inputs": {"day": 3, "extra": 1}},
            {"cron": "0 * * * *"},
        ],
    )
    found = {d.pointer for d in problems(raw)}
    assert found == {
        "/schedules/0/cron",
        "/schedules/1/timezone",
        "/schedules/2/name",
        "/schedules/2/inputs/day",
        "/schedules/2/inputs/extra",
        "/schedules/3/name",
    }


# --- inputs that would make a duration out of range ------------------------------------------


def waits(action: str, field: str, source: str) -> Definition:
    args = {"name": "go"} if action == "signal" else {}
    if action == "http":
        args = {"url": "https://example.com"}
    task = {"action": action, "with": {**args, field: source}}
    return parse_definition(workflow({"a": task}, parameters={"wait": {}, "n": {"type": "number"}}))


@pytest.mark.parametrize(
    ("action", "field"), [("sleep", "duration"), ("signal", "timeout"), ("http", "timeout")]
)
@pytest.mark.parametrize("wait", ["99999999999999999999d", "401d", "soon"])
def test_an_input_making_a_duration_out_of_range_fails_the_start(
    action: str, field: str, wait: str
) -> None:
    definition = waits(action, field, "${{ params.wait }}")

    [detail] = input_problems(definition, {"wait": wait})

    assert detail.pointer == "/inputs/wait"
    assert f"/tasks/a/with/{field}" in detail.reason
    assert resolve_inputs(definition, {"wait": "400d"}) == {"wait": "400d", "n": None}


def test_an_expression_over_parameters_is_checked_with_the_inputs() -> None:
    definition = waits("sleep", "duration", "${{ params.n * 86400 }}")

    [detail] = input_problems(definition, {"n": 401})

    assert detail.pointer == "/inputs/n"
    assert "at most 400d" in detail.reason
    assert resolve_inputs(definition, {"n": 2})["n"] == 2


def test_a_workflow_without_such_durations_has_no_input_checks() -> None:
    definition = parse_definition(
        workflow({"a": echo(with_={"d": "${{ params.wait }}"})}, parameters={"wait": {}})
    )

    assert definition.input_checks == ()
    assert resolve_inputs(definition, {"wait": "99999999999999999999d"})
