"""Task code against the control plane, on a running server: a developer of one project,
allowed to run code, tries to read what makes an admin (the admin token, the sealing keys,
the database) and what another project's tasks run with (their argv and files).

As root, the server runs workers as `execflow-worker` in namespaces of their own; as any
other user, workers still get a clean environment and their own scratch directories, but
the data directory is readable by the server's user, which they run as (see
docs/security.md), so the file checks need root.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from execflow.sealing import read_key_file
from tests.test_attacks_live import Live
from tests.test_server import poll

pytestmark = pytest.mark.slow

ROOT = os.geteuid() == 0

# Everything a task with a shell would try: the data directory's files, the server's
# environment and open files, and every process's argv.
PROBE = r"""
data="$1"
echo "== token"; cat "$data/admin-token" 2>&1
echo "== keys"; cat "$data/secret-keys" 2>&1
echo "== database"; head -c 4096 "$data/execflow.db" 2>&1 | strings 2>&1 | head -50
echo "== listing"; ls -la "$data" 2>&1
echo "== env"; env
echo "== server"; for p in /proc/[0-9]*; do
  tr '\0' ' ' < "$p/cmdline" 2>/dev/null; echo
  tr '\0' '\n' < "$p/environ" 2>/dev/null | grep 'EXECFLOW[_]'
  ls -l "$p/fd" 2>/dev/null | grep -F "$data"
done
echo "== tmp"; find /tmp /var/tmp -name 'victim-*' 2>&1 | grep -v 'Permission denied'
echo "== done"
"""


def _workflow(name: str, argv: list[str]) -> dict[str, Any]:
    return {"name": name, "tasks": {"run": {"action": "command", "with": {"argv": argv}}}}


def _start(client: httpx.Client, workflow: str, token: str) -> str:
    r = client.post(
        f"/api/v1/workflows/{workflow}/executions",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 202, r.text
    execution_id: str = r.json()["id"]
    return execution_id


def _finished(client: httpx.Client, execution_id: str, token: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = client.get(
            f"/api/v1/executions/{execution_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["state"] in ("COMPLETED", "FAILED", "CANCELED") else None

    result: dict[str, Any] = poll(f"{execution_id} to end", done, timeout=60)
    return result


@pytest.mark.skipif(not ROOT, reason="workers drop to another user only when the server is root")
def test_a_developers_task_cannot_read_the_control_plane_nor_another_projects_tasks(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    live = Live(data_dir, EXECFLOW_WORKERS="3", EXECFLOW_DATABASE_PASSWORD="canary-db")
    try:
        admin = live.client
        # beta may run code; its developer is the attacker
        r = admin.post("/api/v1/projects", json={"name": "beta", "actions": None})
        assert r.status_code == 201, r.text
        r = admin.post("/api/v1/projects/beta/tokens", json={"role": "developer"})
        assert r.status_code == 201, r.text
        beta = r.json()["token"]
        # a task of the default project runs with a telling argv and a file in its /tmp
        canary = f"canary-{secrets.token_hex(8)}"
        victim = ["sh", "-c", "echo private > $TMPDIR/victim-file; sh -c 'sleep 20; true' \"$1\""]
        r = admin.put("/api/v1/workflows/victim", json=_workflow("victim", [*victim, canary]))
        assert r.status_code == 201, r.text
        victim_id = _start(admin, "victim", live.token)
        poll(
            "the victim task to run",
            lambda: any(canary in _cmdline(p) for p in os.listdir("/proc") if p.isdigit()),
            timeout=30,
        )

        probe = _workflow("probe", ["sh", "-c", PROBE, "sh", str(data_dir)])
        r = admin.put(
            "/api/v1/workflows/probe",
            json=probe,
            headers={"Authorization": f"Bearer {beta}"},
        )
        assert r.status_code == 201, r.text
        ex = _finished(admin, _start(admin, "probe", beta), beta)
        run = next(t for t in ex["tasks"] if t["task"] == "run")
        assert ex["state"] == "COMPLETED", ex
        seen = run["output"]["stdout"] + run["output"]["stderr"]
        assert "== done" in seen  # the probe ran to its end

        keys = [k.decode() for k in read_key_file(data_dir / "secret-keys")]
        assert live.token not in seen
        assert keys and not [k for k in keys if k in seen]
        assert "SQLite format" not in seen and "Permission denied" in seen
        assert "EXECFLOW_" not in seen and "canary-db" not in seen
        assert canary not in seen and "victim-file" not in seen
        cancel = admin.post(f"/api/v1/executions/{victim_id}/cancel", json={"force": True})
        assert cancel.status_code in (200, 202), cancel.text
    finally:
        live.stop()
    # the data directory and what is in it are the server's alone
    assert data_dir.stat().st_mode & 0o777 == 0o700
    for name in ("admin-token", "secret-keys", "execflow.db"):
        assert (data_dir / name).stat().st_mode & 0o077 == 0, name


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_workers_of_a_server_that_is_not_root_still_get_a_clean_environment(
    tmp_path: Path,
) -> None:
    """Whoever the server runs as: no setting, token or database URL in a task's environment."""
    live = Live(
        tmp_path / "data", EXECFLOW_WORKER_USER="root" if ROOT else "", EXECFLOW_CANARY="canary"
    )
    try:
        r = live.client.put("/api/v1/workflows/env", json=_workflow("env", ["env"]))
        assert r.status_code == 201, r.text
        started = time.monotonic()
        ex = _finished(live.client, _start(live.client, "env", live.token), live.token)
        assert time.monotonic() - started < 60
        out = ex["tasks"][0]["output"]["stdout"]
        assert ex["state"] == "COMPLETED", ex
        assert "EXECFLOW_" not in out and live.token not in out
        assert "HOME=" in out and "PATH=" in out
    finally:
        live.stop()
