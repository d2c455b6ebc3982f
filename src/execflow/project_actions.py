"""Which actions a project may use.

Whoever may store a workflow with a code action (`python`, `command`) runs code on the
workers. So that is a project setting, which admins of the default project set: `default`
may use every action, a project created later only the actions that run no code of its
own until an admin allows more. A project's setting travels with each of its principals
(read with the credential, at no extra query), and a workflow that uses an action its
project may not use is refused when stored, and when started.
"""

from __future__ import annotations

from collections.abc import Iterable

from execflow.actions import ACTIONS, Placement
from execflow.definition import Definition
from execflow.errors import Detail, InvalidInput, PermissionDenied
from execflow.records import Principal

# the actions that run code a workflow brings: on the workers
CODE_ACTIONS = frozenset(name for name, a in ACTIONS.items() if a.placement is Placement.POOL)
# what a new project may use until an admin of `default` says otherwise
DEFAULT_ACTIONS = tuple(sorted(name for name in ACTIONS if name not in CODE_ACTIONS))


def parse_actions(names: Iterable[str] | None, pointer: str = "/actions") -> tuple[str, ...] | None:
    """A project's actions as given (None: every action, now and to come); InvalidInput
    naming an unknown one."""
    if names is None:
        return None
    given = list(names)
    unknown = [n for n in given if n not in ACTIONS]
    if unknown:
        known = ", ".join(sorted(ACTIONS))
        raise InvalidInput(
            details=[Detail(pointer, f"unknown action {n!r} (actions: {known})") for n in unknown]
        )
    return tuple(sorted(set(given)))


def require_actions(who: Principal, definition: Definition) -> None:
    """PermissionDenied naming every task whose action the caller's project may not use."""
    if who.actions is None:
        return
    allowed = who.actions
    refused = [
        Detail(
            f"/tasks/{name}/action",
            f"project {who.project_name!r} may not use the {task.action!r} action (it may use:"
            f" {', '.join(sorted(allowed)) or 'none'}; admins of the default project change"
            " that with `execflow project update`)",
        )
        for name, task in definition.tasks.items()
        if task.action not in allowed
    ]
    if refused:
        raise PermissionDenied("the workflow uses actions its project may not use", refused)
