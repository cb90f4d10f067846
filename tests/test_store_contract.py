"""The Store contract, one suite for every database the server supports.

To run it against another database, add one entry to ``STORES``: a function of the test's
request that returns a fresh database URL. PostgreSQL runs in a fresh schema per test (the
``pg_url`` fixture); it skips when PostgreSQL is unreachable, and fails instead when CI=true.
Every test makes its own pairs and sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import msgpack
import pycrdt
import pytest
from sqlalchemy.exc import IntegrityError

from persistence.store import (
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


async def test_start_session_concurrently_returns_one(store: Store) -> None:
    pair = await store.create_pair("A", "B", 1000.0)
    got = await asyncio.wait_for(
        asyncio.gather(*(store.start_session(pair.id, 1000.0 + i) for i in range(8))), 30
    )
    assert len({s.id for s in got}) == 1
    assert [s for s, _ in await store.list_sessions(pair.id)] == [
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
    assert [n for _, n in listed] == [2]
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
    assert [(s.id, n) for s, n in listed] == [(new.id, 0), (old.id, 3)]
    assert listed[0][0].ended_at is None
    assert listed[1][0].ended_at == 1000.0
    assert [s.started_at for s, _ in listed] == [2000.0, 1000.0]
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
