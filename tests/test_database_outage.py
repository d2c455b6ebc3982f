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

import httpx
import pytest

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
