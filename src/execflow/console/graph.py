"""What the execution page draws: the DAG with each task's state, and the timeline."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from execflow.api.schemas import TaskRunPublic
from execflow.definition import Definition

NOT_STARTED = "PENDING"
ROW = 24  # pixels per timeline row
WIDTH = 1000  # the timeline's width in its own units (the SVG scales it)


def task_states(runs: list[TaskRunPublic]) -> dict[str, str]:
    """Each task's state: that of its latest attempt (runs come oldest first)."""
    return {r.task: r.state.value for r in runs if r.item is None}


def dag_json(definition: Definition, states: dict[str, str]) -> str:
    """The graph as JSON for the page's layout script (dagre): nodes with states, edges."""
    nodes = [
        {"id": tid, "action": task.action, "state": states.get(tid, NOT_STARTED)}
        for tid, task in definition.tasks.items()
    ]
    edges = [[need, tid] for tid, task in definition.tasks.items() for need in task.needs]
    return json.dumps({"nodes": nodes, "edges": edges}, separators=(",", ":"))


def key_of(text: str) -> str:
    """A short digest of what a part shows, to tell whether it changed."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Bar:
    label: str
    state: str
    y: int
    x: float
    width: float
    title: str


def timeline(runs: list[TaskRunPublic], now: datetime) -> tuple[list[Bar], int]:
    """A bar per attempt (queued to ended, or now), on a scale from the first to the last
    moment; and the height of the drawing."""
    timed = [r for r in runs if r.queued_at or r.started_at]
    if not timed:
        return [], 0
    start = min(r.started_at or r.queued_at or now for r in timed)
    end = max([r.ended_at or now for r in timed] + [start])
    span = max((end - start).total_seconds(), 0.001)
    bars = []
    for row, r in enumerate(timed):
        begin = r.started_at or r.queued_at or now
        finish = r.ended_at or now
        x = (begin - start).total_seconds() / span * WIDTH
        width = max((finish - begin).total_seconds() / span * WIDTH, 2.0)
        label = r.task + (f"[{r.item}]" if r.item is not None else "") + f" #{r.attempt}"
        took = f"{(finish - begin).total_seconds():.3f} s"
        title = f"{label}: {r.state.value}, {took}" + (f" (round {r.round})" if r.round else "")
        bars.append(Bar(label, r.state.value, row * ROW, x, min(width, WIDTH - x), title))
    return bars, len(timed) * ROW
