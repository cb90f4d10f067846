"""SQL tables: users, pairs, sessions, transcript events and shared-notes updates."""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint, text
from sqlmodel import Field, SQLModel


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
    __table_args__ = (UniqueConstraint("session_id", "user_id", "client_id"),)
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
