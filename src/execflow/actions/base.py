"""The one protocol every action implements.

An action declares the shape of its `with` arguments (a pydantic model) and
where it runs: `INLINE` actions are coroutines run by the engine's event loop
(cheap I/O), `POOL` actions run in a long-lived worker process (user code and
commands, which may block or crash), `TIMER` actions are completed by the
engine's clock at a persisted wake-up time, so a restart does not restart them;
`SIGNAL` actions wait for a signal delivered through the API.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from execflow.outbound import OutboundPolicy, Resolver


class Placement(enum.StrEnum):
    INLINE = "inline"
    POOL = "pool"
    TIMER = "timer"
    SIGNAL = "signal"  # completed by a signal from outside (or failed by its timeout)
    CHILD = "child"  # completed when the child execution it started ends


class Args(BaseModel):
    """Base of action argument models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Resources:
    """What the engine lends to inline actions (injected, so tests can swap transports and
    stand in for DNS): a client, where its requests may go, and how names are resolved."""

    http: httpx.AsyncClient
    outbound: OutboundPolicy
    resolve: Resolver | None = None  # None: the system resolver


InlineRun = Callable[[Any, Resources], Awaitable[Any]]
PoolRun = Callable[[Any], Any]
WakeAt = Callable[[Any, datetime], datetime]


@dataclass(frozen=True)
class Action:
    name: str
    args: type[Args]
    placement: Placement
    summary: str
    inline: InlineRun | None = None
    pool: PoolRun | None = None
    wake_at: WakeAt | None = None
