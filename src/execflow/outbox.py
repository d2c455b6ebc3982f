"""Sends end-of-execution callbacks from a durable outbox: the ended executions themselves.

An execution started with a callback carries it as `pending` from the start, so the row that
records the end is also the outbox entry: there is no second write that a crash between the
end and the send could lose. Every node runs a `Deliverer`. A tick claims due entries by
setting a lease on them (`store/outbox.py`), delivers each at most `concurrency` at a time
with `callbacks.deliver` (address checks at send time, signing, no redirects), then records
each attempt under that lease: delivered, failed (not retryable, or the retry period is
over), or pending until the back-off's next attempt, with an entry in the execution's log.

Delivery is at least once: a deliverer that stops between the send and the record, or whose
lease runs out first, leaves the entry to be sent again. Every attempt carries the same
event id and the same body, so a receiver can tell a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from execflow.auth import Privilege, require, require_visible
from execflow.callbacks import (
    CallbackPolicy,
    DeliveryResult,
    deliver,
    new_client,
    next_attempt_at,
)
from execflow.clock import Clock, SystemClock
from execflow.definition import Definition, mask_secrets, secret_values
from execflow.durations import format_duration
from execflow.engine import DefinitionCache
from execflow.errors import InvalidDefinition, NotFound
from execflow.levels import ERROR, NOTICE, WARNING
from execflow.masking import redact
from execflow.outbound import Resolver
from execflow.records import EventRecord, ExecutionRecord, Principal
from execflow.store import Store
from execflow.store import outbox as sql
from execflow.store.database import is_outage
from execflow.store.outbox import DELIVERED, FAILED, PENDING, AttemptRecord, OutboxEntry

log = logging.getLogger("execflow.outbox")

EVENT = "execution.ended"
# How often the store is looked at when nothing pokes (an execution ending on another node,
# a lease that ran out): a callback goes out within about this long after it is due.
DEFAULT_POLL_SECONDS = 1.0
# Deliveries in flight at once, which is also how many entries a tick claims: each claimed
# entry starts at once, so one delivery's timeout bounds a tick and a lease of twice that
# covers every entry of it.
DEFAULT_CONCURRENCY = 16
# After a tick failed as a whole (the database unreachable, say).
_RETRY_SECONDS = 1.0
# How long `stop` lets deliveries under way finish before cancelling them.
_STOP_GRACE = 5.0


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt and what became of its entry."""

    execution_id: str
    number: int  # 1 for the first
    result: DeliveryResult
    state: str  # pending (tried again at next_at), delivered or failed
    next_at: datetime | None
    recorded: bool  # False: the lease ran out meanwhile and another deliverer took over


def event_id(record: ExecutionRecord) -> str:
    """The same for every attempt of one end; an execution retried and ended again (a new
    round) is a new event."""
    return f"{record.id}:ended" + (f":{record.round}" if record.round else "")


def callback_body(record: ExecutionRecord, definition: Definition) -> bytes:
    """The JSON POSTed for an ended execution, with its secrets hidden as the API hides them
    (secret inputs masked, their values redacted from outputs and the error)."""
    hidden = secret_values(definition, record.inputs)
    document = {
        "event_id": event_id(record),
        "event": EVENT,
        "execution": {
            "id": record.id,
            "name": record.name,
            "urn": record.urn,
            "workflow": record.workflow_name,
            "revision": record.revision,
            "state": record.state.value,
            "inputs": mask_secrets(definition, record.inputs),
            "outputs": redact(record.outputs, hidden),
            "error": redact(record.error, hidden),
            "created_at": _time(record.created_at),
            "started_at": _time(record.started_at),
            "ended_at": _time(record.ended_at),
            "labels": record.labels,
        },
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _time(at: datetime | None) -> str | None:
    # the API's form (pydantic's): UTC with a Z
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def callback_secret(store: Store, who: Principal, project: str) -> str:
    """The key that signs a project's callbacks, made on first use; for admins of that
    project, or of the default project (who administer every project)."""
    require_visible(who, project)
    require(who, Privilege.ADMIN)
    secret = await store.call(sql.callback_secret, store, project)
    if secret is None:
        raise NotFound(f"project {project!r} not found")
    return secret


class Deliverer:
    """Delivers due callbacks; `tick` once, or `start` a loop that `poke` wakes."""

    def __init__(
        self,
        store: Store,
        definitions: DefinitionCache,
        policy: CallbackPolicy,
        clock: Clock | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        resolve: Resolver | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        if concurrency < 1:
            raise ValueError("callback concurrency must be at least 1")
        self.store = store
        self.definitions = definitions
        self.policy = policy
        self.clock = clock or SystemClock()
        self.resolve = resolve  # None: the system resolver (tests stand in for DNS)
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self._client = client
        self._own_client = client is None
        # entries claimed and not yet recorded, with their leases (given back on stop)
        self._claimed: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop: a tick now, then whenever poked and at least every poll period."""
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="execflow-outbox")

    async def stop(self) -> None:
        """Claim nothing more, let deliveries under way finish briefly, give back what was
        claimed and not attempted, and close the HTTP client."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=_STOP_GRACE)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._claimed:
            claimed, self._claimed = self._claimed, {}
            try:
                await self.store.call(sql.release, self.store, list(claimed.items()))
            except Exception:
                log.exception("could not give back claimed callbacks; their leases will expire")
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def poke(self) -> None:
        """Tick soon: an execution with a callback has ended."""
        self._wake.set()

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                attempts = await self.tick()
                failures = 0
                if len(attempts) >= self.concurrency:
                    continue  # a full batch: more may be due now
                delay = await self._delay()
            except Exception as exc:
                failures += 1
                if not is_outage(exc):
                    log.exception("callback tick failed; retrying")
                elif failures == 1:  # one line per outage, not a traceback per attempt
                    log.warning("callbacks wait for the database: %s", exc)
                delay = min(_RETRY_SECONDS, self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _delay(self) -> float:
        """Until the next poll, or the next attempt that is due sooner."""
        now = self.clock.now()
        upcoming = await self.store.read(sql.next_due, self.store, now)
        if upcoming is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, (upcoming - now).total_seconds()))

    # ticking --------------------------------------------------------------------------

    async def tick(self) -> list[Attempt]:
        """Claim the callbacks due now (up to `concurrency`), deliver them and record each
        attempt; returns when all of them are recorded. One that fails unexpectedly is
        logged and left to its lease."""
        now = self.clock.now()
        if not await self.store.read(sql.any_due, self.store, now):
            return []
        lease_until = now + timedelta(seconds=self.policy.timeout * 2)
        entries = await self.store.call(
            sql.claim_due, self.store, now, lease_until, self.concurrency
        )
        for entry in entries:
            self._claimed[entry.execution.id] = entry.lease_until
        results = await asyncio.gather(
            *(self._attempt(entry) for entry in entries), return_exceptions=True
        )
        attempts = []
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, Attempt):
                attempts.append(result)
                continue
            self._claimed.pop(entry.execution.id, None)
            log.error(
                "callback of execution %s failed unexpectedly; it is retried when its lease ends",
                entry.execution.id,
                exc_info=result,
            )
        return attempts

    async def _attempt(self, entry: OutboxEntry) -> Attempt:
        result = await self._send(entry)
        change, attempt = self._judge(entry, result, self.clock.now())
        recorded = await self.store.call(sql.record_attempt, self.store, change)
        self._claimed.pop(entry.execution.id, None)
        if not recorded:
            log.warning(
                "callback attempt of execution %s not recorded: its lease ran out meanwhile",
                entry.execution.id,
            )
        return attempt if recorded else replace(attempt, recorded=False)

    async def _send(self, entry: OutboxEntry) -> DeliveryResult:
        record = entry.execution
        try:
            definition = await self.definitions.get(record.workflow_id, record.revision)
            body = callback_body(record, definition)
        except InvalidDefinition:
            # without the definition, which inputs are secret is unknown: nothing is sent
            reason = f"not sent: revision {record.revision} no longer parses"
            return DeliveryResult(False, None, reason, False, 0.0)
        except Exception as exc:
            log.exception("cannot build the callback body of execution %s", record.id)
            reason = f"not sent: the body could not be built ({type(exc).__name__})"
            return DeliveryResult(False, None, reason, True, 0.0)
        return await deliver(
            self._http(),
            entry.url,
            body,
            event_id=event_id(record),
            secret=entry.secret.encode(),
            policy=self.policy,
            resolve=self.resolve,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(self.policy)
        return self._client

    def _judge(
        self, entry: OutboxEntry, result: DeliveryResult, now: datetime
    ) -> tuple[AttemptRecord, Attempt]:
        """What an attempt's result makes of its entry, and the audit entry saying so."""
        record = entry.execution
        number = entry.attempts + 1
        next_at: datetime | None = None
        if result.delivered:
            state, level = DELIVERED, NOTICE
            message = f"callback delivered ({result.status})"
        else:
            if result.retryable:
                # the retry period counts from the end, which is when the first attempt is due
                first = record.ended_at or now
                next_at = next_attempt_at(number, first, now, self.policy)
            failed = f"callback attempt {number} failed: {result.error}"
            if next_at is not None:
                state, level = PENDING, WARNING
                message = f"{failed}; next in {format_duration((next_at - now).total_seconds())}"
            elif result.retryable:
                state, level = FAILED, ERROR
                message = f"{failed}; given up after {format_duration(self.policy.retry_for)}"
            else:
                state, level = FAILED, ERROR
                message = f"{failed}; not retried"
        data: dict[str, Any] = {
            "event_id": event_id(record),
            "attempt": number,
            "status": result.status,
            "address": result.address,
            "duration_ms": round(result.duration * 1000, 3),
            "next_at": _time(next_at),
        }
        event = EventRecord(record.id, now, level, "callback", message, data=data)
        change = AttemptRecord(
            execution_id=record.id,
            lease_until=entry.lease_until,
            state=state,
            next_at=next_at,
            status=result.status,
            error=result.error,
            # the execution's log level is the floor of its log, as for the engine's entries
            event=event if level <= record.log_level else None,
        )
        return change, Attempt(record.id, number, result, state, next_at, True)
