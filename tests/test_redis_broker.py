"""What only the Redis broker does, against a real Redis (the shared contract is in
test_broker_contract.py): one pub/sub connection per node that subscribes only while handlers
exist, keys under the deployment's prefix, claims of dead nodes reading as free, the lease of a
node cut off from Redis, and recovery after its connections are cut or Redis itself goes away
(a private redis-server for that one: the shared server is never restarted)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from rooms.broker import BrokerUnavailable, broker_from_url
from rooms.broker.redis import RedisBroker
from tests.redis_support import (
    REDIS_URL,
    PrivateRedis,
    RedisProxy,
    delete_prefix,
    redis_prefix,
)
from tests.support import ROOT, free_port

WAIT = 5.0  # seconds; every wait below is bounded by this


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_prefix() as p:
        yield p


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    """A plain client on the shared Redis, to look at what the brokers did."""
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex}"


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.got: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.got.append(data)
        self.queue.put_nowait(data)

    async def until(self, marker: bytes, wait: float = WAIT) -> list[bytes]:
        async def inner() -> list[bytes]:
            out = []
            while True:
                out.append(await self.queue.get())
                if out[-1] == marker:
                    return out

        return await asyncio.wait_for(inner(), wait)


async def eventually(check: Callable[[], Awaitable[bool]], wait: float = WAIT) -> float:
    """Poll ``check`` until it holds; the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > wait:
            raise AssertionError(f"condition not met within {wait}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def sub_clients(admin: Redis, node_id: str) -> list[dict[str, str]]:
    """The CLIENT LIST rows of a node's pub/sub connection(s)."""
    rows = (await admin.execute_command("CLIENT", "LIST")).decode().splitlines()
    parsed = [dict(f.split("=", 1) for f in row.split(" ") if "=" in f) for row in rows]
    return [r for r in parsed if r.get("name") == f"menteo-sub-{node_id}"]


# pub/sub ------------------------------------------------------------------------------------------
async def test_subscribed_at_redis_only_while_handlers_exist(prefix: str, admin: Redis) -> None:
    one, two = name("one"), name("two")
    full_one, full_two = f"{prefix}ch:{one}".encode(), f"{prefix}ch:{two}".encode()

    async def channels() -> list[bytes]:
        return sorted(await admin.pubsub_channels(prefix + "*"))

    async with broker_from_url(REDIS_URL, prefix=prefix) as node:
        assert isinstance(node, RedisBroker)
        assert await channels() == []
        await node.ping()
        h1, h2, h3 = Inbox(), Inbox(), Inbox()
        await node.subscribe(one, h1)
        await node.subscribe(one, h2)
        assert await channels() == [full_one]
        await node.subscribe(two, h3)
        assert await channels() == sorted([full_one, full_two])
        # one connection carries every channel of the node, each subscribed once
        assert dict(await admin.pubsub_numsub(full_one, full_two)) == {full_one: 1, full_two: 1}
        [row] = await sub_clients(admin, node.node_id)
        assert row["sub"] == "2"
        assert int(row["id"]) == node.pubsub_client_id

        await node.unsubscribe(one, h1)
        assert await channels() == sorted([full_one, full_two])  # h2 still listens
        await node.unsubscribe(one, h2)
        assert await channels() == [full_two]
        await node.unsubscribe(two, h3)
        assert await channels() == []
        [row] = await sub_clients(admin, node.node_id)
        assert row["sub"] == "0"

        # and back: a fresh handler subscribes again and gets messages
        again = Inbox()
        await node.subscribe(one, again)
        assert await channels() == [full_one]
        node.publish(one, b"\x00\xffback")
        assert await again.until(b"\x00\xffback") == [b"\x00\xffback"]
        assert h1.got == h2.got == h3.got == []
    assert await channels() == []
    assert await sub_clients(admin, node.node_id) == []


async def test_subscribe_and_unsubscribe_racing_on_one_channel(prefix: str, admin: Redis) -> None:
    channel = name("room")
    full = f"{prefix}ch:{channel}".encode()
    async with (
        broker_from_url(REDIS_URL, prefix=prefix) as a,
        broker_from_url(REDIS_URL, prefix=prefix) as b,
    ):
        handlers = [Inbox() for _ in range(20)]
        for h in handlers[:10]:
            await b.subscribe(channel, h)
        calls = [b.unsubscribe(channel, h) for h in handlers[:10]]
        calls += [b.subscribe(channel, h) for h in handlers[10:]]
        await asyncio.wait_for(asyncio.gather(*calls), WAIT)
        assert await admin.pubsub_channels(prefix + "*") == [full]
        a.publish(channel, b"after")
        for h in handlers[10:]:
            assert await h.until(b"after") == [b"after"]
        assert all(h.got == [] for h in handlers[:10])


# keys ---------------------------------------------------------------------------------------------
async def test_every_key_and_channel_is_under_the_prefix(admin: Redis) -> None:
    tag = uuid.uuid4().hex
    session, room, channel = f"s-{tag}", f"r-{tag}", f"c-{tag}"
    async with redis_prefix() as p1, redis_prefix() as p2:
        async with (
            broker_from_url(REDIS_URL, prefix=p1) as one,
            broker_from_url(REDIS_URL, prefix=p2) as two,
        ):
            on_one, on_two = Inbox(), Inbox()
            await one.subscribe(channel, on_one)
            await two.subscribe(channel, on_two)
            # the same names in two deployments do not meet
            assert await one.allocate_seq(session, "u\x00c1", 0) == (1, True)
            assert await one.allocate_seq(session, None, 0) == (2, True)
            assert await two.allocate_seq(session, "u\x00c1", 0) == (1, True)
            assert await one.claim(room, "u", "conn-1") is None
            assert await two.claim(room, "u", "conn-2") is None
            assert await one.holder(room, "u") == "conn-1"
            assert await two.holder(room, "u") == "conn-2"
            one.publish(channel, b"for one")
            assert await on_one.until(b"for one") == [b"for one"]
            two.publish(channel, b"for two")  # "for one" is past already: Redis saw it first
            assert await on_two.until(b"for two") == [b"for two"]

            keys = sorted([k.decode() async for k in admin.scan_iter(match=f"*{tag}*")])
            assert keys == sorted(
                f"{p}{kind}:{{{ident}}}"
                for p in (p1, p2)
                for kind, ident in (("seq", session), ("seqkeys", session), ("claims", room))
            )
            for node in (one, two):
                found = [k.decode() async for k in admin.scan_iter(match=f"*{node.node_id}*")]
                assert found == [f"{node.prefix}node:{node.node_id}"]
            chans = sorted(c.decode() for c in await admin.pubsub_channels(f"*{tag}*"))
            assert chans == sorted(f"{p}ch:{channel}" for p in (p1, p2))
            # retry keys and counters expire on their own, should a session never be forgotten
            for key in keys:
                if ":claims:" not in key:
                    assert 0 < await admin.pttl(key) <= 24 * 3600 * 1000
            await one.forget(session)
            assert await admin.exists(f"{p1}seq:{{{session}}}", f"{p1}seqkeys:{{{session}}}") == 0
            assert await two.allocate_seq(session, None, 0) == (2, True)  # p2 untouched
            assert await one.allocate_seq(session, "u\x00c1", 0) == (1, True)  # p1 starts over
        # a clean exit takes the heartbeats away; claims, counters stay until released/forgotten
        left = [k.decode() async for k in admin.scan_iter(match=f"{p1}node:*")]
        assert left == []
        assert await delete_prefix(p1) == 3
        assert await delete_prefix(p2) == 3


# liveness -----------------------------------------------------------------------------------------
DEAD_NODE = """
import asyncio, sys
from rooms.broker.redis import RedisBroker

async def main():
    url, prefix, room = sys.argv[1:4]
    async with RedisBroker(url, prefix=prefix, node_ttl=0.6) as node:
        assert await node.claim(room, "mentee", "conn-dead") is None
        print(node.node_id, flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_dead_nodes_claims_read_as_free(prefix: str, admin: Redis) -> None:
    room = name("room")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEAD_NODE,
        REDIS_URL,
        prefix,
        room,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        dead_id = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert dead_id
        async with broker_from_url(REDIS_URL, prefix=prefix, node_ttl=0.6) as live:
            assert isinstance(live, RedisBroker)
            assert await live.holder(room, "mentee") == "conn-dead"
            assert await live.node_alive(dead_id)
            # the heartbeat is refreshed: well past one TTL, the claim still holds
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                assert await live.holder(room, "mentee") == "conn-dead"
                await asyncio.sleep(0.1)

            proc.send_signal(signal.SIGKILL)  # no clean exit: nothing is released
            await asyncio.wait_for(proc.communicate(), WAIT)  # its pipe drained, it is reaped
            assert await admin.hget(f"{prefix}claims:{{{room}}}", "mentee") is not None

            async def gone() -> bool:
                return await live.holder(room, "mentee") is None

            took = await eventually(gone)
            assert took < 0.6 + 1.0  # within the TTL (plus slack for a busy machine)
            assert not await live.node_alive(dead_id)
            # the dead claim was tidied away, and claiming does not "replace" a dead connection
            assert await admin.hget(f"{prefix}claims:{{{room}}}", "mentee") is None
            assert await live.claim(room, "mentee", "conn-new") is None
            assert await live.holder(room, "mentee") == "conn-new"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_claim_over_a_dead_node_replaces_nothing(prefix: str, admin: Redis) -> None:
    room = name("room")
    async with broker_from_url(REDIS_URL, prefix=prefix) as live:
        # a claim written by a node that never beats (as after a crash and TTL expiry)
        await admin.hset(f"{prefix}claims:{{{room}}}", "u", "deadbeef0000/conn-old")
        assert live.node_id != "deadbeef0000"
        assert await live.claim(room, "u", "conn-new") is None
        assert await live.holder(room, "u") == "conn-new"
        assert isinstance(live, RedisBroker)
        assert await live.claims(room) == {"u": (live.node_id, "conn-new")}


async def test_a_node_cut_off_from_redis_loses_its_lease_and_gets_it_back(
    prefix: str, admin: Redis
) -> None:
    ttl = 0.6
    room = name("room")
    proxy = await RedisProxy().open()
    lease: asyncio.Queue[bool] = asyncio.Queue()
    try:
        async with RedisBroker(proxy.url, prefix=prefix, node_ttl=ttl) as node:
            node.on_lease = lease.put_nowait
            assert node.leased
            heartbeat = f"{prefix}node:{node.node_id}"
            first = await admin.get(heartbeat)
            assert first is not None

            async def renewed() -> bool:
                return await admin.get(heartbeat) not in (None, first)

            await eventually(renewed)  # the heartbeat goes through the proxy
            assert await node.claim(room, "u", "conn-1") is None
            assert node.leased and lease.empty()

            cut_at = time.monotonic()
            await proxy.cut()
            assert await asyncio.wait_for(lease.get(), WAIT) is False
            took = time.monotonic() - cut_at
            assert took < ttl + ttl / 3 + 0.3, took  # the last heartbeat that landed + TTL
            assert not node.leased
            with pytest.raises(BrokerUnavailable):
                await node.ping()

            async def expired() -> bool:  # and the other nodes take it for dead
                return not await admin.exists(heartbeat)

            await eventually(expired)
            assert not node.leased and lease.empty()

            back_at = time.monotonic()
            await proxy.open()
            assert await asyncio.wait_for(lease.get(), WAIT) is True
            assert time.monotonic() - back_at < 2 * ttl / 3 + 0.5  # the next heartbeat
            assert node.leased
            assert await admin.exists(heartbeat)

            # the claim held when the lease was lost is void: released, not put back. The
            # reader's reconnect beats too: its beat can report the lease back while the
            # heartbeat task's release of the void claim is still on its way to Redis
            async def released() -> bool:
                return await admin.hget(f"{prefix}claims:{{{room}}}", "u") is None

            await eventually(released)
            assert await node.holder(room, "u") is None
            assert await node.claim(room, "u", "conn-2") is None
            assert await node.holder(room, "u") == "conn-2"
            assert lease.empty()
        assert lease.empty()  # a clean exit reports nothing
    finally:
        await proxy.cut()


async def test_claims_redis_lost_are_put_back_while_the_lease_holds(
    prefix: str, admin: Redis
) -> None:
    room = name("room")
    claims = f"{prefix}claims:{{{room}}}"
    async with RedisBroker(REDIS_URL, prefix=prefix, node_ttl=0.6) as node:
        calls: list[bool] = []
        node.on_lease = calls.append
        assert await node.claim(room, "u", "conn-1") is None
        # Redis loses the heartbeat and the claims (a restart without persistence)
        await admin.delete(f"{prefix}node:{node.node_id}", claims)

        async def put_back() -> bool:
            # the node counts the reclaim after Redis answers, so wait for both
            return node.reclaims == 1 and (
                await admin.hget(claims, "u") == f"{node.node_id}/conn-1".encode()
            )

        await eventually(put_back)  # within one heartbeat period
        assert node.leased and calls == []


async def test_a_failing_lease_hook_does_not_stop_the_heartbeat(prefix: str) -> None:
    proxy = await RedisProxy().open()
    calls: list[bool] = []
    back = asyncio.Event()

    def hook(leased: bool) -> None:
        calls.append(leased)
        if leased and False in calls:
            back.set()
        raise RuntimeError("hook bug")

    try:
        async with RedisBroker(proxy.url, prefix=prefix, node_ttl=1.0) as node:
            node.on_lease = hook
            await proxy.cut()

            async def lost() -> bool:
                return bool(calls) and calls[-1] is False and not node.leased

            await eventually(lost)
            await proxy.open()
            await asyncio.wait_for(back.wait(), WAIT)  # the heartbeat went on after the bug
            assert calls[-1] is True
            # each call reports a change: never the same state twice in a row
            assert all(a != b for a, b in itertools.pairwise(calls))
    finally:
        await proxy.cut()


async def test_a_cancel_turned_into_a_timeout_still_stops_the_node(prefix: str) -> None:
    """A library can report our own cancel as a timeout (CI hung 180 s in a node's exit
    this way): the heartbeat must stop all the same, and the exit stays bounded."""
    node = RedisBroker(REDIS_URL, prefix=prefix, node_ttl=3.0)
    await node.__aenter__()
    real_set = node.upkeep.set
    beating = asyncio.Event()

    async def set_that_hides_cancel(*args: object, **kwargs: object) -> object:
        beating.set()
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            raise TimeoutError from None  # what the library did with our cancel
        return await real_set(*args, **kwargs)  # type: ignore[arg-type]

    node.upkeep.set = set_that_hides_cancel  # type: ignore[method-assign]
    await asyncio.wait_for(beating.wait(), WAIT)
    node.upkeep.set = real_set  # type: ignore[method-assign]
    heart = node._heart
    assert heart is not None
    started = time.monotonic()
    await asyncio.wait_for(node.__aexit__(None, None, None), 2 * WAIT)
    assert heart.done()
    assert time.monotonic() - started < WAIT


# resilience ---------------------------------------------------------------------------------------
async def test_killed_pubsub_connection_resubscribes_and_delivers(
    prefix: str, admin: Redis
) -> None:
    one, two = name("one"), name("two")
    reconnected = asyncio.Event()
    calls: list[str] = []

    async def on_reconnect() -> None:
        calls.append("reconnect")
        reconnected.set()

    async with (
        broker_from_url(REDIS_URL, prefix=prefix) as a,
        broker_from_url(REDIS_URL, prefix=prefix) as b,
    ):
        assert isinstance(b, RedisBroker)
        b.on_reconnect = on_reconnect
        in_one, in_two = Inbox(), Inbox()
        await b.subscribe(one, in_one)
        await b.subscribe(two, in_two)
        a.publish(one, b"before")
        assert await in_one.until(b"before") == [b"before"]
        old_id = b.pubsub_client_id
        assert old_id is not None

        killed = await admin.execute_command("CLIENT", "KILL", "ID", old_id)
        assert killed == 1
        await asyncio.wait_for(reconnected.wait(), WAIT)
        assert calls == ["reconnect"]
        assert b.reconnects == 1
        assert b.pubsub_client_id not in (None, old_id)
        [row] = await sub_clients(admin, b.node_id)
        assert int(row["id"]) == b.pubsub_client_id
        assert row["sub"] == "2"
        # subscribed again by the time the hook runs: what is published now arrives
        a.publish(one, b"after-1")
        a.publish(two, b"after-2")
        b.publish(one, b"from-b")
        assert await in_one.until(b"from-b") == [b"after-1", b"from-b"]
        assert await in_two.until(b"after-2") == [b"after-2"]
        assert calls == ["reconnect"]


async def test_every_connection_of_a_node_killed(prefix: str, admin: Redis) -> None:
    channel = name("room")
    async with (
        broker_from_url(REDIS_URL, prefix=prefix) as a,
        broker_from_url(REDIS_URL, prefix=prefix) as b,
    ):
        inbox = Inbox()
        await b.subscribe(channel, inbox)
        session = name("s")
        assert await a.allocate_seq(session, None, 0) == (1, True)
        a.publish(channel, b"warm")
        await inbox.until(b"warm")
        rows = (await admin.execute_command("CLIENT", "LIST")).decode().splitlines()
        ids = [
            dict(f.split("=", 1) for f in row.split(" ") if "=" in f)["id"]
            for row in rows
            if f"name=menteo-{a.node_id}" in row or f"name=menteo-sub-{a.node_id}" in row
        ]
        assert len(ids) >= 2  # its pub/sub connection and at least one command connection
        for cid in ids:
            await admin.execute_command("CLIENT", "KILL", "ID", cid)
        # the pool notices a dead connection before using it: no error reaches the caller
        assert await a.allocate_seq(session, None, 0) == (2, True)
        assert await a.claim(name("room"), "u", "c") is None

        async def delivered() -> bool:
            a.publish(channel, b"probe")
            with contextlib.suppress(TimeoutError):
                await inbox.until(b"probe", wait=0.2)
                return True
            return False

        await eventually(delivered)


async def test_redis_unreachable_publish_drops_and_calls_raise() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    async with broker_from_url(url, prefix="unused:") as node:
        assert isinstance(node, RedisBroker)
        assert not node.connected
        for i in range(5):
            node.publish("room", b"m%d" % i)  # never raises, never blocks

        async def all_dropped() -> bool:
            return node.dropped == 5

        await eventually(all_dropped)
        await asyncio.wait_for(node.subscribe("room", Inbox()), WAIT)  # recorded, not awaited
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: node.allocate_seq("s", None, 0),
            lambda: node.allocate_seq("s", "k", 0),
            lambda: node.forget("s"),
            lambda: node.claim("room", "u", "c"),
            lambda: node.release("room", "u", "c"),
            lambda: node.holder("room", "u"),
            lambda: node.ping(),
        ]
        for call in calls:
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(call(), WAIT)
    assert time.monotonic() - started < 3 * WAIT


async def test_redis_going_away_and_coming_back(tmp_path: Path) -> None:
    server = await PrivateRedis(tmp_path).start()
    try:
        reconnected = asyncio.Event()
        async with (
            broker_from_url(server.url, prefix="t:") as a,
            broker_from_url(server.url, prefix="t:") as b,
        ):
            assert isinstance(b, RedisBroker)
            b.on_reconnect = reconnected.set
            inbox = Inbox()
            await b.subscribe("room", inbox)
            assert await a.allocate_seq("s", "u\x00c1", 0) == (1, True)
            a.publish("room", b"before")
            await inbox.until(b"before")

            server.kill()
            # while Redis is away: publish neither raises nor blocks; coordination raises
            dropped = a.dropped
            a.publish("room", b"lost")

            async def lost() -> bool:
                return a.dropped > dropped

            await eventually(lost)
            with pytest.raises(BrokerUnavailable):
                await a.allocate_seq("s", None, 0)
            with pytest.raises(BrokerUnavailable):
                await a.claim("room", "u", "c")
            with pytest.raises(BrokerUnavailable):
                await a.ping()

            async def noticed() -> bool:
                return not b.connected

            await eventually(noticed)
            assert not reconnected.is_set()

            await server.start()  # an empty Redis on the same port
            await asyncio.wait_for(reconnected.wait(), WAIT)
            assert b.reconnects == 1
            assert b.connected
            await b.ping()
            # a floor from the store puts seq back on track after Redis lost its counter
            assert await a.allocate_seq("s", None, 1) == (2, True)

            async def delivered() -> bool:
                a.publish("room", b"probe")
                with contextlib.suppress(TimeoutError):
                    await inbox.until(b"probe", wait=0.2)
                    return True
                return False

            took = await eventually(delivered)
            assert took < 3.0
            assert b"lost" not in inbox.got
    finally:
        server.kill()


async def test_the_lease_and_publishing_do_not_queue_behind_the_shared_pool(
    prefix: str, admin: Redis
) -> None:
    """Every connection of the shared pool is busy (under load, callers queue for one): the
    heartbeat still lands and what is published still goes out, on connections of their own.
    A heartbeat that queued there lost the node's lease, and every room with it."""

    class Small(RedisBroker):
        max_connections = 2

    channel = name("ch")
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with Small(REDIS_URL, prefix=prefix, node_ttl=0.6) as node:
        lost: list[bool] = []
        node.on_lease = lost.append
        await node.subscribe(channel, got.put_nowait)
        never = f"{prefix}never"

        async def hold() -> None:  # one connection of the pool, blocked in Redis
            await node.redis.blpop([never], timeout=30)

        busy = [asyncio.create_task(hold()) for _ in range(2)]
        try:

            async def pool_taken() -> bool:
                rows = (await admin.execute_command("CLIENT", "LIST")).decode().splitlines()
                mine = [r for r in rows if f" name=menteo-{node.node_id} " in f" {r} "]
                return sum("cmd=blpop" in r for r in mine) == 2

            await eventually(pool_taken)
            beats: set[bytes | str] = set()
            heartbeat = f"{prefix}node:{node.node_id}"

            async def beating() -> bool:  # four beats: past node_ttl
                value = await admin.get(heartbeat)
                if value is not None:
                    beats.add(value)
                return len(beats) >= 4

            await eventually(beating)
            assert node.leased and lost == []
            node.publish(channel, b"still delivered")
            assert await asyncio.wait_for(got.get(), WAIT) == b"still delivered"
        finally:
            for task in busy:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)


async def test_allocations_asked_together_share_one_round_trip(prefix: str) -> None:
    """A hundred seq allocations asked for in one turn of the loop go to Redis in one
    pipeline: one connection taken from the pool, not a hundred (under load, each call
    holding a connection of its own ran the pool dry and chats were refused)."""
    session = name("session")
    async with RedisBroker(REDIS_URL, prefix=prefix) as node:
        pool = node.redis.connection_pool
        taken = 0
        get_connection = pool.get_connection

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal taken
            taken += 1
            return await get_connection(*args, **kwargs)

        pool.get_connection = counted  # type: ignore[method-assign]
        try:
            got = await asyncio.gather(
                *(node.allocate_seq(session, f"k{i}", 0) for i in range(100)),
                node.allocate_seq(session, "k7", 0),  # a retry of one of them
            )
        finally:
            del pool.get_connection  # back to the class's method
        assert taken == 1
        assert sorted(seq for seq, new in got[:100]) == list(range(1, 101))
        assert all(new for _, new in got[:100])
        assert got[100] == (got[7][0], False)


async def test_an_allocation_pending_as_the_broker_stops_is_answered(prefix: str) -> None:
    """Asked for just before the node stops: the caller gets BrokerUnavailable, never a wait
    for ever (the batch's task may be cancelled before it has run)."""
    node = RedisBroker(REDIS_URL, prefix=prefix)
    await node.__aenter__()
    pending = asyncio.ensure_future(node.allocate_seq(name("session"), "k", 0))
    await asyncio.sleep(0)  # the call is queued for the end of this turn
    await node.__aexit__(None, None, None)
    try:
        seq, new = await asyncio.wait_for(pending, WAIT)
    except BrokerUnavailable:
        return  # stopped first
    assert seq == 1 and new  # or sent before the stop


async def test_allocations_go_on_after_redis_forgets_its_scripts(prefix: str, admin: Redis) -> None:
    """A Redis restarted (or SCRIPT FLUSH) no longer knows the seq script: the pipelined
    calls come back NOSCRIPT, not run, and are sent again with the script."""
    session = name("session")
    async with RedisBroker(REDIS_URL, prefix=prefix) as node:
        assert await node.allocate_seq(session, "a", 0) == (1, True)
        await admin.script_flush()
        got = await asyncio.gather(*(node.allocate_seq(session, k, 0) for k in ("b", "c", "a")))
        assert got == [(2, True), (3, True), (1, False)]
