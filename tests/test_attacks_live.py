"""Attacks on a running server: a canary secret hunted in every place it could leak, and a
bounded property-based fuzz run of the OpenAPI document (schemathesis)."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from execflow.store import schema as tables
from tests.test_control import APPROVAL
from tests.test_secrets import CARELESS, FAILS
from tests.test_server import REPO_ROOT, cli_argv, free_port, poll, server_env

pytestmark = pytest.mark.slow


class Live:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = data_dir.parent / f"{data_dir.name}-server.log"
        argv = cli_argv(data_dir, "serve", "--port", str(self.port), "--workers", "2")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*argv, "--access-log"],
                cwd=REPO_ROOT,
                env={**server_env(), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        poll("the server to answer", ready, timeout=20)
        self.token = (data_dir / "admin-token").read_text().strip()
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            cli_argv(self.data_dir, "--url", self.url, *args),
            cwd=REPO_ROOT,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout + done.stderr

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Receiver:
    """An HTTP endpoint on loopback that keeps every body it is sent."""

    def __init__(self) -> None:
        bodies: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ended"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ended(client: httpx.Client, execution_id: str) -> httpx.Response | None:
    r = client.get(f"/api/v1/executions/{execution_id}")
    return r if r.json()["ended_at"] else None


def test_a_canary_secret_never_appears_in_plaintext_anywhere(tmp_path: Path) -> None:
    canary = "cnry-" + secrets.token_hex(16)
    receiver = Receiver()
    live = Live(tmp_path / "data", EXECFLOW_CALLBACK_ALLOWED_NETWORKS="127.0.0.1/32")
    seen: list[str] = []
    try:
        c = live.client
        for wf in (CARELESS, FAILS):
            assert c.put(f"/api/v1/workflows/{wf['name']}", json=wf).status_code == 201
        inputs = {"password": canary, "pin": 4242, "user": "ada"}
        # a dry run, and refused starts that carry it
        for r in [
            c.post(
                "/api/v1/workflows/careless/executions",
                json={"inputs": inputs, "labels": {"dry": "run"}},
                params={"dry_run": "true"},
            ),
            c.post("/api/v1/workflows/careless/executions?dry_run=true", json={"inputs": inputs}),
            c.post(
                "/api/v1/workflows/careless/executions", json={"inputs": {**inputs, "pin": canary}}
            ),
            c.post("/api/v1/workflows/careless/executions", json={"inputs": inputs, "name": "-"}),
        ]:
            seen.append(r.text)
        ok = c.post(
            "/api/v1/workflows/careless/executions",
            json={"inputs": inputs, "callback": receiver.url, "name": "canary"},
            headers={"Prefer": "wait=30"},
        )
        assert ok.status_code == 200 and ok.json()["state"] == "COMPLETED", ok.text
        again = c.post(  # the same name and inputs: found again
            "/api/v1/workflows/careless/executions", json={"inputs": inputs, "name": "canary"}
        )
        assert again.status_code == 200, again.text
        failed = c.post(
            "/api/v1/workflows/fails/executions",
            json={"inputs": {"token": canary}, "callback": receiver.url},
            headers={"Prefer": "wait=30"},
        )
        assert failed.json()["state"] == "FAILED", failed.text
        rerun = c.post(
            f"/api/v1/executions/{ok.json()['id']}/rerun",
            json={"from_task": "use"},
        )
        assert rerun.status_code == 202, rerun.text
        execution_ids = [ok.json()["id"], failed.json()["id"], rerun.json()["id"]]
        for eid in execution_ids:
            done = poll("the execution to end", partial(ended, c, eid))
            seen += [
                done.text,
                c.get(f"/api/v1/executions/{eid}/logs", params={"level": "debug"}).text,
                c.get(f"/api/v1/executions/{eid}/events").text,
            ]
            seen += [live.cli("get", eid), live.cli("logs", eid)]
        seen += [
            ok.text,
            again.text,
            failed.text,
            c.get("/api/v1/executions", params={"limit": 100}).text,
            c.get("/api/v1/workflows/careless").text,
            live.cli("ls"),
        ]
        # the task did get the value itself
        assert json.loads(seen[-6])["outputs"]["sha256"] != "******"
        poll("both callbacks", lambda: len(receiver.bodies) >= 2, timeout=30)
        seen += [b.decode() for b in receiver.bodies]
    finally:
        live.stop()
        receiver.close()
    seen.append(live.log.read_text(errors="replace"))
    for text in seen:
        assert canary not in text, text[:2000]
    assert any("******" in text for text in seen)
    # nor in the database: every column of every row, and the files themselves
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'execflow.db'}")
    with engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                assert canary not in repr(tuple(row)), (table.name, row)
    engine.dispose()
    for path in (tmp_path / "data").iterdir():
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path


# fuzzing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = Live(tmp_path_factory.mktemp("fuzz") / "data", EXECFLOW_START_RATE="0")
    # something to find: a workflow, a waiting execution
    assert live.client.put("/api/v1/workflows/approval", json=APPROVAL).status_code == 201
    assert live.client.post("/api/v1/workflows/approval/executions", json={}).status_code == 202
    yield live
    live.stop()
    log = live.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


# each operation's share of generated requests; derandomized, so a failure reproduces
EXAMPLES = 25


def test_the_api_answers_generated_requests_without_5xx_and_as_documented(fuzzed: Live) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    auth = {"Authorization": f"Bearer {fuzzed.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 20
    calls = 0

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=fuzzed.url,
                headers=auth,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )

        answers()
    assert calls > len(operations)
