"""Redis for tests: the shared local server, a fresh key prefix per test, a private server.

The shared server is ``MENTEO_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Tests never
restart or flush it (others use it): each test works under a prefix of its own and deletes its
keys afterwards. A test that needs Redis to go away starts a :class:`PrivateRedis` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from tests.support import free_port, require_service, service_missing

REDIS_URL = os.environ.get("MENTEO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    """Skip when Redis is not reachable (fail instead when CI=true)."""
    parts = urlsplit(REDIS_URL)
    require_service("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)


def new_prefix() -> str:
    return f"menteo-test-{uuid.uuid4().hex[:12]}:"


async def delete_prefix(prefix: str, url: str = REDIS_URL) -> int:
    """Delete every key under ``prefix``; the number deleted."""
    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis, its keys deleted afterwards."""
    require_redis()
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        await delete_prefix(prefix)


class PrivateRedis:
    """A throwaway ``redis-server`` on a free port, to stop and start at will."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> PrivateRedis:
        self._spawn()
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if await client.ping():
                        return self
                except OSError:
                    pass
                except Exception as exc:  # redis's ConnectionError while it starts
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start: {exc!r}") from exc
                assert self.proc is not None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def _spawn(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server is not installed")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class RedisProxy:
    """A TCP proxy to Redis on a free local port: :meth:`cut` closes its connections and
    refuses new ones (one node cut off while the others still reach Redis); :meth:`open`
    serves again on the same port."""

    def __init__(self, url: str = REDIS_URL) -> None:
        parts = urlsplit(url)
        self._parts = parts
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The proxied Redis URL (same credentials and database)."""
        userinfo, at, _ = self._parts.netloc.rpartition("@")
        return self._parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{self.port}").geturl()

    async def open(self) -> RedisProxy:
        if self._server is None:
            self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            await asyncio.gather(_pump(client_r, upstream_w), _pump(upstream_r, client_w))
        except OSError:
            pass  # Redis itself is away, or a side broke off: both ends are closed below
        finally:
            self._links.discard(task)
            for w in (client_w, upstream_w):
                if w is not None:
                    w.transport.abort()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until ``source`` ends, then close ``sink``."""
    try:
        while data := await source.read(1 << 16):
            sink.write(data)
            await sink.drain()
    finally:
        sink.transport.abort()


class ThreadedRedisProxy:
    """A :class:`RedisProxy` on a thread and event loop of its own, for tests that block (a
    blocking call of the test never stalls it): ``cut``, ``restore`` and ``close`` wait."""

    def __init__(self, url: str = REDIS_URL) -> None:
        self.proxy = RedisProxy(url)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.proxy.url

    def start(self) -> ThreadedRedisProxy:
        self.thread.start()
        self._run(self.proxy.open())
        return self

    def cut(self) -> None:
        self._run(self.proxy.cut())

    def restore(self) -> None:
        self._run(self.proxy.open())

    def close(self) -> None:
        self._run(self.proxy.cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _run(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)
