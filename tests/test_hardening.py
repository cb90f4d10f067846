"""Issue 10 (hardening), through real ``menteo-rooms serve`` processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import ADMIN, ROOT, SECRET, Client, ServerProcess, free_port
from tests.test_defects import POISON, refuse_writes


def token(user: str, room: str, exp: float) -> str:
    return jwt.encode({"sub": user, "room": room, "exp": int(exp)}, SECRET, algorithm="HS256")


def cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "MENTEO_DATABASE_URL": f"sqlite:///{workdir / 'rooms.db'}",
        "MENTEO_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "server.cli", *args]
    return subprocess.run(cmd, cwd=workdir, env=full, capture_output=True, text=True, timeout=60)


def run_serve(
    workdir: Path, env: dict[str, str], host: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """``serve`` that is expected to refuse to start: it must exit by itself, quickly."""
    full = {
        **os.environ,
        "MENTEO_DATABASE_URL": f"sqlite:///{workdir / 'rooms.db'}",
        "MENTEO_SECRET": SECRET,
        "MENTEO_ADMIN_TOKEN": ADMIN,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", host, "--port", str(free_port())]
    return subprocess.run(cmd, cwd=workdir, env=full, capture_output=True, text=True, timeout=30)


# item 2: weak secrets ----------------------------------------------------------------------
def test_short_secret_is_refused(tmp_path: Path) -> None:
    done = run_serve(tmp_path, {"MENTEO_SECRET": "a" * 31})
    assert done.returncode != 0
    assert "MENTEO_SECRET" in done.stderr and "32" in done.stderr


def test_short_admin_token_is_refused(tmp_path: Path) -> None:
    done = run_serve(tmp_path, {"MENTEO_ADMIN_TOKEN": "s3cret"})
    assert done.returncode != 0
    assert "MENTEO_ADMIN_TOKEN" in done.stderr and "16" in done.stderr


def test_generated_secret_refused_off_loopback(tmp_path: Path) -> None:
    done = run_serve(tmp_path, {"MENTEO_SECRET": ""}, host="0.0.0.0")
    assert done.returncode != 0
    assert "MENTEO_SECRET" in done.stderr and "loopback" in done.stderr
    assert not (tmp_path / ".menteo-secret").exists()


def test_generated_secret_on_loopback_is_owner_only_and_said(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"MENTEO_SECRET": ""}).start()
    try:
        path = tmp_path / ".menteo-secret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) >= 32
        log = server.log.read_text()
        assert "WARNING" in log and str(path) in log and "DEVELOPMENT" in log
    finally:
        assert server.stop() == 0


# item 7: token lifetimes -------------------------------------------------------------------
async def test_token_expired_within_leeway_still_joins(server: ServerProcess) -> None:
    pair = server.pair()
    c = await Client.open(server, pair.id, token(pair.mentor, pair.id, time.time() - 10))
    assert c.welcome["user"]["id"] == pair.mentor
    await c.close()
    status, _, _ = server.request(
        "GET", f"/api/rooms/{pair.id}/sessions", token=token(pair.mentor, pair.id, time.time() - 90)
    )
    assert status == 401  # past the leeway: expired


def test_admin_token_route_refuses_ttl_past_the_maximum(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"MENTEO_MAX_TOKEN_TTL": "3600"}).start()
    try:
        pair = server.pair()
        path = f"/api/pairs/{pair.id}/tokens"
        status, body, _ = server.request("POST", path, {"user_id": pair.mentor, "ttl": 3601}, ADMIN)
        assert status == 422 and "MENTEO_MAX_TOKEN_TTL" in body["error"]["message"]
        status, body, _ = server.request("POST", path, {"user_id": pair.mentor, "ttl": 3600}, ADMIN)
        assert status == 201
        status, body, _ = server.request("POST", path, {"user_id": pair.mentor}, ADMIN)
        assert status == 201  # the default is clamped to the maximum
        exp = jwt.decode(body["token"], SECRET, algorithms=["HS256"])["exp"]
        assert exp <= time.time() + 3600 + 1
    finally:
        server.stop()


def test_default_maximum_is_seven_days(server: ServerProcess) -> None:
    pair = server.pair()
    body = {"user_id": pair.mentor, "ttl": 8 * 86400}
    status, resp, _ = server.request("POST", f"/api/pairs/{pair.id}/tokens", body, ADMIN)
    assert status == 422, resp


def test_cli_token_refuses_ttl_past_the_maximum(tmp_path: Path) -> None:
    made = cli(tmp_path, "pair", "create", "--mentor", "Ada", "--mentee", "Grace", "--json")
    assert made.returncode == 0, made.stderr
    pair = json.loads(made.stdout)
    args = ("token", "--pair", pair["pair_id"], "--user", pair["mentor"]["id"])
    done = cli(tmp_path, *args, "--ttl", str(8 * 86400))
    assert done.returncode != 0 and "MENTEO_MAX_TOKEN_TTL" in done.stderr
    done = cli(tmp_path, *args, "--ttl", "60", env={"MENTEO_MAX_TOKEN_TTL": "30"})
    assert done.returncode != 0
    done = cli(tmp_path, *args, "--ttl", "60")
    assert done.returncode == 0 and done.stdout.strip()


async def test_turn_credential_ends_with_the_token(tmp_path: Path) -> None:
    env = {"MENTEO_TURN_URLS": "turn:turn.example.test:3478", "MENTEO_TURN_SECRET": "turn-key"}
    server = ServerProcess(tmp_path, env).start()
    try:
        pair = server.pair()
        exp = int(time.time()) + 300
        c = await Client.open(server, pair.id, token(pair.mentee, pair.id, exp))
        (turn,) = c.welcome["ice_servers"]
        await c.close()
        assert turn["username"] == f"{exp}:{pair.mentee}"
        digest = hmac.new(b"turn-key", turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(digest).decode()
    finally:
        server.stop()


# item 8: content in logs -------------------------------------------------------------------
async def test_a_refused_write_is_logged_without_its_text(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        pair = server.pair()
        mentor = await Client.open(server, pair.id, pair.mentor_token)
        await mentor.send({"t": "chat", "id": "c1", "text": "fine"})
        seq = (await mentor.expect("ack", id="c1"))["seq"]
        refuse_writes(tmp_path / "rooms.db", "events", "body")
        secret_text = f"{POISON.decode()} my salary is 91234 and I am leaving"
        await mentor.send({"t": "chat", "id": "bad", "text": secret_text})
        await mentor.expect("error", ref="bad")
        await mentor.close()
    finally:
        server.stop()
    log = server.log.read_text()
    refused = [line for line in log.splitlines() if "rejected by the store" in line]
    assert refused, log[-3000:]
    assert f"seq={seq + 1}" in refused[0] and "bytes" in refused[0]
    assert "91234" not in log and "salary" not in log


# item 9: /metrics and /readyz --------------------------------------------------------------
def test_metrics_and_readyz_need_the_metrics_token_when_set(tmp_path: Path) -> None:
    ops = "ops-token-0123456789"
    server = ServerProcess(tmp_path, {"MENTEO_METRICS_TOKEN": ops}).start()
    try:
        for path in ("/metrics", "/readyz"):
            for wrong in (None, "wrong-token", ADMIN):
                status, body, _ = server.request("GET", path, token=wrong)
                assert status == 401, (path, wrong)
                assert body["error"]["code"] == "unauthorized"
            status, _, _ = server.request("GET", path, token=ops, raw=True)
            assert status == 200, path
        status, _, _ = server.request("GET", "/healthz")
        assert status == 200  # liveness stays open
    finally:
        server.stop()


def test_metrics_and_readyz_stay_open_without_the_setting(server: ServerProcess) -> None:
    for path in ("/metrics", "/readyz"):
        status, _, _ = server.request("GET", path, raw=True)
        assert status == 200, path


# item 5: security headers ------------------------------------------------------------------
CSP = (  # the policy tests/test_browser.py holds the browser client to
    "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; object-src 'none'; "
    "base-uri 'none'"
)


def headers_of(server: ServerProcess, path: str, **extra: str) -> dict[str, str]:
    req = urllib.request.Request(server.http + path, headers=extra)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return {k.lower(): v for k, v in e.headers.items()}


def test_security_headers_on_pages_api_and_static_files(server: ServerProcess) -> None:
    pair = server.pair()
    paths = [
        "/",
        f"/rooms/{pair.id}",
        f"/api/rooms/{pair.id}/sessions",  # 401 without a token: errors get them too
        "/healthz",
        "/static/style.css",
        "/static/dist/favicon.svg",
        "/no-such-page",
    ]
    for path in paths:
        h = headers_of(server, path)
        csp = h.get("content-security-policy", "")
        assert csp == CSP, (path, csp)
        assert h.get("x-content-type-options") == "nosniff", path
        assert h.get("referrer-policy") == "no-referrer", path
        assert "strict-transport-security" not in h, path  # plain HTTP: no HSTS


def test_hsts_only_over_tls(server: ServerProcess) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 (a TLS-terminating proxy on this host)
    h = headers_of(server, "/", **{"X-Forwarded-Proto": "https"})
    assert "max-age=" in h.get("strict-transport-security", "")


# item 1: silent sockets --------------------------------------------------------------------
async def silent(server: ServerProcess, pair_id: str, n: int) -> list[Client]:
    """``n`` sockets, each accepted by the server, none of which says hello."""
    return list(await asyncio.gather(*(Client.open(server, pair_id, None) for _ in range(n))))


async def join_once_free(server: ServerProcess, pair_id: str, token: str) -> Client:
    """A normal join; a socket closed just before may not have been counted out yet, so a
    429 is retried at once (bounded), never waited out."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await Client.open(server, pair_id, token)
        except InvalidStatus as exc:
            if exc.response.status_code != 429 or time.monotonic() > deadline:
                raise


async def test_silent_sockets_are_capped_per_address(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()  # the default: 100 per address
    try:
        pair = server.pair()
        held = await silent(server, pair.id, 100)
        with pytest.raises(InvalidStatus) as refused:
            await Client.open(server, pair.id, None)
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == (
            "too_many_pending"
        )
        await asyncio.gather(*(c.close() for c in held))
        c = await join_once_free(server, pair.id, pair.mentor_token)
        assert c.welcome["user"]["id"] == pair.mentor
        await c.close()
    finally:
        server.stop()


async def test_silent_sockets_are_capped_in_total(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"MENTEO_MAX_PENDING": "3"}).start()
    try:
        pair = server.pair()
        held = await silent(server, pair.id, 3)
        with pytest.raises(InvalidStatus) as refused:
            await Client.open(server, pair.id, None)
        assert refused.value.response.status_code == 429
        # a socket that said hello no longer counts: once one silent socket speaks, a place frees
        await held[0].send({"t": "hello", "token": pair.mentee_token})
        await held[0].expect("welcome")
        more = await silent(server, pair.id, 1)
        await asyncio.gather(*(c.close() for c in held + more))
    finally:
        server.stop()


async def test_uvicorns_concurrency_limit_answers_503_past_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"MENTEO_LIMIT_CONCURRENCY": "8"}).start()
    try:
        pair = server.pair()
        held = await silent(server, pair.id, 8)
        status, body, _ = await asyncio.to_thread(server.request, "GET", "/healthz", raw=True)
        assert status == 503, body
        await asyncio.gather(*(c.close() for c in held))

        async def served() -> bool:
            got, _, _ = await asyncio.to_thread(server.request, "GET", "/healthz", raw=True)
            return bool(got == 200)

        deadline = time.monotonic() + 10
        while not await served():  # the closed sockets are counted out as they finish
            assert time.monotonic() < deadline, "never served again"
    finally:
        server.stop()


# item 1, second half: joins per member -----------------------------------------------------
async def hello_answer(server: ServerProcess, pair_id: str, token: str) -> tuple[str, Any]:
    """Join once: ("welcome", client) or ("closed", (code, reason))."""
    c = await Client.open(server, pair_id, None)
    await c.send({"t": "hello", "token": token})
    try:
        frame = await c.recv()
    except ConnectionClosed:
        await c.ws.wait_closed()
        return "closed", (c.ws.close_code, c.ws.close_reason)
    assert frame["t"] == "welcome", frame
    return "welcome", c


async def test_a_member_reconnecting_in_a_tight_loop_is_refused_after_a_burst(
    server: ServerProcess,
) -> None:
    pair = server.pair()
    mentor = await Client.open(server, pair.id, pair.mentor_token)
    answers = []
    for _ in range(20):  # the default: 6 joins a minute, bursts of 12
        kind, got = await hello_answer(server, pair.id, pair.mentee_token)
        answers.append(kind)
        if kind == "welcome":
            await got.close()
        else:
            assert got[0] == 4429, got
            assert "too many joins" in got[1]
    assert answers == ["welcome"] * 12 + ["closed"] * 8
    # the other member is not limited by it
    await mentor.close()
    kind, again = await hello_answer(server, pair.id, pair.mentor_token)
    assert kind == "welcome"
    await again.close()
    # at most the burst's joins reach the transcript (a join is stored after its welcome)
    status, doc, _ = server.request(
        "GET", f"/api/sessions/{mentor.welcome['session_id']}/transcript", token=pair.mentor_token
    )
    assert status == 200, doc
    joined = [
        e
        for e in doc["events"]
        if e["t"] == "presence" and e["user"]["id"] == pair.mentee and e["state"] == "joined"
    ]
    assert 1 <= len(joined) <= 12, joined
