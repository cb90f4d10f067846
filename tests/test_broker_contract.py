"""The Broker contract, one suite for every implementation.

A cluster is a list of brokers that act as separate nodes of one deployment. To test another
implementation, add one entry to ``CLUSTERS``: an async context manager that yields ``n`` started
nodes and cleans up after them. Every test uses fresh channel, session and room names, so a
shared backend is fine. The Redis cluster uses the local Redis under a key prefix of its own per
test (skipped when Redis is unreachable, failed instead when CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from rooms.broker import Broker, MemoryBackbone, MemoryBroker, broker_from_url
from rooms.broker.memory import KEY_WINDOW
from tests.redis_support import REDIS_URL, redis_prefix

WAIT = 5.0  # seconds; every wait below is bounded by this


@contextlib.asynccontextmanager
async def memory_cluster(n: int) -> AsyncIterator[list[Broker]]:
    backbone = MemoryBackbone()
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(MemoryBroker(backbone)) for _ in range(n)]


@contextlib.asynccontextmanager
async def redis_cluster(n: int) -> AsyncIterator[list[Broker]]:
    async with redis_prefix() as prefix, contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(broker_from_url(REDIS_URL, prefix=prefix))
            for _ in range(n)
        ]


CLUSTERS: dict[str, Callable[[int], AbstractAsyncContextManager[list[Broker]]]] = {
    "memory": memory_cluster,
    "redis": redis_cluster,
}


@pytest.fixture(params=sorted(CLUSTERS))
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[list[Broker]]:
    """Two nodes of one cluster, entered and closed around the test."""
    async with CLUSTERS[request.param](2) as nodes:
        assert len({b.node_id for b in nodes}) == len(nodes)
        yield nodes


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Inbox:
    """A handler that queues what it gets, so tests can await deliveries with a bound."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.got: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.got.append(data)
        self.queue.put_nowait(data)

    async def take(self, n: int) -> list[bytes]:
        async def inner() -> list[bytes]:
            return [await self.queue.get() for _ in range(n)]

        return await asyncio.wait_for(inner(), WAIT)

    async def until(self, marker: bytes) -> list[bytes]:
        """Everything received up to and including ``marker``."""

        async def inner() -> list[bytes]:
            out = []
            while True:
                data = await self.queue.get()
                out.append(data)
                if data == marker:
                    return out

        return await asyncio.wait_for(inner(), WAIT)


PAYLOADS = [
    b"plain",
    b"\x00\xff\xfe\x80 not utf-8 \xc3\x28",
    bytes(range(256)),
    b"\x81\xa1t\xa4ping",  # a msgpack map, as the hub publishes
    b"x" * 70_000,
]


# publish / subscribe ---------------------------------------------------------------------------
async def test_publish_reaches_every_node_unchanged(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("room")
    on_a, on_b, on_b2 = Inbox(), Inbox(), Inbox()
    await a.subscribe(channel, on_a)
    await b.subscribe(channel, on_b)
    await b.subscribe(channel, on_b2)
    for data in PAYLOADS:
        a.publish(channel, data)
    for inbox in (on_a, on_b, on_b2):
        got = await inbox.take(len(PAYLOADS))
        assert got == PAYLOADS
        assert all(type(x) is bytes for x in got)


async def test_publish_order_is_kept_per_publisher(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("room")
    on_a, on_b = Inbox(), Inbox()
    await a.subscribe(channel, on_a)
    await b.subscribe(channel, on_b)
    n = 200
    for i in range(n):
        a.publish(channel, b"a%d" % i)
        b.publish(channel, b"b%d" % i)
    for inbox in (on_a, on_b):
        got = await inbox.take(2 * n)
        assert sorted(got) == sorted(
            [b"a%d" % i for i in range(n)] + [b"b%d" % i for i in range(n)]
        )
        assert [x for x in got if x[:1] == b"a"] == [b"a%d" % i for i in range(n)]
        assert [x for x in got if x[:1] == b"b"] == [b"b%d" % i for i in range(n)]


async def test_channels_are_separate(cluster: list[Broker]) -> None:
    a, b = cluster
    one, two = name("one"), name("two")
    in_one, in_two = Inbox(), Inbox()
    await b.subscribe(one, in_one)
    await b.subscribe(two, in_two)
    a.publish(one, b"for one")
    a.publish(two, b"for two")
    assert await in_one.take(1) == [b"for one"]
    assert await in_two.take(1) == [b"for two"]
    a.publish(two, b"end")
    await in_two.until(b"end")
    assert in_one.got == [b"for one"]


async def test_subscribe_is_effective_when_it_returns(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("room")
    inbox = Inbox()
    await b.subscribe(channel, inbox)
    a.publish(channel, b"right after subscribe")
    assert await inbox.take(1) == [b"right after subscribe"]


async def test_publish_without_subscribers_is_harmless(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("empty")
    probe, witness = name("probe"), Inbox()
    await b.subscribe(probe, witness)
    a.publish(channel, b"nobody listens")
    # publish is fire-and-forget: wait until a's later message is out, so the first one is
    # past before b subscribes (a message still in flight may reach a new subscriber)
    a.publish(probe, b"sync")
    await witness.until(b"sync")
    inbox = Inbox()
    await b.subscribe(channel, inbox)
    a.publish(channel, b"now someone does")
    assert await inbox.until(b"now someone does") == [b"now someone does"]


async def test_unsubscribe_stops_delivery(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("room")
    gone, keeper, remote = Inbox(), Inbox(), Inbox()
    await b.subscribe(channel, gone)
    await b.subscribe(channel, keeper)
    await a.subscribe(channel, remote)
    a.publish(channel, b"before")
    assert await gone.take(1) == [b"before"]
    assert await keeper.take(1) == [b"before"]
    await b.unsubscribe(channel, gone)
    a.publish(channel, b"after")
    a.publish(channel, b"ping")
    # the keeper on the same node got both, so "after" was dispatched there already
    assert await keeper.until(b"ping") == [b"after", b"ping"]
    assert await remote.until(b"ping") == [b"before", b"after", b"ping"]
    assert gone.got == [b"before"]


async def test_unsubscribe_last_handler_on_a_node(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("room")
    gone, remote = Inbox(), Inbox()
    await b.subscribe(channel, gone)
    await a.subscribe(channel, remote)
    await b.unsubscribe(channel, gone)
    a.publish(channel, b"after")
    # a fresh subscriber on node b is a barrier: once it has "ping", "after" is long past
    fresh = Inbox()
    await b.subscribe(channel, fresh)
    a.publish(channel, b"ping")
    await fresh.until(b"ping")
    assert await remote.until(b"ping") == [b"after", b"ping"]
    assert gone.got == []
    # unsubscribing a handler that is not subscribed is harmless
    await b.unsubscribe(channel, gone)
    await b.unsubscribe(name("never"), gone)


async def test_a_failing_handler_does_not_stop_delivery(cluster: list[Broker]) -> None:
    a, b = cluster
    channel = name("room")
    calls: list[bytes] = []

    def broken(data: bytes) -> None:
        calls.append(data)
        raise RuntimeError("handler bug")

    inbox = Inbox()
    await b.subscribe(channel, broken)
    await b.subscribe(channel, inbox)
    for i in range(3):
        a.publish(channel, b"m%d" % i)
    assert await inbox.take(3) == [b"m0", b"m1", b"m2"]
    assert calls == [b"m0", b"m1", b"m2"]


# seq allocation ----------------------------------------------------------------------------------
async def test_allocate_seq_is_gap_free_across_nodes(cluster: list[Broker]) -> None:
    a, b = cluster
    session = name("s")
    got = [(await (a if i % 2 else b).allocate_seq(session, None, 0)) for i in range(20)]
    assert got == [(i, True) for i in range(1, 21)]


async def test_allocate_seq_concurrent_is_unique(cluster: list[Broker]) -> None:
    a, b = cluster
    session = name("s")
    calls = [(a if i % 2 else b).allocate_seq(session, None, 0) for i in range(100)]
    got = await asyncio.wait_for(asyncio.gather(*calls), WAIT)
    assert sorted(s for s, _ in got) == list(range(1, 101))
    assert all(new for _, new in got)


async def test_allocate_seq_per_session(cluster: list[Broker]) -> None:
    a, b = cluster
    s1, s2 = name("s"), name("s")
    assert await a.allocate_seq(s1, None, 0) == (1, True)
    assert await b.allocate_seq(s2, None, 0) == (1, True)
    assert await b.allocate_seq(s1, None, 0) == (2, True)


async def test_allocate_seq_respects_floor(cluster: list[Broker]) -> None:
    a, b = cluster
    session = name("s")
    assert await a.allocate_seq(session, None, 10) == (11, True)
    assert await b.allocate_seq(session, None, 5) == (12, True)  # never goes back
    assert await b.allocate_seq(session, None, 12) == (13, True)
    assert await a.allocate_seq(session, None, 40) == (41, True)
    assert await b.allocate_seq(session, None, 0) == (42, True)


async def test_allocate_seq_same_key_same_seq(cluster: list[Broker]) -> None:
    a, b = cluster
    session = name("s")
    key = "user\x00chat-1"
    assert await a.allocate_seq(session, key, 0) == (1, True)
    assert await b.allocate_seq(session, key, 0) == (1, False)
    assert await a.allocate_seq(session, key, 0) == (1, False)
    # a retry consumes no seq
    assert await b.allocate_seq(session, None, 0) == (2, True)
    assert await a.allocate_seq(session, "user\x00chat-2", 0) == (3, True)
    assert await b.allocate_seq(session, key, 5) == (1, False)
    # keys belong to their session
    assert await b.allocate_seq(name("s"), key, 0) == (1, True)


async def test_allocate_seq_same_key_concurrently(cluster: list[Broker]) -> None:
    a, b = cluster
    session = name("s")
    calls = [(a if i % 2 else b).allocate_seq(session, "u\x00same", 0) for i in range(20)]
    got = await asyncio.wait_for(asyncio.gather(*calls), WAIT)
    assert len({s for s, _ in got}) == 1
    assert sum(new for _, new in got) == 1
    assert await a.allocate_seq(session, None, 0) == (got[0][0] + 1, True)


# claims ------------------------------------------------------------------------------------------
async def test_claim_replaces_across_nodes(cluster: list[Broker]) -> None:
    a, b = cluster
    room, user = name("room"), "user-1"
    assert await a.holder(room, user) is None
    assert await a.claim(room, user, "conn-1") is None
    assert await b.holder(room, user) == "conn-1"
    assert await b.claim(room, user, "conn-2") == "conn-1"
    assert await a.holder(room, user) == "conn-2"
    assert await a.claim(room, user, "conn-3") == "conn-2"
    assert await b.holder(room, user) == "conn-3"


async def test_claim_is_per_room_and_user(cluster: list[Broker]) -> None:
    a, b = cluster
    room, other_room = name("room"), name("room")
    assert await a.claim(room, "u1", "c1") is None
    assert await b.claim(room, "u2", "c2") is None
    assert await b.claim(other_room, "u1", "c3") is None
    assert await a.holder(room, "u1") == "c1"
    assert await a.holder(room, "u2") == "c2"
    assert await a.holder(other_room, "u1") == "c3"
    assert await a.holder(other_room, "u2") is None


async def test_reclaim_by_the_holder_replaces_nothing(cluster: list[Broker]) -> None:
    a, b = cluster
    room = name("room")
    assert await a.claim(room, "u", "c1") is None
    assert await b.claim(room, "u", "c1") is None
    assert await a.holder(room, "u") == "c1"


async def test_release_only_by_the_holder(cluster: list[Broker]) -> None:
    a, b = cluster
    room, user = name("room"), "user-1"
    await a.claim(room, user, "old")
    await b.claim(room, user, "new")
    # the replaced connection's late release must not drop the new claim
    assert await a.release(room, user, "old") is False
    assert await b.holder(room, user) == "new"
    assert await a.release(room, user, "stranger") is False
    assert await b.holder(room, user) == "new"
    assert await a.release(room, user, "new") is True
    assert await a.holder(room, user) is None
    assert await b.holder(room, user) is None
    assert await b.release(room, user, "new") is False
    assert await b.release(name("room"), user, "new") is False
    # after a release the next claim replaces nothing
    assert await b.claim(room, user, "newest") is None


async def test_ping_answers_when_the_broker_is_up(cluster: list[Broker]) -> None:
    for node in cluster:
        await asyncio.wait_for(node.ping(), WAIT)  # /readyz relies on it


# lease -------------------------------------------------------------------------------------------
async def test_leased_once_started(cluster: list[Broker]) -> None:
    for node in cluster:
        assert node.leased  # may serve members
        node.on_lease = lambda leased: None  # the hub sets it; settable on every broker


# memory only -------------------------------------------------------------------------------------
async def test_memory_retry_keys_are_a_bounded_window_per_session() -> None:
    backbone = MemoryBackbone(key_window=3)
    async with MemoryBroker(backbone) as a, MemoryBroker(backbone) as b:
        session, other = name("s"), name("s")
        for i in range(1, 5):
            assert await a.allocate_seq(session, f"u\x00c{i}", 0) == (i, True)
        assert await a.allocate_seq(other, "u\x00c1", 0) == (1, True)
        assert list(backbone.keys[session]) == ["u\x00c2", "u\x00c3", "u\x00c4"]
        assert await b.allocate_seq(session, "u\x00c4", 0) == (4, False)
        assert await b.allocate_seq(session, "u\x00c2", 0) == (2, False)
        # c1 fell out of the window: its retry gets a new seq (the caller checks the store)
        assert await b.allocate_seq(session, "u\x00c1", 0) == (5, True)
        assert await a.allocate_seq(session, "u\x00c2", 0) == (6, True)  # now c2 fell out
        assert await a.allocate_seq(session, "u\x00c1", 0) == (5, False)
        assert await a.allocate_seq(other, "u\x00c1", 0) == (1, False)  # per session
        await a.forget(session)
        assert session not in backbone.keys and session not in backbone.seqs
        assert list(backbone.keys) == [other]


async def test_memory_retry_key_window_default() -> None:
    backbone = MemoryBackbone()
    w = KEY_WINDOW
    assert backbone.key_window == w
    async with MemoryBroker(backbone) as node:
        session = name("s")
        n = w + 1000
        for i in range(1, n + 1):
            assert await node.allocate_seq(session, f"u\x00c{i}", 0) == (i, True)
        assert len(backbone.keys[session]) == w
        assert await node.allocate_seq(session, f"u\x00c{n}", 0) == (n, False)
        assert await node.allocate_seq(session, f"u\x00c{n - w + 1}", 0) == (n - w + 1, False)
        assert await node.allocate_seq(session, f"u\x00c{n - w}", 0) == (n + 1, True)
        assert len(backbone.keys[session]) == w


async def test_retry_keys_are_remembered_for_a_bounded_window(cluster: list[Broker]) -> None:
    a, b = cluster
    session = name("s")
    n = 1500
    for i in range(1, n + 1):
        assert await a.allocate_seq(session, f"u\x00c{i}", 0) == (i, True)
    for i in range(n - 50, n + 1):  # the recent ones, on any node
        assert await b.allocate_seq(session, f"u\x00c{i}", 0) == (i, False)
    # an old one may be forgotten: then it is a new seq (the caller asks the store)
    seq, new = await b.allocate_seq(session, "u\x00c1", 0)
    assert (seq, new) == (1, False) or (seq, new) == (n + 1, True)
    if isinstance(a, MemoryBroker):
        assert len(a.backbone.keys[session]) <= KEY_WINDOW
    else:
        from rooms.broker.redis import RedisBroker

        assert isinstance(a, RedisBroker)
        held = await a.redis.hlen(a._seqkeys_key(session)) + await a.redis.hlen(
            a._oldkeys_key(session)
        )
        assert held <= 2 * a.key_window
