"""The initial schema: users, pairs, sessions (one live per pair), events, notes updates.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "pairs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("mentor_id", sa.String(64), nullable=False),
        sa.Column("mentee_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["mentor_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["mentee_id"], ["users.id"]),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("pair_id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("notes_text", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["pair_id"], ["pairs.id"]),
    )
    # At most one live session per room, enforced by the database for every node.
    op.create_index(
        "one_live_session_per_pair",
        "sessions",
        ["pair_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index("sessions_by_pair", "sessions", ["pair_id", "started_at"])
    op.create_table(
        "events",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "seq"),
        sa.UniqueConstraint("session_id", "user_id", "client_id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_table(
        "notes_updates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_index("ix_notes_updates_session_id", "notes_updates", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_notes_updates_session_id", table_name="notes_updates")
    op.drop_table("notes_updates")
    op.drop_table("events")
    op.drop_index("sessions_by_pair", table_name="sessions")
    op.drop_index("one_live_session_per_pair", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("pairs")
    op.drop_table("users")
