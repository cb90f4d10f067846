"""The broker interface: what every node must agree on, whatever the backend."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
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
    on_lease: Callable[[bool], object] | None
    """Called (sync) with each change of :attr:`leased` after the broker started: ``False``
    when the lease is lost (other nodes take this node's members for gone), ``True`` when it
    is back (the claims held when it was lost are void and dropped)."""

    async def __aenter__(self) -> Broker: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def leased(self) -> bool:
        """Whether this node may serve members now (the other nodes count it as alive)."""
        ...

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
        first call's seq and ``False`` instead of a new seq. A key may be forgotten after a
        bounded window; callers must tolerate a new seq for an old key (and de-duplicate
        against the store). ``seed`` returns the session's last stored seq: a broker that has
        no counter for the session (a new session, or a backend that lost its state) awaits it
        first and never allocates below it, since the caller's ``floor`` may lag behind what
        other nodes stored.
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


def _safe_call(handler: Handler, data: bytes) -> None:
    try:
        handler(data)
    except Exception:
        log.exception("broker handler failed")
