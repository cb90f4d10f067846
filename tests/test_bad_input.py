"""Bad input through real server processes: auth failures, handshake checks, recoverable errors,
frame size, rate limit, slow readers and the JSON subprotocol. Each case asserts its exact code."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import SECRET, Client, ServerProcess

MSGPACK = "menteo.v1.msgpack"
JSON = "menteo.v1.json"


def mint(sub: str, room: str, *, secret: str = SECRET, ttl: int = 3600) -> str:
    return jwt.encode(
        {"sub": sub, "room": room, "exp": int(time.time()) + ttl}, secret, algorithm="HS256"
    )


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a 1 s hello timeout, 1 KiB frames and 5 frames/s."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("strict"),
        {"MENTEO_HELLO_TIMEOUT": "1", "MENTEO_MAX_FRAME": "1024", "MENTEO_RATE_LIMIT": "5"},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


async def hello_close(server: ServerProcess, pair_id: str, hello: Any) -> int | None:
    """Connect, send ``hello`` (a frame, or raw bytes), return the close code."""
    c = await Client.open(server, pair_id, None)
    if isinstance(hello, bytes | str):
        await c.ws.send(hello)
    else:
        await c.send(hello)
    code = await c.closed(timeout=5)
    assert not any(f.get("t") == "welcome" for f in c.frames), c.frames
    return code


async def seen(c: Client, t: str, **match: Any) -> dict[str, Any]:
    """A frame already received (e.g. skipped while waiting for a pong), or the next one."""
    for f in c.frames:
        if f.get("t") == t and all(f.get(k) == v for k, v in match.items()):
            return f
    return await c.expect(t, **match)


async def ping_pong(c: Client) -> None:
    await c.send({"t": "ping"})
    pong = await c.expect("pong")
    assert isinstance(pong["head"], int)


# auth ------------------------------------------------------------------------------------------
async def test_bad_signature_closes_4401(server: ServerProcess) -> None:
    pair = server.pair()
    token = mint(pair.mentor, pair.id, secret="another-secret-0123456789abcdef012345")
    assert await hello_close(server, pair.id, {"t": "hello", "token": token}) == 4401


async def test_expired_token_closes_4401(server: ServerProcess) -> None:
    pair = server.pair()
    token = mint(pair.mentor, pair.id, ttl=-60)
    assert await hello_close(server, pair.id, {"t": "hello", "token": token}) == 4401


async def test_garbage_token_closes_4401(server: ServerProcess) -> None:
    pair = server.pair()
    assert await hello_close(server, pair.id, {"t": "hello", "token": "not.a.jwt"}) == 4401


async def test_token_for_another_room_closes_4403(server: ServerProcess) -> None:
    a, b = server.pair(), server.pair()
    # a's valid mentor token, presented at b's room
    assert await hello_close(server, b.id, {"t": "hello", "token": a.mentor_token}) == 4403


async def test_non_member_closes_4403(server: ServerProcess) -> None:
    a, b = server.pair(), server.pair()
    token = mint(a.mentor, b.id)  # room matches the URL, but sub is not one of b's members
    assert await hello_close(server, b.id, {"t": "hello", "token": token}) == 4403
    # b's room is untouched: its own member joins as the first presence
    c = await Client.open(server, b.id, b.mentee_token)
    assert c.welcome["head"] == 0
    await c.expect("presence", seq=1, state="joined")
    await c.close()


async def test_unknown_room_closes_4403(server: ServerProcess) -> None:
    token = mint("nobody", "no-such-pair")
    assert await hello_close(server, "no-such-pair", {"t": "hello", "token": token}) == 4403


@pytest.mark.parametrize(
    "first",
    [
        {"t": "ping"},
        {"t": "chat", "id": "x", "text": "hi"},
        {"t": "hello"},
        {"t": "hello", "token": 42},
        {"token": "x"},
        b"\xc1",
        "a text frame",
    ],
    ids=["ping", "chat", "no-token", "token-not-str", "no-t", "not-msgpack", "text"],
)
async def test_first_frame_not_hello_closes_4401(server: ServerProcess, first: Any) -> None:
    pair = server.pair()
    if isinstance(first, dict) and first.get("token") == "x":
        first = {"token": pair.mentor_token}
    assert await hello_close(server, pair.id, first) == 4401


async def test_silence_closes_4401(strict: ServerProcess) -> None:
    pair = strict.pair()
    started = time.monotonic()  # before the handshake: the server's 1 s starts at its accept
    c = await Client.open(strict, pair.id, None)
    assert await c.closed(timeout=5) == 4401
    assert time.monotonic() - started >= 0.9  # the 1 s timeout, not an immediate refusal


async def test_late_hello_closes_4401(strict: ServerProcess) -> None:
    pair = strict.pair()
    c = await Client.open(strict, pair.id, None)
    await asyncio.sleep(1.5)  # the scenario: a hello after the 1 s timeout
    try:
        await c.send({"t": "hello", "token": pair.mentor_token})
    except ConnectionClosed:
        pass
    assert await c.closed(timeout=5) == 4401
    assert not any(f.get("t") == "welcome" for f in c.frames)
    # the member can still join properly
    ok = await Client.open(strict, pair.id, pair.mentor_token)
    await ok.expect("presence", state="joined")
    await ok.close()


# handshake -----------------------------------------------------------------------------------
async def test_missing_subprotocol_refused_400(server: ServerProcess) -> None:
    pair = server.pair()
    with pytest.raises(InvalidStatus) as err:
        await connect(f"{server.ws}/ws/rooms/{pair.id}")
    assert err.value.response.status_code == 400


async def test_unknown_subprotocol_refused_400(server: ServerProcess) -> None:
    pair = server.pair()
    with pytest.raises(InvalidStatus) as err:
        await connect(f"{server.ws}/ws/rooms/{pair.id}", subprotocols=["menteo.v0"])  # type: ignore[list-item]
    assert err.value.response.status_code == 400


async def test_foreign_origin_refused_403(server: ServerProcess) -> None:
    pair = server.pair()
    with pytest.raises(InvalidStatus) as err:
        await connect(
            f"{server.ws}/ws/rooms/{pair.id}",
            subprotocols=[MSGPACK],  # type: ignore[list-item]
            origin="http://evil.example",  # type: ignore[arg-type]
        )
    assert err.value.response.status_code == 403


async def test_own_origin_and_no_origin_allowed(server: ServerProcess) -> None:
    pair = server.pair()
    own = await Client.open(server, pair.id, pair.mentor_token, origin=server.http)
    assert own.ws.subprotocol == MSGPACK
    await own.close()
    bare = await Client.open(server, pair.id, pair.mentee_token)  # websockets sends no Origin
    assert bare.ws.request is not None and "Origin" not in bare.ws.request.headers
    await ping_pong(bare)
    await bare.close()


# recoverable errors ----------------------------------------------------------------------------
BAD: list[tuple[str, Any, str, str | None]] = [
    ("not-msgpack", b"\xc1\xc1\xc1", "bad_frame", None),
    ("truncated-msgpack", b"\x82\xa1t", "bad_frame", None),
    ("list", msgpack.packb(["t", "ping"]), "bad_frame", None),
    ("int", msgpack.packb(7), "bad_frame", None),
    ("no-t", {"id": "m1", "text": "hi"}, "bad_frame", "m1"),
    ("t-not-str", {"t": 1}, "bad_frame", None),
    ("unknown-t", {"t": "shout", "id": "u1"}, "bad_frame", "u1"),
    ("text-frame", json.dumps({"t": "ping"}), "bad_frame", None),
    ("chat-no-id", {"t": "chat", "text": "hi"}, "invalid", None),
    ("chat-id-not-str", {"t": "chat", "id": 5, "text": "hi"}, "invalid", None),
    ("chat-text-not-str", {"t": "chat", "id": "c1", "text": 5}, "invalid", "c1"),
    ("chat-no-text", {"t": "chat", "id": "c2"}, "invalid", "c2"),
    ("chat-empty-text", {"t": "chat", "id": "c3", "text": ""}, "invalid", "c3"),
    ("chat-4001", {"t": "chat", "id": "c4", "text": "a" * 4001}, "invalid", "c4"),
    ("chat-empty-id", {"t": "chat", "id": "", "text": "hi"}, "invalid", ""),
    ("chat-id-65", {"t": "chat", "id": "i" * 65, "text": "hi"}, "invalid", "i" * 65),
    ("typing-not-bool", {"t": "typing", "on": 1}, "invalid", None),
    ("typing-missing", {"t": "typing"}, "invalid", None),
    ("notes-str", {"t": "notes", "u": "text"}, "invalid", None),
    ("notes-missing", {"t": "notes"}, "invalid", None),
    ("notes-not-yjs", {"t": "notes", "u": b"\x01"}, "notes_rejected", None),
    ("awareness-not-bytes", {"t": "awareness", "u": [1]}, "invalid", None),
    ("signal-not-map", {"t": "signal", "data": "offer"}, "invalid", None),
    ("signal-bad-type", {"t": "signal", "data": {"type": "hack"}}, "invalid", None),
    ("hello-again", {"t": "hello", "token": "x"}, "invalid", None),
]


@pytest.mark.parametrize(("frame", "code", "ref"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_recoverable_error(
    server: ServerProcess, frame: Any, code: str, ref: str | None
) -> None:
    pair = server.pair()
    c = await Client.open(server, pair.id, pair.mentor_token)
    await c.expect("presence", seq=1)
    if isinstance(frame, dict):
        await c.send(frame)
    else:
        await c.ws.send(frame)
    err = await c.expect("error")
    assert (err["code"], err["ref"]) == (code, ref), err
    assert isinstance(err["message"], str) and err["message"]
    await ping_pong(c)  # still usable
    # nothing durable came of it
    await c.send({"t": "chat", "id": "after", "text": "still here"})
    assert (await c.expect("ack", id="after"))["seq"] == 2
    await c.close()


async def test_notes_rejected_leaves_notes_intact(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    await a.send({"t": "notes", "u": b"\x00\x01\x02garbage"})
    assert (await a.expect("error"))["code"] == "notes_rejected"
    await ping_pong(a)
    await ping_pong(b)
    assert not any(f["t"] == "notes" for f in b.frames)  # nothing relayed
    await a.close()
    await b.close()
    again = await Client.open(server, pair.id, pair.mentor_token)
    assert again.welcome["notes"] == a.welcome["notes"]
    await again.close()


async def test_4000_multibyte_code_points_accepted(server: ServerProcess) -> None:
    pair = server.pair()
    c = await Client.open(server, pair.id, pair.mentor_token)
    text = "é" * 3999 + "😀"  # 4000 code points, 8002 UTF-8 bytes
    await c.send({"t": "chat", "id": "wide", "text": text})
    ack = await c.expect("ack", id="wide")
    chat = await c.expect("chat", id="wide")
    assert chat["text"] == text and chat["seq"] == ack["seq"]
    await c.close()


# frame size --------------------------------------------------------------------------------------
async def test_frame_over_max_closes_1009(strict: ServerProcess) -> None:
    pair = strict.pair()
    big = await Client.open(strict, pair.id, pair.mentor_token)
    other = await Client.open(strict, pair.id, pair.mentee_token)
    await big.ws.send(msgpack.packb({"t": "chat", "id": "big", "text": "x" * 1990}))
    assert await big.closed(timeout=5) == 1009
    await ping_pong(other)
    left = await seen(other, "presence", state="left")
    assert left["user"]["id"] == pair.mentor
    await other.close()


async def test_frame_just_under_max_accepted(strict: ServerProcess) -> None:
    pair = strict.pair()
    c = await Client.open(strict, pair.id, pair.mentor_token)
    frame = msgpack.packb({"t": "chat", "id": "fits", "text": "x" * 900})
    assert len(frame) < 1024
    await c.ws.send(frame)
    await c.expect("ack", id="fits")
    await c.close()


async def test_oversized_hello_closes_1009(strict: ServerProcess) -> None:
    pair = strict.pair()
    hello = {"t": "hello", "token": pair.mentor_token, "pad": "p" * 2000}
    assert await hello_close(strict, pair.id, hello) == 1009


# rate limit --------------------------------------------------------------------------------------
async def test_flood_is_warned_then_closed_4429(strict: ServerProcess) -> None:
    pair = strict.pair()
    flooder = await Client.open(strict, pair.id, pair.mentor_token)
    calm = await Client.open(strict, pair.id, pair.mentee_token)
    await flooder.expect("presence", seq=2)
    for _ in range(30):
        await flooder.send({"t": "ping"})
    limited = await flooder.expect("error", code="rate_limited")
    assert limited["ref"] is None
    try:
        for _ in range(200):
            await flooder.send({"t": "ping"})
    except ConnectionClosed:
        pass
    assert await flooder.closed(timeout=5) == 4429
    # the calm member is unaffected, and sees the flooder leave
    await ping_pong(calm)
    left = await seen(calm, "presence", state="left")
    assert left["user"]["id"] == pair.mentor
    status, doc, _ = strict.request(
        "GET", f"/api/sessions/{calm.welcome['session_id']}/transcript", token=pair.mentee_token
    )
    assert status == 200
    states = [(e["user"]["id"], e["state"]) for e in doc["events"] if e["t"] == "presence"]
    assert states[-1] == (pair.mentor, "left")
    await calm.close()


async def test_burst_in_one_write_is_warned_before_4429(strict: ServerProcess) -> None:
    """All frames in one TCP write: the server reads them without pausing, and the
    rate_limited warnings must still reach the client before the 4429 close."""
    pair = strict.pair()
    c = await Client.open(strict, pair.id, pair.mentor_token)
    await c.expect("presence", seq=1)
    for _ in range(30):
        c.ws.protocol.send_binary(msgpack.packb({"t": "ping"}))
    c.ws.send_data()  # one write for all 30 frames
    assert await c.closed(timeout=5) == 4429
    answers = [(f["t"], f.get("code")) for f in c.frames if f["t"] in ("pong", "error")]
    assert answers.count(("pong", None)) >= 10  # the burst of 2 x 5
    assert ("error", "rate_limited") in answers, answers
    assert set(answers) == {("pong", None), ("error", "rate_limited")}


async def test_sending_within_rate_is_never_limited(strict: ServerProcess) -> None:
    pair = strict.pair()
    c = await Client.open(strict, pair.id, pair.mentor_token)
    for _ in range(8):  # within the burst of 10
        await c.send({"t": "ping"})
    for _ in range(8):
        await c.expect("pong")
    assert not any(f["t"] == "error" for f in c.frames)
    await c.close()


# slow reader -------------------------------------------------------------------------------------
async def test_slow_reader_closed_1013(workdir: Path) -> None:
    srv = ServerProcess(workdir, {"MENTEO_RATE_LIMIT": "0", "MENTEO_SEND_QUEUE": "64"}).start()
    try:
        pair = srv.pair()
        # max_queue=1: the client stops reading from its socket, and this test never calls recv
        slow = await Client.open(srv, pair.id, pair.mentee_token, max_queue=1)
        sender = await Client.open(srv, pair.id, pair.mentor_token)
        await sender.expect("presence", seq=2)
        text = "y" * 3900
        sent = acked = last_seq = 0
        left = None
        deadline = time.monotonic() + 30
        while left is None and sent < 3000 and time.monotonic() < deadline:
            for _ in range(20):
                await sender.send({"t": "chat", "id": f"s{sent}", "text": text})
                sent += 1
            while acked < sent:  # the sender keeps getting acks meanwhile
                f = await sender.recv()
                if f["t"] == "ack":
                    assert f["id"] == f"s{acked}"
                    acked += 1
                    last_seq = f["seq"]
                elif f["t"] == "presence" and f["state"] == "left":
                    left = f
        if left is None:
            left = await sender.expect("presence", state="left", timeout=5)
        assert left["user"]["id"] == pair.mentee
        await ping_pong(sender)  # the sender's room still works
        # the slow client drains what reached it, then finds the 1013 close
        got = 0
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.ws.recv(), 10)
                got += 1
        assert slow.ws.close_code == 1013
        assert got < sent  # it was cut off, not served everything
        # it may reconnect and resume
        again = await Client.open(
            srv,
            pair.id,
            pair.mentee_token,
            resume={"session_id": slow.welcome["session_id"], "last_seq": last_seq},
        )
        assert again.welcome["session_id"] == slow.welcome["session_id"]
        rejoined = await again.expect("presence", state="joined")
        assert rejoined["user"]["id"] == pair.mentee and rejoined["seq"] > last_seq
        await sender.close()
        await again.close()
    finally:
        srv.stop()


# JSON subprotocol --------------------------------------------------------------------------------
async def test_json_subprotocol(server: ServerProcess) -> None:
    pair = server.pair()
    ws = await connect(
        f"{server.ws}/ws/rooms/{pair.id}",
        subprotocols=[JSON],  # type: ignore[list-item]
    )
    assert ws.subprotocol == JSON

    async def recv(t: str) -> dict[str, Any]:
        for _ in range(20):
            data = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(data, str)  # text frames
            frame: dict[str, Any] = json.loads(data)
            if frame["t"] == t:
                return frame
        raise AssertionError(f"no {t}")

    await ws.send(json.dumps({"t": "hello", "token": pair.mentor_token}))
    welcome = await recv("welcome")
    assert welcome["user"]["id"] == pair.mentor
    assert isinstance(welcome["notes"], str)
    assert base64.b64decode(welcome["notes"], validate=True)  # an empty doc's update, as base64
    await ws.send(json.dumps({"t": "chat", "id": "j1", "text": "über json"}))
    ack = await recv("ack")
    assert ack == {"t": "ack", "id": "j1", "seq": ack["seq"]} and ack["seq"] >= 2
    chat = await recv("chat")
    assert (chat["id"], chat["text"], chat["from"]) == ("j1", "über json", pair.mentor)
    await ws.send("{not json")
    err = await recv("error")
    assert (err["code"], err["ref"]) == ("bad_frame", None)
    await ws.send(msgpack.packb({"t": "ping"}))  # a binary frame on the JSON subprotocol
    assert (await recv("error"))["code"] == "bad_frame"
    await ws.send(json.dumps({"t": "notes", "u": "%%%"}))
    assert (await recv("error"))["code"] == "invalid"
    await ws.send(json.dumps({"t": "notes", "u": base64.b64encode(b"\x01").decode()}))
    assert (await recv("error"))["code"] == "notes_rejected"
    await ws.send(json.dumps({"t": "ping"}))
    assert (await recv("pong"))["head"] == ack["seq"]
    await ws.close()
