"""The node's metrics: what they count, and the three ways `/metrics` is served."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from execflow.api import create_app
from execflow.metrics import Metrics
from execflow.runtime import Runtime
from execflow.settings import MetricsEndpoint, Settings, parse_metrics
from tests.test_api import HELLO, Api, api  # noqa: F401
from tests.test_api_access import new_token
from tests.test_server import free_port, start_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

NAMES = (
    "execflow_engine_tick_failures_total",
    "execflow_internal_failures_total",
    "execflow_lost_attempts_total",
    "execflow_executions_started_total",
    "execflow_engine_tick_seconds_bucket",
    "execflow_store_commit_seconds_bucket",
    "execflow_executions_held",
)


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(
    api: Api, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await api.client.get("/metrics", headers=api.auth(token))
    assert r.status_code == 200, r.text
    return samples(r.text)


def started(values: Samples) -> float:
    return values[("execflow_executions_started_total", ())]


async def test_metrics_need_a_token_of_the_default_project(api: Api) -> None:
    c = api.client
    r = await c.get("/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["id"] == "unauthenticated"
    for role in ("viewer", "admin"):  # another project's, even its admin: 403
        r = await c.get("/metrics", headers=api.auth(await new_token(api, "alpha", role)))
        assert r.status_code == 403, (role, r.text)
        assert r.json()["error"]["id"] == "forbidden"
        assert "execflow_" not in r.text
    viewer = await new_token(api, "default", "viewer")
    r = await c.get("/metrics", headers=api.auth(viewer))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    for name in NAMES:
        assert f"\n{name}" in r.text, name
    assert "# HELP execflow_executions_ended_total" in r.text
    spec = (await c.get("/openapi.json")).json()
    assert spec["paths"]["/metrics"]["get"]["security"]


async def test_starts_reruns_and_retries_through_the_api_count_as_started(
    api: Api,
) -> None:
    c, h = api.client, api.auth()
    assert (await c.put("/api/v1/workflows/hello", json=HELLO, headers=h)).status_code == 201
    before = started(await scrape(api))
    ids = []
    for who in ("a", "b"):
        r = await c.post(
            "/api/v1/workflows/hello/executions", json={"inputs": {"who": who}}, headers=h
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    assert started(await scrape(api)) == before + 2
    # the same name again finds the first execution: not a second start
    for _ in range(2):
        r = await c.post(
            "/api/v1/workflows/hello/executions",
            json={"inputs": {"who": "c"}, "name": "once"},
            headers=h,
        )
        assert r.status_code in (200, 202), r.text
    assert started(await scrape(api)) == before + 3
    r = await c.post(f"/api/v1/executions/{ids[1]}/cancel?force=true", headers=h)
    assert r.status_code == 202, r.text
    await api.idle()
    r = await c.post(f"/api/v1/executions/{ids[0]}/rerun", json={"from_task": "again"}, headers=h)
    assert r.status_code == 202, r.text
    assert started(await scrape(api)) == before + 4
    assert (await c.get(f"/api/v1/executions/{ids[1]}", headers=h)).json()["state"] == "CANCELED"
    r = await c.post(f"/api/v1/executions/{ids[1]}/retry", headers=h)
    assert r.status_code == 202, r.text
    assert started(await scrape(api)) == before + 5
    # a start refused changes nothing
    r = await c.post("/api/v1/workflows/hello/executions", json={"inputs": {}}, headers=h)
    assert r.status_code == 422
    assert started(await scrape(api)) == before + 5


async def test_what_the_engine_reports_shows_in_the_scrape(api: Api) -> None:
    m = api.runtime.metrics
    assert api.runtime.service.metrics is m
    m.tick(0.0003)
    m.tick(0.2, failed=True)
    m.commit(0.004)
    m.internal_failure()
    m.lost_attempt()
    m.lost_attempt(2)
    m.execution_started()
    m.execution_ended("FAILED")
    m.execution_ended("FAILED")
    m.task_run("echo", "completed")
    m.task_run("python", "timeout")
    m.held(lambda: 7)
    got = await scrape(api)
    assert got[("execflow_engine_tick_seconds_count", ())] == 2
    assert got[("execflow_engine_tick_seconds_bucket", (("le", "0.00025"),))] == 0
    assert got[("execflow_engine_tick_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("execflow_engine_tick_seconds_bucket", (("le", "0.25"),))] == 2
    assert got[("execflow_engine_tick_failures_total", ())] == 1
    assert got[("execflow_store_commit_seconds_count", ())] == 1
    assert got[("execflow_store_commit_seconds_sum", ())] == pytest.approx(0.004)
    assert got[("execflow_internal_failures_total", ())] == 1
    assert got[("execflow_lost_attempts_total", ())] == 3
    assert got[("execflow_executions_started_total", ())] == 1
    assert got[("execflow_executions_ended_total", (("state", "FAILED"),))] == 2
    assert got[("execflow_executions_ended_total", (("state", "COMPLETED"),))] == 0
    runs = "execflow_task_runs_total"
    assert got[(runs, (("action", "echo"), ("outcome", "completed")))] == 1
    assert got[(runs, (("action", "python"), ("outcome", "timeout")))] == 1
    assert (runs, (("action", "echo"), ("outcome", "timeout"))) not in got
    assert got[("execflow_executions_held", ())] == 7


def test_each_metrics_counts_apart() -> None:
    one, two = Metrics(), Metrics()
    one.execution_started(3)
    assert started(samples(one.exposition().decode())) == 3
    assert started(samples(two.exposition().decode())) == 0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, workers=1, sqlite_synchronous="OFF", node_id="m", shutdown_grace=0
    )


async def test_a_listener_of_its_own_answers_the_scrape_and_closes_with_the_runtime(
    settings: Settings,
) -> None:
    runtime = Runtime.build(settings.with_(metrics=MetricsEndpoint("port", "127.0.0.1", 0)))
    token = runtime.prepare()
    assert token is not None
    async with runtime.running(loop=False):
        assert runtime.metrics_listener is not None
        host, port = runtime.metrics_listener.address
        runtime.metrics.execution_ended("COMPLETED")
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://{host}:{port}/metrics")  # no token
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain")
            got = samples(r.text)
            assert got[("execflow_executions_ended_total", (("state", "COMPLETED"),))] == 1
            for name in NAMES:
                assert f"\n{name}" in r.text, name
        # the API itself has no such route then
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            r = await api.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 404
    assert runtime.metrics_listener is None
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=2):
        pass


async def test_a_taken_port_fails_the_start_before_anything_runs(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = Runtime.build(settings.with_(metrics=MetricsEndpoint("port", "127.0.0.1", port)))
        runtime.prepare()
        with pytest.raises(OSError):
            await runtime.start(loop=False)
        assert runtime.metrics_listener is None
        runtime.store.close()


async def test_metrics_off_serves_nothing(settings: Settings) -> None:
    runtime = Runtime.build(settings.with_(metrics=MetricsEndpoint("off")))
    token = runtime.prepare()
    async with runtime.running(loop=False):
        assert runtime.metrics_listener is None
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 404
            assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


def test_the_setting_reads_token_off_and_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metrics == MetricsEndpoint("token")
    assert parse_metrics(" Token ") == MetricsEndpoint("token")
    assert parse_metrics("off") == MetricsEndpoint("off")
    assert parse_metrics("port:9464") == MetricsEndpoint("port", "127.0.0.1", 9464)
    assert parse_metrics("port:0.0.0.0:9464") == MetricsEndpoint("port", "0.0.0.0", 9464)
    assert parse_metrics("port:[::1]:9464") == MetricsEndpoint("port", "::1", 9464)
    for bad in ("", "on", "port", "port:", "port:x", "port:70000", "port:host:", "9464"):
        with pytest.raises(ValueError, match="EXECFLOW_METRICS"):
            parse_metrics(bad)
    monkeypatch.setenv("EXECFLOW_METRICS", "port:9100")
    assert Settings.from_env().metrics == MetricsEndpoint("port", "127.0.0.1", 9100)


@pytest.mark.slow
def test_a_server_serves_its_metrics_on_their_port_until_it_stops(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    server = start_server(tmp_path / "data", port, env={"EXECFLOW_METRICS": f"port:{metrics_port}"})
    try:
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in server.output()
        r = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert r.status_code == 200, r.text
        assert "execflow_executions_started_total" in r.text
        assert server.client.get("/metrics").status_code == 404
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", metrics_port), timeout=2):
        pass
