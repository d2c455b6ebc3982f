"""Use cases: what a caller may do, checked and carried out in one transaction each.

The API, the CLI's server side and (later) the vendor dialects all go through
here; nothing below this layer knows about HTTP.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from execflow.auth import SYSTEM_PROJECT, Privilege, require
from execflow.clock import Clock, SystemClock
from execflow.definition import NAME_RE, Definition, parse_definition, resolve_inputs
from execflow.engine import DefinitionCache, Engine
from execflow.errors import Detail, InvalidInput, NotAuthenticated, NotFound, PermissionDenied
from execflow.records import ExecutionRecord, Principal, RevisionRecord, WorkflowRecord
from execflow.states import ExecutionState
from execflow.store import Store
from execflow.store.store import ROLES, new_id

_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
_EXEC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_LABELS = 32


class Service:
    def __init__(
        self,
        store: Store,
        definitions: DefinitionCache,
        engine: Engine | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.engine = engine
        self.clock = clock or SystemClock()

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise NotAuthenticated("a token is required (Authorization: Bearer …, or X-Auth-Token)")
        now = self.clock.now()
        found = await self.store.read(self.store.authenticate, secret, now)
        if found is None:
            raise NotAuthenticated("the token is unknown, revoked or expired")
        principal, last_used = found
        if last_used is None or (now - last_used).total_seconds() > 60:
            # Coarse on purpose: one write a minute per token, not one per request.
            await self.store.call(self.store.touch_token, principal.token_id, now)
        return principal

    # workflows ---------------------------------------------------------------------

    async def put_workflow(
        self, who: Principal, name: str, raw: Any
    ) -> tuple[WorkflowRecord, int, bool]:
        require(who, Privilege.MANAGE_WORKFLOWS)
        definition = parse_definition(raw, name=name)
        result = await self.store.call(
            self.store.put_workflow, who.project_id, definition, self.clock.now()
        )
        self.definitions.put(result[0].id, result[1], definition)
        return result

    async def list_workflows(self, who: Principal) -> list[WorkflowRecord]:
        require(who, Privilege.VIEW)
        return await self.store.read(self.store.list_workflows, who.project_id)

    async def get_workflow(
        self, who: Principal, name: str, revision: int | None = None
    ) -> tuple[WorkflowRecord, RevisionRecord]:
        require(who, Privilege.VIEW)
        wf = await self.store.read(self.store.get_workflow, who.project_id, name)
        number = wf.latest_revision if revision is None else revision
        rev = await self.store.read(self.store.get_revision, wf.id, number)
        return wf, rev

    async def delete_workflow(self, who: Principal, name: str) -> None:
        require(who, Privilege.MANAGE_WORKFLOWS)
        await self.store.call(self.store.delete_workflow, who.project_id, name)

    # executions ----------------------------------------------------------------------

    async def start(
        self,
        who: Principal,
        workflow: str,
        inputs: dict[str, Any] | None = None,
        revision: int | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> ExecutionRecord:
        """Validate and commit a new execution; it is durable when this returns."""
        require(who, Privilege.SCHEDULE_EXECUTIONS)
        wf = await self.store.read(self.store.get_workflow, who.project_id, workflow)
        number = wf.latest_revision if revision is None else revision
        if not 1 <= number <= wf.latest_revision:
            raise InvalidInput(
                details=[Detail("/revision", f"workflow {workflow!r} has no revision {number}")]
            )
        definition = await self.definitions.get(wf.id, number)
        problems = _check_name_and_labels(name, labels)
        try:
            resolved = resolve_inputs(definition, inputs)
        except InvalidInput as exc:
            problems.extend(exc.details)
        if problems:
            raise InvalidInput("the start request is not valid", problems)
        now = self.clock.now()
        execution_id = new_id()
        record = ExecutionRecord(
            id=execution_id,
            project_id=who.project_id,
            workflow_id=wf.id,
            workflow_name=wf.name,
            revision=number,
            name=name or execution_id,
            state=ExecutionState.INITIALIZING,
            inputs=resolved,
            labels=dict(labels or {}),
            outputs=None,
            error=None,
            created_at=now,
            started_at=now,
            ended_at=None,
            updated_at=now,
            started_by=who.token_id,
        )
        owner, expires = None, None
        if self.engine is not None:
            owner = self.engine.node_id
            expires = now + timedelta(seconds=self.engine.settings.lease_seconds)
        await self.store.start(record, owner, expires)
        if self.engine is not None:
            self.engine.submit(record, definition)
        return record

    async def wait_ended(
        self, who: Principal, record: ExecutionRecord, timeout: float
    ) -> ExecutionRecord | None:
        """The ended execution if it ends within `timeout` seconds, else None."""
        ended = False
        if self.engine is not None and timeout > 0:
            ended = await self.engine.wait_ended(record.id, timeout)
        if not ended:
            return None
        return await self.get_execution(who, record.id)

    async def get_execution(self, who: Principal, execution_id: str) -> ExecutionRecord:
        require(who, Privilege.VIEW)
        return await self.store.read(self.store.get_execution, execution_id, who.project_id)

    async def definition_of(self, record: ExecutionRecord) -> Definition:
        return await self.definitions.get(record.workflow_id, record.revision)

    async def list_executions(
        self,
        who: Principal,
        workflow: str | None = None,
        state: str | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[ExecutionRecord], str | None]:
        require(who, Privilege.VIEW)
        if state is not None and state not in ExecutionState.__members__:
            known = ", ".join(ExecutionState)
            raise InvalidInput(details=[Detail("/state", f"unknown state {state!r} ({known})")])
        return await self.store.call(
            self.store.list_executions, who.project_id, workflow, state, labels, limit, cursor
        )

    async def cancel(self, who: Principal, execution_id: str) -> ExecutionRecord:
        require(who, Privilege.MANAGE_EXECUTIONS)
        record = await self.store.call(
            self.store.request_cancel, execution_id, who.project_id, self.clock.now()
        )
        if self.engine is not None:
            self.engine.request_cancel(execution_id)
        return record

    # tokens --------------------------------------------------------------------------

    async def create_token(
        self, who: Principal, project: str, role: str, description: str = ""
    ) -> tuple[str, str]:
        require(who, Privilege.ADMIN)
        if role not in ROLES:
            choices = ", ".join(ROLES)
            raise InvalidInput(details=[Detail("/role", f"unknown role {role!r} ({choices})")])
        if project != who.project_name and who.project_name != SYSTEM_PROJECT:
            raise PermissionDenied("only admins of the default project manage other projects")
        now = self.clock.now()
        if not NAME_RE.fullmatch(project):
            raise InvalidInput(details=[Detail("/project", f"{project!r} is not a valid name")])
        project_id = await self.store.call(self.store.ensure_project, project, now)
        return await self.store.call(self.store.create_token, project_id, role, now, description)


def _check_name_and_labels(name: str | None, labels: dict[str, str] | None) -> list[Detail]:
    problems = []
    if name is not None and not _EXEC_NAME.fullmatch(name):
        problems.append(Detail("/name", f"{name!r} does not match {_EXEC_NAME.pattern}"))
    labels = labels or {}
    if len(labels) > MAX_LABELS:
        problems.append(Detail("/labels", f"at most {MAX_LABELS} labels"))
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            problems.append(
                Detail(f"/labels/{key}", "a label key must match " + _LABEL_KEY.pattern)
            )
        if not isinstance(value, str) or len(value) > 256:
            problems.append(Detail(f"/labels/{key}", "a label value is a string of ≤ 256 chars"))
    return problems


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident!r} not found")
