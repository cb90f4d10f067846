"""The group-commit writer against a real SQLite store that cannot be written."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from persistence.store import Store, StoredNotes
from persistence.writer import Writer


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
