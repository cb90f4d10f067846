"""The HTTP API through a real server process: admin, sessions, transcripts, errors."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tests.support import ADMIN, SECRET, Client, Pair, ServerProcess


def token(user: str, room: str, exp: float | None = None, secret: str = SECRET) -> str:
    claims = {"sub": user, "room": room, "exp": int(exp if exp is not None else time.time() + 600)}
    return jwt.encode(claims, secret, algorithm="HS256")


def assert_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], body
    assert isinstance(err.get("message"), str) and err["message"], body


async def drain_until_seq(client: Client, seq: int) -> None:
    """Receive until the client has seen the durable event ``seq``."""
    for _ in range(1000):
        if any(f.get("seq", 0) >= seq and f["t"] != "ack" for f in client.frames):
            return
        await client.recv()
    raise AssertionError(f"seq {seq} never arrived")


async def ended_session(server: ServerProcess, pair: Pair, chats: list[str]) -> str:
    """Run one session with ``chats`` from the mentor, end it, return its id."""
    a = await Client.open(server, pair.id, pair.mentor_token)
    for i, text in enumerate(chats):
        await a.send({"t": "chat", "id": f"c{i}", "text": text})
        await a.expect("ack", id=f"c{i}")
    await a.send({"t": "end"})
    await a.expect("ended")
    assert await a.closed() == 1000
    sid: str = a.welcome["session_id"]
    return sid


# health and unknown paths --------------------------------------------------------------------
def test_healthz(server: ServerProcess) -> None:
    status, body, headers = server.request("GET", "/healthz")
    assert status == 200
    assert body == {"status": "ok"}
    assert headers["content-type"].startswith("application/json")


def test_unknown_path_is_a_json_404(server: ServerProcess) -> None:
    status, body, headers = server.request("GET", "/api/nothing-here")
    assert_error(status, body, 404)
    assert headers["content-type"].startswith("application/json")


# POST /api/pairs --------------------------------------------------------------------------
def test_create_pair(server: ServerProcess) -> None:
    status, body, _ = server.request(
        "POST", "/api/pairs", {"mentor": {"name": "Rita"}, "mentee": {"name": "Sam"}}, ADMIN
    )
    assert status == 201, body
    assert set(body) == {"pair_id", "mentor", "mentee"}
    assert isinstance(body["pair_id"], str) and body["pair_id"]
    assert set(body["mentor"]) == {"id", "name"} and set(body["mentee"]) == {"id", "name"}
    assert body["mentor"]["name"] == "Rita" and body["mentee"]["name"] == "Sam"
    ids = {body["pair_id"], body["mentor"]["id"], body["mentee"]["id"]}
    assert len(ids) == 3 and all(isinstance(i, str) and i for i in ids)
    # a second pair gets fresh ids
    _, other, _ = server.request(
        "POST", "/api/pairs", {"mentor": {"name": "Rita"}, "mentee": {"name": "Sam"}}, ADMIN
    )
    assert other["pair_id"] != body["pair_id"]
    assert other["mentor"]["id"] != body["mentor"]["id"]


@pytest.mark.parametrize("admin", [None, "wrong-admin-token", SECRET])
def test_create_pair_needs_the_admin_token(server: ServerProcess, admin: str | None) -> None:
    body = {"mentor": {"name": "A"}, "mentee": {"name": "B"}}
    status, resp, _ = server.request("POST", "/api/pairs", body, admin)
    assert_error(status, resp, 401)


def test_create_pair_with_a_member_token_is_refused(server: ServerProcess) -> None:
    pair = server.pair()
    body = {"mentor": {"name": "A"}, "mentee": {"name": "B"}}
    status, resp, _ = server.request("POST", "/api/pairs", body, pair.mentor_token)
    assert_error(status, resp, 401)


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"{",
        b"[]",
        b'"mentor"',
        {"mentor": {"name": "A"}},
        {"mentee": {"name": "B"}},
        {"mentor": {"name": 5}, "mentee": {"name": "B"}},
        {"mentor": {"name": "A"}, "mentee": {"name": None}},
        {"mentor": {"name": "A"}, "mentee": {"name": ["B"]}},
        {"mentor": {"name": ""}, "mentee": {"name": "B"}},
        {"mentor": {"name": "A"}, "mentee": {"name": "   "}},
        {"mentor": "A", "mentee": "B"},
    ],
    ids=lambda b: repr(b)[:40],
)
def test_create_pair_malformed_body(server: ServerProcess, body: Any) -> None:
    status, resp, _ = server.request("POST", "/api/pairs", body, ADMIN)
    assert_error(status, resp, 422)


# POST /api/pairs/{id}/tokens ----------------------------------------------------------------
async def test_minted_token_joins(server: ServerProcess) -> None:
    status, body, _ = server.request(
        "POST", "/api/pairs", {"mentor": {"name": "Tia"}, "mentee": {"name": "Ugo"}}, ADMIN
    )
    assert status == 201
    pid, mentee = body["pair_id"], body["mentee"]["id"]
    st, tok, _ = server.request(
        "POST", f"/api/pairs/{pid}/tokens", {"user_id": mentee, "ttl": 120}, ADMIN
    )
    assert st == 201, tok
    assert set(tok) == {"token"} and isinstance(tok["token"], str)
    claims = jwt.decode(tok["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == mentee and claims["room"] == pid
    assert 100 <= claims["exp"] - time.time() <= 130
    c = await Client.open(server, pid, tok["token"])
    assert c.welcome["user"] == {"id": mentee, "name": "Ugo", "role": "mentee"}
    await c.close()


def test_token_for_unknown_pair_or_non_member(server: ServerProcess) -> None:
    pair = server.pair()
    other = server.pair()
    status, body, _ = server.request(
        "POST", "/api/pairs/no-such-pair/tokens", {"user_id": pair.mentor}, ADMIN
    )
    assert_error(status, body, 404)
    for user in (other.mentor, "no-such-user"):
        status, body, _ = server.request(
            "POST", f"/api/pairs/{pair.id}/tokens", {"user_id": user}, ADMIN
        )
        assert_error(status, body, 404)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        {},
        {"ttl": 60},
        {"user_id": 7},
        {"user_id": ""},
        "MENTOR-ttl-0",
        "MENTOR-ttl--5",
        "MENTOR-ttl-str",
        "MENTOR-ttl-bool",
    ],
    ids=lambda b: repr(b)[:30],
)
def test_token_malformed_body(server: ServerProcess, body: Any) -> None:
    pair = server.pair()
    if isinstance(body, str):
        ttl = {
            "0": 0,
            "-5": -5,
            "str": "60",
            "bool": True,
        }[body.removeprefix("MENTOR-ttl-")]
        body = {"user_id": pair.mentor, "ttl": ttl}
    status, resp, _ = server.request("POST", f"/api/pairs/{pair.id}/tokens", body, ADMIN)
    assert_error(status, resp, 422)


@pytest.mark.parametrize("admin", [None, "wrong-admin-token"])
def test_token_needs_the_admin_token(server: ServerProcess, admin: str | None) -> None:
    pair = server.pair()
    status, body, _ = server.request(
        "POST", f"/api/pairs/{pair.id}/tokens", {"user_id": pair.mentor}, admin
    )
    assert_error(status, body, 401)


# GET /api/rooms/{pair}/sessions -------------------------------------------------------------
async def test_sessions_list(server: ServerProcess) -> None:
    pair = server.pair()
    status, body, _ = server.request(
        "GET", f"/api/rooms/{pair.id}/sessions", token=pair.mentor_token
    )
    assert status == 200 and body == []

    first = await ended_session(server, pair, ["one", "two", "three"])
    # the second session stays live: chats from both members, plus presence events
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    second = a.welcome["session_id"]
    assert second != first
    await a.send({"t": "chat", "id": "x", "text": "hi"})
    await a.expect("ack", id="x")
    await b.send({"t": "chat", "id": "y", "text": "hello"})
    await b.expect("ack", id="y")
    await a.send({"t": "typing", "on": True})
    await b.expect("typing")

    for tok in (pair.mentor_token, pair.mentee_token):
        status, rows, _ = server.request("GET", f"/api/rooms/{pair.id}/sessions", token=tok)
        assert status == 200, rows
        assert [r["id"] for r in rows] == [second, first]  # newest first
        for r in rows:
            assert set(r) == {"id", "started_at", "ended_at", "message_count"}
            assert isinstance(r["started_at"], float)
        live, done = rows
        assert live["ended_at"] is None
        assert live["message_count"] == 2  # the presence events are not counted
        assert isinstance(done["ended_at"], float)
        assert done["started_at"] <= done["ended_at"] <= live["started_at"]
        assert done["message_count"] == 3
    await a.close()
    await b.close()


def test_sessions_list_unauthorized(server: ServerProcess) -> None:
    pair = server.pair()
    path = f"/api/rooms/{pair.id}/sessions"
    for tok in (
        None,
        "garbage",
        "a.b.c",
        token(pair.mentor, pair.id, exp=time.time() - 60),  # expired
        token(
            pair.mentor, pair.id, secret="another-secret-0123456789abcdef0123456789"
        ),  # bad signature
    ):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 401)


def test_sessions_list_forbidden_and_not_found(server: ServerProcess) -> None:
    pair = server.pair()
    other = server.pair()
    path = f"/api/rooms/{pair.id}/sessions"
    # another pair's member, with a real token for their own room
    status, body, _ = server.request("GET", path, token=other.mentee_token)
    assert_error(status, body, 403)
    # another pair's member with a token claiming this room
    status, body, _ = server.request("GET", path, token=token(other.mentor, pair.id))
    assert_error(status, body, 403)
    # a member whose token is for another room
    status, body, _ = server.request("GET", path, token=token(pair.mentor, other.id))
    assert_error(status, body, 403)
    # a valid token for a pair id that does not exist
    status, body, _ = server.request(
        "GET", "/api/rooms/no-such-pair/sessions", token=token(pair.mentor, "no-such-pair")
    )
    assert_error(status, body, 404)


# GET /api/sessions/{sid}/transcript ---------------------------------------------------------
async def test_transcript_json_and_markdown(server: ServerProcess) -> None:
    pair = server.pair("Vera Vance", "Walt Webb")
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    sid = a.welcome["session_id"]
    texts = [("a", "How was the week?"), ("b", "Busy, but good"), ("a", "Tell me more")]
    for i, (who, text) in enumerate(texts):
        c = a if who == "a" else b
        await c.send({"t": "chat", "id": f"t{i}", "text": text})
        await c.expect("ack", id=f"t{i}")

    status, doc, headers = server.request(
        "GET", f"/api/sessions/{sid}/transcript", token=pair.mentee_token
    )
    assert status == 200, doc
    assert headers["content-type"].startswith("application/json")
    assert set(doc) == {"session", "events", "notes"}
    s = doc["session"]
    assert set(s) == {"id", "pair_id", "started_at", "ended_at"}
    assert s["id"] == sid and s["pair_id"] == pair.id and s["ended_at"] is None
    assert isinstance(s["started_at"], float)
    events = doc["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["t"] for e in events] == ["presence", "presence", "chat", "chat", "chat"]
    chats = [e for e in events if e["t"] == "chat"]
    assert [(c["from"], c["text"]) for c in chats] == [
        (pair.mentor if who == "a" else pair.mentee, text) for who, text in texts
    ]
    assert all(isinstance(e["ts"], float) for e in events)
    assert doc["notes"] == ""
    # what the members saw live is what is stored
    await drain_until_seq(b, len(events))
    assert [f for f in b.frames if "seq" in f and f["t"] != "ack"] == events

    status, md, headers = server.request(
        "GET", f"/api/sessions/{sid}/transcript?format=md", token=pair.mentor_token, raw=True
    )
    assert status == 200
    assert headers["content-type"].startswith("text/markdown")
    for _, text in texts:
        assert text in md
    assert "Vera Vance" in md and "Walt Webb" in md
    assert md.index(texts[0][1]) < md.index(texts[1][1]) < md.index(texts[2][1])
    await a.close()
    await b.close()


async def test_transcript_errors(server: ServerProcess) -> None:
    pair = server.pair()
    other = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    sid = a.welcome["session_id"]
    path = f"/api/sessions/{sid}/transcript"
    for tok in (None, "garbage", token(pair.mentor, pair.id, exp=time.time() - 60)):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 401)
    for tok in (other.mentor_token, token(other.mentee, pair.id), token(pair.mentor, other.id)):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 403)
    status, body, _ = server.request(
        "GET", "/api/sessions/no-such-session/transcript", token=pair.mentor_token
    )
    assert_error(status, body, 404)
    for fmt in ("pdf", "html"):
        status, body, _ = server.request("GET", f"{path}?format={fmt}", token=pair.mentor_token)
        assert_error(status, body, 422)
    await a.close()
