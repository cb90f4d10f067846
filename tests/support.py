"""Test support: a real server process on a free port and a protocol client over `websockets`."""

from __future__ import annotations

import asyncio
import json
import os
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

import msgpack
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789abcdef0123456789"
ADMIN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`menteo-rooms serve` as a child process."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ,
            "MENTEO_DATABASE_URL": f"sqlite:///{workdir / 'rooms.db'}",
            "MENTEO_SECRET": SECRET,
            "MENTEO_ADMIN_TOKEN": ADMIN,
            "MENTEO_BROKER_URL": "memory://",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port)]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=self.workdir,
            env={**self.env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    # HTTP --------------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, raw: bool = False
    ) -> tuple[int, Any, dict[str, str]]:
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        req = urllib.request.Request(self.http + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, content, headers = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, content, headers = e.code, e.read(), dict(e.headers)
        if raw:
            return status, content.decode(), headers
        return status, json.loads(content) if content else None, headers

    def pair(self, mentor: str = "Mara Mentor", mentee: str = "Milo Mentee") -> Pair:
        status, body, _ = self.request(
            "POST", "/api/pairs", {"mentor": {"name": mentor}, "mentee": {"name": mentee}}, ADMIN
        )
        assert status == 201, body
        tokens = {}
        for role in ("mentor", "mentee"):
            uid = body[role]["id"]
            st, tok, _ = self.request(
                "POST", f"/api/pairs/{body['pair_id']}/tokens", {"user_id": uid}, ADMIN
            )
            assert st == 201, tok
            tokens[role] = tok["token"]
        return Pair(
            body["pair_id"],
            body["mentor"]["id"],
            body["mentee"]["id"],
            tokens["mentor"],
            tokens["mentee"],
        )


@dataclass
class Pair:
    id: str
    mentor: str
    mentee: str
    mentor_token: str
    mentee_token: str


class Client:
    """A protocol client that keeps every frame it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(
        cls,
        server: ServerProcess,
        pair_id: str,
        token: str | None,
        resume: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Client:
        ws = await connect(
            f"{server.ws}/ws/rooms/{pair_id}",
            subprotocols=["menteo.v1.msgpack"],  # type: ignore[list-item]
            max_size=None,
            **kw,
        )
        client = cls(ws)
        if token is not None:
            hello: dict[str, Any] = {"t": "hello", "token": token}
            if resume:
                hello["resume"] = resume
            await client.send(hello)
            client.welcome = await client.expect("welcome")
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(frame, use_bin_type=True))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = msgpack.unpackb(data, raw=False)
        self.frames.append(frame)
        return frame

    async def expect(self, t: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """Receive until a frame of type ``t`` (with the given fields) arrives."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no {t} {match} frame; got {self.frames[-5:]}")
            frame = await self.recv(left)
            if frame.get("t") == t and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait until the server closes the socket; return the close code."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError("socket not closed")
                await self.recv(left)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                raise
        await self.ws.wait_closed()
        return self.ws.close_code

    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if "seq" in f and f.get("t") != "ack"]

    async def close(self) -> None:
        await self.ws.close()


def require_service(name: str, host: str, port: int, timeout: float = 2.0) -> None:
    """Skip the test when a service does not answer on ``host:port``; fail instead under CI."""
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError as exc:
        service_missing(f"{name} is not reachable at {host}:{port} ({exc})")


def service_missing(reason: str) -> None:
    """A service the test needs is missing: skip on a developer's machine, fail when CI=true."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)
