"""Run the benchmark scenarios, print a table, write JSON to bench/results/.

    python -m bench.run                      # every scenario of issue 5, full size (minutes)
    python -m bench.run --smoke              # a tiny version of each, seconds each
    python -m bench.run --scenarios S1,S4    # some of them
    python -m bench.run --scenarios S2 --rooms 100 --seconds 10     # smaller
    python -m bench.run --scenarios S5 --connections 1000
    python -m bench.run --profile S2         # py-spy record of the server during S2's window
    python -m bench.run --scenarios J1       # issue 9: search, journey, welcome over 1.1 M chats
    python -m bench.run --scenarios J1 --j1-db /tmp/j1.db   # keep J1's loaded file, reuse it
    python -m bench.run --scenarios S2,S2-node,S2-bare --rooms 1000   # beside Node.js Socket.IO
    python -m bench.run --scenarios S6 --rooms 100 --seconds 10   # issue 11: the notes path

Each scenario starts its server(s) fresh (rate limit off; SQLite in a temp folder, or Redis +
a fresh PostgreSQL schema for S3), drives them with ``bench.loadgen`` in this process on one
event loop (uvloop when installed), and stops them. The load generator and the servers share
the machine's cores: ``gen CPU%`` and ``machine busy%`` in the results say how much the
generator and everything else took. Redis: ``MENTEO_BENCH_REDIS_URL`` (default
redis://127.0.0.1:6379/0); PostgreSQL: ``MENTEO_BENCH_PG_URL`` (default
postgresql://postgres@127.0.0.1:5432/test). Scenarios whose service is missing are skipped.

S6 (``bench/notes_load.py``, issue 11) drives the notes path: both members of each room send
Yjs updates to the shared notes (pre-generated, 5/s each); the fan-out column shows the relay
latency to the other member, and after the drain every room's stored notes (its transcript) are
compared with what the generator's documents hold.

J1 (``bench/journey.py``) is of another kind: it loads a large SQLite file itself, then times
single requests (search, journey, welcome) through one server; its own table is printed as it
ends, and the harness's table gives one line for it.

S2-node and S4-node run the JavaScript peer (``bench/peers/node``: Socket.IO with its Redis
adapter) under a Node.js generator (``loadgen.js``, socket.io-client) in a child process, which
says on stderr when its measuring window opens and closes; the server's CPU and RSS are sampled
here then, as for the others. ``npm ci`` runs there when node_modules is missing or older than
its lock file; they are skipped without node and npm.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.loadgen import (
    Adapter,
    Load,
    LoadGen,
    MenteoAdapter,
    SocketIOAdapter,
    loop_factory,
    usage,
)
from bench.proc import (
    BareServer,
    MenteoServer,
    PeerServer,
    ProcSample,
    Server,
    git_state,
    machine_cpu,
    memory_kinds,
    raise_nofile,
    sample,
)
from bench.scenarios import FULL, Scenario, by_name, smoke

RESULTS = Path(__file__).resolve().parent / "results"
NODE_DIR = Path(__file__).resolve().parent / "peers" / "node"
NODE_PACKAGES = ("socket.io", "@socket.io/redis-adapter", "redis", "socket.io-client")
REDIS_URL = os.environ.get("MENTEO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("MENTEO_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Skip(Exception):
    """A scenario cannot run here (a service or package is missing)."""


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ).close()
        return True
    except OSError:
        return False


# services ----------------------------------------------------------------------------------
@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards; a database URL that works in it."""
    import asyncpg

    if not reachable(PG_URL, 5432):
        raise Skip(f"PostgreSQL is not reachable at {PG_URL}")
    name = f"menteo_bench_{os.getpid()}_{uuid.uuid4().hex[:10]}"

    def run(sql: str) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(PG_URL, timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    run(f'CREATE SCHEMA "{name}"')
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}search_path={name}"
    finally:
        with contextlib.suppress(Exception):
            run(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on Redis, its keys deleted afterwards."""
    if not reachable(REDIS_URL, 6379):
        raise Skip(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"menteo-bench-{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        from redis import Redis

        with contextlib.suppress(Exception):
            client = Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


# the Node.js peer --------------------------------------------------------------------------
def node_ready() -> str:
    """The ``node`` binary, once ``bench/peers/node/node_modules`` matches its lock file.

    Skips when node or npm is missing; runs ``npm ci`` there when node_modules is missing or
    older than package-lock.json (a stamp file, as the Makefile does for static/)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, b in (("node", node), ("npm", npm)) if b is None)
        raise Skip(f"{missing} not installed (the *-node scenarios need Node.js >= 18 and npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    major = re.match(r"v(\d+)", version.stdout.strip())
    if major is None or int(major.group(1)) < 18:
        raise Skip(f"Node.js >= 18 needed, found {version.stdout.strip() or version.stderr!r}")
    stamp = NODE_DIR / "node_modules" / ".installed"
    inputs = [NODE_DIR / "package.json", NODE_DIR / "package-lock.json"]
    if not stamp.exists() or stamp.stat().st_mtime < max(f.stat().st_mtime for f in inputs):
        print("   npm ci in bench/peers/node ...", flush=True)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"npm ci failed in {NODE_DIR}:\n{(done.stdout + done.stderr)[-2000:]}"
            )
        stamp.touch()
    return node


def node_versions(node: str) -> dict[str, str]:
    """Node.js and the npm packages the peer runs on, from node_modules."""
    out = {"node": subprocess.run([node, "--version"], capture_output=True, text=True).stdout}
    out["node"] = out["node"].strip()
    for pkg in NODE_PACKAGES:
        with contextlib.suppress(OSError, ValueError, KeyError):
            meta = json.loads((NODE_DIR / "node_modules" / pkg / "package.json").read_text())
            out[pkg] = meta["version"]
    return out


class NodeServer(Server):
    """The Node.js peer (``bench/peers/node/server.js``): Socket.IO + its Redis adapter."""

    name = "node-socketio"

    def __init__(self, workdir: Path, node: str, redis_url: str, channel: str) -> None:
        super().__init__(workdir)
        self.node = node
        self.redis_url = redis_url
        self.channel = channel

    def argv(self) -> list[str]:
        return [
            *(self.node, str(NODE_DIR / "server.js")),
            *("--port", str(self.port), "--redis", self.redis_url, "--channel", self.channel),
        ]


Window = tuple[list[ProcSample], float, tuple[float, float]]


async def drive_node(node: str, server: NodeServer, load: Load) -> dict[str, Any]:
    """Run ``loadgen.js`` against ``server``; sample the server (and the Node generator) when it
    says its measuring window opens and closes, as ``LoadGen`` does for its own window."""
    argv = [
        *(node, str(NODE_DIR / "loadgen.js"), "--url", server.http),
        *("--rooms", str(load.rooms), "--mode", load.mode, "--rate", str(load.rate)),
        *("--window", str(load.window), "--senders", str(load.senders)),
        *("--warmup", str(load.warmup), "--seconds", str(load.seconds), "--drain", str(load.drain)),
        *("--concurrency", str(load.connect_concurrency), "--seed", str(load.seed)),
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=NODE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=raise_nofile,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout = asyncio.create_task(proc.stdout.read())
    pids = [server.pid]

    def window() -> Window:
        return [sample(p) for p in pids], sample(proc.pid).cpu, machine_cpu()

    w_start: Window | None = None
    w_end: Window | None = None
    kinds: dict[str, list[dict[str, float]]] = {}
    timeline: list[tuple[float, float]] = []
    other: list[str] = []
    every = max(1.0, load.seconds / 30)
    t0 = 0.0
    loop = asyncio.get_running_loop()
    # connect (bounded in loadgen.js by twice its 60 s connect timeout), run, drain, a margin
    deadline = loop.time() + 120 + load.warmup + load.seconds + load.drain + 60
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise RuntimeError("loadgen.js did not finish in time")
            wait = min(left, every) if w_start is not None and w_end is None else left
            try:
                line = await asyncio.wait_for(proc.stderr.readline(), wait)
            except TimeoutError:
                line = None
            if w_start is not None and w_end is None and proc.returncode is None:
                with contextlib.suppress(OSError):
                    rss = sample(server.pid).rss / 2**20
                    timeline.append((round(loop.time() - t0, 1), round(rss, 1)))
            if line is None:
                continue
            if not line:
                break  # EOF: the generator is leaving
            text = line.decode(errors="replace").rstrip()
            if text == "bench:window-start":
                w_start, t0 = window(), loop.time()
                kinds["start"] = [memory_kinds(p) for p in pids]
            elif text == "bench:window-end":
                w_end = window()
                kinds["end"] = [memory_kinds(p) for p in pids]
            elif text:
                other.append(text)
        await asyncio.wait_for(proc.wait(), max(1.0, deadline - loop.time()))
        out = await stdout
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stdout.cancel()
    tail = "\n".join(other[-20:])
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"loadgen.js exited with {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(out)
    if w_start is None or w_end is None:
        raise RuntimeError(f"loadgen.js did not report its measuring window:\n{tail}")
    result.update(usage(w_start, w_end))
    result["rss_timeline_mib"] = timeline
    result["rss_kinds_mib"] = kinds
    if len(timeline) >= 2:
        first, last = timeline[0][1], timeline[-1][1]
        result["rss_growth_pct"] = round(100 * (last - first) / max(first, 1e-9), 1)
    if other:
        result["generator_stderr"] = tail
    return result


# profiling ---------------------------------------------------------------------------------
class Profiler:
    """``py-spy record`` of one server process during the measuring window."""

    def __init__(self, out: Path, seconds: float, fmt: str, rate: int) -> None:
        self.out = out
        self.seconds = seconds
        self.fmt = fmt
        self.rate = rate
        self.pid = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = out.with_suffix(".log")

    @staticmethod
    def binary() -> str:
        here = Path(sys.executable).parent / "py-spy"
        found = str(here) if here.exists() else shutil.which("py-spy")
        if not found:
            raise Skip("py-spy is not installed (pip install -e '.[bench]')")
        return found

    def start(self) -> None:
        argv = [
            *(self.binary(), "record", "--pid", str(self.pid)),
            *("--duration", str(max(1, round(self.seconds))), "--rate", str(self.rate)),
            *("--format", self.fmt, "--output", str(self.out), "--nonblocking"),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def finish(self) -> dict[str, Any]:
        if self.proc is None:
            return {"profile_error": "py-spy did not start"}
        try:
            self.proc.wait(self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if not self.out.exists():
            return {"profile_error": self.log.read_text(errors="replace")[-1000:]}
        info: dict[str, Any] = {"profile": str(self.out)}
        if self.fmt == "raw":
            summary = summarise(self.out)
            path = self.out.with_suffix(".txt")
            path.write_text(summary)
            info["profile_summary"] = str(path)
            print(summary)
        return info


def summarise(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    strip = re.compile(r":\d+\)$")
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [strip.sub(")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return f"{raw}: no samples\n"
    out = [f"{raw.name}: {total} samples", "", "self %   function"]
    out += [f"{100 * c / total:6.1f}   {f}" for f, c in own.most_common(top)]
    out += ["", "total %  function (inclusive)"]
    out += [f"{100 * c / total:6.1f}   {f}" for f, c in incl.most_common(top)]
    return "\n".join(out) + "\n"


# one scenario ------------------------------------------------------------------------------
def log_problems(servers: list[Server]) -> int:
    count = 0
    for s in servers:
        if s.log.exists():
            text = s.log.read_text(errors="replace")
            count += text.count("Traceback") + len(re.findall(r"^ERROR", text, re.M))
    return count


def log_warnings(servers: list[Server], keep: int = 5) -> tuple[int, list[str]]:
    """How many WARNING lines the server logs hold, and the first few of different kinds
    (e.g. a failed notes compaction, a commit retried: not errors, but the load shows in them)."""
    count, examples, kinds = 0, [], set()
    for s in servers:
        if s.log.exists():
            for line in s.log.read_text(errors="replace").splitlines():
                if line.startswith("WARNING"):
                    count += 1
                    kind = " ".join(line.split()[:3])
                    if kind not in kinds and len(examples) < keep:
                        kinds.add(kind)
                        examples.append(line[:300])
    return count, examples


def log_excerpt(servers: list[Server], lines: int = 40) -> str:
    """The first error of each server log with what follows it, to say what went wrong."""
    parts = []
    for s in servers:
        if s.log.exists():
            text = s.log.read_text(errors="replace").splitlines()
            first = next(
                (i for i, t in enumerate(text) if t.startswith("ERROR") or "Traceback" in t), None
            )
            if first is not None:
                parts.append(f"{s.log.name}:\n" + "\n".join(text[first : first + lines]))
    return "\n".join(parts)


def run_scenario(
    sc: Scenario,
    runner: asyncio.Runner,
    profile: dict[str, Any] | None,
    stamp: str,
    j1_db: Path | None = None,
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{sc.name}-")))
        if sc.mode == "journey":
            from bench.journey import run_journey

            assert sc.journey is not None
            if profile is not None:
                print("   (no profile for J1: it times single requests)", flush=True)
            return run_journey(sc.journey, runner, tmp, j1_db)
        servers: list[Server] = []
        stack.callback(lambda: [s.stop() for s in reversed(servers)])
        adapter: Adapter
        if sc.target == "menteo":
            env: dict[str, str] = {}
            if sc.cluster:
                db = stack.enter_context(pg_schema())
                prefix = stack.enter_context(redis_prefix())
                env = {
                    "MENTEO_DATABASE_URL": db,
                    "MENTEO_BROKER_URL": REDIS_URL,
                    "MENTEO_REDIS_PREFIX": prefix,
                }
            for _ in range(sc.nodes):  # one after the other: the first one migrates
                node = MenteoServer(tmp, env)
                servers.append(node)
                node.start()
            if sc.mode == "notes":
                from bench.notes_load import NotesAdapter

                adapter = NotesAdapter()
            else:
                adapter = MenteoAdapter()
        elif sc.target == "socketio":
            if importlib.util.find_spec("socketio") is None:
                raise Skip("python-socketio is not installed (pip install -e '.[bench]')")
            if not reachable(REDIS_URL, 6379):
                raise Skip(f"Redis is not reachable at {REDIS_URL}")
            channel = f"menteo-bench-sio-{uuid.uuid4().hex[:10]}"
            for _ in range(sc.nodes):
                peer = PeerServer(tmp, REDIS_URL, channel)
                servers.append(peer)
                peer.start()
            adapter = SocketIOAdapter()
        elif sc.target == "bare":
            bare = BareServer(tmp)
            servers.append(bare)
            bare.start()
            adapter = MenteoAdapter(bare=True)
        elif sc.target == "node":
            node_bin = node_ready()
            if not reachable(REDIS_URL, 6379):
                raise Skip(f"Redis is not reachable at {REDIS_URL}")
            channel = f"menteo-bench-node-{uuid.uuid4().hex[:10]}"
            for _ in range(sc.nodes):
                js = NodeServer(tmp, node_bin, REDIS_URL, channel)
                servers.append(js)
                js.start()
        else:
            raise ValueError(sc.target)
        if sc.mode == "notes" and sc.target != "menteo":
            raise Skip("the notes scenario speaks only the menteo protocol")
        load = Load(
            rooms=sc.rooms,
            mode=sc.mode,
            rate=sc.rate,
            window=sc.window,
            warmup=sc.warmup,
            seconds=sc.seconds,
            drain=sc.drain,
            deflate=sc.deflate,
        )
        if sc.target == "node":  # the Node generator drives it; no py-spy for a Node server
            if profile is not None:
                print("   (no profile for the Node.js peer: py-spy reads Python)", flush=True)
            assert isinstance(servers[0], NodeServer)
            result = runner.run(drive_node(servers[0].node, servers[0], load))
            result["peer_versions"] = node_versions(servers[0].node)
            result["servers_alive"] = all(s.alive() for s in servers)
            result["server_log_problems"] = log_problems(servers)
            if result["server_log_problems"]:
                result["server_log_excerpt"] = log_excerpt(servers)
            return result
        profiler: Profiler | None = None
        hook: Callable[[], None] | None = None
        if profile is not None:
            RESULTS.mkdir(parents=True, exist_ok=True)
            ext = {"raw": "folded", "flamegraph": "svg", "speedscope": "speedscope.json"}
            out = RESULTS / f"profile-{stamp}-{sc.name}.{ext[profile['format']]}"
            profiler = Profiler(out, sc.seconds, profile["format"], profile["rate"])
            profiler.pid = servers[0].pid
            Profiler.binary()
            hook = profiler.start
        if sc.mode == "notes":
            from bench.notes_load import NotesAdapter, NotesLoadGen

            assert isinstance(adapter, NotesAdapter)
            gen: LoadGen = NotesLoadGen(
                adapter, servers, load, [s.pid for s in servers], on_measure_start=hook
            )
        else:
            gen = LoadGen(adapter, servers, load, [s.pid for s in servers], on_measure_start=hook)
        result = runner.run(gen.run())
        result["servers_alive"] = all(s.alive() for s in servers)
        result["server_log_problems"] = log_problems(servers)
        if sc.mode == "notes":
            warned, said = log_warnings(servers)
            result["server_log_warnings"] = warned
            result["server_log_warning_examples"] = said
        if result["server_log_problems"]:
            result["server_log_excerpt"] = log_excerpt(servers)
        if profiler is not None:
            result.update(profiler.finish())
        return result
    raise AssertionError("unreachable")


# output ------------------------------------------------------------------------------------
def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


COLUMNS = [
    ("scenario", 8),
    ("target", 8),
    ("conns", 6),
    ("sent/s", 8),
    ("deliv/s", 8),
    ("fan-out ms p50/p95/p99/max", 27),
    ("ack ms p50/p99", 14),
    ("lost", 5),
    ("dup", 4),
    ("conn ms p99", 11),
    ("srv CPU%", 8),
    ("srv MiB", 8),
    ("gen CPU%", 8),
    ("busy%", 6),
    ("notes", 0),
]


def row(r: dict[str, Any]) -> list[str]:
    name, target = r["scenario"], r["target"]
    if "skipped" in r or "error" in r:
        note = ("skipped: " + r["skipped"]) if "skipped" in r else ("ERROR: " + r["error"])
        return [name, target, *["-"] * (len(COLUMNS) - 3), note]
    if r.get("mode") == "journey":
        from bench.journey import summary

        note = summary(r)
        if r.get("server_log_problems"):
            note += f"; {r['server_log_problems']} errors in server log"
        rss = r.get("server_rss_mib")
        return [name, target, "1-2", *["-"] * 8, fmt(rss), "-", "-", note]
    f, a = r.get("fanout_ms") or {}, r.get("ack_ms") or {}
    notes = []
    if r.get("mode") == "idle":
        notes.append(f"held {r.get('held')}/{r['connections']}")
        notes.append(f"{fmt(r.get('rss_per_conn_kib'), 2)} KiB RSS/conn")
    if r.get("nodes", 1) > 1:
        notes.append(f"{r['nodes']} nodes")
    if r.get("connect_failures"):
        notes.append(f"{r['connect_failures']} connect failures")
    if r.get("closed_early"):
        notes.append(f"{r['closed_early']} closed early")
    if r.get("unacked"):
        notes.append(f"{r['unacked']} unacked")
    if r.get("echo_missing"):
        notes.append(f"{r['echo_missing']} echoes missing")
    if r.get("errors"):
        notes.append(f"{r['errors']} error frames")
    if r.get("server_log_problems"):
        notes.append(f"{r['server_log_problems']} errors in server log")
    if r.get("mode") == "notes":
        from bench.notes_load import summary as notes_summary

        notes += notes_summary(r)
    lag = (r.get("send_lag_ms") or {}).get("p99")
    if lag is not None and lag > 50:
        notes.append(f"generator late p99 {lag:.0f} ms")
    idle = r.get("mode") == "idle"
    return [
        name,
        target,
        str(r["connections"]),
        "-" if idle else fmt(r.get("sent_per_s"), 0),
        "-" if idle else fmt(r.get("delivered_per_s"), 0),
        "-" if idle else "/".join(fmt(f.get(k)) for k in ("p50", "p95", "p99", "max")),
        "-" if idle or not a else "/".join(fmt(a.get(k)) for k in ("p50", "p99")),
        "-" if idle else fmt(r.get("lost")),
        "-" if idle else fmt(r.get("dup")),
        fmt((r.get("connect_ms") or {}).get("p99")),
        fmt(r.get("server_cpu_pct")),
        fmt(r.get("server_rss_mib")),
        fmt(r.get("gen_cpu_pct")),
        fmt(r.get("machine_busy_pct"), 0),
        "; ".join(notes),
    ]


def table(results: list[dict[str, Any]]) -> str:
    rows = [[c for c, _ in COLUMNS], *(row(r) for r in results)]
    widths = [max(len(x[i]) for x in rows) for i in range(len(COLUMNS))]
    lines = []
    for i, cells in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Ours against the peer and the bare ceiling, for scenarios run side by side."""
    got = {r["scenario"]: r for r in results if "sent" in r}
    out: dict[str, Any] = {}
    for base in ("S1", "S2", "S4"):
        ours = got.get(base)
        if not ours:
            continue
        for other in ("peer", "node", "bare"):
            them = got.get(f"{base}-{other}")
            if not them:
                continue
            entry: dict[str, Any] = {}
            if them.get("delivered_per_s"):
                entry["delivered_per_s"] = round(
                    ours["delivered_per_s"] / them["delivered_per_s"], 2
                )
            fo, ft = ours["fanout_ms"].get("p99"), them["fanout_ms"].get("p99")
            if fo and ft:
                entry["fanout_p99"] = round(fo / ft, 2)
            if them.get("server_cpu_pct"):
                entry["server_cpu"] = round(ours["server_cpu_pct"] / them["server_cpu_pct"], 2)
            out[f"{base}/{base}-{other}"] = entry
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions = {}
    for pkg in ("websockets", "uvicorn", "starlette", "msgpack", "python-socketio", "uvloop"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_mib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "packages": versions,
    }


# main --------------------------------------------------------------------------------------
def select(args: argparse.Namespace) -> list[Scenario]:
    names = by_name()
    wanted = args.scenarios or args.profile
    if wanted:
        chosen = []
        for name in wanted.split(","):
            key = name.strip().upper()
            if key not in names:
                raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(names)}")
            chosen.append(names[key])
    else:
        chosen = list(FULL)
    out = []
    for s in chosen:
        if args.smoke:
            s = smoke(s)
        if args.rooms and s.mode != "idle":
            s = dataclasses.replace(s, rooms=args.rooms)
        if args.connections and s.mode == "idle":
            s = dataclasses.replace(s, rooms=max(1, args.connections // 2))
        if args.seconds:
            s = dataclasses.replace(s, seconds=args.seconds)
        if args.warmup is not None:
            s = dataclasses.replace(s, warmup=args.warmup)
        out.append(s)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--smoke", action="store_true", help="a tiny version of each scenario")
    ap.add_argument(
        "--scenarios",
        help="comma-separated names (default: all): " + ", ".join(s.name for s in FULL),
    )
    ap.add_argument("--rooms", type=int, help="rooms for the traffic scenarios")
    ap.add_argument("--connections", type=int, help="connections for the idle scenario (S5)")
    ap.add_argument("--seconds", type=float, help="measuring time per scenario")
    ap.add_argument("--warmup", type=float, help="warm-up time per scenario")
    ap.add_argument("--profile", metavar="NAMES", help="py-spy the server during these scenarios")
    ap.add_argument(
        "--profile-format",
        choices=["raw", "flamegraph", "speedscope"],
        default="raw",
        help="raw (collapsed stacks + a text summary; default), flamegraph (SVG), speedscope",
    )
    ap.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--no-uvloop", action="store_true", help="the generator on asyncio's loop")
    ap.add_argument(
        "--j1-db",
        type=Path,
        help="J1: load into this file and keep it; reuse it if it holds a load of the same size",
    )
    ap.add_argument(
        "--out", type=Path, help="JSON output file (default bench/results/bench-<time>.json)"
    )
    args = ap.parse_args(argv)

    nofile = raise_nofile()
    scenarios = select(args)
    need = max(s.connections for s in scenarios) + 256
    if nofile < need:
        print(
            f"warning: open-file limit {nofile} < {need} needed; raise `ulimit -n`", file=sys.stderr
        )
    factory, loop_name = loop_factory(not args.no_uvloop)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    profile = {"format": args.profile_format, "rate": args.profile_rate}
    profiled = {n.strip().upper() for n in (args.profile or "").split(",") if n.strip()}
    meta = {
        "started": stamp,
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "smoke": args.smoke,
        "generator_loop": loop_name,
        "note": "load generator and servers share the machine's cores; one generator process",
        "machine": machine(),
        "git": git_state(),
        "nofile": nofile,
    }
    print(
        f"bench: {len(scenarios)} scenario(s), generator on {loop_name}, "
        f"{meta['machine']['cpus']} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    failed = False
    with asyncio.Runner(loop_factory=factory) as runner:
        for sc in scenarios:
            base = {
                "scenario": sc.name,
                "target": sc.target,
                "title": sc.title,
                "mode": sc.mode,
                "rate": sc.rate if sc.mode in ("rate", "notes") else None,
                "window": sc.window if sc.mode == "saturate" else None,
                "nodes": sc.nodes,
                "store": "postgresql"
                if sc.cluster
                else ("sqlite" if sc.target == "menteo" else None),
                "broker": "redis" if sc.cluster or sc.target in ("socketio", "node") else None,
                "warmup_s": sc.warmup,
                "seconds": sc.seconds,
                "connections": sc.connections,
            }
            t0 = time.monotonic()
            print(f"-- {sc.name}: {sc.title} ({sc.connections} connections) ...", flush=True)
            try:
                wanted = profile if sc.name.upper() in profiled else None
                res = {**base, **run_scenario(sc, runner, wanted, stamp, args.j1_db)}
            except Skip as exc:
                res = {**base, "skipped": str(exc)}
            except Exception as exc:
                traceback.print_exc()
                res = {**base, "error": repr(exc)[:300]}
                failed = True
            res["wall_s"] = round(time.monotonic() - t0, 1)
            if args.smoke and (res.get("lost") or res.get("dup") or res.get("connect_failures")):
                failed = True
            if args.smoke and res.get("notes_rooms_stored") != res.get("notes_rooms_checked"):
                failed = True  # S6: a room whose stored notes miss an update
            results.append(res)
            print(table([res]).splitlines()[-1], flush=True)
    text = table(results)
    print()
    print(text)
    rat = ratios(results)
    if rat:
        print()
        print("ratios (ours / theirs, same run):")
        for k, v in rat.items():
            print(f"  {k}: " + ", ".join(f"{m} {x}x" for m, x in v.items()))
    out = args.out or RESULTS / f"bench-{stamp}{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "results": results, "ratios": rat, "table": text}, indent=2))
    print(f"\nresults: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
