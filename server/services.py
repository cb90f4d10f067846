"""The services one node runs, started and stopped in the app's lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from persistence.store import Store
from persistence.writer import Writer
from rooms.broker import Broker, MemoryBackbone, broker_from_url
from rooms.hub import Hub, HubConfig
from rooms.room import Config
from server.auth import verify
from server.metrics import PrometheusMetrics
from server.settings import Settings
from signaling.ice import ice_servers

# the ``exp`` of the token the current hello carried: the hub verifies the token and asks for
# the ICE servers in the same task, so the TURN credential can end when the token does
TOKEN_EXP: ContextVar[float | None] = ContextVar("TOKEN_EXP", default=None)


@dataclass
class Services:
    settings: Settings
    store: Store
    writer: Writer
    broker: Broker
    hub: Hub
    metrics: PrometheusMetrics


@asynccontextmanager
async def running(
    settings: Settings, backbone: MemoryBackbone | None = None
) -> AsyncIterator[Services]:
    async with AsyncExitStack() as stack:
        unstarted = broker_from_url(
            settings.broker_url,
            backbone,
            prefix=settings.redis_prefix,
            node_ttl=settings.node_ttl,
        )
        metrics = PrometheusMetrics(unstarted.node_id)  # a registry of this app's own
        store = await stack.enter_async_context(Store(settings.database_url))
        writer = await stack.enter_async_context(
            Writer(store, max_wait=settings.commit_wait, metrics=metrics)
        )
        broker = await stack.enter_async_context(unstarted)

        def check(token: str) -> tuple[str, str]:
            claims = verify(settings.secret, token)
            TOKEN_EXP.set(claims.exp or None)
            return claims.user_id, claims.room

        hub = await stack.enter_async_context(
            Hub(
                store=store,
                writer=writer,
                broker=broker,
                verify=check,
                ice_servers=lambda user: ice_servers(
                    user,
                    time.time(),
                    stun_urls=settings.stun_urls,
                    turn_urls=settings.turn_urls,
                    turn_secret=settings.turn_secret,
                    expires=TOKEN_EXP.get(),
                ),
                config=HubConfig(
                    send_queue=settings.send_queue,
                    send_queue_bytes=settings.send_queue_bytes,
                    room=Config(
                        rate_limit=settings.rate_limit,
                        joins_per_minute=settings.joins_per_minute,
                        session_grace=settings.session_grace,
                        sweep_interval=settings.node_ttl / 2,
                        notes_compact_every=settings.notes_compact_every,
                        notes_max_update=settings.notes_max_update,
                        notes_max_bytes=settings.notes_max_bytes,
                    ),
                ),
                metrics=metrics,
            )
        )
        metrics.live(connections=lambda: hub.connections, rooms=lambda: len(hub.rooms))
        yield Services(settings, store, writer, broker, hub, metrics)
