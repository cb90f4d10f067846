"""SQLite: search entries reach the FTS5 index in bulk (``Store._index``), behind a mark that
commits with them; every search first adds what waits, so it finds everything stored."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from persistence.store import INDEX_AFTER, Store, StoredNotes
from tests.test_store_contract import (
    chat,
    edits,
    found,
    goal,
    item_id,
    item_update,
    new_item,
    new_session,
)


def counts(db: Path) -> tuple[int, int, int]:
    """(entries, entries in the FTS index, the mark)."""
    with sqlite3.connect(db) as raw:
        entries = raw.execute("SELECT count(*) FROM search_entries").fetchone()[0]
        indexed = raw.execute("SELECT count(*) FROM search_fts_docsize").fetchone()[0]
        upto = raw.execute("SELECT upto FROM search_indexed").fetchone()[0]
    return entries, indexed, upto


def index_matches_table(db: Path) -> None:
    """FTS5's own check of the index against its content table: raises if they differ."""
    raw = sqlite3.connect(db, timeout=10)
    try:
        raw.execute("INSERT INTO search_fts(search_fts, rank) VALUES ('integrity-check', 1)")
        raw.commit()
    finally:
        raw.close()


async def test_chats_wait_for_the_index_and_a_search_finds_them(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with Store(f"sqlite:///{db}") as store:
        pair, s = await new_session(store)
        for seq in range(1, 11):
            await store.write([chat(s, seq, pair.mentor_id, f"word{seq} shared")])
        assert counts(db)[:2] == (10, 1)  # a new store indexes at its first batch, then waits
        assert found(await store.search(pair.id, "word7")) == [(s, "chat", 7)]
        await store.write([chat(s, 11, pair.mentor_id, "lateword")])
        entries, indexed, _ = counts(db)
        assert (entries, indexed) == (11, 10)  # the last chat waits: it was not indexed alone
        assert found(await store.search(pair.id, "lateword")) == [(s, "chat", 11)]
        assert counts(db)[:2] == (11, 11)
        assert len(await store.search(pair.id, "shared")) == 10
    index_matches_table(db)


async def test_a_batch_indexes_all_that_waits_past_the_threshold(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with Store(f"sqlite:///{db}") as store:
        pair, s = await new_session(store)
        # a new store cannot know what waits: it indexes at its first batch
        await store.write([chat(s, 1, pair.mentor_id, "hello")])
        assert counts(db) == (1, 1, 1)
        seq = 1
        while seq + 2 < INDEX_AFTER:
            await store.write([chat(s, seq + i, pair.mentor_id, "hello") for i in (1, 2)])
            seq += 2
        entries, indexed, _ = counts(db)
        assert indexed == 1 and entries == seq
        await store.write([chat(s, seq + i, pair.mentor_id, "hello") for i in range(1, 11)])
        entries, indexed, upto = counts(db)
        assert entries == indexed == seq + 10  # without a search
        assert upto == entries
    index_matches_table(db)


async def test_entries_that_wait_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    async with Store(url) as store:
        pair, s = await new_session(store)
        await store.write([chat(s, 1, pair.mentor_id, "hello")])
        await store.write([chat(s, 2, pair.mentor_id, "before the restart")])
    assert counts(db)[:2] == (2, 1)
    async with Store(url) as store:
        assert found(await store.search(pair.id, "restart")) == [(s, "chat", 2)]
    index_matches_table(db)


async def test_an_id_sqlite_gives_again_is_indexed_again(tmp_path: Path) -> None:
    """A new goal replaces the session's goal entry: deleted, then inserted. When that entry
    held the highest id, SQLite gives the new one the same id; were the mark left where it was,
    the new goal would count as indexed and never be found."""
    db = tmp_path / "s.db"
    async with Store(f"sqlite:///{db}") as store:
        pair, s = await new_session(store)
        await store.write(
            [chat(s, 1, pair.mentor_id, "hello"), goal(s, 2, pair.mentor_id, "Alpha")]
        )
        assert found(await store.search(pair.id, "alpha")) == [(s, "goal", 2)]
        entries, indexed, upto = counts(db)
        assert entries == indexed == upto == 2
        await store.write([goal(s, 3, pair.mentee_id, "Bravo")])
        with sqlite3.connect(db) as raw:
            assert raw.execute("SELECT id FROM search_entries WHERE kind = 'goal'").fetchone() == (
                2,
            )
        assert found(await store.search(pair.id, "bravo")) == [(s, "goal", 3)]
        assert await store.search(pair.id, "alpha") == []
    index_matches_table(db)


async def test_the_index_matches_the_table_through_any_mix(tmp_path: Path) -> None:
    """Chats, goals, item texts, notes compactions and an erase, with searches between them at
    random points: each search finds every word said in its pair, and FTS5 finds its index
    and the table in step."""
    rng = random.Random(11)
    db = tmp_path / "s.db"
    async with Store(f"sqlite:///{db}") as store:
        rooms = [await new_session(store) for _ in range(3)]
        seqs = {s: 0 for _, s in rooms}
        said: dict[str, set[str]] = {p.id: set() for p, _ in rooms}
        items: dict[str, list[str]] = {s: [] for _, s in rooms}
        erased: set[str] = set()
        for step in range(120):
            pair, s = rng.choice(rooms)
            if pair.id in erased:
                continue
            who = pair.mentor_id
            seqs[s] += 1
            seq = seqs[s]
            word = f"w{step}x"
            kind = rng.choice(["chat", "chat", "chat", "goal", "item", "update", "notes"])
            if kind == "chat":
                await store.write([chat(s, seq, who, f"{word} again")])
                said[pair.id].add(word)
            elif kind == "goal":
                await store.write([goal(s, seq, who, word)])
            elif kind == "item":
                await store.write([new_item(s, seq, who, word, pair.mentee_id)])
                items[s].append(item_id(s, seq))
            elif kind == "update" and items[s]:
                await store.write([item_update(s, seq, who, rng.choice(items[s]), text=word)])
            else:
                await store.write([StoredNotes(s, u) for u in edits(f"{word} ")])
                await store.compact_notes(s)
            if step == 80:
                await store.erase_pair(rooms[0][0].id)
                erased.add(rooms[0][0].id)
            if rng.random() < 0.15:
                for p, _ in rooms:
                    if p.id not in erased:
                        for w in rng.sample(sorted(said[p.id]), min(3, len(said[p.id]))):
                            assert await store.search(p.id, w), (step, w)
                index_matches_table(db)
        await store.search(rooms[1][0].id, "anything")
        entries, indexed, _ = counts(db)
        assert entries == indexed
    index_matches_table(db)
