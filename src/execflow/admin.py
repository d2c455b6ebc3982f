"""Projects and tokens: who may administer what.

Admins of the default project administer every project; the admins of any other project
administer only their own. A project a caller may not see does not exist for it: asking
about it answers NotFound, exactly as for a project that does not exist, so names of other
tenants cannot be probed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime, timedelta

from execflow.auth import (
    ROLES,
    SYSTEM_PROJECT,
    Privilege,
    is_system_admin,
    require,
    require_visible,
)
from execflow.definition import NAME_RE
from execflow.durations import parse_duration
from execflow.errors import Detail, InvalidInput, PermissionDenied
from execflow.project_actions import DEFAULT_ACTIONS, parse_actions
from execflow.records import Principal, ProjectRecord, TokenRecord
from execflow.service import Service
from execflow.store.credentials import TOKEN


class Default(enum.Enum):
    """An argument not given (None means something of its own)."""

    DEFAULT = "default"


DEFAULT = Default.DEFAULT


async def create_project(
    service: Service,
    who: Principal,
    name: str,
    actions: Sequence[str] | Default | None = DEFAULT,
) -> ProjectRecord:
    """A new project. Its workflows may use `actions` (None: every action); by default the
    actions that run no code of their own (see `project_actions`)."""
    if not is_system_admin(who):
        raise PermissionDenied("only admins of the default project create projects")
    problems = []
    if not NAME_RE.fullmatch(name):
        detail = "1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
        problems.append(Detail("/name", detail))
    allowed: tuple[str, ...] | None = DEFAULT_ACTIONS
    if not isinstance(actions, Default):
        try:
            allowed = parse_actions(actions)
        except InvalidInput as exc:
            problems.extend(exc.details)
    if problems:
        raise InvalidInput(details=problems)
    now = service.clock.now()
    return await service.store.call(service.store.create_project, name, now, allowed)


async def update_project(
    service: Service, who: Principal, name: str, actions: Sequence[str] | None
) -> ProjectRecord:
    """Set the actions a project's workflows may use (None: every action). Workflows stored
    already that use others are refused when started, not changed."""
    require_visible(who, name)
    if not is_system_admin(who):
        raise PermissionDenied("only admins of the default project change a project's actions")
    allowed = parse_actions(actions)
    return await service.store.call(service.store.update_project, name, allowed)


async def list_projects(service: Service, who: Principal) -> list[ProjectRecord]:
    """Every project for admins of the default project; otherwise the caller's own."""
    require(who, Privilege.VIEW)
    only = None if is_system_admin(who) else who.project_name
    return await service.store.read(service.store.list_projects, only)


async def get_project(service: Service, who: Principal, name: str) -> ProjectRecord:
    require_visible(who, name)
    require(who, Privilege.VIEW)
    return await service.store.read(service.store.get_project, name)


async def create_token(
    service: Service,
    who: Principal,
    project: str,
    role: str,
    description: str = "",
    expires_at: datetime | None = None,
    expires_in: str | None = None,
    kind: str = TOKEN,
) -> tuple[TokenRecord, str]:
    """A new token (or access key) of `project` and its secret, which is shown this once."""
    target = await _administered(service, who, project)
    now = service.clock.now()
    problems = []
    if role not in ROLES:
        problems.append(Detail("/role", f"unknown role {role!r} (one of {', '.join(ROLES)})"))
    if expires_at is not None and expires_in is not None:
        problems.append(Detail("/expires_in", "give expires_at or expires_in, not both"))
    elif expires_in is not None:
        try:
            seconds = parse_duration(expires_in)
        except ValueError as exc:
            problems.append(Detail("/expires_in", str(exc)))
        else:
            if seconds <= 0:
                problems.append(Detail("/expires_in", "must be a positive duration"))
            expires_at = now + timedelta(seconds=seconds)
    elif expires_at is not None:
        if expires_at.tzinfo is None:
            problems.append(Detail("/expires_at", "give a time zone (e.g. Z or +02:00)"))
        elif expires_at <= now:
            problems.append(Detail("/expires_at", "must be in the future"))
    if problems:
        what = "token" if kind == TOKEN else "access key"
        raise InvalidInput(f"the {what} request is not valid", problems)
    token_id, secret = await service.store.call(
        service.store.create_token,
        target.id,
        role,
        now,
        description,
        expires_at,
        who.token_id,
        kind,
    )
    token = await service.store.read(service.store.get_token, target.id, token_id, kind)
    return token, secret


async def list_tokens(
    service: Service, who: Principal, project: str, kind: str = TOKEN
) -> list[TokenRecord]:
    target = await _administered(service, who, project)
    return await service.store.read(service.store.list_tokens, target.id, kind)


async def get_token(
    service: Service, who: Principal, project: str, token_id: str, kind: str = TOKEN
) -> TokenRecord:
    target = await _administered(service, who, project)
    return await service.store.read(service.store.get_token, target.id, token_id, kind)


async def revoke_token(
    service: Service, who: Principal, project: str, token_id: str, kind: str = TOKEN
) -> TokenRecord:
    """Revoke a token; it stops working with the next request. The default project keeps
    at least one live admin token, so the server can always be administered."""
    target = await _administered(service, who, project)
    now = service.clock.now()
    keep = target.id if target.name == SYSTEM_PROJECT else None
    return await service.store.call(
        service.store.revoke_token, target.id, token_id, now, keep, kind
    )


async def _administered(service: Service, who: Principal, project: str) -> ProjectRecord:
    require_visible(who, project)
    require(who, Privilege.ADMIN)
    return await service.store.read(service.store.get_project, project)
