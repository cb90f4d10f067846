"""The room machine: every rule of one live session of a pair's room, as this node sees it.

Inputs are plain method calls: a member connected or closed, a member's frame, a seq
allocated, a write stored or failed, a lookup answered, a message from another node, and
``tick(now)``. Each returns the effects for the hub (:mod:`rooms.hub`) to carry out. The
machine never awaits, touches a socket or reads the clock; the time comes in as ``now``.

A chat's life: ``Allocate`` (a seq from the broker, which also tells a retry apart) ->
``Write`` (group commit) -> the sender's ack and ``Publish(Stored)`` -> every node delivers
it in seq order. A seq that cannot be filled becomes a ``void`` event, so that every seq
from 1 to head is an event: a gap that stays open past ``GAP_DEADLINE`` is voided too.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from persistence.store import EndSession, StoredEvent, StoredNotes, WriteOp, void_event
from rooms.codec import ACKED_TYPES, Format, Frame, decode, encode, unpack
from rooms.errors import (
    Close,
    FatalError,
    Invalid,
    PeerAbsent,
    ProtocolError,
    RateLimited,
    Unavailable,
)
from rooms.messages import Erased, NodeMessage, NotesStored, Offline, Online, Relayed, Stored
from rooms.notes import Notes
from rooms.ratelimit import TokenBucket

REPAIR_AFTER = 0.2  # a missing seq is looked up in the store after this long
GAP_DEADLINE = 5.0  # ... and voided after this long (its node died before storing it)
OFF_RECORD = 0  # no event has seq 0: what a chat kept off the record is remembered by
DEDUP_WINDOW = 64  # chat ids remembered per room (a reconnect re-sends only its last few)


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    role: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role}


@dataclass(frozen=True)
class Config:
    rate_limit: float = 40.0
    joins_per_minute: float = 6.0  # per member; bursts of twice that; 0: no limit
    session_grace: float = 600.0
    sweep_interval: float = 5.0
    notes_compact_every: int = 200
    # each room compacts after every..every*(1+jitter) updates, by its session id: rooms that
    # started together (a programme's hour) do not all compact at once (S6 stalled for 4 s)
    notes_compact_jitter: float = 0.5
    notes_max_update: int = 256 * 1024
    notes_max_bytes: int = 1024 * 1024


# effects ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Queue ``frame`` for one connection; ``since`` (an ack's) is when its chat arrived.
    ``hold``: the event it acks follows on the room's channel; both may share one write."""

    conn: str
    frame: Frame
    since: float | None = None
    hold: bool = False


@dataclass(frozen=True)
class Welcome:
    """Send the welcome, replay the stored events after ``after``, then go live."""

    conn: str
    frame: Frame
    after: int


@dataclass(frozen=True)
class Deliver:
    """Queue one frame for every connection here but ``skip`` (a user id)."""

    packed: bytes
    seq: int | None = None
    skip: str | None = None


@dataclass(frozen=True)
class CloseConn:
    conn: str
    code: Close
    reason: str
    after_queue: bool = False


@dataclass(frozen=True)
class Allocate:
    """Ask the broker for a seq (``key`` tells a retry apart); answer with ``allocated``."""

    op: int
    key: str | None


@dataclass(frozen=True)
class Write:
    """Queue a write; answer with ``stored`` or ``store_failed``. ``force``: past the backlog."""

    op: int | None
    write: WriteOp
    force: bool = False


@dataclass(frozen=True)
class Publish:
    msg: NodeMessage


@dataclass(frozen=True)
class LookupChat:
    """Ask the store for the seq of a chat by sender and id; answer with ``chat_found``."""

    op: int
    user: str
    client_id: str


@dataclass(frozen=True)
class CheckPeer:
    """Ask the broker whether ``user`` holds a connection anywhere; answer ``peer_checked``."""

    conn: str
    user: str
    frame: Frame


@dataclass(frozen=True)
class CheckHolders:
    """Ask the broker which of ``users`` hold a connection; answer with ``holders``."""

    users: tuple[str, ...]
    purpose: str  # "sweep", "grace" or "claim" (see ``Room.holders_checked``)


@dataclass(frozen=True)
class Load:
    """Read stored events ``(after, upto]``; answer with ``loaded``."""

    after: int
    upto: int | None


@dataclass(frozen=True)
class ReloadNotes:
    """Read the session's stored notes updates; answer with ``notes_reloaded``."""


@dataclass(frozen=True)
class Compact:
    """Fold the stored notes updates into one row; answer with ``compacted``."""


@dataclass(frozen=True)
class Finish:
    """The session is over: forget its seq counter and retry keys."""


Effect = (
    Send
    | Welcome
    | Deliver
    | CloseConn
    | Allocate
    | Write
    | Publish
    | LookupChat
    | CheckPeer
    | CheckHolders
    | Load
    | ReloadNotes
    | Compact
    | Finish
)


# state ---------------------------------------------------------------------------------------
@dataclass
class _Conn:
    user: str
    fmt: Format
    limiter: TokenBucket


@dataclass
class _Op:
    """A durable event on its way: allocated, then stored."""

    kind: str
    body: Frame
    user: str
    key: str | None = None
    conn: str | None = None
    ref: str | None = None
    since: float | None = None
    seq: int | None = None
    packed: bytes | None = None
    retried: bool = False  # a store failure was already looked into once


def chat_key(user_id: str, client_id: str) -> str:
    return f"{user_id}\x00{client_id}"


def is_stale(now: float, last_activity: float, grace: float, anyone_connected: bool) -> bool:
    """A session nobody is in, idle for longer than the grace period, is over."""
    return not anyone_connected and now - last_activity > grace


@dataclass
class Room:
    pair_id: str
    session_id: str
    members: dict[str, Member]
    node: str
    config: Config = field(default_factory=Config)
    head: int = 0
    notes: Notes = field(default_factory=Notes)
    present: set[str] = field(default_factory=set)  # presence as decided, ahead of storage
    joined: dict[str, int] = field(default_factory=dict)  # seq of each member's last join
    ended: bool = False
    ending: bool = False  # an end was decided here and is being stored
    goal: str | None = None
    items: dict[str, Frame] = field(default_factory=dict)  # the pair's items, by id
    record: str = "on"  # "on", "requested" or "off", as stored
    record_by: str | None = None
    record_seq: int | None = None
    conns: dict[str, _Conn] = field(default_factory=dict)
    holders: dict[str, str] = field(default_factory=dict)  # user -> conn id, here
    remote: dict[str, str] = field(default_factory=dict)  # user -> conn id, on other nodes
    _joins: dict[str, TokenBucket] = field(default_factory=dict)  # user -> join limiter
    _early: dict[int, bytes] = field(default_factory=dict)
    _gap_since: float | None = None  # when the oldest open gap was first seen
    _repair_at: float | None = None
    _loading: bool = False
    # key -> seq, oldest first; a dict, not an OrderedDict: a third of the memory (S2 soak)
    _recent: dict[str, int | None] = field(default_factory=dict)
    _waiting: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> (conn, id)
    _awaited: dict[int, str] = field(default_factory=dict)  # seq of another's attempt -> key
    _ops: dict[int, _Op] = field(default_factory=dict)
    _next_op: int = 0
    _notes_count: int = 0
    _compacting: bool = False
    _grace_at: float | None = None
    _sweep_at: float | None = None
    _suspects: set[str] = field(default_factory=set)
    _checking_grace: bool = False
    _record: tuple[str, str | None] | None = None  # decided ahead of storage: (state, by)
    _holes: tuple[int, ...] = ()  # seqs found missing below head when the room was built
    _holes_at: float | None = None

    def __post_init__(self) -> None:
        self.notes.max_update = self.config.notes_max_update
        self.notes.max_bytes = self.config.notes_max_bytes

    # who is here ---------------------------------------------------------------------------
    def online(self, user: str) -> bool:
        """Online means welcomed: a connection here or on another node, until it closes."""
        return user in self.holders or user in self.remote

    def others(self, user: str) -> list[str]:
        return [m for m in self.members if m != user]

    def deadline(self) -> float | None:
        """When ``tick`` next has something to do."""
        # called after every batch of effects (several times a chat): no lists
        due = self._sweep_at
        if self._holes_at is not None and (due is None or self._holes_at < due):
            due = self._holes_at
        # not while the broker is being asked about it
        if not self._checking_grace and self._grace_at is not None:
            if due is None or self._grace_at < due:
                due = self._grace_at
        if self._gap_since is not None:
            gap = self._gap_since + GAP_DEADLINE
            if due is None or gap < due:
                due = gap
            if not self._loading and self._repair_at is not None and self._repair_at < due:
                due = self._repair_at
        return due

    @property
    def droppable(self) -> bool:
        """Nothing left for this node to do: no connection here, nothing in flight, and the
        session is over or lives on where its members are."""
        return (
            not self.conns
            and not self._ops
            and not self._early
            and (self.ended or bool(self.remote))
        )

    # a member comes and goes ----------------------------------------------------------------
    def admit(self, user: str, now: float) -> FatalError | None:
        """Whether ``user`` may join now (before its claim is taken): a member reconnecting in
        a tight loop is refused with 4429 rather than filling the transcript with presence."""
        per_minute = self.config.joins_per_minute
        if per_minute <= 0:
            return None
        bucket = self._joins.get(user)
        if bucket is None:
            bucket = self._joins[user] = TokenBucket(per_minute / 60, now, burst=2 * per_minute)
        if bucket.take(now) == "ok":
            return None
        return FatalError(Close.FLOODING, "too many joins; wait a minute and reconnect")

    def connect(
        self,
        conn: str,
        user: str,
        fmt: Format,
        now: float,
        *,
        ice_servers: list[dict[str, Any]],
        resume: Frame | None = None,
        replaced_elsewhere: bool = False,
        elsewhere: dict[str, str] | None = None,
    ) -> list[Effect]:
        """``conn`` holds the user's claim now. ``replaced_elsewhere``: the claim was taken from
        a live connection on another node; ``elsewhere``: the other members' connections that
        the broker knows of (user -> conn)."""
        out: list[Effect] = []
        old = self.holders.get(user)
        if old is not None:
            del self.conns[old]
            out.append(CloseConn(old, Close.REPLACED, "replaced by a newer connection"))
        self.remote.pop(user, None)
        for uid, cid in (elsewhere or {}).items():
            if uid != user and uid not in self.holders:
                self.remote[uid] = cid
        self.conns[conn] = _Conn(user, fmt, TokenBucket(self.config.rate_limit, now))
        self.holders[user] = conn
        self._grace_at = None
        out.append(Publish(Online(self.session_id, user, conn, self.node)))
        after = 0
        if resume and resume["session_id"] == self.session_id:
            after = min(resume["last_seq"], self.head)
        out.append(Welcome(conn, self.welcome(user, ice_servers), after))
        replaced = old is not None or replaced_elsewhere
        if not replaced and user in self.present:
            # shown present, but no node holds its connection: that node died
            out += self._leave(user)
        # a replacement is neither a leave nor a join; one elsewhere may have its join still
        # on the way, so only a local one whose leave was stored meanwhile joins again
        if not replaced or (old is not None and user not in self.present):
            self.present.add(user)
            body = {"user": self.members[user].as_dict(), "state": "joined"}
            out += self._append(_Op("presence", body, user, conn=conn))
        self._arm_sweep(now)
        return out

    def welcome(self, user: str, ice_servers: list[dict[str, Any]]) -> Frame:
        return {
            "t": "welcome",
            "session_id": self.session_id,
            "user": self.members[user].as_dict(),
            "members": [m.as_dict() for m in self.members.values()],
            "peers": [self.members[m].as_dict() for m in self.others(user) if self.online(m)],
            "head": self.head,
            "ice_servers": ice_servers,
            "notes": self.notes.state(),
            "goal": self.goal,
            "items": self.open_items(),
            "record": self.record,
            "record_by": self.record_by,
        }

    def open_items(self) -> list[Frame]:
        """The pair's open items, from any session, oldest first."""
        open_ = [i for i in self.items.values() if i["state"] == "open"]
        return sorted(open_, key=lambda i: (i["created_at"], i["id"]))

    def closed(self, conn: str, released: bool, now: float) -> list[Effect]:
        """The socket is gone. ``released``: it still held the user's claim (it was not
        replaced, and the broker could be told), so its leave is a durable event."""
        state = self.conns.pop(conn, None)
        if state is None:
            return []  # replaced, or its room was rebuilt: nothing to record
        user = state.user
        del self.holders[user]
        out: list[Effect] = [Publish(Offline(self.session_id, user, conn, self.node))]
        if released and not (self.ended or self.ending) and user in self.present:
            out += self._leave(user)
        self._maybe_idle(now)
        return out

    def _leave(self, user: str) -> list[Effect]:
        # keyed by the join it ends, so nodes that notice it at once (a clean close here, a
        # dead node's sweep there) store it only once
        self.present.discard(user)
        body = {"user": self.members[user].as_dict(), "state": "left"}
        key = f"left\x00{user}\x00{self.joined.get(user, 0)}"
        return self._append(_Op("presence", body, user, key=key))

    def _maybe_idle(self, now: float) -> None:
        """With nobody here or elsewhere, the grace period starts."""
        if self.conns or self.ended or self.ending or self.remote:
            return
        if self._grace_at is None:
            self._grace_at = now + self.config.session_grace

    def started(
        self, held: dict[str, str | None], now: float, missing: Sequence[int] = ()
    ) -> list[Effect]:
        """The room was just built from the store. ``held``: each member's connection that the
        broker knows of (read after presence); a member shown present that no node holds left
        (its node died). ``missing``: seqs below head that the store lacks; voided unless
        they are filled within the gap deadline."""
        out: list[Effect] = []
        for user, conn in held.items():
            if user in self.holders or user in self.remote:
                continue  # heard of since (a message replayed from the build)
            if conn is not None:
                self.remote[user] = conn
            elif user in self.present:
                out += self._leave(user)
        if missing:
            self._holes = tuple(missing)
            self._holes_at = now + GAP_DEADLINE
        self._maybe_idle(now)
        return out

    def erased(self) -> list[Effect]:
        """The pair is gone: its members' sockets close with 4403 and nothing more is decided."""
        out: list[Effect] = [
            CloseConn(c, Close.FORBIDDEN, "this pair was erased") for c in self.conns
        ]
        self.conns.clear()
        self.holders.clear()
        self.remote.clear()
        self.ended = True
        self._grace_at = None
        return out

    def lease_lost(self) -> list[Effect]:
        """This node may no longer serve the room: close every connection here with 1013."""
        out: list[Effect] = [
            CloseConn(c, Close.TRY_AGAIN, "this node lost its lease; reconnect") for c in self.conns
        ]
        self.conns.clear()
        self.holders.clear()
        return out

    # a member's frame --------------------------------------------------------------------------
    def receive(self, conn: str, data: bytes | str, now: float) -> list[Effect]:
        state = self.conns.get(conn)
        if state is None:
            return []
        verdict = state.limiter.take(now)
        ref: str | None = None
        try:
            if verdict == "flood":  # after what is queued: the rate_limited warnings
                return [CloseConn(conn, Close.FLOODING, "too many frames", after_queue=True)]
            if verdict != "ok":
                raise RateLimited("too many frames; slow down")
            frame = decode(data, state.fmt)
            ref = frame.get("id")
            return self._frame(conn, state.user, frame, now)
        except ProtocolError as exc:
            if exc.ref is None:
                exc.ref = ref if ref is not None else _peek_id(data)
            return [Send(conn, exc.frame())]

    def _frame(self, conn: str, user: str, frame: Frame, now: float) -> list[Effect]:
        t = frame["t"]
        if self.ended or self.ending:
            return []  # nothing is decided after the session's end, even before it is stored
        if t == "ping":
            return [Send(conn, {"t": "pong", "head": self.head})]
        if t in ACKED_TYPES:
            return self._durable(conn, user, frame, now)
        if t == "typing":
            return self._relay(user, {"t": "typing", "from": user, "on": frame["on"]})
        if t == "awareness":
            return self._relay(user, {"t": "awareness", "from": user, "u": frame["u"]})
        if t == "notes":
            op = self._next_op + 1
            self.notes.check(op, frame["u"])
            self._op(_Op("notes", {"u": frame["u"]}, user, conn=conn))
            return [Write(op, StoredNotes(self.session_id, frame["u"]))]
        if t == "signal":
            relay = {"t": "signal", "from": user, "data": frame["data"]}
            if any(self.online(m) for m in self.others(user)):
                return self._relay(user, relay)
            # not known here as online: the broker knows whether a node holds it
            return [CheckPeer(conn, self.others(user)[0], relay)]
        if t == "end":
            self.ending = True
            return self._append(_Op("ended", {"by": user}, user, conn=conn))
        raise Invalid(f"{t!r} is not allowed after hello")

    def _relay(self, user: str, frame: Frame) -> list[Effect]:
        return [Publish(Relayed(self.session_id, user, encode_packed(frame)))]

    def peer_checked(self, conn: str, user: str, holder: str | None, frame: Frame) -> list[Effect]:
        if holder is None:
            return [Send(conn, PeerAbsent("the other member is not in the room").frame())]
        if user not in self.holders:
            self.remote[user] = holder
        return self._relay(frame["from"], frame)

    def _durable(self, conn: str, user: str, frame: Frame, now: float) -> list[Effect]:
        """A frame that creates a durable event: acked once stored, once per sender and id."""
        t, cid = frame["t"], frame["id"]
        key = chat_key(user, cid)
        if key in self._recent:  # a retry of one stored (or kept off the record)
            return [Send(conn, _ack(cid, self._recent[key]))]
        if key in self._waiting:  # its first attempt is in flight: ack both once it is stored
            self._waiting[key].append((conn, cid))
            return []
        if t == "chat" and self._record_state()[0] == "off":
            return self._off_record(conn, user, frame, now)
        body = self._body(user, frame)
        if body is None:  # changes nothing: acked with the seq of what set the state
            self._remember(key, self.record_seq)
            return [Send(conn, _ack(cid, self.record_seq))]
        self._waiting[key] = []
        return self._append(_Op(t, body, user, key, conn, cid, now))

    def _body(self, user: str, frame: Frame) -> Frame | None:
        """The durable event a frame makes (without seq and ts); raise :class:`Invalid`."""
        t, cid = frame["t"], frame["id"]
        if t == "chat":
            return {"id": cid, "from": user, "text": frame["text"]}
        if t == "goal":
            return {"id": cid, "by": user, "text": frame["text"]}
        if t == "item":
            if frame["owner"] not in self.members:
                raise Invalid("'owner' must be one of the pair's members", cid)
            item = {"text": frame["text"], "owner": frame["owner"], "due": frame["due"]}
            return {"id": cid, "by": user, "item": {**item, "state": "open", "by": user}}
        if t == "item_update":
            if frame["item"] not in self.items:
                raise Invalid("'item' is not an item of this pair", cid)
            if "owner" in frame and frame["owner"] not in self.members:
                raise Invalid("'owner' must be one of the pair's members", cid)
            changes: Frame = {k: frame[k] for k in ("state", "text", "owner", "due") if k in frame}
            return {"id": cid, "by": user, "item": frame["item"], **changes}
        if t == "mark":
            ref = frame["ref"]
            if ref is not None and not 1 <= ref <= self.head:
                raise Invalid("'ref' must be the seq of an event of this session", cid)
            return {"id": cid, "by": user, "kind": frame["kind"], "text": frame["text"], "ref": ref}
        state = self._record_change(user, frame["on"])
        if state is None:
            return None
        self._record = (state, user)
        return {"id": cid, "by": user, "state": state}

    def _record_state(self) -> tuple[str, str | None]:
        return self._record or (self.record, self.record_by)

    def _record_change(self, user: str, on: bool) -> str | None:
        """Off the record needs both: one asks, the other agrees; either turns it back on."""
        state, by = self._record_state()
        if on:
            return "on" if state != "on" else None
        if state == "on":
            return "requested"
        if state == "requested" and by != user:
            return "off"
        return None  # the requester asking again, or off already

    def _off_record(self, conn: str, user: str, frame: Frame, now: float) -> list[Effect]:
        """Relayed live to both members, kept nowhere; a retry gets the same answer."""
        cid = frame["id"]
        self._remember(chat_key(user, cid), OFF_RECORD)
        chat = {"t": "chat", "id": cid, "from": user, "text": frame["text"], "ts": now}
        return [
            Send(conn, _ack(cid, OFF_RECORD)),
            Publish(Relayed(self.session_id, "", encode_packed({**chat, "off": True}))),
        ]

    def _remember(self, key: str, seq: int | None) -> None:
        self._recent[key] = seq
        if len(self._recent) > DEDUP_WINDOW:
            del self._recent[next(iter(self._recent))]

    # the life of a durable event -------------------------------------------------------------
    def _op(self, op: _Op) -> int:
        self._next_op += 1
        self._ops[self._next_op] = op
        return self._next_op

    def _append(self, op: _Op) -> list[Effect]:
        return [Allocate(self._op(op), op.key)]

    def allocated(self, op_id: int, seq: int, new: bool, now: float) -> list[Effect]:
        op = self._ops.get(op_id)
        if op is None:
            return []
        if self.ended:
            del self._ops[op_id]
            return []
        if not new:
            if op.kind not in ACKED_TYPES:
                del self._ops[op_id]  # a leave another node is storing
                return []
            if seq > self.head:  # the first attempt is on its way, here or on another node
                del self._ops[op_id]
                assert op.key is not None and op.conn is not None and op.ref is not None
                self._waiting.setdefault(op.key, []).append((op.conn, op.ref))
                self._awaited[seq] = op.key
                return []
            # that seq is behind us: stored long ago, or never (it was voided)
            return [LookupChat(op_id, op.user, op.body["id"])]
        op.seq = seq
        if op.kind == "item":  # its id and creation time, now that it has a seq
            item = {"id": f"{self.session_id[:12]}.{seq}", **op.body["item"]}
            op.body["item"] = {**item, "session_id": self.session_id, "created_at": now}
        frame = {"t": op.kind, "seq": seq, **op.body, "ts": now}
        op.packed = encode_packed(frame)
        write = StoredEvent(
            self.session_id,
            seq,
            op.kind,
            op.user,
            op.body["id"] if op.kind in ACKED_TYPES else None,
            now,
            op.packed,
            ends_session=op.kind == "ended",
        )
        return [Write(op_id, write)]

    def allocate_failed(self, op_id: int, now: float) -> list[Effect]:
        op = self._ops.pop(op_id, None)
        if op is None:
            return []
        return self._failed(op, "the room is unavailable; retry", now)

    def chat_found(self, op_id: int, seq: int | None, now: float) -> list[Effect]:
        op = self._ops.get(op_id)
        if op is None:
            return []
        if seq is not None:
            del self._ops[op_id]
            return self._acked(op, seq)
        if op.retried:  # the store refused this chat twice
            del self._ops[op_id]
            return self._failed(op, "the store rejected this frame", now)
        op.key = None  # never stored: this retry is a new attempt, under a new seq
        return [Allocate(op_id, None)]

    def stored(self, op_id: int) -> list[Effect]:
        op = self._ops.pop(op_id, None)
        if op is None:
            return []
        if op.kind == "notes":
            self.notes.settled(op_id, stored=True)
            return self._notes_stored(op)
        assert op.seq is not None and op.packed is not None
        out: list[Effect] = []
        if op.kind in ACKED_TYPES and op.conn is not None:
            ack = {"t": "ack", "id": op.ref, "seq": op.seq}
            out.append(Send(op.conn, ack, op.since, hold=True))
        out.append(Publish(Stored(self.session_id, op.seq, op.packed)))
        return out

    def store_failed(self, op_id: int, now: float) -> list[Effect]:
        """The write was not stored (refused, or never queued): its seq becomes a void."""
        op = self._ops.pop(op_id, None)
        if op is None or op.kind == "void":
            return []  # a void refused: that seq is filled already
        out: list[Effect] = []
        if op.seq is not None:
            out += self._void(op.seq, now)
        if op.kind == "notes":
            self.notes.settled(op_id, stored=False)
            if op.conn in self.conns:
                error = Unavailable("notes update not stored; send what this lacks").frame()
                sv = self.notes.state_vector()
                out.append(Send(op.conn, {**error, "about": "notes", "sv": sv}))
            return out
        if op.kind in ACKED_TYPES and not op.retried:
            # refused as a repeat of a chat stored under another seq? the store knows
            op.retried = True
            op.seq = op.packed = None
            return [*out, LookupChat(self._op(op), op.user, op.body["id"])]
        return out + self._failed(op, "the store rejected this frame", now)

    def _failed(self, op: _Op, why: str, now: float) -> list[Effect]:
        """Nothing was stored: the sender (and retries waiting on it) may try again."""
        out: list[Effect] = []
        if op.kind == "presence" and op.body["state"] == "joined" and op.conn in self.conns:
            # a join that is not stored: neither is a leave for it; the client comes back
            self.present.discard(op.user)
            del self.conns[op.conn]
            del self.holders[op.user]
            out.append(CloseConn(op.conn, Close.TRY_AGAIN, "the room is unavailable; retry"))
            out.append(Publish(Offline(self.session_id, op.user, op.conn, self.node)))
            self._maybe_idle(now)
        if op.kind == "ended":
            self.ending = False
        if op.kind == "record":
            self._record = None  # back to what is stored
        waiting = (
            self._waiting.pop(chat_key(op.user, op.body["id"]), [])
            if op.kind in ACKED_TYPES
            else []
        )
        if op.conn is not None and op.ref is not None:
            waiting.insert(0, (op.conn, op.ref))
        for conn, cid in waiting:
            out.append(Send(conn, Unavailable(why, cid).frame()))
        return out

    def _acked(self, op: _Op, seq: int) -> list[Effect]:
        waiting = self._waiting.pop(chat_key(op.user, op.body["id"]), [])
        if op.conn is not None and op.ref is not None:
            waiting.insert(0, (op.conn, op.ref))
        return [Send(c, {"t": "ack", "id": cid, "seq": seq}) for c, cid in waiting]

    def _void(self, seq: int, now: float) -> list[Effect]:
        write = void_event(self.session_id, seq, now)
        op = _Op("void", {}, "", seq=seq, packed=write.body)
        return [Write(self._op(op), write, force=True)]

    # notes --------------------------------------------------------------------------------------
    def _notes_stored(self, op: _Op) -> list[Effect]:
        update = op.body["u"]
        packed = encode_packed({"t": "notes", "from": op.user, "u": update})
        out: list[Effect] = [Publish(NotesStored(self.session_id, op.user, update, packed))]
        self._notes_count += 1
        return out + self._compact_if_due()

    def _compact_if_due(self) -> list[Effect]:
        # counted from the last compaction's start: updates stored while one runs are not
        # forgotten, the next one starts as it ends
        if self._compacting or self._notes_count < self._compact_at:
            return []
        self._compacting = True
        self._notes_count = 0
        return [Compact()]

    @property
    def _compact_at(self) -> int:
        every = self.config.notes_compact_every
        spread = zlib.crc32(self.session_id.encode()) / 2**32 * self.config.notes_compact_jitter
        return every + int(every * spread)

    def compacted(self) -> list[Effect]:
        """The store folded the notes rows; compact again at once if enough came meanwhile."""
        self._compacting = False
        return self._compact_if_due()

    def notes_reloaded(self, updates: Sequence[bytes]) -> list[Effect]:
        """The store's notes merged into this node's copy (which may have missed updates while
        the broker was away); the members here get the document if it changed."""
        before = self.notes.state_vector()
        for update in updates:
            with contextlib.suppress(Exception):
                self.notes.apply(update)
        if self.notes.state_vector() == before:
            return []
        out: list[Effect] = []
        for user, conn in self.holders.items():
            sender = self.others(user)[0]
            out.append(Send(conn, {"t": "notes", "from": sender, "u": self.notes.state()}))
        return out

    # what other nodes say ---------------------------------------------------------------------
    def message(self, msg: NodeMessage, now: float) -> list[Effect]:
        if isinstance(msg, Erased):
            return self.erased()
        if msg.session != self.session_id:
            return []  # a late message of an earlier session of this room
        if isinstance(msg, Stored):
            return self.committed([(msg.seq, msg.packed)], now)
        if isinstance(msg, Relayed):
            return [Deliver(msg.packed, skip=msg.sender)]
        if isinstance(msg, NotesStored):
            with contextlib.suppress(Exception):
                self.notes.apply(msg.update)
            return [Deliver(msg.packed, skip=msg.sender)]
        if msg.node == self.node:
            return []
        if isinstance(msg, Online):
            self._grace_at = None
            if msg.user in self.holders:  # replaced on another node, or older news? the claim
                return [CheckHolders((msg.user,), "claim")]
            self.remote[msg.user] = msg.conn
            return []
        if self.remote.get(msg.user) == msg.conn:  # Offline
            del self.remote[msg.user]
            self._maybe_idle(now)
        return []

    # committed events, in seq order -----------------------------------------------------------
    def committed(self, events: Iterable[tuple[int, bytes]], now: float) -> list[Effect]:
        """Take stored events (in any order, repeats welcome); deliver those now in order."""
        out: list[Effect] = []
        for seq, packed in events:
            if seq > self.head:
                self._early[seq] = packed
        while self.head + 1 in self._early:
            self.head += 1
            packed = self._early.pop(self.head)
            out.append(Deliver(packed, self.head))
            out += self._apply(unpack(packed), now)
        if not self._early:
            self._gap_since = self._repair_at = None
        elif self._gap_since is None:
            self._gap_since = now
            self._repair_at = now + REPAIR_AFTER
        return out

    def _apply(self, event: Frame, now: float) -> list[Effect]:
        t = event["t"]
        seq = event["seq"]
        out: list[Effect] = []
        if t in ACKED_TYPES:
            key = chat_key(event.get("from") or event["by"], event["id"])
            self._remember(key, seq)
            self._awaited.pop(seq, None)
            out = [Send(c, _ack(cid, seq)) for c, cid in self._waiting.pop(key, [])]
        if t == "goal":
            self.goal = event["text"] or None
        elif t == "item":
            self.items[event["item"]["id"]] = event["item"]
        elif t == "item_update" and event["item"] in self.items:
            changes: Frame = {k: event[k] for k in ("state", "text", "owner", "due") if k in event}
            self.items[event["item"]] = {**self.items[event["item"]], **changes}
        elif t == "record":
            self.record, self.record_by, self.record_seq = event["state"], event["by"], seq
            self._record = None
        if out or t in ACKED_TYPES:
            return out
        if t == "presence":  # decided here or on another node: either way it holds now
            uid = event["user"]["id"]
            if event["state"] == "joined":
                self.joined[uid] = seq
                self.present.add(uid)
            else:
                self.present.discard(uid)
        elif t == "void" and seq in self._awaited:
            # the attempt that retries were waiting on was never stored: theirs is a new one
            key = self._awaited.pop(seq)
            waiting = self._waiting.pop(key, [])
            return [Send(c, Unavailable("not stored; retry", cid).frame()) for c, cid in waiting]
        elif t == "ended":
            self.ended = True
            self._grace_at = None
            closes: list[Effect] = [
                CloseConn(c, Close.NORMAL, "session ended", after_queue=True) for c in self.conns
            ]
            return [*closes, Finish()]
        return []

    def loaded(self, rows: Sequence[tuple[int, bytes]], now: float) -> list[Effect]:
        self._loading = False
        return self.committed(rows, now)

    def repair(self, now: float) -> list[Effect]:
        """The broker lost messages (its connection dropped): catch up from the store, and
        learn again who holds which connection (an Online or Offline may be lost too)."""
        return [Load(self.head, None), ReloadNotes(), CheckHolders(tuple(self.members), "claim")]

    def failed(self, effect: Effect, now: float) -> list[Effect]:
        """An effect that asked the broker or the store could not be carried out."""
        if isinstance(effect, Allocate | LookupChat):
            return self.allocate_failed(effect.op, now)
        if isinstance(effect, CheckPeer):
            return [Send(effect.conn, Unavailable("the room is unavailable; retry").frame())]
        if isinstance(effect, CheckHolders) and effect.purpose == "grace":
            self._checking_grace = False
            self._grace_at = now + self.config.sweep_interval  # ask again a little later
        elif isinstance(effect, Load):
            self._loading = False
        elif isinstance(effect, Compact):
            self._compacting = False
        return []

    # time -------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self._gap_since is not None and self._early:
            upto = min(self._early) - 1
            if now >= self._gap_since + GAP_DEADLINE:
                # allocated, then never stored (its node died before the commit): void it
                for seq in range(self.head + 1, upto + 1):
                    out += self._void(seq, now)
                self._gap_since = now
                self._repair_at = now + REPAIR_AFTER
            elif self._repair_at is not None and now >= self._repair_at and not self._loading:
                self._loading = True
                out.append(Load(self.head, upto))
                self._repair_at = now + REPAIR_AFTER
        if self._holes_at is not None and now >= self._holes_at:
            for seq in self._holes:
                out += self._void(seq, now)  # refused, harmlessly, if filled meanwhile
            self._holes, self._holes_at = (), None
        if self._sweep_at is not None and now >= self._sweep_at:
            self._sweep_at = None
            users = tuple(u for u in self.members if u not in self.holders)
            if not self.ended and users and (self.present | set(self.remote)) & set(users):
                out.append(CheckHolders(users, "sweep"))
            self._arm_sweep(now)
        if self._grace_at is not None and now >= self._grace_at and not self._checking_grace:
            self._checking_grace = True
            out.append(CheckHolders(tuple(self.members), "grace"))
        return out

    def _arm_sweep(self, now: float) -> None:
        if self._sweep_at is None and not self.ended:
            self._sweep_at = now + self.config.sweep_interval

    def holders_checked(
        self, purpose: str, held: dict[str, str | None], now: float
    ) -> list[Effect]:
        """The broker's answer to ``CheckHolders``: user -> connection (None: none, anywhere).

        ``claim``: a connection here whose claim another connection took is replaced (4409).
        ``grace``: nobody anywhere, still past the grace period: the session is over.
        ``sweep``: a member shown present that no node holds for two sweeps in a row left.
        """
        out: list[Effect] = []
        for user, conn in held.items():
            mine = self.holders.get(user)
            if mine is None:
                if conn is None:
                    self.remote.pop(user, None)
                else:
                    self.remote[user] = conn
            elif conn is not None and conn != mine and purpose == "claim":
                del self.holders[user]
                del self.conns[mine]
                self.remote[user] = conn
                out.append(CloseConn(mine, Close.REPLACED, "replaced by a newer connection"))
        if purpose == "grace":
            self._checking_grace = False
            expired = self._grace_at is not None and now >= self._grace_at
            if self.holders or self.remote or self.ended or self.ending or not expired:
                if self.holders or self.remote:
                    self._grace_at = None
                return out
            self.ended = True
            self._grace_at = None
            return [Write(None, EndSession(self.session_id, now)), Finish()]
        if purpose == "sweep":
            missing = {u for u, c in held.items() if c is None and u not in self.holders}
            for user in sorted(missing & self._suspects):
                if user in self.present and not (self.ended or self.ending):
                    out += self._leave(user)
            self._suspects = missing - self._suspects
        self._maybe_idle(now)
        return out


def _ack(cid: str, seq: int | None) -> Frame:
    """An ack; ``seq`` None: a record frame that changed nothing while recording has been on
    since the start; ``OFF_RECORD``: a chat kept off the record."""
    if seq == OFF_RECORD:
        return {"t": "ack", "id": cid, "seq": None, "off": True}
    return {"t": "ack", "id": cid, "seq": seq}


def encode_packed(frame: Frame) -> bytes:
    data = encode(frame)
    assert isinstance(data, bytes)
    return data


def _peek_id(data: bytes | str) -> str | None:
    with contextlib.suppress(Exception):
        raw = unpack(data) if isinstance(data, bytes | bytearray) else None
        ref = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(ref, str):
            return ref
    return None
