"""The broker seam on Redis: fan-out between nodes, seq allocation, claims and node liveness.

Layout (every name starts with the deployment's prefix, ``menteo:`` by default)::

    {prefix}ch:{channel}            pub/sub channel of a room
    {prefix}seq:{session}           the session's last seq (string counter)
    {prefix}seqkeys:{session}       hash: retry key (sender and chat id) -> its seq
    {prefix}seqkeys-old:{session}   the previous generation of that hash (bounded window)
    {prefix}claims:{room}           hash: user -> "{node}/{conn}"
    {prefix}node:{node}             heartbeat, expires after the node TTL

The braces make the keys of one session (or room) share a hash slot, should they ever move to
Redis Cluster. Payloads are bytes end to end: nothing is decoded to text.

One pub/sub connection per node carries every room channel the node has handlers for; it
subscribes when the first handler of a channel comes and unsubscribes when the last one goes.
When that connection breaks, a reader task reconnects with backoff, subscribes again to every
current channel and then calls ``on_reconnect`` (messages published meanwhile are lost: the
store is the source of truth, and the hub repairs from it). ``publish`` never blocks and never
raises: messages go through one ordered queue drained by one publisher task that pipelines the
``PUBLISH`` commands; while Redis is down they are dropped and counted. The coordination calls
(``allocate_seq``, ``forget``, ``claim``, ``release``, ``holder``) raise
:class:`~rooms.broker.base.BrokerUnavailable` while Redis is down.

A claim records the node that made it; every node keeps a heartbeat key with an expiry, so a
claim whose node stopped beating reads as free: the members of a dead node are seen as gone.
A node remembers the claims it holds: when a heartbeat finds its previous one gone (Redis
restarted empty, or lost the key), it puts back those of its claims that are missing, within
one heartbeat period (``node_ttl / 3``), before other nodes' sweeps (two, ``node_ttl / 2``
apart) could take its live members for the members of a dead node.

The heartbeat is also this node's lease: :attr:`RedisBroker.leased` holds while the last
heartbeat write that succeeded started less than ``node_ttl`` ago (on a monotonic clock, so
never later than Redis expires the key). A timer reports the loss to ``on_lease`` the moment
the lease runs out, and the first heartbeat that lands afterwards reports it back. The claims
held when it was lost are void (other nodes may have swept those members already): they are
released when it is back, never put back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from persistence.cancel import reraise_cancel
from rooms.broker.base import BrokerUnavailable, Handler, _safe_call

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "menteo:"
DEFAULT_NODE_TTL = 10.0
SEQ_TTL_MS = 24 * 3600 * 1000  # a session's counter and retry keys outlive any real session
SEP = "/"  # between node id and connection id in a claim; node ids never contain it

# KEYS: counter, retry-key hash, previous retry-key hash. ARGV: floor, ttl ms, strict, window,
# [retry key]. strict = '1': if there is no counter (a new session, or Redis lost it), allocate
# nothing and return {-1, 0}, so that the caller can find the floor in the store first.
# Retry keys live in two generations of at most `window` each: when the current hash is full it
# becomes the previous one (dropping the older), so a session's keys stay bounded.
ALLOCATE_SEQ = """
local key = ARGV[5]
if key then
  local seen = redis.call('HGET', KEYS[2], key) or redis.call('HGET', KEYS[3], key)
  if seen then return {tonumber(seen), 0} end
end
local raw = redis.call('GET', KEYS[1])
if not raw and ARGV[3] == '1' then return {-1, 0} end
local current = tonumber(raw or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
local seq = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if key then
  redis.call('HSET', KEYS[2], key, seq)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
    redis.call('RENAME', KEYS[2], KEYS[3])
  end
end
return {seq, 1}
"""

# KEYS: claims hash. ARGV: user, "node/conn". Returns the value it replaced.
CLAIM = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
"""

# KEYS: claims hash. ARGV: user, conn. Deletes the claim only if that conn holds it.
RELEASE = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local at = string.find(value, '/', 1, true)
if at and string.sub(value, at + 1) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class RedisBroker:
    """A node of a cluster whose nodes share one Redis (see the module docstring)."""

    # publisher
    batch_messages = 512
    batch_bytes = 1 << 20
    max_pending = 50_000  # queued messages beyond this are dropped while Redis is down
    # timeouts and backoff, in seconds
    command_timeout = 5.0
    connect_timeout = 2.0
    max_connections = 64  # per node; callers beyond that wait (up to command_timeout)
    key_window = 256  # retry keys per session and generation (two generations are kept)
    backoff_min = 0.05
    backoff_max = 2.0

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_ttl: float = DEFAULT_NODE_TTL,
        node_id: str | None = None,
        on_reconnect: Callable[[], object] | None = None,
    ) -> None:
        if node_ttl <= 0:
            raise ValueError("node_ttl must be positive")
        self.url = url
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.node_id = node_id or uuid.uuid4().hex[:12]
        if SEP in self.node_id:
            raise ValueError(f"a node id cannot contain {SEP!r}")
        self.on_reconnect = on_reconnect
        """Called (sync, or a coroutine function) after a lost pub/sub connection is back and
        subscribed again to every current channel: whatever was published meanwhile is lost."""
        self.on_lease: Callable[[bool], object] | None = None
        """Called (sync) with ``False`` when the lease is lost and ``True`` when it is back."""
        # counters, for logs and metrics
        self.dropped = 0  # messages not published because Redis was down or the queue full
        self.reconnects = 0  # pub/sub connections re-established after a loss
        self.pubsub_client_id: int | None = None  # CLIENT ID of the current pub/sub connection
        self.reclaims = 0  # times this node put back claims that Redis had lost

        self._redis: Redis | None = None
        self._upkeep: Redis | None = None
        self._handlers: dict[bytes, list[Handler]] = {}
        # pub/sub connection state; changed only while holding _sub_lock
        self._sub: AbstractConnection | None = None
        self._sub_lock = asyncio.Lock()
        self._server: set[bytes] = set()  # channels subscribed (or being subscribed) at Redis
        self._acks: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._ready: dict[bytes, asyncio.Future[None]] = {}  # latest SUBSCRIBE per channel
        # publisher
        self._out: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._beat_ok = False  # whether the last heartbeat write succeeded (for the logs)
        self._beat_timeout = min(node_ttl / 3, self.command_timeout)
        self._last_beat: float | None = None  # monotonic start of the last heartbeat that landed
        self._reported: bool | None = None  # the lease as last reported; None: not started
        self._lease_timer: asyncio.TimerHandle | None = None
        self._claimed: dict[tuple[str, str], str] = {}  # (room, user) -> conn, held by this node
        self._void: dict[tuple[str, str], str] = {}  # claims held when the lease was lost
        self._reclaim_pending = False
        self._publish_down = False
        # seq allocations asked for in this turn of the loop, sent together at its end
        self._allocations: list[tuple[list[Any], asyncio.Future[Any]]] = []

    # keys -----------------------------------------------------------------------------------------
    def _channel(self, channel: str) -> bytes:
        return f"{self.prefix}ch:{channel}".encode()

    def _seq_key(self, session_id: str) -> str:
        return f"{self.prefix}seq:{{{session_id}}}"

    def _seqkeys_key(self, session_id: str) -> str:
        return f"{self.prefix}seqkeys:{{{session_id}}}"

    def _oldkeys_key(self, session_id: str) -> str:
        return f"{self.prefix}seqkeys-old:{{{session_id}}}"

    def _claims_key(self, room: str) -> str:
        return f"{self.prefix}claims:{{{room}}}"

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the broker is not started (use `async with`)")
        return self._redis

    @property
    def upkeep(self) -> Redis:
        """The heartbeat's and the publisher's own connections (not the shared pool's)."""
        if self._upkeep is None:
            raise RuntimeError("the broker is not started (use `async with`)")
        return self._upkeep

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up (for readiness checks)."""
        return self._sub is not None and self._sub.is_connected

    @property
    def leased(self) -> bool:
        """Whether this node's last heartbeat that landed is younger than ``node_ttl``."""
        last = self._last_beat
        return last is not None and time.monotonic() - last < self.node_ttl

    # lifecycle ------------------------------------------------------------------------------------
    def _client(self, connections: int) -> Redis:
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=connections,
            timeout=self.command_timeout,
            decode_responses=False,
            protocol=2,  # pub/sub messages arrive as plain replies on our own connection
            socket_timeout=self.command_timeout,
            socket_connect_timeout=self.connect_timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"menteo-{self.node_id}",
        )
        return Redis.from_pool(pool)  # owns the pool: closing it closes them all

    async def __aenter__(self) -> RedisBroker:
        # No retries inside redis-py: a retried script or pipeline could run twice (a seq
        # consumed twice, a message published twice). Failures surface here and are handled.
        # A bounded pool that makes callers wait for a free connection: a burst of joins or
        # leaves must queue up, not fail with "Too many connections".
        self._redis = self._client(self.max_connections)
        # The heartbeat and the publisher, one connection each, never queued behind the
        # callers of the shared pool: under load (S3 on a slow machine) a heartbeat that
        # waited there for a connection lost the node's lease, and with it every room.
        self._upkeep = self._client(2)
        self._allocate = self._redis.register_script(ALLOCATE_SEQ)
        self._claim = self._redis.register_script(CLAIM)
        self._release = self._redis.register_script(RELEASE)
        await self._beat()
        try:
            await self._connect_sub()
            connected = True
        except (RedisError, OSError) as exc:
            log.error("redis broker: no pub/sub connection to %s yet: %s", self.url, exc)
            connected = False
        self._reader = asyncio.create_task(self._read_forever(connected), name="broker-reader")
        self._publisher = asyncio.create_task(self._publish_forever(), name="broker-publisher")
        self._heart = asyncio.create_task(self._beat_forever(), name="broker-heartbeat")
        self._reported = self.leased
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._reported = None  # a clean exit reports nothing
        if self._lease_timer is not None:
            self._lease_timer.cancel()
            self._lease_timer = None
        self._wake.set()
        if self._publisher is not None:  # let what is queued go out, within a bound
            await asyncio.wait([self._publisher], timeout=self.connect_timeout)
        tasks = [t for t in (self._reader, self._publisher, self._heart) if t is not None]
        tasks += self._side_tasks
        for task in tasks:
            task.cancel()
        # bounded: a library that turns our cancel into a timeout must not hold the exit
        _, stuck = await asyncio.wait(tasks, timeout=self.command_timeout) if tasks else ((), ())
        for task in stuck:
            log.error("redis broker: task %s did not stop when cancelled", task.get_name())
        self._reader = self._publisher = self._heart = None
        self._side_tasks.clear()
        self._handlers.clear()
        self._claimed.clear()
        self._void.clear()
        self._last_beat = None
        async with self._sub_lock:
            await self._drop_sub()
        if self._redis is not None:
            try:  # a clean exit: our claims read as free at once
                await self._redis.delete(self._node_key(self.node_id))
            except RedisError as exc:
                log.warning("redis broker: could not remove the heartbeat: %s", exc)
            await self._redis.aclose()
            self._redis = None
        if self._upkeep is not None:
            await self._upkeep.aclose()
            self._upkeep = None

    # publish --------------------------------------------------------------------------------------
    def publish(self, channel: str, data: bytes) -> None:
        if self._closing or len(self._out) >= self.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("redis broker: dropped a message (%d so far)", self.dropped)
            return
        self._out.append((self._channel(channel), bytes(data)))
        self._wake.set()

    async def _publish_forever(self) -> None:
        backoff = self.backoff_min
        while True:
            if not self._out:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[tuple[bytes, bytes]] = []
            size = 0
            while self._out and len(batch) < self.batch_messages and size < self.batch_bytes:
                item = self._out.popleft()
                batch.append(item)
                size += len(item[1])
            try:
                async with self.upkeep.pipeline(transaction=False) as pipe:
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
            except Exception as exc:  # Redis down, or a bug: either way the node goes on
                reraise_cancel(exc)
                # Part of the batch may have gone out; sending it again could double it.
                self.dropped += len(batch)
                if not self._publish_down:
                    log.warning("redis broker: publish failed, dropping messages: %r", exc)
                self._publish_down = True
                if self._closing:
                    self.dropped += len(self._out)
                    self._out.clear()
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
            else:
                if self._publish_down:
                    log.info("redis broker: publishing again (%d dropped so far)", self.dropped)
                self._publish_down = False
                backoff = self.backoff_min

    # subscribe ------------------------------------------------------------------------------------
    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Effective when it returns while Redis is up; while it is down, the channel is
        subscribed on reconnection (then ``on_reconnect`` is called)."""
        full = self._channel(channel)
        self._handlers.setdefault(full, []).append(handler)
        if full not in self._server:
            async with self._sub_lock:
                conn = self._sub
                if full in self._handlers and full not in self._server and self._usable(conn):
                    assert conn is not None
                    self._server.add(full)
                    self._ready[full] = self._expect_ack(full)
                    await self._send(conn, "SUBSCRIBE", full)
        await self._await(self._ready.get(full))

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        full = self._channel(channel)
        handlers = self._handlers.get(full, [])
        if handler in handlers:
            handlers.remove(handler)
        if handlers:
            return
        self._handlers.pop(full, None)
        if full not in self._server:
            return
        fut = None
        async with self._sub_lock:
            conn = self._sub
            if full not in self._handlers and full in self._server and self._usable(conn):
                assert conn is not None
                self._server.discard(full)
                self._ready.pop(full, None)
                fut = self._expect_ack(full)
                await self._send(conn, "UNSUBSCRIBE", full)
        await self._await(fut)

    def _usable(self, conn: AbstractConnection | None) -> bool:
        # A disconnected redis-py connection would reconnect by itself on send: never let it.
        return conn is not None and conn is self._sub and conn.is_connected

    def _expect_ack(self, full: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.setdefault(full, collections.deque()).append(fut)
        return fut

    async def _send(self, conn: AbstractConnection, *args: Any) -> None:
        try:
            await conn.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            # the reader sees the broken connection too and reconnects
            log.warning("redis broker: pub/sub send failed: %s", exc)

    async def _await(self, fut: asyncio.Future[None] | None) -> None:
        if fut is None or fut.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.command_timeout)
        except TimeoutError:
            log.warning("redis broker: no subscription reply within %ss", self.command_timeout)

    # the pub/sub connection -----------------------------------------------------------------------
    async def _connect_sub(self) -> None:
        """Open a pub/sub connection and subscribe to every channel that has handlers."""
        async with self._sub_lock:
            await self._drop_sub()
            pool = self.redis.connection_pool
            conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("CLIENT", "SETNAME", f"menteo-sub-{self.node_id}")
                await conn.read_response(timeout=self.command_timeout)
                await conn.send_command("CLIENT", "ID")
                client_id = await conn.read_response(timeout=self.command_timeout)
                if not isinstance(client_id, int):
                    raise RedisError(f"unexpected CLIENT ID reply {client_id!r}")
                channels = sorted(self._handlers)
                for full in channels:
                    self._server.add(full)
                    self._ready[full] = self._expect_ack(full)
                for i in range(0, len(channels), 1000):
                    await conn.send_command("SUBSCRIBE", *channels[i : i + 1000])
            except BaseException:
                self._fail_waiters()
                self._server.clear()
                await conn.disconnect(nowait=True)
                raise
            self._sub = conn
            self.pubsub_client_id = client_id

    async def _drop_sub(self) -> None:
        """Forget the pub/sub connection (call with ``_sub_lock`` held)."""
        conn, self._sub = self._sub, None
        self._server.clear()
        self._fail_waiters()
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            except Exception as exc:  # closing a broken socket may complain; it is gone anyway
                log.debug("redis broker: closing the pub/sub connection: %r", exc)

    def _fail_waiters(self) -> None:
        for waiters in self._acks.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._acks.clear()
        self._ready.clear()

    async def _read_forever(self, connected: bool) -> None:
        backoff = self.backoff_min
        while not self._closing:
            if not connected:
                try:
                    await self._connect_sub()
                except Exception as exc:
                    reraise_cancel(exc)
                    log.warning("redis broker: reconnect failed (retry in %.2fs): %s", backoff, exc)
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                self.reconnects += 1
                log.info("redis broker: pub/sub connection is back")
                await self._beat()  # a restarted Redis lost our heartbeat: claims read as free
                self._spawn(self._after_reconnect(list(self._ready.values())))
            connected = False
            backoff = self.backoff_min
            conn = self._sub
            assert conn is not None
            try:
                await self._read(conn)
            except (RedisError, OSError) as exc:
                reraise_cancel(exc)
                log.warning("redis broker: pub/sub connection lost: %s", exc)
            except Exception as exc:  # a bug must not leave the node deaf: reconnect all the same
                reraise_cancel(exc)
                log.exception("redis broker: pub/sub reader failed")
            async with self._sub_lock:
                if self._sub is conn:
                    await self._drop_sub()

    async def _read(self, conn: AbstractConnection) -> None:
        """Dispatch what arrives until the connection breaks or stays silent."""
        loop = asyncio.get_running_loop()
        every = max(self.node_ttl / 3, 0.05)
        heard = loop.time()
        while True:
            reply = await conn.read_response(timeout=every, disconnect_on_error=False)
            if reply is None:  # nothing for a while: is the connection still there?
                if loop.time() - heard > 3 * every:
                    raise RedisError("the pub/sub connection went silent")
                async with self._sub_lock:
                    if self._sub is not conn or not conn.is_connected:
                        raise RedisError("the pub/sub connection closed")
                    await conn.send_command("PING", check_health=False)
                continue
            heard = loop.time()
            if not isinstance(reply, list) or len(reply) < 3:
                continue  # PONG
            kind, full = reply[0], reply[1]
            if kind == b"message":
                for handler in list(self._handlers.get(full, ())):
                    _safe_call(handler, reply[2])
            elif kind in (b"subscribe", b"unsubscribe"):
                waiters = self._acks.get(full)
                if waiters:
                    fut = waiters.popleft()
                    if not fut.done():
                        fut.set_result(None)
                    if not waiters:
                        del self._acks[full]

    async def _after_reconnect(self, acks: list[asyncio.Future[None]]) -> None:
        if acks:
            await asyncio.wait(acks, timeout=self.command_timeout)
        hook = self.on_reconnect
        if hook is None:
            return
        try:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("redis broker: on_reconnect failed")

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # liveness and lease ---------------------------------------------------------------------------
    async def _beat(self) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._beat_timeout):
                previous = await self.upkeep.set(
                    self._node_key(self.node_id),
                    str(time.time()),
                    px=int(self.node_ttl * 1000),
                    get=True,
                )
        except Exception as exc:  # Redis away (or a bug): the lease runs out unless one lands
            reraise_cancel(exc)
            if not isinstance(exc, RedisError | OSError | TimeoutError):
                log.exception("redis broker: heartbeat failed")
            elif self._beat_ok:
                log.warning("redis broker: heartbeat failed: %r", exc)
            self._beat_ok = False
            self._update_lease()
            return
        if not self._beat_ok:
            log.info("redis broker: node %s is beating", self.node_id)
        self._beat_ok = True
        self._update_lease()  # a lease that ran out during the write is reported lost first
        if previous is None and self.leased:  # Redis lost our heartbeat: our claims too?
            self._reclaim_pending = True
        if self._last_beat is None or started > self._last_beat:
            self._last_beat = started
        self._arm_lease_timer()
        try:
            await self._settle_claims()
        except (RedisError, OSError) as exc:
            reraise_cancel(exc)
            log.warning("redis broker: could not settle this node's claims: %s", exc)
        except Exception as exc:
            reraise_cancel(exc)
            log.exception("redis broker: could not settle this node's claims")
        self._update_lease()

    def _arm_lease_timer(self) -> None:
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        assert self._last_beat is not None
        left = self._last_beat + self.node_ttl - time.monotonic()
        # a little late rather than early: a timer that fires early re-arms itself
        self._lease_timer = asyncio.get_running_loop().call_later(
            max(left, 0.0) + 0.001, self._lease_timeout
        )

    def _lease_timeout(self) -> None:
        self._lease_timer = None
        if self.leased:
            self._arm_lease_timer()
        else:
            self._update_lease()

    def _update_lease(self) -> None:
        """Report a change of :attr:`leased` to ``on_lease``; a lost lease voids the claims."""
        now = self.leased
        if self._reported is None or now == self._reported:
            return
        self._reported = now
        if now:
            log.info("redis broker: node %s holds its lease", self.node_id)
        else:
            log.warning(
                "redis broker: node %s lost its lease (no heartbeat for %ss)",
                self.node_id,
                self.node_ttl,
            )
            self._void.update(self._claimed)
            self._claimed.clear()
            self._reclaim_pending = False
        hook = self.on_lease
        if hook is not None:
            try:
                hook(now)
            except Exception:
                log.exception("redis broker: on_lease failed")

    async def _settle_claims(self) -> None:
        """Release the claims a lost lease voided; put back those that Redis lost."""
        if self._void:
            void = list(self._void.items())
            async with self.redis.pipeline(transaction=False) as pipe:
                for (room, user), conn in void:
                    key = self._claims_key(room)
                    await self._release(keys=[key], args=[user, conn], client=pipe)
                await pipe.execute()
            for item, conn in void:
                if self._void.get(item) == conn:
                    del self._void[item]
        if self._reclaim_pending:
            await self._reclaim()
            self._reclaim_pending = False

    async def _reclaim(self) -> None:
        """Put back this node's claims that are missing (never over another's claim)."""
        held = list(self._claimed.items())
        async with self.redis.pipeline(transaction=False) as pipe:
            for (room, user), conn in held:
                pipe.hsetnx(self._claims_key(room), user, f"{self.node_id}{SEP}{conn}")
            restored = sum(await pipe.execute())
        if restored:
            self.reclaims += 1
            log.warning("redis broker: put back %d claim(s) that Redis had lost", restored)

    async def _beat_forever(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.node_ttl / 3
        started = loop.time()
        while not self._closing:
            await asyncio.sleep(max(0.0, started + period - loop.time()))
            started = loop.time()
            await self._beat()

    async def node_alive(self, node_id: str) -> bool:
        """Whether ``node_id``'s heartbeat is current (this node counts as alive)."""
        if node_id == self.node_id:
            return True
        return bool(await self._call(self.redis.exists(self._node_key(node_id))))

    # seq allocation -------------------------------------------------------------------------------
    async def allocate_seq(
        self,
        session_id: str,
        key: str | None,
        floor: int,
        seed: Callable[[], Awaitable[int]] | None = None,
    ) -> tuple[int, bool]:
        keys = [
            self._seq_key(session_id),
            self._seqkeys_key(session_id),
            self._oldkeys_key(session_id),
        ]
        tail = [self.key_window] if key is None else [self.key_window, key.encode()]
        if seed is not None:  # no counter (new session, or a restarted Redis)? seed it first
            seq, new = await self._call(
                self._allocate_soon([*keys, int(floor), SEQ_TTL_MS, "1", *tail])
            )
            if seq >= 0:
                return int(seq), bool(new)
            floor = max(floor, await seed())
        seq, new = await self._call(
            self._allocate_soon([*keys, int(floor), SEQ_TTL_MS, "0", *tail])
        )
        return int(seq), bool(new)

    def _allocate_soon(self, keys_and_args: list[Any]) -> asyncio.Future[Any]:
        """One ALLOCATE_SEQ call (its three keys, then its arguments). The calls made in one
        turn of the loop go to Redis together, one pipeline on one connection: under load (S3)
        a connection of the pool for each call, held while the loop was behind, ran it dry."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._allocations:
            loop.call_soon(self._send_allocations)
        self._allocations.append((keys_and_args, fut))
        return fut

    def _send_allocations(self) -> None:
        batch, self._allocations = self._allocations, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._allocate_batch(batch))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            task.add_done_callback(lambda _: _unanswered(batch))  # cancelled before it ran

    async def _allocate_batch(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys_and_args, _ in batch:
                    pipe.evalsha(self._allocate.sha, 3, *keys_and_args)
                replies = await pipe.execute(raise_on_error=False)
            for (keys_and_args, fut), reply in zip(batch, replies, strict=True):
                if isinstance(reply, NoScriptError):  # not run: Redis lost its scripts
                    keys, args = keys_and_args[:3], keys_and_args[3:]
                    reply = await self._allocate(keys=keys, args=args)
                if fut.done():
                    continue
                if isinstance(reply, BaseException):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except Exception as exc:  # Redis away: every call of the batch failed
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)

    async def forget(self, session_id: str) -> None:
        await self._call(
            self.redis.delete(
                self._seq_key(session_id),
                self._seqkeys_key(session_id),
                self._oldkeys_key(session_id),
            )
        )

    # claims ---------------------------------------------------------------------------------------
    async def claim(self, room: str, user: str, conn: str) -> str | None:
        """Replacing a claim of a dead node returns ``None``: that connection is gone already."""
        old = await self._call(
            self._claim(keys=[self._claims_key(room)], args=[user, f"{self.node_id}{SEP}{conn}"])
        )
        self._claimed[(room, user)] = conn
        self._void.pop((room, user), None)
        if old is None:
            return None
        node, previous = _split(old)
        if previous == conn or not await self.node_alive(node):
            return None
        return previous

    async def release(self, room: str, user: str, conn: str) -> bool:
        if self._claimed.get((room, user)) == conn:  # even if Redis is down: never put it back
            del self._claimed[(room, user)]
        try:
            released = await self._call(
                self._release(keys=[self._claims_key(room)], args=[user, conn])
            )
        except BrokerUnavailable:
            self._void[(room, user)] = conn  # released by the next heartbeat that lands
            raise
        if self._void.get((room, user)) == conn:
            del self._void[(room, user)]
        return bool(released)

    async def holder(self, room: str, user: str) -> str | None:
        """The claim's connection, or ``None`` if there is none or its node is dead."""
        value = await self._call(self.redis.hget(self._claims_key(room), user))
        if value is None:
            return None
        node, conn = _split(value)
        if await self.node_alive(node):
            return conn
        await self.release(room, user, conn)  # tidy up after the dead node
        return None

    async def claims(self, room: str) -> dict[str, tuple[str, str]]:
        """Every claim in ``room``: user -> (node id, connection id), dead nodes included."""
        raw = await self._call(self.redis.hgetall(self._claims_key(room)))
        return {user.decode(): _split(value) for user, value in raw.items()}

    async def ping(self) -> None:
        """Raise :class:`BrokerUnavailable` unless Redis answers, the pub/sub connection is up
        and this node holds its lease (for ``/readyz``)."""
        await self._call(self.redis.ping())
        if not self.connected:
            raise BrokerUnavailable("redis: the pub/sub connection is down")
        if not self.leased:
            raise BrokerUnavailable("redis: this node has lost its lease")

    async def _call(self, aw: Any) -> Any:
        try:
            return await aw
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc


def _unanswered(batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
    """The calls of a batch whose task ended without answering them (the broker stopped)."""
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(BrokerUnavailable("the broker is stopping"))


def _split(value: bytes) -> tuple[str, str]:
    """A claim's value: (node id, connection id)."""
    node, _, conn = value.decode().partition(SEP)
    return node, conn
