"""The store on SQLite and PostgreSQL: schema, tokens, workflows, executions and engine writes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from execflow.clock import ManualClock
from execflow.definition import Definition, parse_definition
from execflow.engine import DefinitionCache
from execflow.errors import Conflict, InvalidInput, NotFound
from execflow.records import EventRecord, ExecutionRecord, Principal, TaskRunRecord, WorkflowRecord
from execflow.service import Service
from execflow.states import ExecutionState, TaskRunState
from execflow.store import LeaseLost, Store
from execflow.store import schema as s
from execflow.store.database import current_revision, head_revision
from execflow.store.ops import (
    FinishCommand,
    InsertEvent,
    InsertTaskRun,
    Op,
    UpdateExecution,
    UpdateTaskRun,
)

E = ExecutionState
T = TaskRunState
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def definition(name: str = "wf", x: int = 1) -> Definition:
    return parse_definition({"name": name, "tasks": {"a": {"action": "echo", "with": {"x": x}}}})


def workflow(store: Store, project: str = "p", name: str = "wf") -> WorkflowRecord:
    pid = store.ensure_project(project, T0)
    wf, _, _ = store.put_workflow(pid, definition(name), T0)
    return wf


def execution(
    wf: WorkflowRecord,
    name: str,
    created_at: datetime = T0,
    state: ExecutionState = E.INITIALIZING,
    labels: dict[str, str] | None = None,
) -> ExecutionRecord:
    return ExecutionRecord(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"{wf.id}/{name}").hex,
        project_id=wf.project_id,
        workflow_id=wf.id,
        workflow_name=wf.name,
        revision=wf.latest_revision,
        name=name,
        state=state,
        inputs={"n": 1},
        labels=labels or {},
        outputs=None,
        error=None,
        created_at=created_at,
        started_at=created_at,
        ended_at=None,
        updated_at=created_at,
    )


def start(store: Store, wf: WorkflowRecord, name: str, **kwargs: Any) -> ExecutionRecord:
    return store.create_execution(execution(wf, name, **kwargs))


def task_run(
    execution_id: str, task_id: str = "a", attempt: int = 1, state: TaskRunState = T.RUNNING
) -> TaskRunRecord:
    return TaskRunRecord(execution_id, task_id, attempt, state, queued_at=T0, started_at=T0)


def lease(store: Store, execution_id: str) -> tuple[str | None, datetime | None]:
    e = s.executions
    q = sa.select(e.c.lease_owner, e.c.lease_expires_at).where(e.c.id == execution_id)
    with store.engine.connect() as conn:
        owner, expires = conn.execute(q).one()
    return owner, expires


def ids(records: list[ExecutionRecord]) -> set[str]:
    return {r.id for r in records}


# migrations ---------------------------------------------------------------------------


def test_migrations_create_exactly_the_schema(store: Store) -> None:
    assert current_revision(store.engine) == head_revision(store.engine)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, s.metadata) == []


# projects and tokens ------------------------------------------------------------------


def test_ensure_project_is_idempotent(store: Store) -> None:
    first = store.ensure_project("p", T0)
    assert store.ensure_project("p", at(10)) == first
    assert store.ensure_project("q", T0) != first
    assert store.project_id("p") == first
    assert store.project_id("missing") is None


def test_a_token_authenticates_as_its_project_and_role(store: Store) -> None:
    store.ensure_project("other", T0)
    pid = store.ensure_project("p", T0)
    token_id, secret = store.create_token(pid, "operator", T0, description="ci")
    assert store.authenticate(secret, at(1)) == (Principal(token_id, pid, "p", "operator"), None)
    assert store.authenticate(secret + "x", at(1)) is None
    assert store.authenticate("ef_unknown", at(1)) is None


def test_an_expired_token_does_not_authenticate(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    _, secret = store.create_token(pid, "viewer", T0, expires_at=at(3600))
    assert store.authenticate(secret, at(3599)) is not None
    assert store.authenticate(secret, at(3600)) is None


def test_a_revoked_token_does_not_authenticate(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    token_id, secret = store.create_token(pid, "admin", T0)
    assert store.authenticate(secret, at(1)) is not None
    with store.engine.begin() as conn:
        conn.execute(s.tokens.update().where(s.tokens.c.id == token_id).values(revoked_at=at(2)))
    assert store.authenticate(secret, at(3)) is None


def test_only_a_hash_of_the_secret_is_stored(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    token_id, secret = store.create_token(pid, "admin", T0)
    store.authenticate(secret, at(1))
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(s.tokens)).mappings().one()
    assert row["id"] == token_id
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in str(value) for value in row.values())


async def test_authenticate_records_last_use_at_most_once_a_minute(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    token_id, secret = store.create_token(pid, "admin", T0)
    clock = ManualClock(T0)
    service = Service(store, DefinitionCache(store), None, clock)
    q = sa.select(s.tokens.c.last_used_at).where(s.tokens.c.id == token_id)
    seen = []
    for when in (at(10), at(40), at(71)):
        clock.set(when)
        await service.authenticate(secret)
        with store.engine.connect() as conn:
            seen.append(conn.execute(q).scalar_one())
    assert seen == [at(10), at(10), at(71)]


def test_an_unknown_role_is_refused(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    with pytest.raises(InvalidInput, match="unknown role"):
        store.create_token(pid, "root", T0)
    assert store.count_tokens() == 0


# workflows ----------------------------------------------------------------------------


def test_put_workflow_creates_revision_one(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    wf, number, created = store.put_workflow(pid, definition(), T0)
    assert (number, created) == (1, True)
    assert (wf.project_id, wf.name, wf.latest_revision) == (pid, "wf", 1)
    assert store.get_workflow(pid, "wf") == wf


def test_reapplying_an_identical_definition_makes_no_revision(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    first, _, _ = store.put_workflow(pid, definition(), T0)
    wf, number, created = store.put_workflow(pid, definition(), at(60))
    assert (number, created) == (1, False)
    assert wf == first
    with pytest.raises(NotFound):
        store.get_revision(wf.id, 2)


def test_a_changed_definition_makes_a_new_revision(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    v1, v2 = definition(x=1), definition(x=2)
    first, _, _ = store.put_workflow(pid, v1, T0)
    wf, number, created = store.put_workflow(pid, v2, at(60))
    assert (number, created) == (2, False)
    assert (wf.id, wf.latest_revision, wf.updated_at) == (first.id, 2, at(60))
    assert store.get_workflow(pid, "wf").latest_revision == 2
    assert store.get_revision(wf.id, 1).definition == v1.source
    assert store.get_revision(wf.id, 2).definition == v2.source
    assert store.get_revision(wf.id, 2).digest == v2.digest
    # Going back to an earlier definition is a change too.
    assert store.put_workflow(pid, v1, at(120))[1] == 3


def test_a_workflow_is_invisible_to_other_projects(store: Store) -> None:
    wf = workflow(store, "p")
    other = store.ensure_project("q", T0)
    with pytest.raises(NotFound):
        store.get_workflow(other, wf.name)
    with pytest.raises(NotFound):
        store.delete_workflow(other, wf.name)
    assert store.get_workflow(wf.project_id, wf.name) == wf


def test_list_workflows_lists_only_the_callers_project(store: Store) -> None:
    pid = store.ensure_project("p", T0)
    other = store.ensure_project("q", T0)
    for name in ("zeta", "alpha"):
        store.put_workflow(pid, definition(name), T0)
    store.put_workflow(other, definition("beta"), T0)
    assert [w.name for w in store.list_workflows(pid)] == ["alpha", "zeta"]
    assert [w.name for w in store.list_workflows(other)] == ["beta"]


def test_delete_workflow_waits_for_active_executions_to_end(store: Store) -> None:
    wf = workflow(store)
    ex = store.create_execution(execution(wf, "run"), lease_owner="e1", lease_expires_at=at(60))
    store.apply("e1", [InsertTaskRun(task_run(ex.id))])
    with pytest.raises(Conflict, match="active"):
        store.delete_workflow(wf.project_id, wf.name)
    assert store.get_workflow(wf.project_id, wf.name) == wf

    store.apply("e1", [UpdateExecution(ex.id, E.INITIALIZING, E.COMPLETED, at(1), release=True)])
    store.delete_workflow(wf.project_id, wf.name)
    with pytest.raises(NotFound):
        store.get_workflow(wf.project_id, wf.name)
    with pytest.raises(NotFound):
        store.get_execution(ex.id)
    with pytest.raises(NotFound):
        store.get_revision(wf.id, 1)


# executions ---------------------------------------------------------------------------


def test_an_execution_round_trips_with_utc_timestamps(store: Store) -> None:
    wf = workflow(store)
    plus2 = timezone(timedelta(hours=2))
    rec = replace(
        execution(wf, "run", labels={"team": "data"}),
        inputs={"n": 1, "nested": {"list": [1, "two", None, True]}},
        created_at=datetime(2030, 1, 1, 2, 0, 0, 123456, tzinfo=plus2),
        started_at=at(1),
        updated_at=at(2),
        started_by="token-1",
    )
    assert store.create_execution(rec) == rec
    got = store.get_execution(rec.id, wf.project_id)
    assert got == rec
    assert got.created_at == datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    for stamp in (got.created_at, got.started_at, got.updated_at):
        assert stamp.tzinfo == UTC


def test_outputs_errors_and_end_written_by_the_engine_round_trip(store: Store) -> None:
    wf = workflow(store)
    ex = store.create_execution(execution(wf, "run"), lease_owner="e1", lease_expires_at=at(60))
    outputs = {"result": [1, {"k": "v"}]}
    error = {"type": "outputs", "message": "no"}
    store.apply(
        "e1",
        [
            UpdateExecution(
                ex.id, E.INITIALIZING, E.FAILED, at(5), outputs=outputs, error=error, ended_at=at(5)
            )
        ],
    )
    got = store.get_execution(ex.id)
    assert (got.state, got.outputs, got.error) == (E.FAILED, outputs, error)
    assert got.ended_at == at(5)
    assert got.updated_at == at(5)
    assert got.ended_at.tzinfo == UTC


def test_an_execution_name_is_unique_within_its_workflow(store: Store) -> None:
    wf = workflow(store)
    other = workflow(store, name="other")
    first = start(store, wf, "nightly")
    duplicate = replace(first, id="f" * 32)
    with pytest.raises(Conflict, match="nightly"):
        store.create_execution(duplicate)
    with pytest.raises(NotFound):
        store.get_execution(duplicate.id)
    start(store, other, "nightly")


def test_an_execution_is_invisible_to_other_projects(store: Store) -> None:
    ex = start(store, workflow(store, "p"), "run")
    other = store.ensure_project("q", T0)
    with pytest.raises(NotFound):
        store.get_execution(ex.id, other)
    with pytest.raises(NotFound):
        store.request_cancel(ex.id, other, at(1))
    assert store.list_executions(other) == ([], None)
    assert store.get_execution(ex.id, ex.project_id).id == ex.id


def test_list_executions_is_newest_first_and_filters(store: Store) -> None:
    wf = workflow(store)
    other = workflow(store, name="other")
    old = start(store, wf, "old", created_at=at(1), labels={"team": "data", "env": "prod"})
    mid = start(store, other, "mid", created_at=at(2), labels={"team": "data", "env": "dev"})
    new = start(store, wf, "new", created_at=at(3), state=E.RUNNING, labels={"team": "web"})
    pid = wf.project_id

    def names(**filters: Any) -> list[str]:
        page, cursor = store.list_executions(pid, **filters)
        assert cursor is None
        return [r.name for r in page]

    assert names() == [new.name, mid.name, old.name]
    assert names(workflow="wf") == [new.name, old.name]
    assert names(state="RUNNING") == [new.name]
    assert names(state="INITIALIZING", workflow="other") == [mid.name]
    assert names(labels={"team": "data"}) == [mid.name, old.name]
    assert names(labels={"team": "data", "env": "prod"}) == [old.name]
    assert names(labels={"team": "nobody"}) == []


def test_lists_keep_several_states_skip_an_offset_go_oldest_first_and_count(
    store: Store,
) -> None:
    wf = workflow(store)
    other = workflow(store, name="other")
    states = [E.RUNNING, E.FAILED, E.COMPLETED, E.RUNNING, E.CANCELED, E.FAILED]
    runs = [start(store, wf, f"r{i}", created_at=at(i), state=st) for i, st in enumerate(states)]
    start(store, other, "elsewhere", created_at=at(9), state=E.FAILED)
    pid = wf.project_id
    ended = {"FAILED", "CANCELED"}

    def names(**options: Any) -> list[str]:
        return [r.name for r in store.list_executions(pid, "wf", limit=100, **options)[0]]

    assert names(states=ended) == ["r5", "r4", "r1"]
    assert names(states=ended, offset=1) == ["r4", "r1"]
    assert names(states=set()) == []
    assert names(oldest_first=True) == [r.name for r in runs]
    assert names(oldest_first=True, offset=4) == ["r4", "r5"]
    page, cursor = store.list_executions(pid, "wf", limit=2, oldest_first=True, states=ended)
    assert [r.name for r in page] == ["r1", "r4"] and cursor is not None
    page, cursor = store.list_executions(
        pid, "wf", limit=2, cursor=cursor, oldest_first=True, states=ended
    )
    assert ([r.name for r in page], cursor) == (["r5"], None)
    assert store.count_executions(pid) == 7
    assert store.count_executions(pid, "wf") == 6
    assert store.count_executions(pid, "wf", states=ended) == 3
    assert store.count_executions(pid, states={"FAILED"}) == 3
    assert store.count_executions(store.ensure_project("q", T0)) == 0
    assert names(created=(at(2), at(4))) == ["r3", "r2"]
    assert names(created=(at(4), None), oldest_first=True) == ["r4", "r5"]
    assert names(created=(None, at(1))) == ["r0"]
    assert store.count_executions(pid, "wf", states=ended, created=(at(2), None)) == 2


@pytest.mark.parametrize("count", [6, 7])
@pytest.mark.parametrize("shared", [False, True], ids=["distinct", "shared-created-at"])
def test_the_cursor_pages_through_every_execution_once(
    store: Store, count: int, shared: bool
) -> None:
    wf = workflow(store)
    for i in range(count):
        # With `shared`, pairs of executions have the same created_at: the id breaks the tie.
        start(store, wf, f"run{i}", created_at=at(i // 2 if shared else i))
    everything, cursor = store.list_executions(wf.project_id, limit=100)
    assert cursor is None
    assert [r.created_at for r in everything] == sorted(
        (r.created_at for r in everything), reverse=True
    )

    pages: list[list[str]] = []
    cursor = None
    while True:
        page, cursor = store.list_executions(wf.project_id, limit=3, cursor=cursor)
        pages.append([r.id for r in page])
        if cursor is None:
            break
        assert len(pages) < count
    assert [len(p) for p in pages] == ([3, 3, 1] if count == 7 else [3, 3])
    assert [i for p in pages for i in p] == [r.id for r in everything]


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "abc",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'{"a": 1, "b": 2}').decode(),
        base64.urlsafe_b64encode(b'["yesterday", "x"]').decode(),
    ],
)
def test_a_garbage_cursor_is_invalid_input(store: Store, cursor: str) -> None:
    wf = workflow(store)
    with pytest.raises(InvalidInput, match="cursor"):
        store.list_executions(wf.project_id, cursor=cursor)


def test_a_cursor_with_a_naive_timestamp_is_invalid_input(store: Store) -> None:
    wf = workflow(store)
    forged = base64.urlsafe_b64encode(json.dumps(["2030-01-01T00:00:00", "x"]).encode()).decode()
    with pytest.raises(InvalidInput, match="cursor"):
        store.list_executions(wf.project_id, cursor=forged)


def test_request_cancel_marks_active_executions_only(store: Store) -> None:
    wf = workflow(store)
    ex = start(store, wf, "run")
    done = start(store, wf, "done", state=E.COMPLETED)
    got = store.request_cancel(ex.id, ex.project_id, at(9))
    assert (got.cancel_requested, got.updated_at) == (True, at(9))
    assert store.get_execution(ex.id).cancel_requested is True
    with pytest.raises(Conflict, match="ended"):
        store.request_cancel(done.id, done.project_id, at(9))
    assert store.get_execution(done.id).cancel_requested is False


# engine -------------------------------------------------------------------------------


def test_claim_leases_only_active_executions_without_a_live_lease(store: Store) -> None:
    wf = workflow(store)
    free = start(store, wf, "free")
    running = start(store, wf, "running", state=E.RUNNING)
    live = store.create_execution(execution(wf, "live"), lease_owner="x", lease_expires_at=at(1))
    stale = store.create_execution(execution(wf, "stale"), lease_owner="x", lease_expires_at=at(-1))
    for ended in (E.COMPLETED, E.FAILED, E.CANCELED):
        start(store, wf, ended.value.lower(), state=ended)

    claimed = store.claim("a", 100, at(30), T0)
    assert ids(claimed) == {free.id, running.id, stale.id}
    for rec in claimed:
        assert lease(store, rec.id) == ("a", at(30))
    assert lease(store, live.id) == ("x", at(1))
    # Once the live lease has expired, it is up for grabs too.
    assert ids(store.claim("b", 100, at(60), at(2))) == {live.id}


def test_claims_by_two_owners_do_not_overlap_and_respect_the_limit(store: Store) -> None:
    wf = workflow(store)
    everything = {start(store, wf, f"run{i}", created_at=at(i)).id for i in range(5)}
    first = ids(store.claim("a", 3, at(30), T0))
    second = ids(store.claim("b", 3, at(30), T0))
    assert len(first) == 3
    assert len(second) == 2
    assert first | second == everything
    assert store.claim("c", 3, at(30), T0) == []


async def test_concurrent_claims_give_each_execution_to_one_owner(store: Store) -> None:
    wf = workflow(store)
    everything = {start(store, wf, f"run{i}", created_at=at(i)).id for i in range(12)}
    owners = [f"engine{i}" for i in range(4)]
    batches = await asyncio.gather(
        *(store.call(store.claim, owner, 3, at(30), T0) for owner in owners)
    )
    batches.append(store.claim("sweeper", 100, at(30), T0))
    claimed = [rec.id for batch in batches for rec in batch]
    assert sorted(claimed) == sorted(everything)
    for owner, batch in zip([*owners, "sweeper"], batches, strict=True):
        assert len(batch) <= 3 or owner == "sweeper"
        for rec in batch:
            assert lease(store, rec.id)[0] == owner


def test_claim_returns_executions_with_their_task_runs(store: Store) -> None:
    wf = workflow(store)
    ex = start(store, wf, "run")
    bare = start(store, wf, "bare", created_at=at(1))
    store.claim("a", 10, at(30), T0)
    runs = [
        replace(task_run(ex.id, "a", 1, T.FAILED), ended_at=at(1), error={"type": "boom"}),
        replace(task_run(ex.id, "a", 2, T.SCHEDULED), started_at=None, wake_at=at(10)),
    ]
    store.apply("a", [InsertTaskRun(r) for r in runs])
    store.release_leases("a")

    claimed = {rec.id: rec for rec in store.claim("b", 10, at(30), T0)}
    assert claimed[ex.id].task_runs == tuple(runs)
    assert claimed[bare.id].task_runs == ()


def test_renew_extends_only_the_owners_leases(store: Store) -> None:
    wf = workflow(store)
    mine = [start(store, wf, f"mine{i}", created_at=at(i)).id for i in range(2)]
    theirs = start(store, wf, "theirs", created_at=at(5)).id
    assert ids(store.claim("a", 2, at(30), T0)) == set(mine)
    assert ids(store.claim("b", 2, at(30), T0)) == {theirs}

    # what "a" holds comes back; an execution it asks for but does not hold does not
    assert store.renew("a", at(90), [*mine, theirs]) == set(mine)
    assert [lease(store, i) for i in mine] == [("a", at(90))] * 2
    assert lease(store, theirs) == ("b", at(30))
    assert ids(store.claim("c", 10, at(120), at(60))) == {theirs}


def test_renew_extends_only_what_the_engine_still_has_in_mind(store: Store) -> None:
    """A lease the engine forgot (it dropped the execution after a failed write and the
    release failed too) is not renewed: it expires, and another node takes it over."""
    wf = workflow(store)
    kept, forgotten = (start(store, wf, f"e{i}", created_at=at(i)).id for i in range(2))
    assert ids(store.claim("a", 2, at(30), T0)) == {kept, forgotten}
    assert store.renew("a", at(90), [kept]) == {kept}
    assert lease(store, forgotten) == ("a", at(30))
    assert ids(store.claim("b", 10, at(120), at(60))) == {forgotten}
    assert store.renew("a", at(150), [kept, forgotten]) == {kept}


def test_an_engine_sees_the_pending_commands_of_what_it_holds_until_done(store: Store) -> None:
    wf = workflow(store)
    mine = [start(store, wf, f"mine{i}", created_at=at(i)).id for i in range(2)]
    theirs = start(store, wf, "theirs", created_at=at(5)).id
    store.claim("a", 2, at(30), T0)
    store.claim("b", 2, at(30), T0)
    store.request_cancel(mine[1], wf.project_id, at(1))
    store.request_cancel(theirs, wf.project_id, at(1))

    pending = store.pending_commands("a")
    assert [(c.execution_id, c.kind) for c in pending] == [(mine[1], "cancel")]
    assert store.get_execution(mine[1]).cancel_requested is True
    store.apply("a", [FinishCommand(mine[1], pending[0].id, at(2))])
    assert store.pending_commands("a") == []
    assert [c.execution_id for c in store.pending_commands("b")] == [theirs]


def test_released_leases_can_be_claimed_again(store: Store) -> None:
    wf = workflow(store)
    a = {start(store, wf, f"run{i}", created_at=at(i)).id for i in range(2)}
    b = store.create_execution(execution(wf, "b"), lease_owner="b", lease_expires_at=at(30)).id
    store.claim("a", 10, at(30), T0)
    assert store.claim("c", 10, at(30), T0) == []
    assert store.release_leases("a") == 2
    assert ids(store.claim("c", 10, at(30), T0)) == a
    assert lease(store, b) == ("b", at(30))


def test_apply_writes_task_runs_and_execution_state(store: Store) -> None:
    wf = workflow(store)
    ex = start(store, wf, "run")
    store.claim("a", 1, at(30), T0)
    store.apply(
        "a",
        [
            InsertTaskRun(task_run(ex.id, "a")),
            InsertTaskRun(replace(task_run(ex.id, "b", state=T.SCHEDULED), wake_at=at(3))),
            UpdateExecution(ex.id, E.INITIALIZING, E.RUNNING, at(1)),
        ],
    )
    store.apply(
        "a",
        [
            UpdateTaskRun(ex.id, "a", 1, T.RUNNING, T.COMPLETED, output={"x": 1}, ended_at=at(2)),
            UpdateTaskRun(ex.id, "b", 1, T.SCHEDULED, T.RUNNING, started_at=at(3), wake_at=None),
            UpdateExecution(ex.id, E.RUNNING, E.WAITING, at(3)),
        ],
    )
    got = store.get_execution(ex.id)
    assert (got.state, got.updated_at) == (E.WAITING, at(3))
    assert got.task_runs == (
        replace(task_run(ex.id, "a", state=T.COMPLETED), output={"x": 1}, ended_at=at(2)),
        replace(task_run(ex.id, "b"), started_at=at(3)),
    )
    assert lease(store, ex.id) == ("a", at(30))

    store.apply("a", [UpdateExecution(ex.id, E.WAITING, E.COMPLETED, at(4), release=True)])
    assert lease(store, ex.id) == (None, None)


def _batch(ex: str, fault: str) -> tuple[str, list[Op]]:
    """A batch for an execution leased by "a" with a RUNNING attempt a#1, with one fault."""
    attempt = 2 if fault == "attempt" else 1
    expected_task = T.SCHEDULED if fault == "task-state" else T.RUNNING
    expected = E.WAITING if fault == "execution-state" else E.RUNNING
    owner = "b" if fault == "owner" else "a"
    return owner, [
        InsertTaskRun(task_run(ex, "b")),
        UpdateTaskRun(ex, "a", attempt, expected_task, T.COMPLETED, output=1, ended_at=at(2)),
        UpdateExecution(ex, expected, E.COMPLETED, at(2), outputs={"x": 1}, ended_at=at(2)),
    ]


def _running(store: Store, wf: WorkflowRecord, name: str) -> str:
    ex = start(store, wf, name)
    assert ids(store.claim("a", 1, at(30), T0)) == {ex.id}
    store.apply(
        "a",
        [
            InsertTaskRun(task_run(ex.id, "a")),
            UpdateExecution(ex.id, E.INITIALIZING, E.RUNNING, at(1)),
        ],
    )
    return ex.id


FAULTS = ["attempt", "task-state", "owner", "execution-state"]


@pytest.mark.parametrize("fault", ["none", *FAULTS])
def test_a_lost_race_raises_lease_lost_and_writes_nothing(store: Store, fault: str) -> None:
    wf = workflow(store)
    ex = _running(store, wf, "run")
    before = store.get_execution(ex)
    owner, ops = _batch(ex, fault)
    if fault == "none":
        store.apply(owner, ops)
        assert store.get_execution(ex).state == E.COMPLETED
        return
    with pytest.raises(LeaseLost) as lost:
        store.apply(owner, ops)
    assert lost.value.ids == {ex}
    assert store.get_execution(ex) == before
    assert lease(store, ex) == ("a", at(30))


def test_lease_lost_names_only_the_executions_that_lost(store: Store) -> None:
    wf = workflow(store)
    good, bad = _running(store, wf, "good"), _running(store, wf, "bad")
    before = [store.get_execution(good), store.get_execution(bad)]
    _, good_ops = _batch(good, "none")
    _, bad_ops = _batch(bad, "execution-state")
    with pytest.raises(LeaseLost) as lost:
        store.apply("a", [*good_ops, *bad_ops])
    assert lost.value.ids == {bad}
    assert [store.get_execution(good), store.get_execution(bad)] == before
    store.apply("a", good_ops)
    assert store.get_execution(good).state == E.COMPLETED


def test_an_engine_that_lost_the_lease_cannot_write_task_runs(store: Store) -> None:
    wf = workflow(store)
    ex = _running(store, wf, "run")
    # "a" stalls past its lease and "b" takes the execution over.
    assert ids(store.claim("b", 1, at(90), at(31))) == {ex}
    before = store.get_execution(ex)
    with pytest.raises(LeaseLost):
        store.apply("a", [UpdateTaskRun(ex, "a", 1, T.RUNNING, T.COMPLETED, output=1)])
    assert store.get_execution(ex) == before


def _note(execution_id: str) -> InsertEvent:
    return InsertEvent(EventRecord(execution_id, at(40), 6, "note", "written by a stale engine"))


@pytest.mark.parametrize("count", [1, 3])
def test_an_engine_that_lost_the_lease_cannot_insert_either(store: Store, count: int) -> None:
    wf = workflow(store)
    lost = [_running(store, wf, f"run{i}") for i in range(count)]
    kept = _running(store, wf, "kept")
    assert ids(store.claim("b", count, at(90), at(31))) == set(lost)
    with pytest.raises(LeaseLost) as caught:
        store.apply("a", [*(_note(ex) for ex in lost), _note(kept)])
    assert caught.value.ids == set(lost)
    assert all(not store.list_events(ex) for ex in [*lost, kept])


def test_an_insert_fenced_by_the_update_beside_it_is_undone_with_it(store: Store) -> None:
    wf = workflow(store)
    ex = _running(store, wf, "run")
    assert ids(store.claim("b", 1, at(90), at(31))) == {ex}
    with pytest.raises(LeaseLost):
        store.apply(
            "a",
            [
                InsertTaskRun(task_run(ex, "b")),
                _note(ex),
                UpdateTaskRun(ex, "a", 1, T.RUNNING, T.COMPLETED, output=1),
            ],
        )
    assert not store.list_events(ex)
    assert [(r.task_id, r.state) for r in store.get_execution(ex).task_runs] == [("a", T.RUNNING)]


# idempotency keys ---------------------------------------------------------------------------


def test_an_idempotency_key_names_one_execution_per_request_until_it_expires(
    store: Store,
) -> None:
    wf = workflow(store)
    first = execution(wf, "a")
    rec, created = store.create_keyed_execution(first, None, None, "k", "d1", at(60))
    assert (rec.id, created) == (first.id, True)
    rec, created = store.create_keyed_execution(execution(wf, "b"), None, None, "k", "d1", at(60))
    assert (rec.id, created) == (first.id, False)
    with pytest.raises(Conflict, match="another request"):
        store.create_keyed_execution(execution(wf, "c"), None, None, "k", "d2", at(60))
    later = execution(wf, "d", created_at=at(61))
    rec, created = store.create_keyed_execution(later, None, None, "k", "d2", at(120))
    assert (rec.id, created) == (later.id, True)
    assert store.forget_idempotency_keys(at(121)) == 1
    assert {e.name for e in store.list_executions(wf.project_id)[0]} == {"a", "d"}


def test_a_name_taken_by_another_process_meanwhile_fails_only_its_own_start(
    store: Store,
) -> None:
    wf = workflow(store)
    store.create_execution(execution(wf, "f" * 32))
    # named by its own id, so the name is not looked up first: only the insert finds it taken
    clash = replace(execution(wf, "other"), id="f" * 32, name="f" * 32)
    fine = execution(wf, "fine")
    results = store.create_executions([(clash, None, None), (fine, None, None)])
    assert isinstance(results[0], Conflict)
    assert results[1] == fine
    assert {e.name for e in store.list_executions(wf.project_id)[0]} == {"f" * 32, "fine"}


async def test_reads_survive_the_database_dropping_their_kept_connections(store: Store) -> None:
    """Reader threads keep their connections; a database restart drops them, and the next
    read opens a new one instead of failing."""
    if store.is_sqlite:
        pytest.skip("SQLite connections are files, nothing drops them")
    wf = workflow(store)
    assert (await store.read(store.get_workflow, wf.project_id, wf.name)).id == wf.id
    database = store.engine.url.database
    with store.engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        ).scalar_one()
    assert killed >= 1
    for _ in range(6):  # every reader thread meets its dead connection once
        assert (await store.read(store.get_workflow, wf.project_id, wf.name)).id == wf.id


def test_a_stale_engine_inserting_a_row_the_new_owner_wrote_loses_its_lease(
    store: Store,
) -> None:
    """The clash on the row comes before the guard beside it can fail: still LeaseLost."""
    wf = workflow(store)
    ex = _running(store, wf, "run")
    assert ids(store.claim("b", 1, at(90), at(31))) == {ex}
    store.apply("b", [InsertTaskRun(task_run(ex, "b"))])
    with pytest.raises(LeaseLost) as lost:
        store.apply(
            "a",
            [
                InsertTaskRun(task_run(ex, "b")),
                UpdateTaskRun(ex, "a", 1, T.RUNNING, T.COMPLETED, output=1),
            ],
        )
    assert lost.value.ids == {ex}
    assert store.get_execution(ex).task_runs[0].state == T.RUNNING


def test_a_nonce_is_taken_once_until_its_time_and_then_swept(store: Store) -> None:
    until = at(60)
    assert store.use_nonce("EFKEY", "n-1", at(0), until)
    assert not store.use_nonce("EFKEY", "n-1", at(1), until)
    assert store.use_nonce("EFOTHER", "n-1", at(1), until)  # another key's
    assert store.use_nonce("EFKEY", "x" * 10_000, at(1), until)  # any length: kept hashed
    # once its time is past, a use sweeps it: a replay that late fails its timestamp anyway
    assert store.use_nonce("EFKEY", "n-1", at(61), at(120))


async def test_a_read_during_an_outage_fails_and_the_next_one_after_it_works(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept connection found dead while the database cannot be reached: that read fails,
    and once the database answers again the next read opens a new connection (the dead one
    must not stay behind as the thread's connection)."""
    wf = workflow(store)
    with store.reading() as kept:
        kept.invalidate()  # as a database restart leaves it
    real = store.engine.connect

    def unreachable() -> Any:
        raise sa.exc.OperationalError("connect", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(store.engine, "connect", unreachable)
    for _ in range(3):
        with pytest.raises(sa.exc.OperationalError), store.reading() as conn:
            conn.execute(sa.text("SELECT 1"))
    monkeypatch.setattr(store.engine, "connect", real)
    for _ in range(3):
        assert store.get_workflow(wf.project_id, wf.name).id == wf.id


def test_a_node_whose_heartbeat_expired_holds_nothing(store: Store) -> None:
    """Executions of a node that stopped beating are claimable at once, whatever their own
    leases say; those of a node that beats are not."""
    wf = workflow(store)
    of_a = start(store, wf, "of-a", created_at=at(0)).id
    of_b = start(store, wf, "of-b", created_at=at(1)).id
    assert ids(store.claim("a", 1, at(300), T0)) == {of_a}
    assert ids(store.claim("b", 1, at(300), T0)) == {of_b}
    store.heartbeat("a", T0, at(9))
    store.heartbeat("b", T0, at(9))
    store.heartbeat("b", at(8), at(17))
    assert ids(store.claim("c", 10, at(310), at(10))) == {of_a}
    assert lease(store, of_b) == ("b", at(300))
    # a node that beats again holds what it still has
    store.heartbeat("a", at(11), at(20))
    assert store.renew("a", at(330), [of_a]) == set()
    assert store.renew("c", at(330), [of_a]) == {of_a}
