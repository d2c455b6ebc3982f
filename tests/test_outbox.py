"""The callback outbox: ended executions are POSTed once, signed, retried, and never lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from execflow.api import create_app
from execflow.callbacks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    CallbackPolicy,
    verify,
)
from execflow.clock import ManualClock
from execflow.levels import ERROR, NOTICE, WARNING
from execflow.outbound import Resolver, parse_networks
from execflow.outbox import Deliverer
from execflow.records import CallbackStatus, EventRecord
from execflow.runtime import Runtime
from execflow.sealing import SECRET_MASK, Sealed
from execflow.settings import Settings
from execflow.store import Store, connect
from execflow.store import outbox as sql
from execflow.store import schema as s
from tests.harness import Harness, harness

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LOCAL = CallbackPolicy.from_config(["127.0.0.0/8"])
PUBLIC_ONLY = "callbacks go to public addresses only"

NOTIFY: dict[str, Any] = {
    "name": "notify",
    "parameters": {
        "who": {"type": "string", "default": "ada"},
        "token": {"type": "string", "secret": True, "default": "none"},
    },
    "tasks": {"greet": {"action": "echo", "with": {"text": "hi ${{ params.who }}"}}},
    "outputs": {
        "text": "${{ tasks.greet.output.text }}",
        "leak": "token=${{ params.token }}",
    },
}


# -- a receiver ------------------------------------------------------------------------------


@dataclass
class Seen:
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that records requests and answers `statuses` in
    order, then 200."""

    statuses: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _open: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open.values():
            writer.transport.abort()
        await asyncio.gather(*list(self._open), return_exceptions=True)
        await self._server.wait_closed()

    async def wait_for(self, count: int) -> None:
        while len(self.requests) < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), 10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            headers = {}
            for line in filter(None, lines):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Seen(request_line.split(" ")[1], headers, body))
            self._arrived.set()
            status = self.statuses.pop(0) if self.statuses else 200
            answer = [
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                "Content-Length: 0",
                "Connection: close",
                *(f"{name}: {value}" for name, value in self.headers.items()),
            ]
            writer.write(("\r\n".join(answer) + "\r\n\r\n").encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            del self._open[task]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


# -- a node with an engine, and deliverers ---------------------------------------------------


@dataclass
class World:
    h: Harness
    receiver: Receiver
    made: list[Deliverer] = field(default_factory=list)

    @property
    def clock(self) -> ManualClock:
        assert isinstance(self.h.clock, ManualClock)
        return self.h.clock

    def deliverer(
        self,
        policy: CallbackPolicy = LOCAL,
        store: Store | None = None,
        resolve: Resolver | None = None,
        concurrency: int = 16,
    ) -> Deliverer:
        d = Deliverer(
            store or self.h.store,
            self.h.service.definitions,
            policy,
            self.clock,
            resolve=resolve,
            concurrency=concurrency,
            poll_seconds=3600,
        )
        self.made.append(d)
        return d

    async def ended(self, url: str | None = None, **inputs: Any) -> str:
        """Start an execution of `notify` with a callback and run it to its end."""
        self.h.service.callback_policy = LOCAL  # so that a start accepts 127.0.0.1
        record = await self.h.service.start(
            self.h.admin, "notify", inputs, callback=url or self.receiver.url()
        )
        await self.h.engine.run_until_idle()
        return record.id

    async def callback(self, execution_id: str) -> CallbackStatus:
        found = (await self.h.service.get_execution(self.h.admin, execution_id)).callback
        assert found is not None
        return found

    async def log(self, execution_id: str) -> list[EventRecord]:
        events = await self.h.store.read(self.h.store.list_events, execution_id)
        return [ev for ev in events if ev.kind == "callback"]

    async def secret(self) -> bytes:
        found = await self.h.store.call(sql.callback_secret, self.h.store, "default")
        assert found is not None
        return found.encode()


@pytest.fixture
async def world(store: Store, receiver: Receiver) -> AsyncIterator[World]:
    async with harness(store, ManualClock(T0), workers=1) as h:
        await h.apply(NOTIFY)
        w = World(h, receiver)
        try:
            yield w
        finally:
            for d in w.made:
                await d.stop()


def names(table: dict[str, list[str]]) -> Resolver:
    """A resolver answering from `table`, standing in for DNS."""

    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


# -- deliveries ------------------------------------------------------------------------------


async def test_an_ended_execution_is_posted_once_signed_and_recorded(world: World) -> None:
    execution_id = await world.ended(who="grace")
    [attempt] = await world.deliverer().tick()

    assert (attempt.number, attempt.state, attempt.result.status) == (1, "delivered", 200)
    [seen] = world.receiver.requests
    assert seen.target == "/hook"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers[EVENT_ID_HEADER.lower()] == f"{execution_id}:ended"
    assert verify(await world.secret(), seen.body, seen.headers[SIGNATURE_HEADER.lower()])
    record = await world.h.service.get_execution(world.h.admin, execution_id)
    end = "2030-01-01T00:00:00Z"
    assert json.loads(seen.body) == {
        "event_id": f"{execution_id}:ended",
        "event": "execution.ended",
        "execution": {
            "id": execution_id,
            "name": execution_id,
            "urn": record.urn,
            "workflow": "notify",
            "revision": 1,
            "state": "COMPLETED",
            "inputs": {"who": "grace", "token": SECRET_MASK},
            "outputs": {"text": "hi grace", "leak": f"token={SECRET_MASK}"},
            "error": None,
            "created_at": end,
            "started_at": end,
            "ended_at": end,
            "labels": {},
        },
    }
    assert await world.callback(execution_id) == CallbackStatus(
        world.receiver.url(), "delivered", 1, None, 200, None
    )
    [event] = await world.log(execution_id)
    assert (event.level, event.message) == (NOTICE, "callback delivered (200)")
    # settled: nothing is sent again, by this deliverer or another
    assert await world.deliverer().tick() == []
    world.clock.advance(3600)
    assert await world.deliverer().tick() == []
    assert len(world.receiver.requests) == 1


async def test_secret_inputs_never_reach_the_receiver(world: World) -> None:
    await world.ended(token="tok-4f8a1c")
    await world.deliverer().tick()
    [seen] = world.receiver.requests
    assert b"tok-4f8a1c" not in seen.body
    body = json.loads(seen.body)["execution"]
    assert body["inputs"]["token"] == SECRET_MASK
    assert body["outputs"]["leak"] == f"token={SECRET_MASK}"


async def test_a_failed_attempt_is_retried_with_back_off_and_the_same_bytes(
    world: World,
) -> None:
    world.receiver.statuses = [500]
    execution_id = await world.ended()
    deliverer = world.deliverer()

    [first] = await deliverer.tick()
    assert (first.state, first.next_at) == ("pending", T0 + timedelta(seconds=5))
    status = await world.callback(execution_id)
    assert (status.state, status.attempts, status.last_status) == ("pending", 1, 500)
    assert (status.next_at, status.last_error) == (T0 + timedelta(seconds=5), "answered 500")
    assert await deliverer.tick() == []  # not due yet
    store = world.h.store
    assert await store.read(sql.next_due, store, T0) == T0 + timedelta(seconds=5)
    assert await deliverer._delay() == 5
    world.clock.advance(4.9)
    assert await deliverer.tick() == []
    world.clock.advance(0.1)
    [second] = await deliverer.tick()

    assert (second.number, second.state) == (2, "delivered")
    status = await world.callback(execution_id)
    assert (status.state, status.attempts, status.last_status) == ("delivered", 2, 200)
    assert (status.next_at, status.last_error) == (None, None)
    one, two = world.receiver.requests
    assert one.body == two.body
    assert one.headers[EVENT_ID_HEADER.lower()] == two.headers[EVENT_ID_HEADER.lower()]
    events = await world.log(execution_id)
    assert [(ev.level, ev.message) for ev in events] == [
        (WARNING, "callback attempt 1 failed: answered 500; next in 5s"),
        (NOTICE, "callback delivered (200)"),
    ]


async def test_a_callback_is_given_up_when_the_retry_period_is_over(world: World) -> None:
    world.receiver.statuses = [503] * 10
    execution_id = await world.ended()
    deliverer = world.deliverer(
        CallbackPolicy.from_config(["127.0.0.0/8"], retry_for=12, initial_delay=5)
    )
    states = []
    for _ in range(5):
        for attempt in await deliverer.tick():
            states.append((attempt.number, attempt.state, attempt.next_at))
        world.clock.advance(5)
    assert states == [
        (1, "pending", T0 + timedelta(seconds=5)),
        (2, "pending", T0 + timedelta(seconds=12)),  # cut short at the end of the period
        (3, "failed", None),
    ]
    status = await world.callback(execution_id)
    assert (status.state, status.attempts, status.last_status) == ("failed", 3, 503)
    events = await world.log(execution_id)
    assert (events[-1].level, events[-1].message) == (
        ERROR,
        "callback attempt 3 failed: answered 503; given up after 12s",
    )


async def test_a_redirect_is_not_followed_and_fails(world: World) -> None:
    world.receiver.statuses = [302]
    world.receiver.headers = {"Location": world.receiver.url("/elsewhere")}
    execution_id = await world.ended()
    [attempt] = await world.deliverer().tick()

    assert attempt.state == "failed"
    assert [seen.target for seen in world.receiver.requests] == ["/hook"]
    status = await world.callback(execution_id)
    assert (status.state, status.attempts, status.last_status) == ("failed", 1, 302)
    assert status.last_error is not None
    assert "not followed" in status.last_error
    [event] = await world.log(execution_id)
    assert event.level == ERROR
    assert event.message.endswith("; not retried")


async def test_an_address_that_became_internal_is_refused_without_connecting(
    world: World,
) -> None:
    # the name passed the check at start; its DNS answer now points at loopback (rebinding)
    url = f"http://hooks.example.test:{world.receiver.port}/hook"
    execution_id = await world.ended(url)
    dns = names({"hooks.example.test": ["127.0.0.1"]})
    [attempt] = await world.deliverer(CallbackPolicy(), resolve=dns).tick()

    assert attempt.state == "failed"
    assert world.receiver.connections == 0
    status = await world.callback(execution_id)
    assert (status.state, status.attempts, status.last_status) == ("failed", 1, None)
    assert status.last_error == f"refused: the address 127.0.0.1 is loopback; {PUBLIC_ONLY}"


async def test_a_literal_internal_address_is_refused_unless_allowed(world: World) -> None:
    execution_id = await world.ended()
    [attempt] = await world.deliverer(CallbackPolicy()).tick()
    assert (attempt.state, world.receiver.connections) == ("failed", 0)
    status = await world.callback(execution_id)
    assert status.last_error == f"refused: the address 127.0.0.1 is loopback; {PUBLIC_ONLY}"


# -- durability and several nodes ------------------------------------------------------------


async def test_nothing_is_lost_by_a_crash_before_or_during_a_delivery(world: World) -> None:
    held = await world.ended()
    world.clock.advance(1)
    owed = await world.ended()
    await world.h.crash()
    # a deliverer claimed the oldest end and died before sending: its lease holds it a while
    now = world.clock.now()
    lease = now + timedelta(seconds=LOCAL.timeout * 2)
    [lost] = await world.h.store.call(sql.claim_due, world.h.store, now, lease, 1)
    assert lost.execution.id == held

    # a new process, on the same database, finds what is owed
    fresh = world.deliverer()
    [first] = await fresh.tick()
    assert first.execution_id == owed
    assert await fresh.tick() == []  # still leased by the dead deliverer
    world.clock.advance(LOCAL.timeout * 2)
    assert await fresh.tick() == []  # the lease ends after that instant, not at it
    world.clock.advance(0.001)
    [second] = await fresh.tick()
    assert second.execution_id == held

    assert {(await world.callback(i)).state for i in (held, owed)} == {"delivered"}
    assert len(world.receiver.requests) == 2
    # the dead deliverer's late record counts for nothing
    late = sql.AttemptRecord(held, lost.lease_until, "failed", None, 500, "late", None)
    assert not await world.h.store.call(sql.record_attempt, world.h.store, late)
    assert (await world.callback(held)).attempts == 1


async def test_two_deliverers_send_each_callback_once(world: World) -> None:
    ids = {await world.ended() for _ in range(12)}
    # a second node: its own connections to the same database, the same secret keys
    url = world.h.store.engine.url.render_as_string(hide_password=False)
    other_store = Store(connect(url, sqlite_synchronous="OFF"), world.h.store.sealer)
    try:
        one = world.deliverer(concurrency=3)
        two = world.deliverer(store=other_store, concurrency=3)
        rounds = 0
        while True:
            rounds += 1
            a, b = await asyncio.gather(one.tick(), two.tick())
            if not a and not b:
                break
        await two.stop()
    finally:
        other_store.close()

    sent = [seen.headers[EVENT_ID_HEADER.lower()] for seen in world.receiver.requests]
    assert sorted(sent) == sorted(f"{i}:ended" for i in ids)
    assert rounds >= 3
    for execution_id in ids:
        status = await world.callback(execution_id)
        assert (status.state, status.attempts) == ("delivered", 1)


async def test_the_loop_delivers_when_poked_and_stops_cleanly(world: World) -> None:
    deliverer = world.deliverer()
    deliverer.start()
    execution_id = await world.ended()
    deliverer.poke()
    await world.receiver.wait_for(1)
    await deliverer.stop()  # lets the attempt under way be recorded
    assert (await world.callback(execution_id)).state == "delivered"


async def test_a_stopping_deliverer_gives_back_what_it_claimed(world: World) -> None:
    execution_id = await world.ended()
    lease = T0 + timedelta(seconds=20)
    deliverer = world.deliverer()
    [entry] = await world.h.store.call(sql.claim_due, world.h.store, T0, lease, 5)
    deliverer._claimed[entry.execution.id] = entry.lease_until  # as a cancelled tick leaves it
    await deliverer.stop()
    e = s.executions
    with world.h.store.engine.connect() as conn:
        q = sa.select(e.c.callback_lease_until).where(e.c.id == execution_id)
        assert conn.execute(q).scalar_one() is None
    assert [a.state for a in await world.deliverer().tick()] == ["delivered"]


async def test_the_secret_is_made_once_and_kept(store: Store) -> None:
    store.ensure_project("default", T0)
    assert await store.call(sql.callback_secret, store, "nowhere") is None
    first, again = await asyncio.gather(
        store.call(sql.callback_secret, store, "default"),
        store.call(sql.callback_secret, store, "default"),
    )
    assert first == again
    assert first is not None
    assert len(first) == 64
    # kept sealed: the column holds a ciphertext that opens to it, not the secret
    with store.engine.connect() as conn:
        kept = conn.execute(sa.select(s.projects.c.callback_secret)).scalar_one()
    assert first not in kept and store.sealer.open(Sealed(kept)) == first
    # one made before secrets were sealed still works, and rotation seals it
    with store.engine.begin() as conn:
        conn.execute(s.projects.update().values(callback_secret="ab" * 32))
    assert await store.call(sql.callback_secret, store, "default") == "ab" * 32
    assert store.reseal() == 1
    assert await store.call(sql.callback_secret, store, "default") == "ab" * 32
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(s.projects.c.callback_secret)).scalar_one() != "ab" * 32


# -- through the API -------------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    token: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path,
        workers=1,
        sqlite_synchronous="OFF",
        node_id="api",
        shutdown_grace=0,
        callback_allowed_networks=parse_networks("127.0.0.0/8"),
    )
    runtime = Runtime.build(settings)
    token = runtime.prepare()
    assert token is not None
    async with runtime.running(loop=False):
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, runtime, token)


async def test_a_callback_over_http_verifies_with_the_projects_secret(
    api: Api, receiver: Receiver
) -> None:
    r = await api.client.put("/api/v1/workflows/notify", json=NOTIFY, headers=api.auth())
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/api/v1/workflows/notify/executions",
        json={"inputs": {"token": "tok-77"}, "callback": receiver.url()},
        headers=api.auth(),
    )
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    await api.runtime.engine.run_until_idle()
    [attempt] = await api.runtime.deliverer.tick()
    assert attempt.state == "delivered"

    r = await api.client.get("/api/v1/projects/default/callback-secret", headers=api.auth())
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    secret = r.json()["secret"]
    assert r.json() == {"project": "default", "secret": secret}
    [seen] = receiver.requests
    assert verify(secret.encode(), seen.body, seen.headers[SIGNATURE_HEADER.lower()])
    assert not verify(b"another key", seen.body, seen.headers[SIGNATURE_HEADER.lower()])
    assert b"tok-77" not in seen.body

    detail = (await api.client.get(location, headers=api.auth())).json()
    assert detail["callback"] == {
        "url": receiver.url(),
        "state": "delivered",
        "attempts": 1,
        "next_at": None,
        "last_status": 200,
        "last_error": None,
    }
    r = await api.client.get(f"{location}/logs", headers=api.auth())
    assert "callback delivered (200)" in [item["message"] for item in r.json()["items"]]


async def test_only_admins_of_the_project_or_of_default_read_its_secret(api: Api) -> None:
    async def token(project: str, role: str) -> str:
        r = await api.client.post("/api/v1/projects", json={"name": project}, headers=api.auth())
        assert r.status_code in (201, 409), r.text
        r = await api.client.post(
            f"/api/v1/projects/{project}/tokens", json={"role": role}, headers=api.auth()
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def path(project: str) -> str:
        return f"/api/v1/projects/{project}/callback-secret"

    team_admin, team_operator = await token("team", "admin"), await token("team", "operator")
    r = await api.client.get(path("team"), headers=api.auth(team_admin))
    assert r.status_code == 200
    team_secret = r.json()["secret"]
    r = await api.client.get(path("team"), headers=api.auth())  # an admin of default
    assert r.json()["secret"] == team_secret
    default_secret = (await api.client.get(path("default"), headers=api.auth())).json()["secret"]
    assert default_secret != team_secret

    assert (await api.client.get(path("team"), headers=api.auth(team_operator))).status_code == 403
    # another tenant's project is as good as absent
    assert (await api.client.get(path("default"), headers=api.auth(team_admin))).status_code == 404
    assert (await api.client.get(path("nowhere"), headers=api.auth())).status_code == 404
    assert (await api.client.get(path("team"))).status_code == 401


def test_settings_read_the_callback_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECFLOW_CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/8, 127.0.0.1/32")
    monkeypatch.setenv("EXECFLOW_CALLBACK_RETRY_FOR", "600")
    settings = Settings.from_env()
    assert settings.callback_allowed_networks == parse_networks(["10.0.0.0/8", "127.0.0.1/32"])
    assert settings.callback_retry_for == 600.0
    monkeypatch.setenv("EXECFLOW_CALLBACK_ALLOWED_NETWORKS", "10.0.0.1/8")
    with pytest.raises(ValueError, match="EXECFLOW_CALLBACK_ALLOWED_NETWORKS"):
        Settings.from_env()
