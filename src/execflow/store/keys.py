"""Which keys seal the values in a database: their fingerprints, in table `secret_keys`.

Every node must hold every key that sealed a value in its database, or the first value it
cannot open (an input of an execution it takes over from another node) fails there, tick
after tick. So a node records its sealing key's fingerprint at start, before it seals
anything, and refuses to start while a recorded key that is not retired is not among its
own (`SecretKeys.enroll`); while it runs, `SecretKeys.missing` says when another node has
recorded one since. A rotation that sealed every value with the newest key retires the
others (`SecretKeys.retire_older`), and nodes may then drop them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from execflow.sealing import Sealed, SecretKeyError
from execflow.store import schema as s

if TYPE_CHECKING:
    from execflow.store.base import StoreBase

# PostgreSQL advisory lock held by an enrollment until it commits (any constant will do;
# this is "execflow" read as a number, cut to 63 bits)
_LOCK = 0x65786563666C6F77 & 0x7FFFFFFFFFFFFFFF

_k = s.secret_keys
_RECORDED = sa.select(_k.c.fingerprint).where(_k.c.retired_at.is_(None))


class MissingSecretKeys(SecretKeyError):
    """This node lacks keys that seal values in the database."""


@dataclass(frozen=True)
class KeyRecord:
    fingerprint: str
    recorded_at: datetime
    retired_at: datetime | None


class SecretKeys:
    """The database's record of the keys that seal its values, as one node sees it."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store
        self._recorded: str | None = None  # the sealing key this node last recorded

    def enroll(self, now: datetime) -> None:
        """Record this node's sealing key; MissingSecretKeys (rolling it back) while the
        database has a key this node lacks, SecretKeyError when its keys do not open a
        sealed value. A database that predates the record (sealed values, no fingerprints)
        gets every key of this node, once they open its values."""
        sealer = self.store.sealer
        held = sealer.fingerprints()
        with self._exclusive() as conn:
            inserted = self._insert(conn, held[:1], now)
            rows = conn.execute(sa.select(_k.c.fingerprint, _k.c.retired_at)).all()
            recorded = {r.fingerprint for r in rows if r.retired_at is None}
            if missing := sorted(recorded - set(held)):
                raise MissingSecretKeys(refusal(missing, held, sealer.source))
            if held[0] not in recorded:
                raise MissingSecretKeys(
                    f"this node seals with key {held[0]}, which a rotation retired; put the "
                    f"newest key first in {sealer.source}"
                )
            samples = _sealed_samples(conn)
            for token in samples:
                sealer.open(Sealed(token))
            if samples and inserted and len(rows) == 1:  # the values predate the record
                self._insert(conn, held[1:], now)
        self._recorded = held[0]

    def missing(self) -> list[str]:
        """Fingerprints of the keys recorded and not retired that this node lacks, sorted.

        One statement on a table of a few rows. A sealing key that changed in the key file
        since this node last recorded one is recorded first."""
        held = self.store.sealer.fingerprints()
        if held[0] != self._recorded:
            with self.store.engine.begin() as conn:
                self._insert(conn, held[:1], datetime.now(UTC))
            self._recorded = held[0]
        with self.store.reading() as conn:
            recorded = conn.execute(_RECORDED).scalars().all()
        have = set(held)
        return sorted(fp for fp in recorded if fp not in have)

    def records(self) -> list[KeyRecord]:
        """Every key the database names, in the order they were recorded."""
        q = sa.select(_k.c.fingerprint, _k.c.recorded_at, _k.c.retired_at).order_by(
            _k.c.recorded_at, _k.c.fingerprint
        )
        with self.store.reading() as conn:
            return [KeyRecord(*row) for row in conn.execute(q)]

    def record(self, fingerprint: str, now: datetime) -> None:
        """Record a key about to seal values (a rotation's new key), retired or not before."""
        with self._exclusive() as conn:
            self._insert(conn, [fingerprint], now)
            conn.execute(_k.update().where(_k.c.fingerprint == fingerprint).values(retired_at=None))

    def retire_older(self, now: datetime) -> list[str]:
        """After every value was sealed again with this node's sealing key: retire the other
        keys; their fingerprints."""
        newest = self.store.sealer.fingerprints()[0]
        with self._exclusive() as conn:
            self._insert(conn, [newest], now)
            older = _k.c.fingerprint != newest
            retired = conn.execute(
                sa.select(_k.c.fingerprint).where(older, _k.c.retired_at.is_(None))
            ).scalars()
            found = sorted(retired)
            conn.execute(_k.update().where(older, _k.c.retired_at.is_(None)).values(retired_at=now))
        return found

    @contextmanager
    def _exclusive(self) -> Iterator[Connection]:
        """A transaction that no other node's enrollment overlaps, so the second to commit
        sees the first's key and refuses rather than both starting with different keys."""
        with self.store.engine.begin() as conn:
            if self.store.is_sqlite:
                # a write, even of nothing, takes the database's write lock until the commit
                conn.execute(_k.delete().where(sa.false()))
            else:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            yield conn

    def _insert(self, conn: Connection, fingerprints: Sequence[str], now: datetime) -> bool:
        """Record keys not recorded yet; whether any was."""
        if not fingerprints:
            return False
        insert = sqlite_insert if self.store.is_sqlite else pg_insert
        rows = [{"fingerprint": fp, "recorded_at": now} for fp in fingerprints]
        # RETURNING: psycopg reports no row count (-1) for this statement
        q = insert(_k).values(rows).on_conflict_do_nothing().returning(_k.c.fingerprint)
        return bool(conn.execute(q).all())


def refusal(missing: Sequence[str], held: Sequence[str], source: str) -> str:
    """What a node lacking keys says: which keys, where its own come from, what to do."""
    return (
        "this node lacks secret keys that seal values in the database (fingerprints "
        f"{', '.join(missing)}); it holds {', '.join(held)} from {source}. Every node needs "
        "every key: set the same EXECFLOW_SECRET_KEYS on each, or copy the key file of a node "
        "that has them to this node's EXECFLOW_SECRET_KEY_FILE (`execflow secrets "
        "fingerprints` lists a node's keys)"
    )


def _sealed_samples(conn: Connection) -> list[str]:
    """The newest sealed value of each kind (secret input, access key's secret, callback
    secret): what a node's keys must open."""
    e, t, p = s.executions, s.tokens, s.projects
    queries = [
        sa.select(e.c.inputs, e.c.sealed_inputs)
        .where(e.c.sealed_inputs.is_not(None))
        .order_by(e.c.created_at.desc())
        .limit(1),
        sa.select(t.c.sealed_secret)
        .where(t.c.sealed_secret.is_not(None))
        .order_by(t.c.created_at.desc())
        .limit(1),
        # 64 hex digits: kept before callback secrets were sealed
        sa.select(p.c.callback_secret)
        .where(p.c.callback_secret.is_not(None), sa.func.length(p.c.callback_secret) != 64)
        .order_by(p.c.created_at.desc())
        .limit(1),
    ]
    found = []
    for q in queries:
        row = conn.execute(q).first()
        if row is None:
            continue
        if len(row) == 2:
            if row.sealed_inputs:
                found.append(row.inputs[row.sealed_inputs[0]])
        else:
            found.append(row[0])
    return found
