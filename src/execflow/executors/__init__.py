"""Where task runs execute: the local worker pool (and, later, remote workers)."""

from __future__ import annotations

from execflow.executors.local import LocalExecutor, Outcome, TaskLog

__all__ = ["LocalExecutor", "Outcome", "TaskLog"]
