"""The transcript store: one SQL implementation for SQLite and PostgreSQL, chosen by URL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import msgpack
import pycrdt
from sqlalchemy import and_, create_engine, delete, event, func, insert, or_, select, true, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from persistence import migrate
from persistence.cancel import reraise_cancel
from persistence.models import Event, Item, NotesUpdate, Pair, SearchEntry, Session, User

log = logging.getLogger(__name__)

EVENTS = Event.__table__  # type: ignore[attr-defined]
NOTES = NotesUpdate.__table__  # type: ignore[attr-defined]
SESSIONS = Session.__table__  # type: ignore[attr-defined]
PAIRS = Pair.__table__  # type: ignore[attr-defined]
USERS = User.__table__  # type: ignore[attr-defined]
ITEMS = Item.__table__  # type: ignore[attr-defined]
SEARCH = SearchEntry.__table__  # type: ignore[attr-defined]

BUSY_TIMEOUT_MS = 10000
WAL_KEPT = 64 * 1024 * 1024  # bytes of WAL file kept after a checkpoint starts it over
ITEM_FIELDS = ("id", "text", "owner", "due", "state", "by", "session_id", "created_at")
ITEM_CHANGES = ("state", "text", "owner", "due")
# the kinds of stored event that change the items or the search index
JOURNEY_KINDS = frozenset({"chat", "goal", "item", "item_update", "mark"})
NOTES_INDEXED = 100_000  # characters of a session's notes that are searchable
EXCERPT = 300  # characters of a search result's text, at most
SEARCH_WORDS = 16  # words of a query that count
SESSION_CACHE = 4096  # session -> pair ids remembered by the writer's path
ENTRY_COLUMNS = ("pair_id", "session_id", "kind", "seq", "ref", "ts", "text")
SQLITE_ROWS = 500  # events in one INSERT (7 parameters each, below SQLite's 32,766)
READERS = 2  # SQLite: threads (each with its own connection) for the room build's reads
# SQLite: search entries that wait for the FTS index before a batch adds them all (see _index)
INDEX_AFTER = 256

T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    # no checkpoint inside a commit: _checkpoints() runs them beside the writer
    cur.execute("PRAGMA wal_autocheckpoint=0")
    # a WAL started over keeps its file (commits overwrite blocks instead of growing a file),
    # cut back to this size
    cur.execute(f"PRAGMA journal_size_limit={WAL_KEPT}")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


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


class SessionSummary(NamedTuple):
    """A session in the pair's list: its chat count and its current goal (None when unset)."""

    session: SessionRecord
    message_count: int
    goal: str | None


@dataclass(frozen=True)
class RoomState:
    """A live session's state as stored (see :meth:`Store.room_state`)."""

    head: int
    missing: list[int]  # seqs below head that hold no event
    last_activity: float | None
    presence: dict[str, tuple[str, int]]  # user -> (last state, its seq)
    items: list[dict[str, Any]]  # the pair's items, any state, oldest first
    notes: list[bytes]
    goal: str | None
    record: str
    record_by: str | None
    record_seq: int | None


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


@dataclass(frozen=True)
class CompactNotes:
    """Fold a session's stored notes updates into one row and refresh its notes in the search
    index (inside the writer's batch: no transaction of its own contends with the writer)."""

    session_id: str


WriteOp = StoredEvent | StoredNotes | EndSession | CompactNotes

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
        self.checkpoint_every = 0.5  # seconds
        self.wal_reset_frames = 4096  # 16 MiB of 4 KiB pages
        self.reset_wait = 200  # ms
        # RESTART, not TRUNCATE: the WAL keeps its file (up to WAL_KEPT), so the commits after
        # a reset overwrite blocks instead of growing a file again; in a loop of batches of 5,
        # the slowest 0.1 % of writes took 7-10 ms against 21 ms with TRUNCATE
        self.reset_mode = "RESTART"
        self.wal_resets = self.wal_resets_missed = 0
        self._reset_wanted = False
        self._sync: Engine | None = None  # SQLite: the batch writer's engine, on ``_thread``
        self._wconn: Connection | None = None  # its one connection, kept (see ``_writing``)
        self._thread: ThreadPoolExecutor | None = None
        self._reader: Engine | None = None  # SQLite: the room build's engine, on ``_readers``
        self._readers: ThreadPoolExecutor | None = None
        self._pair_of: dict[str, str] = {}  # session id -> pair id (never changes)
        # SQLite: entries perhaps not in the FTS index yet; at start unknown, so the first batch
        # indexes whatever an earlier run left waiting
        self._unindexed = INDEX_AFTER

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
        # parameters (chat text, notes) never appear in SQLAlchemy's exception messages or logs
        engine = create_async_engine(url, hide_parameters=True, **kwargs)
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            database = make_url(url).database
            if database and database != ":memory:":  # a file: the batch writer's own thread
                self._sync = create_engine(
                    make_url(url).set(drivername="sqlite"),
                    hide_parameters=True,
                    pool_size=1,
                    max_overflow=0,
                    connect_args={"check_same_thread": False},  # disposed from the loop
                )
                event.listen(self._sync, "connect", _sqlite_pragmas)
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
                self._reader = create_engine(
                    make_url(url).set(drivername="sqlite"),
                    hide_parameters=True,
                    pool_size=READERS,
                    max_overflow=0,
                    connect_args={"check_same_thread": False},
                )
                event.listen(self._reader, "connect", _sqlite_pragmas)
                self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="sqlite-reader")
        self._engine = engine
        if self.dialect == "sqlite":
            self._checkpointer = asyncio.get_running_loop().create_task(
                self._checkpoints(self.checkpoint_every)
            )
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
        if self._wconn is not None and self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_writing)
        if self._sync is not None:
            self._sync.dispose()
            self._sync = None
        if self._thread is not None:
            await asyncio.to_thread(self._thread.shutdown)
            self._thread = None
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown)
            self._readers = None
        if self._reader is not None:
            self._reader.dispose()
            self._reader = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _checkpoints(self, every: float = 0.5) -> None:
        """Copy the WAL into the database beside the writer (PASSIVE never blocks it), so no
        commit ever pays for a checkpoint: an auto-checkpoint stalls every ack behind it.

        Under steady writes a passive checkpoint never finds the WAL idle, so SQLite never
        starts it over and it grows without end (1.2 GB in 70 s of S2 at 250 rooms, its index
        mapped into memory). Once it holds ``wal_reset_frames``, the next ``write`` runs a
        RESTART checkpoint right after its commit, when no write is under way: it copies the
        little the passive ones left and starts the WAL over, waiting for readers at most
        ``reset_wait`` ms.
        """
        while True:
            await asyncio.sleep(every)
            try:
                _, frames, _ = await self._checkpoint("PASSIVE")
                if frames >= self.wal_reset_frames:
                    # catch up first: each pass copies what came in during the last one, so
                    # the writer's RESTART finds almost nothing left to copy and stalls least
                    for _ in range(8):
                        started = time.monotonic()
                        await self._checkpoint("PASSIVE")
                        if time.monotonic() - started < 0.005:
                            break
                    self._reset_wanted = True
            except Exception as exc:
                reraise_cancel(exc)
                log.warning("WAL checkpoint failed: %r", exc)

    async def _checkpoint(self, mode: str) -> tuple[int, int, int]:
        """(busy, frames in the WAL, frames copied back), as ``PRAGMA wal_checkpoint`` says."""
        async with self.engine.connect() as conn:
            row: Any = (await conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")).one()
            return int(row[0]), int(row[1]), int(row[2])

    async def migrate(self) -> str:
        """Apply the schema migrations up to the head; return what was done."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(migrate.upgrade)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    async def _run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Run ``fn(conn, *args)``, synchronous, on one connection (in a transaction when it
        ``write``s). On a SQLite file that is one hop to a thread with a plain connection
        instead of one hop per statement through aiosqlite (about 1 ms each here); a write
        goes to the batch writer's thread, so it never waits on SQLite's lock behind a batch
        (the busy handler sleeps in steps of milliseconds)."""
        if self._readers is None:
            async with self.engine.begin() if write else self.engine.connect() as conn:
                return await conn.run_sync(fn, *args)
        loop = asyncio.get_running_loop()
        if write:
            return await loop.run_in_executor(self._thread, self._write_fn, fn, args)
        return await loop.run_in_executor(self._readers, self._read_fn, fn, args)

    def _read_fn(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._reader is not None
        with self._reader.connect() as conn:
            return fn(conn, *args)

    def _write_fn(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._writing()
        with conn.begin():
            return fn(conn, *args)

    def _writing(self) -> Connection:
        """The writer thread's connection, kept from one transaction to the next: checking it
        out of the pool and in again (with the rollback that resets it) for every batch was
        about a fifth of a small batch's time."""
        conn = self._wconn
        if conn is None or conn.invalidated or conn.closed:
            self._close_writing()
            assert self._sync is not None
            conn = self._wconn = self._sync.connect()
        return conn

    def _close_writing(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

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
        return await self._run(self._get_pair, pair_id)

    def _get_pair(self, conn: Connection, pair_id: str) -> PairRecord | None:
        mentor, mentee = USERS.alias("mentor"), USERS.alias("mentee")
        q = (
            select(PAIRS.c.id, mentor.c.id, mentor.c.name, mentee.c.id, mentee.c.name)
            .join(mentor, mentor.c.id == PAIRS.c.mentor_id)
            .join(mentee, mentee.c.id == PAIRS.c.mentee_id)
            .where(PAIRS.c.id == pair_id)
        )
        row = conn.execute(q).first()
        return PairRecord(*row) if row else None

    # sessions --------------------------------------------------------------------------------
    async def live_session(self, pair_id: str) -> SessionRecord | None:
        return await self._run(self._live, pair_id)

    def _live(self, conn: Connection, pair_id: str) -> SessionRecord | None:
        q = select(SESSIONS).where(SESSIONS.c.pair_id == pair_id, SESSIONS.c.ended_at.is_(None))
        row = conn.execute(q).first()
        return SessionRecord(*row) if row else None

    async def start_session(self, pair_id: str, now: float) -> SessionRecord:
        """Return the room's live session, creating it if there is none (safe across nodes)."""
        return await self._starting(self._start, pair_id, now)

    async def enter(
        self, pair_id: str, user_id: str, now: float
    ) -> tuple[PairRecord, SessionRecord] | None:
        """The pair and its live session, started if there is none (as
        :meth:`start_session`); None when there is no such pair or the user is not one of its
        members (nothing started then)."""
        return await self._starting(self._enter, pair_id, user_id, now)

    async def _starting(self, fn: Callable[..., T], *args: Any) -> T:
        for _ in range(3):
            try:
                return await self._run(fn, *args, write=True)
            except IntegrityError:
                continue  # another node started it first: the next try finds it
        raise RuntimeError("could not start a session")

    def _enter(
        self, conn: Connection, pair_id: str, user_id: str, now: float
    ) -> tuple[PairRecord, SessionRecord] | None:
        pair = self._get_pair(conn, pair_id)
        if pair is None or user_id not in (pair.mentor_id, pair.mentee_id):
            return None
        return pair, self._start(conn, pair_id, now)

    def _start(self, conn: Connection, pair_id: str, now: float) -> SessionRecord:
        live = self._live(conn, pair_id)
        if live:
            return live
        sid = uuid.uuid4().hex
        conn.execute(insert(SESSIONS).values(id=sid, pair_id=pair_id, started_at=now))
        return SessionRecord(sid, pair_id, now, None)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id))).first()
        return SessionRecord(*row) if row else None

    async def list_sessions(self, pair_id: str) -> list[SessionSummary]:
        """The pair's sessions, newest first, each with its chat count and current goal."""
        ev = EVENTS.alias("ev")
        chats = (
            select(func.count())
            .where(ev.c.session_id == SESSIONS.c.id, ev.c.kind == "chat")
            .scalar_subquery()
        )
        goal = (
            select(ev.c.body)
            .where(ev.c.session_id == SESSIONS.c.id, _of_kind(ev, "goal"))
            .order_by(ev.c.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        q = (
            select(SESSIONS, chats, goal)
            .where(SESSIONS.c.pair_id == pair_id)
            .order_by(SESSIONS.c.started_at.desc(), SESSIONS.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [
            SessionSummary(SessionRecord(*row[:5]), int(row[5] or 0), _goal_text(row[6]))
            for row in rows
        ]

    async def session_state(self, session_id: str) -> dict[str, Any]:
        """The session's goal (None when unset or cleared) and record state, from its events."""
        return await self._run(self._session_state, session_id)

    def _session_state(self, conn: Connection, session_id: str) -> dict[str, Any]:
        goal = self._last_body(conn, session_id, "goal")
        record = self._last_body(conn, session_id, "record")
        return {
            "goal": (goal or {}).get("text") or None,
            "record": record["state"] if record else "on",
            "record_by": record["by"] if record else None,
            "record_seq": int(record["seq"]) if record else None,
        }

    def _last_body(self, conn: Connection, session_id: str, kind: str) -> dict[str, Any] | None:
        q = (
            select(EVENTS.c.body)
            .where(EVENTS.c.session_id == session_id, _of_kind(EVENTS, kind))
            .order_by(EVENTS.c.seq.desc())
            .limit(1)
        )
        body = conn.execute(q).scalar()
        return _unpack(body) if body is not None else None

    async def room_state(self, pair_id: str, session_id: str) -> RoomState:
        """Everything a node needs to build a live room, read on one connection."""
        return await self._run(self._room_state, pair_id, session_id)

    def _room_state(self, conn: Connection, pair_id: str, session_id: str) -> RoomState:
        where = EVENTS.c.session_id == session_id
        head_, count, last = conn.execute(
            select(func.max(EVENTS.c.seq), func.count(), func.max(EVENTS.c.ts)).where(where)
        ).one()
        head = int(head_ or 0)
        missing: list[int] = []
        if count < head:
            stored = set(conn.execute(select(EVENTS.c.seq).where(where)).scalars())
            missing = [seq for seq in range(1, head + 1) if seq not in stored]
        presence_q = (
            select(EVENTS.c.user_id, EVENTS.c.body, EVENTS.c.seq)
            .where(where, _of_kind(EVENTS, "presence"))
            .order_by(EVENTS.c.seq)
        )
        presence = {
            u: (msgpack.unpackb(b)["state"], int(seq))
            for u, b, seq in conn.execute(presence_q).all()
        }
        # sorted here: SQLite's sort of a pair's rows took most of the query (600 items)
        items_q = select(*(ITEMS.c[f] for f in ITEM_FIELDS)).where(ITEMS.c.pair_id == pair_id)
        rows = sorted(conn.execute(items_q).all(), key=lambda r: (r[7], r[0]))
        items = [dict(zip(ITEM_FIELDS, row, strict=True)) for row in rows]
        goal = self._last_body(conn, session_id, "goal")
        record = self._last_body(conn, session_id, "record")
        notes = self._notes_updates(conn, session_id)
        return RoomState(
            head=head,
            missing=missing,
            last_activity=float(last) if last is not None else None,
            presence=presence,
            items=items,
            notes=notes,
            goal=(goal or {}).get("text") or None,
            record=record["state"] if record else "on",
            record_by=record["by"] if record else None,
            record_seq=int(record["seq"]) if record else None,
        )

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
            .where(EVENTS.c.session_id == session_id, _of_kind(EVENTS, "presence"))
            .order_by(EVENTS.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return {u: (msgpack.unpackb(b)["state"], int(seq)) for u, b, seq in rows}

    async def pair_events(self, pair_id: str, kinds: Collection[str]) -> list[StoredEvent]:
        """The pair's stored events of these kinds, sessions oldest first, each in seq order."""
        q = (
            select(EVENTS)
            .join(SESSIONS, SESSIONS.c.id == EVENTS.c.session_id)
            .where(SESSIONS.c.pair_id == pair_id, EVENTS.c.kind.in_(sorted(kinds)))
            .where(EVENTS.c.kind != "chat" if "chat" not in kinds else true())
            .order_by(SESSIONS.c.started_at, SESSIONS.c.id, EVENTS.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [StoredEvent(*row) for row in rows]

    # items -----------------------------------------------------------------------------------
    async def items(self, pair_id: str) -> list[dict[str, Any]]:
        """Every item of the pair in any state, as ITEM objects with their current fields,
        oldest first (``created_at``, then id)."""
        q = (
            select(*(ITEMS.c[f] for f in ITEM_FIELDS))
            .where(ITEMS.c.pair_id == pair_id)
            .order_by(ITEMS.c.created_at, ITEMS.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [dict(zip(ITEM_FIELDS, row, strict=True)) for row in rows]

    # search ----------------------------------------------------------------------------------
    async def search(self, pair_id: str, q: str, limit: int = 20) -> list[dict[str, Any]]:
        """The pair's texts that hold every word of ``q`` (whole words, any case), newest first
        (by ``ts`` on PostgreSQL; in the order they were indexed, which is the order they were
        said, on SQLite): ``{"session_id", "kind", "seq", "text", "ts"}`` with ``text`` an
        excerpt around the first match. A query without words finds nothing."""
        words = search_words(q)
        if not words or limit < 1:
            return []
        if self.dialect == "sqlite" and await self._run(_index_behind):
            await self._run(self._index, write=True)  # all that was stored, found
        if self.dialect == "sqlite":
            # every term quoted: a phrase is all FTS5 reads in it, so no query syntax gets in
            match = " AND ".join(
                [f"pair_id : {_fts_quote(pair_id)}", *(f"text : {_fts_quote(w)}" for w in words)]
            )
            # FTS5 walks its rowids backwards and stops at the limit; joined the other way
            # round, SQLite would test every entry of the pair against the query
            stmt = sql_text(
                "SELECT e.session_id, e.kind, e.seq, e.text, e.ts FROM ("
                "SELECT rowid AS id FROM search_fts WHERE search_fts MATCH :match "
                "ORDER BY rowid DESC LIMIT :limit) AS hit "
                "JOIN search_entries e ON e.id = hit.id WHERE e.pair_id = :pair "
                "ORDER BY e.id DESC"
            ).bindparams(match=match, pair=pair_id, limit=limit)
        else:
            # plainto_tsquery takes plain text: no query syntax at all, words joined with AND.
            # Ordered by (ts, id), which search_by_pair holds: a common word walks the pair's
            # newest entries, a rare one comes from the GIN index (ordering by id alone lets
            # the planner walk the whole table backwards when a pair's rows are clustered)
            stmt = sql_text(
                "SELECT session_id, kind, seq, text, ts FROM search_entries "
                "WHERE pair_id = :pair AND tsv @@ plainto_tsquery('simple'::regconfig, :words) "
                "ORDER BY ts DESC, id DESC LIMIT :limit"
            ).bindparams(pair=pair_id, words=" ".join(words), limit=limit)
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # which plan is right depends on the words: a generic plan of the prepared
                # statement walks all of a pair's entries for a word it does not hold
                await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            rows = (await conn.execute(stmt)).all()
        return [
            {
                "session_id": sid,
                "kind": kind,
                "seq": int(seq) if seq is not None else None,
                "text": excerpt(body, words),
                "ts": float(ts),
            }
            for sid, kind, seq, body, ts in rows
        ]

    # erase -----------------------------------------------------------------------------------
    async def erase_pair(self, pair_id: str) -> bool:
        """Delete the pair and everything it stored (events, notes, sessions, items, search
        entries, its two users) in one transaction; False if there is no such pair. On a SQLite
        file it runs on the batch writer's thread, between two batches: from a connection of
        its own it waited for SQLite's lock, which a busy writer never let go long enough."""
        erased = await self._run(self._erase, pair_id, write=True)
        if erased:
            self._pair_of = {s: p for s, p in self._pair_of.items() if p != pair_id}
        return erased

    def _erase(self, conn: Connection, pair_id: str) -> bool:
        # a write first: SQLite takes its write lock now (a read first could not upgrade past
        # a commit made meanwhile)
        touched = conn.execute(
            update(PAIRS).where(PAIRS.c.id == pair_id).values(created_at=PAIRS.c.created_at)
        )
        if not touched.rowcount:
            return False
        # PostgreSQL: the pair's row first (a session starting meanwhile waits, then finds no
        # pair), then its sessions' rows: writes in flight hold them (foreign keys), so what
        # they commit is deleted below rather than left pointing at no session
        members = select(PAIRS.c.mentor_id, PAIRS.c.mentee_id).where(PAIRS.c.id == pair_id)
        pair = conn.execute(members.with_for_update()).one()
        sessions = select(SESSIONS.c.id).where(SESSIONS.c.pair_id == pair_id)
        conn.execute(sessions.with_for_update())
        conn.execute(delete(SEARCH).where(SEARCH.c.pair_id == pair_id))
        conn.execute(delete(ITEMS).where(ITEMS.c.pair_id == pair_id))
        conn.execute(delete(EVENTS).where(EVENTS.c.session_id.in_(sessions)))
        conn.execute(delete(NOTES).where(NOTES.c.session_id.in_(sessions)))
        conn.execute(delete(SESSIONS).where(SESSIONS.c.pair_id == pair_id))
        conn.execute(delete(PAIRS).where(PAIRS.c.id == pair_id))
        # a user belongs to one pair (create_pair makes both), but never break another's
        others = select(PAIRS.c.id).where(
            or_(PAIRS.c.mentor_id == USERS.c.id, PAIRS.c.mentee_id == USERS.c.id)
        )
        conn.execute(delete(USERS).where(USERS.c.id.in_(list(pair)), ~others.exists()))
        return True

    # notes -----------------------------------------------------------------------------------
    async def notes_updates(self, session_id: str) -> list[bytes]:
        """A session's stored notes updates in the order stored: what a node rebuilds from."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(self._notes_updates, session_id)

    def _notes_updates(self, conn: Connection, session_id: str) -> list[bytes]:
        q = select(NOTES.c.data).where(NOTES.c.session_id == session_id).order_by(NOTES.c.id)
        return [bytes(r[0]) for r in conn.execute(q).all()]

    async def compact_notes(self, session_id: str) -> int:
        """Fold a session's stored updates into one snapshot row and refresh the session's
        notes in the search index; return rows removed."""
        return await self._run(self._compact, session_id, write=True)

    def _compact(self, conn: Connection, session_id: str) -> int:
        q = select(NOTES.c.id, NOTES.c.data).where(NOTES.c.session_id == session_id)
        rows = conn.execute(q.order_by(NOTES.c.id)).all()
        if not rows:
            return 0
        doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        notes = doc.get("notes", type=pycrdt.Text)
        for _, data in rows:
            doc.apply_update(bytes(data))
        self._index_notes(conn, session_id, str(notes), None)
        if len(rows) < 2:
            return 0
        conn.execute(delete(NOTES).where(NOTES.c.id.in_([r[0] for r in rows])))
        conn.execute(insert(NOTES).values(session_id=session_id, data=doc.get_update()))
        return len(rows) - 1

    # the batch writer ------------------------------------------------------------------------
    async def write(self, ops: Sequence[WriteOp]) -> list[StoredEvent]:
        """Store a batch of operations in one transaction (see :meth:`_write`).

        On SQLite the whole batch runs on one thread of its own with a plain synchronous
        connection: one hop per batch instead of one per statement, which made the writer's
        Python overhead (about 1.4 ms of CPU a batch through aiosqlite) most of a chat's cost.
        """
        if self._sync is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(self._write, ops)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._write_here, ops)

    def _write_here(self, ops: Sequence[WriteOp]) -> list[StoredEvent]:
        """The SQLite writer thread: the batch, then (when due) the WAL started over."""
        conn = self._writing()
        with conn.begin():
            rejected = self._write(conn, ops)
        if self._reset_wanted:  # between two commits of the one writer: the WAL is idle
            self._reset_wanted = False
            try:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(self.reset_wait)}")
                try:
                    sql = f"PRAGMA wal_checkpoint({self.reset_mode})"
                    row: Any = conn.exec_driver_sql(sql).one()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            finally:
                conn.rollback()  # no transaction in SQLite; ends SQLAlchemy's
            if int(row[0]):
                self.wal_resets_missed += 1
            else:
                self.wal_resets += 1
        return rejected

    def _write(self, conn: Connection, ops: Sequence[WriteOp]) -> list[StoredEvent]:
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
        if events and self.dialect == "sqlite":
            returned = self._insert_events_sqlite(conn, events)
        elif events:
            stmt = (
                pg_insert(EVENTS)
                .on_conflict_do_nothing()
                .returning(
                    EVENTS.c.session_id,
                    EVENTS.c.seq,
                    EVENTS.c.kind,
                    EVENTS.c.user_id,
                    EVENTS.c.client_id,
                )
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
            returned = [tuple(r) for r in conn.execute(stmt, rows).all()]
        if events:
            # more than the seq tells apart two events for one seq in this batch (a void
            # and a late original): each returned row accounts for one event only
            stored = Counter(returned)
            for o in events:
                key = (o.session_id, o.seq, o.kind, o.user_id, o.client_id)
                if stored[key] > 0:
                    stored[key] -= 1
                else:
                    rejected.append(o)
        if notes and self.dialect == "sqlite":
            with _driver_cursor(conn) as cursor:
                cursor.executemany(
                    "INSERT INTO notes_updates (session_id, data) VALUES (?, ?)",
                    [(n["session_id"], n["data"]) for n in notes],
                )
        elif notes:
            conn.execute(insert(NOTES), notes)
        refused = {id(o) for o in rejected}
        followed = [o for o in events if o.kind in JOURNEY_KINDS and id(o) not in refused]
        if followed:
            self._follow(conn, followed)
        for session_id in dict.fromkeys(o.session_id for o in ops if isinstance(o, CompactNotes)):
            self._compact(conn, session_id)
        ends: dict[str, float] = {}
        for op in ops:
            if isinstance(op, EndSession):
                ends.setdefault(op.session_id, op.ended_at)
            elif isinstance(op, StoredEvent) and op.ends_session and id(op) not in refused:
                ends.setdefault(op.session_id, op.ts)
        for session_id, ended_at in ends.items():
            self._end(conn, session_id, ended_at)
        if self.dialect == "sqlite" and self._unindexed >= INDEX_AFTER:
            self._index(conn)
        return rejected

    def _insert_events_sqlite(
        self, conn: Connection, events: Sequence[StoredEvent]
    ) -> list[tuple[Any, ...]]:
        """The events straight through the driver: SQLAlchemy's work on each row of a compiled
        insert was about as much CPU as SQLite's own. Returns the stored rows' keys (a row
        that conflicts with a stored one is left out)."""
        returned: list[tuple[Any, ...]] = []
        with _driver_cursor(conn) as cursor:
            for start in range(0, len(events), SQLITE_ROWS):
                chunk = events[start : start + SQLITE_ROWS]
                params: list[Any] = []
                for o in chunk:
                    params += (o.session_id, o.seq, o.kind, o.user_id, o.client_id, o.ts, o.body)
                cursor.execute(_sqlite_insert_events(len(chunk)), params)
                returned += cursor.fetchall()
        return returned

    def _insert_entries(self, conn: Connection, entries: list[dict[str, Any]]) -> None:
        if self.dialect != "sqlite":
            conn.execute(insert(SEARCH), entries)
            return
        with _driver_cursor(conn) as cursor:
            cursor.executemany(
                "INSERT INTO search_entries (pair_id, session_id, kind, seq, ref, ts, text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [tuple(e[k] for k in ENTRY_COLUMNS) for e in entries],
            )
        self._unindexed += len(entries)

    def _index(self, conn: Connection) -> None:
        """SQLite: add the search entries past ``search_indexed.upto`` to the FTS index in one
        statement and move the mark, in the caller's transaction (so they commit together,
        and a crash leaves the rest for the next time).

        Indexed as each batch committed, every commit cost FTS5 a segment and a merge step of
        its own: about 100 us a chat at S2's batches of 7, a third of the batch. A batch calls
        this once ``INDEX_AFTER`` entries wait, and a search before it reads the index.
        """
        with _driver_cursor(conn) as cursor:
            upto, top = cursor.execute(
                "SELECT upto, (SELECT max(id) FROM search_entries) FROM search_indexed"
            ).fetchone()
            if top is not None and top > upto:
                cursor.execute(
                    "INSERT INTO search_fts(rowid, pair_id, text) SELECT id, pair_id, text "
                    "FROM search_entries WHERE id > ? ORDER BY id",
                    (upto,),
                )
                cursor.execute("UPDATE search_indexed SET upto = ?", (top,))
        self._unindexed = 0

    def _end(self, conn: Connection, session_id: str, ended_at: float) -> None:
        ended = conn.execute(
            update(SESSIONS)
            .where(SESSIONS.c.id == session_id, SESSIONS.c.ended_at.is_(None))
            .values(ended_at=ended_at)
        )
        if ended.rowcount:  # the row is now locked: no other node can end it meanwhile
            text = notes_text(self._notes_updates(conn, session_id))
            conn.execute(
                update(SESSIONS).where(SESSIONS.c.id == session_id).values(notes_text=text)
            )
            self._index_notes(conn, session_id, text, ended_at)

    # items and the search index, kept in step inside the writer's transaction ----------------
    def _pairs_of(self, conn: Connection, session_ids: Iterable[str]) -> dict[str, str]:
        wanted = set(session_ids)
        # not ``wanted - keys()``: that walks every cached session (about 30 us a batch at S2)
        missing = {sid for sid in wanted if sid not in self._pair_of}
        if missing:
            if len(self._pair_of) > SESSION_CACHE:
                self._pair_of.clear()
            q = select(SESSIONS.c.id, SESSIONS.c.pair_id).where(SESSIONS.c.id.in_(sorted(missing)))
            self._pair_of.update({sid: pid for sid, pid in (conn.execute(q)).all()})
        return {sid: self._pair_of[sid] for sid in wanted if sid in self._pair_of}

    def _follow(self, conn: Connection, stored: Sequence[StoredEvent]) -> None:
        """Apply stored journey events to the items and the search index. Entries are inserted
        in seq order, so that the index's row order is the order things were said (search
        lists newest first by it). The room machine checked every field; anything else is
        skipped, never a failed batch."""
        pairs = self._pairs_of(conn, (o.session_id for o in stored))
        entries: list[dict[str, Any]] = []
        pending: dict[str, dict[str, Any]] = {}  # entries of items created in this batch
        goals = {
            sid: self._goal_entry(conn, sid, pairs[sid])
            for sid in sorted({o.session_id for o in stored if o.kind == "goal"})
            if sid in pairs
        }
        for o in sorted(stored, key=lambda o: (o.session_id, o.seq)):
            pair_id = pairs.get(o.session_id)
            if pair_id is None:
                continue
            body = _unpack(o.body)
            if o.kind in ("chat", "mark"):
                if _is_text(body.get("text")):
                    entries.append(_entry(pair_id, o, o.kind, body["text"]))
            elif o.kind == "goal":
                goal = goals.get(o.session_id)
                if goal is not None and goal["seq"] == o.seq:
                    entries.append(goal)
                    del goals[o.session_id]
            elif o.kind == "item":
                item = body.get("item")
                if not isinstance(item, dict) or not all(f in item for f in ITEM_FIELDS):
                    continue
                row = {f: _storable(item[f]) for f in ITEM_FIELDS}
                conn.execute(
                    self._insert(ITEMS).on_conflict_do_nothing(),
                    {**row, "pair_id": pair_id, "updated_at": o.ts},
                )
                if _is_text(item["text"]):
                    made = _entry(pair_id, o, "item", item["text"], item["id"])
                    pending[item["id"]] = made
                    entries.append(made)
            elif o.kind == "item_update" and isinstance(body.get("item"), str):
                self._update_item(conn, pair_id, body, o.ts, pending)
        entries += [goal for goal in goals.values() if goal is not None]
        if entries:
            self._insert_entries(conn, entries)

    def _update_item(
        self,
        conn: Connection,
        pair_id: str,
        body: dict[str, Any],
        ts: float,
        pending: dict[str, dict[str, Any]],
    ) -> None:
        item_id = body["item"]
        changes = {k: _storable(body[k]) for k in ITEM_CHANGES if k in body}
        if not changes:
            return
        conn.execute(
            update(ITEMS)
            .where(ITEMS.c.pair_id == pair_id, ITEMS.c.id == item_id)
            .values(**changes, updated_at=ts)
        )
        new_text = changes.get("text")
        if not _is_text(new_text):
            return
        if item_id in pending:  # created in this batch: its entry is not inserted yet
            pending[item_id]["text"] = new_text
            return
        created_in = (
            select(ITEMS.c.session_id)
            .where(ITEMS.c.pair_id == pair_id, ITEMS.c.id == item_id)
            .scalar_subquery()
        )
        conn.execute(
            update(SEARCH)
            .where(
                SEARCH.c.session_id == created_in,
                _of_kind(SEARCH, "item"),
                SEARCH.c.ref == item_id,
            )
            .values(text=new_text)
        )

    def _insert(self, table: Any) -> Any:
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    def _goal_entry(self, conn: Connection, session_id: str, pair_id: str) -> dict[str, Any] | None:
        """The session's goal entry is its last goal event by seq (none once cleared). Drop
        the entry there is unless it is that one already; return the entry to insert."""
        q = (
            select(EVENTS.c.seq, EVENTS.c.ts, EVENTS.c.body)
            .where(EVENTS.c.session_id == session_id, _of_kind(EVENTS, "goal"))
            .order_by(EVENTS.c.seq.desc())
            .limit(1)
        )
        last = (conn.execute(q)).first()
        goal = _goal_text(last[2]) if last else None
        where = (SEARCH.c.session_id == session_id, _of_kind(SEARCH, "goal"))
        indexed = (conn.execute(select(SEARCH.c.seq).where(*where))).scalars().all()
        if last is not None and goal and list(indexed) == [last[0]]:
            return None  # a goal stored late, older than the one indexed: nothing changes
        if indexed:
            conn.execute(delete(SEARCH).where(*where))
        if last is None or not goal:
            return None
        return {
            "pair_id": pair_id,
            "session_id": session_id,
            "kind": "goal",
            "seq": last[0],
            "ref": None,
            "ts": last[1],
            "text": _storable(goal),
        }

    def _index_notes(self, conn: Connection, session_id: str, notes: str, ts: float | None) -> None:
        """Replace the session's notes entry (none for empty notes); ``ts`` defaults to the
        session's end, else its last activity, else its start."""
        conn.execute(
            delete(SEARCH).where(SEARCH.c.session_id == session_id, _of_kind(SEARCH, "notes"))
        )
        if not notes.strip():
            return
        session = (
            conn.execute(
                select(SESSIONS.c.pair_id, SESSIONS.c.started_at, SESSIONS.c.ended_at).where(
                    SESSIONS.c.id == session_id
                )
            )
        ).first()
        if session is None:
            return
        if ts is None:
            last = select(func.max(EVENTS.c.ts)).where(EVENTS.c.session_id == session_id)
            ts = session[2] or (conn.execute(last)).scalar() or session[1]
        conn.execute(
            insert(SEARCH).values(
                pair_id=session[0],
                session_id=session_id,
                kind="notes",
                seq=None,
                ts=ts,
                text=_storable(notes[:NOTES_INDEXED]),
            )
        )
        self._unindexed += 1


@contextlib.contextmanager
def _driver_cursor(conn: Connection) -> Iterator[Any]:
    """A cursor of the connection's sqlite3 connection, in its transaction; its errors are
    raised as SQLAlchemy's, which the writer tells a refused write from a busy database by."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except sqlite3.Error as exc:
        raise DBAPIError.instance(
            "(a batch insert)", None, exc, sqlite3.Error, hide_parameters=True
        ) from exc
    finally:
        cursor.close()


@functools.lru_cache(maxsize=64)
def _sqlite_insert_events(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (session_id, seq, kind, user_id, client_id, ts, body) "
        f"VALUES {values} ON CONFLICT DO NOTHING "
        "RETURNING session_id, seq, kind, user_id, client_id"
    )


def _index_behind(conn: Connection) -> bool:
    """SQLite: some search entries are not in the FTS index yet."""
    sql = "SELECT (SELECT max(id) FROM search_entries) > upto FROM search_indexed"
    return bool(conn.exec_driver_sql(sql).scalar())


def _of_kind(table: Any, kind: str) -> Any:
    """``kind = K`` for a kind other than chat, with the by-kind index's own condition: SQLite
    uses a partial index only for a query that states its condition."""
    assert kind != "chat", "chats are not in the by-kind indexes"
    return and_(table.c.kind == kind, table.c.kind != "chat")


def _entry(
    pair_id: str, o: StoredEvent, kind: str, text: str, ref: str | None = None
) -> dict[str, Any]:
    return {
        "pair_id": pair_id,
        "session_id": o.session_id,
        "kind": kind,
        "seq": o.seq,
        "ref": ref,
        "ts": o.ts,
        "text": _storable(text),
    }


def _storable(value: Any) -> Any:
    """A text PostgreSQL can hold: without NUL characters (the event keeps them)."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _unpack(body: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(bytes(body), raw=False)
    return value if isinstance(value, dict) else {}


def _goal_text(body: bytes | None) -> str | None:
    """A goal event's text, None when there is none or it clears the goal."""
    if body is None:
        return None
    goal = _unpack(body).get("text")
    return goal if isinstance(goal, str) and goal else None


def search_words(q: str) -> list[str]:
    """The words of a query, lower-cased, in order, without repeats: runs of letters and
    digits (punctuation and ``_`` separate words, as both backends' tokenizers do)."""
    words: list[str] = []
    for word in re.findall(r"[^\W_]+", unicodedata.normalize("NFC", q)):
        word = word.lower()
        if word not in words:
            words.append(word)
    return words[:SEARCH_WORDS]


def _fts_quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _fold(text: str) -> str:
    """The same length as ``text``, each character without its accents (for finding a
    match that FTS5 found with diacritics removed)."""
    return "".join(unicodedata.normalize("NFD", ch)[0] if ord(ch) > 127 else ch for ch in text)


def excerpt(text: str, words: Sequence[str], size: int = EXCERPT) -> str:
    """At most ``size`` characters of ``text`` (whitespace runs made one space) around its
    first whole-word match of any of ``words``; ``…`` marks a cut."""
    flat = " ".join(text.split())
    if len(flat) <= size:
        return flat
    pattern = "|".join(re.escape(_fold(w)) for w in sorted(words, key=len, reverse=True))
    found = re.search(rf"(?<![^\W_])(?:{pattern})(?![^\W_])", _fold(flat), re.IGNORECASE)
    at, end = (found.start(), found.end()) if found else (0, 0)
    budget = size - 2  # room for the two ellipses
    start = max(0, min(at - budget // 3, len(flat) - budget))
    if start > 0:  # begin at a word, unless that would cut into the match
        space = flat.find(" ", start, at)
        if 0 <= space - start < 30:
            start = space + 1
    stop = min(len(flat), start + budget)
    if stop < len(flat):
        space = flat.rfind(" ", max(end, stop - 30), stop)
        if space > end:
            stop = space
    piece = flat[start:stop]
    return ("…" if start > 0 else "") + piece + ("…" if stop < len(flat) else "")
