"""Operations endpoints through real server processes: ``/readyz`` (200, and 503 naming the part
that is down), ``/metrics`` (Prometheus text whose values follow what clients do), ``/healthz``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from rooms.broker import MemoryBackbone
from server.services import running
from server.settings import Settings
from tests.pg import PREFIX, run
from tests.support import SECRET, Client, ServerProcess

METRICS = [
    "menteo_live_connections",
    "menteo_live_rooms",
    "menteo_frames_in_total",
    "menteo_frames_out_total",
    "menteo_ack_latency_seconds",
    "menteo_commit_batch_size",
    "menteo_broker_errors_total",
    "menteo_store_errors_total",
    "menteo_closes_total",
]


def scrape(srv: ServerProcess) -> dict[tuple[str, str], float]:
    """``{(sample name, reason label or ""): value}`` from ``GET /metrics``."""
    status, text, headers = srv.request("GET", "/metrics", raw=True)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "le" in s.labels:
                continue
            key = (s.name, s.labels.get("reason", ""))
            out[key] = out.get(key, 0.0) + s.value
    return out


def value(srv: ServerProcess, name: str, reason: str = "") -> float:
    return scrape(srv).get((name, reason), 0.0)


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_healthz_and_readyz(server: ServerProcess) -> None:
    assert server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})
    status, body, _ = server.request("GET", "/readyz")
    assert (status, body) == (200, {"status": "ready", "database": "ok", "broker": "ok"})


async def test_metrics_follow_a_chat(workdir: Path) -> None:
    srv = ServerProcess(workdir, {"MENTEO_RATE_LIMIT": "5"}).start()
    try:
        before = scrape(srv)
        names = {name for name, _ in before}
        for metric in METRICS:
            assert any(n == metric or n.startswith(metric + "_") for n in names), metric
        assert before[("menteo_live_connections", "")] == 0
        assert before[("menteo_live_rooms", "")] == 0
        assert before[("menteo_frames_in_total", "")] == 0
        assert before[("menteo_ack_latency_seconds_count", "")] == 0

        pair = srv.pair()
        mentor = await Client.open(srv, pair.id, pair.mentor_token)
        mentee = await Client.open(srv, pair.id, pair.mentee_token)
        await mentor.expect("presence", seq=2)
        for i in range(3):
            await mentor.send({"t": "chat", "id": f"m{i}", "text": f"hello {i}"})
            await mentor.expect("ack", id=f"m{i}")
        for i in range(3):
            await mentee.expect("chat", id=f"m{i}")
        await until(lambda: value(srv, "menteo_commit_batch_size_sum") == 5, "5 writes")
        after = scrape(srv)
        assert after[("menteo_live_connections", "")] == 2
        assert after[("menteo_live_rooms", "")] == 1
        assert after[("menteo_frames_in_total", "")] == 3
        received = len(mentor.frames) + len(mentee.frames)
        assert after[("menteo_frames_out_total", "")] >= received >= 3 + 3 + 3
        assert after[("menteo_ack_latency_seconds_count", "")] == 3
        assert 0 < after[("menteo_ack_latency_seconds_sum", "")] < 30
        # two presence events and three chats, in one to five commits
        assert 1 <= after[("menteo_commit_batch_size_count", "")] <= 5
        assert after[("menteo_store_errors_total", "")] == 0
        assert after[("menteo_broker_errors_total", "")] == 0

        # a flood is closed 4429 and counted
        assert after[("menteo_closes_total", "rate_limit")] == 0
        for _ in range(30):
            mentee.ws.protocol.send_binary(msgpack.packb({"t": "ping"}))
        mentee.ws.send_data()  # one write for all 30 frames
        assert await mentee.closed(timeout=5) == 4429
        await until(lambda: value(srv, "menteo_live_connections") == 1, "the flooder gone")
        flooded = scrape(srv)
        assert flooded[("menteo_closes_total", "rate_limit")] == 1
        assert flooded[("menteo_closes_total", "slow_consumer")] == 0
        assert flooded[("menteo_frames_in_total", "")] >= 3 + 11
        await mentor.close()
        await until(lambda: value(srv, "menteo_live_connections") == 0, "no connections")
    finally:
        srv.stop()


async def test_slow_consumer_close_is_counted(workdir: Path) -> None:
    srv = ServerProcess(workdir, {"MENTEO_RATE_LIMIT": "0", "MENTEO_SEND_QUEUE": "64"}).start()
    try:
        pair = srv.pair()
        slow = await Client.open(srv, pair.id, pair.mentee_token, max_queue=1)  # stops reading
        sender = await Client.open(srv, pair.id, pair.mentor_token)
        await sender.expect("presence", seq=2)
        text = "y" * 3900
        sent = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < 3000:
            for _ in range(20):
                await sender.send({"t": "chat", "id": f"s{sent}", "text": text})
                sent += 1
            await sender.expect("ack", id=f"s{sent - 1}")
            if value(srv, "menteo_closes_total", "slow_consumer") >= 1:
                break
        assert value(srv, "menteo_closes_total", "slow_consumer") == 1
        with pytest.raises(ConnectionClosed):
            for _ in range(10_000):
                await asyncio.wait_for(slow.ws.recv(), 10)
        assert slow.ws.close_code == 1013
        assert value(srv, "menteo_closes_total", "rate_limit") == 0
        left = await sender.expect("presence", state="left")  # (reads what queued up meanwhile)
        assert left["user"]["id"] == pair.mentee
        await sender.close()
    finally:
        srv.stop()


def _with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}@{host}").geturl()


async def test_readyz_503_while_the_database_is_down(workdir: Path, pg_url: str) -> None:
    """The node's database role is locked out and its sessions cut: /readyz says the database
    is down (and /healthz stays 200); once the role may log in again, the node is ready."""
    schema = pg_url.rpartition("search_path=")[2]
    role = f"{PREFIX}_r_{uuid.uuid4().hex[:10]}"

    async def setup(conn: asyncpg.Connection) -> Any:
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        await conn.execute(f'GRANT ALL ON SCHEMA "{schema}" TO "{role}"')

    async def lock_out(conn: asyncpg.Connection) -> Any:
        await conn.execute(f'ALTER ROLE "{role}" NOLOGIN')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )

    async def let_in(conn: asyncpg.Connection) -> Any:
        await conn.execute(f'ALTER ROLE "{role}" LOGIN')

    async def teardown(conn: asyncpg.Connection) -> Any:
        await conn.execute(f'DROP OWNED BY "{role}" CASCADE')
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')

    run(setup)
    srv = ServerProcess(workdir, {"MENTEO_DATABASE_URL": _with_user(pg_url, role)})
    try:
        srv.start()
        assert srv.request("GET", "/readyz")[:2] == (
            200,
            {"status": "ready", "database": "ok", "broker": "ok"},
        )
        srv.pair()  # the node really works on this database
        run(lock_out)
        down = {"status": "unavailable", "database": "down", "broker": "ok"}
        await until(lambda: srv.request("GET", "/readyz")[:2] == (503, down), "503")
        assert srv.request("GET", "/healthz")[:2] == (200, {"status": "ok"})
        run(let_in)
        await until(lambda: srv.request("GET", "/readyz")[0] == 200, "ready again")
        assert srv.request("GET", "/readyz")[1]["database"] == "ok"
        srv.pair()
    finally:
        if srv.proc is not None:
            srv.stop()
        run(teardown)


async def test_two_nodes_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    """Each node's metrics live in its own registry: no clash, no shared counts."""
    backbone = MemoryBackbone()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'two.db'}", secret=SECRET)
    async with running(settings, backbone) as one, running(settings, backbone) as two:
        assert one.metrics.registry is not two.metrics.registry
        one.metrics.frame_in()
        one.metrics.frame_in()
        two.metrics.frame_in()
        for svc, frames in ((one, 2), (two, 1)):
            samples = [
                s
                for f in text_string_to_metric_families(svc.metrics.render().decode())
                for s in f.samples
            ]
            assert {s.labels["node"] for s in samples} == {svc.broker.node_id}
            got = [s.value for s in samples if s.name == "menteo_frames_in_total"]
            assert got == [frames]
