"""Chats leave the by-kind indexes: ``events_by_kind`` and ``search_by_session`` hold every
kind but ``chat``.

Their readers ask for goals, records, presence, marks and the goal, notes and item entries,
never for chats by kind; a chat touched both b-trees, each at a place of its own session's,
so a batch spread over many rooms wrote a page of each per room (S2: about a fifth of the
writer's CPU a batch).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NOT_CHAT = sa.text("kind != 'chat'")


def upgrade() -> None:
    op.drop_index("events_by_kind", table_name="events")
    op.create_index(
        "events_by_kind",
        "events",
        ["session_id", "kind", "seq"],
        sqlite_where=NOT_CHAT,
        postgresql_where=NOT_CHAT,
    )
    op.drop_index("search_by_session", table_name="search_entries")
    op.create_index(
        "search_by_session",
        "search_entries",
        ["session_id", "kind"],
        sqlite_where=NOT_CHAT,
        postgresql_where=NOT_CHAT,
    )


def downgrade() -> None:
    op.drop_index("search_by_session", table_name="search_entries")
    op.create_index("search_by_session", "search_entries", ["session_id", "kind"])
    op.drop_index("events_by_kind", table_name="events")
    op.create_index("events_by_kind", "events", ["session_id", "kind", "seq"])
