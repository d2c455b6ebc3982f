"""The console's pages with a million executions in the store: how long the server takes.

    python -m bench.console [--executions N] [--database-url URL] [--requests N] [--before]

Fills a fresh store (SQLite in a temporary directory, or the PostgreSQL database given,
which must be empty) through its tables with bulk inserts: executions of several workflows
(one of them rare), mostly ended, a few running, waiting or suspended, with labels (a
common one, and one that only a few carry) and creation times spread over 60 days. One
execution is run for real, so its page has tasks, a timeline and a log. Then each page is
asked for `--requests` times in process (httpx.ASGITransport, signed in as the console is)
and the server's own time is read from the `Server-Timing` header the console sends.
`--before` drops the indexes of migration 0018 first, to see what they changed.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import re
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from execflow.api.app import create_app
from execflow.runtime import Runtime
from execflow.service import StartRequest
from execflow.settings import Settings
from execflow.store import schema as s

DAYS = 60
CHUNK = 20_000
# workflow -> share of the executions; `rare-audit` is the one a filter must find fast
WORKFLOWS = {"orders": 0.5, "reports": 0.3, "media": 0.19, "rare-audit": 0.01}
# state -> how many in all: most have ended; the others are the live ones a person watches
LIVE = {"RUNNING": 40, "WAITING": 20, "WAITING_ON_SIGNAL": 30, "SUSPENDED": 10}
ENDED = (("COMPLETED", 0.9), ("FAILED", 0.07), ("CANCELED", 0.03))
RARE_LABEL_EVERY = 100_000  # one execution in this many carries `audit=<n>`
NEW_INDEXES = (
    "ix_executions_project_state_created",
    "ix_executions_project_workflow_created",
    "ix_executions_project_name",
)
PAGE_WORKFLOW = {
    "name": "page-demo",
    "tasks": {
        "fetch": {"action": "echo", "with": {"n": 1}},
        "shape": {"action": "echo", "needs": ["fetch"], "with": {"n": 2}},
        "store": {"action": "echo", "needs": ["shape"], "with": {"n": 3}},
    },
}


def _definition(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": {"only": {"action": "echo", "with": {"text": name}}}}


def _state(rng: random.Random) -> str:
    roll = rng.random()
    for state, share in ENDED:
        if roll < share:
            return state
        roll -= share
    return "COMPLETED"


def fill(runtime: Runtime, project_id: str, workflow_ids: dict[str, str], count: int) -> float:
    """Insert `count` executions in chunks; the seconds it took."""
    rng = random.Random(7)
    names = list(WORKFLOWS)
    weights = list(WORKFLOWS.values())
    live = [state for state, n in LIVE.items() for _ in range(n)]
    live_at = set(rng.sample(range(count), min(len(live), count)))
    now = datetime.now(UTC)
    first = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / max(count, 1)
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for i in range(count):
        workflow = rng.choices(names, weights)[0]
        created = first + step * i
        state = live.pop() if i in live_at and live else _state(rng)
        ended = None if state in LIVE else created + timedelta(seconds=rng.uniform(0.05, 30))
        labels = {"team": f"t{i % 20}", "env": "prod" if i % 3 else "staging"}
        if i % RARE_LABEL_EVERY == 0:
            labels["audit"] = str(i // RARE_LABEL_EVERY)
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "project_id": project_id,
                "workflow_id": workflow_ids[workflow],
                "workflow_name": workflow,
                "revision": 1,
                "name": f"{workflow}-{i:07d}",
                "state": state,
                "inputs": {"n": i},
                "labels": labels,
                "outputs": {"ok": True} if state == "COMPLETED" else None,
                "created_at": created,
                "started_at": created,
                "ended_at": ended,
                "updated_at": ended or created,
                "cancel_requested": False,
                # live ones are held by a node that is not this one, far into the future
                "lease_owner": None if ended else "elsewhere",
                "lease_expires_at": None if ended else now + timedelta(days=365),
            }
        )
        if len(rows) == CHUNK or i == count - 1:
            with runtime.store.engine.begin() as conn:
                conn.execute(s.executions.insert(), rows)
            rows = []
    with runtime.store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(sa.text("ANALYZE"))
        else:
            conn.execute(sa.text("ANALYZE executions"))
    return time.perf_counter() - began


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    page = await client.get("/console/login")
    found = re.search(r'name="_csrf" value="([^"]*)"', page.text)
    assert found, "no sign-in form"
    r = await client.post("/console/login", data={"_csrf": found.group(1), "token": token})
    assert r.status_code == 303, r.text


async def measure(
    client: httpx.AsyncClient, path: str, times: int, headers: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """p50 and p95 of the server's time (ms, from Server-Timing), and p95 of the whole."""
    server, whole = [], []
    for round_ in range(times + 2):
        began = time.perf_counter()
        r = await client.get(path, headers=headers)
        took = (time.perf_counter() - began) * 1000
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        if round_ < 2:  # warm-up
            continue
        timing = re.search(r"app;dur=([0-9.]+)", r.headers["server-timing"])
        assert timing, r.headers
        server.append(float(timing.group(1)))
        whole.append(took)
    q = statistics.quantiles(server, n=20)
    return statistics.median(server), q[18], statistics.quantiles(whole, n=20)[18]


def _pages(execution_id: str, since: datetime) -> list[tuple[str, str]]:
    window = f"since={since:%Y-%m-%dT%H:%M}&until={since + timedelta(hours=1):%Y-%m-%dT%H:%M}"
    return [
        ("executions list, no filter", "/console/executions"),
        ("filter state=RUNNING (40 in all)", "/console/executions?state=RUNNING"),
        ("filter state=FAILED (7 %)", "/console/executions?state=FAILED"),
        ("filter workflow=rare-audit (1 %)", "/console/executions?workflow=rare-audit"),
        ("filter workflow=orders (50 %)", "/console/executions?workflow=orders"),
        ("filter label team=t7 (5 %)", "/console/executions?label=team%3Dt7"),
        ("filter label audit=3 (1 in 100,000)", "/console/executions?label=audit%3D3"),
        ("filter name=orders-0500000 (one)", "/console/executions?name=orders-0500000"),
        ("filter created, 1 h 30 days ago", f"/console/executions?{window}"),
        ("filter state=FAILED + workflow=media", "/console/executions?state=FAILED&workflow=media"),
        ("counts (the list's 5 s refresh)", "/console/executions#results"),
        ("an execution's page", f"/console/executions/{execution_id}"),
        ("an execution's live parts", f"/console/executions/{execution_id}/live"),
        ("a workflow's page", "/console/workflows/orders"),
        ("workflows list", "/console/workflows"),
    ]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="execflow-bench-console-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            database_url=args.database_url or "",
            sqlite_synchronous="OFF",
            schedules=False,
            node_id="bench",
        )
        runtime = Runtime.build(settings)
        token = runtime.prepare()
        assert token is not None, "the database must be empty"
        async with runtime.running(loop=False):
            service = runtime.service
            admin = await service.authenticate(token)
            for name in (*WORKFLOWS, "page-demo"):
                body = PAGE_WORKFLOW if name == "page-demo" else _definition(name)
                await service.put_workflow(admin, name, body)
            record, _ = await service.start_or_find(admin, "page-demo", StartRequest(inputs={}))
            await runtime.engine.run_until_idle()
            with runtime.store.engine.connect() as conn:
                ids = dict(conn.execute(sa.select(s.workflows.c.name, s.workflows.c.id)).all())
            seconds = await asyncio.to_thread(fill, runtime, admin.project_id, ids, args.executions)
            print(f"filled {args.executions:,} executions in {seconds:.1f} s", flush=True)
            if args.before:
                with runtime.store.engine.begin() as conn:
                    for index in NEW_INDEXES:
                        conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
                print("without the indexes of migration 0018")
            app = create_app(runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await sign_in(client, token)
                since = datetime.now(UTC) - timedelta(days=30)
                print(_machine(runtime))
                print(f"{'page':<42} {'p50 ms':>8} {'p95 ms':>8} {'p95 whole':>10}")
                for label, path in _pages(record.id, since):
                    headers = None
                    if path.endswith("#results"):
                        path = path.removesuffix("#results")
                        headers = {"HX-Request": "true", "HX-Target": "results"}
                    p50, p95, whole = await measure(client, path, args.requests, headers)
                    print(f"{label:<42} {p50:>8.1f} {p95:>8.1f} {whole:>10.1f}", flush=True)


def _machine(runtime: Runtime) -> str:
    database = runtime.store.engine.dialect.name
    return f"{platform.machine()}, {platform.python_version()}, {database}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--before", action="store_true", help="drop migration 0018's indexes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
