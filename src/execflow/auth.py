"""Roles and the privileges they grant: one table, used by every entry point."""

from __future__ import annotations

import enum

from execflow.errors import NotFound, PermissionDenied
from execflow.records import Principal


class Privilege(enum.StrEnum):
    VIEW = "view"
    SCHEDULE_EXECUTIONS = "schedule_executions"
    MANAGE_EXECUTIONS = "manage_executions"
    MANAGE_WORKFLOWS = "manage_workflows"
    ADMIN = "admin"


_P = Privilege
# The one table of roles. Every entry point (native API, CLI, vendor dialects) checks a
# privilege, never a role; docs/security.md shows this table and a test keeps them equal.
ROLE_PRIVILEGES: dict[str, frozenset[Privilege]] = {
    "viewer": frozenset({_P.VIEW}),
    # may start executions but not steer them (Onedata's schedule vs manage split)
    "scheduler": frozenset({_P.VIEW, _P.SCHEDULE_EXECUTIONS}),
    "operator": frozenset({_P.VIEW, _P.SCHEDULE_EXECUTIONS, _P.MANAGE_EXECUTIONS}),
    "developer": frozenset(
        {_P.VIEW, _P.SCHEDULE_EXECUTIONS, _P.MANAGE_EXECUTIONS, _P.MANAGE_WORKFLOWS}
    ),
    "admin": frozenset(_P),
}
ROLES = tuple(ROLE_PRIVILEGES)

# Admins of this project may also administer every other project (create tokens there).
SYSTEM_PROJECT = "default"


def allows(principal: Principal, privilege: Privilege) -> bool:
    return privilege in ROLE_PRIVILEGES.get(principal.role, frozenset())


def require(principal: Principal, privilege: Privilege) -> None:
    if not allows(principal, privilege):
        raise PermissionDenied(f"role {principal.role!r} lacks the {privilege.value!r} privilege")


def is_system_admin(principal: Principal) -> bool:
    """An admin of the default project, who administers every project."""
    return principal.project_name == SYSTEM_PROJECT and allows(principal, Privilege.ADMIN)


def require_visible(principal: Principal, project: str) -> None:
    """A project the caller may not see is as good as absent: NotFound, exactly as for a
    project that does not exist, so other tenants' names cannot be probed."""
    if project != principal.project_name and not is_system_admin(principal):
        raise NotFound(f"project {project!r} not found")


def require_node_view(principal: Principal) -> None:
    """The node's metrics count every project's executions, so only tokens of the default
    project (the server's operators) may read them; any of its roles may."""
    if principal.project_name != SYSTEM_PROJECT or not allows(principal, Privilege.VIEW):
        raise PermissionDenied(f"only tokens of the {SYSTEM_PROJECT!r} project read the metrics")
