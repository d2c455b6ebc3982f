"""Pure graph helpers over a task dependency map (task id -> ids it needs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one dependency cycle as a path (first id repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(needs, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for dep in needs.get(node, ()):
            if dep not in colour:
                continue
            if colour[dep] == grey:
                return [*stack[stack.index(dep) :], dep]
            if colour[dep] == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in needs:
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def upstream(needs: Mapping[str, Sequence[str]], task: str) -> set[str]:
    """Every task that `task` depends on, directly or not."""
    seen: set[str] = set()
    todo = list(needs.get(task, ()))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(needs.get(dep, ()))
    return seen


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Tasks ordered so that each comes after what it needs (stable for the input order)."""
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(needs)
    while remaining:
        progressed = False
        for task in list(remaining):
            if all(dep in placed for dep in needs[task]):
                order.append(task)
                placed.add(task)
                remaining.remove(task)
                progressed = True
        if not progressed:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
    return order


def downstream(needs: Mapping[str, Sequence[str]], task: str) -> set[str]:
    """Every task that depends on `task`, directly or not."""
    dependants: dict[str, list[str]] = {t: [] for t in needs}
    for t, deps in needs.items():
        for d in deps:
            dependants.setdefault(d, []).append(t)
    seen: set[str] = set()
    todo = list(dependants.get(task, ()))
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo.extend(dependants.get(t, ()))
    return seen
