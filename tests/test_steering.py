"""Steering calls read their own writes: once cancel, suspend (pause) or resume has been
answered, through the native API or any dialect, a read shows the state it asked for.

The engine runs its own loop here, as in a server (the other API tests drive it tick by
tick), and each call is followed at once by a read, ten rounds each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from execflow.api import create_app
from execflow.runtime import Runtime
from execflow.settings import Settings
from tests.test_control import APPROVAL

ROUNDS = 10
ONEDATA = "/api/v3/oneprovider/automation/execution/workflows"
EMR = {"Version": "2016-04-08", "ProjectId": "default", "RegionId": "cn-hangzhou"}


@dataclass
class Server:
    client: httpx.AsyncClient
    token: str
    stale: dict[str, int] = field(default_factory=dict)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def state(self, execution_id: str) -> str:
        r = await self.client.get(f"/api/v1/executions/{execution_id}", headers=self.auth())
        state: str = r.json()["state"]
        return state

    async def waiting(self) -> str:
        """A new execution of `approval`, once it waits for its approval."""
        r = await self.client.post(
            "/api/v1/workflows/approval/executions", json={}, headers=self.auth()
        )
        assert r.status_code == 202, r.text
        execution_id: str = r.json()["id"]
        deadline = time.monotonic() + 20
        while await self.state(execution_id) != "WAITING_ON_SIGNAL":
            assert time.monotonic() < deadline, "the execution never waited for its approval"
            await asyncio.sleep(0.01)
        return execution_id

    def count(self, call: str, steered: httpx.Response, seen: Any, wanted: Any) -> None:
        """Counts a read made at once after a steering call that does not show its state."""
        assert steered.status_code < 300, (call, steered.status_code, steered.text)
        self.stale[call] = self.stale.get(call, 0) + (seen != wanted)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(
        data_dir=tmp_path, workers=1, sqlite_synchronous="OFF", node_id="n1", shutdown_grace=0
    )
    runtime = Runtime.build(settings)
    token = runtime.prepare()
    assert token is not None
    async with runtime.running(loop=True):
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            found = Server(client, token)
            r = await client.put("/api/v1/workflows/approval", json=APPROVAL, headers=found.auth())
            assert r.status_code == 201, r.text
            yield found


async def test_the_native_api_answers_steering_with_the_new_state_and_reads_show_it(
    server: Server,
) -> None:
    c, auth = server.client, server.auth()
    for _ in range(ROUNDS):
        eid = await server.waiting()
        for what, wanted in (
            ("suspend", "SUSPENDED"),
            ("resume", "WAITING_ON_SIGNAL"),
            ("cancel", "CANCELED"),
        ):
            r = await c.post(f"/api/v1/executions/{eid}/{what}", headers=auth)
            assert r.status_code == 202, r.text
            server.count(f"{what} answer", r, r.json()["state"], wanted)
            server.count(what, r, await server.state(eid), wanted)
    assert set(server.stale.values()) == {0}, server.stale


async def test_onedata_pause_resume_and_cancel_are_seen_by_the_next_read(server: Server) -> None:
    c, headers = server.client, {"X-Auth-Token": server.token}
    for _ in range(ROUNDS):
        eid = await server.waiting()
        for what, wanted in (("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")):
            r = await c.post(f"{ONEDATA}/{eid}/{what}", headers=headers)
            seen = (await c.get(f"{ONEDATA}/{eid}", headers=headers)).json()["status"]
            server.count(what, r, seen, wanted)
    assert server.stale == {"pause": 0, "resume": 0, "cancel": 0}


async def test_emr_vro_explorer_and_obs_steering_is_seen_by_the_next_read(server: Server) -> None:
    c, auth = server.client, server.auth()

    async def emr(action: str, **params: str) -> httpx.Response:
        return await c.get("/", params={"Action": action, **EMR, **params}, headers=auth)

    for _ in range(ROUNDS):
        eid = await server.waiting()
        fi = "FI-" + eid.upper()
        for action, key, wanted in (
            ("SuspendFlow", "FlowInstanceId", "SUSPENDED"),
            ("ResumeFlow", "FlowInstanceId", "RUNNING"),
            ("KillFlowJob", "JobInstanceId", "KILLED"),
        ):
            r = await emr(action, **{key: fi})
            seen = (await emr("DescribeFlowInstance", Id=fi)).json()["Status"]
            server.count(action, r, seen, wanted)

        eid = await server.waiting()
        state = f"/vco/api/workflows/approval/executions/{eid}/state"
        r = await c.delete(state, headers=auth)
        seen = (await c.get(state, headers=auth)).json()["value"]
        server.count("vro cancel", r, seen, "canceled")  # as vRO servers write it

        eid = await server.waiting()
        job = f"/api-open/v1/jobs/{int(eid[:13], 16)}"
        r = await c.put(f"{job}/cancel", headers=auth)
        seen = (await c.get(job, headers=auth)).json()["data"]["status"]
        server.count("explorer cancel", r, seen, 4)  # Interrupted

        # Data+ steers by restoring a failed (or cancelled) execution only
        restore = f"/v2/workflowexecutions/{eid}?x-workflow-graph-name=approval"
        r = await c.put(restore, headers=auth)
        seen = (await c.get(restore, headers=auth)).json()["execution_info"]["execution_state"]
        server.count("obs restore", r, seen, "RUNNING")
    assert set(server.stale.values()) == {0}, server.stale


async def test_a_call_to_another_node_answers_once_the_holder_carried_it_out(
    tmp_path: Path,
) -> None:
    """The node answering is not the one holding the execution: it waits for the holder
    (which looks for commands at each poll) to carry the command out."""

    def settings(node: str) -> Settings:
        return Settings(
            data_dir=tmp_path, workers=1, sqlite_synchronous="OFF", node_id=node, poll_seconds=0.2
        )

    holder, other = Runtime.build(settings("holder")), Runtime.build(settings("other"))
    token = holder.prepare()
    assert token is not None and other.prepare() is None
    async with holder.running(loop=True), other.running(loop=True):
        apps = [httpx.ASGITransport(app=create_app(r)) for r in (holder, other)]
        async with (
            httpx.AsyncClient(transport=apps[0], base_url="http://holder") as first,
            httpx.AsyncClient(transport=apps[1], base_url="http://other") as second,
        ):
            on_holder, on_other = Server(first, token), Server(second, token)
            r = await first.put(
                "/api/v1/workflows/approval", json=APPROVAL, headers=on_holder.auth()
            )
            assert r.status_code == 201, r.text
            for _ in range(3):
                eid = await on_holder.waiting()  # started, and so held, by the first node
                for what, wanted in (
                    ("suspend", "SUSPENDED"),
                    ("resume", "WAITING_ON_SIGNAL"),
                    ("cancel", "CANCELED"),
                ):
                    r = await second.post(
                        f"/api/v1/executions/{eid}/{what}", headers=on_other.auth()
                    )
                    on_other.count(f"{what} answer", r, r.json()["state"], wanted)
                    on_other.count(what, r, await on_other.state(eid), wanted)
            assert set(on_other.stale.values()) == {0}, on_other.stale
