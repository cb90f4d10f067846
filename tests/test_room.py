"""The room machine, without sockets or an event loop: inputs in, effects out, a fake clock.

Each test plays the hub's part by hand: it answers the machine's questions (a seq, a stored
write, a holder) exactly as the broker and the store would.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pycrdt
import pytest

from persistence.store import EndSession, StoredEvent, StoredNotes
from rooms.errors import Close
from rooms.messages import NotesStored, Offline, Online, Relayed, Stored
from rooms.room import (
    DEDUP_WINDOW,
    GAP_DEADLINE,
    REPAIR_AFTER,
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
    Room,
    Send,
    Welcome,
    Write,
    is_stale,
)

MENTOR = Member("u-mentor", "Mara", "mentor")
MENTEE = Member("u-mentee", "Milo", "mentee")
T0 = 1000.0


def make_room(**kw: Any) -> Room:
    return Room("pair-1", "sess-1", {MENTOR.id: MENTOR, MENTEE.id: MENTEE}, "node-a", **kw)


def pack(frame: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(frame, use_bin_type=True)
    return data


def of(effects: list[Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def sent(effects: list[Effect], conn: str) -> list[dict[str, Any]]:
    return [e.frame for e in effects if isinstance(e, Send) and e.conn == conn]


def seqs(effects: list[Effect]) -> list[int]:
    return [e.seq for e in effects if isinstance(e, Deliver) and e.seq is not None]


class Driver:
    """Plays broker and store for one room: hands out seqs, stores what it is asked to."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.next_seq = room.head + 1
        self.keys: dict[str | None, int] = {}
        self.table: dict[int, StoredEvent] = {}

    def seq_for(self, effect: Allocate) -> tuple[int, bool]:
        if effect.key is not None and effect.key in self.keys:
            return self.keys[effect.key], False
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        if effect.key is not None:
            self.keys[effect.key] = seq
        return seq, True

    def run(self, effects: list[Effect], now: float = T0, store: bool = True) -> list[Effect]:
        """Answer allocations and (if ``store``) writes; publish stored events back in."""
        seen: list[Effect] = []
        todo = list(effects)
        while todo:
            e = todo.pop(0)
            seen.append(e)
            if isinstance(e, Allocate):
                todo += self.room.allocated(e.op, *self.seq_for(e), now)
            elif isinstance(e, Write) and store and e.op is not None:
                if isinstance(e.write, StoredEvent):
                    self.table.setdefault(e.write.seq, e.write)
                todo += self.room.stored(e.op)
            elif isinstance(e, Publish) and isinstance(e.msg, Stored | NotesStored):
                todo += self.room.message(e.msg, now)
        return seen

    def connect(self, conn: str, member: Member, now: float = T0, **kw: Any) -> list[Effect]:
        return self.run(self.room.connect(conn, member.id, "msgpack", now, ice_servers=[], **kw))

    def frame(self, conn: str, frame: dict[str, Any], now: float = T0) -> list[Effect]:
        return self.run(self.room.receive(conn, pack(frame), now), now)


def welcomed(effects: list[Effect]) -> dict[str, Any]:
    (w,) = of(effects, Welcome)
    frame: dict[str, Any] = w.frame
    return frame


# joining ------------------------------------------------------------------------
def test_connect_welcomes_then_stores_the_join() -> None:
    d = Driver(make_room())
    out = d.connect("c1", MENTOR)
    w = welcomed(out)
    assert w["head"] == 0 and w["peers"] == [] and w["user"] == MENTOR.as_dict()
    assert of(out, Publish)[0].msg == Online("sess-1", MENTOR.id, "c1", "node-a")
    assert [ev.kind for ev in d.table.values()] == ["presence"]
    assert d.room.head == 1 and seqs(out) == [1]


def test_joins_are_limited_per_member_and_refill_with_time() -> None:
    room = make_room(config=Config(joins_per_minute=6))  # bursts of 12, then one per 10 s
    assert all(room.admit(MENTEE.id, T0) is None for _ in range(12))
    refused = room.admit(MENTEE.id, T0)
    assert refused is not None and refused.close_code == Close.FLOODING
    assert room.admit(MENTOR.id, T0) is None  # each member has its own allowance
    assert room.admit(MENTEE.id, T0 + 9.9) is not None
    assert room.admit(MENTEE.id, T0 + 10.1) is None
    assert room.admit(MENTEE.id, T0 + 10.2) is not None
    off = make_room(config=Config(joins_per_minute=0))
    assert all(off.admit(MENTEE.id, T0) is None for _ in range(1000))


def test_online_means_welcomed_not_stored() -> None:
    d = Driver(make_room())
    # the mentor's join is allocated but not stored yet
    d.room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    out = d.run(d.room.connect("c2", MENTEE.id, "msgpack", T0, ice_servers=[]), store=False)
    assert welcomed(out)["peers"] == [MENTOR.as_dict()]
    # and a signal to it is relayed at once, with no question to the broker
    relay = d.frame("c2", {"t": "signal", "data": {"type": "bye"}})
    assert of(relay, CheckPeer) == []
    assert [type(p.msg) for p in of(relay, Publish)] == [Relayed]


def test_online_on_another_node_is_known_from_the_claims_and_messages() -> None:
    d = Driver(make_room())
    out = d.connect("c1", MENTOR, elsewhere={MENTEE.id: "c9"})
    assert welcomed(out)["peers"] == [MENTEE.as_dict()]
    d.room.message(Offline("sess-1", MENTEE.id, "c9", "node-b"), T0)
    assert not d.room.online(MENTEE.id)
    d.room.message(Online("sess-1", MENTEE.id, "c10", "node-b"), T0)
    assert d.room.online(MENTEE.id)
    # an Offline of an older connection does not undo a newer Online
    d.room.message(Offline("sess-1", MENTEE.id, "c9", "node-b"), T0)
    assert d.room.online(MENTEE.id)


def test_a_second_connection_replaces_the_first_without_presence() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    out = d.connect("c2", MENTOR)
    assert CloseConn("c1", Close.REPLACED, "replaced by a newer connection") in out
    assert of(out, Allocate) == []  # neither a leave nor a join
    assert d.room.closed("c1", released=False, now=T0) == []


def test_replacement_from_another_node_closes_the_local_connection() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    (check,) = d.room.message(Online("sess-1", MENTOR.id, "c7", "node-b"), T0)
    assert check == CheckHolders((MENTOR.id,), "claim")  # the claim decides, not the message
    assert d.room.holders_checked("claim", {MENTOR.id: "c7"}, T0) == [
        CloseConn("c1", Close.REPLACED, "replaced by a newer connection")
    ]
    assert d.room.online(MENTOR.id) and d.room.conns == {}


def test_an_online_message_older_than_the_local_connection_closes_nothing() -> None:
    d = Driver(make_room())
    d.connect("c3", MENTOR)  # it took the claim after c2 on node B did
    assert of(d.room.message(Online("sess-1", MENTOR.id, "c2", "node-b"), T0), CheckHolders)
    assert d.room.holders_checked("claim", {MENTOR.id: "c3"}, T0) == []
    assert d.room.holders == {MENTOR.id: "c3"}


def test_resume_replays_from_the_clients_last_seq() -> None:
    d = Driver(make_room(head=7))
    out = d.connect("c1", MENTOR, resume={"session_id": "sess-1", "last_seq": 5})
    assert of(out, Welcome)[0].after == 5
    out = d.connect("c2", MENTEE, resume={"session_id": "other", "last_seq": 5})
    assert of(out, Welcome)[0].after == 0


def test_a_join_that_cannot_be_stored_closes_1013_and_leaves_no_leave() -> None:
    room = make_room()
    out = room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    (alloc,) = of(out, Allocate)
    out = room.allocate_failed(alloc.op, T0)
    assert CloseConn("c1", Close.TRY_AGAIN, "the room is unavailable; retry") in out
    assert room.closed("c1", released=True, now=T0) == []
    assert MENTOR.id not in room.present


# chats ------------------------------------------------------------------------
def test_a_chat_is_acked_once_stored_and_delivered_to_all() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    out = d.frame("c1", {"t": "chat", "id": "m1", "text": "hello"})
    assert {"t": "ack", "id": "m1", "seq": 2} in sent(out, "c1")
    assert seqs(out) == [2]
    assert d.table[2].client_id == "m1" and d.table[2].user_id == MENTOR.id
    # the ack may wait for its chat on the channel, to share one write with it
    (ack,) = [e for e in of(out, Send) if e.frame["t"] == "ack"]
    assert ack.hold


def test_a_retry_while_the_first_try_is_in_flight_is_acked_once_stored() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    first = d.room.receive("c1", pack({"t": "chat", "id": "m1", "text": "x"}), T0)
    d.connect("c2", MENTOR)  # the client reconnected and retries
    retry = d.run(d.room.receive("c2", pack({"t": "chat", "id": "m1", "text": "x"}), T0))
    assert retry == []  # it waits for the first try
    out = d.run(first)
    assert {"t": "ack", "id": "m1", "seq": 2} in sent(out, "c2")
    assert [ev.kind for ev in d.table.values()].count("chat") == 1


def test_a_retry_of_another_nodes_attempt_waits_for_its_commit() -> None:
    room = make_room(head=1)
    room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    out = room.receive("c1", pack({"t": "chat", "id": "m1", "text": "x"}), T0)
    (alloc,) = of(out, Allocate)
    assert room.allocated(alloc.op, 5, False, T0) == []  # seq 5 is on its way elsewhere
    chat = pack({"t": "chat", "seq": 2, "id": "m1", "from": MENTOR.id, "text": "x", "ts": T0})
    out = room.committed([(2, chat)], T0)
    assert {"t": "ack", "id": "m1", "seq": 2} in sent(out, "c1")


def test_a_retry_whose_attempt_was_voided_is_told_to_try_again() -> None:
    room = make_room(head=1)
    room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    (alloc,) = of(room.receive("c1", pack({"t": "chat", "id": "m1", "text": "x"}), T0), Allocate)
    room.allocated(alloc.op, 2, False, T0)
    out = room.committed([(2, pack({"t": "void", "seq": 2, "ts": T0}))], T0)
    (err,) = sent(out, "c1")
    assert err["code"] == "unavailable" and err["ref"] == "m1"


def test_a_write_failure_becomes_a_void_and_the_sender_hears_of_it() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    out = d.room.receive("c1", pack({"t": "chat", "id": "m1", "text": "x"}), T0)
    (alloc,) = of(out, Allocate)
    (store,) = of(d.room.allocated(alloc.op, 2, True, T0), Write)
    out = d.room.store_failed(store.op, T0)
    (void,) = [e for e in of(out, Write) if e.force]
    assert void.write.kind == "void" and void.write.seq == 2
    assert msgpack.unpackb(void.write.body) == {"t": "void", "seq": 2, "ts": T0}
    (lookup,) = of(out, LookupChat)  # stored under another seq by another attempt?
    out = d.room.chat_found(lookup.op, None, T0)  # no: refused; the client retries
    assert sent(out, "c1") == [
        {
            "t": "error",
            "code": "unavailable",
            "message": "the store rejected this frame",
            "ref": "m1",
        }
    ]
    # the void is stored and delivered like any event
    out = d.room.stored(void.op)
    assert [p.msg for p in of(out, Publish)] == [Stored("sess-1", 2, void.write.body)]


def test_a_write_that_cannot_even_be_queued_is_voided_too() -> None:
    room = make_room()
    out = room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    (alloc,) = of(out, Allocate)
    (store,) = of(room.allocated(alloc.op, 1, True, T0), Write)
    out = room.store_failed(store.op, T0)
    assert [s.write.kind for s in of(out, Write)] == ["void"]


def test_dedup_keeps_a_bounded_window_and_asks_the_store_for_older_retries() -> None:
    d = Driver(make_room(config=Config(rate_limit=0)))
    d.connect("c1", MENTOR)
    last = DEDUP_WINDOW + 49
    for i in range(last + 1):
        d.frame("c1", {"t": "chat", "id": f"m{i}", "text": "x"})
    assert len(d.room._recent) == DEDUP_WINDOW  # bounded, however long the session
    newest = d.frame("c1", {"t": "chat", "id": f"m{last}", "text": "x"})
    assert sent(newest, "c1") == [{"t": "ack", "id": f"m{last}", "seq": last + 2}]
    out = d.room.receive("c1", pack({"t": "chat", "id": "m0", "text": "x"}), T0)
    (alloc,) = of(out, Allocate)
    (lookup,) = d.room.allocated(alloc.op, 2, False, T0)  # the broker knows it, seq 2 < head
    assert lookup == LookupChat(lookup.op, MENTOR.id, "m0")
    assert d.room.chat_found(lookup.op, 2, T0) == [Send("c1", {"t": "ack", "id": "m0", "seq": 2})]


# ordering, gaps and voids ------------------------------------------------------------------------
def ev(seq: int) -> tuple[int, bytes]:
    return seq, pack({"t": "chat", "seq": seq, "id": f"x{seq}", "from": MENTEE.id, "text": "t"})


def test_events_are_delivered_in_seq_order_once() -> None:
    room = make_room()
    assert seqs(room.committed([ev(2), ev(3)], T0)) == []
    assert seqs(room.committed([ev(1)], T0)) == [1, 2, 3]
    assert seqs(room.committed([ev(2), ev(1)], T0)) == []


def test_a_gap_is_repaired_from_the_store() -> None:
    room = make_room()
    room.committed([ev(1), ev(3)], T0)
    assert room.deadline() == T0 + REPAIR_AFTER
    assert room.tick(T0 + 0.1) == []
    assert room.tick(T0 + REPAIR_AFTER) == [Load(1, 2)]
    assert room.tick(T0 + REPAIR_AFTER + 0.01) == []  # one load at a time
    assert seqs(room.loaded([ev(2)], T0 + 0.3)) == [2, 3]
    assert room.deadline() is None


def test_a_gap_that_never_fills_is_voided() -> None:
    room = make_room()
    room.committed([ev(1), ev(4)], T0)
    room.tick(T0 + REPAIR_AFTER)
    room.loaded([], T0 + REPAIR_AFTER)
    out = room.tick(T0 + GAP_DEADLINE)
    voids = [s.write for s in of(out, Write)]
    assert [(w.kind, w.seq) for w in voids] == [("void", 2), ("void", 3)]
    (op2, op3) = [s.op for s in of(out, Write)]
    published = of(room.stored(op2) + room.stored(op3), Publish)
    delivered: list[Effect] = []
    for p in published:
        delivered += room.message(p.msg, T0 + GAP_DEADLINE)
    assert seqs(delivered) == [2, 3, 4]


def test_a_void_refused_because_the_seq_is_filled_changes_nothing() -> None:
    room = make_room()
    room.committed([ev(1), ev(3)], T0)
    (store,) = of(room.tick(T0 + GAP_DEADLINE), Write)
    assert room.store_failed(store.op, T0 + GAP_DEADLINE) == []
    assert seqs(room.committed([ev(2)], T0 + GAP_DEADLINE)) == [2, 3]


# signals ------------------------------------------------------------------------
def test_a_signal_to_a_member_not_known_here_asks_the_broker() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    (check,) = d.frame("c1", {"t": "signal", "data": {"type": "bye"}})
    assert isinstance(check, CheckPeer) and check.user == MENTEE.id
    (err,) = sent(d.room.peer_checked("c1", MENTEE.id, None, check.frame), "c1")
    assert err["code"] == "peer_absent"
    out = d.room.peer_checked("c1", MENTEE.id, "c9", check.frame)
    assert [type(p.msg) for p in of(out, Publish)] == [Relayed]
    assert d.room.online(MENTEE.id)


def test_relays_reach_the_others_only() -> None:
    room = make_room()
    packed = pack({"t": "typing", "from": MENTOR.id, "on": True})
    assert room.message(Relayed("sess-1", MENTOR.id, packed), T0) == [
        Deliver(packed, None, MENTOR.id)
    ]
    assert room.message(Relayed("old-session", MENTOR.id, packed), T0) == []


# notes ------------------------------------------------------------------------
def notes_update(text: str, root: str = "notes") -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if root == "notes":
        doc.get("notes", type=pycrdt.Text).insert(0, text)
    else:
        doc.get(root, type=pycrdt.Map)["k"] = text
    return doc.get_update()


def test_notes_are_merged_and_relayed_only_once_stored() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    out = d.room.receive("c1", pack({"t": "notes", "u": notes_update("hello")}), T0)
    (store,) = of(out, Write)
    assert isinstance(store.write, StoredNotes)
    assert d.room.notes.plain() == ""  # not before it is stored
    (pub,) = of(d.room.stored(store.op), Publish)
    assert isinstance(pub.msg, NotesStored)
    out = d.room.message(pub.msg, T0)
    assert d.room.notes.plain() == "hello"
    assert out == [Deliver(pub.msg.packed, None, MENTOR.id)]


def test_notes_stored_during_a_compaction_start_the_next_as_it_ends() -> None:
    room = make_room(config=Config(notes_compact_every=3, notes_compact_jitter=0))
    d = Driver(room)
    d.connect("c1", MENTOR)
    first = [
        of(d.frame("c1", {"t": "notes", "u": notes_update(f"a{i}")}), Compact) for i in range(3)
    ]
    assert sum(len(c) for c in first) == 1  # the third starts one (its answer not in yet)
    during = [
        of(d.frame("c1", {"t": "notes", "u": notes_update(f"b{i}")}), Compact) for i in range(7)
    ]
    assert all(c == [] for c in during)  # never two at once
    assert room.compacted() == [Compact()]  # seven came meanwhile: the next starts at once
    assert room.compacted() == []  # none since


def test_rooms_compact_after_a_number_of_updates_spread_by_session() -> None:
    def first_compaction(session: str) -> int:
        room = Room(
            "pair-1",
            session,
            {MENTOR.id: MENTOR, MENTEE.id: MENTEE},
            "node-a",
            config=Config(notes_compact_every=20),
        )
        d = Driver(room)
        d.connect("c1", MENTOR)
        for i in range(1, 40):
            if of(d.frame("c1", {"t": "notes", "u": notes_update(f"u{i}")}), Compact):
                return i
        raise AssertionError("no compaction within 39 updates")

    at = [first_compaction(f"session-{n}") for n in range(12)]
    assert all(20 <= n <= 30 for n in at), at
    assert len(set(at)) >= 4, at  # rooms that started together do not compact together
    assert first_compaction("session-3") == at[3]  # the same session, the same point


def test_notes_that_fail_to_store_are_not_merged_and_the_sender_is_told() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    (store,) = of(d.room.receive("c1", pack({"t": "notes", "u": notes_update("x")}), T0), Write)
    (err,) = sent(d.room.store_failed(store.op, T0), "c1")
    assert err["code"] == "unavailable" and err["about"] == "notes"
    assert d.room.notes.plain() == ""
    assert d.room.welcome(MENTEE.id, [])["notes"] == d.room.notes.state()


def test_notes_outside_the_notes_text_or_too_big_are_rejected() -> None:
    d = Driver(make_room(config=Config(notes_max_update=300, notes_max_bytes=600)))
    d.connect("c1", MENTOR)
    for update in (notes_update("x", root="evil"), notes_update("y" * 400), b"\xff\x00junk"):
        (err,) = sent(d.frame("c1", {"t": "notes", "u": update}), "c1")
        assert err["code"] == "notes_rejected", update[:20]
    for i in range(2):
        d.frame("c1", {"t": "notes", "u": notes_update(str(i) * 250)})
    (err,) = sent(d.frame("c1", {"t": "notes", "u": notes_update("z" * 250)}), "c1")
    assert err["code"] == "notes_rejected" and "at most 600" in err["message"]
    assert len(d.room.notes.state()) <= 600


def test_reloaded_notes_replace_a_stale_copy_and_reach_the_members() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    missed = notes_update("missed while the broker was down")
    out = d.room.notes_reloaded([missed])
    assert d.room.notes.plain() == "missed while the broker was down"
    (frame,) = sent(out, "c1")
    assert frame["t"] == "notes" and frame["from"] == MENTEE.id
    assert d.room.notes_reloaded([missed]) == []  # nothing new


# leaving, sweeps and grace ------------------------------------------------------------------------
def test_a_clean_leave_is_stored_once_keyed_by_its_join() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    d.connect("c2", MENTEE)
    out = d.run(d.room.closed("c2", released=True, now=T0))
    (alloc,) = of(out, Allocate)
    assert alloc.key == f"left\x00{MENTEE.id}\x002"
    assert next(p.msg for p in of(out, Publish)) == Offline("sess-1", MENTEE.id, "c2", "node-a")
    # a sweep elsewhere that stores the same leave again is told it is not new
    again = d.room._leave(MENTEE.id)
    assert d.run(again) == again


def test_a_member_of_a_dead_node_is_marked_left_when_the_room_is_built() -> None:
    d = Driver(make_room(present={MENTEE.id}, joined={MENTEE.id: 1}, head=1))
    out = d.run(d.room.started({MENTOR.id: None, MENTEE.id: None}, T0))
    assert [ev.kind for ev in d.table.values()] == ["presence"]
    assert msgpack.unpackb(d.table[2].body)["state"] == "left"
    assert seqs(out) == [2]


def test_the_sweep_marks_a_dead_nodes_member_left_after_two_misses() -> None:
    d = Driver(make_room(config=Config(sweep_interval=5.0)))
    d.connect("c1", MENTOR)
    d.room.message(Online("sess-1", MENTEE.id, "c9", "node-b"), T0)
    d.room.present.add(MENTEE.id)
    assert d.room.deadline() == T0 + 5
    (check,) = d.room.tick(T0 + 5)
    assert check == CheckHolders((MENTEE.id,), "sweep")
    assert d.room.holders_checked("sweep", {MENTEE.id: None}, T0 + 5) == []
    assert not d.room.online(MENTEE.id)  # no holder: not online at once
    (check,) = d.room.tick(T0 + 10)
    out = d.run(d.room.holders_checked("sweep", {MENTEE.id: None}, T0 + 10))
    assert [ev.kind for ev in d.table.values()][-1] == "presence"
    assert msgpack.unpackb(d.table[max(d.table)].body)["state"] == "left"
    assert seqs(out)


def test_grace_expiry_ends_an_empty_session() -> None:
    d = Driver(make_room(config=Config(session_grace=600.0, sweep_interval=5.0)))
    d.connect("c1", MENTOR)
    d.run(d.room.closed("c1", released=True, now=T0))
    assert d.room.tick(T0 + 599) == []
    (check,) = of(d.room.tick(T0 + 600), CheckHolders)
    assert check.purpose == "grace"
    out = d.room.holders_checked("grace", {MENTOR.id: None, MENTEE.id: None}, T0 + 600)
    assert Write(None, EndSession("sess-1", T0 + 600)) in out
    assert Finish() in out and d.room.ended


def test_grace_does_not_end_a_session_someone_is_in_elsewhere() -> None:
    d = Driver(make_room(config=Config(session_grace=600.0)))
    d.connect("c1", MENTOR)
    d.run(d.room.closed("c1", released=True, now=T0))
    d.room.tick(T0 + 600)
    out = d.room.holders_checked("grace", {MENTOR.id: None, MENTEE.id: "c5"}, T0 + 600)
    assert out == [] and not d.room.ended and d.room.online(MENTEE.id)


def test_a_stale_session_is_over() -> None:
    assert is_stale(T0 + 601, T0, 600, anyone_connected=False)
    assert not is_stale(T0 + 601, T0, 600, anyone_connected=True)
    assert not is_stale(T0 + 599, T0, 600, anyone_connected=False)


def test_a_lost_lease_closes_every_connection_with_1013() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    d.connect("c2", MENTEE)
    out = d.room.lease_lost()
    assert {(c.conn, c.code) for c in of(out, CloseConn)} == {
        ("c1", Close.TRY_AGAIN),
        ("c2", Close.TRY_AGAIN),
    }
    assert d.room.closed("c1", released=False, now=T0) == []


# the end ------------------------------------------------------------------------
def test_end_is_stored_with_the_session_end_and_closes_everyone() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR)
    out = d.frame("c1", {"t": "end"})
    ended = d.table[2]
    assert ended.kind == "ended" and ended.ends_session
    assert CloseConn("c1", Close.NORMAL, "session ended", after_queue=True) in out
    assert Finish() in out


def test_nothing_is_decided_after_an_end_is_decided() -> None:
    room = make_room()
    room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    room.connect("c2", MENTEE.id, "msgpack", T0, ice_servers=[])
    assert of(room.receive("c1", pack({"t": "end"}), T0), Allocate)
    assert room.receive("c2", pack({"t": "chat", "id": "late", "text": "too late"}), T0) == []
    assert room.receive("c2", pack({"t": "end"}), T0) == []


def test_bad_frames_are_answered_and_change_nothing() -> None:
    room = make_room()
    room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    (err,) = sent(room.receive("c1", b"\xc1", T0), "c1")
    assert err["code"] == "bad_frame"
    (err,) = sent(room.receive("c1", pack({"t": "chat", "id": "x", "text": ""}), T0), "c1")
    assert err == {**err, "code": "invalid", "ref": "x"}
    (err,) = sent(room.receive("c1", pack({"t": "hello", "token": "t"}), T0), "c1")
    assert err["code"] == "invalid"


# what a review found ---------------------------------------------------------------------
def test_a_room_is_not_dropped_while_a_gap_is_open_or_a_write_in_flight() -> None:
    d = Driver(make_room())
    d.connect("c1", MENTOR, elsewhere={MENTEE.id: "c9"})  # the mentee is on another node
    d.room.committed([ev(5)], T0)  # seq 3..4 allocated elsewhere, not here yet
    d.run(d.room.closed("c1", released=True, now=T0), store=False)
    assert not d.room.droppable  # a gap is open, and the leave is being written
    out = d.room.tick(T0 + GAP_DEADLINE)
    for w in of(out, Write):
        for p in of(d.room.stored(w.op), Publish):
            d.room.message(p.msg, T0 + GAP_DEADLINE)
    (leave,) = [op for op, o in d.room._ops.items() if o.kind == "presence"]
    d.room.stored(leave)
    assert d.room.droppable


def test_holes_found_when_the_room_is_built_are_voided_after_the_deadline() -> None:
    room = make_room(head=4)
    assert room.started({MENTOR.id: None, MENTEE.id: None}, T0, missing=[2, 3]) == []
    assert room.tick(T0 + 1) == []
    out = room.tick(T0 + GAP_DEADLINE)
    assert [(w.write.kind, w.write.seq) for w in of(out, Write)] == [("void", 2), ("void", 3)]


def test_a_member_heard_of_during_the_build_is_not_marked_left() -> None:
    room = make_room(present={MENTEE.id}, joined={MENTEE.id: 1}, head=1)
    room.message(Online("sess-1", MENTEE.id, "c9", "node-b"), T0)  # replayed from the build
    assert room.started({MENTOR.id: None, MENTEE.id: None}, T0) == []
    assert room.online(MENTEE.id)


def test_notes_in_flight_count_towards_the_cap() -> None:
    room = make_room(config=Config(notes_max_update=300, notes_max_bytes=600))
    room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    replies = []
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    for i in range(6):  # none of them stored yet
        sv = doc.get_state()
        text.insert(len(str(text)), str(i) * 200)
        replies += room.receive("c1", pack({"t": "notes", "u": doc.get_update(sv)}), T0)
    assert len(of(replies, Write)) == 2
    errors = sent(replies, "c1")
    assert len(errors) == 4 and {e["code"] for e in errors} == {"notes_rejected"}


def test_a_failed_join_of_the_only_member_starts_the_grace_period() -> None:
    room = make_room()
    (alloc,) = of(room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[]), Allocate)
    room.allocate_failed(alloc.op, T0)
    assert room._grace_at == T0 + Config().session_grace


def test_the_timer_does_not_spin_while_a_load_or_grace_check_is_in_flight() -> None:
    room = make_room()
    room.committed([ev(1), ev(3)], T0)
    assert room.tick(T0 + REPAIR_AFTER) == [Load(1, 2)]
    assert room.deadline() == T0 + GAP_DEADLINE  # not the past repair time
    room.loaded([], T0 + 1)
    assert room.deadline() == pytest.approx(T0 + REPAIR_AFTER * 2)

    idle = Driver(make_room(config=Config(session_grace=10)))
    idle.connect("c1", MENTOR)
    idle.run(idle.room.closed("c1", released=True, now=T0))
    assert of(idle.room.tick(T0 + 10), CheckHolders)
    assert idle.room.deadline() == idle.room._sweep_at  # the grace time is being checked


def test_a_grace_answer_that_comes_after_a_join_and_leave_is_ignored() -> None:
    d = Driver(make_room(config=Config(session_grace=10)))
    d.connect("c1", MENTOR)
    d.run(d.room.closed("c1", released=True, now=T0))
    d.room.tick(T0 + 10)  # the grace check is on its way
    d.connect("c2", MENTOR, now=T0 + 11)
    d.run(d.room.closed("c2", released=True, now=T0 + 12))
    assert d.room.holders_checked("grace", {MENTOR.id: None, MENTEE.id: None}, T0 + 12) == []
    assert not d.room.ended and d.room.deadline() is not None


def test_reloaded_notes_merge_with_what_arrived_meanwhile() -> None:
    room = make_room()
    live = notes_update("arrived live")
    room.message(NotesStored("sess-1", MENTEE.id, live, b""), T0)
    room.notes_reloaded([notes_update("from the store")])
    assert "arrived live" in room.notes.plain() and "from the store" in room.notes.plain()


# the mentorship journey (contract v1.1) ---------------------------------------------------------
def stored_kinds(d: Driver) -> list[str]:
    return [ev.kind for ev in d.table.values()]


def body(d: Driver, seq: int) -> dict[str, Any]:
    event: dict[str, Any] = msgpack.unpackb(d.table[seq].body)
    return event


def journey_room() -> Driver:
    d = Driver(make_room(config=Config(rate_limit=0)))
    d.connect("c1", MENTOR)
    d.connect("c2", MENTEE)
    return d


def test_goal_is_stored_acked_and_shown_in_the_next_welcome() -> None:
    d = journey_room()
    out = d.frame("c1", {"t": "goal", "id": "g1", "text": "Plan chapter 3"})
    assert sent(out, "c1") == [{"t": "ack", "id": "g1", "seq": 3}]
    assert body(d, 3) == {
        "t": "goal", "seq": 3, "id": "g1", "by": MENTOR.id, "text": "Plan chapter 3", "ts": T0
    }  # fmt: skip
    assert d.room.welcome(MENTEE.id, [])["goal"] == "Plan chapter 3"
    d.frame("c2", {"t": "goal", "id": "g2", "text": ""})
    assert d.room.welcome(MENTEE.id, [])["goal"] is None
    again = d.frame("c1", {"t": "goal", "id": "g1", "text": "Plan chapter 3"})
    assert sent(again, "c1") == [{"t": "ack", "id": "g1", "seq": 3}] and len(d.table) == 4


def test_items_get_an_id_and_open_items_are_in_the_welcome() -> None:
    d = journey_room()
    due = "2026-12-24"
    d.frame(
        "c1", {"t": "item", "id": "i1", "text": "Send the draft", "owner": MENTEE.id, "due": due}
    )
    item = body(d, 3)["item"]
    assert item == {
        "id": "sess-1.3", "text": "Send the draft", "owner": MENTEE.id, "due": due,
        "state": "open", "by": MENTOR.id, "session_id": "sess-1", "created_at": T0,
    }  # fmt: skip
    assert d.room.welcome(MENTOR.id, [])["items"] == [item]
    d.frame("c2", {"t": "item_update", "id": "u1", "item": item["id"], "state": "done"})
    assert body(d, 4) == {
        "t": "item_update", "seq": 4, "id": "u1", "by": MENTEE.id, "item": item["id"],
        "state": "done", "ts": T0,
    }  # fmt: skip
    assert d.room.welcome(MENTOR.id, [])["items"] == []
    assert d.room.items[item["id"]]["state"] == "done"


def test_items_from_earlier_sessions_come_first_and_can_be_updated() -> None:
    old = {
        "id": "old.7", "text": "Read the paper", "owner": MENTOR.id, "due": None,
        "state": "open", "by": MENTEE.id, "session_id": "old", "created_at": T0 - 86400,
    }  # fmt: skip
    d = Driver(make_room(items={old["id"]: old}))
    d.connect("c1", MENTOR)
    d.frame("c1", {"t": "item", "id": "i1", "text": "New one", "owner": MENTOR.id, "due": None})
    assert [i["id"] for i in d.room.welcome(MENTOR.id, [])["items"]] == ["old.7", "sess-1.2"]
    out = d.frame("c1", {"t": "item_update", "id": "u1", "item": "old.7", "owner": MENTEE.id})
    assert sent(out, "c1") == [{"t": "ack", "id": "u1", "seq": 3}]
    assert d.room.items["old.7"]["owner"] == MENTEE.id


def test_journey_frames_that_break_the_rules_are_invalid_and_store_nothing() -> None:
    d = journey_room()
    bad = [
        {"t": "item", "id": "x1", "text": "t", "owner": "stranger", "due": None},
        {"t": "item_update", "id": "x2", "item": "not-an-item", "state": "done"},
        {"t": "mark", "id": "x3", "kind": "learning", "text": "t", "ref": 99},
        {"t": "mark", "id": "x4", "kind": "learning", "text": "t", "ref": 0},
    ]
    for frame in bad:
        (err,) = sent(d.frame("c1", frame), "c1")
        assert (err["code"], err["ref"]) == ("invalid", frame["id"]), frame
    assert stored_kinds(d) == ["presence", "presence"]


def test_a_mark_points_at_an_event_of_the_session() -> None:
    d = journey_room()
    d.frame("c1", {"t": "chat", "id": "m1", "text": "Ship small"})
    d.frame("c2", {"t": "mark", "id": "k1", "kind": "feedback", "text": "Ship small", "ref": 3})
    assert body(d, 4) == {
        "t": "mark", "seq": 4, "id": "k1", "by": MENTEE.id, "kind": "feedback",
        "text": "Ship small", "ref": 3, "ts": T0,
    }  # fmt: skip


def test_off_the_record_needs_both_and_keeps_nothing() -> None:
    d = journey_room()
    out = d.frame("c2", {"t": "record", "id": "r0", "on": True})  # on since the start
    assert sent(out, "c2") == [{"t": "ack", "id": "r0", "seq": None}]
    d.frame("c2", {"t": "record", "id": "r1", "on": False})
    assert body(d, 3)["state"] == "requested" and d.room.record_by == MENTEE.id
    out = d.frame("c2", {"t": "record", "id": "r2", "on": False})  # asking again
    assert sent(out, "c2") == [{"t": "ack", "id": "r2", "seq": 3}] and len(d.table) == 3
    out = d.frame("c1", {"t": "chat", "id": "m1", "text": "still recorded"})
    assert sent(out, "c1") == [{"t": "ack", "id": "m1", "seq": 4}]
    d.frame("c1", {"t": "record", "id": "r3", "on": False})  # the other agrees
    assert body(d, 5)["state"] == "off"
    welcome = d.room.welcome(MENTOR.id, [])
    assert (welcome["record"], welcome["record_by"]) == ("off", MENTOR.id)
    out = d.frame("c2", {"t": "chat", "id": "m2", "text": "between us"})
    assert sent(out, "c2") == [{"t": "ack", "id": "m2", "seq": None, "off": True}]
    (pub,) = [p.msg for p in of(out, Publish)]
    assert isinstance(pub, Relayed) and pub.sender == ""  # to both members, the sender too
    assert msgpack.unpackb(pub.packed) == {
        "t": "chat", "id": "m2", "from": MENTEE.id, "text": "between us", "ts": T0, "off": True
    }  # fmt: skip
    retry = d.frame("c2", {"t": "chat", "id": "m2", "text": "between us"})
    assert sent(retry, "c2") == [{"t": "ack", "id": "m2", "seq": None, "off": True}]
    assert of(retry, Publish) == [] and len(d.table) == 5
    d.frame("c2", {"t": "record", "id": "r4", "on": True})  # either member turns it back on
    assert body(d, 6)["state"] == "on"
    out = d.frame("c2", {"t": "chat", "id": "m3", "text": "recorded again"})
    assert sent(out, "c2") == [{"t": "ack", "id": "m3", "seq": 7}]


def test_a_request_is_withdrawn_or_declined_with_on() -> None:
    d = journey_room()
    d.frame("c1", {"t": "record", "id": "r1", "on": False})
    d.frame("c2", {"t": "record", "id": "r2", "on": True})  # declined
    assert [body(d, s)["state"] for s in (3, 4)] == ["requested", "on"]
    assert d.room.welcome(MENTEE.id, [])["record"] == "on"


def test_a_record_decision_that_cannot_be_stored_is_undone() -> None:
    room = make_room(config=Config(rate_limit=0))
    room.connect("c1", MENTOR.id, "msgpack", T0, ice_servers=[])
    (alloc,) = of(room.receive("c1", pack({"t": "record", "id": "r1", "on": False}), T0), Allocate)
    room.allocate_failed(alloc.op, T0)
    (alloc,) = of(room.receive("c1", pack({"t": "record", "id": "r2", "on": False}), T0), Allocate)
    assert alloc.op in room._ops and room._ops[alloc.op].body["state"] == "requested"


def test_deadline_is_the_earliest_pending_timer() -> None:
    """Every combination of the machine's timers: the earliest that applies, or None."""
    values = (None, 10.0, 20.0, 30.0)
    room = make_room()
    for sweep, holes, grace, gap, repair, checking, loading in itertools.product(
        values, values, values, values, values, (False, True), (False, True)
    ):
        room._sweep_at, room._holes_at, room._grace_at = sweep, holes, grace
        room._gap_since, room._repair_at = gap, repair
        room._checking_grace, room._loading = checking, loading
        times = [sweep, holes]
        if not checking:
            times.append(grace)
        if gap is not None:
            times.append(gap + GAP_DEADLINE)
            if not loading:
                times.append(repair)
        due = [t for t in times if t is not None]
        assert room.deadline() == (min(due) if due else None)
