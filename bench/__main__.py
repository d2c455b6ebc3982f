"""Run the execflow benchmark against a real server process and print a table.

    python -m bench [--quick] [--database-url URL] [--workers N] [--parked N]

Workloads:
  W1 seq10      ten sequential echo tasks; POST to terminal state, one in flight
  W2 fanout100  one task -> 100 parallel echo tasks -> one; POST to terminal state
  W3 throughput many seq10 executions in flight: start acks/s, executions/s, task runs/s
  W3 acks       durable start acknowledgements/s of a workflow that parks on a timer
  W4 python40   forty sequential python tasks computing fib(10); total time
  W6 takeover   (--takeover) two nodes on one database; seconds from a kill -9 of the node
                holding 20 executions until the other has completed them all

With --parked N, N executions that wait for a signal are started first, and only W1 is
measured, with the server's resident memory after it: what a population of waiting
executions costs the engine's ticks and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


def seq(n: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {"t0": {"action": "echo", "with": {"i": 0}}}
    for i in range(1, n):
        tasks[f"t{i}"] = {"action": "echo", "needs": [f"t{i - 1}"], "with": {"i": i}}
    return {"name": f"seq{n}", "tasks": tasks}


def fanout(n: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {"start": {"action": "echo"}}
    for i in range(n):
        tasks[f"b{i}"] = {"action": "echo", "needs": ["start"], "with": {"i": i}}
    tasks["join"] = {"action": "echo", "needs": [f"b{i}" for i in range(n)]}
    return {"name": f"fanout{n}", "tasks": tasks}


def parked() -> dict[str, Any]:
    """One task that waits an hour: starting it costs the engine almost nothing."""
    return {"name": "parked", "tasks": {"wait": {"action": "sleep", "with": {"duration": "1h"}}}}


def waits() -> dict[str, Any]:
    """One task that waits for a signal that never comes."""
    return {"name": "waits", "tasks": {"go": {"action": "signal", "with": {"name": "go"}}}}


def python40() -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for i in range(40):
        task: dict[str, Any] = {
            "action": "python",
            "with": {"function": "bench.functions:fib", "args": {"n": 10}},
        }
        if i:
            task["needs"] = [f"p{i - 1}"]
        tasks[f"p{i}"] = task
    return {"name": "python40", "tasks": tasks}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(
    data_dir: Path, workers: int, database_url: str | None, extra: dict[str, str] | None = None
) -> Iterator[tuple[str, str, int]]:
    port = free_port()
    # The benchmark's own checkout comes first, so a second worktree measures its own code
    # even when another checkout is installed in the environment.
    path = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p), **(extra or {}))
    if database_url:
        env["EXECFLOW_DATABASE_URL"] = database_url
    # one client starts thousands of executions at once: the per-token start rate (a guard
    # against runaway callers) is not what this measures
    env["EXECFLOW_START_RATE"] = "0"
    cmd = [
        sys.executable,
        "-m",
        "execflow.cli",
        "--data-dir",
        str(data_dir),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    log = (data_dir / "server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {data_dir / 'server.log'}")
            time.sleep(0.1)
        yield url, (data_dir / "admin-token").read_text().strip(), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def rss_mib(pid: int) -> float | None:
    """A process's resident memory in MiB (Linux /proc), else None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), None)
    return None if kib is None else int(kib) / 1024


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds a process has used so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_terminal(client: Client, eid: str, interval: float) -> dict[str, Any]:
    while True:
        _, body = await client.call("GET", f"/api/v1/executions/{eid}")
        if body["state"] in TERMINAL:
            return dict(body)
        await asyncio.sleep(interval)


class Client:
    """A thin JSON client on aiohttp: light enough that the server, not the client, is measured."""

    def __init__(self, url: str, token: str, connections: int = 64) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections), headers=self.headers
        )

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            return response.status, await response.json()

    async def close(self) -> None:
        await self.session.close()


async def latency(client: Client, workflow: str, runs: int) -> list[float]:
    """End-to-end milliseconds from the POST to seeing the terminal state, one at a time."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        status, body = await client.call(
            "POST", f"/api/v1/workflows/{workflow}/executions", {}, {"Prefer": "wait=60"}
        )
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200 and body["state"] == "COMPLETED", body
    return out


async def acks(client: Client, count: int, concurrency: int) -> float:
    """Durable start acknowledgements per second, with the engine otherwise idle."""
    sem = asyncio.Semaphore(concurrency)

    async def start() -> None:
        async with sem:
            status, body = await client.call("POST", "/api/v1/workflows/parked/executions", {})
            assert status == 202, body

    t0 = time.perf_counter()
    await asyncio.gather(*(start() for _ in range(count)))
    return count / (time.perf_counter() - t0)


async def throughput(
    client: Client, count: int, concurrency: int, pid: int
) -> dict[str, float | None]:
    ids: list[str] = []
    sem = asyncio.Semaphore(concurrency)

    async def start() -> None:
        async with sem:
            status, body = await client.call("POST", "/api/v1/workflows/seq10/executions", {})
            assert status == 202, body
            ids.append(body["id"])

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(start() for _ in range(count)))
    acked = time.perf_counter() - t0
    # Executions are picked up in order; wait for the last few, then check every one.
    for eid in ids[-8:]:
        await wait_terminal(client, eid, 0.02)
    total = time.perf_counter() - t0
    cpu1 = cpu_seconds(pid)
    for eid in ids:
        final = await wait_terminal(client, eid, 0.02)
        assert final["state"] == "COMPLETED", final
    return {
        "acks_per_s": count / acked,
        "executions_per_s": count / total,
        "task_runs_per_s": count * 10 / total,
        "seconds": total,
        # The server's CPU time per task run: steadier than the rates, which move with
        # whatever else the machine is doing.
        "cpu_ms_per_task_run": None
        if cpu0 is None or cpu1 is None
        else (cpu1 - cpu0) * 1000 / (count * 10),
    }


async def dialect_acks(client: Client, count: int, concurrency: int) -> dict[str, float]:
    """Start acknowledgements per second through each vendor dialect's start call (the
    `parked` workflow, as W3 acks does natively): what translating a vendor's request costs."""
    _, listed = await client.call("GET", "/api-open/v1/workflows?pageSize=100")
    number = next(w["id"] for w in listed["data"]["items"] if w["name"] == "parked")
    calls: dict[str, tuple[str, str, Any, int]] = {
        # the native start at the same point (as many executions parked), to compare with
        "the native API": ("POST", "/api/v1/workflows/parked/executions", {}, 202),
        "obs": ("POST", "/v2/workflows/parked", {"bucket": "b", "object": "o"}, 200),
        "emr": (
            "POST",
            "/?Action=SubmitFlow&Version=2016-04-08&FlowId=parked&ProjectId=default"
            "&RegionId=cn-hangzhou",
            None,
            200,
        ),
        "explorer": ("POST", f"/api-open/v1/workflows/{number}/jobs", {"input": {}}, 200),
        "onedata": (
            "POST",
            "/api/v3/oneprovider/automation/execution/workflows",
            {
                "spaceId": "default",
                "atmWorkflowSchemaId": "parked",
                "atmWorkflowSchemaRevisionNumber": 1,
            },
            201,
        ),
        "vro": ("POST", "/vco/api/workflows/parked/executions", {}, 202),
    }
    rates = {}
    for name, (method, path, body, expected) in calls.items():
        rates[name] = await _starts(client, count, concurrency, method, path, body, expected)
    return rates


async def _starts(
    client: Client,
    count: int,
    concurrency: int,
    method: str,
    path: str,
    body: Any,
    expected: int,
) -> float:
    """`count` calls, `concurrency` at a time, each answered `expected`: calls per second."""
    sem = asyncio.Semaphore(concurrency)

    async def start() -> None:
        async with sem:
            status, answer = await client.call(method, path, body)
            assert status == expected, (path, status, answer)

    t0 = time.perf_counter()
    await asyncio.gather(*(start() for _ in range(count)))
    return count / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, token: str, pid: int, quick: bool) -> list[tuple[str, str, str, str]]:
    client = Client(url, token)
    try:
        for wf in (seq(10), fanout(100), python40(), parked()):
            status, body = await client.call("PUT", f"/api/v1/workflows/{wf['name']}", wf)
            assert status in (200, 201), body
        await latency(client, "seq10", 5)  # warm up
        w1 = await latency(client, "seq10", 30 if quick else 200)
        w2 = await latency(client, "fanout100", 10 if quick else 50)
        w3 = await throughput(client, 300 if quick else 3000, 64, pid)
        w4 = (await latency(client, "python40", 1 if quick else 5))[-1] / 1000
        w3_acks = await acks(client, 500 if quick else 3000, 64)
        w5 = await dialect_acks(client, 200 if quick else 1000, 64)
    finally:
        await client.close()
    return [
        (
            "W1 seq10",
            "p50 / p99 (ms)",
            f"{statistics.median(w1):.1f} / {pct(w1, 0.99):.1f}",
            "p50 ≤ 50",
        ),
        (
            "W2 fanout100",
            "p50 / p99 (ms)",
            f"{statistics.median(w2):.1f} / {pct(w2, 0.99):.1f}",
            "p50 ≤ 300",
        ),
        ("W3 throughput", "task runs/s", f"{w3['task_runs_per_s']:.0f}", "≥ 1,000"),
        ("W3 throughput", "executions/s", f"{w3['executions_per_s']:.0f}", ""),
        (
            "W3 throughput",
            "server CPU per task run (ms)",
            "n/a" if w3["cpu_ms_per_task_run"] is None else f"{w3['cpu_ms_per_task_run']:.3f}",
            "",
        ),
        ("W3 throughput", "start acks/s, engine busy with them", f"{w3['acks_per_s']:.0f}", ""),
        ("W3 acks", "start acks/s, engine otherwise idle", f"{w3_acks:.0f}", "≥ 500"),
        ("W4 python40", "total (s)", f"{w4:.2f}", "≤ 1.0"),
        *(
            ("W5 dialect acks", f"start acks/s through {name}", f"{rate:.0f}", "")
            for name, rate in w5.items()
        ),
    ]


async def run_parked(
    url: str, token: str, pid: int, quick: bool, parked: int
) -> list[tuple[str, str, str, str]]:
    """W1 with `parked` executions waiting for a signal, and the server's memory after it."""
    client = Client(url, token)
    try:
        for wf in (seq(10), waits()):
            status, body = await client.call("PUT", f"/api/v1/workflows/{wf['name']}", wf)
            assert status in (200, 201), body
        path = "/api/v1/workflows/waits/executions"
        rate = await _starts(client, parked, 64, "POST", path, {}, 202) if parked else 0.0
        await asyncio.sleep(5 if parked else 0)  # every one of them has reached its wait
        await latency(client, "seq10", 5)  # warm up
        w1 = await latency(client, "seq10", 30 if quick else 200)
        rss = rss_mib(pid)
    finally:
        await client.close()
    return [
        ("parked", "executions waiting for a signal (started at /s)", f"{parked} ({rate:.0f})", ""),
        (
            "W1 seq10",
            "p50 / p99 (ms)",
            f"{statistics.median(w1):.1f} / {pct(w1, 0.99):.1f}",
            "p50 ≤ 50",
        ),
        ("server", "resident memory after W1 (MiB)", "n/a" if rss is None else f"{rss:.0f}", ""),
    ]


def takeover(data_dir: Path, workers: int, database_url: str | None) -> float:
    """Seconds from a kill -9 of a node holding 20 executions (each waiting for a signal,
    sent at once through the other node) until the other node has completed them all."""
    key = subprocess.run(
        [sys.executable, "-m", "execflow.cli", "secrets", "new-key"],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)])),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = {
        "EXECFLOW_DATABASE_URL": database_url or f"sqlite:///{data_dir / 'shared.db'}",
        "EXECFLOW_SECRET_KEYS": key,
        "EXECFLOW_PARK_AFTER": "0",  # what is taken over is what the killed node holds
    }
    (data_dir / "a").mkdir(parents=True)
    wf = {
        "name": "napper",
        "tasks": {
            "wait": {"action": "signal", "with": {"name": "go"}},
            "done": {"action": "echo", "needs": ["wait"]},
        },
    }
    with server(data_dir / "a", workers, None, {**shared, "EXECFLOW_NODE_ID": "a"}) as a:
        url_a, token, pid_a = a
        headers = {"Authorization": f"Bearer {token}"}
        httpx.put(f"{url_a}/api/v1/workflows/napper", json=wf, headers=headers).raise_for_status()
        ids = []
        for _ in range(20):
            r = httpx.post(f"{url_a}/api/v1/workflows/napper/executions", json={}, headers=headers)
            r.raise_for_status()
            ids.append(r.json()["id"])
        for eid in ids:
            while (
                httpx.get(f"{url_a}/api/v1/executions/{eid}", headers=headers).json()["state"]
                != "WAITING_ON_SIGNAL"
            ):
                time.sleep(0.05)
        (data_dir / "b").mkdir()
        shutil.copy(data_dir / "a" / "admin-token", data_dir / "b" / "admin-token")
        with server(data_dir / "b", workers, None, {**shared, "EXECFLOW_NODE_ID": "b"}) as b:
            os.kill(pid_a, signal.SIGKILL)
            killed = time.monotonic()
            for eid in ids:  # recorded now, carried out by whoever holds the execution
                go = f"{b[0]}/api/v1/executions/{eid}/signals/go"
                httpx.post(go, json={}, headers=headers).raise_for_status()
            pending = set(ids)
            while pending:
                for eid in list(pending):
                    r = httpx.get(f"{b[0]}/api/v1/executions/{eid}", headers=headers)
                    if r.json()["state"] in TERMINAL:
                        pending.discard(eid)
                if time.monotonic() - killed > 600:
                    raise SystemExit("the other node did not take the executions over")
                time.sleep(0.1)
            return time.monotonic() - killed


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--takeover",
        action="store_true",
        help="also W6: takeover after a kill -9 (about EXECFLOW_HEARTBEAT_SECONDS, 9 s)",
    )
    parser.add_argument(
        "--parked",
        type=int,
        default=None,
        metavar="N",
        help="start N executions waiting for a signal, then measure only W1 and memory",
    )
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="execflow-bench-"))
    try:
        with server(data_dir, args.workers, args.database_url) as (url, token, pid):
            if args.parked is not None:
                rows = asyncio.run(run_parked(url, token, pid, args.quick, args.parked))
            else:
                rows = asyncio.run(run(url, token, pid, args.quick))
        if args.takeover:
            beat = os.environ.get("EXECFLOW_HEARTBEAT_SECONDS", "9")
            seconds = takeover(data_dir / "takeover", args.workers, args.database_url)
            metric = f"seconds after a kill -9 (heartbeat {beat} s)"
            rows.append(("W6 takeover", metric, f"{seconds:.1f}", ""))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"execflow benchmark: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {db}, {args.workers} workers"
    )
    print()
    print("| workload | metric | measured | target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
