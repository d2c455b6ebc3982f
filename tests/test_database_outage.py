"""A real database outage: a PostgreSQL of the test's own is stopped and started again
(or another process holds SQLite's lock) while a real `execflow serve` takes starts.
Requests fail with 503 meanwhile (never 500), the node answers again within seconds
without a restart, and every acknowledged start completes."""

# The `servers` fixture is imported from test_server: arguments named so "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from execflow.sealing import new_key
from tests.test_nodes import _ledger, _node, _workflow
from tests.test_server import Server, free_port, poll, servers, start_server  # noqa: F401

pytestmark = pytest.mark.slow

_BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@dataclass
class Postgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder)."""

    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        log = self.data.parent / "postgres.log"
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", *args]
        _as_postgres(command)

    def start(self) -> None:
        self.ctl(
            "-o", f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1", "start"
        )

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")


def _as_postgres(command: list[str]) -> None:
    """Run a server command as the postgres user (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    if not _BINARIES:
        pytest.skip("no PostgreSQL server binaries (Debian's postgresql package) on this machine")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as postgres")
    # not under pytest's own temporary folders: the postgres user must reach it
    root = Path(tempfile.mkdtemp(prefix="execflow-pg-"))
    os.chmod(root, 0o777)
    server = Postgres(Path(_BINARIES[-1]), root / "data", free_port())
    try:
        _as_postgres([str(server.bin / "initdb"), "-D", str(server.data), "-U", "postgres",
                      "--auth=trust", "-E", "UTF8"])  # fmt: skip
    except (subprocess.CalledProcessError, PermissionError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot make a PostgreSQL cluster here: {exc}")
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


WAIT: dict[str, object] = {
    "name": "short",
    "tasks": {"nap": {"action": "sleep", "with": {"duration": "200ms"}}, "done": {
        "action": "echo", "needs": ["nap"], "with": {"ok": True}}},
}  # fmt: skip


def test_a_database_outage_answers_503_and_the_node_recovers_without_a_restart(
    tmp_path: Path, postgres: Postgres, servers: list[Server]
) -> None:
    node = start_server(tmp_path / "node", free_port(), env={"EXECFLOW_DATABASE_URL": postgres.url})
    servers.append(node)
    assert node.client.put("/api/v1/workflows/short", json=WAIT).status_code == 201
    acknowledged: list[str] = []
    statuses: list[int] = []

    def start() -> int:
        try:
            r = node.client.post("/api/v1/workflows/short/executions", json={}, timeout=15)
        except httpx.TransportError:
            return 0
        if r.status_code == 202:
            acknowledged.append(r.json()["id"])
        elif r.status_code == 503:
            assert r.headers.get("Retry-After"), r.headers
            assert r.json()["error"]["id"] == "unavailable"
        return r.status_code

    for _ in range(5):
        assert start() == 202
    postgres.stop()
    try:
        for _ in range(5):
            statuses.append(start())
        # readiness answers from a check at most a second old
        poll("not ready", lambda: node.client.get("/readyz", timeout=10).status_code == 503, 5)
        assert node.client.get("/livez").status_code == 200
    finally:
        postgres.start()
    assert 500 not in statuses and set(statuses) <= {503}, statuses
    began = time.monotonic()
    poll("the node to take starts again", lambda: start() == 202, timeout=30, every=0.2)
    recovered = time.monotonic() - began
    assert recovered < 15, recovered
    poll("the node to be ready", lambda: node.client.get("/readyz").status_code == 200, 30)
    for _ in range(5):
        assert start() == 202
    for execution_id in acknowledged:
        ex = node.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, timeout=60)
        assert ex["state"] == "COMPLETED", ex
    # the executions the outage interrupted were given back and taken again at once, not
    # left to wait for their leases (30 s) to expire
    assert time.monotonic() - began < 15


def test_a_locked_sqlite_database_answers_503_and_the_node_recovers(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Another process holds SQLite's write lock past the busy timeout (10 s): writes fail
    with 503, never 500, and once it lets go the node takes starts again at once."""
    node = start_server(tmp_path / "node", free_port())
    servers.append(node)
    assert node.client.put("/api/v1/workflows/short", json=WAIT).status_code == 201
    acknowledged = []
    for _ in range(3):
        r = node.client.post("/api/v1/workflows/short/executions", json={})
        assert r.status_code == 202, r.text
        acknowledged.append(r.json()["id"])
    holder = sqlite3.connect(tmp_path / "node" / "execflow.db", timeout=30)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = node.client.post("/api/v1/workflows/short/executions", json={}, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["id"] == "unavailable" and r.headers.get("Retry-After")
    finally:
        holder.rollback()
        holder.close()
    r = node.client.post("/api/v1/workflows/short/executions", json={}, timeout=30)
    assert r.status_code == 202, r.text
    acknowledged.append(r.json()["id"])
    for execution_id in acknowledged:
        ex = node.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, timeout=60)
        assert ex["state"] == "COMPLETED", ex


def _sql(url: str, *statements: str) -> list[Any]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            results = [conn.execute(sa.text(statement)) for statement in statements]
            return list(results[-1].all()) if results[-1].returns_rows else []
    finally:
        engine.dispose()


def test_two_nodes_forget_no_lease_when_the_database_takes_no_writes(
    tmp_path: Path, postgres: Postgres, servers: list[Server]
) -> None:
    """Two real nodes run executions when the database turns read-only for a few seconds (a
    standby not yet promoted, say): reads work, every write fails. Each engine's writes of
    a tick fail, so it drops those executions, and giving their leases back fails too. Once
    writes work again every execution completes: no node keeps renewing a lease of an
    execution it no longer runs (it would stay RUNNING for ever: no other node may claim
    it), and every acknowledged start ran every step."""
    keys = new_key()
    ledger = tmp_path / "ledger"
    nodes: list[Server] = []
    for name in ("a", "b"):
        folder, env = _node(tmp_path, name, postgres.url, keys)
        # a heartbeat that outlives the outage, so neither node is taken for dead; leases
        # of 30 s (the default), which the executions must not wait for
        env.update(EXECFLOW_LEASE_SECONDS="30", EXECFLOW_HEARTBEAT_SECONDS="30")
        if nodes:
            folder.mkdir()
            shutil.copy(tmp_path / "a" / "admin-token", folder / "admin-token")
        nodes.append(start_server(folder, free_port(), env=env))
        servers.append(nodes[-1])
    a = nodes[0]
    assert a.client.put("/api/v1/workflows/ledgered", json=_workflow(ledger)).status_code == 201
    ids = []
    for i in range(16):
        r = nodes[i % 2].client.post("/api/v1/workflows/ledgered/executions", json={})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    poll("tasks to run on both nodes", lambda: len({p for p, *_ in _ledger(ledger)}) == 2)
    read_only = "ALTER SYSTEM SET default_transaction_read_only = {}"
    _sql(postgres.url, read_only.format("on"), "SELECT pg_reload_conf()")
    try:
        time.sleep(1)
        r = a.client.post("/api/v1/workflows/ledgered/executions", json={})
        assert r.status_code == 503 and r.headers.get("Retry-After"), r.text
        time.sleep(3)  # both engines tick, fail and drop what they held
    finally:
        _sql(postgres.url, read_only.format("off"), "SELECT pg_reload_conf()")
    back = time.monotonic()
    dropped = [n for n in nodes if "could not give back" in n.output()]
    for execution_id in ids:
        ex = a.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, timeout=40)
        assert ex["state"] == "COMPLETED", ex
    # given back as soon as writes worked again, and taken at once: not left to expire
    assert time.monotonic() - back < 20
    ran = {(e, t) for _, e, t, _ in _ledger(ledger)}
    assert ran == {(e, t) for e in ids for t in ("s1", "s2", "s3")}
    # the leases whose release failed were the case in point (so the test is not empty)
    assert dropped, "no node failed to give a lease back: the outage tested nothing"
    active = "SELECT id FROM executions WHERE state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')"
    assert _sql(postgres.url, active) == []
    assert all(n.client.get("/readyz").status_code == 200 for n in nodes)
