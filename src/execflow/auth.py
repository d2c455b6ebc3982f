"""Roles and the privileges they grant: one table, used by every entry point."""

from __future__ import annotations

import enum

from execflow.errors import PermissionDenied
from execflow.records import Principal


class Privilege(enum.StrEnum):
    VIEW = "view"
    SCHEDULE_EXECUTIONS = "schedule_executions"
    MANAGE_EXECUTIONS = "manage_executions"
    MANAGE_WORKFLOWS = "manage_workflows"
    ADMIN = "admin"


_P = Privilege
ROLE_PRIVILEGES: dict[str, frozenset[Privilege]] = {
    "viewer": frozenset({_P.VIEW}),
    "operator": frozenset(
        {_P.VIEW, _P.SCHEDULE_EXECUTIONS, _P.MANAGE_EXECUTIONS, _P.MANAGE_WORKFLOWS}
    ),
    "admin": frozenset(_P),
}

# Admins of this project may also administer every other project (create tokens there).
SYSTEM_PROJECT = "default"


def require(principal: Principal, privilege: Privilege) -> None:
    if privilege not in ROLE_PRIVILEGES.get(principal.role, frozenset()):
        raise PermissionDenied(f"role {principal.role!r} lacks the {privilege.value!r} privilege")
