"""The broker seam: fan-out between nodes and the little state every node must agree on.

A broker is chosen by URL (``memory://`` here; ``redis://`` is the cluster's, in
:mod:`rooms.redis_broker`). Everything that
must agree across nodes goes through it: the room channels, seq allocation with retry
de-duplication, and which connection holds each member of a room.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

log = logging.getLogger(__name__)

Handler = Callable[[bytes], None]


class BrokerUnavailable(Exception):
    """The broker's backend cannot be reached; the caller should answer ``unavailable``."""


class Broker(Protocol):
    node_id: str
    on_reconnect: Callable[[], object] | None
    """Called (sync, or a coroutine function) after the node lost its subscriptions and has
    them back: messages published meanwhile were lost and must be repaired from the store."""

    async def __aenter__(self) -> Broker: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def publish(self, channel: str, data: bytes) -> None:
        """Deliver ``data`` to every subscriber of ``channel`` on every node, this one included.

        Never blocks: messages from one node are delivered in the order they were published.
        A message may be lost if the broker is down; the store is the source of truth.
        """

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(data)`` for each message on ``channel``, in publish order."""

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        """Stop calling ``handler``; the node drops the channel when its last handler goes."""

    async def allocate_seq(
        self,
        session_id: str,
        key: str | None,
        floor: int,
        seed: Callable[[], Awaitable[int]] | None = None,
    ) -> tuple[int, bool]:
        """Next seq of a session, never below ``floor + 1``.

        With a ``key`` (a chat's sender and id), a second call with the same key returns the
        first call's seq and ``False`` instead of a new seq. ``seed`` returns the session's
        last stored seq: a broker that has no counter for the session (a new session, or a
        backend that lost its state) awaits it first and never allocates below it, since the
        caller's ``floor`` may lag behind what other nodes stored.
        """

    async def forget(self, session_id: str) -> None:
        """Drop a finished session's seq counter and retry keys."""

    async def claim(self, room: str, user: str, conn: str) -> str | None:
        """Make ``conn`` the user's one connection in ``room``; return the one it replaces."""

    async def release(self, room: str, user: str, conn: str) -> bool:
        """Drop the claim if ``conn`` still holds it; ``True`` if it did."""

    async def holder(self, room: str, user: str) -> str | None:
        """The connection that holds the user's claim in ``room``, if any."""

    async def ping(self) -> None:
        """Return if the broker can serve this node now; raise if it cannot (for ``/readyz``)."""


@dataclass
class MemoryBackbone:
    """State shared by every :class:`MemoryBroker` attached to it (nodes in one process)."""

    channels: dict[str, list[Handler]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)
    claims: dict[tuple[str, str], str] = field(default_factory=dict)


class MemoryBroker:
    """In-process broker. Pass one :class:`MemoryBackbone` to several to make a cluster."""

    def __init__(self, backbone: MemoryBackbone | None = None) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self.on_reconnect: Callable[[], object] | None = None  # never called: nothing is lost
        self.backbone = backbone or MemoryBackbone()
        self._mine: dict[str, list[Handler]] = {}

    async def __aenter__(self) -> MemoryBroker:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for channel, handlers in list(self._mine.items()):
            for h in list(handlers):
                await self.unsubscribe(channel, h)

    def publish(self, channel: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        for handler in list(self.backbone.channels.get(channel, ())):
            loop.call_soon(_safe_call, handler, data)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self.backbone.channels.setdefault(channel, []).append(handler)
        self._mine.setdefault(channel, []).append(handler)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        for table in (self.backbone.channels, self._mine):
            handlers = table.get(channel, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                table.pop(channel, None)

    async def allocate_seq(
        self,
        session_id: str,
        key: str | None,
        floor: int,
        seed: Callable[[], Awaitable[int]] | None = None,
    ) -> tuple[int, bool]:
        b = self.backbone  # its counters live as long as the process: nothing to seed
        if key is not None and (session_id, key) in b.keys:
            return b.keys[(session_id, key)], False
        seq = max(b.seqs.get(session_id, 0), floor) + 1
        b.seqs[session_id] = seq
        if key is not None:
            b.keys[(session_id, key)] = seq
        return seq, True

    async def forget(self, session_id: str) -> None:
        b = self.backbone
        b.seqs.pop(session_id, None)
        for key in [k for k in b.keys if k[0] == session_id]:
            del b.keys[key]

    async def claim(self, room: str, user: str, conn: str) -> str | None:
        previous = self.backbone.claims.get((room, user))
        self.backbone.claims[(room, user)] = conn
        return previous if previous != conn else None

    async def release(self, room: str, user: str, conn: str) -> bool:
        if self.backbone.claims.get((room, user)) == conn:
            del self.backbone.claims[(room, user)]
            return True
        return False

    async def holder(self, room: str, user: str) -> str | None:
        return self.backbone.claims.get((room, user))

    async def ping(self) -> None:
        return None  # in-process: always there


def _safe_call(handler: Handler, data: bytes) -> None:
    try:
        handler(data)
    except Exception:
        log.exception("broker handler failed")


def broker_from_url(
    url: str,
    backbone: MemoryBackbone | None = None,
    *,
    prefix: str = "menteo:",
    node_ttl: float = 10.0,
) -> Broker:
    """Pick a broker implementation by URL scheme (``prefix`` and ``node_ttl`` are Redis's)."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return MemoryBroker(backbone)
    if scheme in ("redis", "rediss", "unix"):
        from rooms.redis_broker import RedisBroker  # imported only when a cluster uses it

        return RedisBroker(url, prefix=prefix, node_ttl=node_ttl)
    raise ValueError(f"unsupported broker URL scheme {scheme!r} (use memory:// or redis://)")
