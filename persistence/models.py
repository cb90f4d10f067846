"""SQL tables: users, pairs, sessions, transcript events, shared-notes updates, action items and
the search index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Index, LargeBinary, UniqueConstraint, event, text
from sqlmodel import Field, SQLModel

# a partial index's condition: SQLite uses such an index only for a query that states it
NOT_CHAT: dict[str, Any] = {
    "sqlite_where": text("kind != 'chat'"),
    "postgresql_where": text("kind != 'chat'"),
}


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)


class Pair(SQLModel, table=True):
    __tablename__ = "pairs"
    id: str = Field(primary_key=True, max_length=64)
    mentor_id: str = Field(foreign_key="users.id", max_length=64)
    mentee_id: str = Field(foreign_key="users.id", max_length=64)
    created_at: float


class Session(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (
        # At most one live session per room, enforced by the database for every node.
        Index(
            "one_live_session_per_pair",
            "pair_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index("sessions_by_pair", "pair_id", "started_at"),
    )
    id: str = Field(primary_key=True, max_length=64)
    pair_id: str = Field(foreign_key="pairs.id", max_length=64)
    started_at: float
    ended_at: float | None = None
    notes_text: str | None = None


class Event(SQLModel, table=True):
    """One durable event; ``body`` is the event frame exactly as sent (msgpack)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("session_id", "user_id", "client_id"),
        # one session's events of one kind: the last goal or record event, presence, marks;
        # never chats, the kind nearly every write is (a query names ``NOT_CHAT`` to use it)
        Index("events_by_kind", "session_id", "kind", "seq", **NOT_CHAT),
    )
    session_id: str = Field(foreign_key="sessions.id", primary_key=True, max_length=64)
    seq: int = Field(primary_key=True)
    kind: str = Field(max_length=16)
    user_id: str = Field(max_length=64)
    client_id: str | None = Field(default=None, max_length=64)
    ts: float
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class NotesUpdate(SQLModel, table=True):
    """A Yjs update to a session's notes; compaction folds many rows into one."""

    __tablename__ = "notes_updates"
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", index=True, max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Item(SQLModel, table=True):
    """An action item of a pair: its ``item`` event's ITEM with every ``item_update`` applied."""

    __tablename__ = "items"
    # no foreign key to pairs (the session's is enough): a write then locks only its session's
    # row, never the pair's, so erasing a pair cannot deadlock with a room's writes
    pair_id: str = Field(primary_key=True, max_length=64)
    id: str = Field(primary_key=True, max_length=64)
    text: str
    owner: str = Field(max_length=64)
    due: str | None = Field(default=None, max_length=10)
    state: str = Field(max_length=16)
    by: str = Field(max_length=64)
    session_id: str = Field(foreign_key="sessions.id", max_length=64)
    created_at: float
    updated_at: float


class SearchEntry(SQLModel, table=True):
    """One searchable text of a pair: a chat, a session's goal or notes, an item, a key moment.

    The full-text index over ``text`` is dialect-specific DDL (below): an FTS5 table kept in
    step by triggers on SQLite, a generated ``tsvector`` column with a GIN index on PostgreSQL.
    """

    __tablename__ = "search_entries"
    __table_args__ = (
        Index("search_by_pair", "pair_id", "ts", "id"),
        Index("search_by_session", "session_id", "kind", **NOT_CHAT),  # goal, notes, items
    )
    id: int | None = Field(default=None, primary_key=True)
    pair_id: str = Field(max_length=64)  # no foreign key to pairs, as in ``Item``
    session_id: str = Field(foreign_key="sessions.id", max_length=64)
    kind: str = Field(max_length=8)
    seq: int | None = None
    ref: str | None = Field(default=None, max_length=64)  # the item id of an item's entry
    ts: float
    text: str


# FTS5 over search_entries (external content). Entries up to ``search_indexed.upto`` are in the
# index; later ones are added in bulk by the store (``Store._index``). The triggers keep indexed
# rows in step, leave the others to that bulk step, and lower the mark to the table's highest id
# on a delete, so that an id SQLite gives again (the highest was deleted) is never taken for
# indexed. The same statements as migrations 0002 and 0004, so that ``create_all`` makes the
# migrated schema.
SQLITE_INDEXED = "(SELECT upto FROM search_indexed)"
SQLITE_SEARCH_TRIGGERS = (
    "CREATE TRIGGER search_entries_ad AFTER DELETE ON search_entries BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, pair_id, text) "
    f"SELECT 'delete', old.id, old.pair_id, old.text WHERE old.id <= {SQLITE_INDEXED}; "
    "UPDATE search_indexed "
    "SET upto = min(upto, coalesce((SELECT max(id) FROM search_entries), 0)); END",
    "CREATE TRIGGER search_entries_au AFTER UPDATE ON search_entries BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, pair_id, text) "
    f"SELECT 'delete', old.id, old.pair_id, old.text WHERE old.id <= {SQLITE_INDEXED}; "
    "INSERT INTO search_fts(rowid, pair_id, text) "
    f"SELECT new.id, new.pair_id, new.text WHERE new.id <= {SQLITE_INDEXED}; END",
)
SQLITE_SEARCH_DDL = (
    "CREATE VIRTUAL TABLE search_fts USING fts5(pair_id, text, content='search_entries', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TABLE search_indexed (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL)",
    "INSERT INTO search_indexed (id, upto) VALUES (1, 0)",
    *SQLITE_SEARCH_TRIGGERS,
)
POSTGRESQL_SEARCH_DDL = (
    "ALTER TABLE search_entries ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED",
    "CREATE INDEX search_text ON search_entries USING gin (tsv)",
)


def _create_search_index(target: Any, connection: Connection, **kw: Any) -> None:
    by_dialect = {"sqlite": SQLITE_SEARCH_DDL, "postgresql": POSTGRESQL_SEARCH_DDL}
    for statement in by_dialect.get(connection.dialect.name, ()):
        connection.exec_driver_sql(statement)


def _drop_search_index(target: Any, connection: Connection, **kw: Any) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("DROP TABLE IF EXISTS search_fts")
        connection.exec_driver_sql("DROP TABLE IF EXISTS search_indexed")


event.listen(SearchEntry.__table__, "after_create", _create_search_index)  # type: ignore[attr-defined]
event.listen(SearchEntry.__table__, "before_drop", _drop_search_index)  # type: ignore[attr-defined]
