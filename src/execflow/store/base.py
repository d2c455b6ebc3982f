"""What every part of the store shares: the engine, the threads its calls run on, the
connections reads keep, and the group commit that starts share.

Methods are synchronous and run on a small thread pool (`call`), so SQLite's
single writer is never contended inside one process and the event loop never
blocks on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from execflow.errors import Conflict, Unavailable
from execflow.records import ExecutionRecord, StoreEntry, TaskRunRecord
from execflow.sealing import Sealer
from execflow.states import ACTIVE
from execflow.store.database import is_outage
from execflow.store.keys import SecretKeys

P = ParamSpec("P")
R = TypeVar("R")

# the active states as the executions table stores them
ACTIVE_STATES = [st.value for st in ACTIVE]


@contextmanager
def _reachable() -> Iterator[None]:
    """Translate a database outage into `Unavailable`, so callers (and the API, which
    answers 503) can tell "try again shortly" from a fault of the data."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise Unavailable() from exc


def new_id() -> str:
    return uuid.uuid4().hex


class StoreBase:
    """What a store holds, and what every part of it uses: the threads and connections
    its calls run on. The parts (credentials, workflows, executions, commands, leases...)
    are mixins over this; the methods one part calls of another are declared here.

    Writes run on their own threads (one for SQLite, whose writer is single anyway, so
    it is never contended inside a process) and reads on others, so that a burst of
    reads never delays a commit: in WAL mode SQLite readers do not block the writer."""

    def __init__(self, engine: Engine, sealer: Sealer | None = None) -> None:
        self.engine = engine
        # seals secret values; without one given, a key that lives as long as this object
        self.sealer = sealer or Sealer.ephemeral()
        self.secret_keys = SecretKeys(self)
        self.is_sqlite = engine.dialect.name == "sqlite"
        writers = 1 if self.is_sqlite else 4
        self._writes = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="execflow-dbw")
        self._reads = ThreadPoolExecutor(
            max_workers=3, thread_name_prefix="execflow-dbr", initializer=self._reader_thread
        )
        self._starts = GroupCommit(self)
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._tick_conn: Connection | None = None

    def reading(self) -> Any:
        """A connection for reads (see `_reader`), for SQL kept beside this module."""
        return self._reader()

    def _reader_thread(self) -> None:
        self._local.keeps = True

    @contextmanager
    def _reader(self) -> Iterator[Connection]:
        """A connection for reads. SQLite (on every thread) and the reader threads keep one
        open: checking a pooled connection out, pinging it and resetting it costs more than
        the read (on PostgreSQL three round trips besides the query). pysqlite opens no
        transaction for a SELECT, and the kept PostgreSQL connections run in autocommit, so
        every statement sees the latest commit, as it would under READ COMMITTED."""
        if not (self.is_sqlite or getattr(self._local, "keeps", False)):
            with self.engine.connect() as pooled:
                yield pooled
            return
        kept: Connection | None = getattr(self._local, "conn", None)
        if kept is None or kept.closed or kept.invalidated:
            if kept is not None:
                # forgotten before reconnecting: if the database cannot be reached now, the
                # next read tries again instead of finding this dead one
                self._local.conn = None
                if kept in self._readers:
                    self._readers.remove(kept)
                with contextlib.suppress(Exception):
                    kept.close()
            kept = self.engine.connect()
            if not self.is_sqlite:
                kept = kept.execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = kept
            self._readers.append(kept)
        try:
            yield kept
        finally:
            if kept.in_transaction():
                kept.rollback()

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store method that writes, on the writer threads; Unavailable if the
        database cannot be reached."""
        loop = asyncio.get_running_loop()
        with _reachable():
            return await loop.run_in_executor(self._writes, lambda: fn(*args, **kwargs))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store method that only reads.

        On SQLite it runs right here on the event loop: a WAL read never waits for a lock
        and takes microseconds, less than the hop to a thread would cost. Elsewhere it
        runs on the reader threads. Unavailable if the database cannot be reached."""
        if self.is_sqlite:
            with _reachable():
                return fn(*args, **kwargs)

        def once_more_if_dropped() -> R:
            try:
                return fn(*args, **kwargs)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The kept connection died (a database restart): the read is safe to repeat.
                return fn(*args, **kwargs)

        loop = asyncio.get_running_loop()
        with _reachable():
            return await loop.run_in_executor(self._reads, once_more_if_dropped)

    def ping(self) -> None:
        """A trivial query: raises if the database does not answer."""
        with self._reader() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._writes.shutdown(wait=True)
        self._reads.shutdown(wait=True)
        for conn in list(self._readers):
            conn.close()
        if self._tick_conn is not None:
            self._tick_conn.close()
        self.engine.dispose()

    def create_executions(
        self, batch: Sequence[tuple[ExecutionRecord, str | None, datetime | None]]
    ) -> list[ExecutionRecord | Conflict]:
        raise NotImplementedError  # Starts

    def get_execution(
        self, execution_id: str, project_id: str | None = None, with_tasks: bool = True
    ) -> ExecutionRecord:
        raise NotImplementedError  # Executions

    def _get_execution(
        self,
        conn: Connection,
        execution_id: str,
        project_id: str | None,
        with_tasks: bool,
        for_engine: bool = False,
    ) -> ExecutionRecord:
        raise NotImplementedError  # Executions

    def _task_runs(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, tuple[TaskRunRecord, ...]]:
        raise NotImplementedError  # Executions

    def _store_entries(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, tuple[StoreEntry, ...]]:
        raise NotImplementedError  # Executions


class GroupCommit:
    """Coalesces concurrent starts into one transaction, so that a burst of N start
    requests costs one commit (one fsync) instead of N, with each still acknowledged
    only after its row is durable."""

    def __init__(self, store: StoreBase, max_batch: int = 256) -> None:
        self._store = store
        self._max = max_batch
        self._queue: list[tuple[Any, asyncio.Future[ExecutionRecord]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(
        self, item: tuple[ExecutionRecord, str | None, datetime | None]
    ) -> ExecutionRecord:
        future: asyncio.Future[ExecutionRecord] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results = await self._store.call(
                    self._store.create_executions, [item for item, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
