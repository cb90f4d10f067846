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
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
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
