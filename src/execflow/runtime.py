"""Builds and runs one execflow node: store, engine, workers and service, wired explicitly."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from execflow.callbacks import CallbackPolicy
from execflow.clock import Clock, SystemClock
from execflow.datadir import make_private
from execflow.definition import parse_definition
from execflow.documents import load_text
from execflow.engine import DefinitionCache, Engine, EngineSettings
from execflow.examples import example_files
from execflow.executors import LocalExecutor
from execflow.executors.confinement import Confinement
from execflow.metrics import Listener, Metrics
from execflow.outbox import Deliverer
from execflow.scheduler import Scheduler
from execflow.sealing import (
    Sealer,
    fingerprint,
    new_key,
    read_key_file,
    sealer_for,
    write_key_file,
)
from execflow.service import Service
from execflow.settings import Settings
from execflow.store import Store, connect, upgrade
from execflow.store.keys import KeyRecord

log = logging.getLogger("execflow")


@dataclass
class Runtime:
    settings: Settings
    store: Store
    engine: Engine
    service: Service
    deliverer: Deliverer
    scheduler: Scheduler | None = None  # None when EXECFLOW_SCHEDULES=off
    metrics: Metrics = field(default_factory=Metrics)  # what this node counts
    # the scrape listener of EXECFLOW_METRICS=port:…, while the runtime runs
    metrics_listener: Listener | None = None

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        clock = clock or SystemClock()
        metrics = Metrics()
        if settings.url.startswith("sqlite"):
            make_private(settings.data_dir)
        sealer = sealer_for(settings.secret_keys, settings.key_file)
        database = connect(settings.url, sqlite_synchronous=settings.sqlite_synchronous)
        store = Store(database, sealer)
        definitions = DefinitionCache(store)
        engine_settings = EngineSettings(
            node_id=settings.node_id or _node_id(settings),
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            spread_seconds=settings.spread_seconds,
            poll_seconds=settings.poll_seconds,
            park_after=settings.park_after,
            shutdown_grace=settings.shutdown_grace,
            max_items=settings.limits.max_items,
            start_rate=settings.limits.start_rate,
            start_burst=settings.limits.start_burst,
            max_lost_attempts=settings.max_lost_attempts,
            http_allowed_networks=settings.http_allowed_networks,
            pool_share=settings.project_pool_share,
        )
        confinement = Confinement.resolve(
            settings.worker_user,
            settings.worker_namespaces,
            settings.task_path,
            settings.worker_env,
        )
        executor = LocalExecutor(settings.workers or None, confinement=confinement)
        engine = Engine(store, executor, definitions, engine_settings, clock, metrics=metrics)
        # one policy: what a start accepts is what the deliverer may send to
        callback_policy = CallbackPolicy(
            allowed_networks=settings.callback_allowed_networks,
            retry_for=settings.callback_retry_for,
        )
        service = Service(
            store,
            definitions,
            engine,
            clock,
            callback_policy=callback_policy,
            limits=settings.limits,
            metrics=metrics,
        )
        deliverer = Deliverer(store, definitions, callback_policy, clock)
        # committed ends wake the deliverer (an end on another node waits for its poll)
        engine.callback_listeners.append(deliverer.poke)
        scheduler = None
        if settings.schedules:
            scheduler = Scheduler(
                store, service, definitions, clock, settings.schedule_poll_seconds
            )
            service.on_workflow_stored.append(scheduler.poke)
        return cls(settings, store, engine, service, deliverer, scheduler, metrics)

    def prepare(self) -> str | None:
        """Migrate the database and create the first admin token; returns it when it is new."""
        upgrade(self.store.engine)
        # before anything is sealed: refuses a node that lacks keys other nodes seal with
        self.store.secret_keys.enroll(self.service.clock.now())
        return bootstrap(self.store, self.settings, self.service.clock)

    async def start(self, loop: bool = True) -> None:
        """Start the engine, then the scheduler (whose starts the engine must take) and the
        callback deliverer; without `loop`, none ticks on its own (tests call `tick`). The
        metrics listener (EXECFLOW_METRICS=port:…) comes first: a port that is taken fails the
        start before anything runs."""
        endpoint = self.settings.metrics
        if endpoint.mode == "port" and self.metrics_listener is None:
            self.metrics_listener = self.metrics.listen(endpoint.host, endpoint.port)
        try:
            await self.engine.start(loop)
        except BaseException:
            await self._close_listener()
            raise
        if loop and self.scheduler is not None:
            self.scheduler.start()
        if loop:
            self.deliverer.start()

    async def stop(self) -> None:
        try:
            if self.scheduler is not None:
                await self.scheduler.stop()
            await self.engine.stop()
            # after the engine: ends recorded during its grace period may still go out
            await self.deliverer.stop()
            self.store.close()
        finally:
            await self._close_listener()

    async def _close_listener(self) -> None:
        if self.metrics_listener is not None:
            listener, self.metrics_listener = self.metrics_listener, None
            # blocking, but briefly: the server notices within its poll interval (0.5 s)
            await asyncio.to_thread(listener.close)

    @asynccontextmanager
    async def running(self, loop: bool = True) -> AsyncIterator[Runtime]:
        await self.start(loop)
        try:
            yield self
        finally:
            await self.stop()


def _node_id(settings: Settings) -> str:
    """Stable across restarts of the same node, so it can take back its own leases at once."""
    where = str(settings.data_dir.resolve())
    return f"{socket.gethostname()}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


def bootstrap(store: Store, settings: Settings, clock: Clock) -> str | None:
    """On an empty database: project `default` and an admin token, saved 0600 in the data dir."""
    now = clock.now()
    project_id = store.ensure_project("default", now)
    if store.count_tokens():
        return None
    _, secret = store.create_token(project_id, "admin", now, "created on first start")
    write_secret(settings.admin_token_file, secret)
    return secret


def load_examples(store: Store, now: datetime, project: str = "default") -> list[str]:
    """Store every example in `project` (a no-op for ones already there); returns their names."""
    project_id = store.ensure_project(project, now)
    names = []
    for text in example_files().values():
        definition = parse_definition(load_text(text, "application/yaml"))
        store.put_workflow(project_id, definition, now)
        names.append(definition.name)
    return names


@dataclass(frozen=True)
class Rotation:
    resealed: int  # values sealed again with the newest key
    key_file: Path | None  # None when the keys come from EXECFLOW_SECRET_KEYS
    retired: int  # old keys removed from the key file


def rotate_secret_keys(settings: Settings, keep_old: bool = False, pause: float = 2.0) -> Rotation:
    """Seal every secret value in the database with a new key.

    With a key file: a new key goes first in it, and after `pause` (nodes reading the same
    file look at it again every second, so by then they seal with the new key) every value
    is sealed again; then the old keys are removed unless `keep_old`. With
    EXECFLOW_SECRET_KEYS, its first key is the new one: values are sealed again with it,
    and the others may be removed from the variable afterwards. The new key is recorded in the
    database before any value is sealed with it, and the others are retired once every value
    is sealed again, so that nodes without them may start."""
    database = connect(settings.url)
    upgrade(database)
    if settings.secret_keys.strip():
        sealer = Sealer.from_keys(settings.secret_keys)
        key, path, old = sealer.keys[0], None, []
    else:
        path = settings.key_file
        old = read_key_file(path) if path.exists() else []
        key = new_key().encode()
        sealer = Sealer([key, *old], path)
    store = Store(database, sealer)
    try:
        store.secret_keys.record(fingerprint(key), datetime.now(UTC))
        if path is not None:
            write_key_file(path, [key, *old])
            time.sleep(pause)
        resealed = store.reseal()
        store.secret_keys.retire_older(datetime.now(UTC))
    finally:
        store.close()
    if path is None:
        return Rotation(resealed, None, 0)
    if not keep_old:
        write_key_file(path, read_key_file(path)[:1])
    return Rotation(resealed, path, 0 if keep_old else len(old))


def secret_key_fingerprints(settings: Settings) -> tuple[list[str], list[KeyRecord]]:
    """The fingerprints of this node's keys (the sealing key first; none when it has no key
    yet), and the keys the database records."""
    held = []
    if settings.secret_keys.strip() or settings.key_file.exists():
        held = sealer_for(settings.secret_keys, settings.key_file).fingerprints()
    database = connect(settings.url)
    upgrade(database)
    store = Store(database)
    try:
        return held, store.secret_keys.records()
    finally:
        store.close()


def write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.chmod(path, 0o600)


# A server holds thousands of executions in memory, and nearly everything it allocates is
# freed by reference counting; with CPython's default thresholds (700, 10, 10) the cyclic
# collector still ran a full collection every few hundred starts, about 12 % of a start's
# CPU and 20 % of a task run's (bench/README.md).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """For a long-running server, once everything is loaded: what exists now (modules,
    the app, caches) is never collected, and the young generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
