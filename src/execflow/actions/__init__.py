"""The built-in actions, by name."""

from __future__ import annotations

from execflow.actions import command, echo, http, python, signal, sleep, subworkflow
from execflow.actions.base import Action, Args, Placement, Resources

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        echo.ACTION,
        python.ACTION,
        command.ACTION,
        http.ACTION,
        sleep.ACTION,
        signal.ACTION,
        subworkflow.ACTION,
    )
}

__all__ = ["ACTIONS", "Action", "Args", "Placement", "Resources"]
