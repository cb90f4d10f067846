"""One member's live socket: a bounded outbox drained by a single writer task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from rooms.codec import Format, Frame, encode, unpack
from rooms.errors import Close
from rooms.metrics import Metrics

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 30.0  # how long a close frame may wait for a slow reader to make room for it


class Transport(Protocol):
    async def send(self, data: bytes | str) -> None: ...

    def send_now(self, frames: Sequence[bytes | str]) -> bool:
        """Write these frames at once, in one write, if nothing stands in the way (open, not
        paused); else write none of them and return False."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class Outgoing:
    """A frame encoded at most once per format, however many members receive it."""

    __slots__ = ("_json", "_msgpack", "frame", "seq")

    def __init__(
        self, frame: Frame | None, seq: int | None = None, packed: bytes | None = None
    ) -> None:
        self.frame = frame
        self.seq = seq
        self._msgpack = packed
        self._json: str | None = None

    def encoded(self, fmt: Format) -> bytes | str:
        if fmt == "msgpack":
            if self._msgpack is None:
                assert self.frame is not None
                self._msgpack = encode(self.frame, "msgpack")  # type: ignore[assignment]
            assert self._msgpack is not None
            return self._msgpack
        if self._json is None:
            frame = self.frame if self.frame is not None else unpack(self._msgpack or b"")
            self._json = encode(frame, "json")  # type: ignore[assignment]
        assert self._json is not None
        return self._json

    def size(self) -> int:
        if self._msgpack is not None:
            return len(self._msgpack)
        return len(self._json) if self._json is not None else 256


class Fill:
    """Send stored events ``(conn.delivered, upto]`` before anything queued after this."""

    __slots__ = ("upto",)

    def __init__(self, upto: int) -> None:
        self.upto = upto


Loader = Callable[[int, int], Awaitable[list[tuple[int, bytes]]]]


class Done:
    """Set once, never cleared: what ``asyncio.Event`` offers here, without its waiter deque
    (memory per idle connection). Waiting is rare; its event is made only then."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: asyncio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._set:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class Connection:
    # Slots, a queue made only while something waits in it, no event and no finished task
    # kept: memory per idle connection (bench S5).
    __slots__ = (
        "_bytes",
        "_close_after",
        "_closer",
        "_held",
        "_loader",
        "_max_bytes",
        "_max_items",
        "_queue",
        "_started",
        "_task",
        "closed",
        "delivered",
        "done",
        "fmt",
        "id",
        "metrics",
        "on_done",
        "pair_id",
        "session_id",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        pair_id: str,
        user_id: str,
        fmt: Format,
        loader: Loader,
        max_items: int,
        max_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.metrics = metrics or Metrics()
        self.transport = transport
        self.pair_id = pair_id
        self.session_id: str | None = None  # the session this connection joined
        self.user_id = user_id
        self.fmt = fmt
        self.delivered = 0
        self.closed: tuple[int, str] | None = None
        self._loader = loader
        self._queue: deque[Outgoing | Fill] | None = None  # None while empty
        self._held: list[Outgoing] | None = None  # frames waiting to share the next write
        self._bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._started = False
        self._close_after: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None  # the writer, while it runs
        self._closer: asyncio.Task[None] | None = None
        self.done = Done()  # set once the connection is over: stop reading from it
        self.on_done: Callable[[], None] | None = None  # called once, as ``done`` is set

    def _over(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def start(self) -> None:
        """Let the writer go: what is queued (the welcome first) is written from now on."""
        self._started = True
        self._kick()

    def _kick(self) -> None:
        # The writer task lives only while there is something to write: an idle socket holds
        # no task (memory per idle connection).
        if (
            self._started
            and not self.closed
            and (self._queue or self._close_after)
            and (self._task is None or self._task.done())
        ):
            self._task = asyncio.create_task(self._write(), name=f"writer-{self.id[:8]}")

    def push(self, item: Outgoing | Fill, hold: bool = False) -> None:
        """Queue ``item`` (or write it at once when nothing waits before it).

        ``hold``: a frame without seq (an ack) that the caller expects to be followed soon by
        another for this socket (the chat it acks): it waits for that frame to share its write
        (one system call instead of two), at most two turns of the event loop.
        """
        if self.closed or self._close_after:
            return
        if (
            self._queue is None
            and self._task is None
            and self._started
            and isinstance(item, Outgoing)
            and (item.seq is None or item.seq == self.delivered + 1)
        ):
            if hold and item.seq is None:
                if self._held is None:
                    self._held = []
                    loop = asyncio.get_running_loop()
                    # two turns: the frame it waits for is scheduled in this one (the broker
                    # delivers with call_soon, after this callback)
                    loop.call_soon(loop.call_soon, self._release)
                self._held.append(item)
                return
            frames = [item.encoded(self.fmt)]
            if self._held:
                frames[:0] = [h.encoded(self.fmt) for h in self._held]
            if self.transport.send_now(frames):
                # nothing waits before it: written now, without a task and the ASGI send chain
                # (S2: a task and five awaited layers per frame were a tenth of the event loop)
                self.metrics.frame_out(len(frames))
                self._held = None
                if item.seq is not None:
                    self.delivered = item.seq
                return
        self._unhold()
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if isinstance(item, Outgoing):
            self._bytes += item.size()
        if len(self._queue) > self._max_items or self._bytes > self._max_bytes:
            self.metrics.slow_consumer_close()
            self.abort(Close.TRY_AGAIN, "too slow to read; reconnect and resume")
            return
        self._kick()

    def _unhold(self) -> None:
        """Held frames go first into the queue, before whatever comes now."""
        if self._held:
            held, self._held = self._held, None
            if self._queue is None:
                self._queue = deque()
            self._queue.extend(held)
            self._bytes += sum(h.size() for h in held)

    def _release(self) -> None:
        """Nothing came to share the held frames' write: they go alone."""
        if self._held and not self.closed and not self._close_after:
            held, self._held = self._held, None
            for item in held:
                self.push(item)

    def send(self, frame: Frame, hold: bool = False) -> None:
        out = Outgoing(frame)
        out.encoded(self.fmt)  # counted at its real size in the queue (a welcome may be large)
        self.push(out, hold)

    def close_after_queue(self, code: int, reason: str) -> bool:
        """Close once everything already queued has been written; ``False`` if already closing."""
        if not self.closed and not self._close_after:
            self._unhold()
            self._close_after = (code, reason)
            self._kick()
            return True
        return False

    def abort(self, code: int, reason: str) -> None:
        """Close now, dropping whatever is still queued."""
        if self.closed:
            return
        self.closed = (code, reason)
        self._queue = self._held = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))
        self._over()

    async def _close(self, code: int, reason: str) -> None:
        # A slow reader's close frame waits behind what is already in the socket's buffers;
        # give it time to drain (it then sees the close code) rather than dropping the close.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.transport.close(code, reason), CLOSE_TIMEOUT)

    async def wait_closed(self) -> None:
        """Wait until the close frame is handed to the socket (or given up on)."""
        if self._closer is not None:
            await asyncio.shield(self._closer)

    async def _write(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                if not self._queue:
                    self._queue = None  # an empty deque is most of a kilobyte
                if isinstance(item, Fill):
                    await self._fill(item.upto)
                    continue
                self._bytes -= item.size()
                if item.seq is not None:
                    if item.seq <= self.delivered:
                        continue
                    if item.seq > self.delivered + 1:
                        await self._fill(item.seq - 1)
                    self.delivered = item.seq
                await self.transport.send(item.encoded(self.fmt))
                self.metrics.frame_out()
            if self._close_after:
                code, reason = self._close_after
                self.closed = self._close_after
                await self._close(code, reason)
                self._over()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away under us
            log.debug("writer for %s stopped: %r", self.id[:8], exc)
            if not self.closed:
                self.closed = (Close.GOING_AWAY, "send failed")
            self._over()
        finally:
            if self._task is asyncio.current_task():
                self._task = None  # a finished task (and its coroutine) is not kept

    async def _fill(self, upto: int) -> None:
        while self.delivered < upto:
            try:
                # shielded: a read cancelled midway can leave its pooled SQLite connection in
                # a read transaction, which holds back every WAL checkpoint
                rows = await asyncio.shield(self._loader(self.delivered, upto))
            except Exception as exc:
                log.warning("replay for %s failed: %r", self.id[:8], exc)
                self.abort(Close.TRY_AGAIN, "the store is unavailable; reconnect and resume")
                return
            if not rows:
                log.warning("seq %d..%d missing in store", self.delivered + 1, upto)
                return
            for seq, body in rows:
                if seq <= self.delivered:
                    continue
                await self.transport.send(Outgoing(None, seq, body).encoded(self.fmt))
                self.metrics.frame_out()
                self.delivered = seq

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
