"""The only place that talks SQL: every use case and engine write is one transaction here.

Methods are synchronous and run on a small thread pool (`call`), so SQLite's
single writer is never contended inside one process and the event loop never
blocks on the database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, RowMapping

from execflow.auth import ROLES
from execflow.definition import Definition, parse_definition
from execflow.errors import Conflict, InvalidInput, NotFound, Unavailable
from execflow.records import (
    CallbackStatus,
    CommandRecord,
    EventRecord,
    ExecutionRecord,
    Principal,
    ProjectRecord,
    RevisionRecord,
    StoreEntry,
    TaskRunRecord,
    TokenRecord,
    WorkflowRecord,
)
from execflow.sealing import Sealed, Sealer
from execflow.states import ACTIVE, ExecutionState, TaskRunState
from execflow.store import schema as s
from execflow.store import writes
from execflow.store.database import is_outage
from execflow.store.keys import SecretKeys
from execflow.store.ops import Op

P = ParamSpec("P")
R = TypeVar("R")

_ACTIVE = [st.value for st in ACTIVE]


@contextmanager
def _reachable() -> Iterator[None]:
    """Translate a database outage into `Unavailable`, so callers (and the API, which
    answers 503) can tell "try again shortly" from a fault of the data."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise Unavailable() from exc


def new_id() -> str:
    return uuid.uuid4().hex


# the two kinds of credential (rows of the tokens table)
TOKEN, ACCESS_KEY = "token", "access_key"
_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_key_id() -> str:
    """An access key id: `EF` and 18 characters of A-Z2-7 (90 random bits)."""
    return "EF" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(18))


def hash_secret(secret: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain SHA-256 is a sound one-way store.
    return hashlib.sha256(secret.encode()).hexdigest()


# Hot reads, built once: building a statement costs more than running it on SQLite.
def _live_credential(kind: str, match: Any) -> sa.Select[Any]:
    """A live (not revoked) credential of `kind` with what authenticating it needs."""
    t = s.tokens
    columns = (t.c.id, t.c.project_id, t.c.role, t.c.expires_at, t.c.last_used_at)
    return (
        sa.select(*columns, t.c.sealed_secret, s.projects.c.name)
        .join(s.projects, s.projects.c.id == t.c.project_id)
        .where(match, t.c.revoked_at.is_(None), t.c.kind == kind)
    )


_TOKEN_BY_HASH = _live_credential(TOKEN, s.tokens.c.secret_hash == sa.bindparam("hash"))
_ACCESS_KEY = _live_credential(ACCESS_KEY, s.tokens.c.id == sa.bindparam("id"))
_TOKEN_COLUMNS = (
    s.tokens.c.id,
    s.tokens.c.project_id,
    s.tokens.c.role,
    s.tokens.c.description,
    s.tokens.c.created_at,
    s.tokens.c.expires_at,
    s.tokens.c.revoked_at,
    s.tokens.c.last_used_at,
    s.tokens.c.created_by,
)
_WORKFLOW_BY_NAME = sa.select(s.workflows).where(
    s.workflows.c.project_id == sa.bindparam("project"),
    s.workflows.c.name == sa.bindparam("name"),
)
_EXECUTION_BY_ID = sa.select(s.executions).where(s.executions.c.id == sa.bindparam("id"))
# An execution's task runs as shown to people: fan-out items are paged separately.
_TASK_RUNS_OF = (
    sa.select(s.task_runs)
    .where(s.task_runs.c.execution_id == sa.bindparam("id"), s.task_runs.c.item.is_(None))
    .order_by(s.task_runs.c.id)
)


class Store:
    """Writes run on their own threads (one for SQLite, whose writer is single anyway, so
    it is never contended inside a process) and reads on others, so that a burst of
    reads never delays a commit: in WAL mode SQLite readers do not block the writer."""

    def __init__(self, engine: Engine, sealer: Sealer | None = None) -> None:
        self.engine = engine
        # seals secret values; without one given, a key that lives as long as this object
        self.sealer = sealer or Sealer.ephemeral()
        self.secret_keys = SecretKeys(self)
        self.is_sqlite = engine.dialect.name == "sqlite"
        writers = 1 if self.is_sqlite else 4
        self._writes = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="execflow-dbw")
        self._reads = ThreadPoolExecutor(
            max_workers=3, thread_name_prefix="execflow-dbr", initializer=self._reader_thread
        )
        self._starts = GroupCommit(self)
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._tick_conn: Connection | None = None

    def reading(self) -> Any:
        """A connection for reads (see `_reader`), for SQL kept beside this module."""
        return self._reader()

    def _reader_thread(self) -> None:
        self._local.keeps = True

    @contextmanager
    def _reader(self) -> Iterator[Connection]:
        """A connection for reads. SQLite (on every thread) and the reader threads keep one
        open: checking a pooled connection out, pinging it and resetting it costs more than
        the read (on PostgreSQL three round trips besides the query). pysqlite opens no
        transaction for a SELECT, and the kept PostgreSQL connections run in autocommit, so
        every statement sees the latest commit, as it would under READ COMMITTED."""
        if not (self.is_sqlite or getattr(self._local, "keeps", False)):
            with self.engine.connect() as pooled:
                yield pooled
            return
        kept: Connection | None = getattr(self._local, "conn", None)
        if kept is None or kept.closed or kept.invalidated:
            if kept is not None:
                # forgotten before reconnecting: if the database cannot be reached now, the
                # next read tries again instead of finding this dead one
                self._local.conn = None
                if kept in self._readers:
                    self._readers.remove(kept)
                with contextlib.suppress(Exception):
                    kept.close()
            kept = self.engine.connect()
            if not self.is_sqlite:
                kept = kept.execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = kept
            self._readers.append(kept)
        try:
            yield kept
        finally:
            if kept.in_transaction():
                kept.rollback()

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store method that writes, on the writer threads; Unavailable if the
        database cannot be reached."""
        loop = asyncio.get_running_loop()
        with _reachable():
            return await loop.run_in_executor(self._writes, lambda: fn(*args, **kwargs))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store method that only reads.

        On SQLite it runs right here on the event loop: a WAL read never waits for a lock
        and takes microseconds, less than the hop to a thread would cost. Elsewhere it
        runs on the reader threads. Unavailable if the database cannot be reached."""
        if self.is_sqlite:
            with _reachable():
                return fn(*args, **kwargs)

        def once_more_if_dropped() -> R:
            try:
                return fn(*args, **kwargs)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The kept connection died (a database restart): the read is safe to repeat.
                return fn(*args, **kwargs)

        loop = asyncio.get_running_loop()
        with _reachable():
            return await loop.run_in_executor(self._reads, once_more_if_dropped)

    async def start(
        self, record: ExecutionRecord, owner: str | None, expires: datetime | None
    ) -> ExecutionRecord:
        """Commit a new execution; concurrent starts share one transaction (group commit)."""
        return await self._starts.submit((record, owner, expires))

    def ping(self) -> None:
        """A trivial query: raises if the database does not answer."""
        with self._reader() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._writes.shutdown(wait=True)
        self._reads.shutdown(wait=True)
        for conn in list(self._readers):
            conn.close()
        if self._tick_conn is not None:
            self._tick_conn.close()
        self.engine.dispose()

    # projects and tokens ---------------------------------------------------------

    def ensure_project(self, name: str, now: datetime) -> str:
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(s.projects.c.id).where(s.projects.c.name == name))
            pid = found.scalar_one_or_none()
            if pid is None:
                pid = new_id()
                conn.execute(s.projects.insert().values(id=pid, name=name, created_at=now))
            return str(pid)

    def create_project(self, name: str, now: datetime) -> ProjectRecord:
        record = ProjectRecord(new_id(), name, now)
        try:
            with self.engine.begin() as conn:
                conn.execute(s.projects.insert().values(id=record.id, name=name, created_at=now))
        except sa.exc.IntegrityError:
            raise Conflict(f"project {name!r} already exists") from None
        return record

    def get_project(self, name: str) -> ProjectRecord:
        p = s.projects
        with self._reader() as conn:
            q = sa.select(p.c.id, p.c.name, p.c.created_at).where(p.c.name == name)
            row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"project {name!r} not found")
        return ProjectRecord(row.id, row.name, row.created_at)

    def list_projects(self, name: str | None = None) -> list[ProjectRecord]:
        """Every project by name, or only the one named."""
        p = s.projects
        q = sa.select(p.c.id, p.c.name, p.c.created_at).order_by(p.c.name)
        if name is not None:
            q = q.where(p.c.name == name)
        with self._reader() as conn:
            return [ProjectRecord(r.id, r.name, r.created_at) for r in conn.execute(q)]

    def project_id(self, name: str) -> str | None:
        with self._reader() as conn:
            q = sa.select(s.projects.c.id).where(s.projects.c.name == name)
            pid = conn.execute(q).scalar_one_or_none()
            return None if pid is None else str(pid)

    def count_tokens(self) -> int:
        with self._reader() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(s.tokens)).scalar_one())

    def create_token(
        self,
        project_id: str,
        role: str,
        now: datetime,
        description: str = "",
        expires_at: datetime | None = None,
        created_by: str | None = None,
        kind: str = TOKEN,
    ) -> tuple[str, str]:
        """Store a new credential and return (id, secret). A token's secret is kept only as
        a hash; an access key's secret is kept sealed too, since a signature is checked by
        computing it again."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if kind == TOKEN:
            token_id, secret, sealed = new_id(), "ef_" + secrets.token_urlsafe(32), None
        else:
            token_id, secret = new_key_id(), secrets.token_urlsafe(30)
            sealed = self.sealer.seal(secret).token
        with self.engine.begin() as conn:
            conn.execute(
                s.tokens.insert().values(
                    id=token_id,
                    project_id=project_id,
                    role=role,
                    secret_hash=hash_secret(secret),
                    description=description,
                    created_at=now,
                    expires_at=expires_at,
                    created_by=created_by,
                    kind=kind,
                    sealed_secret=sealed,
                )
            )
        return token_id, secret

    def list_tokens(self, project_id: str, kind: str = TOKEN) -> list[TokenRecord]:
        t = s.tokens
        q = sa.select(*_TOKEN_COLUMNS).where(t.c.project_id == project_id, t.c.kind == kind)
        with self._reader() as conn:
            return [
                TokenRecord(**r)
                for r in conn.execute(q.order_by(t.c.created_at, t.c.id)).mappings()
            ]

    def get_token(self, project_id: str, token_id: str, kind: str = TOKEN) -> TokenRecord:
        t = s.tokens
        q = sa.select(*_TOKEN_COLUMNS).where(
            t.c.project_id == project_id, t.c.id == token_id, t.c.kind == kind
        )
        with self._reader() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(f"{kind.replace('_', ' ')} {token_id!r} not found")
        return TokenRecord(**row)

    def revoke_token(
        self,
        project_id: str,
        token_id: str,
        now: datetime,
        keep_one_admin_of: str | None,
        kind: str = TOKEN,
    ) -> TokenRecord:
        """Revoke a token at once (a revoked one stays revoked from its first revocation);
        an access key with every token made with it.
        With `keep_one_admin_of`, the last live admin token of that project cannot go:
        without it nobody could administer the server any more."""
        t = s.tokens
        with self.engine.begin() as conn:
            row = (
                conn.execute(
                    sa.select(*_TOKEN_COLUMNS)
                    .where(t.c.project_id == project_id, t.c.id == token_id, t.c.kind == kind)
                    .with_for_update()
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"{kind.replace('_', ' ')} {token_id!r} not found")
            token = TokenRecord(**row)
            if token.revoked_at is not None:
                return token
            if kind == TOKEN and keep_one_admin_of == project_id and token.role == "admin":
                others = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(t)
                    .where(
                        t.c.project_id == project_id,
                        t.c.role == "admin",
                        t.c.kind == TOKEN,
                        t.c.id != token_id,
                        t.c.revoked_at.is_(None),
                        sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
                    )
                ).scalar_one()
                if not others:
                    raise Conflict(
                        "this is the last live admin token of the default project; "
                        "create another admin token first"
                    )
            conn.execute(t.update().where(t.c.id == token_id).values(revoked_at=now))
            if kind == ACCESS_KEY:
                # what was made with the key (a session opened by logging in with it) goes
                # with it: revoking a key cuts off everyone who held it
                made = sa.and_(t.c.created_by == token_id, t.c.revoked_at.is_(None))
                conn.execute(t.update().where(made, t.c.kind == TOKEN).values(revoked_at=now))
        return replace(token, revoked_at=now)

    def authenticate(self, secret: str, now: datetime) -> tuple[Principal, datetime | None] | None:
        """The principal of a live token, with when it was last used (read only)."""
        row = self._live(_TOKEN_BY_HASH, {"hash": hash_secret(secret)}, now)
        if row is None:
            return None
        return _principal(row), row["last_used_at"]

    def access_key(
        self, key_id: str, now: datetime
    ) -> tuple[Principal, str, datetime | None] | None:
        """The principal of a live access key, its secret (opened) and when it was last used."""
        row = self._live(_ACCESS_KEY, {"id": key_id}, now)
        if row is None:
            return None
        secret = self.sealer.open(Sealed(row["sealed_secret"]))
        return _principal(row), secret, row["last_used_at"]

    def _live(self, query: Any, params: dict[str, str], now: datetime) -> RowMapping | None:
        with self._reader() as conn:
            row = conn.execute(query, params).mappings().first()
        if row is None or (row["expires_at"] is not None and row["expires_at"] <= now):
            return None
        return row

    def use_nonce(self, key_id: str, nonce: str, now: datetime, until: datetime) -> bool:
        """Whether this is the first use of a signed request's nonce by the key, in the
        whole cluster (it is remembered until `until`, when a replay is out of time anyway).
        Nonces past their time are swept as they go."""
        n = s.signature_nonces
        row = {
            "key_id": key_id,
            "nonce_hash": hashlib.sha256(nonce.encode()).hexdigest(),
            "expires_at": until,
        }
        insert = (sqlite_insert(n) if self.is_sqlite else pg_insert(n)).on_conflict_do_nothing(
            index_elements=["key_id", "nonce_hash"]
        )
        with self.engine.begin() as conn:
            conn.execute(n.delete().where(n.c.expires_at <= now))
            return conn.execute(insert.returning(n.c.key_id), row).first() is not None

    def touch_token(self, token_id: str, now: datetime) -> None:
        t = s.tokens
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == token_id).values(last_used_at=now))

    # workflows --------------------------------------------------------------------

    def put_workflow(
        self, project_id: str, definition: Definition, now: datetime
    ) -> tuple[WorkflowRecord, int, bool]:
        """Store a definition: (workflow, revision, created); an identical re-apply is a no-op."""
        w, r = s.workflows, s.revisions
        with self.engine.begin() as conn:
            q = sa.select(w).where(w.c.project_id == project_id, w.c.name == definition.name)
            row = conn.execute(q.with_for_update()).mappings().first()
            if row is None:
                wid = new_id()
                conn.execute(
                    w.insert().values(
                        id=wid,
                        project_id=project_id,
                        name=definition.name,
                        description=definition.description,
                        latest_revision=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                self._insert_revision(conn, wid, 1, definition, now)
                return self._workflow(conn, wid), 1, True
            wid, latest = row["id"], row["latest_revision"]
            q2 = sa.select(r.c.digest).where(r.c.workflow_id == wid, r.c.number == latest)
            if conn.execute(q2).scalar_one() == definition.digest:
                return self._workflow(conn, wid), latest, False
            number = latest + 1
            self._insert_revision(conn, wid, number, definition, now)
            conn.execute(
                w.update()
                .where(w.c.id == wid)
                .values(latest_revision=number, description=definition.description, updated_at=now)
            )
            return self._workflow(conn, wid), number, False

    def _insert_revision(
        self, conn: Connection, wid: str, number: int, definition: Definition, now: datetime
    ) -> None:
        conn.execute(
            s.revisions.insert().values(
                workflow_id=wid,
                number=number,
                digest=definition.digest,
                definition=definition.source,
                created_at=now,
            )
        )

    def _workflow(self, conn: Connection, wid: str) -> WorkflowRecord:
        row = conn.execute(sa.select(s.workflows).where(s.workflows.c.id == wid)).mappings().one()
        return _workflow(row)

    def list_workflows(self, project_id: str) -> list[WorkflowRecord]:
        w = s.workflows
        q = sa.select(w).where(w.c.project_id == project_id).order_by(w.c.name)
        with self._reader() as conn:
            return [_workflow(row) for row in conn.execute(q).mappings()]

    def get_workflow(self, project_id: str, name: str) -> WorkflowRecord:
        with self._reader() as conn:
            params = {"project": project_id, "name": name}
            row = conn.execute(_WORKFLOW_BY_NAME, params).mappings().first()
        if row is None:
            raise NotFound(f"workflow {name!r} not found")
        return _workflow(row)

    def workflow_by_id(self, project_id: str, workflow_id: str) -> WorkflowRecord:
        w = s.workflows
        q = sa.select(w).where(w.c.id == workflow_id, w.c.project_id == project_id)
        with self._reader() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return _workflow(row)

    def ids_with_prefix(self, kind: str, project_id: str, prefix: str, limit: int = 2) -> list[str]:
        """The ids of a project's workflows or executions (`kind`) that begin with `prefix`:
        a range scan of the primary key, for dialects whose ids are numbers made of one."""
        table = s.workflows if kind == "workflow" else s.executions
        # ids are lower-case hex: every id beginning with the prefix sorts below prefix + "g"
        q = (
            sa.select(table.c.id)
            .where(table.c.id >= prefix, table.c.id < prefix + "g")
            .where(table.c.project_id == project_id)
            .order_by(table.c.id)
            .limit(limit)
        )
        with self._reader() as conn:
            return [row[0] for row in conn.execute(q)]

    def get_revision(self, workflow_id: str, number: int) -> RevisionRecord:
        r = s.revisions
        q = sa.select(r).where(r.c.workflow_id == workflow_id, r.c.number == number)
        with self._reader() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(f"revision {number} not found")
        return RevisionRecord(
            row["workflow_id"], row["number"], row["digest"], row["definition"], row["created_at"]
        )

    # sealed values -------------------------------------------------------------------------

    def missing_keys(self) -> list[str]:
        """Fingerprints of the keys that seal values in the database (recorded, not retired)
        that this node's sealer lacks; see `execflow.store.keys`."""
        return self.secret_keys.missing()

    def reseal(self, batch: int = 500) -> int:
        """Seal every sealed value again with the newest key (secret inputs, access keys'
        secrets, callback secrets), and seal what was stored before it was sealed (inputs,
        callback secrets); how many values were sealed."""
        e, r = s.executions, s.revisions
        secret_names: dict[tuple[str, int], list[str]] = {}
        done, after = 0, ""
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    sa.select(e.c.id, e.c.workflow_id, e.c.revision, e.c.inputs, e.c.sealed_inputs)
                    .where(e.c.id > after)
                    .order_by(e.c.id)
                    .limit(batch)
                ).all()
                for row in rows:
                    names = row.sealed_inputs
                    if names is None:  # stored before sealing: its secret parameters
                        at = (row.workflow_id, row.revision)
                        if at not in secret_names:
                            definition = conn.execute(
                                sa.select(r.c.definition).where(
                                    r.c.workflow_id == at[0], r.c.number == at[1]
                                )
                            ).scalar_one()
                            secret_names[at] = sorted(parse_definition(definition).secret_params)
                        names = [n for n in secret_names[at] if row.inputs.get(n) is not None]
                    if not names:
                        continue
                    inputs = dict(row.inputs)
                    for name in names:
                        if row.sealed_inputs is None:
                            inputs[name] = self.sealer.seal(inputs[name]).token
                        else:
                            inputs[name] = self.sealer.reseal(inputs[name])
                    conn.execute(
                        e.update()
                        .where(e.c.id == row.id)
                        .values(inputs=inputs, sealed_inputs=list(names))
                    )
                    done += len(names)
            if len(rows) < batch:
                break
            after = rows[-1].id
        t = s.tokens
        with self.engine.begin() as conn:
            keys = conn.execute(
                sa.select(t.c.id, t.c.sealed_secret).where(t.c.sealed_secret.is_not(None))
            ).all()
            for key in keys:
                resealed = self.sealer.reseal(key.sealed_secret)
                conn.execute(t.update().where(t.c.id == key.id).values(sealed_secret=resealed))
            p = s.projects
            kept = conn.execute(
                sa.select(p.c.id, p.c.callback_secret).where(p.c.callback_secret.is_not(None))
            ).all()
            for project in kept:
                value = project.callback_secret
                if len(value) == 64:  # made before callback secrets were sealed
                    value = self.sealer.seal(value).token
                else:
                    value = self.sealer.reseal(value)
                conn.execute(p.update().where(p.c.id == project.id).values(callback_secret=value))
        return done + len(keys) + len(kept)

    def delete_workflow(self, project_id: str, name: str) -> None:
        """Delete a workflow, its revisions and its ended executions; 409 while any is active."""
        w, e = s.workflows, s.executions
        with self.engine.begin() as conn:
            q = sa.select(w.c.id).where(w.c.project_id == project_id, w.c.name == name)
            wid = conn.execute(q.with_for_update()).scalar_one_or_none()
            if wid is None:
                raise NotFound(f"workflow {name!r} not found")
            active = conn.execute(
                sa.select(sa.func.count())
                .select_from(e)
                .where(e.c.workflow_id == wid, e.c.state.in_(_ACTIVE))
            ).scalar_one()
            if active:
                raise Conflict(f"workflow {name!r} has {active} active executions")
            ids = sa.select(e.c.id).where(e.c.workflow_id == wid).scalar_subquery()
            for child in (s.task_runs, s.commands, s.events, s.idempotency_keys, s.store_entries):
                conn.execute(child.delete().where(child.c.execution_id.in_(ids)))
            conn.execute(e.delete().where(e.c.workflow_id == wid))
            conn.execute(s.revisions.delete().where(s.revisions.c.workflow_id == wid))
            conn.execute(w.delete().where(w.c.id == wid))

    # executions -------------------------------------------------------------------

    def create_execution(
        self,
        rec: ExecutionRecord,
        lease_owner: str | None = None,
        lease_expires_at: datetime | None = None,
    ) -> ExecutionRecord:
        e = s.executions
        with self.engine.begin() as conn:
            taken = conn.execute(
                sa.select(e.c.id).where(e.c.workflow_id == rec.workflow_id, e.c.name == rec.name)
            ).scalar_one_or_none()
            if taken is not None:
                raise Conflict(f"an execution named {rec.name!r} already exists ({taken})")
            conn.execute(
                e.insert().values(writes.execution_values(rec, lease_owner, lease_expires_at))
            )
        return rec

    def create_executions(
        self, batch: Sequence[tuple[ExecutionRecord, str | None, datetime | None]]
    ) -> list[ExecutionRecord | Conflict]:
        """Insert many new executions in one transaction; a taken name is that item's Conflict."""
        try:
            return self._create_executions(batch, race=False)
        except sa.exc.IntegrityError:
            # Another process took one of these names between our check and our insert:
            # once more, leaving out whatever the database now refuses.
            return self._create_executions(batch, race=True)

    def _create_executions(
        self, batch: Sequence[tuple[ExecutionRecord, str | None, datetime | None]], race: bool
    ) -> list[ExecutionRecord | Conflict]:
        e = s.executions
        results: list[ExecutionRecord | Conflict] = []
        rows = []
        names: set[tuple[str, str]] = set()
        with self.engine.begin() as conn:
            for rec, owner, expires in batch:
                key = (rec.workflow_id, rec.name)
                # An execution named by its own fresh id cannot clash: no lookup needed.
                taken = key in names or (
                    rec.name != rec.id
                    and conn.execute(
                        sa.select(e.c.id).where(e.c.workflow_id == key[0], e.c.name == key[1])
                    ).first()
                )
                if taken:
                    results.append(Conflict(f"an execution named {rec.name!r} already exists"))
                    continue
                names.add(key)
                rows.append(writes.execution_values(rec, owner, expires))
                results.append(rec)
            if rows and not race:
                conn.execute(e.insert(), rows)
            elif rows:
                insert = (
                    sqlite_insert(e) if self.is_sqlite else pg_insert(e)
                ).on_conflict_do_nothing(index_elements=["workflow_id", "name"])
                made = set()
                for row in rows:
                    if conn.execute(insert.returning(e.c.id), row).first() is not None:
                        made.add(row["id"])
                results = [
                    r
                    if not isinstance(r, ExecutionRecord) or r.id in made
                    else Conflict(f"an execution named {r.name!r} already exists")
                    for r in results
                ]
        return results

    def create_keyed_execution(
        self,
        rec: ExecutionRecord,
        owner: str | None,
        expires: datetime | None,
        key: str,
        digest: str,
        key_expires: datetime,
    ) -> tuple[ExecutionRecord, bool]:
        """Create an execution under an Idempotency-Key, or return the one the key already
        names (False) when it was given for the same request; Conflict for another request."""
        try:
            return self._create_keyed(rec, owner, expires, key, digest, key_expires)
        except sa.exc.IntegrityError:
            # the same key raced in from another request: now it is there to be found
            return self._create_keyed(rec, owner, expires, key, digest, key_expires)

    def _create_keyed(
        self,
        rec: ExecutionRecord,
        owner: str | None,
        expires: datetime | None,
        key: str,
        digest: str,
        key_expires: datetime,
    ) -> tuple[ExecutionRecord, bool]:
        k, e = s.idempotency_keys, s.executions
        with self.engine.begin() as conn:
            where = sa.and_(k.c.project_id == rec.project_id, k.c.key == key)
            found = conn.execute(sa.select(k).where(where).with_for_update()).mappings().first()
            if found is not None and found["expires_at"] > rec.created_at:
                if found["request_digest"] != digest:
                    raise Conflict(
                        f"the Idempotency-Key {key!r} was used for another request "
                        f"(execution {found['execution_id']})"
                    )
                return self._get_execution(conn, found["execution_id"], None, False), False
            taken = conn.execute(
                sa.select(e.c.id).where(e.c.workflow_id == rec.workflow_id, e.c.name == rec.name)
            ).scalar_one_or_none()
            if taken is not None:
                raise Conflict(f"an execution named {rec.name!r} already exists ({taken})")
            conn.execute(e.insert().values(writes.execution_values(rec, owner, expires)))
            values = {
                "request_digest": digest,
                "execution_id": rec.id,
                "created_at": rec.created_at,
                "expires_at": key_expires,
            }
            if found is None:
                conn.execute(k.insert().values(project_id=rec.project_id, key=key, **values))
            else:  # an expired key is given anew
                conn.execute(k.update().where(where).values(**values))
        return rec, True

    def execution_by_name(self, workflow_id: str, name: str) -> ExecutionRecord | None:
        e = s.executions
        with self._reader() as conn:
            q = sa.select(e).where(e.c.workflow_id == workflow_id, e.c.name == name)
            row = conn.execute(q).mappings().first()
        return None if row is None else _execution(row, ())

    def forget_idempotency_keys(self, now: datetime) -> int:
        """Delete keys whose retention has passed."""
        k = s.idempotency_keys
        with self.engine.begin() as conn:
            return int(conn.execute(k.delete().where(k.c.expires_at <= now)).rowcount)

    def _get_execution(
        self,
        conn: Connection,
        execution_id: str,
        project_id: str | None,
        with_tasks: bool,
        for_engine: bool = False,
    ) -> ExecutionRecord:
        """`for_engine`: with fan-out items and store entries, as an engine adopts it."""
        row = conn.execute(_EXECUTION_BY_ID, {"id": execution_id}).mappings().first()
        if row is None or (project_id is not None and row["project_id"] != project_id):
            raise NotFound(f"execution {execution_id!r} not found")
        if for_engine:
            runs = self._task_runs(conn, [execution_id])[execution_id]
            entries = self._store_entries(conn, [execution_id])[execution_id]
            return replace(_execution(row, runs), store_entries=entries)
        found_runs: tuple[TaskRunRecord, ...] = ()
        if with_tasks:
            found = conn.execute(_TASK_RUNS_OF, {"id": execution_id}).mappings()
            found_runs = tuple(_task_run(r) for r in found)
        return _execution(row, found_runs)

    def get_execution(
        self, execution_id: str, project_id: str | None = None, with_tasks: bool = True
    ) -> ExecutionRecord:
        with self._reader() as conn:
            row = conn.execute(_EXECUTION_BY_ID, {"id": execution_id}).mappings().first()
            if row is None or (project_id is not None and row["project_id"] != project_id):
                raise NotFound(f"execution {execution_id!r} not found")
            runs: tuple[TaskRunRecord, ...] = ()
            if with_tasks:
                found = conn.execute(_TASK_RUNS_OF, {"id": execution_id}).mappings()
                runs = tuple(_task_run(r) for r in found)
        return _execution(row, runs)

    def _task_runs(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, tuple[TaskRunRecord, ...]]:
        t = s.task_runs
        out: dict[str, list[TaskRunRecord]] = {i: [] for i in ids}
        for chunk in _chunks(ids, 500):
            q = sa.select(t).where(t.c.execution_id.in_(chunk)).order_by(t.c.id)
            for row in conn.execute(q).mappings():
                out[row["execution_id"]].append(_task_run(row))
        return {k: tuple(v) for k, v in out.items()}

    def list_executions(
        self,
        project_id: str,
        workflow: str | None = None,
        state: str | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        states: Collection[str] | None = None,
        created: tuple[datetime | None, datetime | None] = (None, None),
        offset: int = 0,
        oldest_first: bool = False,
    ) -> tuple[list[ExecutionRecord], str | None]:
        """Newest first (or oldest first), keyset-paginated: the cursor is the last
        (created_at, id) seen. `states` keeps any of several states, `created` those
        created from its first time to before its second; `offset` skips that many first
        (for clients that page by number; a cursor is cheaper)."""
        e = s.executions
        q = _filtered(sa.select(e), project_id, workflow, state, labels, states, created)
        if cursor:
            at, last_id = _decode_cursor(cursor)
            if oldest_first:
                after = sa.and_(e.c.created_at == at, e.c.id > last_id)
                q = q.where(sa.or_(e.c.created_at > at, after))
            else:
                before = sa.and_(e.c.created_at == at, e.c.id < last_id)
                q = q.where(sa.or_(e.c.created_at < at, before))
        if oldest_first:
            q = q.order_by(e.c.created_at, e.c.id)
        else:
            q = q.order_by(e.c.created_at.desc(), e.c.id.desc())
        q = q.offset(offset).limit(limit + 1)
        with self._reader() as conn:
            rows = list(conn.execute(q).mappings())
        page = [_execution(row, ()) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
        return page, next_cursor

    def count_executions(
        self,
        project_id: str,
        workflow: str | None = None,
        labels: dict[str, str] | None = None,
        states: Collection[str] | None = None,
        created: tuple[datetime | None, datetime | None] = (None, None),
    ) -> int:
        """How many of a project's executions `list_executions` would give in all."""
        q = _filtered(
            sa.select(sa.func.count()).select_from(s.executions),
            project_id,
            workflow,
            None,
            labels,
            states,
            created,
        )
        with self._reader() as conn:
            return int(conn.execute(q).scalar_one())

    def request(
        self,
        execution_id: str,
        project_id: str,
        kind: str,
        payload: dict[str, Any],
        actor: str | None,
        now: datetime,
        check: Callable[[ExecutionRecord], None],
    ) -> ExecutionRecord:
        """Record a command for an execution, in one transaction with `check` (which raises
        to refuse it, seeing the execution and its task runs as they are now)."""
        e = s.executions
        with self.engine.begin() as conn:
            row = conn.execute(_EXECUTION_BY_ID, {"id": execution_id}).mappings().first()
            if row is None or row["project_id"] != project_id:
                raise NotFound(f"execution {execution_id!r} not found")
            runs = [
                _task_run(r) for r in conn.execute(_TASK_RUNS_OF, {"id": execution_id}).mappings()
            ]
            check(_execution(row, runs))
            conn.execute(
                s.commands.insert().values(
                    execution_id=execution_id,
                    kind=kind,
                    payload=payload,
                    actor=actor,
                    created_at=now,
                )
            )
            values: dict[str, Any] = {"updated_at": now}
            if kind == "cancel":
                values["cancel_requested"] = True
            conn.execute(e.update().where(e.c.id == execution_id).values(values))
        return self.get_execution(execution_id, project_id)

    def retry(
        self,
        execution_id: str,
        project_id: str,
        now: datetime,
        owner: str | None,
        expires: datetime | None,
        actor: str | None,
    ) -> ExecutionRecord:
        """Open a new round of a FAILED or CANCELED execution: it runs again, its completed
        tasks keep their outputs and the others (and what follows them) run anew."""
        e = s.executions
        with self.engine.begin() as conn:
            rec = self._get_execution(conn, execution_id, project_id, False)
            if rec.state not in (ExecutionState.FAILED, ExecutionState.CANCELED):
                raise Conflict(f"only a failed or cancelled execution can be retried ({rec.state})")
            values = {
                "state": ExecutionState.RUNNING.value,
                "round": rec.round + 1,
                "error": None,
                "outputs": None,
                "ended_at": None,
                "cancel_requested": False,
                "updated_at": now,
                "lease_owner": owner,
                "lease_expires_at": expires,
            }
            if rec.callback is not None:  # the next end is a new event to call back
                values.update(
                    callback_state="pending",
                    callback_attempts=0,
                    callback_next_at=None,
                    callback_last_status=None,
                    callback_last_error=None,
                )
            guard = sa.and_(e.c.id == execution_id, e.c.state == rec.state.value)
            if conn.execute(e.update().where(guard).values(values)).rowcount != 1:
                raise Conflict(f"execution {execution_id!r} changed meanwhile; try again")
            event = EventRecord(
                execution_id,
                now,
                5,
                "command",
                f"retry requested (round {rec.round + 1})",
                data={"from": rec.state.value, "to": ExecutionState.RUNNING.value},
                actor=actor,
            )
            conn.execute(s.events.insert().values(writes.event_values(event)))
            return self._get_execution(conn, execution_id, None, True, for_engine=True)

    def create_rerun(
        self,
        rec: ExecutionRecord,
        reused: Sequence[TaskRunRecord],
        owner: str | None,
        expires: datetime | None,
    ) -> ExecutionRecord:
        """Create an execution that starts with the outputs of tasks another one completed."""
        with self.engine.begin() as conn:
            conn.execute(s.executions.insert().values(writes.execution_values(rec, owner, expires)))
            if reused:
                conn.execute(s.task_runs.insert(), [writes.task_run_values(r) for r in reused])
        return replace(rec, task_runs=tuple(reused))

    def request_cancel(self, execution_id: str, project_id: str, now: datetime) -> ExecutionRecord:
        def active(rec: ExecutionRecord) -> None:
            if rec.state.terminal:
                raise Conflict(f"execution {execution_id!r} has already ended ({rec.state})")

        return self.request(execution_id, project_id, "cancel", {}, None, now, active)

    def pending_commands(self, owner: str) -> list[CommandRecord]:
        """Commands not yet carried out for executions `owner` holds, oldest first."""
        c, e = s.commands, s.executions
        q = (
            sa.select(c)
            .join(e, e.c.id == c.c.execution_id)
            .where(c.c.done_at.is_(None), e.c.lease_owner == owner)
            .order_by(c.c.id)
        )
        with self._reader() as conn:
            return [_command(r) for r in conn.execute(q).mappings()]

    def add_events(self, events: Sequence[EventRecord]) -> None:
        """Add audit entries outside any lease: what a node saw of an execution another
        node holds (a late result it ignored)."""
        with self.engine.begin() as conn:
            conn.execute(s.events.insert(), [writes.event_values(e) for e in events])

    def list_events(
        self,
        execution_id: str,
        max_level: int = 7,
        task: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[EventRecord]:
        """An execution's audit log in order, from the entry after `after`."""
        v = s.events
        q = sa.select(v).where(
            v.c.execution_id == execution_id, v.c.id > after, v.c.level <= max_level
        )
        if task is not None:
            q = q.where(v.c.task_id == task)
        q = q.order_by(v.c.id).limit(limit)
        with self._reader() as conn:
            return [_event(r) for r in conn.execute(q).mappings()]

    # engine -----------------------------------------------------------------------

    def release_leases(self, owner: str, ids: Sequence[str] | None = None) -> int:
        """Give up leases `owner` holds (all of them, as an engine restarting under the same
        identity does, or those of `ids`), so any engine can claim them at once."""
        e = s.executions
        where = e.c.lease_owner == owner
        with self.engine.begin() as conn:
            if ids is None:
                res = conn.execute(
                    e.update().where(where).values(lease_owner=None, lease_expires_at=None)
                )
                return int(res.rowcount)
            count = 0
            for chunk in _chunks(list(ids), 500):
                res = conn.execute(
                    e.update()
                    .where(where, e.c.id.in_(chunk))
                    .values(lease_owner=None, lease_expires_at=None)
                )
                count += int(res.rowcount)
            return count

    def claim(
        self, owner: str, limit: int, expires: datetime, now: datetime
    ) -> list[ExecutionRecord]:
        """Lease up to `limit` active executions nobody holds; returns them with their task runs."""
        e, n = s.executions, s.nodes
        free = sa.or_(e.c.lease_expires_at.is_(None), e.c.lease_expires_at < now)
        with self.engine.begin() as conn:
            # a node whose heartbeat expired holds nothing, whatever its leases say
            # (those dead for more than a day: their executions' own leases have expired)
            recently = sa.and_(n.c.expires_at < now, n.c.expires_at > now - timedelta(days=1))
            dead = list(conn.execute(sa.select(n.c.id).where(recently)).scalars())
            if dead:
                free = sa.or_(free, e.c.lease_owner.in_(dead))
            q = (
                sa.select(e.c.id)
                .where(e.c.state.in_(_ACTIVE), free)
                .order_by(e.c.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(conn.execute(q).scalars())
            if not ids:
                return []
            conn.execute(
                e.update()
                .where(e.c.id.in_(ids), free)
                .values(lease_owner=owner, lease_expires_at=expires)
            )
            rows = conn.execute(sa.select(e).where(e.c.id.in_(ids))).mappings().all()
            runs = self._task_runs(conn, ids)
            entries = self._store_entries(conn, ids)
        return [
            replace(_execution(row, runs.get(row["id"], ())), store_entries=entries[row["id"]])
            for row in rows
        ]

    def _store_entries(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, tuple[StoreEntry, ...]]:
        v = s.store_entries
        out: dict[str, list[StoreEntry]] = {i: [] for i in ids}
        for chunk in _chunks(ids, 500):
            q = sa.select(v).where(v.c.execution_id.in_(chunk)).order_by(v.c.store, v.c.seq)
            for row in conn.execute(q).mappings():
                out[row["execution_id"]].append(_entry(row))
        return {k: tuple(x) for k, x in out.items()}

    def store_entries(self, execution_id: str, store: str) -> list[StoreEntry]:
        """What tasks wrote to one store of an execution, in order."""
        v = s.store_entries
        q = (
            sa.select(v)
            .where(v.c.execution_id == execution_id, v.c.store == store)
            .order_by(v.c.seq)
        )
        with self._reader() as conn:
            return [_entry(r) for r in conn.execute(q).mappings()]

    def item_runs(
        self, execution_id: str, task_id: str, offset: int, limit: int
    ) -> list[TaskRunRecord]:
        """The runs of a fan-out's items, by item then attempt."""
        t = s.task_runs
        q = (
            sa.select(t)
            .where(
                t.c.execution_id == execution_id,
                t.c.item.is_not(None),
                t.c.task_id.startswith(task_id + "[", autoescape=True),
            )
            .order_by(t.c.item, t.c.attempt)
            .offset(offset)
            .limit(limit)
        )
        with self._reader() as conn:
            return [_task_run(r) for r in conn.execute(q).mappings()]

    def heartbeat(self, node: str, now: datetime, expires: datetime) -> int:
        """Record that `node` is alive until `expires` (see `schema.nodes`); how many
        executions other nodes asked it to hand over since its last beat."""
        n = s.nodes
        with self.engine.begin() as conn:
            asked = conn.execute(
                sa.select(n.c.wants).where(n.c.id == node).with_for_update()
            ).scalar()
            if asked is None:  # a node's first beat: forget long-dead ones
                conn.execute(n.delete().where(n.c.expires_at < now - timedelta(days=7)))
                conn.execute(n.insert().values(id=node, beat_at=now, expires_at=expires, wants=0))
                return 0
            beat = n.update().where(n.c.id == node)
            conn.execute(beat.values(beat_at=now, expires_at=expires, wants=0))
            return int(asked)

    def loads(self, now: datetime) -> dict[str, int]:
        """The live nodes and how many active executions each holds."""
        n, e = s.nodes, s.executions
        with self._reader() as conn:
            live = list(conn.execute(sa.select(n.c.id).where(n.c.expires_at >= now)).scalars())
            if not live:
                return {}
            held = conn.execute(
                sa.select(e.c.lease_owner, sa.func.count())
                .where(e.c.lease_owner.in_(live), e.c.state.in_(_ACTIVE))
                .group_by(e.c.lease_owner)
            ).all()
        counts = dict.fromkeys(live, 0)
        counts.update({owner: int(count) for owner, count in held})
        return counts

    def ask(self, node: str, count: int) -> None:
        """Ask `node` to hand `count` executions over (at its next heartbeat)."""
        n = s.nodes
        with self.engine.begin() as conn:
            conn.execute(n.update().where(n.c.id == node).values(wants=count))

    def renew(self, owner: str, expires: datetime, ids: Iterable[str]) -> set[str]:
        """Extend the leases of those of `ids` this engine still holds; the ids it holds.

        Only what the engine has in memory is renewed: a lease it forgot (after a failed
        write, say) expires and another node may take the execution over."""
        e = s.executions
        held: set[str] = set()
        with self.engine.begin() as conn:
            for chunk in _chunks(sorted(ids), 500):
                stmt = (
                    e.update()
                    .where(e.c.id.in_(chunk), e.c.lease_owner == owner, e.c.state.in_(_ACTIVE))
                    .values(lease_expires_at=expires)
                    .returning(e.c.id)
                )
                held.update(conn.execute(stmt).scalars())
        return held

    def apply(self, owner: str, ops: Sequence[Op]) -> None:
        """Write one tick's changes in one transaction; on a lost race, LeaseLost and no write.

        The engine's progress commits without waiting for the disk (SQLite
        `synchronous=NORMAL` on its own connection, PostgreSQL `synchronous_commit=off`):
        a crash of this process loses nothing; a power cut or a crash of the database can
        lose only the last ticks, whose tasks then run again, as at-least-once allows. The
        log is sequential, so the next acknowledged (fully synchronous) commit, a start
        say, makes every earlier tick durable as well."""
        if self.is_sqlite:
            if self._tick_conn is None or self._tick_conn.closed:
                self._tick_conn = self.engine.connect()
                self._tick_conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                self._tick_conn.commit()
            writes.apply(self._tick_conn, owner, ops)
            return
        with self.engine.connect() as conn:
            writes.apply(conn, owner, ops)


class GroupCommit:
    """Coalesces concurrent starts into one transaction, so that a burst of N start
    requests costs one commit (one fsync) instead of N, with each still acknowledged
    only after its row is durable."""

    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self._store = store
        self._max = max_batch
        self._queue: list[tuple[Any, asyncio.Future[ExecutionRecord]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(
        self, item: tuple[ExecutionRecord, str | None, datetime | None]
    ) -> ExecutionRecord:
        future: asyncio.Future[ExecutionRecord] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results = await self._store.call(
                    self._store.create_executions, [item for item, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _filtered(
    q: Any,
    project_id: str,
    workflow: str | None,
    state: str | None,
    labels: dict[str, str] | None,
    states: Collection[str] | None,
    created: tuple[datetime | None, datetime | None] = (None, None),
) -> Any:
    """A query of executions narrowed to a project and the filters given."""
    e = s.executions
    q = q.where(e.c.project_id == project_id)
    if workflow:
        q = q.where(e.c.workflow_name == workflow)
    if state:
        q = q.where(e.c.state == state)
    if states is not None:
        q = q.where(e.c.state.in_(sorted(states)))
    for key, value in (labels or {}).items():
        q = q.where(e.c.labels[key].as_string() == value)
    since, until = created
    if since is not None:
        q = q.where(e.c.created_at >= since)
    if until is not None:
        q = q.where(e.c.created_at < until)
    return q


def _encode_cursor(at: datetime, last_id: str) -> str:
    raw = json.dumps([at.isoformat(), last_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, last_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, str(last_id)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput("the cursor is not one this server handed out") from exc


def _workflow(row: RowMapping) -> WorkflowRecord:
    return WorkflowRecord(
        row["id"],
        row["project_id"],
        row["name"],
        row["description"],
        row["latest_revision"],
        row["created_at"],
        row["updated_at"],
    )


def _task_run(row: RowMapping) -> TaskRunRecord:
    return TaskRunRecord(
        execution_id=row["execution_id"],
        task_id=row["task_id"],
        attempt=row["attempt"],
        state=TaskRunState(row["state"]),
        output=row["output"],
        error=row["error"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        wake_at=row["wake_at"],
        waiting=row["waiting"],
        round=row["round"],
        item=row["item"],
    )


def _execution(row: RowMapping, runs: Sequence[TaskRunRecord]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"],
        project_id=row["project_id"],
        workflow_id=row["workflow_id"],
        workflow_name=row["workflow_name"],
        revision=row["revision"],
        name=row["name"],
        state=ExecutionState(row["state"]),
        inputs=_inputs(row),
        labels=row["labels"],
        outputs=row["outputs"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
        cancel_requested=bool(row["cancel_requested"]),
        started_by=row["started_by"],
        scheduled_at=row["scheduled_at"],
        log_level=row["log_level"],
        round=row["round"],
        rerun_of=row["rerun_of"],
        parent_id=row["parent_id"],
        parent_task=row["parent_task"],
        callback=_callback(row),
        store_overlay=row["store_overlay"],
        task_runs=tuple(runs),
    )


def _principal(row: RowMapping) -> Principal:
    return Principal(row["id"], row["project_id"], row["name"], row["role"], row.get("expires_at"))


def _inputs(row: RowMapping) -> dict[str, Any]:
    """Inputs as stored: sealed values stay sealed (only the engine opens them)."""
    inputs: dict[str, Any] = row["inputs"]
    for name in row["sealed_inputs"] or ():
        if isinstance(inputs.get(name), str):
            inputs[name] = Sealed(inputs[name])
    return inputs


def _callback(row: RowMapping) -> CallbackStatus | None:
    if row["callback_url"] is None:
        return None
    return CallbackStatus(
        url=row["callback_url"],
        state=row["callback_state"],
        attempts=row["callback_attempts"],
        next_at=row["callback_next_at"],
        last_status=row["callback_last_status"],
        last_error=row["callback_last_error"],
    )


def _entry(row: RowMapping) -> StoreEntry:
    return StoreEntry(
        execution_id=row["execution_id"],
        store=row["store"],
        seq=row["seq"],
        value=row["value"],
        key=row["key"],
        task_id=row["task_id"],
        at=row["at"],
    )


def _command(row: RowMapping) -> CommandRecord:
    return CommandRecord(
        id=row["id"],
        execution_id=row["execution_id"],
        kind=row["kind"],
        payload=row["payload"] or {},
        actor=row["actor"],
        created_at=row["created_at"],
    )


def _event(row: RowMapping) -> EventRecord:
    return EventRecord(
        id=row["id"],
        execution_id=row["execution_id"],
        at=row["at"],
        level=row["level"],
        kind=row["kind"],
        message=row["message"],
        task_id=row["task_id"],
        attempt=row["attempt"],
        data=row["data"],
        actor=row["actor"],
    )
