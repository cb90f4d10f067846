"""SQLite: search entries reach the FTS5 index in bulk, not one commit at a time.

A ``search_indexed`` row holds the highest entry id in the index; the insert trigger goes, and
the store adds the entries past the mark in one statement once a few hundred wait (and before
every search). The update and delete triggers touch the index only for rows it holds.
PostgreSQL is unchanged (its GIN index has a pending list of its own).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# as migration 0002 made them
OLD_TRIGGERS = (
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
# as persistence.models.SQLITE_SEARCH_TRIGGERS holds them now (copied: a migration must not
# change when the models do)
NEW_TRIGGERS = (
    "CREATE TRIGGER search_entries_ad AFTER DELETE ON search_entries BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, pair_id, text) "
    "SELECT 'delete', old.id, old.pair_id, old.text "
    "WHERE old.id <= (SELECT upto FROM search_indexed); "
    "UPDATE search_indexed "
    "SET upto = min(upto, coalesce((SELECT max(id) FROM search_entries), 0)); END",
    "CREATE TRIGGER search_entries_au AFTER UPDATE ON search_entries BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, pair_id, text) "
    "SELECT 'delete', old.id, old.pair_id, old.text "
    "WHERE old.id <= (SELECT upto FROM search_indexed); "
    "INSERT INTO search_fts(rowid, pair_id, text) "
    "SELECT new.id, new.pair_id, new.text WHERE new.id <= (SELECT upto FROM search_indexed); END",
)
TRIGGERS = ("search_entries_ai", "search_entries_ad", "search_entries_au")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(
        "CREATE TABLE search_indexed (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL)"
    )
    # every entry so far was indexed by the insert trigger
    op.execute(
        "INSERT INTO search_indexed (id, upto) SELECT 1, coalesce(max(id), 0) FROM search_entries"
    )
    for statement in NEW_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO search_fts(rowid, pair_id, text) SELECT id, pair_id, text "
        "FROM search_entries WHERE id > (SELECT upto FROM search_indexed) ORDER BY id"
    )
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE search_indexed")
    for statement in OLD_TRIGGERS:
        op.execute(statement)
