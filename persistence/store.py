"""The transcript store: one SQL implementation for SQLite and PostgreSQL, chosen by URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgpack
import pycrdt
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from persistence import migrate
from persistence.models import Event, NotesUpdate, Pair, Session, User

log = logging.getLogger(__name__)

EVENTS = Event.__table__  # type: ignore[attr-defined]
NOTES = NotesUpdate.__table__  # type: ignore[attr-defined]
SESSIONS = Session.__table__  # type: ignore[attr-defined]
PAIRS = Pair.__table__  # type: ignore[attr-defined]
USERS = User.__table__  # type: ignore[attr-defined]


def async_url(url: str) -> str:
    """Map a user-facing database URL to one with an async driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported database URL scheme {scheme!r} (use sqlite or postgresql)")


# Query parameters that asyncpg (or SQLAlchemy's asyncpg dialect) takes as connect arguments.
_ASYNCPG_ARGS = frozenset(
    {
        "host", "port", "user", "password", "passfile", "database", "timeout", "ssl",
        "direct_tls", "statement_cache_size", "max_cached_statement_lifetime",
        "max_cacheable_statement_size", "command_timeout", "target_session_attrs",
        "krbsrvname", "gsslib", "prepared_statement_cache_size",
    }
)  # fmt: skip


def pg_connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """Split a PostgreSQL URL's query like asyncpg does for a DSN: ``sslmode`` is ``ssl`` and
    any other unknown parameter is a server setting (``?search_path=tenant1``, ...)."""
    parsed = make_url(url)
    kept: dict[str, str | tuple[str, ...]] = {}
    settings: dict[str, str] = {}
    for key, value in parsed.query.items():
        if key == "sslmode":
            kept["ssl"] = value
        elif key in _ASYNCPG_ARGS:
            kept[key] = value
        else:
            settings[key] = value if isinstance(value, str) else value[-1]
    stripped = parsed.set(query=kept).render_as_string(hide_password=False)
    return stripped, ({"server_settings": settings} if settings else {})


@dataclass(frozen=True)
class PairRecord:
    id: str
    mentor_id: str
    mentor_name: str
    mentee_id: str
    mentee_name: str


@dataclass(frozen=True)
class SessionRecord:
    id: str
    pair_id: str
    started_at: float
    ended_at: float | None
    notes_text: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    session_id: str
    seq: int
    kind: str
    user_id: str
    client_id: str | None
    ts: float
    body: bytes
    # this event ends its session; the store computes the final notes text from stored rows
    ends_session: bool = False


@dataclass(frozen=True)
class StoredNotes:
    session_id: str
    data: bytes


@dataclass(frozen=True)
class EndSession:
    """End a session that has no ending event; the store computes its final notes text."""

    session_id: str
    ended_at: float


WriteOp = StoredEvent | StoredNotes | EndSession

VOID = "void"


def void_event(session_id: str, seq: int, ts: float) -> StoredEvent:
    """The event that fills a seq that was allocated but could not be stored."""
    body: bytes = msgpack.packb({"t": VOID, "seq": seq, "ts": ts}, use_bin_type=True)
    return StoredEvent(session_id, seq, VOID, "", None, ts, body)


def notes_text(updates: Sequence[bytes]) -> str:
    """The plain text of the ``notes`` Y.Text after applying ``updates`` in order."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    for u in updates:
        doc.apply_update(u)
    return str(text)


class Store:
    """Durable state. Every method is one short transaction; ``write`` takes a whole batch."""

    def __init__(self, url: str, *, prepare: bool = True) -> None:
        """``prepare``: on start, create an empty schema (or stamp one made before migrations)
        and refuse one that is behind; ``menteo-rooms migrate`` opens it with ``False``."""
        self.url = async_url(url)
        self.dialect = self.url.split("+", 1)[0]
        self.prepare = prepare
        self._engine: AsyncEngine | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        assert self._engine is not None, "store not started"
        return self._engine

    async def __aenter__(self) -> Store:
        kwargs: dict[str, Any] = {}
        url = self.url
        if self.dialect == "postgresql":
            url, connect_args = pg_connect_args(url)
            kwargs.update(
                pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args=connect_args
            )
        engine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                # no checkpoint inside a commit: _checkpoints() runs them beside the writer
                cur.execute("PRAGMA wal_autocheckpoint=0")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

        self._engine = engine
        if self.dialect == "sqlite":
            self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoints())
        if self.prepare:
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(migrate.prepare)
            except BaseException:
                await engine.dispose()
                self._engine = None
                raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
            with contextlib.suppress(Exception):
                await self._checkpoint("TRUNCATE")
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _checkpoints(self, every: float = 0.5) -> None:
        """Copy the WAL into the database beside the writer (PASSIVE never blocks it), so no
        commit ever pays for a checkpoint: an auto-checkpoint stalls every ack behind it."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._checkpoint("PASSIVE")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("WAL checkpoint failed: %r", exc)

    async def _checkpoint(self, mode: str) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")

    async def migrate(self) -> str:
        """Apply the schema migrations up to the head; return what was done."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(migrate.upgrade)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    # pairs -----------------------------------------------------------------------------------
    async def create_pair(self, mentor_name: str, mentee_name: str, now: float) -> PairRecord:
        rec = PairRecord(
            id=uuid.uuid4().hex,
            mentor_id=uuid.uuid4().hex,
            mentor_name=mentor_name,
            mentee_id=uuid.uuid4().hex,
            mentee_name=mentee_name,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(USERS),
                [
                    {"id": rec.mentor_id, "name": mentor_name},
                    {"id": rec.mentee_id, "name": mentee_name},
                ],
            )
            await conn.execute(
                insert(PAIRS).values(
                    id=rec.id, mentor_id=rec.mentor_id, mentee_id=rec.mentee_id, created_at=now
                )
            )
        return rec

    async def get_pair(self, pair_id: str) -> PairRecord | None:
        mentor, mentee = USERS.alias("mentor"), USERS.alias("mentee")
        q = (
            select(PAIRS.c.id, mentor.c.id, mentor.c.name, mentee.c.id, mentee.c.name)
            .join(mentor, mentor.c.id == PAIRS.c.mentor_id)
            .join(mentee, mentee.c.id == PAIRS.c.mentee_id)
            .where(PAIRS.c.id == pair_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return PairRecord(*row) if row else None

    # sessions --------------------------------------------------------------------------------
    async def live_session(self, pair_id: str) -> SessionRecord | None:
        async with self.engine.connect() as conn:
            return await self._live(conn, pair_id)

    async def _live(self, conn: AsyncConnection, pair_id: str) -> SessionRecord | None:
        q = select(SESSIONS).where(SESSIONS.c.pair_id == pair_id, SESSIONS.c.ended_at.is_(None))
        row = (await conn.execute(q)).first()
        return SessionRecord(*row) if row else None

    async def start_session(self, pair_id: str, now: float) -> SessionRecord:
        """Return the room's live session, creating it if there is none (safe across nodes)."""
        for _ in range(3):
            try:
                async with self.engine.begin() as conn:
                    live = await self._live(conn, pair_id)
                    if live:
                        return live
                    sid = uuid.uuid4().hex
                    await conn.execute(
                        insert(SESSIONS).values(id=sid, pair_id=pair_id, started_at=now)
                    )
                    return SessionRecord(sid, pair_id, now, None)
            except IntegrityError:
                continue  # another node created it first
        raise RuntimeError("could not start a session")

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id))).first()
        return SessionRecord(*row) if row else None

    async def list_sessions(self, pair_id: str) -> list[tuple[SessionRecord, int]]:
        counts = (
            select(EVENTS.c.session_id, func.count().label("n"))
            .where(EVENTS.c.kind == "chat")
            .group_by(EVENTS.c.session_id)
            .subquery()
        )
        q = (
            select(SESSIONS, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.session_id == SESSIONS.c.id)
            .where(SESSIONS.c.pair_id == pair_id)
            .order_by(SESSIONS.c.started_at.desc())
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [(SessionRecord(*row[:5]), int(row[5])) for row in rows]

    async def last_activity(self, session_id: str) -> float | None:
        q = select(func.max(EVENTS.c.ts)).where(EVENTS.c.session_id == session_id)
        async with self.engine.connect() as conn:
            value = (await conn.execute(q)).scalar()
        return float(value) if value is not None else None

    # events ----------------------------------------------------------------------------------
    async def head(self, session_id: str) -> int:
        q = select(func.max(EVENTS.c.seq)).where(EVENTS.c.session_id == session_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar() or 0)

    async def missing_seqs(self, session_id: str, head: int) -> list[int]:
        """Seqs from 1 to ``head`` that hold no event (allocated, never stored)."""
        where = EVENTS.c.session_id == session_id
        async with self.engine.connect() as conn:
            count = int((await conn.execute(select(func.count()).where(where))).scalar() or 0)
            if count >= head:
                return []
            stored = set((await conn.execute(select(EVENTS.c.seq).where(where))).scalars())
        return [seq for seq in range(1, head + 1) if seq not in stored]

    async def events(
        self, session_id: str, after: int = 0, upto: int | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        q = select(EVENTS).where(EVENTS.c.session_id == session_id, EVENTS.c.seq > after)
        if upto is not None:
            q = q.where(EVENTS.c.seq <= upto)
        q = q.order_by(EVENTS.c.seq).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [StoredEvent(*row) for row in rows]

    async def chat_seq(self, session_id: str, user_id: str, client_id: str) -> int | None:
        """The seq of the stored event with this sender and client id, or None."""
        # (session_id, user_id, client_id) is unique across kinds, so at most one row matches
        q = select(EVENTS.c.seq).where(
            EVENTS.c.session_id == session_id,
            EVENTS.c.user_id == user_id,
            EVENTS.c.client_id == client_id,
        )
        async with self.engine.connect() as conn:
            seq = (await conn.execute(q)).scalar()
        return int(seq) if seq is not None else None

    async def presence_seqs(self, session_id: str) -> dict[str, tuple[str, int]]:
        """Each member's last presence state and the seq of that event."""
        q = (
            select(EVENTS.c.user_id, EVENTS.c.body, EVENTS.c.seq)
            .where(EVENTS.c.session_id == session_id, EVENTS.c.kind == "presence")
            .order_by(EVENTS.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return {u: (msgpack.unpackb(b)["state"], int(seq)) for u, b, seq in rows}

    # notes -----------------------------------------------------------------------------------
    async def notes_updates(self, session_id: str) -> list[bytes]:
        """A session's stored notes updates in the order stored: what a node rebuilds from."""
        async with self.engine.connect() as conn:
            return await self._notes_updates(conn, session_id)

    async def _notes_updates(self, conn: AsyncConnection, session_id: str) -> list[bytes]:
        q = select(NOTES.c.data).where(NOTES.c.session_id == session_id).order_by(NOTES.c.id)
        return [bytes(r[0]) for r in (await conn.execute(q)).all()]

    async def compact_notes(self, session_id: str) -> int:
        """Fold a session's stored updates into one snapshot row; return rows removed."""
        async with self.engine.begin() as conn:
            q = select(NOTES.c.id, NOTES.c.data).where(NOTES.c.session_id == session_id)
            rows = (await conn.execute(q.order_by(NOTES.c.id))).all()
            if len(rows) < 2:
                return 0
            doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
            for _, data in rows:
                doc.apply_update(bytes(data))
            ids = [r[0] for r in rows]
            await conn.execute(delete(NOTES).where(NOTES.c.id.in_(ids)))
            await conn.execute(insert(NOTES).values(session_id=session_id, data=doc.get_update()))
            return len(rows) - 1

    # the batch writer ------------------------------------------------------------------------
    async def write(self, ops: Sequence[WriteOp]) -> list[StoredEvent]:
        """Store a batch of operations in one transaction.

        Returns the events that were *not* stored because their seq, or their sender and
        client id, already were: the caller must not acknowledge those. A rejected ``void``
        only means its seq is already filled. A session ends (once: a later end changes
        nothing) on an ``EndSession`` or on a *stored* event with ``ends_session``; its final
        notes text is computed here from the session's stored notes rows, this batch's
        included, so it never depends on a node's possibly stale copy.
        """
        events = [o for o in ops if isinstance(o, StoredEvent)]
        notes = [
            {"session_id": o.session_id, "data": o.data} for o in ops if isinstance(o, StoredNotes)
        ]
        rejected: list[StoredEvent] = []
        async with self.engine.begin() as conn:
            if events:
                ins = pg_insert(EVENTS) if self.dialect == "postgresql" else sqlite_insert(EVENTS)
                stmt = ins.on_conflict_do_nothing().returning(
                    EVENTS.c.session_id,
                    EVENTS.c.seq,
                    EVENTS.c.kind,
                    EVENTS.c.user_id,
                    EVENTS.c.client_id,
                )
                rows = [
                    {
                        "session_id": o.session_id,
                        "seq": o.seq,
                        "kind": o.kind,
                        "user_id": o.user_id,
                        "client_id": o.client_id,
                        "ts": o.ts,
                        "body": o.body,
                    }
                    for o in events
                ]
                result = await conn.execute(stmt, rows)
                # more than the seq tells apart two events for one seq in this batch (a void
                # and a late original): each returned row accounts for one event only
                stored = Counter(tuple(r) for r in result.all())
                for o in events:
                    key = (o.session_id, o.seq, o.kind, o.user_id, o.client_id)
                    if stored[key] > 0:
                        stored[key] -= 1
                    else:
                        rejected.append(o)
            if notes:
                await conn.execute(insert(NOTES), notes)
            refused = {id(o) for o in rejected}
            ends: dict[str, float] = {}
            for op in ops:
                if isinstance(op, EndSession):
                    ends.setdefault(op.session_id, op.ended_at)
                elif isinstance(op, StoredEvent) and op.ends_session and id(op) not in refused:
                    ends.setdefault(op.session_id, op.ts)
            for session_id, ended_at in ends.items():
                await self._end(conn, session_id, ended_at)
        return rejected

    async def _end(self, conn: AsyncConnection, session_id: str, ended_at: float) -> None:
        ended = await conn.execute(
            update(SESSIONS)
            .where(SESSIONS.c.id == session_id, SESSIONS.c.ended_at.is_(None))
            .values(ended_at=ended_at)
        )
        if ended.rowcount:  # the row is now locked: no other node can end it meanwhile
            text = notes_text(await self._notes_updates(conn, session_id))
            await conn.execute(
                update(SESSIONS).where(SESSIONS.c.id == session_id).values(notes_text=text)
            )
