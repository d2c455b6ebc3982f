"""Graph helpers over a task dependency map."""

from __future__ import annotations

import itertools

import pytest

from execflow.dag import downstream, find_cycle, topological_order, upstream

DIAMOND: dict[str, list[str]] = {
    "root": [],
    "left": ["root"],
    "right": ["root"],
    "join": ["left", "right"],
    "side": [],
}


def _respects(order: list[str], needs: dict[str, list[str]]) -> bool:
    position = {task: i for i, task in enumerate(order)}
    return all(position[dep] < position[task] for task, deps in needs.items() for dep in deps)


# --- find_cycle -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "needs",
    [{}, {"a": []}, DIAMOND, {"a": ["b"], "b": ["c"], "c": []}, {"a": ["ghost"]}],
)
def test_acyclic_graphs_have_no_cycle(needs: dict[str, list[str]]) -> None:
    assert find_cycle(needs) is None


@pytest.mark.parametrize(
    ("needs", "cycle"),
    [
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, ["a", "c", "b", "a"]),
        ({"start": [], "x": ["start", "y"], "y": ["x"]}, ["x", "y", "x"]),
        ({"a": ["b"], "b": ["c"], "c": ["d"], "d": ["b"]}, ["b", "c", "d", "b"]),
    ],
)
def test_cycle_is_returned_as_a_closed_path(needs: dict[str, list[str]], cycle: list[str]) -> None:
    assert find_cycle(needs) == cycle


def test_every_step_of_a_found_cycle_is_a_dependency() -> None:
    needs = {**DIAMOND, "root": ["join"]}

    cycle = find_cycle(needs)

    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert all(b in needs[a] for a, b in itertools.pairwise(cycle))


def test_unknown_dependencies_are_ignored_when_looking_for_cycles() -> None:
    assert find_cycle({"a": ["ghost"], "b": ["a", "other"]}) is None


# --- upstream / downstream ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "expected"),
    [("root", set()), ("left", {"root"}), ("join", {"left", "right", "root"}), ("side", set())],
)
def test_upstream_is_transitive(task: str, expected: set[str]) -> None:
    assert upstream(DIAMOND, task) == expected


@pytest.mark.parametrize(
    ("task", "expected"),
    [("root", {"left", "right", "join"}), ("left", {"join"}), ("join", set()), ("side", set())],
)
def test_downstream_is_transitive(task: str, expected: set[str]) -> None:
    assert downstream(DIAMOND, task) == expected


def test_upstream_and_downstream_of_an_unknown_task_are_empty() -> None:
    assert upstream(DIAMOND, "ghost") == set()
    assert downstream(DIAMOND, "ghost") == set()


def test_upstream_and_downstream_terminate_on_a_cycle() -> None:
    needs = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}

    assert upstream(needs, "d") == {"a", "b", "c"}
    assert downstream(needs, "a") == {"a", "b", "c", "d"}


def test_upstream_follows_dependencies_outside_the_map() -> None:
    assert upstream({"a": ["ghost"]}, "a") == {"ghost"}


# --- topological_order ----------------------------------------------------------------------


def test_order_puts_dependencies_first() -> None:
    order = topological_order(DIAMOND)

    assert sorted(order) == sorted(DIAMOND)
    assert _respects(order, DIAMOND)


def test_order_is_stable_for_the_input_order() -> None:
    assert topological_order(DIAMOND) == ["root", "left", "right", "join", "side"]
    assert topological_order({"b": [], "a": []}) == ["b", "a"]


def test_order_of_a_reversed_chain() -> None:
    needs = {"c": ["b"], "b": ["a"], "a": []}
    assert topological_order(needs) == ["a", "b", "c"]


def test_order_of_an_empty_graph_is_empty() -> None:
    assert topological_order({}) == []


@pytest.mark.parametrize(
    ("needs", "named"),
    [
        ({"a": ["b"], "b": ["a"], "c": []}, "['a', 'b']"),
        ({"a": ["a"]}, "['a']"),
    ],
)
def test_order_of_a_cycle_is_refused(needs: dict[str, list[str]], named: str) -> None:
    with pytest.raises(ValueError, match="dependency cycle") as caught:
        topological_order(needs)
    assert named in str(caught.value)
