"""The Store contract, one suite for every database the server supports.

To run it against another database, add one entry to ``STORES``: a function of the test's
request that returns a fresh database URL. PostgreSQL runs in a fresh schema per test (the
``pg_url`` fixture); it skips when PostgreSQL is unreachable, and fails instead when CI=true.
Every test makes its own pairs and sessions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import msgpack
import pycrdt
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from persistence.store import (
    CompactNotes,
    EndSession,
    PairRecord,
    Store,
    StoredEvent,
    StoredNotes,
    async_url,
    notes_text,
    void_event,
)

STORES: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "sqlite": lambda request: f"sqlite:///{request.getfixturevalue('tmp_path') / 'store.db'}",
    "postgresql": lambda request: str(request.getfixturevalue("pg_url")),
}


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    async with Store(STORES[request.param](request)) as s:
        yield s


def ev(
    session: str,
    seq: int,
    kind: str,
    who: str,
    client_id: str | None = None,
    ts: float = 1000.0,
    ends: bool = False,
    **fields: object,
) -> StoredEvent:
    body = {"t": kind, "seq": seq, **fields, "ts": ts}
    if kind == "chat":
        body.update({"id": client_id, "from": who})
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return StoredEvent(session, seq, kind, who, client_id, ts, packed, ends)


def presence(session: str, seq: int, user: str, state: str, ts: float = 1000.0) -> StoredEvent:
    return ev(session, seq, "presence", user, ts=ts, user={"id": user}, state=state)


def edits(*pieces: str) -> list[bytes]:
    """One Yjs update per piece, typed at the end of the notes."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    out = []
    for piece in pieces:
        state = doc.get_state()
        text.insert(len(text), piece)
        out.append(doc.get_update(state))
    return out


async def new_session(store: Store, now: float = 1000.0) -> tuple[PairRecord, str]:
    pair = await store.create_pair("Mara", "Milo", now)
    return pair, (await store.start_session(pair.id, now)).id


def test_async_url() -> None:
    assert async_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_url("sqlite+pysqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_url("postgresql://u@h:5432/d") == "postgresql+asyncpg://u@h:5432/d"
    assert async_url("postgresql+psycopg://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert async_url("postgres://u@h/d") == "postgresql+asyncpg://u@h/d"
    for bad in ("mysql://u@h/d", "just-a-path.db"):
        with pytest.raises(ValueError):
            async_url(bad)


# pairs -------------------------------------------------------------------------------------------
async def test_create_and_get_pair(store: Store) -> None:
    pair = await store.create_pair("Mara Zoë", "Milo ☕", 1000.0)
    assert len({pair.id, pair.mentor_id, pair.mentee_id}) == 3
    got = await store.get_pair(pair.id)
    assert got == pair
    assert (got.mentor_name, got.mentee_name) == ("Mara Zoë", "Milo ☕")
    other = await store.create_pair("A", "B", 1001.0)
    assert other.id != pair.id
    assert await store.get_pair(other.id) == other
    assert await store.get_pair("no-such-pair") is None


# sessions ----------------------------------------------------------------------------------------
async def test_start_session_get_or_create(store: Store) -> None:
    pair = await store.create_pair("A", "B", 1000.0)
    assert await store.live_session(pair.id) is None
    first = await store.start_session(pair.id, 1000.0)
    assert (first.pair_id, first.started_at, first.ended_at) == (pair.id, 1000.0, None)
    again = await store.start_session(pair.id, 2000.0)
    assert again.id == first.id and again.started_at == 1000.0
    assert (await store.live_session(pair.id)) == again
    got = await store.get_session(first.id)
    assert got is not None and got.id == first.id and got.ended_at is None
    assert await store.get_session("no-such-session") is None
    # another pair gets its own session
    other = await store.create_pair("C", "D", 1000.0)
    assert (await store.start_session(other.id, 1000.0)).id != first.id


async def test_enter_gives_the_pair_and_its_session_to_members_only(store: Store) -> None:
    pair = await store.create_pair("A", "B", 1000.0)
    assert await store.enter(pair.id, "someone-else", 1000.0) is None
    assert await store.enter("no-such-pair", pair.mentor_id, 1000.0) is None
    assert await store.live_session(pair.id) is None  # a refused entry starts nothing
    entered = await store.enter(pair.id, pair.mentee_id, 1000.0)
    assert entered is not None
    got, session = entered
    assert got == pair and (session.pair_id, session.started_at) == (pair.id, 1000.0)
    assert await store.live_session(pair.id) == session
    again = await store.enter(pair.id, pair.mentor_id, 2000.0)
    assert again == (pair, session)
    assert await store.start_session(pair.id, 3000.0) == session


async def test_entering_concurrently_starts_one_session(store: Store) -> None:
    pair = await store.create_pair("A", "B", 1000.0)
    got = await asyncio.wait_for(
        asyncio.gather(
            *(store.enter(pair.id, pair.mentor_id, 1000.0 + i) for i in range(4)),
            *(store.start_session(pair.id, 1000.0 + i) for i in range(4)),
        ),
        30,
    )
    ids = {g.id if not isinstance(g, tuple) else g[1].id for g in got if g is not None}
    assert len(ids) == 1 and None not in got


async def test_start_session_concurrently_returns_one(store: Store) -> None:
    pair = await store.create_pair("A", "B", 1000.0)
    got = await asyncio.wait_for(
        asyncio.gather(*(store.start_session(pair.id, 1000.0 + i) for i in range(8))), 30
    )
    assert len({s.id for s in got}) == 1
    assert [s.session for s in await store.list_sessions(pair.id)] == [
        await store.get_session(got[0].id)
    ]


async def test_ended_session_makes_room_for_a_new_one(store: Store) -> None:
    pair, sid = await new_session(store)
    await store.write([StoredNotes(sid, u) for u in edits("final ", "notes")])
    await store.write([EndSession(sid, 1500.0)])
    ended = await store.get_session(sid)
    assert ended is not None
    assert (ended.ended_at, ended.notes_text) == (1500.0, "final notes")
    assert await store.live_session(pair.id) is None
    fresh = await store.start_session(pair.id, 2000.0)
    assert fresh.id != sid and fresh.ended_at is None
    # ending twice keeps the first end and its text, even with notes stored since
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    for u in await store.notes_updates(sid):
        doc.apply_update(u)
    state = doc.get_state()
    doc.get("notes", type=pycrdt.Text).insert(0, "late ")
    await store.write([StoredNotes(sid, doc.get_update(state)), EndSession(sid, 9999.0)])
    ended = await store.get_session(sid)
    assert ended is not None and (ended.ended_at, ended.notes_text) == (1500.0, "final notes")


# the batch writer --------------------------------------------------------------------------------
async def test_write_batch_with_events_notes_and_end(store: Store) -> None:
    pair, sid = await new_session(store)
    updates = edits("Agenda: ", "café ☕")
    await store.write(
        [
            presence(sid, 1, pair.mentor_id, "joined"),
            StoredNotes(sid, updates[0]),
            ev(sid, 2, "chat", pair.mentor_id, "c1", text="hi"),
            StoredNotes(sid, updates[1]),
            ev(sid, 3, "ended", pair.mentee_id, by=pair.mentee_id),
            EndSession(sid, 1234.5),
        ]
    )
    rows = await store.events(sid)
    assert [(r.seq, r.kind, r.user_id, r.client_id) for r in rows] == [
        (1, "presence", pair.mentor_id, None),
        (2, "chat", pair.mentor_id, "c1"),
        (3, "ended", pair.mentee_id, None),
    ]
    assert msgpack.unpackb(rows[1].body)["text"] == "hi"
    assert all(r.session_id == sid and r.ts == 1000.0 for r in rows)
    assert await store.notes_updates(sid) == updates
    assert notes_text(await store.notes_updates(sid)) == "Agenda: café ☕"
    session = await store.get_session(sid)
    assert session is not None
    assert (session.ended_at, session.notes_text) == (1234.5, "Agenda: café ☕")


async def test_an_ending_event_ends_the_session(store: Store) -> None:
    pair, sid = await new_session(store)
    await store.write([StoredNotes(sid, edits("the notes")[0])])
    await store.write([ev(sid, 1, "ended", pair.mentor_id, ts=1300.0, ends=True)])
    session = await store.get_session(sid)
    assert session is not None
    assert (session.ended_at, session.notes_text) == (1300.0, "the notes")


async def test_final_notes_text_comes_from_the_stored_rows(store: Store) -> None:
    pair, sid = await new_session(store)
    stored = edits("Agenda", ": café ☕", "\n- done", " and more")
    # rows stored before, and rows in the same batch as the ending event, in the order stored
    await store.write([StoredNotes(sid, u) for u in stored[:2]])
    await store.write(
        [
            StoredNotes(sid, stored[2]),
            ev(sid, 1, "ended", pair.mentor_id, ts=1300.0, ends=True),
            StoredNotes(sid, stored[3]),
        ]
    )
    session = await store.get_session(sid)
    assert session is not None
    assert (session.ended_at, session.notes_text) == (1300.0, "Agenda: café ☕\n- done and more")
    assert session.notes_text == notes_text(await store.notes_updates(sid))
    # EndSession does the same, with another session's rows in the same batch left out
    _, other = await new_session(store)
    _, neighbour = await new_session(store)
    xy = edits("x", "y")
    await store.write([StoredNotes(other, xy[0])])
    await store.write(
        [
            StoredNotes(neighbour, edits("not mine")[0]),
            StoredNotes(other, xy[1]),
            EndSession(other, 5.0),
        ]
    )
    ended = await store.get_session(other)
    assert ended is not None and (ended.ended_at, ended.notes_text) == (5.0, "xy")
    live = await store.get_session(neighbour)
    assert live is not None and (live.ended_at, live.notes_text) == (None, None)
    # a session without notes ends with an empty text
    _, empty = await new_session(store)
    await store.write([EndSession(empty, 6.0)])
    ended = await store.get_session(empty)
    assert ended is not None and (ended.ended_at, ended.notes_text) == (6.0, "")


async def test_a_rejected_ending_event_does_not_end_the_session(store: Store) -> None:
    pair, sid = await new_session(store)
    await store.write([void_event(sid, 1, 1100.0)])
    late = ev(sid, 1, "ended", pair.mentor_id, ts=1300.0, ends=True)
    assert await store.write([late]) == [late]
    session = await store.get_session(sid)
    assert session is not None and session.ended_at is None


async def test_write_batch_is_one_transaction(store: Store) -> None:
    pair, sid = await new_session(store)
    with pytest.raises(IntegrityError):
        await store.write(
            [
                ev(sid, 1, "chat", pair.mentor_id, "c1", text="lost with the batch"),
                StoredNotes(sid, edits("lost")[0]),
                EndSession(sid, 1500.0),
                StoredNotes("no-such-session", edits("x")[0]),  # violates a foreign key
            ]
        )
    assert await store.events(sid) == []
    assert await store.notes_updates(sid) == []
    session = await store.get_session(sid)
    assert session is not None and session.ended_at is None
    # the store is still usable
    await store.write([ev(sid, 1, "chat", pair.mentor_id, "c1", text="ok")])
    assert await store.head(sid) == 1


async def test_duplicate_chat_does_not_fail_the_batch(store: Store) -> None:
    pair, sid = await new_session(store)
    assert await store.write([ev(sid, 1, "chat", pair.mentor_id, "c1", text="first")]) == []
    retry = ev(sid, 2, "chat", pair.mentor_id, "c1", text="a retry, same client id")
    same_seq = ev(sid, 1, "chat", pair.mentee_id, "z", text="same seq")
    rejected = await store.write(
        [
            retry,
            same_seq,
            ev(sid, 3, "chat", pair.mentee_id, "c1", text="same id, other sender"),
            presence(sid, 4, pair.mentee_id, "joined"),
            presence(sid, 5, pair.mentee_id, "left"),
        ]
    )
    assert rejected == [retry, same_seq]  # reported, so that nobody acks them
    rows = await store.events(sid)
    assert [(r.seq, r.user_id, r.client_id) for r in rows] == [
        (1, pair.mentor_id, "c1"),
        (3, pair.mentee_id, "c1"),
        (4, pair.mentee_id, None),
        (5, pair.mentee_id, None),
    ]
    assert msgpack.unpackb(rows[0].body)["text"] == "first"
    assert await store.chat_seq(sid, pair.mentor_id, "c1") == 1
    assert await store.chat_seq(sid, pair.mentee_id, "c1") == 3


async def test_empty_write_is_fine(store: Store) -> None:
    await store.write([])


# void events ------------------------------------------------------------------------------------
async def test_void_fills_a_seq_and_is_replayed(store: Store) -> None:
    pair, sid = await new_session(store)
    void = void_event(sid, 2, 1100.5)
    assert (void.kind, void.user_id, void.client_id, void.ends_session) == ("void", "", None, False)
    assert msgpack.unpackb(void.body) == {"t": "void", "seq": 2, "ts": 1100.5}
    first = ev(sid, 1, "chat", pair.mentor_id, "c1", text="hi")
    third = ev(sid, 3, "chat", pair.mentee_id, "c1", text="hello")
    # two voids in one batch: a null client id never collides with another
    assert await store.write([first, void, third, void_event(sid, 4, 1101.0)]) == []
    rows = await store.events(sid)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[1] == void
    assert await store.head(sid) == 4
    assert [r.seq for r in await store.events(sid, 1, 3)] == [2, 3]
    # a void or an event for a filled seq is rejected, and nothing changes
    again = void_event(sid, 2, 1200.0)
    on_chat = void_event(sid, 1, 1200.0)
    late = ev(sid, 2, "chat", pair.mentor_id, "c2", text="too late")
    assert await store.write([again, on_chat, late]) == [again, on_chat, late]
    assert await store.events(sid) == rows
    assert await store.chat_seq(sid, pair.mentor_id, "c2") is None
    # voids are not chats, and not a presence
    listed = await store.list_sessions(pair.id)
    assert [s.message_count for s in listed] == [2]
    assert await store.presence_seqs(sid) == {}


async def test_void_and_late_original_in_one_batch(store: Store) -> None:
    pair, sid = await new_session(store)
    late = ev(sid, 1, "chat", pair.mentor_id, "c1", text="late")
    void = void_event(sid, 1, 1100.0)
    # whichever comes first in the batch fills the seq; the other is reported, not acked
    assert await store.write([void, late]) == [late]
    assert [r.kind for r in await store.events(sid)] == ["void"]
    _, sid2 = await new_session(store)
    late2 = ev(sid2, 1, "chat", pair.mentor_id, "c1", text="late")
    void2 = void_event(sid2, 1, 1100.0)
    assert await store.write([late2, void2]) == [void2]
    assert [r.kind for r in await store.events(sid2)] == ["chat"]


# reading events --------------------------------------------------------------------------------
async def test_events_paging_and_head(store: Store) -> None:
    pair, sid = await new_session(store)
    assert await store.head(sid) == 0
    assert await store.events(sid) == []
    # written out of order, across batches
    await store.write([ev(sid, s, "chat", pair.mentor_id, f"c{s}") for s in range(25, 12, -1)])
    await store.write([ev(sid, s, "chat", pair.mentee_id, f"c{s}") for s in range(1, 13)])
    assert await store.head(sid) == 25
    assert [r.seq for r in await store.events(sid)] == list(range(1, 26))
    assert [r.seq for r in await store.events(sid, 0, limit=10)] == list(range(1, 11))
    assert [r.seq for r in await store.events(sid, 10, limit=10)] == list(range(11, 21))
    assert [r.seq for r in await store.events(sid, 20, limit=10)] == list(range(21, 26))
    assert await store.events(sid, 25) == []
    assert [r.seq for r in await store.events(sid, 10, 15)] == list(range(11, 16))
    assert [r.seq for r in await store.events(sid, 10, 15, limit=3)] == [11, 12, 13]
    assert await store.events(sid, 15, 15) == []
    assert [r.seq for r in await store.events(sid, 24, 100)] == [25]
    # paging the whole session returns each event once
    seen: list[int] = []
    after = 0
    for _ in range(20):
        page = await store.events(sid, after, limit=7)
        if not page:
            break
        seen.extend(r.seq for r in page)
        after = page[-1].seq
    assert seen == list(range(1, 26))
    # other sessions are not mixed in
    _, other = await new_session(store)
    assert await store.head(other) == 0
    assert await store.events(other) == []


async def test_chat_seq_and_presence(store: Store) -> None:
    pair, sid = await new_session(store)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    assert await store.chat_seq(sid, mentor, "m1") is None
    assert await store.presence_seqs(sid) == {}
    await store.write(
        [
            presence(sid, 1, mentor, "joined"),
            presence(sid, 2, mentee, "joined"),
            ev(sid, 3, "chat", mentor, "m1"),
            ev(sid, 4, "chat", mentee, "e1"),
            presence(sid, 5, mentor, "left"),
            ev(sid, 6, "chat", mentee, "e2"),
            presence(sid, 7, mentor, "joined"),
            presence(sid, 8, mentee, "left"),
        ]
    )
    found = {
        (u, c): await store.chat_seq(sid, u, c)
        for u in (mentor, mentee)
        for c in ("m1", "e1", "e2", "nope")
    }
    assert {k: s for k, s in found.items() if s is not None} == {
        (mentor, "m1"): 3,
        (mentee, "e1"): 4,
        (mentee, "e2"): 6,
    }
    # another session's chats are not found
    _, other = await new_session(store)
    await store.write([ev(other, 1, "chat", mentor, "o1")])
    assert await store.chat_seq(sid, mentor, "o1") is None
    assert await store.chat_seq(other, mentor, "o1") == 1
    assert await store.chat_seq(other, mentor, "m1") is None
    assert {u: st for u, (st, _) in (await store.presence_seqs(sid)).items()} == {
        mentor: "joined",
        mentee: "left",
    }
    # presence follows seq order, not insertion order
    _, sid2 = await new_session(store)
    await store.write([presence(sid2, 2, mentor, "left")])
    await store.write([presence(sid2, 1, mentor, "joined")])
    assert await store.presence_seqs(sid2) == {mentor: ("left", 2)}


async def test_last_activity(store: Store) -> None:
    pair, sid = await new_session(store)
    assert await store.last_activity(sid) is None
    await store.write(
        [
            ev(sid, 1, "chat", pair.mentor_id, "a", ts=1500.25),
            ev(sid, 2, "chat", pair.mentor_id, "b", ts=1400.0),
        ]
    )
    assert await store.last_activity(sid) == 1500.25


async def test_list_sessions_counts_chats(store: Store) -> None:
    pair = await store.create_pair("A", "B", 900.0)
    old = await store.start_session(pair.id, 1000.0)
    await store.write(
        [
            presence(old.id, 1, pair.mentor_id, "joined"),
            ev(old.id, 2, "chat", pair.mentor_id, "1"),
            ev(old.id, 3, "chat", pair.mentee_id, "2"),
            ev(old.id, 4, "chat", pair.mentor_id, "3"),
            void_event(old.id, 5, 1001.0),
            ev(old.id, 6, "ended", pair.mentor_id, ends=True),
        ]
    )
    new = await store.start_session(pair.id, 2000.0)
    await store.write([presence(new.id, 1, pair.mentee_id, "joined")])
    listed = await store.list_sessions(pair.id)
    assert [(s.id, n, g) for s, n, g in listed] == [(new.id, 0, None), (old.id, 3, None)]
    assert listed[0].session.ended_at is None
    assert listed[1].session.ended_at == 1000.0
    assert [s.session.started_at for s in listed] == [2000.0, 1000.0]
    other = await store.create_pair("C", "D", 900.0)
    assert await store.list_sessions(other.id) == []


# notes -------------------------------------------------------------------------------------------
async def test_compact_notes_keeps_the_text(store: Store) -> None:
    _, sid = await new_session(store)
    _, other_sid = await new_session(store)
    pieces = [f"line {i} é☕😀\n" for i in range(30)]
    # two writers: one appends lines, another edits concurrently from its own document
    ours = edits(*pieces)
    theirs_doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    theirs_text = theirs_doc.get("notes", type=pycrdt.Text)
    theirs_doc.apply_update(ours[0])
    state = theirs_doc.get_state()
    theirs_text.insert(0, "Title ✓\n")
    theirs = theirs_doc.get_update(state)
    await store.write([StoredNotes(sid, u) for u in ours[:10]])
    await store.write([StoredNotes(sid, theirs)])
    await store.write([StoredNotes(sid, u) for u in ours[10:]])
    await store.write([StoredNotes(other_sid, u) for u in edits("other session")])
    before = notes_text(await store.notes_updates(sid))
    assert before.startswith("Title ✓\nline 0 é☕😀\n")
    assert all(p in before for p in pieces)
    assert len(await store.notes_updates(sid)) == 31

    assert await store.compact_notes(sid) == 30
    rows = await store.notes_updates(sid)
    assert len(rows) == 1
    assert notes_text(rows) == before
    assert await store.compact_notes(sid) == 0
    assert notes_text(await store.notes_updates(sid)) == before
    # the other session is untouched
    assert len(await store.notes_updates(other_sid)) == 1
    assert notes_text(await store.notes_updates(other_sid)) == "other session"

    # later updates still apply on top of the snapshot
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    doc.apply_update(rows[0])
    state = doc.get_state()
    text.insert(len(text), "after compaction")
    await store.write([StoredNotes(sid, doc.get_update(state))])
    assert notes_text(await store.notes_updates(sid)) == before + "after compaction"
    assert await store.compact_notes(sid) == 1
    assert notes_text(await store.notes_updates(sid)) == before + "after compaction"


async def test_a_compaction_rides_in_a_write_batch(store: Store) -> None:
    pair, sid = await new_session(store)
    _, other_sid = await new_session(store)
    ours = edits(*(f"line {i}\n" for i in range(12)))
    await store.write([StoredNotes(sid, u) for u in ours[:8]])
    # the batch's own updates come before its compaction, and are folded in too
    later = [StoredNotes(sid, u) for u in ours[8:]]
    await store.write([*later, CompactNotes(sid), CompactNotes(sid), CompactNotes(other_sid)])
    rows = await store.notes_updates(sid)
    assert len(rows) == 1
    assert notes_text(rows) == "".join(f"line {i}\n" for i in range(12))
    assert await store.notes_updates(other_sid) == []
    found = await store.search(pair.id, "line", 5)
    assert [r["kind"] for r in found] == ["notes"]


async def test_compact_notes_of_an_empty_session(store: Store) -> None:
    _, sid = await new_session(store)
    assert await store.compact_notes(sid) == 0
    assert await store.notes_updates(sid) == []
    assert notes_text([]) == ""


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_missing_seqs_are_the_holes_below_head(store: Store) -> None:
    pair, sid = await new_session(store)
    assert await store.missing_seqs(sid, 0) == []
    a = ev(sid, 1, "chat", pair.mentor_id, "a", text="a")
    b = ev(sid, 4, "chat", pair.mentor_id, "b", text="b")
    await store.write([a, b])
    assert await store.missing_seqs(sid, 4) == [2, 3]
    await store.write([void_event(sid, 2, 1.0), void_event(sid, 3, 1.0)])
    assert await store.missing_seqs(sid, 4) == []


# the mentorship journey: durable events in the shapes the room machine stores -----------------
def chat(session: str, seq: int, who: str, text: str, ts: float = 1000.0) -> StoredEvent:
    return ev(session, seq, "chat", who, f"c{seq}", ts, text=text)


def goal(session: str, seq: int, who: str, text: str, ts: float = 1000.0) -> StoredEvent:
    return ev(session, seq, "goal", who, f"g{seq}", ts, id=f"g{seq}", by=who, text=text)


def item_id(session: str, seq: int) -> str:
    return f"{session[:12]}.{seq}"


def new_item(
    session: str,
    seq: int,
    who: str,
    text: str,
    owner: str,
    due: str | None = None,
    ts: float = 1000.0,
    client_id: str | None = None,
) -> StoredEvent:
    item = {
        "id": item_id(session, seq),
        "text": text,
        "owner": owner,
        "due": due,
        "state": "open",
        "by": who,
        "session_id": session,
        "created_at": ts,
    }
    cid = client_id or f"i{seq}"
    return ev(session, seq, "item", who, cid, ts, id=cid, by=who, item=item)


def item_update(
    session: str, seq: int, who: str, item: str, ts: float = 1000.0, **changes: object
) -> StoredEvent:
    return ev(
        session, seq, "item_update", who, f"u{seq}", ts, id=f"u{seq}", by=who, item=item, **changes
    )


def mark(
    session: str,
    seq: int,
    who: str,
    kind: str,
    text: str,
    ref: int | None = None,
    ts: float = 1000.0,
) -> StoredEvent:
    body = {"t": "mark", "seq": seq, "id": f"m{seq}", "by": who, "kind": kind}
    packed: bytes = msgpack.packb({**body, "text": text, "ref": ref, "ts": ts})
    return StoredEvent(session, seq, "mark", who, f"m{seq}", ts, packed)


def record(session: str, seq: int, who: str, state: str, ts: float = 1000.0) -> StoredEvent:
    return ev(session, seq, "record", who, f"r{seq}", ts, id=f"r{seq}", by=who, state=state)


def found(results: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["session_id"], r["kind"], r["seq"]) for r in results]


async def test_items_follow_their_events(store: Store) -> None:
    pair, s1 = await new_session(store)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    assert await store.items(pair.id) == []
    await store.write(
        [
            chat(s1, 1, mentor, "let us plan"),
            new_item(s1, 2, mentor, "Send the draft", mentee, "2026-12-10", ts=1001.0),
            new_item(s1, 3, mentee, "Book a room", mentor, ts=1002.0),
            # an update in the same batch as its item's creation
            item_update(s1, 4, mentee, item_id(s1, 3), ts=1003.0, text="Book a bigger room"),
        ]
    )
    first = {
        "id": item_id(s1, 2),
        "text": "Send the draft",
        "owner": mentee,
        "due": "2026-12-10",
        "state": "open",
        "by": mentor,
        "session_id": s1,
        "created_at": 1001.0,
    }
    second = {
        "id": item_id(s1, 3),
        "text": "Book a bigger room",
        "owner": mentor,
        "due": None,
        "state": "open",
        "by": mentee,
        "session_id": s1,
        "created_at": 1002.0,
    }
    assert await store.items(pair.id) == [first, second]
    await store.write([EndSession(s1, 1100.0)])
    # a later session updates an earlier session's items; only the given fields change
    s2 = (await store.start_session(pair.id, 2000.0)).id
    await store.write(
        [
            item_update(s2, 1, mentee, item_id(s1, 2), ts=2001.0, state="done"),
            item_update(s2, 2, mentor, item_id(s1, 3), ts=2002.0, owner=mentee, due="2027-01-31"),
        ]
    )
    first["state"] = "done"
    second.update(owner=mentee, due="2027-01-31")
    assert await store.items(pair.id) == [first, second]
    # rejected duplicates change nothing: the same seq, or the same sender's client id
    same_seq = item_update(s2, 2, mentor, item_id(s1, 2), ts=2003.0, state="dropped")
    same_id = new_item(s2, 3, mentee, "a retry with the same id", mentee, client_id="u1")
    assert await store.write([same_seq, same_id]) == [same_seq, same_id]
    assert await store.items(pair.id) == [first, second]
    assert found(await store.search(pair.id, "retry")) == []
    # reopened, due date cleared
    await store.write([item_update(s2, 3, mentor, item_id(s1, 2), state="open", due=None)])
    first.update(state="open", due=None)
    assert await store.items(pair.id) == [first, second]
    # another pair's items are its own
    other, o1 = await new_session(store)
    await store.write([new_item(o1, 1, other.mentor_id, "theirs", other.mentee_id, ts=1.0)])
    assert await store.items(pair.id) == [first, second]
    assert [i["text"] for i in await store.items(other.id)] == ["theirs"]


async def test_session_state(store: Store) -> None:
    pair, sid = await new_session(store)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    start = {"goal": None, "record": "on", "record_by": None, "record_seq": None}
    assert await store.session_state(sid) == start
    await store.write([goal(sid, 1, mentor, "Ship the CV"), record(sid, 2, mentee, "requested")])
    assert await store.session_state(sid) == {
        "goal": "Ship the CV",
        "record": "requested",
        "record_by": mentee,
        "record_seq": 2,
    }
    await store.write([record(sid, 3, mentor, "off"), goal(sid, 4, mentee, "Ship the CV today")])
    assert await store.session_state(sid) == {
        "goal": "Ship the CV today",
        "record": "off",
        "record_by": mentor,
        "record_seq": 3,
    }
    # the last event by seq counts, whatever order they were stored in
    await store.write([goal(sid, 7, mentor, ""), record(sid, 8, mentee, "on")])
    await store.write([goal(sid, 6, mentor, "stored late"), record(sid, 5, mentor, "off")])
    assert await store.session_state(sid) == {
        "goal": None,
        "record": "on",
        "record_by": mentee,
        "record_seq": 8,
    }
    # each session has its own state
    _, other = await new_session(store)
    assert await store.session_state(other) == start


async def test_sessions_list_their_goal(store: Store) -> None:
    pair = await store.create_pair("A", "B", 900.0)
    s1 = (await store.start_session(pair.id, 1000.0)).id
    await store.write(
        [
            goal(s1, 1, pair.mentor_id, "first goal"),
            goal(s1, 2, pair.mentee_id, "the goal we kept"),
            chat(s1, 3, pair.mentor_id, "hello"),
            EndSession(s1, 1100.0),
        ]
    )
    s2 = (await store.start_session(pair.id, 2000.0)).id
    await store.write(
        [goal(s2, 1, pair.mentor_id, "soon cleared"), goal(s2, 2, pair.mentee_id, "")]
    )
    await store.write([EndSession(s2, 2100.0)])
    s3 = (await store.start_session(pair.id, 3000.0)).id
    listed = await store.list_sessions(pair.id)
    assert [(s.session.id, s.message_count, s.goal) for s in listed] == [
        (s3, 0, None),
        (s2, 0, None),
        (s1, 1, "the goal we kept"),
    ]


async def journey_sessions(store: Store) -> tuple[PairRecord, str, str]:
    """A pair with two sessions holding one of every searchable kind about "portfolio"."""
    pair = await store.create_pair("Ada", "Grace", 900.0)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    s1 = (await store.start_session(pair.id, 1000.0)).id
    await store.write(
        [
            goal(s1, 1, mentor, "Prepare the Portfolio", ts=1001.0),
            chat(s1, 2, mentee, "My portfolio is a mess.", ts=1002.0),
            new_item(s1, 3, mentor, "Send the portfolio draft", mentee, ts=1003.0),
            mark(s1, 4, mentee, "learning", "A portfolio tells a story", ref=2, ts=1004.0),
            chat(s1, 5, mentor, "Nothing to see here", ts=1005.0),
        ]
    )
    await store.write([StoredNotes(s1, u) for u in edits("Notes: ", "portfolio first")])
    await store.write([EndSession(s1, 1100.0)])
    s2 = (await store.start_session(pair.id, 2000.0)).id
    await store.write([chat(s2, 1, mentor, "How is the PORTFOLIO going?", ts=2001.0)])
    return pair, s1, s2


async def test_search_finds_each_kind_across_sessions(store: Store) -> None:
    pair, s1, s2 = await journey_sessions(store)
    results = await store.search(pair.id, "portfolio")
    # newest first
    assert found(results) == [
        (s2, "chat", 1),
        (s1, "notes", None),
        (s1, "mark", 4),
        (s1, "item", 3),
        (s1, "chat", 2),
        (s1, "goal", 1),
    ]
    assert [r["ts"] for r in results] == [2001.0, 1100.0, 1004.0, 1003.0, 1002.0, 1001.0]
    assert [r["text"] for r in results] == [
        "How is the PORTFOLIO going?",
        "Notes: portfolio first",
        "A portfolio tells a story",
        "Send the portfolio draft",
        "My portfolio is a mess.",
        "Prepare the Portfolio",
    ]
    for r in results:
        assert set(r) == {"session_id", "kind", "seq", "text", "ts"}
        assert isinstance(r["ts"], float)
    assert found(await store.search(pair.id, "portfolio", limit=2)) == found(results)[:2]
    assert await store.search(pair.id, "portfolio", limit=0) == []


async def test_search_matches_whole_words_in_any_case(store: Store) -> None:
    pair, s1, s2 = await journey_sessions(store)
    for q in ("PORTFOLIO", "Portfolio", "  portfolio!  ", "portfolio?"):
        assert len(await store.search(pair.id, q)) == 6, q
    for q in ("port", "folio", "portfolios", "portfoli"):
        assert await store.search(pair.id, q) == [], q
    # every word must be there, in any order
    assert found(await store.search(pair.id, "mess portfolio")) == [(s1, "chat", 2)]
    assert found(await store.search(pair.id, "portfolio going HOW")) == [(s2, "chat", 1)]
    assert await store.search(pair.id, "portfolio nowhere") == []
    # a word other than in a message's text never matches (no pair id, no kind)
    assert await store.search(pair.id, pair.id) == []
    assert await store.search(pair.id, "chat") == []


@pytest.mark.parametrize(
    "q",
    [
        "!!!",
        "   ",
        "",
        '"',
        '""',
        "* ^ : ( ) { } - +",
        "NEAR(",
        "portfolio OR",
        "portfolio AND NOT",
        'portfolio" OR "mess',
        "text:portfolio",
        "pair_id : portfolio",
        "portfolio*",
        "(portfolio",
        "portfolio & | ! <-> :*",
        "'; DROP TABLE events; --",
    ],
)
async def test_search_queries_have_no_syntax(store: Store, q: str) -> None:
    pair, _, _ = await journey_sessions(store)
    results = await store.search(pair.id, q)  # never an error
    words = [
        w for w in ("portfolio", "or", "and", "not", "mess", "text", "pair", "id") if w in q.lower()
    ]
    for r in results:  # operators are plain words: all of them must be in the text
        assert all(w in str(r["text"]).lower() for w in words), (q, r)
    if not any(c.isalnum() for c in q):
        assert results == []
    assert len(await store.search(pair.id, "portfolio")) == 6  # and nothing was dropped


async def test_search_excerpt_around_the_match(store: Store) -> None:
    pair, sid = await new_session(store)
    mentor = pair.mentor_id
    filler = "lorem ipsum dolor sit amet " * 60  # 1620 characters
    await store.write(
        [
            chat(sid, 1, mentor, filler + "the Budget moment " + filler, ts=1.0),
            chat(sid, 2, mentor, "budget " + filler, ts=2.0),
            chat(sid, 3, mentor, filler + " end of the budget", ts=3.0),
            chat(sid, 4, mentor, "x" * 500 + " budget " + "y" * 500, ts=4.0),
            chat(sid, 5, mentor, "budgetary budgets, then\nthe budget\tat last", ts=5.0),
        ]
    )
    results = await store.search(pair.id, "budget")
    assert found(results) == [(sid, "chat", s) for s in (5, 4, 3, 2, 1)]
    for r in results:
        text = str(r["text"])
        assert len(text) <= 300, text
        assert re.search(r"(?i)(?<!\w)budget(?!\w)", text), text
    assert results[0]["text"] == "budgetary budgets, then the budget at last"
    assert "the Budget moment" in str(results[4]["text"])
    assert str(results[4]["text"]).startswith("…") and str(results[4]["text"]).endswith("…")
    assert str(results[3]["text"]).startswith("budget ")
    assert str(results[2]["text"]).endswith("end of the budget")


async def test_search_never_crosses_pairs(store: Store) -> None:
    pair, s1, s2 = await journey_sessions(store)
    other, o1 = await new_session(store)
    await store.write(
        [
            chat(o1, 1, other.mentor_id, "their portfolio secret"),
            goal(o1, 2, other.mentor_id, "portfolio goal"),
            new_item(o1, 3, other.mentor_id, "portfolio item", other.mentee_id),
            StoredNotes(o1, edits("portfolio notes")[0]),
            EndSession(o1, 1500.0),
        ]
    )
    mine = await store.search(pair.id, "portfolio")
    assert len(mine) == 6 and {r["session_id"] for r in mine} == {s1, s2}
    assert not any("secret" in str(r["text"]) for r in mine)
    assert await store.search(pair.id, "secret") == []
    assert found(await store.search(other.id, "secret")) == [(o1, "chat", 1)]
    assert {r["kind"] for r in await store.search(other.id, "portfolio")} == {
        "chat",
        "goal",
        "item",
        "notes",
    }
    assert await store.search("no-such-pair", "portfolio") == []


async def test_search_follows_item_text_changes(store: Store) -> None:
    pair, s1 = await new_session(store)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    await store.write([new_item(s1, 1, mentor, "Write the essay", mentee, ts=10.0)])
    await store.write([EndSession(s1, 20.0)])
    s2 = (await store.start_session(pair.id, 30.0)).id
    await store.write([item_update(s2, 1, mentee, item_id(s1, 1), ts=31.0, text="Write the poem")])
    assert await store.search(pair.id, "essay") == []
    results = await store.search(pair.id, "poem")
    # one entry per item: it still points at the event that created it
    assert results == [
        {"session_id": s1, "kind": "item", "seq": 1, "text": "Write the poem", "ts": 10.0}
    ]
    # other changes leave the text as it is
    await store.write([item_update(s2, 2, mentee, item_id(s1, 1), state="done", owner=mentor)])
    assert found(await store.search(pair.id, "poem")) == [(s1, "item", 1)]
    assert len(await store.search(pair.id, "write")) == 1


async def test_search_keeps_the_latest_goal_only(store: Store) -> None:
    pair, sid = await new_session(store)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    await store.write([goal(sid, 1, mentor, "learn alpha", ts=1.0)])
    await store.write([goal(sid, 2, mentee, "learn beta", ts=2.0)])
    assert await store.search(pair.id, "alpha") == []
    assert found(await store.search(pair.id, "learn")) == [(sid, "goal", 2)]
    # a goal stored late does not replace a later one
    await store.write([goal(sid, 4, mentor, "learn gamma", ts=4.0)])
    await store.write([goal(sid, 3, mentor, "learn delta", ts=3.0)])
    assert found(await store.search(pair.id, "learn")) == [(sid, "goal", 4)]
    assert await store.search(pair.id, "delta") == []
    # cleared: no goal entry at all
    await store.write([goal(sid, 5, mentee, "", ts=5.0)])
    assert await store.search(pair.id, "learn") == []
    # every session has its own goal entry
    await store.write([EndSession(sid, 6.0)])
    s2 = (await store.start_session(pair.id, 7.0)).id
    await store.write([goal(sid, 6, mentor, "learn again", ts=6.5)])  # late, in the old one
    await store.write([goal(s2, 1, mentor, "learn more", ts=8.0)])
    assert found(await store.search(pair.id, "learn")) == [(s2, "goal", 1), (sid, "goal", 6)]


async def test_search_follows_notes_compaction_and_the_end(store: Store) -> None:
    pair, sid = await new_session(store)
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    notes = doc.get("notes", type=pycrdt.Text)

    def typed(change: Callable[[], None]) -> bytes:
        state = doc.get_state()
        change()
        return doc.get_update(state)

    await store.write(
        [
            chat(sid, 1, pair.mentor_id, "hi", ts=50.0),
            StoredNotes(sid, typed(lambda: notes.insert(0, "Draft: apples"))),
            StoredNotes(sid, typed(lambda: notes.insert(len(notes), " and pears"))),
        ]
    )
    assert await store.search(pair.id, "apples") == []  # notes are indexed when compacted
    assert await store.compact_notes(sid) == 1
    assert await store.search(pair.id, "apples") == [
        {
            "session_id": sid,
            "kind": "notes",
            "seq": None,
            "text": "Draft: apples and pears",
            "ts": 50.0,
        }
    ]

    # a word deleted since is gone after the end; the end's time is the entry's
    def cut() -> None:
        del notes[0 : len("Draft: apples")]

    await store.write([StoredNotes(sid, typed(cut))])
    await store.write([StoredNotes(sid, typed(lambda: notes.insert(0, "Final:")))])
    await store.write([EndSession(sid, 99.0)])
    assert await store.search(pair.id, "apples") == []
    assert await store.search(pair.id, "pears") == [
        {"session_id": sid, "kind": "notes", "seq": None, "text": "Final: and pears", "ts": 99.0}
    ]
    assert await store.compact_notes(sid) == 2
    assert len(await store.search(pair.id, "pears")) == 1  # still one entry per session
    # notes emptied: no entry
    _, empty = await new_session(store)
    await store.write([EndSession(empty, 5.0)])
    assert await store.search(pair.id, "notes") == []


async def count_rows(store: Store, table: str, where: str = "", **params: object) -> int:
    async with store.engine.connect() as conn:
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
        return int((await conn.execute(text(sql), params)).scalar() or 0)


async def test_erase_removes_everything_of_the_pair(store: Store) -> None:
    pair, s1, s2 = await journey_sessions(store)
    await store.write([StoredNotes(s2, u) for u in edits("live ", "notes")])
    other, o1 = await new_session(store)
    await store.write(
        [
            chat(o1, 1, other.mentor_id, "our portfolio stays"),
            new_item(o1, 2, other.mentor_id, "keep me", other.mentee_id),
            StoredNotes(o1, edits("kept notes")[0]),
        ]
    )
    await store.compact_notes(o1)
    before = {t: await count_rows(store, t) for t in ("events", "items", "search_entries")}
    assert await store.erase_pair(pair.id) is True
    assert await store.get_pair(pair.id) is None
    assert await store.list_sessions(pair.id) == []
    assert await store.get_session(s1) is None and await store.get_session(s2) is None
    assert await store.events(s1) == [] and await store.notes_updates(s2) == []
    assert await store.items(pair.id) == []
    assert await store.search(pair.id, "portfolio") == []
    for table, column in (
        ("search_entries", "pair_id"),
        ("items", "pair_id"),
        ("sessions", "pair_id"),
    ):
        assert await count_rows(store, table, f"{column} = :p", p=pair.id) == 0
    for sid in (s1, s2):
        for table in ("events", "notes_updates", "search_entries"):
            assert await count_rows(store, table, "session_id = :s", s=sid) == 0
    assert (
        await count_rows(store, "users", "id IN (:a, :b)", a=pair.mentor_id, b=pair.mentee_id) == 0
    )
    if store.dialect == "sqlite":  # the FTS5 index lost the rows too, not only the table
        assert await count_rows(store, "search_fts_docsize") == await count_rows(
            store, "search_entries"
        )
        assert await count_rows(store, "search_fts", "search_fts MATCH :m", m="mess") == 0
    # the other pair is untouched
    assert await store.get_pair(other.id) == other
    assert found(await store.search(other.id, "portfolio")) == [(o1, "chat", 1)]
    assert found(await store.search(other.id, "kept")) == [(o1, "notes", None)]
    assert [i["text"] for i in await store.items(other.id)] == ["keep me"]
    assert await count_rows(store, "events") == before["events"] - 6
    assert await count_rows(store, "items") == before["items"] - 1
    # erased once; an unknown pair is no pair
    assert await store.erase_pair(pair.id) is False
    assert await store.erase_pair("no-such-pair") is False
    # the store goes on: new pairs, sessions, searches
    again = await store.create_pair("A", "B", 1.0)
    sid = (await store.start_session(again.id, 1.0)).id
    await store.write([chat(sid, 1, again.mentor_id, "portfolio")])
    assert found(await store.search(again.id, "portfolio")) == [(sid, "chat", 1)]


async def test_pair_events_and_ordering(store: Store) -> None:
    pair, s1, s2 = await journey_sessions(store)
    await store.write([item_update(s2, 2, pair.mentee_id, item_id(s1, 3), state="done")])
    got = await store.pair_events(pair.id, ("mark", "item", "item_update"))
    assert [(e.session_id, e.seq, e.kind) for e in got] == [
        (s1, 3, "item"),
        (s1, 4, "mark"),
        (s2, 2, "item_update"),
    ]
    assert await store.pair_events(pair.id, ("record",)) == []


async def test_erase_while_a_room_writes(store: Store) -> None:
    pair, sid = await new_session(store)
    written: list[int] = []
    started = asyncio.Event()

    async def room() -> None:
        for seq in range(1, 400):
            try:
                await store.write([chat(sid, seq, pair.mentor_id, f"portfolio {seq}")])
            except IntegrityError:  # the session is gone: never acked
                return
            written.append(seq)
            if len(written) == 5:
                started.set()

    task = asyncio.create_task(room())
    await asyncio.wait_for(started.wait(), 30)
    assert await store.erase_pair(pair.id) is True
    await asyncio.wait_for(task, 30)
    assert 5 <= len(written) < 399  # some writes landed before, none after
    assert await store.get_session(sid) is None
    for table in ("events", "search_entries"):
        assert await count_rows(store, table, "session_id = :s", s=sid) == 0
    assert await store.search(pair.id, "portfolio") == []


async def test_texts_with_nul_characters(store: Store) -> None:
    pair, sid = await new_session(store)
    mentor, mentee = pair.mentor_id, pair.mentee_id
    assert (
        await store.write(
            [
                chat(sid, 1, mentor, "nul\x00byte here"),
                new_item(sid, 2, mentor, "item\x00with nul", mentee),
                item_update(sid, 3, mentee, item_id(sid, 2), owner=mentor, text="fixed\x00 text"),
                goal(sid, 4, mentee, "goal\x00"),
            ]
        )
        == []
    )
    assert msgpack.unpackb((await store.events(sid))[0].body)["text"] == "nul\x00byte here"
    assert [i["text"] for i in await store.items(pair.id)] == ["fixed text"]
    assert found(await store.search(pair.id, "nulbyte")) == [(sid, "chat", 1)]
    assert found(await store.search(pair.id, "fixed")) == [(sid, "item", 2)]
    assert (await store.session_state(sid))["goal"] == "goal\x00"


async def test_room_state_reads_what_a_room_is_built_from(store: Store) -> None:
    pair, sid = await new_session(store)
    m, e = pair.mentor_id, pair.mentee_id
    await store.write(
        [
            presence(sid, 1, m, "joined"),
            presence(sid, 2, e, "joined"),
            goal(sid, 3, m, "Ship it", ts=1001.0),
            new_item(sid, 4, m, "Draft", owner=e, ts=1002.0),
            record(sid, 6, e, "requested", ts=1003.0),
            presence(sid, 7, e, "left", ts=1004.0),
            StoredNotes(sid, edits("notes")[0]),
        ]
    )
    state = await store.room_state(pair.id, sid)
    assert (state.head, state.missing, state.last_activity) == (7, [5], 1004.0)
    assert state.presence == await store.presence_seqs(sid) == {m: ("joined", 1), e: ("left", 7)}
    assert state.items == await store.items(pair.id) and [i["text"] for i in state.items] == [
        "Draft"
    ]
    assert state.notes == await store.notes_updates(sid)
    assert (
        {
            "goal": state.goal,
            "record": state.record,
            "record_by": state.record_by,
            "record_seq": state.record_seq,
        }
        == await store.session_state(sid)
        == {
            "goal": "Ship it",
            "record": "requested",
            "record_by": e,
            "record_seq": 6,
        }
    )
