"""On SQLite, what the room build, the session list, the journey and the writer ask of a
session by kind is answered from the partial by-kind indexes, which leave chats out (so a chat
writes two b-trees fewer). SQLite uses a partial index only for a query that states its
condition: one that forgot would walk the whole session instead, and only this test would say."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event

from persistence.store import Store, StoredNotes
from tests.test_store_contract import edits, ev, item_id, item_update, new_item, new_session


async def test_reads_by_kind_use_the_partial_indexes(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    async with Store(f"sqlite:///{db}") as store:
        pair, session = await new_session(store)
        mentor, mentee = pair.mentor_id, pair.mentee_id
        await store.write(
            [
                ev(session, 1, "chat", mentor, "c1", text="hello"),
                ev(session, 2, "goal", mentor, "g2", text="a plan"),
                new_item(session, 3, mentor, "Draft the plan", mentee),
                *(StoredNotes(session, u) for u in edits("first ", "second")),
            ]
        )
        statements: list[tuple[str, Any]] = []

        def capture(*args: Any) -> None:
            statements.append((args[2], args[3]))

        engines = [store._reader, store._sync, store.engine.sync_engine]
        for engine in engines:
            event.listen(engine, "before_cursor_execute", capture)
        await store.room_state(pair.id, session)
        await store.session_state(session)
        await store.list_sessions(pair.id)
        await store.pair_events(pair.id, ("mark", "item", "item_update"))
        await store.write(
            [
                ev(session, 4, "goal", mentee, "g4", text="a better plan"),
                item_update(session, 5, mentee, item_id(session, 3), text="Draft it twice"),
            ]
        )
        await store.compact_notes(session)
        for engine in engines:
            event.remove(engine, "before_cursor_execute", capture)

    by_kind = [(s, p) for s, p in statements if "kind" in s and not s.startswith("INSERT")]
    assert len(by_kind) >= 8, statements
    with sqlite3.connect(db) as raw:
        for statement, params in by_kind:
            plan = " | ".join(
                row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params)
            )
            assert "events_by_kind" in plan or "search_by_session" in plan, (statement, plan)
