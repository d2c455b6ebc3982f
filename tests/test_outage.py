"""While the database cannot be reached: 503 with Retry-After in every shape, nothing
acknowledged that was not stored, and readiness that says so (liveness that does not)."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from execflow.api import create_app
from execflow.errors import Unavailable
from execflow.store import Store
from execflow.store.database import is_outage
from tests.test_api import HELLO, Api, api  # noqa: F401

WRITES = ("INSERT", "UPDATE", "DELETE")


@contextmanager
def outage(store: Store, only: tuple[str, ...] = ()) -> Iterator[None]:
    """Every statement (or only those starting with a word of `only`) fails as the driver
    fails when its server is gone, until the block ends."""
    refused = store.engine.dialect.loaded_dbapi.OperationalError

    def refuse(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not only or statement.lstrip().upper().startswith(only):
            raise refused("could not reach the database server")

    sa.event.listen(store.engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", refuse)


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1


async def test_a_start_during_an_outage_is_refused_with_503_and_stores_nothing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    r = await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    assert r.status_code == 201, r.text
    start = {"inputs": {"who": "ada"}, "name": "once"}
    caplog.set_level(logging.WARNING, "execflow")
    with outage(api.runtime.store, only=WRITES):
        r = await api.client.post(
            "/api/v1/workflows/hello/executions", json=start, headers=api.auth()
        )
    assert_unavailable(r)
    error = r.json()["error"]
    assert error["id"] == "unavailable"
    assert error["description"] == "The database cannot be reached; try again shortly."
    assert error["request_id"] == r.headers["x-request-id"]
    (line,) = [rec for rec in caplog.records if rec.name == "execflow.api"]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "could not reach the database server" in line.getMessage()

    listed = await api.client.get("/api/v1/executions", headers=api.auth())
    assert listed.status_code == 200 and listed.json()["items"] == []
    r = await api.client.post("/api/v1/workflows/hello/executions", json=start, headers=api.auth())
    assert r.status_code == 202, r.text


async def test_a_read_during_an_outage_is_refused_with_503_then_answered(api: Api) -> None:
    await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    r = await api.client.post(
        "/api/v1/workflows/hello/executions", json={"inputs": {"who": "ada"}}, headers=api.auth()
    )
    where = r.headers["location"]
    with outage(api.runtime.store):
        r = await api.client.get(where, headers=api.auth())
        assert_unavailable(r)
        assert r.json()["error"]["id"] == "unavailable"
    r = await api.client.get(where, headers=api.auth())
    assert r.status_code == 200, r.text


# one listing per dialect, and how its envelope names the failure
DIALECTS: list[tuple[str, dict[str, str], Any]] = [
    (
        "/v2/workflowexecutions",
        {"x-workflow-graph-name": "hello"},
        lambda b: (b["code"], b["message"]),
    ),
    (
        "/",
        {"Action": "ListFlowProject", "Version": "2016-04-08", "RegionId": "cn-hangzhou"},
        lambda b: (b["Code"], b["Message"]),
    ),
    ("/api-open/v1/jobs", {}, lambda b: (b["code"], b["message"])),
    (
        "/api/v3/oneprovider/spaces/default/automation/execution/workflows",
        {},
        lambda b: (b["error"]["id"], b["error"]["description"]),
    ),
    ("/vco/api/workflows/hello/executions", {}, lambda b: (b["status"], b["message"])),
]
EXPECTED = ["ServiceUnavailable", "ServiceUnavailable", 50004001, "serviceUnavailable", 503]


async def test_every_dialect_answers_an_outage_with_503_in_its_envelope(api: Api) -> None:
    await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    for (path, params, read), code in zip(DIALECTS, EXPECTED, strict=True):
        r = await api.client.get(path, params=params, headers=api.auth())
        assert r.status_code == 200, (path, r.text)
        with outage(api.runtime.store):
            r = await api.client.get(path, params=params, headers=api.auth())
        assert_unavailable(r)
        got, message = read(r.json())
        assert got == code, (path, r.text)
        assert "database cannot be reached" in message, (path, r.text)


def test_the_store_translates_an_outage_and_the_engine_still_knows_it_for_one() -> None:
    cause = sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError())
    assert is_outage(cause) and is_outage(Unavailable())
    assert not is_outage(sa.exc.IntegrityError("INSERT", {}, ValueError()))


def test_a_database_that_takes_no_writes_for_now_is_an_outage_not_bad_data() -> None:
    """PostgreSQL read-only (a standby before its promotion): the engine waits it out rather
    than failing the executions it was writing, and the API answers 503."""
    errors = pytest.importorskip("psycopg.errors", reason="psycopg is not installed")
    refused = sa.exc.InternalError("INSERT", {}, errors.ReadOnlySqlTransaction())
    assert is_outage(refused)
    assert not is_outage(sa.exc.InternalError("INSERT", {}, errors.InFailedSqlTransaction()))


async def test_store_calls_raise_unavailable_from_the_drivers_error(api: Api) -> None:
    store = api.runtime.store
    with outage(store), pytest.raises(Unavailable) as raised:
        await store.read(store.ping)
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)
    with outage(store), pytest.raises(Unavailable):
        await store.call(store.list_projects)
    await store.read(store.ping)


# readiness ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def probes(api: Api) -> AsyncIterator[tuple[httpx.AsyncClient, Clock]]:
    """A client of an app whose readiness runs on a clock of the test's."""
    app: FastAPI = create_app(api.runtime)
    clock = Clock()
    app.state.readiness.clock = clock
    api.runtime.engine.last_tick = clock.now
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, clock


async def test_a_node_is_ready_when_its_database_answers_and_its_engine_ticks(
    probes: tuple[httpx.AsyncClient, Clock],
) -> None:
    client, _ = probes
    ok = {"status": "ok", "checks": {"database": "ok", "engine": "ok"}}
    for path in ("/readyz", "/healthz"):
        r = await client.get(path)
        assert (r.status_code, r.json()) == (200, ok), path
    r = await client.get("/livez")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_a_node_whose_database_cannot_be_reached_is_live_but_not_ready(
    api: Api, probes: tuple[httpx.AsyncClient, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    client, clock = probes
    with outage(api.runtime.store):
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {
            "status": "unavailable",
            "checks": {"database": "cannot be reached", "engine": "ok"},
        }
        assert "could not reach" not in r.text  # the cause is for the log only
        assert (await client.get("/livez")).status_code == 200
    # the answer is kept a second, so probes cannot load the database
    assert (await client.get("/healthz")).status_code == 503
    clock.now += 1.0
    api.runtime.engine.last_tick = clock.now
    assert (await client.get("/readyz")).status_code == 200
    said = [rec.getMessage() for rec in caplog.records if rec.name == "execflow.api"]
    assert said[0].startswith("readiness: the database cannot be reached")
    assert said[-1] == "readiness: the database answers again"


async def test_a_node_whose_engine_is_stuck_or_failing_is_not_ready(
    api: Api, probes: tuple[httpx.AsyncClient, Clock]
) -> None:
    client, clock = probes
    engine = api.runtime.engine
    clock.now += 10.0  # the longest silence allowed at a 1 s poll interval
    assert (await client.get("/readyz")).status_code == 200
    clock.now += 1.0
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": "ok", "engine": "no tick for 11 s (at most 10 s)"}
    engine.last_tick = clock.now
    engine.failed_ticks = 2
    assert (await client.get("/readyz")).status_code == 200
    engine.failed_ticks = 3
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["engine"] == "3 ticks failed in a row"


async def test_an_engine_tick_during_an_outage_fails_and_faults_no_execution(
    api: Api, probes: tuple[httpx.AsyncClient, Clock]
) -> None:
    client, _ = probes
    await api.client.put("/api/v1/workflows/hello", json=HELLO, headers=api.auth())
    r = await api.client.post(
        "/api/v1/workflows/hello/executions", json={"inputs": {"who": "ada"}}, headers=api.auth()
    )
    location = r.headers["location"]
    engine = api.runtime.engine
    with outage(api.runtime.store):
        for n in (1, 2, 3):
            with pytest.raises(Unavailable):
                await engine.tick()
            assert engine.failed_ticks == n
        r = await client.get("/readyz")
        assert r.json()["checks"]["engine"] == "3 ticks failed in a row"
    r = await api.client.get(location, headers=api.auth())
    assert r.json()["state"] in ("INITIALIZING", "RUNNING"), r.text


async def test_reads_and_writes_on_either_database_raise_unavailable_then_work(
    store: Store,
) -> None:
    with outage(store):
        with pytest.raises(Unavailable):
            await store.read(store.ping)
        with pytest.raises(Unavailable):
            await store.call(store.create_project, "later", datetime.now(UTC))
    await store.read(store.ping)
    await store.call(store.create_project, "later", datetime.now(UTC))
    assert [p.name for p in await store.read(store.list_projects)] == ["later"]
