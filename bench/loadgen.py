"""The load generator: R rooms x 2 members over WebSocket, at a fixed rate or saturating.

One asyncio loop (uvloop when installed) holds every connection. A protocol adapter says how to
set rooms up, connect, send a chat and read what comes back:

- :class:`MenteoAdapter`: protocol v1 (``menteo.v1.msgpack``); pairs and tokens through the
  admin API (``POST /api/pairs``, ``POST /api/pairs/{id}/tokens``). With ``bare=True`` it
  drives ``bench.peers.bare_ws`` instead (no admin API: the token is the user id).
- :class:`SocketIOAdapter`: Engine.IO 4 / Socket.IO 5 over the websocket transport, spoken
  directly (``40{auth}`` to join, ``42<ack>["chat",{...}]`` to send, ``43<ack>[...]`` back).

Each chat carries its number as ``id`` and its send time (``perf_counter_ns``) at the head of
its text, so the other member measures fan-out latency without any shared table; the sender
keeps only its outstanding acks. Every member must receive each of the other's chats exactly
once: after the drain period, ``lost`` counts chats never received by the other member and
``dup`` chats received more than once.

Timeline: connect every member (timed) -> sending starts (rate mode: each client at a random
phase within its period) -> ``warmup`` -> ``seconds`` of measurement (latency samples are the
chats sent in this window; delivered/s counts deliveries received in it; server CPU and RSS are
read from /proc at both ends) -> sending stops -> drain until every chat is acked and delivered
(bounded) -> count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.proc import MenteoServer, ProcSample, machine_cpu, memory_kinds, sample

OTHER, PEER_CHAT, ECHO, ACK, PING, ERROR = range(6)
PAD = "x" * 40


@dataclass(eq=False)
class Member:
    room: int
    role: int
    url: str = ""
    uid: str = ""
    token: str = ""
    pair_id: str = ""
    ws: ClientConnection | None = None
    peer: Member | None = None
    sent: int = 0
    acked: int = 0
    outstanding: dict[int, int] = field(default_factory=dict)  # n -> send time (ns)
    seen: set[int] = field(default_factory=set)  # n of the peer's chats received
    dups: int = 0
    echoes: int = 0
    window: asyncio.Semaphore | None = None
    close_code: int | None = None


class Adapter:
    name = "adapter"
    subprotocols: list[str] | None = None

    async def prepare(self, members: Sequence[tuple[Member, Member]], nodes: Sequence[Any]) -> None:
        raise NotImplementedError

    async def handshake(self, m: Member, ws: ClientConnection) -> None:
        raise NotImplementedError

    def path(self, m: Member) -> str:
        raise NotImplementedError

    def chat(self, m: Member, n: int, t_ns: int) -> bytes | str:
        raise NotImplementedError

    def parse(self, m: Member, data: bytes | str) -> tuple[int, int, int]:
        """(kind, n, send time ns) of a received frame."""
        raise NotImplementedError

    def pong(self) -> bytes | str:
        raise NotImplementedError


class MenteoAdapter(Adapter):
    name = "menteo"
    subprotocols = ["menteo.v1.msgpack"]

    def __init__(self, bare: bool = False, setup_workers: int = 8) -> None:
        self.bare = bare
        self.setup_workers = setup_workers
        if bare:
            self.name = "bare"

    async def prepare(self, members: Sequence[tuple[Member, Member]], nodes: Sequence[Any]) -> None:
        if self.bare:
            for a, b in members:
                for m in (a, b):
                    m.pair_id, m.uid = f"r{m.room}", f"u{m.room}-{m.role}"
                    m.token = m.uid
            return
        admin: MenteoServer = nodes[0]

        def make(i: int) -> tuple[str, str, str, str, str]:
            st, body = admin.request(
                "POST", "/api/pairs", {"mentor": {"name": f"m{i}"}, "mentee": {"name": f"e{i}"}}
            )
            if st != 201:
                raise RuntimeError(f"POST /api/pairs: {st} {body}")
            out = [body["pair_id"]]
            for role in ("mentor", "mentee"):
                uid = body[role]["id"]
                st, tok = admin.request(
                    "POST", f"/api/pairs/{body['pair_id']}/tokens", {"user_id": uid}
                )
                if st != 201:
                    raise RuntimeError(f"POST tokens: {st} {tok}")
                out += [uid, tok["token"]]
            return out[0], out[1], out[2], out[3], out[4]

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(self.setup_workers) as pool:
            made = await asyncio.gather(
                *(loop.run_in_executor(pool, make, i) for i in range(len(members)))
            )
        for (a, b), (pid, ua, ta, ub, tb) in zip(members, made, strict=True):
            a.pair_id = b.pair_id = pid
            a.uid, a.token, b.uid, b.token = ua, ta, ub, tb

    def path(self, m: Member) -> str:
        return f"/ws/rooms/{m.pair_id}"

    async def handshake(self, m: Member, ws: ClientConnection) -> None:
        await ws.send(msgpack.packb({"t": "hello", "token": m.token}, use_bin_type=True))
        frame = msgpack.unpackb(await ws.recv(), raw=False)
        if frame.get("t") != "welcome":
            raise RuntimeError(f"expected welcome, got {frame}")

    def chat(self, m: Member, n: int, t_ns: int) -> bytes | str:
        return msgpack.packb({"t": "chat", "id": str(n), "text": f"{t_ns} {PAD}"})

    def parse(self, m: Member, data: bytes | str) -> tuple[int, int, int]:
        f = msgpack.unpackb(data, raw=False)
        t = f.get("t")
        if t == "chat":
            text = f["text"]
            kind = ECHO if f["from"] == m.uid else PEER_CHAT
            return kind, int(f["id"]), int(text[: text.index(" ")])
        if t == "ack":
            return ACK, int(f["id"]), 0
        if t == "error":
            return ERROR, 0, 0
        return OTHER, 0, 0


class SocketIOAdapter(Adapter):
    """Socket.IO 5 over Engine.IO 4's websocket transport, without the polling handshake."""

    name = "socketio"

    async def prepare(self, members: Sequence[tuple[Member, Member]], nodes: Sequence[Any]) -> None:
        for a, b in members:
            for m in (a, b):
                m.pair_id, m.uid = f"r{m.room}", f"u{m.room}-{m.role}"

    def path(self, m: Member) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    async def handshake(self, m: Member, ws: ClientConnection) -> None:
        opened = await ws.recv()
        if not isinstance(opened, str) or not opened.startswith("0"):
            raise RuntimeError(f"expected an Engine.IO open packet, got {opened!r}")
        await ws.send("40" + json.dumps({"room": m.pair_id, "user": m.uid}))
        for _ in range(10):
            data = await ws.recv()
            if data == "2":
                await ws.send("3")
            elif isinstance(data, str) and data.startswith("40"):
                return
            else:
                raise RuntimeError(f"socket.io connect refused: {data!r}")
        raise RuntimeError("no socket.io connect answer")

    def chat(self, m: Member, n: int, t_ns: int) -> bytes | str:
        return f'42{n}["chat",{{"id":{n},"text":"{t_ns} {PAD}"}}]'

    def parse(self, m: Member, data: bytes | str) -> tuple[int, int, int]:
        assert isinstance(data, str)
        if data.startswith("42"):
            event = json.loads(data[2:])
            if event[0] == "chat":
                text = event[1]["text"]
                return PEER_CHAT, int(event[1]["id"]), int(text[: text.index(" ")])
            return OTHER, 0, 0
        if data.startswith("43"):
            return ACK, int(data[2 : data.index("[")]), 0
        if data == "2":
            return PING, 0, 0
        if data.startswith("44"):
            return ERROR, 0, 0
        return OTHER, 0, 0

    def pong(self) -> bytes | str:
        return "3"


def percentiles(values: list[float], scale: float = 1.0) -> dict[str, float | int | None]:
    """p50/p95/p99/max of ``values`` (times ``scale``), and how many."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * scale, 3)

    return {"n": len(s), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


def usage(
    start: tuple[list[ProcSample], float, tuple[float, float]],
    end: tuple[list[ProcSample], float, tuple[float, float]],
) -> dict[str, Any]:
    """Server CPU % and RSS over a window, from (server samples, generator CPU seconds, machine
    CPU) at its two ends; also shared by the Node.js generator's scenarios (bench/run.py)."""
    (s0, g0, m0), (s1, g1, m1) = start, end
    wall = max(1e-9, s1[0].wall - s0[0].wall) if s0 else 1.0
    per_node = [
        {"cpu_pct": round(100 * (b.cpu - a.cpu) / wall, 1), "rss_mib": round(b.rss / 2**20, 1)}
        for a, b in zip(s0, s1, strict=True)
    ]
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    return {
        "server_cpu_pct": round(sum(n["cpu_pct"] for n in per_node), 1),
        "server_rss_mib": round(sum(n["rss_mib"] for n in per_node), 1),
        "server_nodes": per_node,
        "gen_cpu_pct": round(100 * (g1 - g0) / wall, 1),
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
    }


@dataclass
class Load:
    """What to run: rooms, where, how fast, for how long."""

    rooms: int
    mode: str = "rate"  # "rate" | "saturate" | "idle"
    rate: float = 1.0  # chats per second per sending client (rate mode)
    window: int = 10  # outstanding acks per sending client (saturate mode)
    senders: int = 2  # members per room that send (1 or 2)
    warmup: float = 5.0
    seconds: float = 20.0
    drain: float = 10.0
    connect_concurrency: int = 100
    seed: int = 1
    deflate: bool = False  # clients offer permessage-deflate, as browsers do


class LoadGen:
    def __init__(
        self,
        adapter: Adapter,
        nodes: Sequence[Any],
        load: Load,
        server_pids: Sequence[int],
        on_measure_start: Callable[[], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self.nodes = list(nodes)
        self.load = load
        self.pids = list(server_pids)
        self.on_measure_start = on_measure_start
        self.rng = random.Random(load.seed)
        self.pairs: list[tuple[Member, Member]] = []
        self.members: list[Member] = []
        self.fanout: list[float] = []  # seconds
        # the same, by interval of the window (a soak's minutes): is the tail where it was?
        self.fanout_by_interval: dict[int, list[float]] = {}
        self.interval_ns = 60 * 10**9
        self.acklat: list[float] = []
        self.lag: list[float] = []  # how late the generator sent, rate mode
        self.connect_lat: list[float] = []
        self.delivered_in_window = 0
        self.acks_in_window = 0
        self.sent_in_window = 0
        self.errors = 0
        self.connect_failures: list[str] = []
        self.closed_early = 0
        self.measuring = False
        self.w0 = self.w1 = 0  # measuring window, perf_counter_ns
        self.stopping = False
        self.total_sent = 0
        self.total_acked = 0
        self.total_delivered = 0
        self.total_echoes = 0
        self.expect_echo = isinstance(adapter, MenteoAdapter)

    # setup --------------------------------------------------------------------------------
    async def prepare(self) -> float:
        t0 = time.monotonic()
        for i in range(self.load.rooms):
            a, b = Member(i, 0), Member(i, 1)
            a.peer, b.peer = b, a
            self.pairs.append((a, b))
            self.members += [a, b]
        await self.adapter.prepare(self.pairs, self.nodes)
        n = len(self.nodes)
        for m in self.members:
            m.url = self.nodes[(m.room + m.role) % n].ws + self.adapter.path(m)
            if self.load.mode == "saturate":
                m.window = asyncio.Semaphore(self.load.window)
        return time.monotonic() - t0

    async def _open(self, m: Member, gate: asyncio.Semaphore) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                ws = await connect(
                    m.url,
                    subprotocols=self.adapter.subprotocols,  # type: ignore[arg-type]
                    compression="deflate" if self.load.deflate else None,
                    max_size=None,
                    ping_interval=None,
                    open_timeout=60,
                    close_timeout=2,
                )
                await asyncio.wait_for(self.adapter.handshake(m, ws), 60)
            except Exception as exc:
                self.connect_failures.append(repr(exc)[:200])
                return
            self.connect_lat.append(time.perf_counter() - t0)
            m.ws = ws

    async def connect_all(self) -> float:
        gate = asyncio.Semaphore(self.load.connect_concurrency)
        t0 = time.monotonic()
        await asyncio.gather(*(self._open(m, gate) for m in self.members))
        return time.monotonic() - t0

    # traffic ------------------------------------------------------------------------------
    async def _reader(self, m: Member) -> None:
        ws = m.ws
        assert ws is not None
        parse = self.adapter.parse
        now = time.perf_counter_ns
        try:
            async for data in ws:
                kind, n, t_ns = parse(m, data)
                if kind == PEER_CHAT:
                    t = now()
                    if n in m.seen:
                        m.dups += 1
                        continue
                    m.seen.add(n)
                    self.total_delivered += 1
                    if self.w0 <= t_ns < self.w1:
                        lat = (t - t_ns) / 1e9
                        self.fanout.append(lat)
                        self.fanout_by_interval.setdefault(
                            (t_ns - self.w0) // self.interval_ns, []
                        ).append(lat)
                    if self.w0 <= t < self.w1:
                        self.delivered_in_window += 1
                elif kind == ACK:
                    t = now()
                    t_sent = m.outstanding.pop(n, None)
                    if t_sent is None:
                        continue
                    m.acked += 1
                    self.total_acked += 1
                    if m.window is not None:
                        m.window.release()
                    if self.w0 <= t_sent < self.w1:
                        self.acklat.append((t - t_sent) / 1e9)
                    if self.w0 <= t < self.w1:
                        self.acks_in_window += 1
                elif kind == ECHO:
                    m.echoes += 1
                    self.total_echoes += 1
                elif kind == PING:
                    await ws.send(self.adapter.pong())
                elif kind == ERROR:
                    self.errors += 1
        except ConnectionClosed:
            pass
        finally:
            self._reader_done(m, ws)

    def _reader_done(self, m: Member, ws: ClientConnection) -> None:
        m.close_code = ws.close_code if ws.close_code is not None else -1
        if not self.stopping:
            self.closed_early += 1

    async def _send(self, m: Member) -> None:
        assert m.ws is not None
        n = m.sent
        m.sent += 1
        self.total_sent += 1
        t = time.perf_counter_ns()
        m.outstanding[n] = t
        if self.w0 <= t < self.w1:
            self.sent_in_window += 1
        await m.ws.send(self.adapter.chat(m, n, t))

    async def _rate_sender(self, m: Member, start: float, stop: float) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.load.rate
        due = start + self.rng.random() * period
        while due < stop:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.measuring:
                self.lag.append(loop.time() - due)
            await self._send(m)
            due += period

    async def _saturating_sender(self, m: Member, stop: float) -> None:
        loop = asyncio.get_running_loop()
        assert m.window is not None
        while True:
            left = stop - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(m.window.acquire(), left)
            except TimeoutError:
                return
            if loop.time() >= stop:
                return
            await self._send(m)

    async def _sender(self, m: Member, start: float, stop: float) -> None:
        try:
            if self.load.mode == "rate":
                await self._rate_sender(m, start, stop)
            else:
                await self._saturating_sender(m, stop)
        except ConnectionClosed:
            pass

    def _settled(self) -> bool:
        if self.total_acked < self.total_sent or self.total_delivered < self.total_sent:
            return False
        return not self.expect_echo or self.total_echoes >= self.total_sent

    async def run(self) -> dict[str, Any]:
        """Connect, send, measure, drain; the figures."""
        prep = await self.prepare()
        before = [sample(p) for p in self.pids]
        connect_s = await self.connect_all()
        live = [m for m in self.members if m.ws is not None]
        readers = [asyncio.create_task(self._reader(m)) for m in live]
        loop = asyncio.get_running_loop()
        load = self.load
        result: dict[str, Any] = {
            "rooms": load.rooms,
            "connections": len(self.members),
            "connected": len(live),
            "connect_failures": len(self.connect_failures),
            "connect_failure_examples": self.connect_failures[:3],
            "setup_s": round(prep, 2),
            "connect_s": round(connect_s, 2),
            "connect_ms": percentiles(self.connect_lat, 1000),
        }
        try:
            if load.mode == "idle":
                result.update(await self._idle(before))
            else:
                result.update(await self._traffic(live, loop))
        finally:
            self.stopping = True
            await self._close_all(live)
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        return result

    async def _close_all(self, live: list[Member], timeout: float = 10.0) -> None:
        """Close every connection with a close handshake (bounded), then drop what is left."""
        gate = asyncio.Semaphore(500)

        async def close(ws: ClientConnection) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await ws.close()

        sockets = [m.ws for m in live if m.ws is not None]
        if sockets:
            await asyncio.wait([asyncio.create_task(close(ws)) for ws in sockets], timeout=timeout)
        for ws in sockets:
            ws.transport.abort()

    async def _window(self) -> tuple[list[ProcSample], float, tuple[float, float]]:
        return [sample(p) for p in self.pids], time.process_time(), machine_cpu()

    def _usage(
        self,
        start: tuple[list[ProcSample], float, tuple[float, float]],
        end: tuple[list[ProcSample], float, tuple[float, float]],
    ) -> dict[str, Any]:
        return usage(start, end)

    async def _idle(self, before: list[ProcSample]) -> dict[str, Any]:
        await asyncio.sleep(self.load.warmup)  # let joins settle (presence writes, sessions)
        start = await self._window()
        await asyncio.sleep(self.load.seconds)
        end = await self._window()
        held = sum(1 for m in self.members if m.ws is not None and m.close_code is None)
        grown = sum(b.rss - a.rss for a, b in zip(before, end[0], strict=True))
        usage = self._usage(start, end)
        return {
            **usage,
            "held": held,
            "closed_early": self.closed_early,
            "server_rss_before_mib": round(sum(s.rss for s in before) / 2**20, 1),
            "rss_per_conn_kib": round(grown / max(1, held) / 1024, 2),
        }

    async def _traffic(self, live: list[Member], loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        load = self.load
        start = loop.time() + 0.2
        stop = start + load.warmup + load.seconds
        senders_of = [m for m in live if m.role < load.senders]
        # perf_counter_ns and loop.time() both run on CLOCK_MONOTONIC; the window is in ns.
        offset_ns = time.perf_counter_ns() - int(loop.time() * 1e9)
        self.w0 = int((start + load.warmup) * 1e9) + offset_ns
        self.w1 = int(stop * 1e9) + offset_ns
        self.interval_ns = int(min(60.0, load.seconds / 3) * 1e9)
        senders = [asyncio.create_task(self._sender(m, start, stop)) for m in senders_of]
        await asyncio.sleep(max(0.0, start + load.warmup - loop.time()))
        self.measuring = True
        if self.on_measure_start is not None:
            self.on_measure_start()
        w_start = await self._window()
        kinds_start = [memory_kinds(p) for p in self.pids]
        timeline, cpu_points = await self._rss_timeline(stop, loop)
        w_end = await self._window()
        kinds_end = [memory_kinds(p) for p in self.pids]
        self.measuring = False
        measured = (w_end[0][0].wall - w_start[0][0].wall) if self.pids else load.seconds
        _, pending = await asyncio.wait(senders, timeout=5)
        for task in pending:
            task.cancel()
        drain_start = loop.time()
        while not self._settled() and loop.time() - drain_start < load.drain:
            if self.closed_early and all(m.close_code is not None for m in live):
                break
            await asyncio.sleep(0.05)
        drain_s = loop.time() - drain_start
        sent = sum(m.sent for m in self.members)
        unique = sum(len(m.seen) for m in self.members)
        result = {
            **self._usage(w_start, w_end),
            "measured_s": round(measured, 2),
            "drain_s": round(drain_s, 2),
            "sent": sent,
            "acked": sum(m.acked for m in self.members),
            "delivered": unique,
            "lost": sent - unique,
            "dup": sum(m.dups for m in self.members),
            "unacked": sum(len(m.outstanding) for m in self.members),
            "echo_missing": (sent - self.total_echoes) if self.expect_echo else None,
            "errors": self.errors,
            "closed_early": self.closed_early,
            "sent_per_s": round(self.sent_in_window / measured, 1),
            "delivered_per_s": round(self.delivered_in_window / measured, 1),
            "acks_per_s": round(self.acks_in_window / measured, 1),
            "fanout_ms": percentiles(self.fanout, 1000),
            "ack_ms": percentiles(self.acklat, 1000),
            "send_lag_ms": percentiles(self.lag, 1000),
            "rss_timeline_mib": timeline,
            "intervals": self._intervals(timeline, cpu_points),
            "rss_kinds_mib": {"start": kinds_start, "end": kinds_end},
        }
        if len(timeline) >= 2:  # memory after warm-up: flat means the rooms hold bounded state
            first, last = timeline[0][1], timeline[-1][1]
            result["rss_growth_pct"] = round(100 * (last - first) / max(first, 1e-9), 1)
        return result

    async def _rss_timeline(
        self, stop: float, loop: asyncio.AbstractEventLoop
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Server RSS (MiB, all nodes) about 30 times over the window, until ``stop``; and the
        servers' CPU seconds at the same moments."""
        every = max(1.0, self.load.seconds / 30)
        t0 = loop.time()
        points: list[tuple[float, float]] = []
        cpu: list[tuple[float, float]] = []
        while True:
            if self.pids:
                sampled = [sample(p) for p in self.pids]
                t = round(loop.time() - t0, 1)
                points.append((t, round(sum(x.rss for x in sampled) / 2**20, 1)))
                cpu.append((t, sum(x.cpu for x in sampled)))
            left = stop - loop.time()
            if left <= 0:
                return points, cpu
            await asyncio.sleep(min(every, left))

    def _intervals(
        self, timeline: list[tuple[float, float]], cpu: list[tuple[float, float]]
    ) -> list[dict[str, Any]]:
        """The window cut into intervals (a minute each in a soak, a third of the window in a
        short run): server CPU %, fan-out latency and RSS in each, to see whether they drift."""
        step = self.interval_ns / 1e9
        out: list[dict[str, Any]] = []
        for k in range(max(1, round(self.load.seconds / step))):
            lo, hi = k * step, (k + 1) * step
            inside = [(t, c) for t, c in cpu if lo - step / 10 <= t <= hi + step / 10]
            pct = None
            if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
                (ta, ca), (tb, cb) = inside[0], inside[-1]
                pct = round(100 * (cb - ca) / (tb - ta), 1)
            rss = [m for t, m in timeline if lo <= t <= hi]
            out.append(
                {
                    "t_s": round(hi, 1),
                    "seconds": round(step, 1),
                    "server_cpu_pct": pct,
                    "fanout_ms": percentiles(self.fanout_by_interval.get(k, []), 1000),
                    "server_rss_mib": rss[-1] if rss else None,
                }
            )
        return out


def loop_factory(uvloop: bool = True) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """uvloop's event loop when asked for and installed, else asyncio's; and its name."""
    if uvloop:
        with contextlib.suppress(ImportError):
            import uvloop as uv

            return uv.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"
