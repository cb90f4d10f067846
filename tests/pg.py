"""PostgreSQL for tests: a fresh schema per test on the shared server, dropped afterwards.

The server is ``MENTEO_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
A test's database URL selects its schema with ``?search_path=<schema>`` (the store passes
unknown query parameters to PostgreSQL as server settings), so a server process started with
that URL works in the test's schema too. Schema names carry the host and pid: schemas left by a
killed run on this host are dropped by the next run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from tests.support import require_service, service_missing

PG_URL = os.environ.get("MENTEO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "menteo_t_" + hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]

T = TypeVar("T")
_swept = False


def run(fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``fn(conn)`` on an admin connection, in a thread of its own (callable from anywhere,
    including inside a running event loop)."""

    async def main() -> T:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


def require_postgres() -> None:
    parts = urlsplit(PG_URL)
    require_service("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        run(lambda conn: conn.fetchval("SELECT 1"))
    except Exception as exc:
        service_missing(f"PostgreSQL at {PG_URL} does not accept us: {exc!r}")


def url_for(schema: str, base: str = PG_URL) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}search_path={schema}"


async def _sweep(conn: asyncpg.Connection) -> None:
    """Drop schemas left on this host by test runs whose process is gone."""
    rows = await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", PREFIX + "\\_%"
    )
    for (name,) in rows:
        pid = name[len(PREFIX) + 1 :].split("_", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(Exception):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        except OSError:
            pass  # alive (owned by someone else)


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("SET lock_timeout = '10s'")
    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh, empty schema; yields a database URL that works in it."""
    global _swept
    require_postgres()
    if not _swept:
        _swept = True
        run(_sweep)
    name = f"{PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:10]}"

    async def create(conn: asyncpg.Connection) -> Any:
        return await conn.execute(f'CREATE SCHEMA "{name}"')

    run(create)
    try:
        yield url_for(name)
    finally:
        run(lambda conn: _drop(conn, name))
