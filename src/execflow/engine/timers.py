"""The timers of the executions an engine holds, by due time."""

from __future__ import annotations

import heapq
from collections.abc import Container, Iterator
from datetime import datetime

Key = tuple[str, str, int]  # execution id, task id, attempt
Entry = tuple[datetime, int, str, Key]


class Timers:
    """A heap of (due time, kind, key). The timers of an execution the engine lets go of
    (it ended, was parked or dropped) stay where they are and are skipped when they come
    due; once they are most of the heap it is rebuilt, so that it holds about as many
    timers as the executions held have, whatever the engine held before."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = 0
        self._per_run: dict[str, int] = {}  # entries in the heap, by execution
        self._stale = 0  # entries of executions let go of, about

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._heap)

    def add(self, when: datetime, kind: str, key: Key) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, key))
        self._per_run[key[0]] = self._per_run.get(key[0], 0) + 1

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> tuple[str, Key] | None:
        """The next timer due at `now`, if any, removed."""
        if not self._heap or self._heap[0][0] > now:
            return None
        return self._pop()

    def _pop(self) -> tuple[str, Key]:
        _, _, kind, key = heapq.heappop(self._heap)
        left = self._per_run.get(key[0], 0) - 1
        if left > 0:
            self._per_run[key[0]] = left
        else:
            self._per_run.pop(key[0], None)
        return kind, key

    def let_go(self, run_id: str, held: Container[str]) -> None:
        """The engine no longer holds `run_id`: its timers are stale (see the class)."""
        self._stale += self._per_run.get(run_id, 0)
        if self._stale > max(64, len(self._heap) // 2):
            self._heap = [entry for entry in self._heap if entry[3][0] in held]
            heapq.heapify(self._heap)
            self._per_run = {}
            for entry in self._heap:
                self._per_run[entry[3][0]] = self._per_run.get(entry[3][0], 0) + 1
            self._stale = 0

    def skip_stale(self, held: Container[str]) -> None:
        """Drop the timers at the head that belong to executions not held."""
        while self._heap and self._heap[0][3][0] not in held:
            self._pop()
            self._stale = max(0, self._stale - 1)
