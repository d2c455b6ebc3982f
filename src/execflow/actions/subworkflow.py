"""`workflow`: start another workflow as a child execution and wait for it.

The child is an ordinary execution linked to its parent (`parent_id`,
`parent_task`), created in the same transaction that starts the task. Its
outputs become the task's output; its failure or cancellation, the task's
failure. Cancelling, suspending or failing the parent acts on the child. How deep
children nest and how many one start makes are bounded by the engine
(`engine/children.py`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from execflow.actions.base import Action, Args, Placement

WORKFLOW_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_DEPTH = 8  # how deep children may nest (a workflow may start itself, but not forever)


class WorkflowArgs(Args):
    workflow: str = Field(pattern=WORKFLOW_NAME)
    inputs: dict[str, Any] = Field(default_factory=dict)
    revision: int | None = Field(default=None, ge=1, description="Defaults to the latest")


ACTION = Action(
    "workflow", WorkflowArgs, Placement.CHILD, "Run another workflow as a child execution"
)
