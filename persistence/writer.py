"""Group commit: many writes per transaction, each caller resumed only once its write is durable."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Protocol

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from persistence.cancel import reraise_cancel
from persistence.store import CompactNotes, EndSession, Store, StoredEvent, WriteOp

log = logging.getLogger(__name__)


class CommitObserver(Protocol):
    """What the writer reports (``rooms.metrics.Metrics`` is one)."""

    def commit_batch(self, size: int) -> None: ...

    def store_error(self) -> None: ...


class _Unobserved:
    def commit_batch(self, size: int) -> None:
        pass

    def store_error(self) -> None:
        pass


class WriterUnavailable(Exception):
    """The writer is stopped or its backlog is full; nothing was queued."""


class WriteConflict(Exception):
    """The store already holds an event with this seq, or this sender's client id."""


class Writer:
    """Collects writes from every room and commits them in batches.

    A batch is whatever queued up while the previous commit ran, plus what arrives within
    ``max_wait`` seconds, up to ``max_batch`` writes. A failed commit is retried with backoff
    (the writes already hold their seq, so they must not be dropped); on shutdown the queue is
    drained before the store closes.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 1000,
        max_wait: float = 0.001,
        max_backlog: int = 50_000,
        metrics: CommitObserver | None = None,
    ) -> None:
        self.store = store
        self.metrics: CommitObserver = metrics or _Unobserved()
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.drain_timeout = 30.0
        self._last_batch = 0
        self.max_backlog = max_backlog
        self._queue: asyncio.Queue[tuple[WriteOp, asyncio.Future[None]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.written = 0

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self._run(), name="writer")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._queue.put_nowait(None)
            try:
                # drain what is queued; a store that stays down must not hold shutdown forever
                await asyncio.wait_for(task, self.drain_timeout)
            except TimeoutError:
                log.error("store unreachable at shutdown: unstored writes were never acked")

    def full(self) -> bool:
        return self._task is None or self._queue.qsize() >= self.max_backlog

    def submit(self, op: WriteOp, force: bool = False) -> asyncio.Future[None]:
        """Queue one write; the future resolves when it is committed.

        ``force`` queues past ``max_backlog`` (never past a stop): for a ``void`` that
        replaces a write that failed, one for one, so it cannot be refused for the same reason.
        """
        if self._task is None:
            raise WriterUnavailable("the store writer is stopped")
        if not force and self._queue.qsize() >= self.max_backlog:
            raise WriterUnavailable("the store is not keeping up")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return fut

    async def write(self, op: WriteOp) -> None:
        await self.submit(op)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            # wait for company only under load (the last batch was not alone), even with more
            # queued already: fewer, larger commits cost less CPU a write (S2, 1,000 rooms:
            # 89 % -> 76-79 % of a core); a lone message at a quiet time is committed at once
            if self.max_wait and self._last_batch > 1:
                await asyncio.sleep(self.max_wait)
            while len(batch) < self.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self._commit(batch)
        # drain whatever is left after the stop marker
        rest = []
        while not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is not None:
                rest.append(nxt)
        if rest:
            await self._commit(rest)

    async def _commit(self, batch: list[tuple[WriteOp, asyncio.Future[None]]]) -> None:
        delay = 0.05
        while True:
            try:
                rejected = await self.store.write([op for op, _ in batch])
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_cancel(exc)
                self.metrics.store_error()
                if not transient(exc):
                    await self._isolate(batch, exc)
                    return
                log.warning(
                    "commit of %d writes failed (%s); retrying in %.2fs",
                    len(batch),
                    safe_error(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.batches += 1
        self._last_batch = len(batch)
        self.written += len(batch)
        self.metrics.commit_batch(len(batch))
        refused = {id(op) for op in rejected}
        for op, fut in batch:
            if fut.done():
                continue
            if id(op) in refused:
                if isinstance(op, StoredEvent) and op.kind == "void":
                    # a hole's void lost the race with its late event: nothing is missing
                    log.info("void not stored: %s was filled meanwhile", describe(op))
                else:
                    log.warning(
                        "write refused: %s already stored (seq or client id reused)",
                        describe(op),
                    )
                fut.set_exception(WriteConflict("already stored"))
            else:
                fut.set_result(None)

    async def _isolate(
        self, batch: list[tuple[WriteOp, asyncio.Future[None]]], exc: Exception
    ) -> None:
        """One bad write must not sink its batch: retry each alone, fail only the bad ones."""
        if len(batch) == 1:
            op, fut = batch[0]
            log.error("write rejected by the store: %s (%s)", describe(op), safe_error(exc))
            if not fut.done():
                fut.set_exception(exc)
            return
        for item in batch:
            await self._commit([item])


def transient(exc: Exception) -> bool:
    """Errors worth retrying (the database is down or busy), as opposed to a rejected write."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | ConnectionError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def describe(op: WriteOp) -> str:
    """A write for the logs: ids, seq and size, never what members wrote."""
    if isinstance(op, StoredEvent):
        return (
            f"{op.kind} session={op.session_id} seq={op.seq} user={op.user_id} "
            f"client_id={op.client_id!r} body={len(op.body)} bytes"
        )
    if isinstance(op, EndSession):
        return f"end session={op.session_id}"
    if isinstance(op, CompactNotes):
        return f"notes compaction session={op.session_id}"
    return f"notes update session={op.session_id} data={len(op.data)} bytes"


def safe_error(exc: BaseException) -> str:
    """An exception for the logs: its type and the driver's first line, without SQL parameters
    (the engine hides them too) or anything past the first line."""
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
