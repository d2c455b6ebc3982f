"""Several real `execflow serve` nodes on one PostgreSQL database: a node paused past its
lease (SIGSTOP) starts nothing of what another node took over meanwhile."""

# The `servers` fixture is imported from test_server: arguments named so "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from execflow.sealing import new_key
from execflow.store import connect
from tests.conftest import PG_URL, _pg_admin
from tests.test_server import Server, free_port, poll, servers, start_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HEARTBEAT = 3.0


@pytest.fixture
def database(pg_template: str) -> Iterator[str]:
    """A fresh database cloned from the migrated template, as a URL."""
    name = "execflow_n_" + uuid.uuid4().hex[:12]
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {pg_template}"))
    url = connect(PG_URL or "").url.set(database=name)
    try:
        yield url.render_as_string(hide_password=False).replace("+psycopg", "")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _node(tmp_path: Path, name: str, url: str, keys: str) -> tuple[Path, dict[str, str]]:
    env = {
        "EXECFLOW_DATABASE_URL": url,
        "EXECFLOW_SECRET_KEYS": keys,
        "EXECFLOW_NODE_ID": name,
        "EXECFLOW_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "EXECFLOW_SCHEDULES": "off",
        # the ledger names a node by its workers' parent pid, which a PID namespace hides
        "EXECFLOW_WORKER_NAMESPACES": "off",
    }
    return tmp_path / name, env


def _ledger(path: Path) -> list[tuple[int, str, str, float]]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        pid, execution, task, at = line.split()
        lines.append((int(pid), execution, task, float(at)))
    return lines


def _workflow(ledger: Path) -> dict[str, Any]:
    def step(task: str, needs: list[str]) -> dict[str, Any]:
        args = {
            "path": str(ledger),
            "execution": "${{ execution.id }}",
            "task": task,
            "seconds": 0.4,
        }
        return {
            "action": "python",
            "needs": needs,
            "with": {"function": "tests.fixtures.tasks:ledger", "args": args},
        }

    return {
        "name": "ledgered",
        "tasks": {"s1": step("s1", []), "s2": step("s2", ["s1"]), "s3": step("s3", ["s2"])},
    }


def test_a_paused_node_starts_nothing_another_took_over(
    tmp_path: Path, database: str, servers: list[Server]
) -> None:
    keys = new_key()
    ledger = tmp_path / "ledger"
    a_dir, a_env = _node(tmp_path, "a", database, keys)
    a = start_server(a_dir, free_port(), env=a_env)
    servers.append(a)
    b_dir, b_env = _node(tmp_path, "b", database, keys)
    b_dir.mkdir()
    shutil.copy(a_dir / "admin-token", b_dir / "admin-token")
    b = start_server(b_dir, free_port(), env=b_env)
    servers.append(b)

    assert a.client.put("/api/v1/workflows/ledgered", json=_workflow(ledger)).status_code == 201
    ids = []
    for _ in range(8):
        r = a.client.post("/api/v1/workflows/ledgered/executions", json={})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    poll("a's tasks to run", lambda: any(pid == a.proc.pid for pid, *_ in _ledger(ledger)))

    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        # b takes a's executions over once a's heartbeat expires (their leases have not)
        time.sleep(HEARTBEAT * 2 + 2)
    finally:
        resumed = time.time()
        os.kill(a.proc.pid, signal.SIGCONT)

    for execution_id in ids:
        ex = b.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, timeout=60)
        assert ex["state"] == "COMPLETED", ex
    lines = _ledger(ledger)
    # What b took over, a must not start once it runs again. (b may not take everything:
    # rows a's paused transaction had locked are skipped, and a rightly goes on with them.)
    taken = {e for pid, e, _, _ in lines if pid == b.proc.pid}
    late = [line for line in lines if line[0] == a.proc.pid and line[3] > resumed]
    fenced = [line for line in late if line[1] in taken]
    assert fenced == [], f"the paused node started tasks of executions it had lost: {fenced}"
    # every step of every execution ran, on one node or the other
    assert {(e, t) for _, e, t, _ in lines} == {(e, t) for e in ids for t in ("s1", "s2", "s3")}
    # and b did take over (so the check above is not empty by chance)
    assert any(pid == b.proc.pid for pid, *_ in lines)
    # a is well again: it answers and is ready
    assert a.client.get("/readyz").status_code == 200


def test_a_killed_node_is_taken_over_within_a_heartbeat_and_a_restart_gets_work_back(
    tmp_path: Path, database: str, servers: list[Server]
) -> None:
    """kill -9 of one of two nodes: the other takes its executions over once the dead node's
    heartbeat expires (seconds), not when their 30 s leases do; the node, restarted, is
    handed a share of what waits without anything stopping."""
    keys = new_key()
    a_dir, a_env = _node(tmp_path, "a", database, keys)
    a_env["EXECFLOW_SPREAD_SECONDS"] = "2"
    # what is taken over is what a node holds: these nodes hold what waits, not park it
    a_env["EXECFLOW_PARK_AFTER"] = "0"
    a = start_server(a_dir, free_port(), env=a_env)
    servers.append(a)
    b_dir, b_env = _node(tmp_path, "b", database, keys)
    b_env["EXECFLOW_SPREAD_SECONDS"] = "2"
    b_env["EXECFLOW_PARK_AFTER"] = "0"
    b_dir.mkdir()
    shutil.copy(a_dir / "admin-token", b_dir / "admin-token")
    b = start_server(b_dir, free_port(), env=b_env)
    servers.append(b)
    waits = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
    assert a.client.put("/api/v1/workflows/waits", json=waits).status_code == 201
    path = "/api/v1/workflows/waits/executions"
    ids = [a.client.post(path, json={}).json()["id"] for _ in range(20)]

    def owners() -> dict[str | None, int]:
        engine = connect(database)
        try:
            with engine.connect() as conn:
                query = "SELECT lease_owner, count(*) FROM executions GROUP BY 1"
                return {owner: int(n) for owner, n in conn.execute(sa.text(query))}
        finally:
            engine.dispose()

    poll("a to hold the executions", lambda: owners().get("a") == 20)
    a.proc.kill()
    a.proc.wait()
    killed = time.monotonic()
    poll("b to take them over", lambda: owners().get("b") == 20, timeout=25, every=0.2)
    taken = time.monotonic() - killed
    assert taken < HEARTBEAT * 2 + 3, taken  # a heartbeat's time, far from a 30 s lease

    a = start_server(a_dir, free_port(), env=a_env)
    servers.append(a)
    poll("the restarted node to be handed its share", lambda: owners().get("a", 0) >= 5, 30)
    for execution_id in ids:
        r = b.client.post(f"/api/v1/executions/{execution_id}/signals/go", json={})
        assert r.status_code == 202, r.text
    for execution_id in ids:
        ex = b.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, timeout=30)
        assert ex["state"] == "COMPLETED", ex
