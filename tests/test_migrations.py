"""Schema migrations (Alembic) on SQLite and PostgreSQL: they make exactly the models' schema,
the store applies them on an empty database, a database made before migrations is stamped,
``menteo-rooms migrate`` is idempotent, and nodes starting together migrate once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import persistence.models  # noqa: F401
from persistence import migrate
from persistence.migrate import SchemaError
from persistence.store import PairRecord, Store, async_url, pg_connect_args
from tests.pg import pg_schema
from tests.support import ROOT, SECRET

APP_TABLES = ["events", "items", "notes_updates", "pairs", "search_entries", "sessions", "users"]
# SQLite's full-text index is an FTS5 table, its shadow tables and the mark of what it holds;
# PostgreSQL's is a column
FTS_TABLES = [
    "search_fts",
    *(f"search_fts_{t}" for t in ("config", "data", "docsize", "idx")),
    "search_indexed",
]


def app_tables(url: str) -> list[str]:
    return sorted(APP_TABLES + (FTS_TABLES if url.startswith("sqlite") else []))


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], AbstractContextManager[str]]:
    """A factory of fresh, empty databases (URLs) of one kind."""
    if request.param == "postgresql":
        return pg_schema
    names = iter(range(100))

    @contextmanager
    def sqlite_file() -> Iterator[str]:
        yield f"sqlite:///{tmp_path / f'db{next(names)}.sqlite'}"

    return sqlite_file


def engine_for(url: str) -> Any:
    url = async_url(url)
    if url.startswith("postgresql"):
        url, args = pg_connect_args(url)
        return create_async_engine(url, connect_args=args)
    return create_async_engine(url)


async def on(url: str, fn: Callable[[Connection], Any], begin: bool = False) -> Any:
    engine = engine_for(url)
    try:
        async with engine.begin() if begin else engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def snapshot(conn: Connection) -> dict[str, Any]:
    """Tables, columns, keys, indexes and unique constraints, as the database reports them."""
    insp = inspect(conn)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    repr(sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items())),
                )
                for i in insp.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
        }
    return out


async def test_migrations_make_the_models_schema(
    databases: Callable[[], AbstractContextManager[str]],
) -> None:
    with databases() as migrated, databases() as created:
        async with Store(migrated):  # an empty database: the store applies the migrations
            pass
        await on(created, SQLModel.metadata.create_all, begin=True)
        by_migrations = await on(migrated, snapshot)
        by_models = await on(created, snapshot)
        assert await on(migrated, migrate.current) == migrate.head()

        tables = app_tables(migrated)
    assert sorted(by_migrations) == sorted(["alembic_version", *tables])
    assert sorted(by_models) == tables
    del by_migrations["alembic_version"]
    assert by_migrations == by_models
    # the partial unique index that keeps one live session per pair is really there
    live = [i for i in by_migrations["sessions"]["indexes"] if i[0] == "one_live_session_per_pair"]
    assert len(live) == 1 and live[0][1:3] == (("pair_id",), True)
    assert "ended_at IS NULL" in live[0][3]
    assert by_migrations["events"]["pk"] == ["session_id", "seq"]
    assert by_migrations["items"]["pk"] == ["pair_id", "id"]
    if "search_fts" not in tables:  # PostgreSQL: a generated tsvector column with a GIN index
        columns = {c[0]: c[1] for c in by_migrations["search_entries"]["columns"]}
        assert columns["tsv"] == "TSVECTOR"
        gin = [i for i in by_migrations["search_entries"]["indexes"] if i[0] == "search_text"]
        assert len(gin) == 1 and "gin" in gin[0][3]


def legacy_schema(conn: Connection) -> None:
    """The schema as versions before migrations made it: 0001's, without alembic_version."""
    command.upgrade(migrate.config(conn), migrate.LEGACY_REVISION)
    conn.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))


async def test_the_live_session_index_is_enforced(
    databases: Callable[[], AbstractContextManager[str]],
) -> None:
    with databases() as url:
        async with Store(url) as store:
            pair = await store.create_pair("A", "B", 1.0)
            await store.start_session(pair.id, 1.0)
            with pytest.raises(Exception, match=r"(?i)unique"):
                async with store.engine.begin() as conn:
                    await conn.execute(
                        text("INSERT INTO sessions (id, pair_id, started_at) VALUES ('x', :p, 2)"),
                        {"p": pair.id},
                    )
            async with store.engine.begin() as conn:
                await conn.execute(text("UPDATE sessions SET ended_at = 3"))
                await conn.execute(
                    text("INSERT INTO sessions (id, pair_id, started_at) VALUES ('x', :p, 4)"),
                    {"p": pair.id},
                )
            live = await store.live_session(pair.id)
            assert live is not None and live.id == "x"


async def test_migrate_is_idempotent(databases: Callable[[], AbstractContextManager[str]]) -> None:
    with databases() as url:
        async with Store(url, prepare=False) as store:
            assert await on(url, snapshot) == {}
            assert await store.migrate() == f"created (now at {migrate.head()})"
            first = await on(url, snapshot)
            pair = await store.create_pair("A", "B", 1.0)
            assert await store.migrate() == f"already at {migrate.head()}"
            assert await store.migrate() == f"already at {migrate.head()}"
            assert await on(url, snapshot) == first
            assert await store.get_pair(pair.id) == pair
        async with Store(url) as store:  # a normal start on a migrated database
            assert await store.get_pair(pair.id) == pair


async def test_a_schema_made_before_migrations_is_stamped(
    databases: Callable[[], AbstractContextManager[str]],
) -> None:
    with databases() as url:
        await on(url, legacy_schema, begin=True)
        pair = await on(url, old_data, begin=True)
        assert await on(url, migrate.current) is None
        # a start takes it for 0001, which is behind: it stops and changes nothing
        with pytest.raises(SchemaError, match="run `menteo-rooms migrate`"):
            async with Store(url):
                pass
        assert await on(url, migrate.current) is None
        async with Store(url, prepare=False) as store:
            assert await store.migrate() == f"upgraded from 0001 (now at {migrate.head()})"
            assert await store.migrate() == f"already at {migrate.head()}"
        async with Store(url) as store:
            assert await store.get_pair(pair.id) == pair
        # the same through `migrate` rather than a start
    with databases() as url:
        await on(url, legacy_schema, begin=True)
        async with Store(url, prepare=False) as store:
            assert await store.migrate() == f"upgraded from 0001 (now at {migrate.head()})"
        assert await on(url, migrate.current) == migrate.head()


def old_data(conn: Connection) -> PairRecord:
    """A pair with two sessions as 0001 stored them: chats, presence, notes (one ended with
    its final text, one live with its updates only)."""
    pair = PairRecord("p1", "u1", "Ada", "u2", "Grace")
    conn.execute(text("INSERT INTO users (id, name) VALUES ('u1', 'Ada'), ('u2', 'Grace')"))
    conn.execute(
        text("INSERT INTO pairs (id, mentor_id, mentee_id, created_at) VALUES ('p1','u1','u2',1)")
    )
    conn.execute(
        text(
            "INSERT INTO sessions (id, pair_id, started_at, ended_at, notes_text) VALUES "
            "('s1', 'p1', 10, 20, 'Old notes about the budget'), ('s2', 'p1', 30, NULL, NULL)"
        )
    )
    events = [
        ("s1", 1, "presence", "u1", None, {"t": "presence", "state": "joined"}),
        ("s1", 2, "chat", "u1", "c1", {"t": "chat", "text": "Tell me about the Budget"}),
        ("s1", 3, "chat", "u2", "c1", {"t": "chat", "text": "It is tight"}),
        ("s2", 1, "chat", "u2", "c2", {"t": "chat", "text": "budget again, sorry"}),
    ]
    for sid, seq, kind, user, cid, body in events:
        conn.execute(
            text(
                "INSERT INTO events (session_id, seq, kind, user_id, client_id, ts, body) "
                "VALUES (:s, :q, :k, :u, :c, :ts, :b)"
            ),
            {
                "s": sid,
                "q": seq,
                "k": kind,
                "u": user,
                "c": cid,
                "ts": (10.0 if sid == "s1" else 30.0) + seq,
                "b": msgpack.packb({**body, "seq": seq}),
            },
        )
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    doc.get("notes", type=pycrdt.Text).insert(0, "live notes: budget plan")
    conn.execute(
        text("INSERT INTO notes_updates (session_id, data) VALUES ('s2', :d)"),
        {"d": doc.get_update()},
    )
    return pair


async def test_upgrade_from_0001_keeps_the_data_and_indexes_it(
    databases: Callable[[], AbstractContextManager[str]],
) -> None:
    with databases() as url:

        def at_0001(conn: Connection) -> None:
            command.upgrade(migrate.config(conn), "0001")

        await on(url, at_0001, begin=True)
        pair = await on(url, old_data, begin=True)
        async with Store(url, prepare=False) as store:
            assert await store.migrate() == f"upgraded from 0001 (now at {migrate.head()})"
        async with Store(url) as store:
            assert await store.get_pair(pair.id) == pair
            listed = await store.list_sessions(pair.id)
            assert [(s.session.id, s.message_count, s.goal) for s in listed] == [
                ("s2", 1, None),
                ("s1", 2, None),
            ]
            assert await store.items(pair.id) == []
            found = await store.search(pair.id, "budget")
            assert [(r["session_id"], r["kind"], r["seq"]) for r in found] == [
                ("s2", "notes", None),
                ("s2", "chat", 1),
                ("s1", "notes", None),
                ("s1", "chat", 2),
            ]
            assert found[2]["text"] == "Old notes about the budget"


async def test_schemas_this_version_cannot_use(
    databases: Callable[[], AbstractContextManager[str]],
) -> None:
    with databases() as url:
        # some of the tables but no migration history: refuse rather than guess
        def users_only(conn: Connection) -> None:
            SQLModel.metadata.tables["users"].create(conn)

        await on(url, users_only, begin=True)
        with pytest.raises(SchemaError, match="no migration history"):
            async with Store(url):
                pass
        async with Store(url, prepare=False) as store:
            with pytest.raises(SchemaError, match="no migration history"):
                await store.migrate()
    with databases() as url:
        async with Store(url):
            pass

        def from_the_future(conn: Connection) -> None:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))

        await on(url, from_the_future, begin=True)
        async with Store(url) as store:  # a start goes on (a newer node migrated first)
            await store.ping()
        async with Store(url, prepare=False) as store:
            with pytest.raises(SchemaError, match="ffff"):
                await store.migrate()


async def test_nodes_starting_together_migrate_once(pg_url: str) -> None:
    stores = [Store(pg_url) for _ in range(4)]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.__aenter__() for s in stores)), 60)
        pair = await stores[0].create_pair("A", "B", 1.0)
        assert await stores[3].get_pair(pair.id) == pair
    finally:
        for s in stores:
            await s.__aexit__(None, None, None)
    assert await on(pg_url, migrate.current) == migrate.head()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MENTEO_DATABASE_URL": url,
        "MENTEO_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_migrate(databases: Callable[[], AbstractContextManager[str]]) -> None:
    with databases() as url:
        first = cli(url, "migrate")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"database schema: created (now at {migrate.head()})"
        again = cli(url, "migrate")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == f"database schema: already at {migrate.head()}"
        assert sorted(await on(url, snapshot)) == sorted(["alembic_version", *app_tables(url)])
        made = cli(url, "pair", "create", "--mentor", "M", "--mentee", "E", "--json")
        assert made.returncode == 0, made.stderr
        # a database this version cannot use: an error and exit 1, no traceback

        def break_history(conn: Connection) -> None:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))

        await on(url, break_history, begin=True)
        bad = cli(url, "migrate")
        assert bad.returncode == 1
        assert "ffff" in bad.stderr and "Traceback" not in bad.stderr
