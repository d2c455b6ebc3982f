"""The real server process: crash recovery after SIGKILL, the data-dir lock, the quickstart."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from execflow.sealing import new_key

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0
# Variables that would make a server (or the CLI) use something other than its data dir.
_ISOLATE = (
    "EXECFLOW_DATABASE_URL",
    "EXECFLOW_DATA_DIR",
    "EXECFLOW_METRICS",
    "EXECFLOW_NODE_ID",
    "EXECFLOW_SQLITE_SYNCHRONOUS",
    "EXECFLOW_TOKEN",
    "EXECFLOW_URL",
    "EXECFLOW_WORKERS",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env() -> dict[str, str]:
    """The test's environment, minus execflow settings, with the repo root importable."""
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATE}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def cli_argv(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "execflow.cli", "--data-dir", str(data_dir), *args]


def poll(what: str, check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Call `check` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@dataclass
class Server:
    """One `execflow serve` process and a client with its admin token."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    log: Path
    client: httpx.Client

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def execution(self, execution_id: str) -> Any:
        r = self.client.get(f"/api/v1/executions/{execution_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_state(self, execution_id: str, states: set[str], timeout: float = 20.0) -> Any:
        def reached() -> Any:
            ex = self.execution(execution_id)
            return ex if ex["state"] in states else None

        return poll(f"{execution_id} to reach {states}", reached, timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; always reaped."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


def start_server(
    data_dir: Path,
    port: int,
    *extra: str,
    log_name: str = "server",
    env: dict[str, str] | None = None,
) -> Server:
    """Start `execflow serve` (with `env` added to its environment) and return once
    /healthz answers (or fail with its output)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-{log_name}-{port}-{time.monotonic_ns()}.log"
    argv = cli_argv(data_dir, "serve", "--port", str(port), "--workers", "2", *extra)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**server_env(), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    server = Server(proc, data_dir, port, log, client)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}):\n{server.output()}")
            try:
                if client.get("/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not become ready:\n{server.output()}")
            time.sleep(0.05)
        token = (data_dir / "admin-token").read_text().strip()
        client.headers["Authorization"] = f"Bearer {token}"
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts (append them); all are stopped at teardown."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _task_pids(server: int) -> set[int]:
    """The pids the server's workers (and what they run) have, as they see them: in a PID
    namespace of its own, a worker sees itself as 1."""
    found: set[int] = set()
    for child in _children(server):
        for pid in {child, *_children(child)}:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    found.update(int(p) for p in line.split()[1:])
    return found


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


SLOW_MIDDLE: dict[str, Any] = {
    "name": "slow-middle",
    "parameters": {"marker": {"type": "string", "required": True}},
    "tasks": {
        "first": {"action": "echo", "with": {"n": 1}},
        "middle": {
            "action": "python",
            "needs": ["first"],
            "with": {
                "function": "tests.fixtures.tasks:slow",
                "args": {"seconds": 2, "marker": "${{ params.marker }}"},
            },
            "retry": {"max_attempts": 2, "initial_delay": "100ms"},
        },
        "last": {
            "action": "echo",
            "needs": ["middle"],
            "with": {"middle": "${{ tasks.middle.output }}"},
        },
    },
    "outputs": {"middle": "${{ tasks.last.output.middle }}"},
}


@pytest.mark.parametrize("policy", ["retries", "default"])
def test_sigkill_mid_task_then_restart_retries_and_completes(
    tmp_path: Path, servers: list[Server], policy: str
) -> None:
    """An attempt lost to a kill -9 runs again when the server is back, whatever the task's
    retry policy: under the default one (a single attempt) too."""
    data_dir, port = tmp_path / "data", free_port()
    first = start_server(data_dir, port)
    servers.append(first)
    definition = copy.deepcopy(SLOW_MIDDLE)
    if policy == "default":
        del definition["tasks"]["middle"]["retry"]
    r = first.client.put("/api/v1/workflows/slow-middle", json=definition)
    assert r.status_code == 201, r.text
    marker = tmp_path / "worker-pid"
    r = first.client.post(
        "/api/v1/workflows/slow-middle/executions", json={"inputs": {"marker": str(marker)}}
    )
    assert r.status_code == 202, r.text
    execution_id = r.json()["id"]

    def middle_running() -> bool:
        tasks = first.execution(execution_id)["tasks"]
        return any(t["task"] == "middle" and t["state"] == "RUNNING" for t in tasks)

    poll("the middle task to run", middle_running)
    # The worker has entered the function (it writes its pid first, then sleeps).
    poll("the worker to start the function", marker.exists)
    workers = _children(first.proc.pid)
    assert len(workers) == 2, workers
    poll("the marker to hold a pid", lambda: marker.read_text().strip())
    assert int(marker.read_text()) in _task_pids(first.proc.pid)

    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    # Orphaned workers notice their parent is gone and end their process group.
    poll("the killed server's workers to exit", lambda: not any(map(_alive, workers)), 10)

    second = start_server(data_dir, port, log_name="restarted")
    servers.append(second)
    ex = second.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"})
    assert ex["state"] == "COMPLETED", ex
    assert ex["outputs"] == {"middle": "done"}
    middle = [t for t in ex["tasks"] if t["task"] == "middle"]
    assert [(t["attempt"], t["state"]) for t in middle] == [(1, "FAILED"), (2, "COMPLETED")]
    assert middle[0]["error"]["type"] == "lost"
    assert middle[1]["output"] == "done"
    assert [(t["task"], t["state"]) for t in ex["tasks"] if t["task"] != "middle"] == [
        ("first", "COMPLETED"),
        ("last", "COMPLETED"),
    ]


def test_a_second_server_on_the_same_data_dir_is_refused(
    tmp_path: Path, servers: list[Server]
) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir, free_port())
    servers.append(running)
    argv = cli_argv(data_dir, "serve", "--port", str(free_port()), "--workers", "1")
    result = subprocess.run(
        argv, cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True, timeout=20
    )
    assert result.returncode != 0
    assert f"another execflow server is using {data_dir}" in result.stderr
    # The refused server did not disturb the running one.
    assert running.proc.poll() is None
    assert running.client.get("/api/v1/workflows").status_code == 200


def test_quickstart_runs_the_media_pipeline(tmp_path: Path, servers: list[Server]) -> None:
    server = start_server(tmp_path / "data", free_port(), "--examples")
    servers.append(server)
    assert "Loaded examples: " in server.output()
    names = {w["name"] for w in server.client.get("/api/v1/workflows").json()["items"]}
    assert names == {
        "daily-sales-report",
        "media-pipeline",
        "price-line",
        "purchase-order",
        "service-health-check",
    }
    r = server.client.post(
        "/api/v1/workflows/media-pipeline/executions",
        json={"inputs": {"object": "cats/tabby.jpg"}},
    )
    assert r.status_code == 202, r.text
    ex = server.wait_state(r.json()["id"], {"COMPLETED", "FAILED", "CANCELED"})
    assert ex["state"] == "COMPLETED", ex
    assert ex["outputs"]["published"] == "uploads/cats/tabby.jpg"
    assert ex["outputs"]["renditions"] == 3


def test_an_approval_with_a_fan_out_and_sub_workflows_survives_a_restart_while_it_waits(
    tmp_path: Path, servers: list[Server]
) -> None:
    """The purchase-order example through the HTTP API: its lines are priced by child
    executions into a store, it waits for an approval, the server is killed and restarted,
    the approval arrives, and the order is placed from the store."""
    data_dir, port = tmp_path / "data", free_port()
    first = start_server(data_dir, port, "--examples")
    servers.append(first)
    lines = [{"sku": f"SKU-{i}", "quantity": i + 1} for i in range(5)]
    r = first.client.post(
        "/api/v1/workflows/purchase-order/executions",
        json={"inputs": {"order_id": "PO-1", "lines": lines}},
    )
    assert r.status_code == 202, r.text
    execution_id = r.json()["id"]
    ex = first.wait_state(execution_id, {"WAITING_ON_SIGNAL", "FAILED"})
    assert ex["state"] == "WAITING_ON_SIGNAL", ex
    [pending] = ex["pending_signals"]
    assert pending["schema"]["required"] == ["approved"]

    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    second = start_server(data_dir, port, "--examples", log_name="restarted")
    servers.append(second)
    assert second.execution(execution_id)["state"] == "WAITING_ON_SIGNAL"
    path = f"/api/v1/executions/{execution_id}"
    r = second.client.post(f"{path}/signals/approval", json={"approved": "yes"})
    assert r.status_code == 422, r.text
    r = second.client.post(f"{path}/signals/approval", json={"approved": True, "by": "ops"})
    assert r.status_code == 202, r.text

    ex = second.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"})
    assert ex["state"] == "COMPLETED", ex
    priced = second.client.get(f"{path}/stores/priced").json()
    assert priced["total"] == 5
    assert ex["outputs"]["total"] == round(sum(line["amount"] for line in priced["items"]), 2)
    assert (ex["outputs"]["approved"], ex["outputs"]["approved_by"]) == (True, "ops")
    assert len(ex["outputs"]["placed"]) == 5
    items = second.client.get(f"{path}/tasks/price/items").json()["items"]
    children = {t["child"] for t in items}
    assert len(children) == 5
    child = second.execution(children.pop())
    assert (child["state"], child["parent_id"]) == ("COMPLETED", execution_id)
    logs = second.client.get(f"{path}/logs", params={"level": "notice"}).json()["items"]
    assert any(e["message"] == "signal approval received" for e in logs)


def test_sigkill_while_tasks_wait_for_a_worker_loses_only_the_one_that_ran(
    tmp_path: Path, servers: list[Server]
) -> None:
    """One worker, four tasks: one runs, three wait for the worker when the server is
    killed. After the restart the one that ran is `lost` and runs again; the three that
    never reached a worker run once, as if nothing happened."""
    data_dir, port = tmp_path / "data", free_port()
    first = start_server(data_dir, port, "--workers", "1")
    servers.append(first)
    ledger = tmp_path / "ledger"
    args = {"path": str(ledger), "execution": "${{ execution.id }}", "seconds": 1.5}
    tasks = {
        f"p{i}": {
            "action": "python",
            "with": {"function": "tests.fixtures.tasks:ledger", "args": {**args, "task": f"p{i}"}},
        }
        for i in range(4)
    }
    r = first.client.put("/api/v1/workflows/queued", json={"name": "queued", "tasks": tasks})
    assert r.status_code == 201, r.text
    r = first.client.post("/api/v1/workflows/queued/executions", json={})
    assert r.status_code == 202, r.text
    execution_id = r.json()["id"]
    poll("a task to start", lambda: ledger.exists() and ledger.read_text().strip())
    ran = ledger.read_text().split()[2]
    waiting = [t for t in first.execution(execution_id)["tasks"] if t["started_at"] is None]
    assert len(waiting) == 3, first.execution(execution_id)["tasks"]
    workers = _children(first.proc.pid)
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    poll("the killed server's workers to exit", lambda: not any(map(_alive, workers)), 10)

    second = start_server(data_dir, port, "--workers", "1", log_name="restarted")
    servers.append(second)
    ex = second.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, timeout=60)
    assert ex["state"] == "COMPLETED", ex
    for name in tasks:
        runs = [(t["attempt"], t["state"]) for t in ex["tasks"] if t["task"] == name]
        if name == ran:
            assert runs == [(1, "FAILED"), (2, "COMPLETED")], runs
        else:
            assert runs == [(1, "COMPLETED")], (name, runs)
    lost = next(t for t in ex["tasks"] if t["task"] == ran)
    assert lost["error"]["type"] == "lost"


def _held(server: Server) -> float:
    """What a node's engine holds, from its metrics."""
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith("execflow_executions_held "):
            return float(line.split()[1])
    raise AssertionError("no execflow_executions_held in /metrics")


def test_a_second_node_gets_its_share_of_waiting_executions(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Ten executions wait for a signal on one node; a second node starts on the same
    database and, without a crash, ends up holding about half of them; all complete."""
    shared = {
        "EXECFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "EXECFLOW_SECRET_KEYS": new_key(),
        "EXECFLOW_SPREAD_SECONDS": "1",
        "EXECFLOW_PARK_AFTER": "0",  # the nodes hold what waits (parked, nobody would)
    }
    a = start_server(tmp_path / "a", free_port(), env={**shared, "EXECFLOW_NODE_ID": "a"})
    servers.append(a)
    wf = {"name": "waits", "tasks": {"ok": {"action": "signal", "with": {"name": "go"}}}}
    assert a.client.put("/api/v1/workflows/waits", json=wf).status_code == 201
    ids = [
        a.client.post("/api/v1/workflows/waits/executions", json={}).json()["id"] for _ in range(10)
    ]
    poll("a to hold all ten", lambda: _held(a) == 10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "admin-token").write_text((tmp_path / "a" / "admin-token").read_text())
    b = start_server(tmp_path / "b", free_port(), env={**shared, "EXECFLOW_NODE_ID": "b"})
    servers.append(b)
    poll("b to get its share", lambda: _held(b) >= 4, timeout=30)
    assert _held(a) + _held(b) == 10
    for execution_id in ids:
        r = b.client.post(f"/api/v1/executions/{execution_id}/signals/go", json={})
        assert r.status_code == 202, r.text
    for execution_id in ids:
        assert b.wait_state(execution_id, {"COMPLETED", "FAILED"}, 30)["state"] == "COMPLETED"


def _project_token(server: Server, project: str) -> dict[str, str]:
    """A new project that may use every action, and the header of an admin token of it."""
    r = server.client.post("/api/v1/projects", json={"name": project, "actions": None})
    assert r.status_code == 201, r.text
    r = server.client.post(f"/api/v1/projects/{project}/tokens", json={"role": "admin"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_one_projects_backlog_does_not_starve_another_projects_command(
    tmp_path: Path, servers: list[Server]
) -> None:
    """The finding, at small scale: beta's six `sleep 1.5` commands hold both workers and
    queue; alpha's one-line command starts when the first of beta's ends (about 1.5 s), not
    behind beta's backlog (4.5 s)."""
    server = start_server(tmp_path / "data", free_port(), env={"EXECFLOW_SHUTDOWN_GRACE": "0"})
    servers.append(server)
    alpha, beta = _project_token(server, "alpha"), _project_token(server, "beta")
    for who, argv in ((beta, ["sleep", "1.5"]), (alpha, ["echo", "hello"])):
        body = {"name": "cmd", "tasks": {"run": {"action": "command", "with": {"argv": argv}}}}
        r = server.client.put("/api/v1/workflows/cmd", json=body, headers=who)
        assert r.status_code == 201, r.text

    def start(who: dict[str, str]) -> str:
        r = server.client.post("/api/v1/workflows/cmd/executions", json={}, headers=who)
        assert r.status_code == 202, r.text
        execution_id: str = r.json()["id"]
        return execution_id

    def task(execution_id: str, who: dict[str, str]) -> Any:
        r = server.client.get(f"/api/v1/executions/{execution_id}", headers=who)
        assert r.status_code == 200, r.text
        tasks = r.json()["tasks"]
        return tasks[0] if tasks else None

    betas = [start(beta) for _ in range(6)]
    poll(
        "two of beta's commands to run",
        lambda: sum(1 for b in betas if (t := task(b, beta)) and t["started_at"]) == 2,
    )
    asked = time.monotonic()
    alpha_id = start(alpha)
    done = poll(
        "alpha's command to end",
        lambda: (t := task(alpha_id, alpha)) and t["state"] == "COMPLETED" and t,
        timeout=15,
    )
    waited = time.monotonic() - asked
    assert done["output"]["stdout"].strip() == "hello", done
    assert waited < 3.5, f"alpha's command waited {waited:.1f} s behind beta's"
    # it took the first worker beta's tasks freed: four of beta's were still queued
    later = [
        b
        for b in betas
        if (t := task(b, beta)) is None or (t["started_at"] or "~") > done["started_at"]
    ]
    assert len(later) >= 3, later
