"""The HTTP API through a real server process: admin, sessions, transcripts, errors."""

from __future__ import annotations

import re
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
            assert set(r) == {"id", "started_at", "ended_at", "message_count", "goal"}
            assert r["goal"] is None
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


# contract v1.1: search, journey, erase ---------------------------------------------------------
async def durable(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    """Send an acked frame; return its ack once stored."""
    await client.send(frame)
    ack = await client.expect("ack", id=frame["id"])
    assert ack.get("seq") is not None, ack
    return ack


async def journey_session(server: ServerProcess, pair: Pair) -> tuple[str, str]:
    """One ended session with a goal, chats, an item, a key moment; return (session, item)."""
    a = await Client.open(server, pair.id, pair.mentor_token)
    await durable(a, {"t": "goal", "id": "g1", "text": "Plan the Budget"})
    chat = await durable(a, {"t": "chat", "id": "c1", "text": "The budget is tight this year"})
    await durable(a, {"t": "chat", "id": "c2", "text": "Nothing else to say"})
    await durable(
        a, {"t": "item", "id": "i1", "text": "Cut the budget", "owner": pair.mentee, "due": None}
    )
    item = await a.expect("item")
    await durable(
        a,
        {"t": "mark", "id": "m1", "kind": "decision", "text": "Budget first", "ref": chat["seq"]},
    )
    await a.send({"t": "end"})
    await a.expect("ended")
    assert await a.closed() == 1000
    return a.welcome["session_id"], item["item"]["id"]


def search(
    server: ServerProcess, pair: Pair, query: str, tok: str | None = None
) -> tuple[int, Any]:
    status, body, _ = server.request(
        "GET", f"/api/rooms/{pair.id}/search?{query}", token=tok or pair.mentee_token
    )
    return status, body


async def test_sessions_list_shows_the_goal(server: ServerProcess) -> None:
    pair = server.pair()
    sid, _ = await journey_session(server, pair)
    status, rows, _ = server.request(
        "GET", f"/api/rooms/{pair.id}/sessions", token=pair.mentor_token
    )
    assert status == 200, rows
    assert [(r["id"], r["goal"], r["message_count"]) for r in rows] == [(sid, "Plan the Budget", 2)]


async def test_search(server: ServerProcess) -> None:
    pair, other = server.pair(), server.pair()
    sid, _ = await journey_session(server, pair)
    await journey_session(server, other)
    status, body = search(server, pair, "q=BUDGET")
    assert status == 200, body
    assert set(body) == {"results"}
    got = body["results"]
    assert {r["kind"] for r in got} == {"goal", "chat", "item", "mark"}
    assert all(r["session_id"] == sid for r in got)  # never the other pair's
    for r in got:
        assert set(r) == {"session_id", "kind", "seq", "text", "ts"}
        assert "budget" in r["text"].lower() and len(r["text"]) <= 300
    assert [r["ts"] for r in got] == sorted((r["ts"] for r in got), reverse=True)  # newest first
    status, body = search(server, pair, "q=budget&limit=2")
    assert status == 200 and body["results"] == got[:2]
    status, body = search(server, pair, "q=budget+tight")
    assert status == 200 and [r["kind"] for r in body["results"]] == ["chat"]
    # whole words; no query syntax; punctuation alone finds nothing
    for q in ("budg", "budgets", "%21%21%21", "%22", "NEAR%28budget", "budget%20OR%20x"):
        status, body = search(server, pair, f"q={q}")
        assert status == 200 and body == {"results": []}, (q, body)


def test_search_errors(server: ServerProcess) -> None:
    pair, other = server.pair(), server.pair()
    path = f"/api/rooms/{pair.id}/search?q=x"
    for tok in (None, "garbage", token(pair.mentor, pair.id, exp=time.time() - 60)):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 401)
    for tok in (other.mentor_token, token(other.mentee, pair.id), token(pair.mentor, other.id)):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 403)
    status, body, _ = server.request(
        "GET", "/api/rooms/no-such-pair/search?q=x", token=token(pair.mentor, "no-such-pair")
    )
    assert_error(status, body, 404)
    for query in ("", "q=", "q=%20%20", "q=%0A", "limit=5", "q=x&limit=0", "q=x&limit=101",
                  "q=x&limit=-1", "q=x&limit=ten", "q=x&limit=", "q=x&limit=1.5",
                  "q=" + "x" * 501):  # fmt: skip
        status, body = search(server, pair, query)
        assert_error(status, body, 422)
    for query in ("q=x&limit=1", "q=x&limit=100", "q=" + "x" * 500):
        status, body = search(server, pair, query)
        assert status == 200 and body == {"results": []}, body


async def test_journey_json_and_markdown(server: ServerProcess) -> None:
    pair = server.pair("Ada *Lovelace*", "Grace <b>Hopper</b>")
    s1, item_id = await journey_session(server, pair)
    b = await Client.open(server, pair.id, pair.mentee_token)
    s2 = b.welcome["session_id"]
    assert [i["id"] for i in b.welcome["items"]] == [item_id]  # still open: carried over
    done = await durable(b, {"t": "item_update", "id": "u1", "item": item_id, "state": "done"})
    forged = "fine\r\n## Forged heading\u2028- `10:00:00` **Ada**: <script>x</script>"
    await durable(b, {"t": "chat", "id": "c1", "text": forged})
    await durable(b, {"t": "goal", "id": "g1", "text": ""})

    status, doc, headers = server.request(
        "GET", f"/api/rooms/{pair.id}/journey", token=pair.mentor_token
    )
    assert status == 200, doc
    assert headers["content-type"].startswith("application/json")
    assert doc["pair"] == {
        "id": pair.id,
        "mentor": {"id": pair.mentor, "name": "Ada *Lovelace*"},
        "mentee": {"id": pair.mentee, "name": "Grace <b>Hopper</b>"},
    }
    assert [s["id"] for s in doc["sessions"]] == [s1, s2]
    first, second = doc["sessions"]
    assert set(first) == {"id", "started_at", "ended_at", "goal", "message_count", "marks"}
    assert (first["goal"], first["message_count"]) == ("Plan the Budget", 2)
    assert (second["goal"], second["message_count"], second["ended_at"]) == (None, 1, None)
    [mark] = first["marks"]
    assert set(mark) == {"seq", "kind", "text", "by", "ts", "ref"}
    assert (mark["kind"], mark["text"], mark["by"]) == ("decision", "Budget first", pair.mentor)
    assert second["marks"] == []
    [item] = doc["items"]
    assert set(item) == {
        "id", "text", "owner", "due", "state", "by", "session_id", "created_at", "history"
    }  # fmt: skip
    assert (item["id"], item["text"], item["state"], item["session_id"]) == (
        item_id,
        "Cut the budget",
        "done",
        s1,
    )
    created, updated = item["history"]
    assert (created["session_id"], created["by"], created["text"], created["state"]) == (
        s1,
        pair.mentor,
        "Cut the budget",
        "open",
    )
    assert updated == {
        "session_id": s2,
        "seq": done["seq"],
        "by": pair.mentee,
        "ts": updated["ts"],
        "state": "done",
    }

    status, md, headers = server.request(
        "GET", f"/api/rooms/{pair.id}/journey?format=md", token=pair.mentee_token, raw=True
    )
    assert status == 200
    assert headers["content-type"].startswith("text/markdown")
    assert r"Ada \*Lovelace\*" in md and r"Grace \<b\>Hopper\</b\>" in md
    assert "<b>" not in md and pair.mentor not in md and pair.mentee not in md  # names, not ids
    for text in ("Plan the Budget", "Budget first", "Cut the budget", "marked it done"):
        assert text in md, text
    status, body, _ = server.request(
        "GET", f"/api/rooms/{pair.id}/journey?format=pdf", token=pair.mentee_token
    )
    assert_error(status, body, 422)

    # the transcript's Markdown: the goal and its change, items, key moments, escaped text
    status, md, _ = server.request(
        "GET", f"/api/sessions/{s2}/transcript?format=md", token=pair.mentee_token, raw=True
    )
    assert status == 200
    assert "cleared the goal" in md and "marked it done" in md and "Cut the budget" in md
    assert not any(line.startswith("## Forged") for line in md.splitlines())
    assert not any("<script>" in line for line in md.splitlines())
    assert "\r" not in md and "\u2028" not in md
    # the forged lines stay inside the chat's list item, escaped
    assert "\n  \\## Forged heading\n  \\- \\`10:00:00\\` \\*\\*Ada\\*\\*: \\<script\\>" in md
    status, md, _ = server.request(
        "GET", f"/api/sessions/{s1}/transcript?format=md", token=pair.mentee_token, raw=True
    )
    assert "Plan the Budget" in md and "Decision" in md and "Budget first" in md
    await b.close()


def test_journey_errors(server: ServerProcess) -> None:
    pair, other = server.pair(), server.pair()
    path = f"/api/rooms/{pair.id}/journey"
    status, doc, _ = server.request("GET", path, token=pair.mentee_token)
    assert status == 200 and doc["sessions"] == [] and doc["items"] == []
    for tok in (None, "garbage", token(pair.mentor, pair.id, exp=time.time() - 60)):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 401)
    for tok in (other.mentor_token, token(other.mentee, pair.id), token(pair.mentor, other.id)):
        status, body, _ = server.request("GET", path, token=tok)
        assert_error(status, body, 403)
    status, body, _ = server.request(
        "GET", "/api/rooms/no-such-pair/journey", token=token(pair.mentor, "no-such-pair")
    )
    assert_error(status, body, 404)


async def test_off_the_record_in_the_transcript_markdown(server: ServerProcess) -> None:
    pair = server.pair("Vera Vance", "Walt Webb")
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    sid = a.welcome["session_id"]
    await durable(b, {"t": "record", "id": "r1", "on": False})  # Walt asks
    await durable(a, {"t": "record", "id": "r2", "on": False})  # Vera agrees: off
    await b.send({"t": "chat", "id": "secret", "text": "kept nowhere"})
    assert (await b.expect("ack", id="secret"))["seq"] is None
    await durable(a, {"t": "record", "id": "r3", "on": True})  # back on
    await durable(a, {"t": "record", "id": "r4", "on": False})  # Vera asks
    await durable(b, {"t": "record", "id": "r5", "on": True})  # Walt declines
    await durable(a, {"t": "chat", "id": "c1", "text": "on the record again"})
    status, md, _ = server.request(
        "GET", f"/api/sessions/{sid}/transcript?format=md", token=pair.mentor_token, raw=True
    )
    assert status == 200
    assert "kept nowhere" not in md
    stretches = [line for line in md.splitlines() if "off the record" in line]
    assert len(stretches) == 2, stretches
    assert re.search(
        r"off the record \d\d:\d\d\u2013\d\d:\d\d, asked by Walt Webb, agreed by Vera Vance",
        stretches[0],
    ), stretches
    assert "Vera Vance asked to go off the record; Walt Webb declined" in stretches[1]
    status, body = search(server, pair, "q=nowhere")
    assert status == 200 and body == {"results": []}
    await a.close()
    await b.close()


async def test_erase_a_pair(server: ServerProcess) -> None:
    pair, other = server.pair(), server.pair()
    sid, _ = await journey_session(server, pair)
    await journey_session(server, other)
    a = await Client.open(server, pair.id, pair.mentor_token)
    path = f"/api/pairs/{pair.id}"
    for tok in (None, "wrong-admin-token", pair.mentor_token):
        status, body, _ = server.request("DELETE", path, token=tok)
        assert_error(status, body, 401)
    status, body, _ = server.request("DELETE", path, token=ADMIN)
    assert (status, body) == (204, None)
    assert await a.closed() == 4403  # its open socket is closed
    for get in (
        f"/api/rooms/{pair.id}/sessions",
        f"/api/rooms/{pair.id}/journey",
        f"/api/rooms/{pair.id}/search?q=budget",
        f"/api/sessions/{sid}/transcript",
    ):
        status, body, _ = server.request("GET", get, token=pair.mentor_token)
        assert_error(status, body, 404)
    again = await Client.open(server, pair.id, None)
    await again.send({"t": "hello", "token": pair.mentee_token})
    assert await again.closed() == 4403
    status, body, _ = server.request(
        "POST", f"/api/pairs/{pair.id}/tokens", {"user_id": pair.mentor}, ADMIN
    )
    assert_error(status, body, 404)
    status, body, _ = server.request("DELETE", path, token=ADMIN)
    assert_error(status, body, 404)
    status, body, _ = server.request("DELETE", "/api/pairs/no-such-pair", token=ADMIN)
    assert_error(status, body, 404)
    # the other pair keeps everything
    status, body = search(server, other, "q=budget")
    assert status == 200 and len(body["results"]) == 4
