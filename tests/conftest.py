"""Shared fixtures: a fresh store per test on SQLite, and on PostgreSQL when configured."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from execflow.store import Store, connect, upgrade

PG_URL = os.environ.get("EXECFLOW_TEST_POSTGRES_URL")
# Random, not the pid: test runs in other PID namespaces may share the database server.
_TEMPLATE = f"execflow_template_{uuid.uuid4().hex[:12]}"


def _pg_admin() -> sa.Engine:
    assert PG_URL
    return sa.create_engine(
        connect(PG_URL).url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


@pytest.fixture
def tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's own, open to task workers: when the suite runs as root, servers run their
    workers as an unprivileged user, and tests hand tasks files to write under here."""
    if os.geteuid() == 0:
        tmp_path.chmod(0o1777)
        top = tmp_path_factory.getbasetemp().parent  # pytest-of-<user>: private by default
        for folder in tmp_path.parents:
            folder.chmod(folder.stat().st_mode & 0o7777 | 0o011)
            if folder == top:
                break
    return tmp_path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database; each test clones it (fast, and fully isolated)."""
    if not PG_URL:
        pytest.skip("PostgreSQL tests need EXECFLOW_TEST_POSTGRES_URL (see README)")
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {_TEMPLATE}"))
    url = connect(PG_URL).url.set(database=_TEMPLATE)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    upgrade(engine)
    engine.dispose()
    yield _TEMPLATE
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)"))
    admin.dispose()


def _sqlite_store(tmp_path: Path) -> Store:
    engine = connect(f"sqlite:///{tmp_path / 'execflow.db'}", sqlite_synchronous="OFF")
    upgrade(engine)
    return Store(engine)


def _pg_store(template: str) -> Iterator[Store]:
    name = "execflow_t_" + uuid.uuid4().hex[:12]
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    engine = sa.create_engine(connect(PG_URL or "").url.set(database=name), pool_size=4)
    store = Store(engine)
    try:
        yield store
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same tests run on SQLite and, when EXECFLOW_TEST_POSTGRES_URL is set, PostgreSQL."""
    if request.param == "sqlite":
        s = _sqlite_store(tmp_path)
        yield s
        s.close()
    else:
        yield from _pg_store(request.getfixturevalue("pg_template"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = _sqlite_store(tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for callback.test (made by the openssl command, ~10 ms): the
    name https tests pin to a local address."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=callback.test"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=DNS:callback.test"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
