"""Cluster mode from outside: several real server nodes on one Redis and one PostgreSQL schema.

The shared Redis (``MENTEO_TEST_REDIS_URL``) is only ever used under a key prefix of the module's
own; the test that stops Redis runs its nodes on a :class:`PrivateRedis` of its own. The nodes
use ``MENTEO_NODE_TTL=2`` (heartbeats every 0.67 s, sweeps every second), so a dead node's
members are marked left within a few seconds. Skipped when Redis or PostgreSQL is missing,
failed instead when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest
from redis import Redis
from websockets.exceptions import ConnectionClosed

from tests.pg import pg_schema
from tests.redis_support import REDIS_URL, PrivateRedis, new_prefix, require_redis
from tests.support import Client, Pair, ServerProcess

NODE_TTL = 2.0
SWEEP = NODE_TTL / 2
Frame = dict[str, Any]


# a cluster -------------------------------------------------------------------------------------
@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    nodes: list[ServerProcess] = field(default_factory=list)

    def add(self) -> ServerProcess:
        node = ServerProcess(self.workdir, self.env)
        self.nodes.append(node)  # stopped at teardown even if it fails to start
        return node.start()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.stop()


def node_env(database_url: str, broker_url: str, prefix: str) -> dict[str, str]:
    return {
        "MENTEO_DATABASE_URL": database_url,
        "MENTEO_BROKER_URL": broker_url,
        "MENTEO_REDIS_PREFIX": prefix,
        "MENTEO_NODE_TTL": str(NODE_TTL),
        "MENTEO_RATE_LIMIT": "0",
    }


def delete_keys(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes (more with ``add``) on the shared Redis and one fresh PostgreSQL schema."""
    require_redis()
    with pg_schema() as database_url:
        prefix = new_prefix()
        nodes = Cluster(
            tmp_path_factory.mktemp("cluster"), node_env(database_url, REDIS_URL, prefix)
        )
        try:
            nodes.add()  # the first node migrates the empty schema; then the others start
            nodes.add()
            yield nodes
        finally:
            nodes.stop()
            delete_keys(REDIS_URL, prefix)


# helpers ---------------------------------------------------------------------------------------
def transcript(node: ServerProcess, pair: Pair, sid: str) -> dict[str, Any]:
    status, body, _ = node.request(
        "GET", f"/api/sessions/{sid}/transcript", token=pair.mentor_token
    )
    assert status == 200, body
    doc: dict[str, Any] = body
    return doc


def seqs(events: list[Frame]) -> list[int]:
    return [e["seq"] for e in events]


def last_seen(client: Client) -> int:
    return max(seqs(client.events()), default=0)


async def first(client: Client, match: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
    """The first frame (already received or still to come) that ``match``es."""
    for frame in client.frames:
        if match(frame):
            return frame
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no matching frame; last frames {client.frames[-5:]}")
        frame = await client.recv(left)
        if match(frame):
            return frame


async def read_to(client: Client, seq: int, timeout: float = 10.0) -> None:
    """Receive until the client has seen the durable event ``seq``."""
    deadline = time.monotonic() + timeout
    while last_seen(client) < seq:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"seq {seq} not seen; last {last_seen(client)}")
        await client.recv(left)


async def head(client: Client) -> int:
    await client.send({"t": "ping"})
    pong = await client.expect("pong")
    return int(pong["head"])


def chat_from(user: str, cid: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "chat" and f["from"] == user and f["id"] == cid


def presence(events: list[Frame], user: str) -> list[str]:
    return [e["state"] for e in events if e["t"] == "presence" and e["user"]["id"] == user]


def assert_alternating(states: list[str]) -> None:
    """A member's presence: joined, left, joined, ... (never twice the same in a row)."""
    assert states and states[0] == "joined", states
    assert all(a != b for a, b in itertools.pairwise(states)), states


class Pad:
    """A client's copy of the shared notes (ASCII only: pycrdt indexes UTF-8 bytes)."""

    def __init__(self, state: bytes) -> None:
        self.doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        self.text = self.doc.get("notes", type=pycrdt.Text)
        self.doc.apply_update(state)

    def append(self, piece: str) -> bytes:
        before = self.doc.get_state()
        self.text.insert(len(str(self.text)), piece)
        return self.doc.get_update(before)

    def apply(self, update: bytes) -> None:
        self.doc.apply_update(update)

    @property
    def value(self) -> str:
        return str(self.text)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# 1. one room across two nodes ------------------------------------------------------------------
async def test_chat_notes_and_signal_across_two_nodes(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes[:2]
    pair = n1.pair()
    mentor = await Client.open(n1, pair.id, pair.mentor_token)
    await mentor.expect("presence", seq=1)
    mentee = await Client.open(n2, pair.id, pair.mentee_token)
    sid = mentor.welcome["session_id"]
    assert mentee.welcome["session_id"] == sid
    assert [p["id"] for p in mentee.welcome["peers"]] == [pair.mentor]
    for c in (mentor, mentee):
        joined = await c.expect("presence", seq=2)
        assert (joined["user"]["id"], joined["state"]) == (pair.mentee, "joined")

    # chats from both nodes at once: one order, every ack matching the delivered seq
    for i in range(10):
        await mentor.send({"t": "chat", "id": f"r{i}", "text": f"mentor {i}"})
        await mentee.send({"t": "chat", "id": f"e{i}", "text": f"mentee {i}"})
    acks: dict[str, int] = {}
    for c, ids in ((mentor, [f"r{i}" for i in range(10)]), (mentee, [f"e{i}" for i in range(10)])):
        for cid in ids:
            acks[cid] = (await first(c, lambda f, cid=cid: f["t"] == "ack" and f["id"] == cid))[
                "seq"
            ]
    assert sorted(acks.values()) == list(range(3, 23))
    for c in (mentor, mentee):
        await read_to(c, 22)

    # notes edited on both nodes at once converge
    pads = {c: Pad(c.welcome["notes"]) for c in (mentor, mentee)}
    await mentor.send({"t": "notes", "u": pads[mentor].append("Agenda from the mentor. ")})
    await mentee.send({"t": "notes", "u": pads[mentee].append("Goals from the mentee. ")})
    for c, other in ((mentor, pair.mentee), (mentee, pair.mentor)):
        update = await first(c, lambda f, other=other: f["t"] == "notes" and f["from"] == other)
        pads[c].apply(update["u"])
    assert pads[mentor].value == pads[mentee].value
    assert "Agenda from the mentor. " in pads[mentor].value
    assert "Goals from the mentee. " in pads[mentor].value

    # signaling and typing in both directions, relayed to the other member only
    offer = {"type": "offer", "sdp": "v=0 mentor offer"}
    answer = {"type": "answer", "sdp": "v=0 mentee answer"}
    await mentor.send({"t": "signal", "data": offer})
    got = await mentee.expect("signal")
    assert (got["from"], got["data"]) == (pair.mentor, offer)
    await mentee.send({"t": "signal", "data": answer})
    got = await mentor.expect("signal")
    assert (got["from"], got["data"]) == (pair.mentee, answer)
    await mentee.send({"t": "signal", "data": {"type": "candidate", "candidate": None}})
    got = await mentor.expect("signal")
    assert got["data"] == {"type": "candidate", "candidate": None}
    await mentor.send({"t": "typing", "on": True})
    assert (await mentee.expect("typing"))["from"] == pair.mentor

    # a barrier through the same channel: anything relayed back to a sender would be here now
    await mentor.send({"t": "chat", "id": "last", "text": "bye"})
    for c in (mentor, mentee):
        await first(c, chat_from(pair.mentor, "last"))
    top = await head(mentor)
    assert top == await head(mentee) == 23
    for c, me in ((mentor, pair.mentor), (mentee, pair.mentee)):
        relayed = [f for f in c.frames if f["t"] in ("signal", "notes", "typing")]
        assert relayed and all(f["from"] != me for f in relayed), relayed
    assert len([f for f in mentee.frames if f["t"] == "signal"]) == 1
    assert len([f for f in mentor.frames if f["t"] == "signal"]) == 2

    # one gap-free sequence, identical on both nodes and in the store
    assert seqs(mentor.events()) == list(range(1, top + 1))
    assert mentee.events() == mentor.events()
    doc = transcript(n2, pair, sid)
    assert doc["events"] == mentor.events()
    assert {e["id"]: e["seq"] for e in doc["events"] if e["t"] == "chat"} == {**acks, "last": 23}
    assert doc["notes"] == pads[mentor].value
    for c in (mentor, mentee):
        await c.close()


# 2. one connection per user, across nodes ------------------------------------------------------
async def test_a_second_connection_on_another_node_replaces_the_first(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes[:2]
    pair = n1.pair()
    mentor = await Client.open(n1, pair.id, pair.mentor_token)
    mentee = await Client.open(n2, pair.id, pair.mentee_token)
    sid = mentor.welcome["session_id"]
    await read_to(mentor, 2)
    await read_to(mentee, 2)

    # the mentee moves to node 1, then the mentor to node 2: each old socket gets 4409
    mentee2 = await Client.open(
        n1, pair.id, pair.mentee_token, resume={"session_id": sid, "last_seq": 2}
    )
    assert await mentee.closed() == 4409
    assert [p["id"] for p in mentee2.welcome["peers"]] == [pair.mentor]
    mentor2 = await Client.open(
        n2, pair.id, pair.mentor_token, resume={"session_id": sid, "last_seq": 2}
    )
    assert await mentor.closed() == 4409
    assert [p["id"] for p in mentor2.welcome["peers"]] == [pair.mentee]

    # no presence for a replacement, not even after the sweeps have had time to misjudge it
    await asyncio.sleep(NODE_TTL + 2 * SWEEP + 0.5)  # observing an absence: nothing to wait for
    await mentor2.send({"t": "chat", "id": "m", "text": "still here"})
    await mentee2.send({"t": "chat", "id": "e", "text": "me too"})
    for c in (mentor2, mentee2):
        await first(c, chat_from(pair.mentor, "m"))
        await first(c, chat_from(pair.mentee, "e"))
    assert await head(mentor2) == 4
    assert seqs(mentor2.events()) == seqs(mentee2.events()) == [3, 4]
    events = transcript(n1, pair, sid)["events"]
    assert [(e["t"], e.get("state")) for e in events] == [
        ("presence", "joined"),
        ("presence", "joined"),
        ("chat", None),
        ("chat", None),
    ]
    # the replaced sockets' nodes kept no stale copy: a signal reaches the new sockets only
    await mentor2.send({"t": "signal", "data": {"type": "bye"}})
    assert (await mentee2.expect("signal"))["from"] == pair.mentor
    for c in (mentor2, mentee2):
        await c.close()


# 3. a node dies --------------------------------------------------------------------------------
@pytest.mark.parametrize("reconnect", ["after_left", "at_once"])
async def test_node_killed_mid_stream_mentee_resumes_elsewhere(
    cluster: Cluster, reconnect: str
) -> None:
    """SIGKILL the mentee's node while the mentor sends 200 chats; the mentee resumes on another
    node and gets every missed event once, in order; every acked chat is stored once; the dead
    node's member is marked left within a bounded time (or, reconnecting at once, replaced
    without any presence event)."""
    n1, n2 = cluster.nodes[:2]
    n3 = cluster.add()
    pair = n1.pair()
    mentor = await Client.open(n1, pair.id, pair.mentor_token)
    await mentor.expect("presence", seq=1)
    mentee = await Client.open(n3, pair.id, pair.mentee_token)
    sid = mentee.welcome["session_id"]
    await read_to(mentor, 2)
    ids = [f"k{i}" for i in range(200)]
    acked: dict[str, int] = {}

    async def send_all() -> None:
        for cid in ids:
            await mentor.send({"t": "chat", "id": cid, "text": f"message {cid}"})
            ack = await first(mentor, lambda f, cid=cid: f["t"] == "ack" and f["id"] == cid)
            acked[cid] = ack["seq"]

    sender = asyncio.create_task(send_all())
    killed_at = 0.0
    try:
        with pytest.raises(ConnectionClosed):
            for _ in range(1000):
                frame = await mentee.recv()
                if frame.get("id") == "k40":
                    assert n3.proc is not None
                    n3.proc.kill()
                    killed_at = time.monotonic()
        assert killed_at, "the node was not killed"
        seen = last_seen(mentee)
        assert seqs(mentee.events()) == list(range(1, seen + 1))
        assert not sender.done(), "the mentor finished before the kill"
        n3.stop(signal.SIGKILL)

        if reconnect == "at_once":
            mentee2 = await Client.open(
                n2, pair.id, pair.mentee_token, resume={"session_id": sid, "last_seq": seen}
            )
            await asyncio.wait_for(sender, 30)
        else:
            await asyncio.wait_for(sender, 30)
            left = await first(
                mentor,
                lambda f: f["t"] == "presence" and f["state"] == "left",
                timeout=15,
            )
            marked = time.monotonic() - killed_at
            print(f"dead node's mentee marked left {marked:.2f}s after SIGKILL")
            assert left["user"]["id"] == pair.mentee
            assert marked < NODE_TTL + 2 * SWEEP + 6  # ~TTL + two sweeps, with slack for load
            mentee2 = await Client.open(
                n2, pair.id, pair.mentee_token, resume={"session_id": sid, "last_seq": seen}
            )
        assert mentee2.welcome["session_id"] == sid
        assert len(acked) == 200
        top = max(acked.values())
        await read_to(mentee2, top, timeout=15)
        if reconnect == "at_once":  # let a misjudging sweep show itself, if there is one
            await asyncio.sleep(max(0.0, killed_at + NODE_TTL + 2 * SWEEP + 1 - time.monotonic()))
        await mentor.send({"t": "chat", "id": "end", "text": "done"})
        for c in (mentor, mentee2):
            await first(c, chat_from(pair.mentor, "end"))
        final = await head(mentor)

        doc = transcript(n2, pair, sid)
        events = doc["events"]
        assert seqs(events) == list(range(1, final + 1))
        chats = Counter(e["id"] for e in events if e["t"] == "chat")
        assert all(chats[cid] == 1 for cid in [*ids, "end"]), chats.most_common(3)
        stored = {e["id"]: e["seq"] for e in events if e["t"] == "chat"}
        assert all(stored[cid] == seq for cid, seq in acked.items())
        # the mentee got everything exactly once across its two connections, in order
        assert seqs(mentee2.events()) == list(range(seen + 1, final + 1))
        assert mentee.events() + mentee2.events() == events
        assert mentor.events() == events
        # presence: the mentee's node died, it came back; no duplicate joins or leaves
        states = presence(events, pair.mentee)
        assert_alternating(states)
        assert states[-1] == "joined"
        assert presence(events, pair.mentor) == ["joined"]
        if reconnect == "after_left":
            assert states == ["joined", "left", "joined"]
        print(f"reconnect {reconnect}: mentee presence {states}, {len(events)} events")
        for c in (mentor, mentee2):
            await c.close()
    finally:
        if not sender.done():
            sender.cancel()
        n3.stop(signal.SIGKILL)


# 4. Redis restarted mid-session ----------------------------------------------------------------
async def reply_to(client: Client, cid: str, timeout: float = 10.0) -> Frame:
    """The ack or the error that answers the chat ``cid``."""
    return await first(
        client,
        lambda f: f["t"] in ("ack", "error") and cid in (f.get("id"), f.get("ref")),
        timeout,
    )


async def test_redis_restart_mid_session(workdir: Path, pg_url: str) -> None:
    """Both nodes' Redis dies during a burst of chats and comes back on the same port, empty.
    While it is down: chats get `unavailable` (never an ack), /readyz is 503, /healthz 200.
    Afterwards the nodes recover by themselves: chats from either node are acked and delivered
    across nodes, nothing acked is lost, the members' seqs stay contiguous and nobody is marked
    left."""
    redis = await PrivateRedis(workdir).start()
    nodes = Cluster(workdir, node_env(pg_url, redis.url, "menteo:"))
    try:
        a, b = nodes.add(), nodes.add()
        pair = a.pair()
        quiet = a.pair()  # a room nobody is in
        mentor = await Client.open(a, pair.id, pair.mentor_token)
        mentee = await Client.open(b, pair.id, pair.mentee_token)
        sid = mentor.welcome["session_id"]
        acked: dict[str, int] = {}
        refused: list[str] = []
        for i in range(5):
            for c in (mentor, mentee):
                await c.send({"t": "chat", "id": f"{c.welcome['user']['role']}-{i}", "text": "hi"})
        for c in (mentor, mentee):
            for i in range(5):
                cid = f"{c.welcome['user']['role']}-{i}"
                acked[cid] = (await c.expect("ack", id=cid))["seq"]
        for c in (mentor, mentee):
            await read_to(c, 12)

        # Redis dies while a burst is in flight: some chats stored (acked), some refused
        burst = [f"burst-{i}" for i in range(100)]
        for cid in burst:
            await mentor.send({"t": "chat", "id": cid, "text": "in flight"})
        await reply_to(mentor, burst[0])
        redis.kill()
        down_at = time.monotonic()
        for cid in burst:
            reply = await reply_to(mentor, cid)
            if reply["t"] == "ack":
                acked[cid] = reply["seq"]
            else:
                assert (reply["code"], reply["ref"]) == ("unavailable", cid), reply
                refused.append(cid)
        down = {"status": "unavailable", "database": "ok", "broker": "down"}
        for node in (a, b):
            for _ in range(200):
                if node.request("GET", "/readyz")[:2] == (503, down):
                    break
                await asyncio.sleep(0.05)
            assert node.request("GET", "/readyz")[:2] == (503, down)
            assert node.request("GET", "/healthz")[:2] == (200, {"status": "ok"})
        for c in (mentor, mentee):
            cid = f"{c.welcome['user']['role']}-down"
            await c.send({"t": "chat", "id": cid, "text": "into the void"})
            try:
                reply = await reply_to(c, cid)
            except ConnectionClosed:  # the other allowed answer: close 1013
                assert c.ws.close_code == 1013
                pytest.fail("closed 1013: this test does not reconnect (the server never did)")
            assert (reply["t"], reply["code"], reply["ref"]) == ("error", "unavailable", cid)
            refused.append(cid)
        # joining is refused with 1013 (try again), in a live room and in a quiet one
        for node, room, token in (
            (b, pair.id, pair.mentor_token),
            (a, quiet.id, quiet.mentee_token),
        ):
            joiner = await Client.open(node, room, None)
            await joiner.send({"t": "hello", "token": token})
            assert await joiner.closed() == 1013, joiner.frames
        print(
            f"redis down during a burst: {len(burst) - len(refused) + 2} acked, "
            f"{len(refused) - 2} refused; /readyz 503 {time.monotonic() - down_at:.2f}s"
        )

        await redis.start()
        back_at = time.monotonic()
        # service comes back by itself: chats from both nodes are acked and delivered across
        for sender, receiver in ((mentee, mentor), (mentor, mentee)):
            role = sender.welcome["user"]["role"]
            for attempt in range(100):
                cid = f"{role}-up-{attempt}"
                await sender.send({"t": "chat", "id": cid, "text": "back?"})
                reply = await reply_to(sender, cid)
                if reply["t"] == "ack":
                    acked[cid] = reply["seq"]
                    break
                assert (reply["code"], reply["ref"]) == ("unavailable", cid), reply
                refused.append(cid)
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"no ack for {role} within 100 attempts after Redis came back")
            await first(receiver, chat_from(sender.welcome["user"]["id"], cid), timeout=15)
            print(
                f"redis back: {role}'s chat acked and delivered {time.monotonic() - back_at:.2f}s"
            )
            assert time.monotonic() - back_at < 15
        for node in (a, b):
            for _ in range(200):
                if node.request("GET", "/readyz")[0] == 200:
                    break
                await asyncio.sleep(0.05)
            assert node.request("GET", "/readyz")[:2] == (
                200,
                {"status": "ready", "database": "ok", "broker": "ok"},
            )

        # the restarted Redis lost claims and heartbeats: give the sweeps time to misjudge
        await asyncio.sleep(max(0.0, back_at + NODE_TTL + 2 * SWEEP + 1 - time.monotonic()))
        await mentee.send({"t": "signal", "data": {"type": "bye"}})
        assert (await mentor.expect("signal"))["from"] == pair.mentee
        await mentor.send({"t": "chat", "id": "last", "text": "end"})
        acked["last"] = (await mentor.expect("ack", id="last"))["seq"]
        for c in (mentor, mentee):
            await first(c, chat_from(pair.mentor, "last"))
        final = await head(mentor)
        assert acked["last"] == final

        events = transcript(a, pair, sid)["events"]
        assert seqs(events) == list(range(1, final + 1))
        stored = Counter(e["id"] for e in events if e["t"] == "chat")
        assert {e["id"]: e["seq"] for e in events if e["t"] == "chat"} == acked
        assert max(stored.values()) == 1
        assert not any(stored[cid] for cid in refused)
        for c in (mentor, mentee):
            assert seqs(c.events()) == list(range(1, final + 1))
            assert c.events() == events
        assert presence(events, pair.mentor) == presence(events, pair.mentee) == ["joined"]
        for c in (mentor, mentee):
            await c.close()
    finally:
        nodes.stop()
        redis.kill()


# 5. cross-node latency -------------------------------------------------------------------------
async def test_cross_node_latency(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    """Mentor on node 1, mentee on node 2: 200 sequential chats (stored, then delivered) and 200
    sequential signals (relayed only), each timed from the mentor's send to the mentee's
    receipt."""
    n1, n2 = cluster.nodes[:2]
    pair = n1.pair()
    mentor = await Client.open(n1, pair.id, pair.mentor_token)
    mentee = await Client.open(n2, pair.id, pair.mentee_token)
    await read_to(mentor, 2)
    await read_to(mentee, 2)

    async def timed(frame: Frame, t: str) -> float:
        data = msgpack.packb(frame, use_bin_type=True)
        t0 = time.perf_counter()
        await mentor.ws.send(data)
        await mentee.expect(t)
        return time.perf_counter() - t0

    chat = [await timed({"t": "chat", "id": f"l{i}", "text": "ping"}, "chat") for i in range(200)]
    signal_ = [
        await timed({"t": "signal", "data": {"type": "candidate", "candidate": None}}, "signal")
        for _ in range(200)
    ]
    assert [e["id"] for e in mentee.events() if e["t"] == "chat"] == [f"l{i}" for i in range(200)]
    lines = [
        f"cross-node {name} (node 1 -> node 2, 200 sequential): "
        f"p50 {quantile(xs, 0.5) * 1000:.2f} ms, p99 {quantile(xs, 0.99) * 1000:.2f} ms, "
        f"mean {statistics.fmean(xs) * 1000:.2f} ms"
        for name, xs in (("chat", chat), ("signal", signal_))
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert quantile(chat, 0.99) < 1.0
    assert quantile(signal_, 0.99) < 1.0
    for c in (mentor, mentee):
        await c.close()
