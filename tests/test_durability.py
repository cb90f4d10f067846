"""Sessions that end, servers that stop or die, and rooms that must not slow each other down.

Each test runs its own server process(es) in ``workdir``; a restart reuses the same database.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support import Client, Pair, ServerProcess


# helpers -------------------------------------------------------------------------------------
def last_seen(client: Client) -> int:
    """The highest durable seq the client has received."""
    return max((f["seq"] for f in client.events()), default=0)


async def read_to(client: Client, seq: int, timeout: float = 10.0) -> None:
    """Receive until the client has seen the durable event ``seq``."""
    deadline = time.monotonic() + timeout
    while last_seen(client) < seq:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"seq {seq} not seen; last {last_seen(client)}")
        await client.recv(left)


async def until_own_join(client: Client, timeout: float = 10.0) -> dict[str, Any]:
    """Receive (the replay, then live events) until the client's own "joined" presence."""
    uid = client.welcome["user"]["id"]
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no own join; got {client.frames[-5:]}")
        frame = await client.recv(left)
        if frame["t"] == "presence" and frame["user"]["id"] == uid and frame["state"] == "joined":
            return frame


def sessions(server: ServerProcess, pair: Pair) -> list[dict[str, Any]]:
    status, body, _ = server.request(
        "GET", f"/api/rooms/{pair.id}/sessions", token=pair.mentor_token
    )
    assert status == 200, body
    rows: list[dict[str, Any]] = body
    return rows


def transcript(server: ServerProcess, pair: Pair, sid: str) -> dict[str, Any]:
    status, body, _ = server.request(
        "GET", f"/api/sessions/{sid}/transcript", token=pair.mentee_token
    )
    assert status == 200, body
    doc: dict[str, Any] = body
    return doc


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def notes_doc(state: bytes) -> tuple[pycrdt.Doc[pycrdt.Text], pycrdt.Text]:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get("notes", type=pycrdt.Text)
    doc.apply_update(state)
    return doc, text


async def stop(server: ServerProcess, sig: int) -> tuple[int, float]:
    """Signal the server off the event loop (so clients can finish their close handshakes)."""
    t0 = time.monotonic()
    rc = await asyncio.to_thread(server.stop, sig, 30.0)
    return rc, time.monotonic() - t0


async def wait_closed(client: Client, timeout: float = 15.0) -> int | None:
    """The close code once the socket is gone, whatever frames were still in flight."""
    try:
        return await client.closed(timeout)
    except ConnectionClosed:
        return client.ws.close_code


# end -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ender", ["mentor", "mentee"])
async def test_end_closes_the_session_and_keeps_its_transcript(workdir: Path, ender: str) -> None:
    srv = ServerProcess(workdir).start()
    try:
        pair = srv.pair("Nora", "Olaf")
        a = await Client.open(srv, pair.id, pair.mentor_token)
        b = await Client.open(srv, pair.id, pair.mentee_token)
        sid = a.welcome["session_id"]
        assert b.welcome["session_id"] == sid

        # notes: a full update from the mentor, then an incremental one from the mentee
        doc_a, text_a = notes_doc(a.welcome["notes"])
        doc_b, text_b = notes_doc(b.welcome["notes"])
        text_a += "Goals: ship the first release"
        await a.send({"t": "notes", "u": doc_a.get_update()})
        relayed = await b.expect("notes", **{"from": pair.mentor})
        doc_b.apply_update(relayed["u"])
        before = doc_b.get_state()
        text_b.insert(len(str(text_b)), "\nNext: review the tests")
        await b.send({"t": "notes", "u": doc_b.get_update(before)})
        doc_a.apply_update((await a.expect("notes", **{"from": pair.mentee}))["u"])
        typed = "Goals: ship the first release\nNext: review the tests"
        assert str(text_a) == str(text_b) == typed

        await a.send({"t": "chat", "id": "c1", "text": "see you next week"})
        await a.expect("ack", id="c1")
        for c in (a, b):
            await read_to(c, 3)

        closer, by = (a, pair.mentor) if ender == "mentor" else (b, pair.mentee)
        await closer.send({"t": "end"})
        ends = [await c.expect("ended") for c in (a, b)]
        assert ends[0] == ends[1]
        ended = ends[0]
        assert set(ended) == {"t", "seq", "by", "ts"}
        assert ended["by"] == by and isinstance(ended["ts"], float)
        assert ended["seq"] == 4  # joined, joined, chat, ended
        # the server closes both sockets with 1000, after the ended event and nothing else
        for c in (a, b):
            assert await c.closed() == 1000
            assert c.events()[-1] == ended
            assert [e["seq"] for e in c.events()] == [1, 2, 3, 4]

        rows = sessions(srv, pair)
        assert [r["id"] for r in rows] == [sid]
        assert rows[0]["ended_at"] == pytest.approx(ended["ts"], abs=1.0)
        assert rows[0]["message_count"] == 1
        old = transcript(srv, pair, sid)
        assert old["session"]["ended_at"] == rows[0]["ended_at"]
        assert old["notes"] == typed
        assert_gap_free(old["events"])
        assert old["events"] == a.events()

        # the next join starts a new session from seq 1, with fresh notes
        a2 = await Client.open(srv, pair.id, pair.mentor_token)
        new_sid = a2.welcome["session_id"]
        assert new_sid != sid
        assert a2.welcome["head"] == 0
        assert str(notes_doc(a2.welcome["notes"])[1]) == ""
        joined = await a2.expect("presence")
        assert (joined["seq"], joined["state"]) == (1, "joined")
        await a2.send({"t": "chat", "id": "c1", "text": "a new session"})
        ack = await a2.expect("ack", id="c1")
        assert ack["seq"] == 2  # the same client id is new in a new session
        rows = sessions(srv, pair)
        assert [r["id"] for r in rows] == [new_sid, sid]
        assert rows[0]["ended_at"] is None and rows[1]["ended_at"] is not None
        assert transcript(srv, pair, sid) == old
        assert transcript(srv, pair, new_sid)["notes"] == ""
        await a2.close()
    finally:
        srv.stop()


# a graceful restart ------------------------------------------------------------------------
async def test_restart_after_sigterm_resumes_gap_free(workdir: Path) -> None:
    srv = ServerProcess(workdir).start()
    try:
        pair = srv.pair()
        a = await Client.open(srv, pair.id, pair.mentor_token)
        b = await Client.open(srv, pair.id, pair.mentee_token)
        sid = a.welcome["session_id"]
        acked: dict[str, int] = {}
        for i in range(30):
            sender = a if i % 2 == 0 else b
            await sender.send({"t": "chat", "id": f"m{i}", "text": f"message {i}"})
            acked[f"m{i}"] = (await sender.expect("ack", id=f"m{i}"))["seq"]
        assert sorted(acked.values()) == list(range(3, 33))
        for c in (a, b):
            await read_to(c, 32)
        # the mentee pretends it processed only the first 20 chats before the restart
        b_last = acked["m19"]

        closing = [asyncio.create_task(wait_closed(c)) for c in (a, b)]
        rc, took = await stop(srv, signal.SIGTERM)
        codes = [await t for t in closing]
        print(f"SIGTERM: exit {rc} after {took:.2f}s; client close codes {codes}")
        assert rc == 0
        assert took < 12.0
        assert all(code in (1000, 1001, 1012) for code in codes), codes
        a_last = last_seen(a)
        assert a_last >= 32

        srv = ServerProcess(workdir).start()
        a2 = await Client.open(
            srv, pair.id, pair.mentor_token, resume={"session_id": sid, "last_seq": a_last}
        )
        assert a2.welcome["session_id"] == sid
        assert a2.welcome["head"] >= a_last
        mine = await until_own_join(a2)
        stored = transcript(srv, pair, sid)["events"]
        assert_gap_free(stored)
        # exactly the missing events, each once, then the live join
        assert a2.events() == stored[a_last : mine["seq"]]
        assert stored[-1] == mine
        # both members' connections vanished: each has exactly one "left" before the rejoin
        for uid in (pair.mentor, pair.mentee):
            states = [
                e["state"]
                for e in stored[: mine["seq"] - 1]
                if e["t"] == "presence" and e["user"]["id"] == uid
            ]
            assert states == ["joined", "left"], stored[32:]

        b2 = await Client.open(
            srv, pair.id, pair.mentee_token, resume={"session_id": sid, "last_seq": b_last}
        )
        b_join = await until_own_join(b2)
        stored = transcript(srv, pair, sid)["events"]
        assert b2.events() == stored[b_last : b_join["seq"]]
        replayed = [e["id"] for e in b2.events() if e["t"] == "chat"]
        assert replayed == [f"m{i}" for i in range(20, 30)]
        assert b_join["seq"] == mine["seq"] + 1
        await a2.expect("presence", seq=b_join["seq"])

        await b2.send({"t": "chat", "id": "after", "text": "back again"})
        ack = await b2.expect("ack", id="after")
        assert ack["seq"] == b_join["seq"] + 1
        live = await a2.expect("chat", id="after")
        assert live["seq"] == ack["seq"]

        doc = transcript(srv, pair, sid)
        assert_gap_free(doc["events"])
        chats = [e for e in doc["events"] if e["t"] == "chat"]
        assert [c["id"] for c in chats] == [f"m{i}" for i in range(30)] + ["after"]
        assert {c["id"]: c["seq"] for c in chats[:30]} == acked
        for c in (a2, b2):
            await c.close()
    finally:
        srv.stop()


# a crash -------------------------------------------------------------------------------------
async def test_restart_after_sigkill_keeps_every_acked_chat(workdir: Path) -> None:
    env = {"MENTEO_RATE_LIMIT": "0"}
    srv = ServerProcess(workdir, env).start()
    try:
        pair = srv.pair()
        a = await Client.open(srv, pair.id, pair.mentor_token)
        sid = a.welcome["session_id"]
        await a.expect("presence", seq=1)
        ids = [f"k{i}" for i in range(1000)]
        window = 150  # chats in flight: the kill finds some stored, some in flight, some unsent
        acked: dict[str, int] = {}
        progress = asyncio.Event()
        killed = False

        async def send_all() -> int:
            sent = 0
            try:
                for cid in ids:
                    while sent - len(acked) >= window and not killed:
                        progress.clear()
                        await asyncio.wait_for(progress.wait(), 10)
                    if killed:
                        break
                    await a.ws.send(msgpack.packb({"t": "chat", "id": cid, "text": f"fast {cid}"}))
                    sent += 1
            except ConnectionClosed:
                pass
            return sent

        sender = asyncio.create_task(send_all())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                frame = await a.recv(deadline - time.monotonic())
            except ConnectionClosed:
                break
            assert frame["t"] != "error", frame
            if frame["t"] == "ack":
                assert frame["id"] not in acked
                acked[frame["id"]] = frame["seq"]
                progress.set()
                if len(acked) == 100 and not killed:
                    assert srv.proc is not None
                    srv.proc.kill()
                    killed = True
                    progress.set()
        assert killed, f"only {len(acked)} acks"
        sent = await sender
        rc, _ = await stop(srv, signal.SIGKILL)
        assert rc == -signal.SIGKILL
        print(f"SIGKILL after 100 acks: {sent} chats sent, {len(acked)} acked")

        srv = ServerProcess(workdir, env).start()
        doc = transcript(srv, pair, sid)
        assert doc["session"]["ended_at"] is None
        assert_gap_free(doc["events"])
        chats = [e for e in doc["events"] if e["t"] == "chat"]
        counts = Counter(c["id"] for c in chats)
        assert max(counts.values()) == 1
        by_id = {c["id"]: c["seq"] for c in chats}
        for cid, seq in acked.items():
            assert by_id.get(cid) == seq, cid
        # stored chats are a prefix of what was sent, in order
        assert [c["id"] for c in chats] == ids[: len(chats)]

        a2 = await Client.open(
            srv, pair.id, pair.mentor_token, resume={"session_id": sid, "last_seq": last_seen(a)}
        )
        assert a2.welcome["session_id"] == sid
        mine = await until_own_join(a2)
        stored = transcript(srv, pair, sid)["events"]
        assert_gap_free(stored)
        assert a2.events() == stored[last_seen(a) : mine["seq"]]
        assert [e["t"] for e in stored[-2:]] == ["presence", "presence"]
        assert [e["state"] for e in stored[-2:]] == ["left", "joined"]  # the crash, the rejoin

        # a retry of an acked chat gets its seq back; one never stored is stored once
        first = next(iter(acked))
        await a2.send({"t": "chat", "id": first, "text": f"fast {first}"})
        assert (await a2.expect("ack", id=first))["seq"] == acked[first]
        unacked = [cid for cid in ids if cid not in acked]
        assert unacked, "every chat was acked before the kill"
        stored_unacked = [cid for cid in unacked if cid in by_id]  # the ack died with the server
        lost = [cid for cid in unacked if cid not in by_id]  # never committed
        print(f"unacked: {len(stored_unacked)} stored, {len(lost)} not stored")
        retries = list(dict.fromkeys(lost[:2] + lost[-1:]))
        for cid in stored_unacked[:3]:
            await a2.send({"t": "chat", "id": cid, "text": f"fast {cid}"})
            assert (await a2.expect("ack", id=cid))["seq"] == by_id[cid]
        for cid in retries:
            await a2.send({"t": "chat", "id": cid, "text": f"fast {cid}"})
            ack = await a2.expect("ack", id=cid)
            await a2.send({"t": "chat", "id": cid, "text": f"fast {cid}"})
            again = await a2.expect("ack", id=cid)
            assert again["seq"] == ack["seq"]
        await a2.send({"t": "ping"})
        head = (await a2.expect("pong"))["head"]

        doc = transcript(srv, pair, sid)
        assert_gap_free(doc["events"])
        assert doc["events"][-1]["seq"] == head
        chats = [e for e in doc["events"] if e["t"] == "chat"]
        counts = Counter(c["id"] for c in chats)
        assert max(counts.values()) == 1
        assert all(counts[cid] == 1 for cid in [*acked, *retries])
        assert [c["id"] for c in chats] == [*ids[: len(by_id)], *retries]
        await a2.close()
    finally:
        srv.stop()


# the grace period ----------------------------------------------------------------------------
async def test_grace_period_ends_an_empty_session(workdir: Path) -> None:
    srv = ServerProcess(workdir, {"MENTEO_SESSION_GRACE": "1"}).start()
    try:
        pair = srv.pair()
        a = await Client.open(srv, pair.id, pair.mentor_token)
        b = await Client.open(srv, pair.id, pair.mentee_token)
        sid = a.welcome["session_id"]
        await b.send({"t": "chat", "id": "bye", "text": "talk soon"})
        await b.expect("ack", id="bye")
        await a.close()
        await b.expect("presence", state="left")
        await b.close()

        deadline = time.monotonic() + 10
        rows = sessions(srv, pair)
        while rows[0]["ended_at"] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            rows = sessions(srv, pair)
        assert [r["id"] for r in rows] == [sid]
        assert rows[0]["ended_at"] is not None, "the session did not end within 10 s"
        doc = transcript(srv, pair, sid)
        last = doc["events"][-1]
        assert (last["t"], last["state"]) == ("presence", "left")
        assert rows[0]["ended_at"] >= last["ts"] + 0.9  # not before the grace period

        c = await Client.open(srv, pair.id, pair.mentee_token)
        assert c.welcome["session_id"] != sid
        assert c.welcome["head"] == 0
        assert (await c.expect("presence"))["seq"] == 1
        assert [r["id"] for r in sessions(srv, pair)] == [c.welcome["session_id"], sid]
        assert transcript(srv, pair, sid) == doc
        await c.close()
    finally:
        srv.stop()


# isolation between rooms ----------------------------------------------------------------------
async def test_a_flood_in_one_room_does_not_slow_another(workdir: Path) -> None:
    srv = ServerProcess(workdir, {"MENTEO_RATE_LIMIT": "0"}).start()
    try:
        room_a, room_b = srv.pair(), srv.pair()
        flooder = await Client.open(srv, room_a.id, room_a.mentor_token)
        await flooder.expect("presence", seq=1)
        b1 = await Client.open(srv, room_b.id, room_b.mentor_token)
        b2 = await Client.open(srv, room_b.id, room_b.mentee_token)
        await b1.expect("presence", seq=2)
        total = 3000
        acks: list[int] = []
        echoes: list[int] = []
        sent = 0
        started = asyncio.Event()

        async def flood_send() -> None:
            nonlocal sent
            for i in range(total):
                await flooder.ws.send(msgpack.packb({"t": "chat", "id": f"f{i}", "text": "x" * 40}))
                sent += 1
                if sent == 500:
                    started.set()

        async def flood_read() -> None:
            # the flooder reads everything it is sent: its acks and its own chats
            for _ in range(4 * total):
                if len(acks) == len(echoes) == total:
                    return
                frame = await flooder.recv(30)
                assert frame["t"] in ("ack", "chat"), frame
                (acks if frame["t"] == "ack" else echoes).append(frame["seq"])

        flood = asyncio.gather(flood_send(), flood_read())
        try:
            await asyncio.wait_for(started.wait(), 10)
            backlog = sent - len(acks)  # room A's chats not yet acked when room B starts
            pings: list[float] = []
            trips: list[float] = []
            under_load = 0  # round trips that finished while room A still awaited acks
            for i in range(20):
                t0 = time.perf_counter()
                await b1.send({"t": "ping"})
                await b1.expect("pong", timeout=5)
                pings.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await b1.send({"t": "chat", "id": f"b{i}", "text": f"round trip {i}"})
                await b2.expect("chat", timeout=5, id=f"b{i}")
                trips.append(time.perf_counter() - t0)
                under_load += len(acks) < total
            await asyncio.wait_for(flood, 60)
        finally:
            flood.cancel()
        for name, xs in (("ping", pings), ("chat", trips)):
            print(
                f"room B {name} round trip: p50 {statistics.median(xs) * 1000:.1f} ms, "
                f"max {max(xs) * 1000:.1f} ms (room A backlog {backlog} at the start, "
                f"{under_load}/20 iterations done during the flood)"
            )
            assert max(xs) < 1.0, xs
        assert acks == list(range(2, total + 2))  # every chat acked, in order
        assert echoes == acks
        doc = transcript(srv, room_b, b1.welcome["session_id"])
        assert [e["id"] for e in doc["events"] if e["t"] == "chat"] == [f"b{i}" for i in range(20)]
        for c in (flooder, b1, b2):
            await c.close()
    finally:
        srv.stop()
