"""The hub: a pump between the live rooms' machines (:mod:`rooms.room`) and the world.

It feeds each machine its inputs (sockets' frames, broker messages and answers, the writer's
commits, the time) and carries out the effects it returns. Every rule of a room is in the
machine; what is here is I/O: building a room from the store, claims, and running effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from persistence.store import CompactNotes, EndSession, Store
from persistence.writer import Writer, WriterUnavailable, transient
from rooms.broker import Broker, BrokerUnavailable
from rooms.codec import Format, Frame
from rooms.connection import Connection, Fill, Outgoing, Transport
from rooms.errors import Close, FatalError, Unavailable
from rooms.messages import BadMessage, Erased, decode_message, encode_message
from rooms.metrics import Metrics
from rooms.notes import Notes
from rooms.room import (
    Allocate,
    CheckHolders,
    CheckPeer,
    CloseConn,
    Compact,
    Config,
    Deliver,
    Effect,
    Finish,
    Load,
    LookupChat,
    Member,
    Publish,
    ReloadNotes,
    Room,
    Send,
    Welcome,
    Write,
    is_stale,
)

log = logging.getLogger(__name__)

Verifier = Callable[[str], tuple[str, str]]  # token -> (user_id, room); raises on a bad token
IceServers = Callable[[str], list[dict[str, Any]]]
LOAD_PAGE = 500
TIMER_SLACK = 0.05  # a room's timer firing this much early counts as on time


@dataclass
class HubConfig:
    send_queue: int = 2048
    send_queue_bytes: int = 8 * 1024 * 1024
    room: Config = field(default_factory=Config)


@dataclass
class LiveRoom:
    """A room held on this node: its machine and the sockets it decides for."""

    pair_id: str
    channel: str
    room: Room | None = None  # None while it is being built
    conns: dict[str, Connection] = field(default_factory=dict)  # by connection id
    early: list[bytes] = field(default_factory=list)  # channel messages while building
    handler: Callable[[bytes], None] | None = None
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    finished: bool = False
    joining: int = 0  # joins between building (or finding) the room and their welcome


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
        self.broker.on_lease = self._lease
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for live in list(self.rooms.values()):
            for conn in list(live.conns.values()):
                conn.abort(Close.GOING_AWAY, "server shutting down")
            if live.timer:
                live.timer.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def connections(self) -> int:
        return sum(len(live.conns) for live in self.rooms.values())

    # a member comes -------------------------------------------------------------------------
    async def join(
        self, transport: Transport, pair_id: str, fmt: Format, hello: Frame
    ) -> Connection:
        """Check the hello, take the user's claim, then let the room welcome it. Raises
        :class:`FatalError`, or :class:`Unavailable` when the client should come back."""
        try:
            user_id, room_claim = self.verify(hello["token"])
        except Exception as exc:
            raise FatalError(Close.UNAUTHORIZED, str(exc)[:120]) from None
        if room_claim != pair_id:
            raise FatalError(Close.FORBIDDEN, "the token is for another room")
        if not self.broker.leased:
            raise Unavailable("this node cannot serve rooms now; retry")
        try:
            live = await self._live(pair_id, user_id)
        except Exception as exc:  # Redis or the database down: 1013, the client tries again
            if not isinstance(exc, BrokerUnavailable) and not transient(exc):
                raise
            log.warning("join in %s failed: %r", pair_id, exc)
            raise Unavailable("the room is unavailable; retry") from None
        try:
            return await self._connect(live, transport, pair_id, user_id, fmt, hello)
        finally:
            live.joining -= 1
            self._arm(live)

    async def _connect(
        self,
        live: LiveRoom,
        transport: Transport,
        pair_id: str,
        user_id: str,
        fmt: Format,
        hello: Frame,
    ) -> Connection:
        room = live.room
        assert room is not None
        refusal = room.admit(user_id, self.clock())
        if refusal is not None:
            self.metrics.rate_limit_close()
            raise refusal
        conn = Connection(
            transport,
            pair_id=pair_id,
            user_id=user_id,
            fmt=fmt,
            loader=lambda after, upto: self._load(room.session_id, after, upto),
            max_items=self.config.send_queue,
            max_bytes=self.config.send_queue_bytes,
            metrics=self.metrics,
        )
        try:
            previous = await self.broker.claim(pair_id, user_id, conn.id)
            elsewhere = {u: await self.broker.holder(pair_id, u) for u in room.others(user_id)}
        except Exception as exc:
            self.metrics.broker_error()
            log.warning("claim failed: %r", exc)
            raise Unavailable("the room is unavailable; retry") from None
        if self.rooms.get(pair_id) is not live or room.ended or room.ending:
            # the session ended while the claim was being taken: the client joins the next one
            with contextlib.suppress(Exception):
                await self.broker.release(pair_id, user_id, conn.id)
            raise Unavailable("the session just ended; join again")
        conn.session_id = room.session_id
        live.conns[conn.id] = conn
        effects = room.connect(
            conn.id,
            user_id,
            fmt,
            self.clock(),
            ice_servers=self.ice_servers(user_id),
            resume=hello.get("resume"),
            replaced_elsewhere=previous is not None,
            elsewhere={u: c for u, c in elsewhere.items() if c is not None},
        )
        await self._run(live, effects)
        return conn

    async def _live(self, pair_id: str, user_id: str) -> LiveRoom:
        lock = self._locks.setdefault(pair_id, asyncio.Lock())
        async with lock:
            live = self.rooms.get(pair_id)
            if live is not None and live.room is not None and not live.finished:
                if user_id not in live.room.members:
                    raise FatalError(Close.FORBIDDEN, "not a member of this room")
                live.joining += 1  # not dropped before this join is welcomed (or refused)
                return live
            if live is not None:
                await self._drop(live)
            return await self._build(pair_id, user_id)  # counts its join already

    async def _build(self, pair_id: str, user_id: str) -> LiveRoom:
        started = self.clock()
        entered = await self.store.enter(pair_id, user_id, started)
        if entered is None:
            raise FatalError(Close.FORBIDDEN, "not a member of this room")
        pair, session = entered
        members = {
            pair.mentor_id: Member(pair.mentor_id, pair.mentor_name, "mentor"),
            pair.mentee_id: Member(pair.mentee_id, pair.mentee_name, "mentee"),
        }
        live = LiveRoom(pair_id, f"room:{pair_id}", joining=1)
        live.handler = lambda data: self._on_message(live, data)
        self.rooms[pair_id] = live
        try:
            await self.broker.subscribe(live.channel, live.handler)
            # read after subscribing: what is stored later arrives on the channel
            state = await self.store.room_state(pair_id, session.id)
            # claims after presence: a join stored meanwhile has its claim taken before it
            held = {u: await self.broker.holder(pair_id, u) for u in members}
            last = state.last_activity or session.started_at
            connected = any(c is not None for c in held.values())
            if session.started_at != started and is_stale(
                self.clock(), last, self.config.room.session_grace, connected
            ):
                await self.writer.write(EndSession(session.id, self.clock()))
                session = await self.store.start_session(pair_id, self.clock())
                state = await self.store.room_state(pair_id, session.id)
        except BaseException:
            await self._drop(live)
            raise
        room = Room(
            pair_id,
            session.id,
            members,
            self.broker.node_id,
            self.config.room,
            head=state.head,
            notes=Notes(state.notes),
            present={u for u, (p, _) in state.presence.items() if p == "joined"},
            joined={u: seq for u, (p, seq) in state.presence.items() if p == "joined"},
            goal=state.goal,
            items={item["id"]: item for item in state.items},
            record=state.record,
            record_by=state.record_by,
            record_seq=state.record_seq,
        )
        live.room = room
        now = self.clock()
        for data in live.early:
            self._on_message(live, data)
        live.early.clear()
        await self._run(live, room.started(held, now, state.missing))
        return live

    async def _drop(self, live: LiveRoom) -> None:
        if self.rooms.get(live.pair_id) is live:
            del self.rooms[live.pair_id]
            lock = self._locks.get(live.pair_id)
            if lock is not None and not lock.locked():
                del self._locks[live.pair_id]
        if live.timer:
            live.timer.cancel()
            live.timer = None
        if live.handler is not None:
            handler, live.handler = live.handler, None
            await self.broker.unsubscribe(live.channel, handler)

    async def _load(self, session_id: str, after: int, upto: int) -> list[tuple[int, bytes]]:
        rows = await self.store.events(session_id, after, upto, limit=LOAD_PAGE)
        return [(r.seq, r.body) for r in rows]

    # frames, messages and time: inputs to the machine ----------------------------------------
    async def receive(self, conn: Connection, data: bytes | str) -> None:
        """Handle one frame after the hello."""
        live = self.rooms.get(conn.pair_id)
        if live is None or live.room is None or live.conns.get(conn.id) is not conn:
            return
        self.metrics.frame_in()
        await self._run(live, live.room.receive(conn.id, data, self.clock()))

    def _on_message(self, live: LiveRoom, data: bytes) -> None:
        room = live.room
        if room is None:
            live.early.append(data)
            return
        try:
            msg = decode_message(data)
        except BadMessage as exc:
            log.warning("room channel of %s: %s", live.pair_id, exc)
            return
        self._feed(live, room.message(msg, self.clock()))

    def _tick(self, live: LiveRoom) -> None:
        at, live.timer, live.timer_at = live.timer_at, None, None
        if live.room is not None:
            now = self.clock()
            if at is not None and 0 < at - now <= TIMER_SLACK:
                # the loop's timers fire up to a few ms early (uvloop counts whole ms from a
                # cached time): the deadline is due now, not after a string of re-armed turns
                now = at
            self._feed(live, live.room.tick(now))

    def repair_all(self) -> None:
        """The broker lost messages (its connection dropped): catch every room up from the store."""
        for live in list(self.rooms.values()):
            if live.room is not None:
                self._feed(live, live.room.repair(self.clock()))

    def _lease(self, leased: bool) -> None:
        """Without its lease, other nodes take this node's members for gone: let them go."""
        if leased:
            log.warning("broker lease is back: serving rooms again")
            return
        log.error("broker lease lost: closing every connection with 1013")
        for live in list(self.rooms.values()):
            if live.room is not None:
                self._feed(live, live.room.lease_lost())
            self._spawn(self._drop(live))

    async def erase(self, pair_id: str) -> None:
        """The pair was erased from the store: every node closes its sockets with 4403."""
        self.broker.publish(f"room:{pair_id}", encode_message(Erased("")))

    # a member goes ---------------------------------------------------------------------------
    async def leave(self, conn: Connection) -> None:
        """The socket is gone. A leave (not a replacement, not the end) is a durable event."""
        await conn.stop()
        live = self.rooms.get(conn.pair_id)
        mine = live is not None and live.conns.get(conn.id) is conn
        held_here = False
        try:
            released = await self.broker.release(conn.pair_id, conn.user_id, conn.id)
        except Exception as exc:  # the broker releases it once it can
            log.warning("release of %s in %s failed: %r", conn.user_id, conn.pair_id, exc)
            released = False
            held_here = self.broker.leased and mine  # still ours, as far as this node knows
        if not mine or live is None or live.room is None or live.conns.pop(conn.id, None) is None:
            return  # replaced (maybe during the release), or this node dropped the room
        await self._run(live, live.room.closed(conn.id, released or held_here, self.clock()))

    # carrying out effects ----------------------------------------------------------------------
    async def _run(self, live: LiveRoom, effects: list[Effect]) -> None:
        """Carry out ``effects`` in order, awaiting the broker and the store as they come."""
        queue = deque(effects)
        while queue:
            effect = queue.popleft()
            if _is_async(effect):
                queue.extendleft(reversed(await self._ask(live, effect)))
            else:
                self._do(live, effect)
        self._arm(live)

    def _feed(self, live: LiveRoom, effects: list[Effect]) -> None:
        """From a callback: what needs no waiting now, the rest in a task of its own."""
        for effect in effects:
            if _is_async(effect):
                self._spawn(self._run(live, [effect]))
            else:
                self._do(live, effect)
        self._arm(live)

    def _do(self, live: LiveRoom, effect: Effect) -> None:
        room = live.room
        assert room is not None
        if isinstance(effect, Deliver):
            out = Outgoing(None, effect.seq, effect.packed)
            for conn in live.conns.values():
                if conn.user_id != effect.skip:
                    conn.push(out)
        elif isinstance(effect, Send):
            target = live.conns.get(effect.conn)
            if target is not None:
                target.send(effect.frame, effect.hold)
                if effect.since is not None:
                    self.metrics.ack_latency(self.clock() - effect.since)
        elif isinstance(effect, Publish):
            self.broker.publish(live.channel, encode_message(effect.msg))
        elif isinstance(effect, Write):
            self._store(live, room, effect)
        elif isinstance(effect, Welcome):
            conn = live.conns[effect.conn]
            conn.delivered = effect.after
            conn.send(effect.frame)
            conn.push(Fill(effect.frame["head"]))
            conn.start()
        elif isinstance(effect, CloseConn):
            self._close(live, effect)
        elif isinstance(effect, Finish):
            live.finished = True
            self._spawn(self._forget(room.session_id))
        else:  # pragma: no cover - every effect is handled above or in _ask
            raise TypeError(f"unknown effect {effect!r}")

    def _close(self, live: LiveRoom, effect: CloseConn) -> None:
        conn = live.conns.get(effect.conn)
        if conn is None:
            return
        if effect.after_queue:
            if conn.close_after_queue(effect.code, effect.reason) and effect.code == Close.FLOODING:
                self.metrics.rate_limit_close()
        else:
            del live.conns[effect.conn]
            conn.abort(effect.code, effect.reason)

    def _store(self, live: LiveRoom, room: Room, effect: Write) -> None:
        op = effect.op
        try:
            fut = self.writer.submit(effect.write, force=effect.force)
        except WriterUnavailable:
            if op is not None:
                self._feed(live, room.store_failed(op, self.clock()))
            return
        if op is None:
            return

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                return
            if f.exception() is not None:
                self._feed(live, room.store_failed(op, self.clock()))
            else:
                self._feed(live, room.stored(op))

        fut.add_done_callback(done)

    async def _ask(self, live: LiveRoom, effect: Effect) -> list[Effect]:
        """Carry out an effect that waits for the broker or the store; return what follows."""
        room = live.room
        assert room is not None
        try:
            if isinstance(effect, Allocate):
                return await self._allocate(room, effect)
            if isinstance(effect, LookupChat):
                user, cid = effect.user, effect.client_id
                seq = await self.store.chat_seq(room.session_id, user, cid)
                return room.chat_found(effect.op, seq, self.clock())
            if isinstance(effect, CheckPeer):
                holder = await self.broker.holder(room.pair_id, effect.user)
                return room.peer_checked(effect.conn, effect.user, holder, effect.frame)
            if isinstance(effect, CheckHolders):
                held = {u: await self.broker.holder(room.pair_id, u) for u in effect.users}
                return room.holders_checked(effect.purpose, held, self.clock())
            if isinstance(effect, Load):
                return room.loaded(await self._read(room.session_id, effect), self.clock())
            if isinstance(effect, ReloadNotes):
                return room.notes_reloaded(await self.store.notes_updates(room.session_id))
            if isinstance(effect, Compact):
                await self.writer.write(CompactNotes(room.session_id))
                return room.compacted()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s in %s failed: %r", type(effect).__name__, room.pair_id, exc)
            return room.failed(effect, self.clock())
        raise TypeError(f"unknown effect {effect!r}")

    async def _allocate(self, room: Room, effect: Allocate) -> list[Effect]:
        if self.writer.full():
            return room.allocate_failed(effect.op, self.clock())
        try:
            seq, new = await self.broker.allocate_seq(
                room.session_id,
                effect.key,
                room.head,
                seed=lambda: self.store.head(room.session_id),
            )
        except Exception as exc:
            self.metrics.broker_error()
            log.warning("could not allocate a seq: %r", exc)
            return room.allocate_failed(effect.op, self.clock())
        return room.allocated(effect.op, seq, new, self.clock())

    async def _read(self, session_id: str, load: Load) -> list[tuple[int, bytes]]:
        rows: list[tuple[int, bytes]] = []
        after = load.after
        while True:
            page = await self.store.events(session_id, after, load.upto, limit=LOAD_PAGE)
            rows += [(r.seq, r.body) for r in page]
            if len(page) < LOAD_PAGE:
                return rows
            after = page[-1].seq

    async def _forget(self, session_id: str) -> None:
        try:
            await self.broker.forget(session_id)
        except Exception as exc:
            log.warning("could not forget session %s: %r", session_id, exc)

    def _arm(self, live: LiveRoom) -> None:
        """Wake the room at its machine's next deadline; drop it once the machine is done."""
        if live.room is not None and live.handler and not live.joining and live.room.droppable:
            live.finished = True
            self._spawn(self._drop(live))
        at = live.room.deadline() if live.room is not None and live.handler else None
        if at == live.timer_at:
            return
        if live.timer is not None:
            live.timer.cancel()
        live.timer_at = at
        live.timer = None
        if at is not None:
            delay = max(0.0, at - self.clock())
            live.timer = asyncio.get_running_loop().call_later(delay, self._tick, live)


_ASYNC = (Allocate, LookupChat, CheckPeer, CheckHolders, Load, ReloadNotes, Compact)


def _is_async(effect: Effect) -> bool:
    return isinstance(effect, _ASYNC)
