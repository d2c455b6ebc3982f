"""Fair shares of the worker pool between projects: who holds a slot, who waits, who is next.

Pure bookkeeping, no I/O: the engine's queue (`queue.py`) asks it which waiting attempt
takes the next free slot. The rules, each for a reason:

- A free slot goes to the waiting project that holds the fewest slots, and among equals to
  the one served least recently (round-robin). So a project with one task waiting is next,
  however many another has queued: it waits for the first slot to free, never behind the
  other's backlog.
- A project holds at most its share, max(1, floor(share * slots)), while another project uses
  the pool (holds a slot or waits for one), unless every other project using the pool is
  waiting too: then the slot goes out anyway. So a project that runs something keeps room
  for its next task instead of seeing every freed slot refilled by a busier project, and
  a pool with work waiting never idles only because every waiting project is at its share.
- A project alone on the pool may use every slot (work-conserving): nobody is kept waiting
  for a project that has nothing to run.

Fairness cannot take a slot back: a project that filled the pool while alone keeps its slots
until those tasks end (no running task is stopped); the next free one goes to the newcomer.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

W = TypeVar("W")


class PoolShares(Generic[W]):
    """The slots of one pool: held by attempts (by key), promised to attempts about to
    start, and the waiters of each project in the order they came."""

    def __init__(self, slots: int, share: float = 1.0) -> None:
        if slots < 1:
            raise ValueError("a pool has at least one slot")
        if not 0 < share <= 1:
            raise ValueError("a share is more than 0 and at most 1")
        self.slots = slots
        self.cap = max(1, math.floor(share * slots + 1e-9))
        self._held: dict[Hashable, str] = {}
        self._using: Counter[str] = Counter()  # held + promised, per project
        self._promised: Counter[str] = Counter()
        self._waiting: dict[str, deque[W]] = {}
        self._served: dict[str, int] = {}  # when each project was last handed a slot
        self._turn = 0

    # slots -------------------------------------------------------------------------

    def free(self) -> int:
        return self.slots - len(self._held) - self._promised.total()

    def using(self, project: str) -> int:
        """Slots the project holds or was promised."""
        return self._using[project]

    def promise(self, project: str) -> None:
        """A slot for an attempt that starts once its tick is written (see `forget_promises`)."""
        self._promised[project] += 1
        self._using[project] += 1

    def forget_promises(self) -> None:
        """A new tick: last tick's promises became holds (or were never written)."""
        self._using.subtract(self._promised)
        self._promised.clear()
        self._using = +self._using

    def hold(self, key: Hashable, project: str) -> None:
        """An attempt handed to a worker holds a slot until `release`."""
        if key not in self._held:
            self._held[key] = project
            self._using[project] += 1

    def release(self, key: Hashable) -> None:
        project = self._held.pop(key, None)
        if project is not None:
            self._using[project] -= 1
            if self._using[project] <= 0:
                del self._using[project]

    # waiters -------------------------------------------------------------------------

    def push(self, project: str, waiter: W) -> None:
        """Wait behind the project's earlier waiters."""
        self._waiting.setdefault(project, deque()).append(waiter)

    def push_front(self, project: str, waiters: list[W]) -> None:
        """Put waiters back at the head of their project's line, in their order."""
        if waiters:
            self._waiting.setdefault(project, deque()).extendleft(reversed(waiters))

    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def __iter__(self) -> Iterator[W]:
        for line in self._waiting.values():
            yield from line

    def next(self) -> tuple[str, W] | None:
        """The waiter that takes the next free slot, taken off its line; None when no slot is
        free or no waiting project may take one now."""
        if self.free() <= 0:
            return None
        lines = {p: q for p, q in self._waiting.items() if q}
        if not lines:
            self._waiting.clear()
            return None
        # projects using the pool without waiting: a share is kept for their next task
        running = any(p not in lines for p in self._using)
        best: str | None = None
        for project in lines:
            if running and self._using[project] >= self.cap:
                continue
            if best is None or self._rank(project) < self._rank(best):
                best = project
        if best is None:
            return None
        self._turn += 1
        self._served[best] = self._turn
        waiter = lines[best].popleft()
        if not lines[best]:
            del self._waiting[best]
        return best, waiter

    def _rank(self, project: str) -> tuple[int, int]:
        return self._using[project], self._served.get(project, 0)
