"""The sans-I/O pieces: rooms.room.Room decisions and ordering, rooms.ratelimit.TokenBucket.

No sockets and no event loop: frames and committed events go in, decisions come out.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from rooms.errors import Invalid, NotesRejected, PeerAbsent
from rooms.ratelimit import TokenBucket
from rooms.room import (
    Append,
    AwaitAck,
    Member,
    Relay,
    Reply,
    Room,
    StoreNotes,
    chat_key,
)

MENTOR = Member("u-mentor", "Mara", "mentor")
MENTEE = Member("u-mentee", "Milo", "mentee")


def make_room(**kw: Any) -> Room:
    return Room("pair-1", {MENTOR.id: MENTOR, MENTEE.id: MENTEE}, "sess-1", **kw)


def chat_event(seq: int, user: str, cid: str, text: str = "hi") -> dict[str, Any]:
    return {"t": "chat", "seq": seq, "id": cid, "from": user, "text": text, "ts": 1.0}


def presence_event(seq: int, member: Member, state: str) -> dict[str, Any]:
    return {"t": "presence", "seq": seq, "user": member.as_dict(), "state": state, "ts": 1.0}


def ended_event(seq: int, by: str) -> dict[str, Any]:
    return {"t": "ended", "seq": seq, "by": by, "ts": 1.0}


# decisions ---------------------------------------------------------------------------------
def test_ping_replies_pong_with_head() -> None:
    room = make_room()
    assert room.receive(MENTOR.id, {"t": "ping"}) == [Reply({"t": "pong", "head": 0})]
    room.commit(1, presence_event(1, MENTOR, "joined"))
    room.commit(2, chat_event(2, MENTOR.id, "a"))
    assert room.receive(MENTEE.id, {"t": "ping"}) == [Reply({"t": "pong", "head": 2})]


def test_chat_appends_with_its_key() -> None:
    room = make_room()
    actions = room.receive(MENTOR.id, {"t": "chat", "id": "c1", "text": "hello"})
    assert actions == [
        Append("chat", {"id": "c1", "from": MENTOR.id, "text": "hello"}, chat_key(MENTOR.id, "c1"))
    ]
    assert chat_key(MENTOR.id, "c1") in room.pending
    # the key tells senders apart: the same client id from the other member is a new chat
    other = room.receive(MENTEE.id, {"t": "chat", "id": "c1", "text": "hello"})
    assert other == [
        Append("chat", {"id": "c1", "from": MENTEE.id, "text": "hello"}, chat_key(MENTEE.id, "c1"))
    ]
    assert chat_key(MENTOR.id, "c1") != chat_key(MENTEE.id, "c1")


def test_pending_duplicate_awaits_the_ack() -> None:
    room = make_room()
    room.receive(MENTOR.id, {"t": "chat", "id": "c1", "text": "hello"})
    again = room.receive(MENTOR.id, {"t": "chat", "id": "c1", "text": "hello"})
    assert again == [AwaitAck(chat_key(MENTOR.id, "c1"), "c1")]


def test_committed_duplicate_is_acked_with_the_old_seq() -> None:
    room = make_room()
    room.receive(MENTOR.id, {"t": "chat", "id": "c1", "text": "hello"})
    room.commit(1, presence_event(1, MENTOR, "joined"))
    room.commit(2, chat_event(2, MENTOR.id, "c1", "hello"))
    assert chat_key(MENTOR.id, "c1") not in room.pending
    assert room.chats[chat_key(MENTOR.id, "c1")] == 2
    room.commit(3, chat_event(3, MENTEE.id, "other"))
    again = room.receive(MENTOR.id, {"t": "chat", "id": "c1", "text": "hello"})
    assert again == [Reply({"t": "ack", "id": "c1", "seq": 2})]
    assert chat_key(MENTOR.id, "c1") not in room.pending


def test_chats_loaded_from_the_store_are_duplicates() -> None:
    room = make_room(head=9, chats={chat_key(MENTEE.id, "old"): 7})
    assert room.receive(MENTEE.id, {"t": "chat", "id": "old", "text": "x"}) == [
        Reply({"t": "ack", "id": "old", "seq": 7})
    ]


def test_typing_and_awareness_are_relayed() -> None:
    room = make_room()
    assert room.receive(MENTOR.id, {"t": "typing", "on": True}) == [
        Relay({"t": "typing", "from": MENTOR.id, "on": True})
    ]
    assert room.receive(MENTEE.id, {"t": "awareness", "u": b"\x01\x02"}) == [
        Relay({"t": "awareness", "from": MENTEE.id, "u": b"\x01\x02"})
    ]


def test_signal_needs_an_online_peer() -> None:
    room = make_room()
    signal = {"t": "signal", "data": {"type": "bye"}}
    with pytest.raises(PeerAbsent) as err:
        room.receive(MENTOR.id, signal)
    assert err.value.code == "peer_absent"
    # the sender alone being online does not help
    room.commit(1, presence_event(1, MENTOR, "joined"))
    with pytest.raises(PeerAbsent):
        room.receive(MENTOR.id, signal)
    room.commit(2, presence_event(2, MENTEE, "joined"))
    assert room.receive(MENTOR.id, signal) == [
        Relay({"t": "signal", "from": MENTOR.id, "data": {"type": "bye"}})
    ]
    room.commit(3, presence_event(3, MENTEE, "left"))
    with pytest.raises(PeerAbsent):
        room.receive(MENTOR.id, signal)


def test_end_appends_ended() -> None:
    room = make_room()
    assert room.receive(MENTEE.id, {"t": "end"}) == [Append("ended", {"by": MENTEE.id})]


def test_hello_after_join_is_invalid() -> None:
    room = make_room()
    with pytest.raises(Invalid):
        room.receive(MENTOR.id, {"t": "hello", "token": "x"})


def test_notes_are_merged_and_stored() -> None:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    text += "Agenda: café ☕"
    update = doc.get_update()
    room = make_room()
    assert room.receive(MENTOR.id, {"t": "notes", "u": update}) == [StoreNotes(update)]
    assert room.notes.plain() == "Agenda: café ☕"
    with pytest.raises(NotesRejected):
        room.receive(MENTOR.id, {"t": "notes", "u": b"\xff\xfe not yjs"})
    assert room.notes.plain() == "Agenda: café ☕"


def test_join_and_leave_events() -> None:
    room = make_room()
    assert room.join(MENTEE.id) == Append("presence", {"user": MENTEE.as_dict(), "state": "joined"})
    leave = room.leave(MENTOR.id)
    assert (leave.kind, leave.body) == ("presence", {"user": MENTOR.as_dict(), "state": "left"})


def test_a_leave_is_keyed_by_the_join_it_ends() -> None:
    room = make_room()
    room.commit(1, presence_event(1, MENTOR, "joined"))
    first = room.leave(MENTOR.id).key
    assert first == room.leave(MENTOR.id).key  # two nodes noticing the same leave agree
    room.commit(2, presence_event(2, MENTOR, "left"))
    room.commit(3, presence_event(3, MENTOR, "joined"))
    assert room.leave(MENTOR.id).key != first  # the next leave is a new event


def test_welcome_lists_members_and_online_peers() -> None:
    room = make_room()
    room.commit(1, presence_event(1, MENTOR, "joined"))
    w = room.welcome(MENTEE.id, [])
    assert w["t"] == "welcome"
    assert w["session_id"] == "sess-1"
    assert w["user"] == MENTEE.as_dict()
    assert sorted(m["role"] for m in w["members"]) == ["mentee", "mentor"]
    assert w["peers"] == [MENTOR.as_dict()]
    assert w["head"] == 1
    assert w["ice_servers"] == []
    assert isinstance(w["notes"], bytes)
    assert room.welcome(MENTOR.id, [])["peers"] == []  # the mentee is not online yet


# commit ordering -----------------------------------------------------------------------------
def test_commit_in_order_releases_each() -> None:
    room = make_room()
    ev = presence_event(1, MENTOR, "joined")
    assert room.commit(1, ev, b"p1") == [(ev, b"p1")]
    assert room.head == 1
    assert room.gap() is None


def test_commit_out_of_order_is_released_in_seq_order() -> None:
    room = make_room()
    events = {s: chat_event(s, MENTOR.id, f"c{s}") for s in range(1, 6)}
    assert room.commit(3, events[3], "p3") == []
    assert room.gap() == (0, 2)
    assert room.commit(5, events[5], "p5") == []
    assert room.gap() == (0, 2)
    assert room.head == 0
    assert room.commit(1, events[1], "p1") == [(events[1], "p1")]
    assert room.gap() == (1, 2)
    released = room.commit(2, events[2], "p2")
    assert released == [(events[2], "p2"), (events[3], "p3")]
    assert room.head == 3
    assert room.gap() == (3, 4)
    assert room.commit(4, events[4], "p4") == [(events[4], "p4"), (events[5], "p5")]
    assert room.head == 5
    assert room.gap() is None
    assert room.chats == {chat_key(MENTOR.id, f"c{s}"): s for s in range(1, 6)}


def test_commit_ignores_duplicates() -> None:
    room = make_room()
    first = chat_event(1, MENTOR.id, "a", "first")
    assert room.commit(1, first) == [(first, None)]
    assert room.commit(1, chat_event(1, MENTOR.id, "a", "replayed")) == []
    assert room.head == 1
    later = chat_event(3, MENTOR.id, "c")
    assert room.commit(3, later) == []
    assert room.commit(3, later) == []  # a held-back event arriving twice
    second = chat_event(2, MENTOR.id, "b")
    assert room.commit(2, second) == [(second, None), (later, None)]
    assert room.commit(2, second) == []
    assert room.commit(3, later) == []
    assert room.head == 3
    assert room.gap() is None


def test_commit_from_a_loaded_head() -> None:
    room = make_room(head=10)
    assert room.commit(10, chat_event(10, MENTOR.id, "old")) == []
    assert room.commit(12, chat_event(12, MENTOR.id, "x")) == []
    assert room.gap() == (10, 11)
    ev = chat_event(11, MENTOR.id, "y")
    assert [e["seq"] for e, _ in room.commit(11, ev)] == [11, 12]


def test_presence_updates_online() -> None:
    room = make_room()
    room.commit(1, presence_event(1, MENTOR, "joined"))
    assert room.online == {MENTOR.id}
    room.commit(2, presence_event(2, MENTEE, "joined"))
    assert room.online == {MENTOR.id, MENTEE.id}
    room.commit(3, presence_event(3, MENTOR, "left"))
    assert room.online == {MENTEE.id}
    # held back events do not change presence until released
    room.commit(5, presence_event(5, MENTEE, "left"))
    assert room.online == {MENTEE.id}
    room.commit(4, presence_event(4, MENTOR, "joined"))
    assert room.online == {MENTOR.id}


def test_ended_stops_further_decisions() -> None:
    room = make_room()
    room.commit(1, presence_event(1, MENTOR, "joined"))
    room.commit(2, presence_event(2, MENTEE, "joined"))
    room.receive(MENTOR.id, {"t": "chat", "id": "p", "text": "pending"})
    assert not room.ended
    room.commit(3, ended_event(3, MENTEE.id))
    assert room.ended
    assert room.online == set()
    assert room.head == 3
    for frame in (
        {"t": "ping"},
        {"t": "chat", "id": "late", "text": "too late"},
        {"t": "chat", "id": "p", "text": "pending"},
        {"t": "typing", "on": True},
        {"t": "signal", "data": {"type": "bye"}},
        {"t": "end"},
    ):
        assert room.receive(MENTOR.id, frame) == []


# rate limiting -------------------------------------------------------------------------------
def test_bucket_allows_a_burst_of_twice_the_rate() -> None:
    bucket = TokenBucket(5, now=100.0)
    assert [bucket.take(100.0) for _ in range(10)] == ["ok"] * 10
    assert bucket.take(100.0) == "limited"


def test_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(5, now=0.0)
    for _ in range(10):
        assert bucket.take(0.0) == "ok"
    assert bucket.take(0.0) == "limited"
    assert bucket.take(0.1) == "limited"  # half a token
    assert bucket.take(0.2) == "ok"  # one token after 0.2 s at 5/s
    assert bucket.take(0.2) == "limited"
    # a long pause refills only up to the burst
    assert [bucket.take(60.0) for _ in range(11)] == ["ok"] * 10 + ["limited"]


def test_bucket_flood_after_another_burst_of_refusals() -> None:
    bucket = TokenBucket(2, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == ["ok"] * 4
    verdicts = [bucket.take(0.0) for _ in range(5)]
    assert verdicts == ["limited"] * 4 + ["flood"]


def test_bucket_forgives_after_an_accepted_frame() -> None:
    bucket = TokenBucket(2, now=0.0)
    for _ in range(4):
        bucket.take(0.0)
    assert [bucket.take(0.0) for _ in range(3)] == ["limited"] * 3
    assert bucket.take(0.5) == "ok"  # one token back; the refusal count starts over
    assert [bucket.take(0.5) for _ in range(4)] == ["limited"] * 4
    assert bucket.take(0.5) == "flood"


@pytest.mark.parametrize("rate", [0, -1])
def test_bucket_off(rate: float) -> None:
    bucket = TokenBucket(rate, now=0.0)
    assert all(bucket.take(0.0) == "ok" for _ in range(10_000))


def test_nothing_is_decided_after_an_end_is_decided() -> None:
    room = make_room()
    room.commit(1, presence_event(1, MENTOR, "joined"))
    first = room.receive(MENTOR.id, {"t": "end"})
    assert [type(a).__name__ for a in first] == ["Append"]
    # before the ended event is stored: a late chat or a second end changes nothing
    assert room.receive(MENTEE.id, {"t": "chat", "id": "late", "text": "too late"}) == []
    assert room.receive(MENTEE.id, {"t": "end"}) == []


def test_presence_is_decided_ahead_of_storage() -> None:
    room = make_room()
    room.join(MENTEE.id)
    assert MENTEE.id in room.present and MENTEE.id not in room.online
    room.leave(MENTEE.id)
    assert MENTEE.id not in room.present
    room.commit(1, presence_event(1, MENTOR, "joined"))  # committed elsewhere, seen here
    assert MENTOR.id in room.present
