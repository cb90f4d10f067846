"""Capacity inputs for docs/scaling.md (issue 11): what one Redis and one PostgreSQL carry here.

    .venv/bin/python -m bench.capacity                  # everything, about 1.5 minutes
    .venv/bin/python -m bench.capacity --seconds 2      # shorter measuring windows
    .venv/bin/python -m bench.capacity --skip-probe --skip-pg

Each measurement lasts a few seconds and talks to 127.0.0.1 only (Redis at
``MENTEO_BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0; PostgreSQL at
``MENTEO_BENCH_PG_URL``, default postgresql://postgres@127.0.0.1:5432/test):

1. envelope: the bytes the product publishes for one chat (the ``Stored`` node message, made by
   the room machine itself) and the event body it stores.
2. probe: two nodes in this process, as ``server.services.running`` assembles them (Hub, Writer,
   Store on PostgreSQL, RedisBroker), with each room's members on two nodes or on one; Redis
   commands per chat, typing frame and notes update by name (MONITOR, filtered by the probe's
   key prefix), subscribers per room channel, SQL rows and commits.
3. redis: PUBLISH and SPUBLISH with 0, 1 and 2 subscriber connections (nodes) on 1,000 room
   channels, payload the size of a chat envelope (``redis-benchmark``), and EVALSHA of the
   product's seq script (``rooms.broker.redis.ALLOCATE_SEQ``); then the product's own
   ``RedisBroker.allocate_seq`` from one process. Redis CPU is read from /proc.
4. postgresql: ``Store.write`` (the group-commit writer's one call per batch) with batches of
   1/10/50/200 chats on one connection, then 4 writers at once; a raw asyncpg single-row commit
   as the floor; PostgreSQL backend CPU, WAL and bytes on disk per chat.

Everything made lives under a throwaway Redis key prefix and a throwaway PostgreSQL schema, both
removed at the end. Results are printed and written to bench/results/capacity-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REDIS_URL = os.environ.get("MENTEO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("MENTEO_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "capacity-bench-secret-0123456789abcdef0123"
CLK = os.sysconf("SC_CLK_TCK")
ROOM_CHANNELS = 1000  # room channels each subscriber (node) holds in the Redis runs
SESSIONS = 64  # sessions the PostgreSQL batches are spread over (one batch, many rooms)
IDLE_WINDOW = 11.0  # seconds of an idle probe window: two sweep intervals and a little

Result = dict[str, Any]


# small helpers --------------------------------------------------------------------------------
def loopback(url: str, default_port: int) -> tuple[str, int]:
    """Host and port of a service URL; refuse anything but this machine."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if not (host in ("localhost", "::1") or host.startswith("127.")):
        raise SystemExit(f"bench.capacity measures on this machine only, not {host}")
    return host, parts.port or default_port


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a process, or None when /proc does not show it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Window:
    """Wall time, this process's CPU and the machine's busy share over a ``with`` block."""

    def __enter__(self) -> Window:
        self.t0, self.cpu0, self.m0 = time.perf_counter(), own_cpu(), machine_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = own_cpu() - self.cpu0
        busy, total = machine_ticks()
        self.busy_pct = 100 * (busy - self.m0[0]) / max(total - self.m0[1], 1)


def rnd(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def resp(*args: str | bytes) -> bytes:
    """One command in RESP, for the raw connections below."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def say(line: str) -> None:
    print(line, flush=True)


# raw Redis connections in processes of their own -----------------------------------------------
def _reader(
    host: str,
    port: int,
    command: str,
    channels: list[str],
    count: Any,
    lost: Any,
    ready: Any,
    stop: Any,
) -> None:
    """A node's pub/sub connection at its cheapest: subscribe, then count what arrives."""
    sock = socket.create_connection((host, port))
    for i in range(0, len(channels), 500):
        sock.sendall(resp(command, *channels[i : i + 500]))
    buf = bytearray(1 << 18)
    tail = b""
    acked = 0
    while acked < len(channels):  # "subscribe\r\n" ends both "subscribe" and "ssubscribe"
        n = sock.recv_into(buf)
        if n == 0:
            lost.value = 1
            return
        chunk = tail + buf[:n]
        acked += chunk.count(b"subscribe\r\n")
        tail = bytes(chunk[-10:])
    ready.set()
    sock.settimeout(0.1)
    total, tail = 0, b""
    while not stop.is_set():
        try:
            n = sock.recv_into(buf)
        except TimeoutError:
            continue
        if n == 0:
            lost.value = 1  # Redis dropped us (output buffer limit): the run says so
            break
        chunk = tail + buf[:n]
        total += chunk.count(b"message\r\n")  # "message" and "smessage"
        tail = bytes(chunk[-8:])
        count.value = total
    sock.close()


def _monitor(host: str, port: int, prefix: str, ready: Any, stop: Any, out: Any) -> None:
    """MONITOR, counting the commands that name the probe's prefix (keys and channels)."""
    sock = socket.create_connection((host, port))
    sock.sendall(resp("MONITOR"))
    mark = prefix.encode()
    counts: Counter[str] = Counter()
    rest = b""
    first = True
    sock.settimeout(0.05)
    while True:
        try:
            data = sock.recv(1 << 18)
        except TimeoutError:
            if stop.is_set():
                break
            continue
        if not data:
            break
        lines = (rest + data).split(b"\r\n")
        rest = lines.pop()
        for line in lines:
            if first:  # +OK
                first = False
                ready.set()
                continue
            if mark not in line:
                continue
            head, _, body = line.partition(b"] ")
            name = body.split(b" ", 1)[0].strip(b'"').decode(errors="replace").upper()
            counts[("lua:" if head.endswith(b"lua") else "") + name] += 1
    sock.close()
    out.put(dict(counts))


class Readers:
    """``n`` subscriber processes, each subscribed to every room channel (one node each)."""

    def __init__(self, host: str, port: int, command: str, channels: list[str], n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.counts = [ctx.Value("q", 0, lock=False) for _ in range(n)]
        self.lost = [ctx.Value("b", 0, lock=False) for _ in range(n)]
        self.procs = []
        readies = []
        for i in range(n):
            ready = ctx.Event()
            p = ctx.Process(
                target=_reader,
                args=(
                    host,
                    port,
                    command,
                    channels,
                    self.counts[i],
                    self.lost[i],
                    ready,
                    self.stop,
                ),
                daemon=True,
            )
            p.start()
            self.procs.append(p)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(30):
                self.close()
                raise RuntimeError("a subscriber did not get its subscriptions acknowledged")

    def total(self) -> int:
        return sum(int(c.value) for c in self.counts)

    def any_lost(self) -> bool:
        return any(int(x.value) for x in self.lost)

    def drain(self, expected: int, timeout: float = 10.0) -> int:
        """Wait until ``expected`` messages arrived, or the count stops moving."""
        deadline = time.monotonic() + timeout
        last, still = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = self.total()
            if now >= expected:
                return now
            if now != last:
                last, still = now, time.monotonic()
            elif time.monotonic() - still > 0.5:
                break
            time.sleep(0.02)
        return self.total()

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()


@contextlib.contextmanager
def monitored(host: str, port: int, prefix: str) -> Iterator[dict[str, int]]:
    """Count Redis commands naming ``prefix`` while inside; the dict is filled on exit."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_monitor, args=(host, port, prefix, ready, stop, out), daemon=True)
    p.start()
    if not ready.wait(30):
        p.terminate()
        raise RuntimeError("MONITOR did not start")
    counts: dict[str, int] = {}
    try:
        yield counts
    finally:
        time.sleep(0.3)  # let the last commands' lines arrive
        stop.set()
        with contextlib.suppress(Exception):
            counts.update(out.get(timeout=10))
        p.join(5)
        if p.is_alive():
            p.terminate()


def clean_redis(url: str, prefix: str) -> int:
    import redis

    r = redis.Redis.from_url(url)
    removed = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(r.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(r.unlink(*batch))
    r.close()
    return removed


# 1. the envelope -------------------------------------------------------------------------------
def envelope(texts: list[str]) -> Result:
    """Sizes of what one chat puts on the room channel and in the events table, made by the
    room machine (``Room.receive`` -> ``allocated`` -> ``stored``) as the hub drives it."""
    from rooms.codec import encode
    from rooms.messages import Relayed, encode_message
    from rooms.room import Allocate, Member, Publish, Room, Write, encode_packed

    def one(text: str) -> tuple[int, int]:
        mentor, mentee = uuid.uuid4().hex, uuid.uuid4().hex
        members = {
            mentor: Member(mentor, "Ada", "mentor"),
            mentee: Member(mentee, "Grace", "mentee"),
        }
        room = Room(uuid.uuid4().hex, uuid.uuid4().hex, members, uuid.uuid4().hex[:12])
        now = time.time()
        room.connect("c1", mentor, "msgpack", now, ice_servers=[])
        frame = encode({"t": "chat", "id": uuid.uuid4().hex, "text": text})
        assert isinstance(frame, bytes)
        effects = room.receive("c1", frame, now)
        (alloc,) = [e for e in effects if isinstance(e, Allocate)]
        (write,) = [e for e in room.allocated(alloc.op, 1234, True, now) if isinstance(e, Write)]
        (pub,) = [e for e in room.stored(alloc.op) if isinstance(e, Publish)]
        return len(encode_message(pub.msg)), len(write.write.body)  # type: ignore[union-attr]

    s2 = one(f"{time.time_ns()} {'x' * 40}")  # what bench/loadgen.py sends
    sized = [one(t) for t in texts]
    user = uuid.uuid4().hex
    typing = Relayed(
        uuid.uuid4().hex, user, encode_packed({"t": "typing", "from": user, "on": True})
    )
    return {
        "s2_chat_text_chars": 60,
        "s2_chat_envelope_bytes": s2[0],
        "s2_chat_body_bytes": s2[1],
        "sentence_chars_mean": round(sum(map(len, texts)) / len(texts), 1),
        "sentence_envelope_bytes_mean": round(sum(e for e, _ in sized) / len(sized), 1),
        "sentence_body_bytes_mean": round(sum(b for _, b in sized) / len(sized), 1),
        "typing_envelope_bytes": len(encode_message(typing)),
        "note": "msgpack Stored(session, seq, packed) as published by RedisBroker.publish; "
        "texts: bench/words.py sentences (3-26 words)",
    }


# 2. the probe: two nodes of the product, counted ---------------------------------------------
class Sink:
    """A member's socket: counts the frames the hub writes to it, by type."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.max_seq = 0

    async def send(self, data: bytes | str) -> None:
        import msgpack

        assert isinstance(data, bytes), "the probe's members speak msgpack"
        frame = msgpack.unpackb(data, raw=False)
        self.counts[frame["t"]] += 1
        if frame["t"] in ("chat", "presence") and isinstance(frame.get("seq"), int):
            self.max_seq = max(self.max_seq, frame["seq"])

    def send_now(self, frames: Sequence[bytes | str]) -> bool:
        return False

    async def close(self, code: int, reason: str) -> None:
        self.counts["closed"] += 1


@contextlib.asynccontextmanager
async def pg_schema(base: str, app: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh schema in the test database; yields a URL that works in it and its name; dropped
    on exit (with everything in it)."""
    import asyncpg

    name = f"capbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base, timeout=10)
    try:
        await admin.execute(f'CREATE SCHEMA "{name}"')
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}search_path={name}&application_name={app}", name
    finally:
        await admin.execute("SET lock_timeout = '10s'")
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await admin.close()


async def until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"probe: timed out waiting for {what}")
        await asyncio.sleep(0.005)


@dataclass
class Probe:
    """Two nodes of the product in this process and what the probe needs around them."""

    a: Any  # server.services.Services
    b: Any
    redis: Any  # redis.asyncio.Redis
    host: str
    port: int
    prefix: str
    words: Any  # bench.words.Words

    async def rows(self) -> dict[str, int]:
        from sqlalchemy import text as sql

        async with self.a.store.engine.connect() as conn:
            return {
                t: int((await conn.execute(sql(f"SELECT count(*) FROM {t}"))).scalar_one())
                for t in ("events", "search_entries", "notes_updates")
            }

    async def layout(self, layout: str, rooms: int, chats: int) -> Result:
        """``rooms`` rooms, the mentee on the other node ("split") or the same ("together")."""
        import msgpack
        import pycrdt

        from server.auth import mint

        a, b = self.a, self.b
        members: list[tuple[Any, str, Any, Sink]] = []  # (node, pair id, connection, socket)
        for _ in range(rooms):
            pair = await a.store.create_pair("Ada", "Grace", time.time())
            other = b if layout == "split" else a
            for user, node in ((pair.mentor_id, a), (pair.mentee_id, other)):
                sink = Sink()
                hello = {"t": "hello", "token": mint(SECRET, user, pair.id)}
                conn = await node.hub.join(sink, pair.id, "msgpack", hello)
                members.append((node, pair.id, conn, sink))
        sinks = [m[3] for m in members]
        await until(lambda: all(s.max_seq >= 2 for s in sinks), "both joins stored")
        await asyncio.sleep(0.3)  # the joins' publishes and claims settle
        channels = [f"{self.prefix}ch:room:{pid}" for pid in {m[1] for m in members}]
        numsub = dict(await self.redis.pubsub_numsub(*channels))
        subs = sum(int(v) for v in numsub.values()) / len(channels)

        before = await self.rows()
        batches = a.writer.batches + b.writer.batches
        with monitored(self.host, self.port, self.prefix) as cmds, Window() as w:
            for node, _, conn, _sink in members:
                for _i in range(chats):
                    frame = {"t": "chat", "id": uuid.uuid4().hex, "text": self.words.sentence()}
                    await node.hub.receive(conn, msgpack.packb(frame))
            await until(
                lambda: all(
                    s.counts["ack"] >= chats and s.counts["chat"] >= 2 * chats for s in sinks
                ),
                "acks and deliveries",
            )
        after = await self.rows()
        n = len(members) * chats
        entry: Result = {
            "chats": n,
            "subscribers_per_room_channel": subs,
            "redis_commands": cmds,
            "redis_per_chat": {k: round(v / n, 3) for k, v in sorted(cmds.items())},
            "sql_rows_per_chat": {k: round((after[k] - before[k]) / n, 3) for k in after},
            "commits": a.writer.batches + b.writer.batches - batches,
            "seconds": round(w.wall, 2),
            "node_cpu_us_per_chat": rnd(1e6 * w.cpu / n),
            "frames_per_member": dict(sinks[0].counts),
        }
        if layout == "split":
            # typing frames (on, off, ...): relayed to the other member, never stored
            with monitored(self.host, self.port, self.prefix) as tcmds, Window() as tw:
                for i in range(chats):
                    for node, _, conn, _sink in members:
                        frame = {"t": "typing", "on": i % 2 == 0}
                        await node.hub.receive(conn, msgpack.packb(frame))
                await until(lambda: all(s.counts["typing"] >= chats for s in sinks), "typing")
            typed = len(members) * chats
            entry["per_typing_frame"] = {
                "redis": {k: round(v / typed, 3) for k, v in sorted(tcmds.items())},
                "node_cpu_us": rnd(1e6 * tw.cpu / typed),
            }
            # notes updates from each mentor: stored, then published
            before = await self.rows()
            docs: list[pycrdt.Doc[pycrdt.Text]] = [pycrdt.Doc() for _ in range(rooms)]
            with monitored(self.host, self.port, self.prefix) as ncmds, Window() as nw:
                for _i in range(chats):
                    for doc, (node, _, conn, _sink) in zip(docs, members[::2], strict=True):
                        state = doc.get_state()
                        text = doc.get("notes", type=pycrdt.Text)
                        text.insert(len(text), self.words.word() + " ")
                        frame = {"t": "notes", "u": doc.get_update(state)}
                        await node.hub.receive(conn, msgpack.packb(frame, use_bin_type=True))
                mentees = sinks[1::2]
                await until(lambda: all(s.counts["notes"] >= chats for s in mentees), "notes")
            after = await self.rows()
            noted = rooms * chats
            entry["per_notes_update"] = {
                "redis": {k: round(v / noted, 3) for k, v in sorted(ncmds.items())},
                "sql_rows": {k: round((after[k] - before[k]) / noted, 3) for k in after},
                "node_cpu_us": rnd(1e6 * nw.cpu / noted),
            }
            # nothing sent for longer than a sweep interval (MENTEO_NODE_TTL / 2): what a room
            # whose members are on two nodes costs Redis while idle (sweeps, heartbeats)
            idle = IDLE_WINDOW
            with monitored(self.host, self.port, self.prefix) as icmds:
                await asyncio.sleep(idle)
            entry["idle_per_room_per_second"] = {
                k: round(v / rooms / idle, 3) for k, v in sorted(icmds.items())
            }
            say(f"probe split     idle, per room and second: {entry['idle_per_room_per_second']}")
            say(
                f"probe split     per typing frame {entry['per_typing_frame']}; "
                f"per notes update {entry['per_notes_update']}"
            )
        say(
            f"probe {layout:9} {n} chats: redis per chat {entry['redis_per_chat']}, "
            f"{subs:.1f} subscribers per room channel, "
            f"sql rows per chat {entry['sql_rows_per_chat']}, {entry['commits']} commits, "
            f"{entry['node_cpu_us_per_chat']} us of both nodes' CPU per chat"
        )
        for node, _, conn, _sink in members:  # the sockets go, as the endpoint reports it
            await node.hub.leave(conn)
        await asyncio.sleep(0.5)  # their leaves are stored and published before the nodes stop
        return entry


async def probe(redis_url: str, pg_url: str, prefix: str, rooms: int, chats: int) -> Result:
    """Per chat, typing frame and notes update: Redis commands, subscribers, SQL rows."""
    import random

    import redis.asyncio as aioredis

    from bench.words import Words, rare_words
    from server.services import running
    from server.settings import Settings

    host, port = loopback(redis_url, 6379)
    words = Words(random.Random(11), rare_words(50))
    out: Result = {"rooms": rooms, "chats_per_member": chats}
    async with pg_schema(pg_url, "capbench-probe") as (url, _):
        cfg = Settings(
            database_url=url,
            broker_url=redis_url,
            redis_prefix=prefix,
            secret=SECRET,
            rate_limit=0,
            joins_per_minute=0,
        )
        r = aioredis.Redis.from_url(redis_url)
        try:
            async with running(cfg) as a, running(cfg) as b:
                p = Probe(a, b, r, host, port, prefix, words)
                for layout in ("split", "together"):
                    out[layout] = await p.layout(layout, rooms, chats)
        finally:
            await r.aclose()
    return out


# 3. Redis --------------------------------------------------------------------------------------
def redis_benchmark(
    host: str, port: int, args: list[str], n: int, clients: int, pipeline: int, keyspace: int
) -> Result:
    cmd = ["redis-benchmark", "-h", host, "-p", str(port), "-n", str(n), "-c", str(clients)]
    cmd += ["-P", str(pipeline), "-r", str(keyspace), "--csv", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    rows = list(csv.DictReader(io.StringIO(done.stdout.strip())))
    row = rows[-1]
    return {k: float(row[k]) for k in ("rps", "avg_latency_ms", "p50_latency_ms", "p99_latency_ms")}


def commandstats(r: Any, name: str) -> tuple[int, int]:
    stat = r.info("commandstats").get(f"cmdstat_{name}", {})
    return int(stat.get("calls", 0)), int(stat.get("usec", 0))


def redis_run(
    r: Any,
    host: str,
    port: int,
    pid: int,
    label: str,
    args: list[str],
    *,
    seconds: float,
    clients: int,
    pipeline: int,
    keyspace: int,
    readers: Readers | None = None,
) -> Result:
    name = args[0].lower()
    calib = redis_benchmark(host, port, args, 20_000, clients, pipeline, keyspace)
    n = int(min(max(calib["rps"] * seconds, 20_000), 20_000_000))
    got0 = readers.total() if readers else 0
    calls0, usec0 = commandstats(r, name)
    cpu0 = proc_cpu(pid)
    with Window() as w:
        res = redis_benchmark(host, port, args, n, clients, pipeline, keyspace)
        cpu1 = proc_cpu(pid)
    calls1, usec1 = commandstats(r, name)
    subs = len(readers.procs) if readers else 0
    delivered = (readers.drain(got0 + n * subs) - got0) if readers else 0
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    out: Result = {
        "label": label,
        "command": args[0],
        "subscribers": subs,
        "clients": clients,
        "pipeline": pipeline,
        "requests": n,
        "rps": round(res["rps"]),
        "p50_ms": res["p50_latency_ms"],
        "p99_ms": res["p99_latency_ms"],
        "redis_cpu_pct": rnd(100 * cpu / w.wall) if cpu is not None else None,
        "redis_cpu_us_per_op": rnd(1e6 * cpu / n, 2) if cpu else None,
        "ops_per_redis_cpu_second": round(n / cpu) if cpu else None,
        "commandstats_usec_per_call": rnd((usec1 - usec0) / max(calls1 - calls0, 1), 2),
        "delivered": delivered,
        "delivered_per_op": rnd(delivered / n, 3),
        "subscriber_dropped": readers.any_lost() if readers else False,
        "machine_busy_pct": rnd(w.busy_pct),
    }
    say(
        f"redis {label:34} {out['rps']:>9,} /s  redis CPU {out['redis_cpu_pct']}%  "
        f"{out['redis_cpu_us_per_op']} us/op -> {out['ops_per_redis_cpu_second']:,} per "
        f"Redis CPU-s  delivered/op {out['delivered_per_op']}  machine {out['machine_busy_pct']}%"
    )
    return out


async def product_allocate(url: str, prefix: str, seconds: float, workers: int) -> Result:
    """``RedisBroker.allocate_seq`` as the hub calls it (with a seed), from one process."""
    from rooms.broker.redis import RedisBroker

    async def seed() -> int:
        return 0

    count = 0
    async with RedisBroker(url, prefix=prefix) as broker:
        loop = asyncio.get_running_loop()

        async def warm(w: int) -> None:  # a session's first allocation seeds it (2 calls)
            for j in range(16):
                await broker.allocate_seq(f"s{w}-{j}", None, 0, seed)

        async def worker(w: int) -> None:
            nonlocal count
            i = 0
            while loop.time() < stop:
                await broker.allocate_seq(f"s{w}-{i % 16}", f"{w}\x00{i}", 0, seed)
                i += 1
                count += 1

        async def evalsha_calls() -> int:
            stats = await broker.redis.info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        await asyncio.gather(*(warm(w) for w in range(workers)))
        calls0 = await evalsha_calls()
        stop = loop.time() + seconds
        with Window() as win:
            await asyncio.gather(*(worker(w) for w in range(workers)))
        calls = await evalsha_calls() - calls0  # the whole Redis's: others' calls too
    return {
        "workers": workers,
        "allocations": count,
        "per_second": round(count / win.wall),
        "client_cpu_us_per_allocation": rnd(1e6 * win.cpu / max(count, 1)),
        "client_cpu_pct": rnd(100 * win.cpu / win.wall),
        "machine_busy_pct": rnd(win.busy_pct),
        "evalsha_per_allocation": rnd(calls / max(count, 1), 3),
    }


def redis_section(url: str, prefix: str, payload: int, seconds: float) -> Result:
    import redis

    from rooms.broker.redis import ALLOCATE_SEQ, SEQ_TTL_MS

    host, port = loopback(url, 6379)
    r = redis.Redis.from_url(url)
    server = r.info("server")
    pid = int(server["process_id"])
    out: Result = {
        "version": server["redis_version"],
        "io_threads_active": server.get("io_threads_active", 0),
        "cpu_readable": proc_cpu(pid) is not None,
        "payload_bytes": payload,
        "room_channels": ROOM_CHANNELS,
        "runs": [],
    }
    if shutil.which("redis-benchmark") is None:
        out["skipped"] = "redis-benchmark is not installed (apt-get install redis-tools)"
        say("redis: " + out["skipped"])
    else:
        channels = [f"{prefix}ch:room:{i:012d}" for i in range(ROOM_CHANNELS)]
        body = "x" * payload  # redis-benchmark takes no NUL in arguments: same size, printable
        channel = f"{prefix}ch:room:__rand_int__"
        plan = [
            ("PUBLISH", "SUBSCRIBE", 0, 8, 16),
            ("PUBLISH", "SUBSCRIBE", 1, 8, 16),
            ("PUBLISH", "SUBSCRIBE", 2, 8, 16),
            ("PUBLISH", "SUBSCRIBE", 2, 50, 1),
            ("SPUBLISH", "SSUBSCRIBE", 0, 8, 16),
            ("SPUBLISH", "SSUBSCRIBE", 1, 8, 16),
            ("SPUBLISH", "SSUBSCRIBE", 2, 8, 16),
        ]
        for command, sub, nsubs, clients, pipeline in plan:
            label = f"{command} {nsubs} sub(s) c{clients} P{pipeline}"
            readers = Readers(host, port, sub, channels, nsubs) if nsubs else None
            try:
                out["runs"].append(
                    redis_run(
                        r,
                        host,
                        port,
                        pid,
                        label,
                        [command, channel, body],
                        seconds=seconds,
                        clients=clients,
                        pipeline=pipeline,
                        keyspace=ROOM_CHANNELS,
                        readers=readers,
                    )
                )
            except subprocess.CalledProcessError as exc:
                out["runs"].append({"label": label, "error": (exc.stdout + exc.stderr)[-300:]})
                say(f"redis {label}: failed: {(exc.stdout + exc.stderr)[-200:]}")
            finally:
                if readers:
                    readers.close()
        # a simple command, one per round trip: what a sweep sends (HGET claims, EXISTS node)
        hget = ["HGET", f"{prefix}claims:{{__rand_int__}}", "0123456789abcdef0123456789abcdef"]
        out["runs"].append(
            redis_run(
                r,
                host,
                port,
                pid,
                "HGET (a sweep's call) c50 P1",
                hget,
                seconds=seconds,
                clients=50,
                pipeline=1,
                keyspace=10_000,
            )
        )
        # the product's seq script, loaded by redis-py as the broker registers it
        sha = r.script_load(ALLOCATE_SEQ)
        assert sha == r.register_script(ALLOCATE_SEQ).sha
        tag = "{__rand_int__}"
        args = ["EVALSHA", sha, "3", f"{prefix}seq:{tag}", f"{prefix}seqkeys:{tag}"]
        args += [f"{prefix}seqkeys-old:{tag}", "0", str(SEQ_TTL_MS), "0", "256"]
        args += ["0123456789abcdef0123456789abcdef-__rand_int__"]  # a chat's retry key
        for clients, pipeline in ((8, 16), (50, 1)):
            out["runs"].append(
                redis_run(
                    r,
                    host,
                    port,
                    pid,
                    f"EVALSHA seq script c{clients} P{pipeline}",
                    args,
                    seconds=seconds,
                    clients=clients,
                    pipeline=pipeline,
                    keyspace=10_000,
                )
            )
    product = asyncio.run(product_allocate(url, prefix + "p:", seconds, workers=64))
    out["product_allocate_seq"] = product
    say(
        f"redis RedisBroker.allocate_seq, 64 tasks, one process: {product['per_second']:,}/s, "
        f"{product['client_cpu_us_per_allocation']} us client CPU each "
        f"({product['evalsha_per_allocation']} EVALSHA each)"
    )
    r.close()
    return out


# 4. PostgreSQL ---------------------------------------------------------------------------------
async def backend_cpu(admin: Any, app: str) -> dict[int, float]:
    pids = [row[0] for row in await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
    )]  # fmt: skip
    return {p: c for p in pids if (c := proc_cpu(p)) is not None}


async def pg_section(base: str, seconds: float, texts: list[str]) -> Result:
    import asyncpg
    import pycrdt

    from persistence.store import Store, StoredEvent, StoredNotes, WriteOp
    from rooms.room import encode_packed

    loopback(base, 5432)
    admin = await asyncpg.connect(base, timeout=10)
    names = ["server_version", "fsync", "synchronous_commit", "wal_sync_method", "commit_delay"]
    names += ["full_page_writes", "shared_buffers", "max_connections"]
    out: Result = {"settings": {n: await admin.fetchval(f"SHOW {n}") for n in names}, "runs": []}
    app = f"capbench-{uuid.uuid4().hex[:8]}"
    async with pg_schema(base, app) as (url, schema):
        async with Store(url) as store:
            now = time.time()
            sessions: list[tuple[str, str]] = []
            for _ in range(SESSIONS):
                pair = await store.create_pair("Ada", "Grace", now)
                sessions.append(((await store.start_session(pair.id, now)).id, pair.mentor_id))
            seqs = dict.fromkeys((s for s, _ in sessions), 0)
            k = 0

            doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
            doc.get("notes", type=pycrdt.Text).insert(0, "next steps")
            update = doc.get_update()  # a few words typed: what one notes frame carries

            def notes(size: int) -> list[WriteOp]:
                nonlocal k
                k += size
                return [StoredNotes(sessions[(k + i) % SESSIONS][0], update) for i in range(size)]

            def batch(size: int) -> list[WriteOp]:
                nonlocal k
                ops: list[WriteOp] = []
                for _ in range(size):
                    sid, user = sessions[k % SESSIONS]
                    text = texts[k % len(texts)]
                    k += 1
                    seqs[sid] += 1
                    seq, cid = seqs[sid], uuid.uuid4().hex
                    frame = {"t": "chat", "seq": seq, "id": cid, "from": user, "text": text}
                    body = encode_packed({**frame, "ts": now})
                    ops.append(StoredEvent(sid, seq, "chat", user, cid, now, body))
                return ops

            for _ in range(20):  # warm: the pool's connection, statement caches, pair cache
                await store.write(batch(10))

            async def run(label: str, size: int, writers: int, make: Any = batch) -> Result:
                lsn0 = await admin.fetchval("SELECT pg_current_wal_lsn()")
                back0 = await backend_cpu(admin, app)
                commits = 0
                stop = time.perf_counter() + seconds

                async def writer() -> None:
                    nonlocal commits
                    while time.perf_counter() < stop:
                        await store.write(make(size))
                        commits += 1

                with Window() as w:
                    await asyncio.gather(*(writer() for _ in range(writers)))
                back1 = await backend_cpu(admin, app)
                wal = await admin.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn0)
                backend = sum(c - back0.get(p, 0.0) for p, c in back1.items())
                chats = commits * size
                res: Result = {
                    "label": label,
                    "batch": size,
                    "writers": writers,
                    "commits_per_s": round(commits / w.wall),
                    "chats_per_s": round(chats / w.wall),
                    "ms_per_commit": rnd(1000 * w.wall * writers / max(commits, 1), 2),
                    "client_cpu_us_per_chat": rnd(1e6 * w.cpu / max(chats, 1)),
                    "client_cpu_pct": rnd(100 * w.cpu / w.wall),
                    "pg_backend_cpu_us_per_chat": rnd(1e6 * backend / max(chats, 1)),
                    "pg_backend_cpu_pct": rnd(100 * backend / w.wall),
                    "wal_bytes_per_chat": round(float(wal) / max(chats, 1)),
                    "machine_busy_pct": rnd(w.busy_pct),
                }
                say(
                    f"pg    {label:30} {res['commits_per_s']:>6,} commits/s "
                    f"{res['chats_per_s']:>7,} chats/s  {res['ms_per_commit']} ms/commit  "
                    f"client {res['client_cpu_us_per_chat']} us/chat ({res['client_cpu_pct']}%)  "
                    f"backend {res['pg_backend_cpu_us_per_chat']} us/chat  "
                    f"WAL {res['wal_bytes_per_chat']} B/chat  machine {res['machine_busy_pct']}%"
                )
                return res

            for size in (1, 10, 50, 200):
                out["runs"].append(await run(f"Store.write, batch {size}", size, 1))
            for size in (10, 50):
                out["runs"].append(await run(f"Store.write, 4 writers x {size}", size, 4))
            out["runs"].append(await run("Store.write, notes updates x 50", 50, 1, notes))

            async with store.engine.connect() as conn:
                from sqlalchemy import text as sql

                sizes = {}
                for table in ("events", "search_entries", "notes_updates"):
                    count = (await conn.execute(sql(f"SELECT count(*) FROM {table}"))).scalar_one()
                    size = (
                        await conn.execute(sql(f"SELECT pg_total_relation_size('{table}')"))
                    ).scalar_one()
                    sizes[table] = {"rows": int(count), "bytes": int(size)}
            chats = sizes["events"]["rows"]
            out["disk"] = {
                **sizes,
                "bytes_per_chat": round(
                    (sizes["events"]["bytes"] + sizes["search_entries"]["bytes"]) / max(chats, 1)
                ),
                "search_rows_per_chat": round(sizes["search_entries"]["rows"] / max(chats, 1), 3),
                "bytes_per_notes_row": round(
                    sizes["notes_updates"]["bytes"] / max(sizes["notes_updates"]["rows"], 1)
                ),
                "note": "tables with their indexes (events: key, unique, by kind; search: GIN "
                "tsvector and two b-trees), fresh tables, no vacuum",
            }
            say(f"pg    on disk: {out['disk']['bytes_per_chat']} bytes per chat ({sizes})")

        # the floor: one raw asyncpg connection, one row per commit, no SQLAlchemy
        raw_app = app + "-raw"
        settings = {"search_path": schema, "application_name": raw_app}
        raw = await asyncpg.connect(base, server_settings=settings)
        try:
            await raw.execute(
                "CREATE TABLE raw_events (session_id text, seq int, body bytea, "
                "PRIMARY KEY (session_id, seq))"
            )
            body = b"x" * 200
            for size in (1, 50):
                n = commits = 0
                back0 = await backend_cpu(admin, raw_app)
                stop = time.perf_counter() + seconds
                with Window() as w:
                    while time.perf_counter() < stop:
                        rows = [(f"s{size}", n + i, body) for i in range(size)]
                        n += size
                        if size == 1:
                            await raw.execute(
                                "INSERT INTO raw_events VALUES ($1, $2, $3)", *rows[0]
                            )
                        else:
                            async with raw.transaction():
                                await raw.executemany(
                                    "INSERT INTO raw_events VALUES ($1, $2, $3)", rows
                                )
                        commits += 1
                back1 = await backend_cpu(admin, raw_app)
                backend = sum(c - back0.get(p, 0.0) for p, c in back1.items())
                res = {
                    "label": f"raw asyncpg, batch {size}",
                    "batch": size,
                    "writers": 1,
                    "commits_per_s": round(commits / w.wall),
                    "chats_per_s": round(n / w.wall),
                    "ms_per_commit": rnd(1000 * w.wall / max(commits, 1), 2),
                    "client_cpu_us_per_chat": rnd(1e6 * w.cpu / max(n, 1)),
                    "pg_backend_cpu_us_per_chat": rnd(1e6 * backend / max(n, 1)),
                    "machine_busy_pct": rnd(w.busy_pct),
                }
                out["runs"].append(res)
                say(
                    f"pg    {res['label']:30} {res['commits_per_s']:>6,} commits/s "
                    f"{res['chats_per_s']:>7,} rows/s  {res['ms_per_commit']} ms/commit  "
                    f"backend {res['pg_backend_cpu_us_per_chat']} us/row"
                )
        finally:
            await raw.close()
    await admin.close()
    return out


# main ------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="each measuring window")
    ap.add_argument("--skip-probe", action="store_true")
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--probe-rooms", type=int, default=20)
    ap.add_argument("--probe-chats", type=int, default=10, help="chats per member in the probe")
    ap.add_argument("--out", type=Path, help="JSON file (default bench/results/capacity-*.json)")
    args = ap.parse_args()

    import random

    from bench.words import Words, rare_words

    started = datetime.now(UTC)
    words = Words(random.Random(7), rare_words(200))
    texts = [words.sentence() for _ in range(2000)]
    prefix = f"capbench-{os.getpid()}-{uuid.uuid4().hex[:6]}:"
    result: Result = {
        "command": " ".join(["python -m bench.capacity", *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "note": "shared 2-core VM: other sessions' work may run at the same time",
        },
        "seconds": args.seconds,
        "redis_prefix": prefix,
    }
    env = envelope(texts)
    result["envelope"] = env
    say(
        f"envelope: S2 chat {env['s2_chat_envelope_bytes']} B published, "
        f"{env['s2_chat_body_bytes']} B stored; a 3-26 word sentence "
        f"{env['sentence_envelope_bytes_mean']} B published, {env['sentence_body_bytes_mean']} B "
        f"stored; typing {env['typing_envelope_bytes']} B"
    )
    try:
        if not args.skip_probe:
            result["probe"] = asyncio.run(
                probe(REDIS_URL, PG_URL, prefix + "probe:", args.probe_rooms, args.probe_chats)
            )
        if not args.skip_redis:
            payload = round(env["sentence_envelope_bytes_mean"])
            result["redis"] = redis_section(REDIS_URL, prefix, payload, args.seconds)
        if not args.skip_pg:
            result["postgresql"] = asyncio.run(pg_section(PG_URL, args.seconds, texts))
    finally:
        if not (args.skip_probe and args.skip_redis):
            result["redis_keys_removed"] = clean_redis(REDIS_URL, prefix)
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    path = args.out or RESULTS / f"capacity-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"written: {path}")


if __name__ == "__main__":
    main()
