"""The broker seam: fan-out between nodes and the little state every node must agree on.

A broker is chosen by URL: ``memory://`` (:mod:`rooms.broker.memory`) for one node, or
``redis://`` (:mod:`rooms.broker.redis`, imported only when used) for a cluster. Everything
that must agree across nodes goes through it: the room channels, seq allocation with retry
de-duplication, which connection holds each member of a room, and this node's lease.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rooms.broker.base import Broker, BrokerUnavailable, Handler
from rooms.broker.memory import MemoryBackbone, MemoryBroker

if TYPE_CHECKING:
    from rooms.broker.redis import RedisBroker as RedisBroker

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Handler",
    "MemoryBackbone",
    "MemoryBroker",
    "broker_from_url",
]


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
        from rooms.broker.redis import RedisBroker  # imported only when a cluster uses it

        return RedisBroker(url, prefix=prefix, node_ttl=node_ttl)
    raise ValueError(f"unsupported broker URL scheme {scheme!r} (use memory:// or redis://)")


def __getattr__(name: str) -> Any:
    if name == "RedisBroker":  # lazily, so that a memory:// node never imports redis
        from rooms.broker.redis import RedisBroker

        return RedisBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
