"""Use cases: what a caller may do, checked and carried out in one transaction each.

The API, the CLI's server side and (later) the vendor dialects all go through
here; nothing below this layer knows about HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from execflow import levels
from execflow.actions.signal import check_payload
from execflow.auth import Privilege, require, require_node_view
from execflow.callbacks import CallbackPolicy, CallbackRefused, check_url
from execflow.clock import Clock, SystemClock
from execflow.definition import (
    Definition,
    StoreKind,
    mask_secrets,
    parse_definition,
    resolve_inputs,
    secret_values,
    store_content_error,
)
from execflow.engine import DefinitionCache, Engine
from execflow.errors import (
    Conflict,
    Detail,
    InvalidDefinition,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    Unavailable,
)
from execflow.limits import Limits, RateLimiter, document_problem, json_size
from execflow.masking import Secrets, redact
from execflow.metrics import Metrics
from execflow.project_actions import require_actions
from execflow.records import (
    Admission,
    CallbackStatus,
    EventRecord,
    ExecutionRecord,
    Principal,
    RevisionRecord,
    TaskRunRecord,
    WorkflowRecord,
)
from execflow.sealing import Sealed
from execflow.signing import (
    MAX_SKEW_SECONDS,
    NonceCache,
    SignatureError,
    check_acs_request,
    check_obs_request,
)
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from execflow.store.admissions import admission
from execflow.store.base import new_id

_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
# labels execflow sets itself (`execflow.schedule`): never a caller's, whatever its case
RESERVED_LABELS = "execflow."
_EXEC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_LABELS = 32
MAX_CANCEL_GRACE = 3600.0
# a session token outlives no working week: it is minted from a longer-lived credential
MAX_SESSION_SECONDS = 7 * 86400.0
# how often a live follower looks for entries other nodes wrote
FOLLOW_POLL_SECONDS = 1.0
# how often a steering call looks whether another node carried its command out (this
# node's commits wake it at once)
STEER_POLL_SECONDS = 0.05


_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers, as the request came (header names in lower case)."""

    key_id: str
    signature: str
    method: str
    raw_path: str
    raw_query: str
    headers: dict[str, str]
    prefix: str = "x-obs-"  # the signed headers' prefix: x-amz- when the scheme says AWS
    # "obs" (the Authorization header) or "acs" (Alibaba's: the signature among `params`,
    # which are the query's and a form body's fields)
    scheme: str = "obs"
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StartRequest:
    """What a start asks for besides the workflow. `scheduled_at` puts the first task off
    until then (the execution is WAITING); `log_level` is the floor of what its audit log
    keeps (default info); `callback` is a URL sent the execution once it has ended; `stores`
    gives initial content to the workflow's stores, over the definition's. Labels under
    `execflow.` are execflow's own: a caller's `labels` may not use them; `own_labels` are
    those execflow sets itself (the schedule a start is a slot of)."""

    inputs: dict[str, Any] | None = None
    revision: int | None = None
    name: str | None = None
    labels: dict[str, str] | None = None
    log_level: int | str | None = None
    scheduled_at: datetime | None = None
    callback: str | None = None
    stores: dict[str, Any] | None = None
    idempotency_key: str | None = None
    own_labels: dict[str, str] | None = None

    def all_labels(self) -> dict[str, str]:
        return {**(self.labels or {}), **(self.own_labels or {})}


@dataclass(frozen=True)
class _Prepared:
    """A start request once checked: its workflow, revision and resolved inputs."""

    request: StartRequest
    wf: WorkflowRecord
    revision: int
    definition: Definition
    inputs: dict[str, Any]
    log_level: int

    def digest(self) -> str:
        """What identifies a start request, for its Idempotency-Key. Secret values are left
        out (the digest is stored): they are compared with the execution's own."""
        r = self.request
        request = {
            "workflow": self.wf.id,
            "revision": self.revision,
            "inputs": mask_secrets(self.definition, self.inputs),
            "name": r.name,
            "labels": r.all_labels(),
            "scheduled_at": r.scheduled_at.isoformat() if r.scheduled_at else None,
            "log_level": self.log_level,
            "callback": r.callback,
            "stores": r.stores or {},
        }
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PlannedTask:
    id: str
    action: str
    needs: list[str]
    level: int  # 0 for tasks that need nothing, else one more than their deepest need


@dataclass(frozen=True)
class Plan:
    """What a start would do (a dry run): resolved inputs (secrets masked) and the DAG."""

    workflow: str
    revision: int
    inputs: dict[str, Any]
    tasks: list[PlannedTask]
    scheduled_at: datetime | None
    log_level: str


@dataclass(frozen=True)
class PendingSignal:
    name: str
    task: str
    attempt: int
    schema: dict[str, Any] | None
    description: str
    since: datetime | None
    timeout: float | None


def pending_signals(rec: ExecutionRecord) -> list[PendingSignal]:
    """The signals an execution waits for now, from its running task runs."""
    found = []
    for tr in rec.task_runs:
        if tr.state is TaskRunState.RUNNING and tr.waiting and "signal" in tr.waiting:
            w = tr.waiting
            found.append(
                PendingSignal(
                    w["signal"],
                    tr.task_id,
                    tr.attempt,
                    w.get("schema"),
                    w.get("description", ""),
                    tr.started_at,
                    w.get("timeout"),
                )
            )
    return found


class Service:
    def __init__(
        self,
        store: Store,
        definitions: DefinitionCache,
        engine: Engine | None = None,
        clock: Clock | None = None,
        idempotency_retention: float = 86400.0,
        callback_policy: CallbackPolicy | None = None,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.limits = limits or Limits()
        self._starts = RateLimiter(self.limits.start_rate, self.limits.start_burst)
        self._nonces = NonceCache()  # of requests signed in Alibaba's style
        self.definitions = definitions
        self.engine = engine
        self.clock = clock or SystemClock()
        # how long an Idempotency-Key keeps naming the execution it started
        self.idempotency_retention = idempotency_retention
        self._keys_swept: datetime | None = None
        self.callback_policy = callback_policy or CallbackPolicy()
        # told whenever a workflow revision is stored (the scheduler looks at its schedules)
        self.on_workflow_stored: list[Callable[[], None]] = []

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise NotAuthenticated("a token is required (Authorization: Bearer …, or X-Auth-Token)")
        now = self.clock.now()
        found = await self.store.read(self.store.authenticate, secret, now)
        if found is None:
            raise NotAuthenticated("the token is unknown, revoked or expired")
        principal, last_used = found
        await self._used(principal, last_used, now)
        return principal

    async def authenticate_signed(self, request: SignedRequest) -> Principal:
        """The principal of the access key that signed `request`; NotAuthenticated saying
        why not (unknown, revoked or expired key; wrong signature; a date too far off)."""
        now = self.clock.now()
        found = await self.store.read(self.store.access_key, request.key_id, now)
        if found is None:
            raise NotAuthenticated("the access key is unknown, revoked or expired")
        principal, secret, last_used = found
        r = request
        try:
            if r.scheme == "acs":
                nonce = check_acs_request(secret, r.method, list(r.params), now)
                if not await self._first_use(r.key_id, nonce, now):
                    raise SignatureError("this SignatureNonce was used already")
            else:
                check_obs_request(
                    secret, r.signature, r.method, r.raw_path, r.raw_query, r.headers, now, r.prefix
                )
                # It covers neither the body nor most of the query: taken twice, it could
                # carry another start, or a dry run's signature a real one. So a request
                # that changes something is taken once. Two alike within one second (the
                # date's precision) are told to come again: the SDKs retry a 503, signing
                # anew with a later date.
                if r.method not in _READS and not await self._first_use(
                    r.key_id, f"{r.scheme} {r.signature}", now
                ):
                    raise Unavailable(
                        "this signature was taken already: a signed request that changes"
                        " something is taken once; sign it again",
                        retry_after=1,
                    )
        except SignatureError as exc:
            raise NotAuthenticated(str(exc)) from None
        await self._used(principal, last_used, now)
        return principal

    async def _first_use(self, key_id: str, nonce: str, now: datetime) -> bool:
        """Whether a signed request's nonce is new: this node's memory first (a replay to
        the same node costs no write), then the database, which every node shares."""
        until = now + timedelta(seconds=2 * MAX_SKEW_SECONDS)
        return self._nonces.first_use(key_id, nonce, now) and bool(
            await self.store.call(self.store.use_nonce, key_id, nonce, now, until)
        )

    async def authenticate_key(self, key_id: str, secret: str) -> Principal:
        """The principal of an access key given with its secret itself (HTTP Basic, a
        vendor's login call); NotAuthenticated when either is wrong."""
        now = self.clock.now()
        found = await self.store.read(self.store.access_key, key_id, now)
        if found is None or not hmac.compare_digest(found[1].encode(), secret.encode()):
            raise NotAuthenticated("the access key is unknown, revoked, expired, or not its secret")
        principal, _, last_used = found
        await self._used(principal, last_used, now)
        return principal

    async def open_session(
        self, who: Principal, ttl: float, description: str = "session", *, own: bool = False
    ) -> str:
        """A token with the caller's project and role that expires after `ttl` seconds,
        for clients that log in once with an access key and then carry a token (a cookie).
        Logging in again while a session of the same credential has at least half its time
        left hands that one again: logins mint no pile of tokens. With `own`, the session
        is a new one of its own (a console's sign-in, which its sign-out ends alone)."""
        if not 0 < ttl <= MAX_SESSION_SECONDS:
            raise ValueError(f"a session lasts between 0 and {MAX_SESSION_SECONDS:g} seconds")
        now = self.clock.now()
        expires = now + timedelta(seconds=ttl)
        if who.expires_at is not None:
            expires = min(expires, who.expires_at)  # a session outlives not its credential
        lasting = min(now + timedelta(seconds=ttl / 2), expires)
        if not own:
            found = await self.store.read(
                self.store.session_of, who.token_id, description, now, lasting
            )
            if found is not None:
                return found
        _, secret = await self.store.call(
            self.store.create_token,
            who.project_id,
            who.role,
            now,
            description,
            expires,
            who.token_id,
            sealed_too=not own,  # only a session handed again needs its secret back
            session=True,
        )
        return secret

    async def authenticate_session(self, secret: str | None) -> Principal:
        """The principal of a session token from `open_session`, checked like any token and
        also against the token that opened it: revoking a token revokes nothing made with
        it (an access key's revocation does), so a session must not outlive its opener."""
        who = await self.authenticate(secret)
        read, store = self.store.read, self.store
        session = await read(store.get_token, who.project_id, who.token_id)
        if session.created_by is not None:
            try:
                opener = await read(store.get_token, who.project_id, session.created_by)
            except NotFound:  # an access key: its revocation revoked the session already
                return who
            if opener.state(self.clock.now()) != "active":
                raise NotAuthenticated("the credential that opened this session is not live")
        return who

    async def close_session(self, who: Principal) -> None:
        """End the caller's session at once (a console's logout): its token is revoked."""
        await self.store.call(
            self.store.revoke_token, who.project_id, who.token_id, self.clock.now(), None
        )

    async def _used(self, principal: Principal, last_used: datetime | None, now: datetime) -> None:
        if last_used is None or (now - last_used).total_seconds() > 60:
            # Coarse on purpose: one write a minute per credential, not one per request.
            await self.store.call(self.store.touch_token, principal.token_id, now)

    # workflows ---------------------------------------------------------------------

    async def metrics_exposition(self, who: Principal) -> bytes:
        """This node's metrics in Prometheus' text format (tokens of `default` only)."""
        require_node_view(who)
        return self.metrics.exposition()

    async def put_workflow(
        self, who: Principal, name: str, raw: Any
    ) -> tuple[WorkflowRecord, int, bool]:
        require(who, Privilege.MANAGE_WORKFLOWS)
        if problem := document_problem(raw, self.limits.max_depth):
            raise InvalidDefinition("the workflow definition is not valid", [problem])
        tasks = raw.get("tasks") if isinstance(raw, dict) else None
        if isinstance(tasks, dict) and (count := len(tasks)) > self.limits.max_tasks:
            # before the definition is parsed: that costs in proportion
            why = f"{count} tasks; at most {self.limits.max_tasks} (EXECFLOW_MAX_TASKS)"
            raise InvalidDefinition("the workflow definition is not valid", [Detail("/tasks", why)])
        definition = parse_definition(raw, name=name)
        require_actions(who, definition)
        result = await self.store.call(
            self.store.put_workflow, who.project_id, definition, self.clock.now()
        )
        self.definitions.put(result[0].id, result[1], definition)
        for listener in self.on_workflow_stored:
            listener()
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

    async def workflow_by_id(self, who: Principal, workflow_id: str) -> WorkflowRecord:
        require(who, Privilege.VIEW)
        return await self.store.read(self.store.workflow_by_id, who.project_id, workflow_id)

    async def ids_with_prefix(self, who: Principal, kind: str, prefix: str) -> list[str]:
        """At most two ids of the caller's workflows or executions beginning with `prefix`
        (two tell that a prefix is ambiguous)."""
        require(who, Privilege.VIEW)
        if kind not in ("workflow", "execution"):
            raise ValueError(f"no ids of kind {kind!r}")
        return await self.store.read(self.store.ids_with_prefix, kind, who.project_id, prefix)

    async def workflow(self, who: Principal, name: str) -> WorkflowRecord:
        """The caller's workflow of this name (without reading a revision)."""
        require(who, Privilege.VIEW)
        return await self.store.read(self.store.get_workflow, who.project_id, name)

    async def definition(
        self, who: Principal, name: str, revision: int | None = None
    ) -> tuple[WorkflowRecord, Definition]:
        """A workflow and the parsed definition of one of its revisions (the latest unless
        given), from the cache the engine uses: cheaper than `get_workflow` per request."""
        require(who, Privilege.VIEW)
        wf = await self.store.read(self.store.get_workflow, who.project_id, name)
        number = wf.latest_revision if revision is None else revision
        if not 1 <= number <= wf.latest_revision:
            raise NotFound(f"workflow {name!r} has no revision {number}")
        return wf, await self.definitions.get(wf.id, number)

    async def delete_workflow(self, who: Principal, name: str) -> None:
        require(who, Privilege.MANAGE_WORKFLOWS)
        await self.store.call(self.store.delete_workflow, who.project_id, name)

    # executions ----------------------------------------------------------------------

    async def start(
        self, who: Principal, workflow: str, inputs: dict[str, Any] | None = None, **options: Any
    ) -> ExecutionRecord:
        """Validate and commit a new execution; it is durable when this returns. `options`
        are the other fields of a `StartRequest`; see `start_or_find`."""
        request = StartRequest(inputs=inputs, **options)
        record, _ = await self.start_or_find(who, workflow, request)
        return record

    async def start_or_find(
        self, who: Principal, workflow: str, request: StartRequest
    ) -> tuple[ExecutionRecord, bool]:
        """Start an execution, or find the one this same request already started: a name is
        unique per workflow, and reusing it with the same inputs gives back that execution
        (False), with other inputs a Conflict naming them; an Idempotency-Key does the same
        for any request within the retention period."""
        require(who, Privilege.SCHEDULE_EXECUTIONS)
        self._count_start(who)
        p = await self._prepare(who, workflow, request)
        key, name = request.idempotency_key, request.name
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            detail = Detail("header:Idempotency-Key", "1 to 255 printable ASCII characters")
            raise InvalidInput(details=[detail])
        if name is not None:
            existing = await self.store.read(self.store.execution_by_name, p.wf.id, name)
            if existing is not None:
                return self._same_inputs(existing, p), False
        now = self.clock.now()
        execution_id = new_id()
        record = ExecutionRecord.new(
            execution_id,
            who.project_id,
            p.wf.id,
            p.wf.name,
            p.revision,
            self.store.sealer.seal_inputs(p.inputs, p.definition.secret_params),
            now,
            name=name,
            labels=request.all_labels(),
            started_by=who.token_id,
            scheduled_at=request.scheduled_at,
            log_level=p.log_level,
            callback=CallbackStatus(request.callback, "pending") if request.callback else None,
            store_overlay=dict(request.stores) if request.stores else None,
        )
        owner, expires = self._lease(now)
        try:
            if key is None:
                await self.store.start(record, owner, expires)
            else:
                if self._keys_swept is None or now - self._keys_swept > timedelta(hours=1):
                    self._keys_swept = now  # keys past their retention are of no more use
                    await self.store.call(self.store.forget_idempotency_keys, now)
                retention = now + timedelta(seconds=self.idempotency_retention)
                record, created = await self.store.call(
                    self.store.create_keyed_execution,
                    record,
                    owner,
                    expires,
                    key,
                    p.digest(),
                    retention,
                )
                if not created:
                    return self._same_inputs(record, p, f"the Idempotency-Key {key!r}"), False
        except Conflict:
            if name is None:
                raise
            existing = await self.store.read(self.store.execution_by_name, p.wf.id, name)
            if existing is None:
                raise
            return self._same_inputs(existing, p), False
        self.metrics.execution_started()
        if self.engine is not None:
            self.engine.submit(record, p.definition)
        return record, True

    def _count_start(self, who: Principal) -> None:
        """RateLimited once the caller's token has started too many executions of late."""
        wait = self._starts.take(who.token_id or who.project_id, self.clock.now())
        if wait:
            rate = self.limits.start_rate
            raise RateLimited(
                f"this token starts at most {rate:g} executions a second "
                f"(bursts of {self.limits.start_burst}); try again in {wait:.2f}s",
                wait,
            )

    def _sizes(self, **values: Any) -> list[Detail]:
        """A detail for each value execflow would not store: nested too deep, holding a
        number that is not finite, NUL or a lone surrogate (whichever entry point it came
        through), or whose JSON is over the inputs limit."""
        limit, problems = self.limits.max_inputs, []
        for name, value in values.items():
            if value is None:
                continue
            if problem := document_problem(value, self.limits.max_depth, f"/{name}"):
                problems.append(problem)
            elif (size := json_size(value)) > limit:
                why = f"{size} bytes of JSON; at most {limit} (EXECFLOW_MAX_INPUTS)"
                problems.append(Detail(f"/{name}", why))
        return problems

    def _same_inputs(
        self, existing: ExecutionRecord, p: _Prepared, given: str | None = None
    ) -> ExecutionRecord:
        """The execution this request names again, if it was started with the same inputs
        (its sealed ones opened to compare); else a Conflict naming those that differ."""
        sealer = self.store.sealer
        before = {
            k: (sealer.open(v) if isinstance(v, Sealed) else v) for k, v in existing.inputs.items()
        }
        differ = sorted(k for k in {*before, *p.inputs} if before.get(k) != p.inputs.get(k))
        if differ:
            what = given or f"an execution named {existing.name!r}"
            raise Conflict(
                f"{what} started execution {existing.id} with other inputs",
                [Detail(f"/inputs/{k}", "differs from the existing execution's") for k in differ],
            )
        return existing

    async def plan(self, who: Principal, workflow: str, request: StartRequest) -> Plan:
        """Validate a start exactly as `start` does and say what would run; store nothing."""
        require(who, Privilege.SCHEDULE_EXECUTIONS)
        p = await self._prepare(who, workflow, request)
        depth: dict[str, int] = {}
        for tid in p.definition.order:
            needs = p.definition.tasks[tid].needs
            depth[tid] = 1 + max((depth[n] for n in needs), default=-1)
        steps = [
            PlannedTask(
                tid, p.definition.tasks[tid].action, list(p.definition.tasks[tid].needs), depth[tid]
            )
            for tid in p.definition.order
        ]
        masked = mask_secrets(p.definition, p.inputs)
        return Plan(
            p.wf.name, p.revision, masked, steps, request.scheduled_at, levels.name_of(p.log_level)
        )

    async def _prepare(self, who: Principal, workflow: str, request: StartRequest) -> _Prepared:
        """Everything a start checks, with every problem reported at once."""
        r = request
        wf = await self.store.read(self.store.get_workflow, who.project_id, workflow)
        number = wf.latest_revision if r.revision is None else r.revision
        if not 1 <= number <= wf.latest_revision:
            raise InvalidInput(
                details=[Detail("/revision", f"workflow {workflow!r} has no revision {number}")]
            )
        definition = await self.definitions.get(wf.id, number)
        require_actions(who, definition)  # the project's actions may have narrowed since
        problems = _check_name_and_labels(r.name, r.labels)
        level = levels.DEFAULT
        if r.log_level is not None:
            try:
                level = levels.parse_level(r.log_level)
            except ValueError as exc:
                problems.append(Detail("/log_level", str(exc)))
        if r.scheduled_at is not None and r.scheduled_at.tzinfo is None:
            problems.append(Detail("/scheduled_at", "give a time zone (e.g. Z or +02:00)"))
        if r.callback is not None:
            try:
                check_url(r.callback, self.callback_policy)
            except CallbackRefused as exc:
                problems.append(Detail("/callback", exc.reason))
        for store, content in (r.stores or {}).items():
            spec = definition.stores.get(store)
            if spec is None:
                known = ", ".join(sorted(definition.stores)) or "none declared"
                problems.append(Detail(f"/stores/{store}", f"unknown store ({known})"))
            elif why := store_content_error(spec.type, content):
                problems.append(Detail(f"/stores/{store}", why))
        problems += self._sizes(inputs=r.inputs, stores=r.stores)
        resolved: dict[str, Any] = {}
        try:
            resolved = resolve_inputs(definition, r.inputs)
        except InvalidInput as exc:
            problems.extend(exc.details)
        if problems:
            raise InvalidInput("the start request is not valid", problems)
        return _Prepared(r, wf, number, definition, resolved, level)

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

    async def logs(
        self,
        who: Principal,
        execution_id: str,
        level: int = levels.DEBUG,
        task: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[EventRecord]:
        """A page of an execution's audit log: entries at `level` or more severe, in order."""
        require(who, Privilege.VIEW)
        await self.store.read(self.store.get_execution, execution_id, who.project_id, False)
        return await self.store.read(
            self.store.list_events, execution_id, level, task, after, limit
        )

    async def follow(
        self, who: Principal, execution_id: str, after: int = 0, level: int = levels.DEBUG
    ) -> AsyncIterator[EventRecord]:
        """The audit log as it grows, from the entry after `after`, until the execution has
        ended and everything it logged was given."""
        require(who, Privilege.VIEW)
        read, store = self.store.read, self.store
        await read(store.get_execution, execution_id, who.project_id, False)
        while True:
            # Read the state before the entries: an end committed after the state was read
            # is caught by the next round, so the last entries are never missed.
            ended = (await read(store.get_execution, execution_id, None, False)).state.terminal
            batch = await read(store.list_events, execution_id, level, None, after, 500)
            for event in batch:
                yield event
            if batch:
                after = batch[-1].id or after
                continue
            if ended:
                return
            if self.engine is not None:
                await self.engine.changed(FOLLOW_POLL_SECONDS)
            else:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)

    async def store_content(
        self, who: Principal, execution_id: str, name: str
    ) -> tuple[StoreKind, Any]:
        """A store's content now: the definition's initial content (or the start's), then
        every write in order."""
        require(who, Privilege.VIEW)
        record = await self.store.read(
            self.store.get_execution, execution_id, who.project_id, False
        )
        definition = await self.definition_of(record)
        spec = definition.stores.get(name)
        if spec is None:
            raise NotFound(f"execution {execution_id!r} has no store {name!r}")
        overlay = record.store_overlay or {}
        content = copy.deepcopy(overlay[name]) if name in overlay else spec.empty()
        for entry in await self.store.read(self.store.store_entries, execution_id, name):
            if spec.type is StoreKind.LIST:
                content.append(entry.value)
            elif spec.type is StoreKind.MAP:
                content[entry.key] = entry.value
            else:
                content = entry.value
        return spec.type, redact(content, secret_values(definition, record.inputs))

    async def item_runs(
        self, who: Principal, execution_id: str, task: str, offset: int, limit: int
    ) -> tuple[list[TaskRunRecord], Secrets]:
        """A page of a fan-out's item runs, and the secret values to mask in them."""
        require(who, Privilege.VIEW)
        record = await self.store.read(
            self.store.get_execution, execution_id, who.project_id, False
        )
        definition = await self.definition_of(record)
        if task not in definition.tasks or definition.tasks[task].for_each is None:
            raise NotFound(f"execution {execution_id!r} has no fan-out task {task!r}")
        runs = await self.store.read(self.store.item_runs, execution_id, task, offset, limit)
        return runs, secret_values(definition, record.inputs)

    async def definition_of(self, record: ExecutionRecord) -> Definition:
        return await self.definitions.get(record.workflow_id, record.revision)

    async def admission_of(
        self, record: ExecutionRecord, definition: Definition
    ) -> Admission | None:
        """Where an active execution under its workflow's `concurrency` stands in the line
        for a slot (None: no limit, it ended, or its engine has not asked yet)."""
        if definition.concurrency is None or record.state.terminal:
            return None
        return await self.store.read(admission, self.store, record.id)

    async def list_executions(
        self,
        who: Principal,
        workflow: str | None = None,
        state: str | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        states: Collection[ExecutionState] | None = None,
        created: tuple[datetime | None, datetime | None] = (None, None),
        offset: int = 0,
        oldest_first: bool = False,
        name: str | None = None,
    ) -> tuple[list[ExecutionRecord], str | None]:
        """A page of the caller's executions, newest first unless `oldest_first`, and the
        cursor of the next page (None after the last). `states` keeps any of several,
        `created` those created from its first time to before its second, `name` the
        executions of that name."""
        require(who, Privilege.VIEW)
        if state is not None and state not in ExecutionState.__members__:
            known = ", ".join(ExecutionState)
            raise InvalidInput(details=[Detail("/state", f"unknown state {state!r} ({known})")])
        if offset < 0:
            raise InvalidInput(details=[Detail("query:offset", "must not be negative")])
        # a page may scan far (offset, filters): on a thread, not on the event loop
        return await self.store.call(
            self.store.list_executions,
            who.project_id,
            workflow,
            state,
            labels,
            limit,
            cursor,
            states=None if states is None else {s.value for s in states},
            created=created,
            offset=offset,
            oldest_first=oldest_first,
            name=name,
        )

    async def count_executions(
        self,
        who: Principal,
        workflow: str | None = None,
        states: Collection[ExecutionState] | None = None,
        created: tuple[datetime | None, datetime | None] = (None, None),
    ) -> int:
        """How many executions `list_executions` gives in all with these filters."""
        require(who, Privilege.VIEW)
        found = None if states is None else {s.value for s in states}
        return await self.store.call(
            self.store.count_executions, who.project_id, workflow, None, found, created
        )

    async def count_by_state(
        self,
        who: Principal,
        workflow: str | None,
        states: Collection[ExecutionState],
        created: tuple[datetime | None, datetime | None] = (None, None),
    ) -> dict[ExecutionState, int]:
        """How many executions are in each of `states` with these filters (0 for none)."""
        require(who, Privilege.VIEW)
        found = await self.store.call(
            self.store.count_by_state, who.project_id, workflow, {s.value for s in states}, created
        )
        return {s: found.get(s.value, 0) for s in states}

    async def cancel(
        self, who: Principal, execution_id: str, force: bool = False, grace: float | None = None
    ) -> ExecutionRecord:
        """Stop an execution: nothing new starts and waits end at once; running tasks may
        finish within the grace period (the engine's `cancel_grace` unless given), or are
        stopped at once with `force`. Cancelling again may shorten the grace period."""
        require(who, Privilege.MANAGE_EXECUTIONS)
        if grace is not None and not 0 <= grace <= MAX_CANCEL_GRACE:
            detail = Detail("query:grace", f"must be between 0 and {MAX_CANCEL_GRACE:g} seconds")
            raise InvalidInput(details=[detail])

        def active(rec: ExecutionRecord) -> None:
            if rec.state.terminal:
                raise Conflict(f"execution {execution_id!r} has already ended ({rec.state})")

        payload: dict[str, Any] = {"force": force}
        if grace is not None:
            payload["grace"] = grace
        return await self._command(who, execution_id, "cancel", payload, active)

    def _lease(self, now: datetime) -> tuple[str | None, datetime | None]:
        """Who takes a new or revived execution: this node's engine, at once, if it runs."""
        if self.engine is None:
            return None, None
        return self.engine.node_id, now + timedelta(seconds=self.engine.settings.lease_seconds)

    async def retry(self, who: Principal, execution_id: str) -> ExecutionRecord:
        """Run a FAILED or CANCELED execution again from where it failed: its failed and
        cancelled tasks and everything after them run anew; what completed keeps its output.
        Earlier attempts stay in its history."""
        require(who, Privilege.MANAGE_EXECUTIONS)
        now = self.clock.now()
        owner, expires = self._lease(now)
        record = await self.store.call(
            self.store.retry, execution_id, who.project_id, now, owner, expires, who.token_id
        )
        self.metrics.execution_started()
        if self.engine is not None:
            self.engine.submit(record, await self.definition_of(record))
        return record

    async def rerun(
        self,
        who: Principal,
        execution_id: str,
        from_task: str,
        inputs: dict[str, Any] | None = None,
    ) -> ExecutionRecord:
        """Start a new execution of the same revision, linked to this one, that runs
        `from_task` and everything after it and reuses the outputs of every other task
        that completed here. `inputs` override the original inputs, key by key; a rerun
        that changes any of them is given the secret inputs again."""
        require(who, Privilege.MANAGE_EXECUTIONS)
        self._count_start(who)
        original = await self.store.read(self.store.get_execution, execution_id, who.project_id)
        definition = await self.definition_of(original)
        require_actions(who, definition)
        problems: list[Detail] = self._sizes(inputs=inputs)
        if from_task not in definition.tasks:
            known = ", ".join(definition.order)
            problems.append(Detail("/from_task", f"no task {from_task!r} (tasks: {known})"))
        resolved: dict[str, Any] = {}
        try:
            resolved = resolve_inputs(definition, {**original.inputs, **(inputs or {})})
        except InvalidInput as exc:
            problems.extend(exc.details)
        else:
            problems.extend(self._secrets_to_give_again(definition, original, inputs, resolved))
        if problems:
            raise InvalidInput("the rerun request is not valid", problems)
        if not original.state.terminal:
            raise Conflict(f"execution {execution_id!r} has not ended ({original.state})")
        again = _downstream(definition, from_task)
        latest = {tr.task_id: tr for tr in original.task_runs}
        now = self.clock.now()
        execution_id = new_id()
        reused = [
            TaskRunRecord(
                execution_id=execution_id,
                task_id=tid,
                attempt=1,
                state=TaskRunState.COMPLETED,
                output=tr.output,
                queued_at=tr.queued_at,
                started_at=tr.started_at,
                ended_at=tr.ended_at,
            )
            for tid, tr in latest.items()
            if tid not in again and tr.state is TaskRunState.COMPLETED
        ]
        record = ExecutionRecord.new(
            execution_id,
            who.project_id,
            original.workflow_id,
            original.workflow_name,
            original.revision,
            self.store.sealer.seal_inputs(resolved, definition.secret_params),
            now,
            labels=dict(original.labels),
            started_by=who.token_id,
            log_level=original.log_level,
            rerun_of=original.id,
        )
        owner, expires = self._lease(now)
        record = await self.store.call(self.store.create_rerun, record, reused, owner, expires)
        self.metrics.execution_started()
        if self.engine is not None:
            self.engine.submit(record, definition)
        return record

    def _secrets_to_give_again(
        self,
        definition: Definition,
        original: ExecutionRecord,
        given: dict[str, Any] | None,
        resolved: dict[str, Any],
    ) -> list[Detail]:
        """A rerun that changes any input is given every secret again: the original's
        secrets are never paired with inputs its caller never saw with them (an operator
        could otherwise point the URL a secret is sent to at a server of theirs). A detail
        per secret the rerun would reuse; none when the inputs are the original's."""
        given = given or {}
        sealer = self.store.sealer
        secret = definition.secret_params
        reused = sorted(
            k
            for k, v in original.inputs.items()
            if k not in given and (isinstance(v, Sealed) or (k in secret and v is not None))
        )
        if not reused:
            return []

        def before(name: str) -> Any:
            value = original.inputs.get(name)
            return sealer.open(value) if isinstance(value, Sealed) else value

        changed = sorted(k for k in given if resolved.get(k) != before(k))
        if not changed:
            return []
        why = (
            f"this rerun changes {', '.join(changed)}, so give this secret again"
            " (null: its default); the original's is reused only with the original's inputs"
        )
        return [Detail(f"/inputs/{k}", why) for k in reused]

    async def suspend(self, who: Principal, execution_id: str) -> ExecutionRecord:
        """No new task run starts; running ones finish; the execution shows SUSPENDED."""
        require(who, Privilege.MANAGE_EXECUTIONS)

        def suspendable(rec: ExecutionRecord) -> None:
            if rec.state.terminal:
                raise Conflict(f"execution {execution_id!r} has already ended ({rec.state})")
            if rec.state is ExecutionState.SUSPENDED:
                raise Conflict(f"execution {execution_id!r} is already suspended")
            if rec.cancel_requested:
                raise Conflict(f"execution {execution_id!r} is being cancelled")

        return await self._command(who, execution_id, "suspend", {}, suspendable)

    async def resume(self, who: Principal, execution_id: str) -> ExecutionRecord:
        require(who, Privilege.MANAGE_EXECUTIONS)

        def suspended(rec: ExecutionRecord) -> None:
            if rec.state is not ExecutionState.SUSPENDED:
                raise Conflict(f"execution {execution_id!r} is not suspended ({rec.state})")

        return await self._command(who, execution_id, "resume", {}, suspended)

    async def signal(
        self, who: Principal, execution_id: str, name: str, payload: Any
    ) -> ExecutionRecord:
        """Deliver a signal to the task waiting for it; its payload becomes the task's output.

        409 when nothing waits for `name`; 422 naming each field when the payload does not
        fit the waiting task's schema. Either way nothing changes."""
        require(who, Privilege.MANAGE_EXECUTIONS)
        if problems := self._sizes(payload=payload):
            raise InvalidInput(f"the payload of signal {name!r} is not valid", problems)
        body: dict[str, Any] = {"name": name, "payload": payload}

        def awaited(rec: ExecutionRecord) -> None:
            if rec.state.terminal:
                raise Conflict(f"execution {execution_id!r} has already ended ({rec.state})")
            waits = pending_signals(rec)
            match = [w for w in waits if w.name == name]
            if not match:
                known = ", ".join(sorted({w.name for w in waits})) or "none"
                raise Conflict(f"nothing waits for signal {name!r} (waiting for: {known})")
            problems = check_payload(match[0].schema, payload)
            if problems:
                raise InvalidInput(f"the payload of signal {name!r} is not valid", problems)
            body.update(task=match[0].task, attempt=match[0].attempt)

        return await self._command(who, execution_id, "signal", body, awaited)

    async def _command(
        self,
        who: Principal,
        execution_id: str,
        kind: str,
        payload: dict[str, Any],
        check: Callable[[ExecutionRecord], None],
    ) -> ExecutionRecord:
        record = await self.store.call(
            self.store.request,
            execution_id,
            who.project_id,
            kind,
            payload,
            who.token_id,
            self.clock.now(),
            check,
        )
        if self.engine is not None:
            self.engine.notify()
        if await self._carried_out(execution_id, kind):
            record = await self.store.read(self.store.get_execution, execution_id, who.project_id)
        return record

    async def _carried_out(self, execution_id: str, kind: str) -> bool:
        """Wait until the engine holding the execution has carried out the `kind` command
        just recorded (committed it with its effects), so that the answer to a steering
        call, and every read after it, shows the state it asked for, never the one before.

        This node's commits wake the wait at once; a command another node carries out (it
        looks at each poll) is seen by polling. The wait is bounded by the time in which
        a live node takes over the executions of one that died (a heartbeat and two polls):
        beyond it no node can reach the database, and the answer goes out with the command
        recorded, to be carried out by whoever next holds the execution (so too when the
        database goes away meanwhile). Without a running engine loop here (tests drive
        theirs tick by tick) nothing is awaited."""
        engine = self.engine
        if engine is None or not engine.running:
            return False
        settings = engine.settings
        deadline = time.monotonic() + settings.heartbeat_seconds + 2 * settings.poll_seconds
        try:
            while await self.store.read(self.store.command_pending, execution_id, kind):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await engine.changed(min(left, STEER_POLL_SECONDS))
        except Unavailable:  # the command is recorded: an outage now must not deny it
            return False
        return True


def _downstream(definition: Definition, task_id: str) -> set[str]:
    """A task and every task that depends on it, directly or not."""
    found, todo = {task_id}, [task_id]
    while todo:
        for child in definition.dependants[todo.pop()]:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _check_name_and_labels(name: str | None, labels: dict[str, str] | None) -> list[Detail]:
    problems = []
    if name is not None and not _EXEC_NAME.fullmatch(name):
        problems.append(Detail("/name", f"{name!r} does not match {_EXEC_NAME.pattern}"))
    labels = labels or {}
    if len(labels) > MAX_LABELS:
        problems.append(Detail("/labels", f"at most {MAX_LABELS} labels"))
    for key, value in labels.items():
        where = f"/labels/{_escaped(key)}"
        if not _LABEL_KEY.fullmatch(key):
            problems.append(Detail(where, "a label key must match " + _LABEL_KEY.pattern))
        elif key.lower().startswith(RESERVED_LABELS):
            why = f"labels under {RESERVED_LABELS!r} are execflow's own (execflow.schedule)"
            problems.append(Detail(where, why))
        if not isinstance(value, str) or len(value) > 256:
            problems.append(Detail(where, "a label value is a string of ≤ 256 chars"))
    return problems


def _escaped(key: str) -> str:
    """A label key as one JSON pointer token."""
    return key.replace("~", "~0").replace("/", "~1")


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident!r} not found")
