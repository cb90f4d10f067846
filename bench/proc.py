"""Server processes for the benchmark, and what /proc says about them.

Every server is a child of the bench (so its pid is known), started fresh per scenario, on a free
port of 127.0.0.1, with its output in a log file of the scenario's work folder. The file
descriptor limit is raised (soft to hard) in the bench itself and again in each child.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
ADMIN = "bench-admin-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (the hard limit too, when root); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, want), hard):
        try:
            target = min(want, new_hard) if new_hard != resource.RLIM_INFINITY else want
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> None:  # preexec_fn: runs in the child before exec
    raise_nofile()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProcSample:
    """CPU ticks and memory of one process at one moment."""

    wall: float
    cpu: float  # seconds of user + system time
    rss: int  # bytes
    hwm: int  # peak RSS, bytes


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return ProcSample(time.monotonic(), cpu, rss, hwm)


def memory_kinds(pid: int) -> dict[str, float]:
    """Resident MiB of ``pid`` by kind of mapping (from /proc/PID/smaps): where RSS grows."""
    kinds: dict[str, float] = {}
    kind = "?"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if not head:
                    continue
                if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    path = head[5] if len(head) > 5 else ""
                    if not path:
                        kind = "anon"  # malloc arenas of threads, large mallocs
                    elif path.startswith("["):
                        kind = path  # [heap], [stack] ...
                    else:
                        kind = "file:" + path.rsplit("/", 1)[-1].split(".cpython")[0]
                elif head[0] == "Rss:":
                    kinds[kind] = kinds.get(kind, 0.0) + int(head[1]) / 1024
    except OSError:
        return {}
    big = {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v >= 1.0}
    big["other"] = round(sum(kinds.values()) - sum(big.values()), 1)
    return big


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


class Server:
    """A child process serving HTTP on ``port``; subclasses say what to run."""

    name = "server"

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.name}-{self.port}.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def health_path(self) -> str:
        return "/healthz"

    def start(self, timeout: float = 60.0) -> Server:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=self.workdir,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.http + self.health_path(), timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class MenteoServer(Server):
    """``menteo-rooms serve`` with the rate limit off and the admin API on."""

    name = "menteo"

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(
            workdir,
            {
                "MENTEO_DATABASE_URL": f"sqlite:///{workdir / 'rooms.db'}",
                "MENTEO_SECRET": SECRET,
                "MENTEO_ADMIN_TOKEN": ADMIN,
                "MENTEO_BROKER_URL": "memory://",
                "MENTEO_RATE_LIMIT": "0",
                **(env or {}),
            },
        )

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port)]

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {ADMIN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


class PeerServer(Server):
    """The python-socketio baseline (``bench.peers.socketio_server``) on uvicorn."""

    name = "peer-socketio"

    def __init__(self, workdir: Path, redis_url: str, channel: str) -> None:
        super().__init__(workdir)
        self.redis_url = redis_url
        self.channel = channel

    def argv(self) -> list[str]:
        return [
            *(sys.executable, "-m", "bench.peers.socketio_server"),
            *("--port", str(self.port), "--redis", self.redis_url, "--channel", self.channel),
        ]


class BareServer(Server):
    """The bare websockets fan-out (``bench.peers.bare_ws``): no store, no broker, the ceiling."""

    name = "bare-ws"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.peers.bare_ws", "--port", str(self.port)]


def git_state() -> dict[str, Any]:
    """The commit measured, and what of the product or the bench was not committed yet."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
            return done.stdout.strip()
        except OSError:
            return ""

    paths = ("persistence", "server", "rooms", "signaling", "bench", "pyproject.toml")
    uncommitted = [line for line in git("status", "--porcelain", "--", *paths).splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(uncommitted),
        "uncommitted": uncommitted,
    }
