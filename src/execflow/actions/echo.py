"""`echo`: returns its arguments as its output (for tests, wiring and placeholders)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from execflow.actions.base import Action, Args, Placement, Resources


class EchoArgs(Args):
    model_config = ConfigDict(extra="allow", frozen=True)


async def run(args: EchoArgs, resources: Resources) -> Any:
    return args.model_extra or {}


ACTION = Action(
    "echo", EchoArgs, Placement.INLINE, "Return the arguments as the output", inline=run
)
