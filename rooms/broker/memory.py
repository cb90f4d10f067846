"""The in-process broker: one node, or several nodes of one process on a shared backbone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from rooms.broker.base import Handler, _safe_call

# retry keys remembered per session; older retries are looked up in the store. As many as a
# room remembers (rooms.room.DEDUP_WINDOW): on one node the two hold the same key strings.
KEY_WINDOW = 64


@dataclass
class MemoryBackbone:
    """State shared by every :class:`MemoryBroker` attached to it (nodes in one process)."""

    channels: dict[str, list[Handler]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    keys: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per session, its ``key_window`` most recently allocated retry keys and their seqs."""
    claims: dict[tuple[str, str], str] = field(default_factory=dict)
    key_window: int = KEY_WINDOW


class MemoryBroker:
    """In-process broker. Pass one :class:`MemoryBackbone` to several to make a cluster."""

    def __init__(self, backbone: MemoryBackbone | None = None) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self.on_reconnect: Callable[[], object] | None = None  # never called: nothing is lost
        self.on_lease: Callable[[bool], object] | None = None  # never called: never lost
        self.backbone = backbone or MemoryBackbone()
        self._mine: dict[str, list[Handler]] = {}

    @property
    def leased(self) -> bool:
        return True

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
        keys = b.keys.get(session_id)
        if key is not None and keys is not None and key in keys:
            return keys[key], False
        seq = max(b.seqs.get(session_id, 0), floor) + 1
        b.seqs[session_id] = seq
        if key is not None:
            if keys is None:
                keys = b.keys[session_id] = {}
            keys[key] = seq
            while len(keys) > b.key_window:
                del keys[next(iter(keys))]  # the oldest (a dict keeps insertion order)
        return seq, True

    async def forget(self, session_id: str) -> None:
        self.backbone.seqs.pop(session_id, None)
        self.backbone.keys.pop(session_id, None)

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
