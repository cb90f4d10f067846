"""The group-commit writer against a real SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import msgpack
import pycrdt
import pytest
from sqlalchemy.exc import IntegrityError

from persistence.store import Store, StoredEvent, StoredNotes, notes_text, void_event
from persistence.writer import WriteConflict, Writer, WriterUnavailable


def chat(session_id: str, seq: int) -> StoredEvent:
    body = msgpack.packb({"t": "chat", "seq": seq, "id": f"m{seq}", "text": f"hello {seq}"})
    return StoredEvent(session_id, seq, "chat", "u1", f"m{seq}", 1.0, body)


def edits(*pieces: str) -> list[bytes]:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    out = []
    for piece in pieces:
        state = doc.get_state()
        text.insert(len(text), piece)
        out.append(doc.get_update(state))
    return out


async def test_shutdown_is_bounded_while_the_store_is_locked(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    async with Store(f"sqlite:///{db}") as store:
        pair = await store.create_pair("A", "B", 1.0)
        session = await store.start_session(pair.id, 1.0)
        blocker = sqlite3.connect(db, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
        try:
            writer = Writer(store)
            writer.drain_timeout = 0.5
            await writer.__aenter__()
            fut = writer.submit(StoredNotes(session.id, b"\x00\x00"))
            started = time.monotonic()
            await writer.__aexit__(None, None, None)
            assert time.monotonic() - started < 20  # bounded (busy_timeout is 10 s)
            assert not fut.done() or fut.cancelled()  # never reported as stored
        finally:
            blocker.rollback()
            blocker.close()
        assert await store.notes_updates(session.id) == []


async def test_forced_submit_passes_a_full_backlog(tmp_path: Path) -> None:
    async with Store(f"sqlite:///{tmp_path / 'w.db'}") as store:
        pair = await store.create_pair("A", "B", 1.0)
        session = await store.start_session(pair.id, 1.0)
        writer = Writer(store, max_backlog=2)
        async with writer:
            # nothing commits until the loop runs: the queue fills synchronously
            queued = [writer.submit(StoredNotes(session.id, u)) for u in edits("a", "b")]
            assert writer.full()
            with pytest.raises(WriterUnavailable):
                writer.submit(StoredNotes(session.id, b"\x00\x00"))
            void = writer.submit(void_event(session.id, 1, 2.0), force=True)
            await asyncio.wait_for(asyncio.gather(*queued, void), 10)
        assert [(e.seq, e.kind) for e in await store.events(session.id)] == [(1, "void")]
        assert notes_text(await store.notes_updates(session.id)) == "ab"
        # a stopped writer refuses even a forced write
        with pytest.raises(WriterUnavailable):
            writer.submit(void_event(session.id, 2, 3.0), force=True)


async def test_writes_commit_in_the_order_submitted(tmp_path: Path) -> None:
    async with Store(f"sqlite:///{tmp_path / 'w.db'}") as store:
        pair = await store.create_pair("A", "B", 1.0)
        session = await store.start_session(pair.id, 1.0)
        resolved: list[int] = []
        async with Writer(store, max_batch=7) as writer:
            futs = []
            for seq in range(1, 301):
                fut = writer.submit(chat(session.id, seq))
                fut.add_done_callback(lambda f, seq=seq: resolved.append(seq))
                futs.append(fut)
                if seq % 50 == 0:
                    await asyncio.sleep(0)  # let some batches go meanwhile
            await asyncio.wait_for(asyncio.gather(*futs), 30)
            assert writer.written == 300 and writer.batches >= 300 // 7
        assert resolved == list(range(1, 301))
        assert [e.seq for e in await store.events(session.id)] == list(range(1, 301))


async def test_a_bad_write_fails_alone(tmp_path: Path) -> None:
    async with Store(f"sqlite:///{tmp_path / 'w.db'}") as store:
        pair = await store.create_pair("A", "B", 1.0)
        session = await store.start_session(pair.id, 1.0)
        async with Writer(store) as writer:
            good = [writer.submit(chat(session.id, seq)) for seq in (1, 2)]
            bad = writer.submit(chat("no-such-session", 1))  # its foreign key fails
            also = writer.submit(chat(session.id, 3))
            await asyncio.wait_for(asyncio.gather(*good, also), 10)
            with pytest.raises(IntegrityError):
                await asyncio.wait_for(bad, 10)
        assert [e.seq for e in await store.events(session.id)] == [1, 2, 3]


async def test_a_void_that_lost_its_race_is_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hole's void refused because its event was stored after all is the expected end of
    that race (logged as information); a refused chat is still a warning."""
    async with Store(f"sqlite:///{tmp_path / 'w.db'}") as store:
        pair = await store.create_pair("A", "B", 1.0)
        session = await store.start_session(pair.id, 1.0)
        async with Writer(store) as writer:
            await asyncio.wait_for(writer.submit(chat(session.id, 1)), 10)
            with caplog.at_level("INFO", logger="persistence.writer"):
                with pytest.raises(WriteConflict):
                    await asyncio.wait_for(writer.submit(void_event(session.id, 1, 2.0)), 10)
                with pytest.raises(WriteConflict):
                    await asyncio.wait_for(writer.submit(chat(session.id, 1)), 10)
        levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
        assert levels == [("INFO", "void not stored"), ("WARNING", "write refused")], levels
        assert [(e.seq, e.kind) for e in await store.events(session.id)] == [(1, "chat")]
