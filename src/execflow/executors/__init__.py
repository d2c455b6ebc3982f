"""Where task runs execute: the local worker pool (and, later, remote workers)."""

from __future__ import annotations

from execflow.executors.local import LocalExecutor, NotStarted, Outcome, TaskLog

__all__ = ["LocalExecutor", "NotStarted", "Outcome", "TaskLog"]
