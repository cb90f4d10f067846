"""The hub: live connections and live rooms on this node. It does the I/O that the
sans-I/O :class:`rooms.room.Room` decides on: seq allocation through the broker, durable
writes through the group-commit writer, fan-out through the broker's room channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from persistence.store import EndSession, Store, StoredEvent, StoredNotes, notes_text
from persistence.writer import Writer, WriterUnavailable, transient
from rooms.broker import Broker, BrokerUnavailable
from rooms.codec import Format, Frame, decode, encode, unpack
from rooms.connection import Connection, Fill, Outgoing, Transport
from rooms.errors import Close, FatalError, ProtocolError, RateLimited, Unavailable
from rooms.metrics import Metrics
from rooms.notes import Notes
from rooms.room import Append, AwaitAck, Member, Relay, Reply, Room, StoreNotes, chat_key

log = logging.getLogger(__name__)

GAP_DEADLINE = 5.0  # seconds a seq may stay missing before the room moves past it

Verifier = Callable[[str], tuple[str, str]]  # token -> (user_id, room); raises on a bad token
IceServers = Callable[[str], list[dict[str, Any]]]


@dataclass
class HubConfig:
    rate_limit: float = 40.0
    session_grace: float = 600.0
    send_queue: int = 2048
    send_queue_bytes: int = 8 * 1024 * 1024
    notes_compact_every: int = 200
    sweep_interval: float = 5.0  # how often to look for members whose node died


@dataclass
class LiveRoom:
    """A room as held on this node while it has members here (or a grace timer runs)."""

    pair_id: str
    channel: str
    room: Room | None = None
    conns: dict[str, Connection] = field(default_factory=dict)
    waiters: dict[str, list[tuple[Connection, str]]] = field(default_factory=dict)
    early: list[bytes] = field(default_factory=list)
    grace: asyncio.TimerHandle | None = None
    notes_writes: int = 0
    compacting: bool = False
    repairing: bool = False
    handler: Callable[[bytes], None] | None = None
    suspects: set[str] = field(default_factory=set)


class Hub:
    def __init__(
        self,
        *,
        store: Store,
        writer: Writer,
        broker: Broker,
        verify: Verifier,
        ice_servers: IceServers,
        config: HubConfig,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.writer = writer
        self.broker = broker
        self.verify = verify
        self.ice_servers = ice_servers
        self.config = config
        self.clock = clock
        self.rooms: dict[str, LiveRoom] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Hub:
        self.broker.on_reconnect = self.repair_all
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        for live in list(self.rooms.values()):
            for conn in list(live.conns.values()):
                conn.abort(Close.GOING_AWAY, "server shutting down")
            if live.grace:
                live.grace.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def connections(self) -> int:
        return sum(len(live.conns) for live in self.rooms.values())

    # joining -----------------------------------------------------------------------------
    async def join(
        self, transport: Transport, pair_id: str, fmt: Format, hello: Frame
    ) -> Connection:
        """Check the hello, take the user's claim, send welcome and replay. Raises FatalError."""
        try:
            user_id, room_claim = self.verify(hello["token"])
        except Exception as exc:
            raise FatalError(Close.UNAUTHORIZED, str(exc)[:120]) from None
        if room_claim != pair_id:
            raise FatalError(Close.FORBIDDEN, "the token is for another room")
        try:
            live = await self._live(pair_id, user_id)
        except Exception as exc:  # Redis or the database down: 1013, the client tries again
            if not isinstance(exc, BrokerUnavailable) and not transient(exc):
                raise
            log.warning("join in %s failed: %r", pair_id, exc)
            raise Unavailable("the room is unavailable; retry") from None
        room = live.room
        assert room is not None
        conn = Connection(
            transport,
            pair_id=pair_id,
            user_id=user_id,
            fmt=fmt,
            loader=lambda after, upto: self._load(room.session_id, after, upto),
            rate=self.config.rate_limit,
            now=self.clock(),
            max_items=self.config.send_queue,
            max_bytes=self.config.send_queue_bytes,
            metrics=self.metrics,
        )
        try:
            previous = await self.broker.claim(pair_id, user_id, conn.id)
        except Exception as exc:
            self.metrics.broker_error()
            log.warning("claim failed: %r", exc)
            raise Unavailable("the room is unavailable; retry") from None
        if self.rooms.get(pair_id) is not live or room.ended or room.ending:
            # the session ended while the claim was being taken: the client joins the next one
            with contextlib.suppress(Exception):
                await self.broker.release(pair_id, user_id, conn.id)
            raise Unavailable("the session just ended; join again")
        conn.room = room
        old = live.conns.get(user_id)
        if old is not None:
            old.abort(Close.REPLACED, "replaced by a newer connection")
        elif previous is not None:
            self.broker.publish(
                live.channel,
                encode({"k": "kick", "user": user_id, "conn": previous}),  # type: ignore[arg-type]
            )
        if live.grace:
            live.grace.cancel()
            live.grace = None
        resume = hello.get("resume")
        if resume and resume["session_id"] == room.session_id:
            conn.delivered = min(resume["last_seq"], room.head)
        live.conns[user_id] = conn
        conn.send(room.welcome(user_id, self.ice_servers(user_id)))
        conn.push(Fill(room.head))
        conn.start()
        try:
            if previous is None and user_id in room.present and old is None:
                # shown present, but no node holds its connection: that node died
                await self._append(live, room.leave(user_id))
            if previous is None or user_id not in room.present:
                await self._append(live, room.join(user_id))
        except Unavailable:
            # the join is not stored: neither is a leave for it
            del live.conns[user_id]
            with contextlib.suppress(Exception):
                await self.broker.release(pair_id, user_id, conn.id)
            conn.abort(Close.TRY_AGAIN, "the room is unavailable; retry")
        return conn

    async def _live(self, pair_id: str, user_id: str) -> LiveRoom:
        lock = self._locks.setdefault(pair_id, asyncio.Lock())
        async with lock:
            live = self.rooms.get(pair_id)
            if live is not None and live.room is not None and not live.room.ended:
                if user_id not in live.room.members:
                    raise FatalError(Close.FORBIDDEN, "not a member of this room")
                return live
            if live is not None:
                await self._drop(live)
            pair = await self.store.get_pair(pair_id)
            if pair is None or user_id not in (pair.mentor_id, pair.mentee_id):
                raise FatalError(Close.FORBIDDEN, "not a member of this room")
            members = {
                pair.mentor_id: Member(pair.mentor_id, pair.mentor_name, "mentor"),
                pair.mentee_id: Member(pair.mentee_id, pair.mentee_name, "mentee"),
            }
            session = await self.store.start_session(pair_id, self.clock())
            if await self._stale(pair_id, session.id, session.started_at, members):
                await self.writer.write(
                    EndSession(
                        session.id,
                        self.clock(),
                        notes_text(await self.store.notes_updates(session.id)),
                    )
                )
                session = await self.store.start_session(pair_id, self.clock())
            live = LiveRoom(pair_id, f"room:{pair_id}")
            live.handler = lambda data: self._on_message(live, data)
            self.rooms[pair_id] = live
            try:
                await self.broker.subscribe(live.channel, live.handler)
                # head first: what is stored after it arrives on the channel, subscribed above
                head = await self.store.head(session.id)
                updates = await self.store.notes_updates(session.id)
                presence = await self.store.presence_seqs(session.id)
                chats = await self.store.chat_ids(session.id)
            except BaseException:
                await self._drop(live)
                raise
            online = {u for u, (state, _) in presence.items() if state == "joined"}
            room = Room(
                pair_id,
                members,
                session.id,
                head=head,
                chats={chat_key(u, c): seq for (u, c), seq in chats.items()},
                online=online,
                present=set(online),
                joined={u: seq for u, (state, seq) in presence.items() if state == "joined"},
                notes=Notes(updates),
            )
            live.room = room
            for data in live.early:
                self._on_message(live, data)
            live.early.clear()
            for uid in sorted(room.online):
                if await self.broker.holder(pair_id, uid) is None:
                    await self._append(live, room.leave(uid))  # its node died or restarted
            return live

    async def _stale(
        self, pair_id: str, session_id: str, started: float, members: dict[str, Member]
    ) -> bool:
        """A session nobody is in, idle for longer than the grace period, is over."""
        for uid in members:
            if await self.broker.holder(pair_id, uid) is not None:
                return False
        last = await self.store.last_activity(session_id) or started
        return self.clock() - last > self.config.session_grace

    async def _drop(self, live: LiveRoom) -> None:
        if self.rooms.get(live.pair_id) is live:
            del self.rooms[live.pair_id]
            lock = self._locks.get(live.pair_id)
            if lock is not None and not lock.locked():
                del self._locks[live.pair_id]
        if live.room is not None and live.room.ended:
            await self.broker.forget(live.room.session_id)
        if live.grace:
            live.grace.cancel()
        if live.handler is not None:
            await self.broker.unsubscribe(live.channel, live.handler)
            live.handler = None

    async def _load(self, session_id: str, after: int, upto: int) -> list[tuple[int, bytes]]:
        rows = await self.store.events(session_id, after, upto, limit=500)
        return [(r.seq, r.body) for r in rows]

    # frames from a member ------------------------------------------------------------------
    async def receive(self, conn: Connection, data: bytes | str) -> None:
        """Handle one frame after the hello. Recoverable errors become error frames."""
        live = self.rooms.get(conn.pair_id)
        if live is None or live.room is None or live.conns.get(conn.user_id) is not conn:
            return
        room = live.room
        self.metrics.frame_in()
        verdict = conn.limiter.take(self.clock())
        ref: str | None = None
        try:
            if verdict != "ok":
                if verdict == "flood":  # after what is queued: the rate_limited warnings
                    if conn.close_after_queue(Close.FLOODING, "too many frames"):
                        self.metrics.rate_limit_close()
                    return
                raise RateLimited("too many frames; slow down")
            frame = decode(data, conn.fmt)
            ref = frame.get("id")
            for action in room.receive(conn.user_id, frame):
                if isinstance(action, Reply):
                    conn.send(action.frame)
                elif isinstance(action, Append):
                    await self._append(live, action, conn, ref)
                elif isinstance(action, AwaitAck):
                    live.waiters.setdefault(action.key, []).append((conn, action.id))
                elif isinstance(action, Relay):
                    self._relay(live, conn.user_id, action.frame)
                elif isinstance(action, StoreNotes):
                    self._store_notes(live, conn.user_id, action.update)
        except ProtocolError as exc:
            if exc.ref is None and ref is not None:
                exc.ref = ref
            if exc.ref is None and isinstance(data, bytes | bytearray):
                exc.ref = _peek_id(data)
            conn.send(exc.frame())

    def _relay(self, live: LiveRoom, sender: str, frame: Frame) -> None:
        packed = encode(frame)
        assert live.room is not None
        envelope = {"k": "r", "s": live.room.session_id, "from": sender, "f": packed}
        self.broker.publish(live.channel, encode(envelope))  # type: ignore[arg-type]

    def _store_notes(self, live: LiveRoom, sender: str, update: bytes) -> None:
        room = live.room
        assert room is not None
        try:
            fut = self.writer.submit(StoredNotes(room.session_id, update))
        except WriterUnavailable as exc:
            raise Unavailable(str(exc)) from None
        packed = encode({"t": "notes", "from": sender, "u": update})
        envelope = encode(
            {
                "k": "n",
                "s": room.session_id,
                "from": sender,
                "node": self.broker.node_id,
                "u": update,
                "f": packed,
            }
        )

        def stored(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception():
                return
            self.broker.publish(live.channel, envelope)  # type: ignore[arg-type]
            live.notes_writes += 1
            if live.notes_writes % self.config.notes_compact_every == 0 and not live.compacting:
                self._spawn(self._compact(live, room.session_id))

        fut.add_done_callback(stored)

    async def _compact(self, live: LiveRoom, session_id: str) -> None:
        live.compacting = True
        try:
            await self.store.compact_notes(session_id)
        except Exception:
            log.exception("notes compaction failed for %s", session_id)
        finally:
            live.compacting = False

    async def _append(
        self,
        live: LiveRoom,
        action: Append,
        conn: Connection | None = None,
        ref: str | None = None,
    ) -> asyncio.Future[None] | None:
        """Allocate a seq, queue the durable write, and publish the event once committed."""
        room = live.room
        assert room is not None
        if room.ended:
            return None
        started = time.perf_counter()
        try:
            if self.writer.full():
                raise WriterUnavailable("the store is not keeping up")
            try:
                seed = lambda: self.store.head(room.session_id)  # noqa: E731
                seq, new = await self.broker.allocate_seq(
                    room.session_id, action.key, room.head, seed=seed
                )
                if (
                    not new
                    and action.kind == "chat"
                    and action.key not in room.chats
                    and seq <= room.head
                ):
                    # the first attempt's seq went by without it being stored (the store
                    # refused it): this retry is a new attempt
                    seq, new = await self.broker.allocate_seq(
                        room.session_id, None, room.head, seed=seed
                    )
            except Exception:
                self.metrics.broker_error()
                raise
        except Exception as exc:
            if action.key:
                room.pending.discard(action.key)
            log.warning("could not allocate a seq: %r", exc)
            raise Unavailable("the room is unavailable; retry", ref) from None
        if not new:  # a retry whose first attempt is in flight on some node
            if conn is not None and ref is not None and action.key is not None:
                if action.key in room.chats:
                    conn.send({"t": "ack", "id": ref, "seq": room.chats[action.key]})
                else:
                    live.waiters.setdefault(action.key, []).append((conn, ref))
            return None
        ts = self.clock()
        frame = {"t": action.kind, "seq": seq, **action.body, "ts": ts}
        packed: bytes = encode(frame)  # type: ignore[assignment]
        user = action.body.get("from") or action.body.get("by") or action.body["user"]["id"]
        ends = room.notes.plain() if action.kind == "ended" else None
        op = StoredEvent(
            room.session_id, seq, action.kind, user, action.body.get("id"), ts, packed, ends
        )
        try:
            fut = self.writer.submit(op)
        except WriterUnavailable:
            self._skip(live, room, seq)  # the seq is spent: the others must not wait for it
            self._failed(live, room, action.key, "the store is not keeping up")
            raise Unavailable("the store is not keeping up; retry", ref) from None
        envelope: bytes = encode({"k": "e", "s": room.session_id, "seq": seq, "f": packed})  # type: ignore[assignment]

        def stored(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                return
            if f.exception():
                if conn is not None and ref is not None:
                    conn.send(Unavailable("the store rejected this frame", ref).frame())
                self._skip(live, room, seq)
                self._failed(live, room, action.key, "the store rejected this frame")
                return
            if conn is not None and action.kind == "chat":
                conn.send({"t": "ack", "id": action.body["id"], "seq": seq})
                self.metrics.ack_latency(time.perf_counter() - started)
            self.broker.publish(live.channel, envelope)

        fut.add_done_callback(stored)
        return fut

    def _skip(self, live: LiveRoom, room: Room, seq: int) -> None:
        """Tell every node that ``seq`` will never be stored (a tombstone)."""
        self.broker.publish(live.channel, encode({"k": "skip", "s": room.session_id, "seq": seq}))  # type: ignore[arg-type]

    def _failed(self, live: LiveRoom, room: Room, key: str | None, why: str) -> None:
        """A chat's write failed: retries waiting on it get the error too (and may retry)."""
        if key is None:
            return
        room.pending.discard(key)
        for waiter, cid in live.waiters.pop(key, []):
            waiter.send(Unavailable(why, cid).frame())

    # messages from the room channel --------------------------------------------------------
    def _on_message(self, live: LiveRoom, data: bytes) -> None:
        room = live.room
        if room is None:
            live.early.append(data)
            return
        msg = unpack(data)
        kind = msg.get("k")
        if "s" in msg and msg["s"] != room.session_id:
            return  # a late message of an earlier session of this room
        if kind == "e":
            self._deliver(live, room, msg["seq"], msg["f"])
        elif kind == "skip":
            self._deliver(live, room, msg["seq"], None)
        elif kind in ("r", "n"):  # a relay, or a stored notes update: to the other member
            if kind == "n" and msg["node"] != self.broker.node_id:
                with contextlib.suppress(ProtocolError):
                    room.notes.apply(msg["u"])  # this node's own update is already merged
            out = Outgoing(None, None, msg["f"])
            for uid, conn in live.conns.items():
                if uid != msg["from"]:
                    conn.push(out)
        elif kind == "kick":
            kicked = live.conns.get(msg["user"])
            if kicked is not None and kicked.id == msg["conn"]:
                del live.conns[msg["user"]]
                kicked.abort(Close.REPLACED, "replaced by a newer connection")

    def _deliver(self, live: LiveRoom, room: Room, seq: int, packed: bytes | None) -> None:
        event = unpack(packed) if packed is not None else None
        for ev, payload in room.commit(seq, event, packed):
            out = Outgoing(ev, ev["seq"], payload)
            for conn in live.conns.values():
                conn.push(out)
            t = ev["t"]
            if t == "chat":
                for conn, cid in live.waiters.pop(chat_key(ev["from"], ev["id"]), []):
                    conn.send({"t": "ack", "id": cid, "seq": ev["seq"]})
            elif t == "ended":
                for conn in list(live.conns.values()):
                    conn.close_after_queue(Close.NORMAL, "session ended")
                if not live.conns:
                    self._spawn(self._drop(live))
            elif t == "presence" and not room.online and not room.ended:
                self._start_grace(live, room)
        if room.gap() and not live.repairing:
            self._spawn(self._repair(live, room))

    async def _repair(self, live: LiveRoom, room: Room) -> None:
        """Fetch events that the channel skipped (they are in the store, the source of truth)."""
        live.repairing = True
        try:
            waited = 0.0
            while (gap := room.gap()) and live.room is room:
                await asyncio.sleep(0.2)  # let in-flight publishes arrive first
                waited += 0.2
                gap = room.gap()
                if not gap:
                    break
                for row in await self.store.events(room.session_id, gap[0], gap[1]):
                    self._deliver(live, room, row.seq, row.body)
                if room.gap() == gap and waited >= GAP_DEADLINE:
                    # allocated, then never stored (its node died before the commit): a hole
                    # that would hold back the whole room; skip it
                    log.error(
                        "seqs %d..%d of %s never stored; skipped",
                        gap[0] + 1,
                        gap[1],
                        room.session_id,
                    )
                    for seq in range(gap[0] + 1, gap[1] + 1):
                        self._deliver(live, room, seq, None)
        except Exception:
            log.exception("gap repair failed in %s", live.pair_id)
        finally:
            live.repairing = False

    def _start_grace(self, live: LiveRoom, room: Room) -> None:
        if live.grace:
            live.grace.cancel()
        loop = asyncio.get_running_loop()
        live.grace = loop.call_later(
            self.config.session_grace, lambda: self._spawn(self._expire(live, room))
        )

    async def _expire(self, live: LiveRoom, room: Room) -> None:
        live.grace = None
        if room.online or room.ended or live.room is not room:
            return
        room.ended = True
        try:
            await self.writer.write(EndSession(room.session_id, self.clock(), room.notes.plain()))
        except Exception:
            log.exception("ending idle session %s failed", room.session_id)
        if not live.conns:
            await self._drop(live)

    def repair_all(self) -> None:
        """The broker lost messages (its connection dropped): catch every room up from the store."""
        for live in list(self.rooms.values()):
            if live.room is not None:
                self._spawn(self._catch_up(live, live.room))

    async def _catch_up(self, live: LiveRoom, room: Room) -> None:
        try:
            while True:
                rows = await self.store.events(room.session_id, room.head, limit=500)
                for row in rows:
                    self._deliver(live, room, row.seq, row.body)
                if len(rows) < 500:
                    return
        except Exception:
            log.exception("catch-up of %s failed", live.pair_id)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed")

    async def sweep(self) -> None:
        """Members shown online whose connection no node holds any more (their node died) are
        marked left once they have been missing for two sweeps in a row."""
        for live in list(self.rooms.values()):
            room = live.room
            if room is None or room.ended:
                continue
            try:
                missing = set()
                for uid in room.online - set(live.conns):
                    if await self.broker.holder(live.pair_id, uid) is None:
                        missing.add(uid)
                for uid in missing & live.suspects:
                    if uid in room.present and uid not in live.conns:  # still, after the awaits
                        await self._append(live, room.leave(uid))
                live.suspects = missing - live.suspects
            except Exception as exc:
                log.warning("sweep of %s failed: %r", live.pair_id, exc)

    # leaving ----------------------------------------------------------------------------------
    async def leave(self, conn: Connection) -> None:
        """The socket is gone. A leave (not a replacement, not the end) is a durable event."""
        await conn.stop()
        live = self.rooms.get(conn.pair_id)
        if live is None or live.room is None or live.room is not conn.room:
            # its session is over (or this node dropped the room): nothing to record
            with contextlib.suppress(Exception):
                await self.broker.release(conn.pair_id, conn.user_id, conn.id)
            return
        if live.conns.get(conn.user_id) is conn:
            del live.conns[conn.user_id]
        room = live.room
        try:
            released = await self.broker.release(conn.pair_id, conn.user_id, conn.id)
            if released and not room.ended:
                fut = await self._append(live, room.leave(conn.user_id))
                if fut is not None:
                    await fut
        except Exception:
            log.exception("leave of %s in %s failed", conn.user_id, conn.pair_id)
        if not live.conns and room.ended:
            await self._drop(live)


def _peek_id(data: bytes | bytearray) -> str | None:
    with contextlib.suppress(Exception):
        raw = unpack(bytes(data))
        ref = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(ref, str):
            return ref
    return None
