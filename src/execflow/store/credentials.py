"""Projects and the credentials of their people and programs: tokens, access keys
(and the nonces of their signed requests)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping

from execflow.auth import ROLES
from execflow.errors import Conflict, InvalidInput, NotFound
from execflow.records import (
    Principal,
    ProjectRecord,
    TokenRecord,
)
from execflow.sealing import Sealed
from execflow.store import schema as s
from execflow.store.base import StoreBase, new_id
from execflow.store.rows import (
    to_principal,
)

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
        sa.select(*columns, t.c.sealed_secret, s.projects.c.name, s.projects.c.actions)
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


def _listed(actions: tuple[str, ...] | None) -> list[str] | None:
    return None if actions is None else list(actions)


class Credentials(StoreBase):
    """Projects, tokens and access keys: creating, listing, revoking and authenticating them."""

    def ensure_project(self, name: str, now: datetime) -> str:
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(s.projects.c.id).where(s.projects.c.name == name))
            pid = found.scalar_one_or_none()
            if pid is None:
                pid = new_id()
                conn.execute(s.projects.insert().values(id=pid, name=name, created_at=now))
            return str(pid)

    def create_project(
        self, name: str, now: datetime, actions: tuple[str, ...] | None = None
    ) -> ProjectRecord:
        """A new project whose workflows may use `actions` (None: every action)."""
        record = ProjectRecord(new_id(), name, now, actions)
        values = {"id": record.id, "name": name, "created_at": now, "actions": _listed(actions)}
        try:
            with self.engine.begin() as conn:
                conn.execute(s.projects.insert().values(**values))
        except sa.exc.IntegrityError:
            raise Conflict(f"project {name!r} already exists") from None
        return record

    def update_project(self, name: str, actions: tuple[str, ...] | None) -> ProjectRecord:
        """Set the actions a project's workflows may use (None: every action)."""
        p = s.projects
        with self.engine.begin() as conn:
            done = conn.execute(p.update().where(p.c.name == name).values(actions=_listed(actions)))
        if not done.rowcount:
            raise NotFound(f"project {name!r} not found")
        return self.get_project(name)

    def get_project(self, name: str) -> ProjectRecord:
        found = self.list_projects(name)
        if not found:
            raise NotFound(f"project {name!r} not found")
        return found[0]

    def list_projects(self, name: str | None = None) -> list[ProjectRecord]:
        """Every project by name, or only the one named."""
        p = s.projects
        q = sa.select(p.c.id, p.c.name, p.c.created_at, p.c.actions).order_by(p.c.name)
        if name is not None:
            q = q.where(p.c.name == name)
        with self._reader() as conn:
            return [
                ProjectRecord(
                    r.id, r.name, r.created_at, None if r.actions is None else tuple(r.actions)
                )
                for r in conn.execute(q)
            ]

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
        *,
        sealed_too: bool = False,
        session: bool = False,
    ) -> tuple[str, str]:
        """Store a new credential and return (id, secret). A token's secret is kept only as
        a hash (and sealed too with `sealed_too`: a session, handed again to whoever logs in
        again with the same key); an access key's secret is kept sealed too, since a
        signature is checked by computing it again. A `session` token lives no longer than
        the credential that made it (`created_by`)."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if kind == TOKEN:
            token_id, secret = new_id(), "ef_" + secrets.token_urlsafe(32)
            sealed = self.sealer.seal(secret).token if sealed_too else None
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
                    session=session,
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
        without it nobody could administer the server any more. Sessions do not count:
        each dies with the credential that opened it, and expires within hours anyway."""
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
                        t.c.session.is_(False),
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
                # What was made with the key goes with it: a session opened by logging in
                # with it, and any token made with such a session, and so on. Revoking a key
                # cuts off everyone who held it.
                makers = [token_id]
                while makers:
                    made = sa.and_(
                        t.c.created_by.in_(makers), t.c.revoked_at.is_(None), t.c.kind == TOKEN
                    )
                    makers = list(conn.execute(sa.select(t.c.id).where(made)).scalars())
                    if makers:
                        conn.execute(t.update().where(t.c.id.in_(makers)).values(revoked_at=now))
        return replace(token, revoked_at=now)

    def session_of(
        self, key_id: str, description: str, now: datetime, lasting: datetime
    ) -> str | None:
        """The secret of a live session opened with the access key `key_id` (with that
        description) that lasts at least until `lasting`; None if there is none."""
        t = s.tokens
        q = (
            sa.select(t.c.sealed_secret)
            .where(
                t.c.created_by == key_id,
                t.c.kind == TOKEN,
                t.c.description == description,
                t.c.revoked_at.is_(None),
                t.c.sealed_secret.is_not(None),
                t.c.expires_at >= lasting,
            )
            .order_by(t.c.expires_at.desc())
            .limit(1)
        )
        with self._reader() as conn:
            sealed = conn.execute(q).scalar()
        return None if sealed is None else self.sealer.open(Sealed(sealed))

    def authenticate(self, secret: str, now: datetime) -> tuple[Principal, datetime | None] | None:
        """The principal of a live token, with when it was last used (read only)."""
        row = self._live(_TOKEN_BY_HASH, {"hash": hash_secret(secret)}, now)
        if row is None:
            return None
        return to_principal(row), row["last_used_at"]

    def access_key(
        self, key_id: str, now: datetime
    ) -> tuple[Principal, str, datetime | None] | None:
        """The principal of a live access key, its secret (opened) and when it was last used."""
        row = self._live(_ACCESS_KEY, {"id": key_id}, now)
        if row is None:
            return None
        secret = self.sealer.open(Sealed(row["sealed_secret"]))
        return to_principal(row), secret, row["last_used_at"]

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
