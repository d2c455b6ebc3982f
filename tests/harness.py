"""A complete in-process execflow (store, engine, workers, service) for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from execflow.clock import Clock, ManualClock
from execflow.engine import DefinitionCache, Engine, EngineSettings
from execflow.executors import LocalExecutor
from execflow.metrics import Metrics
from execflow.outbound import Resolver, parse_networks
from execflow.records import ExecutionRecord, Principal
from execflow.service import Service
from execflow.store import Store


@dataclass
class Harness:
    store: Store
    engine: Engine
    service: Service
    admin: Principal
    clock: Clock
    crashed: bool = False

    async def crash(self) -> None:
        """Stop the engine the way a crash does: nothing more is written, leases stay taken."""
        self.crashed = True
        tasks = list(self.engine._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.engine.executor.close()
        if self.engine._own_http:
            await self.engine.resources.http.aclose()

    async def apply(self, definition: dict[str, Any]) -> int:
        _, revision, _ = await self.service.put_workflow(self.admin, definition["name"], definition)
        return revision

    async def run(self, workflow: str, inputs: dict[str, Any] | None = None) -> ExecutionRecord:
        """Start an execution and drive the engine until it is idle."""
        record = await self.service.start(self.admin, workflow, inputs or {})
        await self.engine.run_until_idle()
        return await self.service.get_execution(self.admin, record.id)

    async def step_until(self, execution_id: str, done: Callable[[ExecutionRecord], bool]) -> None:
        """Tick the engine (waiting for its results in between) until `done` holds."""
        for _ in range(200):
            await self.engine.tick()
            if done(await self.service.get_execution(self.admin, execution_id)):
                return
            await self.engine.wait(1.0)
        raise AssertionError("the execution never reached the expected point")


@asynccontextmanager
async def harness(
    store: Store,
    clock: Clock | None = None,
    workers: int = 2,
    node_id: str = "test-node",
    http: httpx.AsyncClient | None = None,
    claim_batch: int = 500,
    resolve: Resolver | None = None,
    http_allowed_networks: str = "",
    **limits: Any,
) -> AsyncIterator[Harness]:
    """`limits` are more engine settings (`max_items`, `start_rate`, …)."""
    clock = clock or ManualClock()
    now = clock.now()
    project = store.ensure_project("default", now)
    _, secret = store.create_token(project, "admin", now)
    definitions = DefinitionCache(store)
    limits.setdefault("poll_seconds", 3600)
    settings = EngineSettings(
        node_id=node_id,
        claim_batch=claim_batch,
        http_allowed_networks=parse_networks(http_allowed_networks),
        **limits,
    )
    metrics = Metrics()
    engine = Engine(
        store,
        LocalExecutor(workers),
        definitions,
        settings,
        clock,
        http=http,
        metrics=metrics,
        resolve=resolve,
    )
    service = Service(store, definitions, engine, clock, metrics=metrics)
    admin = await service.authenticate(secret)
    await engine.start(loop=False)
    try:
        h = Harness(store, engine, service, admin, clock)
        yield h
    finally:
        if not h.crashed:
            await engine.stop(grace=0)
