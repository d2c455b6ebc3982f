"""`/livez` (the process answers) and `/readyz` (this node can do its work: the database
answers and the engine ticks), with `/healthz` an alias of `/readyz`; no token needed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from execflow.api.schemas import HealthPublic
from execflow.engine import Engine
from execflow.store import Store

log = logging.getLogger("execflow.api")

# A load balancer's probe usually gives up after a few seconds: answer well within that.
DATABASE_TIMEOUT = 2.0
# Probes at any rate (several balancers, each every second) cost at most a query a second.
DATABASE_EVERY = 1.0
# A tick that fails once is a blip the loop retries within half a second; three in a row
# are an outage (or a fault) worth taking the node out of rotation for.
MAX_FAILED_TICKS = 3
# The engine ticks at least every poll interval; five missed ones (ten seconds at least,
# for a long tick under load) mean its loop is stuck.
MIN_TICK_SILENCE = 10.0
TICKS_OF_SILENCE = 5

OK = "ok"
HEADERS = {"Cache-Control": "no-store"}


class Readiness:
    """The checks behind `/readyz`; the database's answer is shared for `DATABASE_EVERY`
    seconds, and one that hangs is never asked again until it ends."""

    def __init__(
        self, store: Store, engine: Engine, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.tick_silence = max(MIN_TICK_SILENCE, TICKS_OF_SILENCE * engine.settings.poll_seconds)
        self._check: asyncio.Task[str] | None = None
        self._checked_at = float("-inf")
        self._was = OK

    async def checks(self) -> dict[str, str]:
        return {"database": await self.database(), "engine": self.engine_state()}

    async def database(self) -> str:
        check = self._check
        if check is None or (check.done() and self.clock() - self._checked_at >= DATABASE_EVERY):
            check = self._check = asyncio.create_task(self._ping())
        try:
            return await asyncio.wait_for(asyncio.shield(check), DATABASE_TIMEOUT)
        except TimeoutError:
            return f"no answer within {DATABASE_TIMEOUT:g} s"

    async def _ping(self) -> str:
        try:
            await self.store.read(self.store.ping)
            answer = OK
        except Exception as exc:
            # the cause stays in the log: this answer is for anyone who asks
            cause = exc.__cause__ or exc
            if self._was == OK:
                log.warning("readiness: the database cannot be reached: %s", cause)
            answer = "cannot be reached"
        if answer == OK and self._was != OK:
            log.warning("readiness: the database answers again")
        self._was = answer
        self._checked_at = self.clock()
        return answer

    def engine_state(self) -> str:
        failed = self.engine.failed_ticks
        if failed >= MAX_FAILED_TICKS:
            return f"{failed} ticks failed in a row"
        silent = self.clock() - self.engine.last_tick
        if silent > self.tick_silence:
            return f"no tick for {silent:.0f} s (at most {self.tick_silence:g} s)"
        return OK


def router(readiness: Readiness) -> APIRouter:
    """The health routes over one node's checks."""
    routes = APIRouter(tags=["health"])
    unready: dict[int | str, dict[str, Any]] = {
        503: {"model": HealthPublic, "description": "Not ready: a check failed"}
    }

    @routes.get(
        "/livez",
        summary="Liveness: the process answers (no token needed)",
        response_model=HealthPublic,
    )
    async def livez() -> JSONResponse:
        return JSONResponse({"status": OK}, headers=HEADERS)

    async def ready() -> JSONResponse:
        checks = await readiness.checks()
        good = all(value == OK for value in checks.values())
        body = HealthPublic(status=OK if good else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), 200 if good else 503, HEADERS)

    summary = "Readiness: the database answers and the engine ticks (no token needed)"
    for path in ("/readyz", "/healthz"):
        routes.add_api_route(
            path,
            ready,
            methods=["GET"],
            summary=summary,
            responses=unready,
            response_model=HealthPublic,
        )
    return routes
