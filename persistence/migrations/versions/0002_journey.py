"""The mentorship journey: action items, the search index (FTS5 / tsvector), events by kind.

The search index is filled from what is already stored: every chat, and every session's notes
(the final text of an ended session, the merged updates of a live one).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import msgpack
import pycrdt
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE_SEARCH = (
    "CREATE VIRTUAL TABLE search_fts USING fts5(pair_id, text, content='search_entries', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_entries_ai AFTER INSERT ON search_entries BEGIN "
    "INSERT INTO search_fts(rowid, pair_id, text) VALUES (new.id, new.pair_id, new.text); END",
    "CREATE TRIGGER search_entries_ad AFTER DELETE ON search_entries BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, pair_id, text) "
    "VALUES ('delete', old.id, old.pair_id, old.text); END",
    "CREATE TRIGGER search_entries_au AFTER UPDATE ON search_entries BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, pair_id, text) "
    "VALUES ('delete', old.id, old.pair_id, old.text); "
    "INSERT INTO search_fts(rowid, pair_id, text) VALUES (new.id, new.pair_id, new.text); END",
)
POSTGRESQL_SEARCH = (
    "ALTER TABLE search_entries ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED",
    "CREATE INDEX search_text ON search_entries USING gin (tsv)",
)
NOTES_INDEXED = 100_000  # characters of a session's notes that are searchable
PAGE = 2000

search_entries = sa.table(
    "search_entries",
    sa.column("pair_id", sa.String),
    sa.column("session_id", sa.String),
    sa.column("kind", sa.String),
    sa.column("seq", sa.Integer),
    sa.column("ref", sa.String),
    sa.column("ts", sa.Float),
    sa.column("text", sa.String),
)


def upgrade() -> None:
    op.create_index("events_by_kind", "events", ["session_id", "kind", "seq"])
    op.create_table(
        "items",
        sa.Column("pair_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("due", sa.String(10), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pair_id", "id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_table(
        "search_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pair_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("ref", sa.String(64), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_index("search_by_pair", "search_entries", ["pair_id", "ts", "id"])
    op.create_index("search_by_session", "search_entries", ["session_id", "kind"])
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_SEARCH if dialect == "sqlite" else POSTGRESQL_SEARCH:
        op.execute(statement)
    _index_what_is_stored()


def _index_what_is_stored() -> None:
    """Every stored chat, then the session's notes, session by session in the order they
    started: search lists newest first by the order entries were indexed in."""
    bind = op.get_bind()
    sessions = bind.execute(
        sa.text(
            "SELECT id, pair_id, started_at, ended_at, notes_text FROM sessions "
            "ORDER BY started_at, id"
        )
    ).all()
    chats = sa.text(
        "SELECT seq, ts, body FROM events WHERE session_id = :s AND kind = 'chat' AND seq > :after "
        "ORDER BY seq LIMIT :n"
    )
    for session_id, pair_id, started_at, ended_at, stored_notes in sessions:
        after = 0
        while True:
            rows = bind.execute(chats, {"s": session_id, "after": after, "n": PAGE}).all()
            if not rows:
                break
            entries = []
            for seq, ts, body in rows:
                text = msgpack.unpackb(bytes(body), raw=False).get("text")
                if isinstance(text, str) and text:
                    entries.append(_entry(pair_id, session_id, "chat", seq, ts, text))
            if entries:
                bind.execute(sa.insert(search_entries), entries)
            after = rows[-1][0]
        if ended_at is not None and stored_notes is not None:
            notes, ts = stored_notes, ended_at
        else:
            notes = _live_notes(session_id)
            last = bind.execute(
                sa.text("SELECT max(ts) FROM events WHERE session_id = :s"), {"s": session_id}
            ).scalar()
            ts = last or started_at
        if notes.strip():
            entry = _entry(pair_id, session_id, "notes", None, ts, notes[:NOTES_INDEXED])
            bind.execute(sa.insert(search_entries), entry)


def _entry(
    pair_id: str, session_id: str, kind: str, seq: int | None, ts: float, text: str
) -> dict[str, Any]:
    return {
        "pair_id": pair_id,
        "session_id": session_id,
        "kind": kind,
        "seq": seq,
        "ref": None,
        "ts": ts,
        "text": text,
    }


def _live_notes(session_id: str) -> str:
    """A live session's notes: its stored updates merged."""
    updates = op.get_bind().execute(
        sa.text("SELECT data FROM notes_updates WHERE session_id = :s ORDER BY id"),
        {"s": session_id},
    )
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    notes = doc.get("notes", type=pycrdt.Text)
    for (update,) in updates:
        doc.apply_update(bytes(update))
    return str(notes)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS search_fts")  # its triggers go with search_entries
    op.drop_index("search_by_session", table_name="search_entries")
    op.drop_index("search_by_pair", table_name="search_entries")
    op.drop_table("search_entries")
    op.drop_table("items")
    op.drop_index("events_by_kind", table_name="events")
