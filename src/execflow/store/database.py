"""Opening a database and bringing its schema up to date (Alembic)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from execflow.errors import Unavailable


def connect(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss too, as an acknowledged start must.
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("execflow") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration."""
    command.upgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_config(engine)).get_current_head()


# PostgreSQL's "read_only_sql_transaction": the server takes reads but no writes for now (a
# standby not yet promoted after a failover, or a cluster set read-only for maintenance).
_READ_ONLY = "25006"


def _read_only(exc: sa.exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _READ_ONLY


def is_outage(exc: BaseException) -> bool:
    """Whether an error says the database could not be reached or did not answer (a blip
    to wait out), rather than that it refused what was written (a fault of that data);
    `Unavailable` is such an error already translated by the store. A database that takes
    no writes for now (read-only) is out too: no data is at fault."""
    if isinstance(exc, sa.exc.DBAPIError) and (exc.connection_invalidated or _read_only(exc)):
        return True
    return isinstance(
        exc,
        Unavailable
        | sa.exc.OperationalError
        | sa.exc.InterfaceError
        | sa.exc.DisconnectionError
        | sa.exc.TimeoutError
        | ConnectionError
        | TimeoutError,
    )
