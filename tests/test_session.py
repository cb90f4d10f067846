"""Joining, durable chat, idempotent retries and resume, through a real server process."""

from __future__ import annotations

from tests.support import Client, ServerProcess


async def test_join_and_welcome(server: ServerProcess) -> None:
    pair = server.pair("Ana", "Ben")
    mentor = await Client.open(server, pair.id, pair.mentor_token)
    w = mentor.welcome
    assert w["user"] == {"id": pair.mentor, "name": "Ana", "role": "mentor"}
    assert sorted(m["role"] for m in w["members"]) == ["mentee", "mentor"]
    assert w["peers"] == []
    assert w["head"] == 0
    assert w["ice_servers"] == []
    assert isinstance(w["notes"], bytes) and w["notes"]
    joined = await mentor.expect("presence")
    assert joined["seq"] == 1 and joined["state"] == "joined"
    assert joined["user"]["id"] == pair.mentor

    mentee = await Client.open(server, pair.id, pair.mentee_token)
    assert [p["id"] for p in mentee.welcome["peers"]] == [pair.mentor]
    assert mentee.welcome["session_id"] == w["session_id"]
    # the mentee is replayed the mentor's join, then sees its own
    first = await mentee.expect("presence")
    second = await mentee.expect("presence")
    assert (first["seq"], first["user"]["id"]) == (1, pair.mentor)
    assert (second["seq"], second["user"]["id"]) == (2, pair.mentee)
    await mentor.expect("presence", seq=2)
    await mentor.close()
    await mentee.close()


async def test_chat_acked_and_delivered_in_order(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    await a.expect("presence", seq=2)
    for i in range(50):
        await a.send({"t": "chat", "id": f"m{i}", "text": f"hello {i}"})
    acks = [await a.expect("ack") for _ in range(50)]
    assert [x["id"] for x in acks] == [f"m{i}" for i in range(50)]
    seqs = [x["seq"] for x in acks]
    assert seqs == list(range(3, 53))
    got = [await b.expect("chat") for _ in range(50)]
    assert [c["text"] for c in got] == [f"hello {i}" for i in range(50)]
    assert [c["seq"] for c in got] == seqs
    assert all(c["from"] == pair.mentor and isinstance(c["ts"], float) for c in got)
    # sender receives its own chats too, in the same order
    own = [f for f in a.frames if f["t"] == "chat"]
    while len(own) < 50:
        own.append(await a.expect("chat"))
    assert [c["seq"] for c in own] == seqs
    # acked means stored: the transcript has every one
    status, doc, _ = server.request(
        "GET", f"/api/sessions/{a.welcome['session_id']}/transcript", token=pair.mentee_token
    )
    assert status == 200
    stored = [e for e in doc["events"] if e["t"] == "chat"]
    assert [e["id"] for e in stored] == [f"m{i}" for i in range(50)]
    await a.close()
    await b.close()


async def test_retry_with_same_id_is_idempotent(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    await a.send({"t": "chat", "id": "once", "text": "only once"})
    ack = await a.expect("ack", id="once")
    await a.close()
    await b.expect("presence", state="left")  # the old connection is gone: a2 is a new join
    a2 = await Client.open(
        server,
        pair.id,
        pair.mentor_token,
        resume={"session_id": a.welcome["session_id"], "last_seq": ack["seq"]},
    )
    await a2.send({"t": "chat", "id": "once", "text": "only once"})
    again = await a2.expect("ack", id="once")
    assert again["seq"] == ack["seq"]
    # barrier: both have seen the mentor's new join, the last event; then both heads agree
    await a2.expect("presence", state="joined")
    await b.expect("presence", state="joined")
    await a2.send({"t": "ping"})
    pong = await a2.expect("pong")
    await b.send({"t": "ping"})
    await b.expect("pong", head=pong["head"])
    chats = [f for f in b.frames + a2.frames if f["t"] == "chat"]
    assert [c["seq"] for c in chats if c in b.frames] == [ack["seq"]]
    assert not [c for c in a2.frames if c["t"] == "chat"]
    _, doc, _ = server.request(
        "GET", f"/api/sessions/{a.welcome['session_id']}/transcript", token=pair.mentor_token
    )
    assert [e["id"] for e in doc["events"] if e["t"] == "chat"] == ["once"]
    await a2.close()
    await b.close()


async def test_resume_replays_only_the_missing_events(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    await b.send({"t": "chat", "id": "b1", "text": "before"})
    seen = await a.expect("chat", id="b1")
    await a.close()
    await b.expect("presence", state="left")
    for i in range(5):
        await b.send({"t": "chat", "id": f"x{i}", "text": f"while away {i}"})
        await b.expect("ack", id=f"x{i}")
    sid = a.welcome["session_id"]
    resumed = await Client.open(
        server, pair.id, pair.mentor_token, resume={"session_id": sid, "last_seq": seen["seq"]}
    )
    head = resumed.welcome["head"]
    replay = []
    while not replay or replay[-1]["seq"] < head:
        replay.append(await resumed.recv())
    assert [e["seq"] for e in replay] == list(range(seen["seq"] + 1, head + 1))
    assert [e["text"] for e in replay if e["t"] == "chat"] == [f"while away {i}" for i in range(5)]
    live = await resumed.expect("presence", state="joined")
    assert live["seq"] == head + 1

    # without resume: the whole session from seq 1, each event once
    fresh = await Client.open(server, pair.id, pair.mentor_token)
    await resumed.closed()
    events = []
    while not events or events[-1]["seq"] < fresh.welcome["head"]:
        events.append(await fresh.recv())
    assert [e["seq"] for e in events] == list(range(1, fresh.welcome["head"] + 1))
    await fresh.close()
    await b.close()


async def test_nothing_is_stored_after_ended(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    await a.expect("presence", seq=2)
    # the end and a chat and a second end back to back, before the end can be stored
    await a.send({"t": "end"})
    await a.send({"t": "chat", "id": "late", "text": "after the end"})
    await a.send({"t": "end"})
    ended = await b.expect("ended")
    assert await b.closed() == 1000
    assert await a.closed() == 1000
    _, doc, _ = server.request(
        "GET", f"/api/sessions/{a.welcome['session_id']}/transcript", token=pair.mentor_token
    )
    kinds = [e["t"] for e in doc["events"]]
    assert kinds.count("ended") == 1 and kinds[-1] == "ended"
    assert doc["events"][-1]["seq"] == ended["seq"]
    assert "late" not in [e.get("id") for e in doc["events"]]
