"""The defects of issue 8, tried through real server processes as a client would.

Each test states the behaviour once fixed (contract v1.1, "Clarifications of v1", and issue 8):

1. online means welcomed, on one node and across two;
2. no permanent seq holes: every seq from 1 to head is an event or a ``void``;
3. a notes update is merged (and shown in a welcome) only once stored;
4. bounded notes: one root only, a capped document, a capped update;
5. cluster notes: a node that missed an update repairs from the store;
7. a node cut off from Redis closes its members' sockets (1013) and takes nothing new.

(Defect 6, memory per chat, is shown by a benchmark soak run, not here.)

Where a fault cannot be caused by a client, the test causes it at the edge of the system: a
SQLite trigger makes the store refuse a write (as a database would), a SIGKILL kills a node
mid-flood, and a TCP proxy (:class:`ThreadedRedisProxy`) cuts one node off from Redis.
Tests needing Redis or PostgreSQL are skipped without them, and fail instead when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.pg import pg_schema
from tests.redis_support import REDIS_URL, ThreadedRedisProxy, new_prefix, require_redis
from tests.support import Client, Pair, ServerProcess
from tests.test_cluster import (
    Cluster,
    chat_from,
    delete_keys,
    first,
    head,
    last_seen,
    node_env,
    presence,
    read_to,
    reply_to,
    seqs,
    transcript,
)
from tests.test_durability import stop, until_own_join, wait_closed
from tests.test_notes import Pad, barrier, notes_from, send_notes, settle

Frame = dict[str, Any]
BYE = {"t": "signal", "data": {"type": "bye"}}
POISON = b"POISON"  # a write whose bytes hold this is refused by the store (see `refuse_writes`)


# helpers ---------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
async def close_clients(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Close every client a test opened, also when it fails midway: no unclosed sockets."""
    opened: list[Client] = []
    real = Client.open.__func__  # type: ignore[attr-defined]

    async def open_and_keep(cls: type[Client], *args: Any, **kw: Any) -> Client:
        client: Client = await real(cls, *args, **kw)
        opened.append(client)
        return client

    monkeypatch.setattr(Client, "open", classmethod(open_and_keep))
    yield
    for client in opened:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


async def arrival(client: Client, t: str, timeout: float) -> Frame | None:
    """The next ``t`` frame, or ``None`` if none arrives within ``timeout``."""
    try:
        return await client.expect(t, timeout=timeout)
    except TimeoutError:
        return None


async def closed_within(client: Client, timeout: float) -> int | None:
    """The close code once the server closes the socket, or ``None`` if it stays open."""
    try:
        return await wait_closed(client, timeout)
    except TimeoutError:
        return None


async def nothing(client: Client, t: str, timeout: float = 0.5) -> None:
    """Assert that no ``t`` frame arrives within ``timeout`` (a short bounded receive)."""
    frame = await arrival(client, t, timeout)
    assert frame is None, f"an unexpected {t} frame arrived: {frame}"


async def push_notes(
    sender: Client, receiver: Client, update: bytes, into: Pad | None = None
) -> str:
    """Send a notes update; ``"accepted"`` once the other member gets it relayed (merged
    ``into`` its pad, if given), else the code of the error the sender got (an error is sent
    before the pong that follows it)."""
    mark = len(sender.frames)
    await send_notes(sender, update)
    await settle(sender)
    errors = [f for f in sender.frames[mark:] if f["t"] == "error"]
    if errors:
        code: str = errors[0]["code"]
        return code
    relayed = await receiver.expect("notes", timeout=10)
    assert relayed["from"] == sender.welcome["user"]["id"], relayed
    if into is not None:
        into.apply(relayed["u"])
    return "accepted"


def roots(state: bytes) -> set[str]:
    """The names of the root types of a Yjs document state."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(state)
    return set(doc.keys())


def markdown(node: ServerProcess, pair: Pair, sid: str) -> str:
    status, text, _ = node.request(
        "GET", f"/api/sessions/{sid}/transcript?format=md", token=pair.mentee_token, raw=True
    )
    assert status == 200, text
    md: str = text
    return md


def assert_no_holes(events: list[Frame], top: int) -> None:
    """Every seq from 1 to ``top`` once: a durable event or a bare ``void``."""
    missing = sorted(set(range(1, top + 1)) - set(seqs(events)))
    assert not missing, f"seqs never filled (permanent holes): {missing}"
    assert seqs(events) == list(range(1, top + 1))
    for e in events:
        if e["t"] == "void":
            assert set(e) == {"t", "seq", "ts"}, e


def not_void(events: list[Frame]) -> list[Frame]:
    return [e for e in events if e["t"] != "void"]


def refuse_writes(db: Path, table: str, column: str, marker: bytes = POISON) -> str:
    """From now on the SQLite store refuses (an error on INSERT, as a database would) every row
    of ``table`` whose ``column`` holds ``marker``; the trigger's name, for `allow_writes`."""
    name = f"test_refuse_{table}"
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            f"WHEN instr(NEW.{column}, X'{marker.hex()}') > 0 "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        conn.commit()
    return name


def allow_writes(db: Path, trigger: str) -> None:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        conn.execute(f"DROP TRIGGER {trigger}")
        conn.commit()


async def wait_ready(node: ServerProcess, status: int, timeout: float = 20.0) -> None:
    """Poll ``/readyz`` until it answers ``status`` (bounded)."""
    deadline = time.monotonic() + timeout
    while (got := node.request("GET", "/readyz")[:2])[0] != status:
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz of node {node.port} still {got} after {timeout}s")
        await asyncio.sleep(0.05)


async def refused_join(node: ServerProcess, pair_id: str, token: str) -> int | None:
    """The close code a join gets (``None`` if it was welcomed)."""
    joiner = await Client.open(node, pair_id, None)
    await joiner.send({"t": "hello", "token": token})
    try:
        await joiner.expect("welcome", timeout=10)
    except ConnectionClosed:
        return joiner.ws.close_code
    await joiner.close()
    return None


async def join_when_ready(
    node: ServerProcess, pair_id: str, token: str, timeout: float = 20.0
) -> Client:
    """Join, trying again while the node answers 1013 (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.open(node, pair_id, token)
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 1013:
                raise
            if time.monotonic() > deadline:
                pytest.fail(f"node {node.port} still refuses joins (1013) after {timeout}s")
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def nodes_with_proxy(
    workdir: Path, database_url: str, ttl: float
) -> Iterator[tuple[ServerProcess, ServerProcess, ThreadedRedisProxy]]:
    """Two nodes on the shared Redis (a fresh prefix) and one PostgreSQL schema: the first
    (started first: it migrates) connects directly, the second through a proxy."""
    require_redis()
    prefix = new_prefix()
    env = {**node_env(database_url, REDIS_URL, prefix), "MENTEO_NODE_TTL": str(ttl)}
    proxy = ThreadedRedisProxy().start()
    nodes = Cluster(workdir, env)
    try:
        for env_ in (env, {**env, "MENTEO_BROKER_URL": proxy.url}):
            node = ServerProcess(workdir, env_)
            nodes.nodes.append(node)  # stopped at teardown even if it fails to start
            node.start()
        yield nodes.nodes[0], nodes.nodes[1], proxy
    finally:
        proxy.restore()  # let a node that is being stopped reach Redis to say goodbye
        nodes.stop()
        proxy.close()
        delete_keys(REDIS_URL, prefix)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes on the shared Redis (a fresh prefix) and one fresh PostgreSQL schema, as in
    ``test_cluster.py`` (node TTL 2 s, no rate limit)."""
    require_redis()
    with pg_schema() as database_url:
        prefix = new_prefix()
        nodes = Cluster(
            tmp_path_factory.mktemp("defects"), node_env(database_url, REDIS_URL, prefix)
        )
        try:
            nodes.add()
            nodes.add()
            yield nodes
        finally:
            nodes.stop()
            delete_keys(REDIS_URL, prefix)


# 1. online means welcomed ----------------------------------------------------------------------
PAIRS = 20


async def online_at_welcome(
    mentor_node: ServerProcess, mentee_node: ServerProcess, pair: Pair
) -> list[str]:
    """The mentor joins, the mentee joins right after its welcome, then each signals the other
    at once. What went wrong, if anything."""
    mentor = await Client.open(mentor_node, pair.id, pair.mentor_token)
    mentee = await Client.open(mentee_node, pair.id, pair.mentee_token)
    problems = []
    if [p["id"] for p in mentee.welcome["peers"]] != [pair.mentor]:
        problems.append("the mentee's welcome.peers lacks the mentor")
    for c in (mentor, mentee):
        await c.send(BYE)
    for sender, receiver in ((mentor, mentee), (mentee, mentor)):
        role = sender.welcome["user"]["role"]
        await settle(sender)
        refused = [f["code"] for f in sender.frames if f["t"] == "error"]
        if refused:
            problems.append(f"the {role}'s signal was answered {', '.join(refused)}")
            continue
        got = await first(receiver, lambda f: f["t"] == "signal", timeout=5)
        assert (got["from"], got["data"]) == (sender.welcome["user"]["id"], BYE["data"])
    for c in (mentor, mentee):
        await c.close()
    return problems


async def peer_absent_once_gone(
    mentor_node: ServerProcess, mentee_node: ServerProcess, pair: Pair
) -> None:
    """After the mentee's socket closes (its `left` seen), a signal gets `peer_absent`."""
    mentor = await Client.open(mentor_node, pair.id, pair.mentor_token)
    mentee = await Client.open(mentee_node, pair.id, pair.mentee_token)
    await first(mentor, lambda f: f["t"] == "presence" and f["user"]["id"] == pair.mentee)
    await mentee.close()
    await mentor.expect("presence", state="left")
    await mentor.send(BYE)
    err = await mentor.expect("error")
    assert err["code"] == "peer_absent", err
    await mentor.close()


async def test_online_means_welcomed_on_one_node(server: ServerProcess) -> None:
    problems: Counter[str] = Counter()
    for _ in range(PAIRS):
        problems.update(await online_at_welcome(server, server, server.pair()))
    assert not problems, f"in {PAIRS} fresh pairs: {dict(problems)}"
    await peer_absent_once_gone(server, server, server.pair())


async def test_online_means_welcomed_across_nodes(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes[:2]
    problems: Counter[str] = Counter()
    for _ in range(PAIRS):
        problems.update(await online_at_welcome(n1, n2, n1.pair()))
    assert not problems, f"in {PAIRS} fresh pairs (mentor on node 1, mentee on 2): {dict(problems)}"
    await peer_absent_once_gone(n1, n2, n1.pair())


# 2. no permanent holes -------------------------------------------------------------------------
async def test_a_chat_the_store_refuses_becomes_a_void(workdir: Path) -> None:
    """The store refuses one chat's write after its seq was allocated: its sender is told, the
    seq becomes a `void` (stored, replayed, left out of the Markdown), the room goes on, and a
    retry of the chat is stored once under a new seq."""
    srv = ServerProcess(workdir).start()
    try:
        pair = srv.pair()
        mentor = await Client.open(srv, pair.id, pair.mentor_token)
        mentee = await Client.open(srv, pair.id, pair.mentee_token)
        sid = mentor.welcome["session_id"]
        for c in (mentor, mentee):
            await read_to(c, 2)
        trigger = refuse_writes(workdir / "rooms.db", "events", "body")
        acks = {}
        for cid, text in (("c1", "before"), ("bad", "a POISON pill"), ("c2", "after")):
            await mentor.send({"t": "chat", "id": cid, "text": text})
            reply = await reply_to(mentor, cid)
            if cid == "bad":
                assert (reply["t"], reply["code"]) == ("error", "unavailable"), reply
            else:
                assert reply["t"] == "ack", reply
                acks[cid] = reply["seq"]
        for c in (mentor, mentee):  # the room is not held back by the seq that was not filled
            await first(c, chat_from(pair.mentor, "c2"), timeout=15)
        top = await head(mentor)
        assert top == acks["c2"]

        events = transcript(srv, pair, sid)["events"]
        assert_no_holes(events, top)
        assert [(e["t"], e["seq"]) for e in events[2:]] == [
            ("chat", acks["c1"]),
            ("void", acks["c1"] + 1),
            ("chat", acks["c2"]),
        ]
        assert "POISON" not in str(events)
        assert "void" not in markdown(srv, pair, sid).lower()
        for c in (mentor, mentee):  # live: each stored event once, in order
            assert seqs(c.events()) == sorted(set(seqs(c.events())))
            assert not_void(c.events()) == not_void(events)

        # a replay gives the void like any event: the mentee comes back from seq 2
        back = await Client.open(
            srv, pair.id, pair.mentee_token, resume={"session_id": sid, "last_seq": 2}
        )
        assert await wait_closed(mentee) == 4409
        await read_to(back, top)
        assert back.events()[: top - 2] == events[2:]

        # once the store takes it, a retry of the refused chat is stored once, under a new seq
        allow_writes(workdir / "rooms.db", trigger)
        await mentor.send({"t": "chat", "id": "bad", "text": "a POISON pill"})
        retry = await mentor.expect("ack", id="bad")
        assert retry["seq"] > top
        await first(back, chat_from(pair.mentor, "bad"))
        events = transcript(srv, pair, sid)["events"]
        assert_no_holes(events, retry["seq"])
        assert [e["seq"] for e in events if e.get("id") == "bad"] == [retry["seq"]]
        for c in (mentor, back):
            await c.close()
    finally:
        srv.stop()


@pytest.mark.slow
async def test_no_permanent_hole_when_a_node_dies_mid_flood(cluster: Cluster) -> None:
    """The mentee's node is killed while it stores a flood of the mentee's chats: seqs it had
    allocated but not stored become `void`s, so the transcript, the live mentor and a replay
    all hold every seq from 1 to head, and every acked chat is stored with its seq."""
    n1, n2 = cluster.nodes[:2]
    n3 = cluster.add()
    try:
        pair = n1.pair()
        mentor = await Client.open(n1, pair.id, pair.mentor_token)
        await mentor.expect("presence", seq=1)
        mentee = await Client.open(n3, pair.id, pair.mentee_token)
        sid = mentee.welcome["session_id"]
        await read_to(mentor, 2)
        for i in range(400):
            await mentee.ws.send(msgpack.packb({"t": "chat", "id": f"f{i}", "text": "flood"}))
        acked: dict[str, int] = {}
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await mentee.recv(15)
                if frame["t"] == "ack":
                    acked[frame["id"]] = frame["seq"]
                    if len(acked) == 50:
                        assert n3.proc is not None
                        n3.proc.kill()
        n3.stop(signal.SIGKILL)
        assert 50 <= len(acked) < 400, len(acked)

        # the dead node's member is marked left; a chat after that reaches the mentor
        await first(mentor, lambda f: f["t"] == "presence" and f["state"] == "left", timeout=30)
        await mentor.send({"t": "chat", "id": "after", "text": "still here"})
        after = (await mentor.expect("ack", id="after", timeout=30))["seq"]
        await first(mentor, chat_from(pair.mentor, "after"), timeout=30)
        top = await head(mentor)
        assert top == after

        events = transcript(n1, pair, sid)["events"]
        print(
            f"node killed after {len(acked)} acks: head {top}, "
            f"{len(not_void(events))} events, {top - len(not_void(events))} seqs unfilled"
        )
        assert_no_holes(events, top)
        stored = {e["id"]: e["seq"] for e in events if e["t"] == "chat"}
        assert all(stored.get(cid) == seq for cid, seq in acked.items())
        assert seqs(mentor.events()) == sorted(set(seqs(mentor.events())))
        assert not_void(mentor.events()) == not_void(events)
        assert "void" not in markdown(n1, pair, sid).lower()

        # a replay from the start: every seq, voids included, then the mentee's join
        mentee2 = await Client.open(n2, pair.id, pair.mentee_token)
        joined = await first(
            mentee2,
            lambda f: f["t"] == "presence" and f["seq"] > top and f["user"]["id"] == pair.mentee,
        )
        assert mentee2.events() == transcript(n1, pair, sid)["events"][: joined["seq"]]
        for c in (mentor, mentee2):
            await c.close()
    finally:
        n3.stop(signal.SIGKILL)


# 3. notes merged only once stored --------------------------------------------------------------
@pytest.mark.slow
async def test_notes_are_merged_only_once_stored(workdir: Path) -> None:
    """An update the store refuses is not merged: its sender is told (so its client re-sends),
    the other member gets nothing and no welcome shows it; re-sent once the store takes it, it
    is relayed, stored and survives a restart. An update that is not Yjs changes nothing."""
    db = workdir / "rooms.db"
    srv = ServerProcess(workdir).start()
    try:
        pair = srv.pair()
        mentor = await Client.open(srv, pair.id, pair.mentor_token)
        mentee = await Client.open(srv, pair.id, pair.mentee_token)
        sid = mentor.welcome["session_id"]
        pad = Pad(mentor.welcome["notes"])
        assert await push_notes(mentor, mentee, pad.append("kept. ")) == "accepted"
        assert await push_notes(mentor, mentee, b"\xff\xfe not yjs") == "notes_rejected"

        trigger = refuse_writes(db, "notes_updates", "data")
        refused = pad.append("POISON. ")
        await send_notes(mentor, refused)
        told = await arrival(mentor, "error", timeout=10)
        assert told is not None, "the sender was not told that its notes update was not stored"
        assert told["code"] == "unavailable", told
        await barrier(mentor, "after-refused")
        await first(mentee, chat_from(pair.mentor, "after-refused"))
        await nothing(mentee, "notes")
        assert len(notes_from(mentee, pair.mentor)) == 1
        again = await Client.open(srv, pair.id, pair.mentee_token)
        assert await wait_closed(mentee) == 4409
        assert Pad(again.welcome["notes"]).value == "kept. ", "a welcome shows an unstored update"
        assert transcript(srv, pair, sid)["notes"] == "kept. "

        # the store takes writes again: the client re-sends the update, merged and relayed now
        allow_writes(db, trigger)
        mine = Pad(again.welcome["notes"])
        assert await push_notes(mentor, again, refused, into=mine) == "accepted"
        assert mine.value == "kept. POISON. "

        closing = [asyncio.create_task(wait_closed(c)) for c in (mentor, again)]
        rc, _ = await stop(srv, signal.SIGTERM)
        assert rc == 0
        await asyncio.gather(*closing)
        srv = ServerProcess(workdir).start()
        back = await Client.open(srv, pair.id, pair.mentee_token)
        assert back.welcome["session_id"] == sid
        assert Pad(back.welcome["notes"]).value == "kept. POISON. "
        await back.close()
    finally:
        srv.stop()


# 4. bounded notes ------------------------------------------------------------------------------
NOTES_MAX_BYTES = 64 * 1024
NOTES_MAX_UPDATE = 24 * 1024


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose notes may hold 64 KiB of document state, in updates of at most 24 KiB."""
    srv = ServerProcess(
        tmp_path_factory.mktemp("capped"),
        {
            "MENTEO_NOTES_MAX_BYTES": str(NOTES_MAX_BYTES),
            "MENTEO_NOTES_MAX_UPDATE": str(NOTES_MAX_UPDATE),
        },
    ).start()
    yield srv
    srv.stop()


async def test_notes_updates_touching_another_root_are_rejected(server: ServerProcess) -> None:
    pair = server.pair()
    mentor = await Client.open(server, pair.id, pair.mentor_token)
    mentee = await Client.open(server, pair.id, pair.mentee_token)
    pad = Pad(mentor.welcome["notes"])
    assert await push_notes(mentor, mentee, pad.append("hello. ")) == "accepted"

    evil: pycrdt.Doc[Any] = pycrdt.Doc()
    evil.get("evil", type=pycrdt.Map)["x"] = "y" * 1000
    assert await push_notes(mentor, mentee, evil.get_update()) == "notes_rejected"
    # the notes text and another root in one update: refused whole
    mixed = Pad(pad.doc.get_update())
    before = mixed.doc.get_state()
    mixed.text.insert(len(mixed.value.encode()), "sneaky ")
    mixed.doc.get("evil", type=pycrdt.Map)["x"] = "y"
    assert await push_notes(mentor, mentee, mixed.doc.get_update(before)) == "notes_rejected"

    await barrier(mentor, "after-evil")
    await first(mentee, chat_from(pair.mentor, "after-evil"))
    await nothing(mentee, "notes")
    assert len(notes_from(mentee, pair.mentor)) == 1
    again = await Client.open(server, pair.id, pair.mentee_token)
    assert roots(again.welcome["notes"]) <= {"notes"}
    assert Pad(again.welcome["notes"]).value == "hello. "
    for c in (mentor, again):
        await c.close()


async def test_notes_document_is_capped(capped: ServerProcess) -> None:
    pair = capped.pair()
    mentor = await Client.open(capped, pair.id, pair.mentor_token)
    mentee = await Client.open(capped, pair.id, pair.mentee_token)
    pad = Pad(mentor.welcome["notes"])
    piece = 20 * 1024
    verdicts = []
    for i in range(4):  # 20, 40, 60 KiB fit; 80 KiB would pass the 64 KiB cap
        update = pad.append(chr(ord("a") + i) * piece)
        verdicts.append(await push_notes(mentor, mentee, update))
        if verdicts[-1] != "accepted":
            break
    assert verdicts == ["accepted"] * 3 + ["notes_rejected"], verdicts
    await nothing(mentee, "notes")
    again = await Client.open(capped, pair.id, pair.mentee_token)
    state = again.welcome["notes"]
    assert len(state) <= NOTES_MAX_BYTES, len(state)
    assert Pad(state).value == "".join(c * piece for c in "abc")
    # a small edit still fits
    small = Pad(state).append("end")
    assert await push_notes(mentor, again, small) == "accepted"
    for c in (mentor, again):
        await c.close()


async def test_notes_update_size_is_capped(capped: ServerProcess) -> None:
    pair = capped.pair()
    mentor = await Client.open(capped, pair.id, pair.mentor_token)
    mentee = await Client.open(capped, pair.id, pair.mentee_token)
    text = "x" * (30 * 1024)  # over 24 KiB in one update; the document could hold it
    big = Pad(mentor.welcome["notes"]).append(text)
    assert len(big) > NOTES_MAX_UPDATE
    assert await push_notes(mentor, mentee, big) == "notes_rejected"
    await nothing(mentee, "notes")
    # the same text in two updates under the cap is fine
    pad = Pad(mentor.welcome["notes"])
    for half in (text[: len(text) // 2], text[len(text) // 2 :]):
        assert await push_notes(mentor, mentee, pad.append(half)) == "accepted"
    again = await Client.open(capped, pair.id, pair.mentee_token)
    assert Pad(again.welcome["notes"]).value == text
    for c in (mentor, again):
        await c.close()


# 5. cluster notes ------------------------------------------------------------------------------
async def type_both(mentor: Client, mentee: Client, pads: dict[Client, Pad], tag: str) -> None:
    """Each member appends a piece; each gets the other's relayed."""
    for sender, receiver in ((mentor, mentee), (mentee, mentor)):
        update = pads[sender].append(f"{sender.welcome['user']['role']}-{tag}. ")
        assert await push_notes(sender, receiver, update, into=pads[receiver]) == "accepted"


async def test_cluster_notes_end_on_the_other_node(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes[:2]
    pair = n1.pair()
    mentor = await Client.open(n1, pair.id, pair.mentor_token)
    mentee = await Client.open(n2, pair.id, pair.mentee_token)
    sid = mentor.welcome["session_id"]
    pads = {c: Pad(c.welcome["notes"]) for c in (mentor, mentee)}
    await type_both(mentor, mentee, pads, "typed")
    assert pads[mentor].value == pads[mentee].value
    await mentee.send({"t": "end"})
    for c in (mentor, mentee):
        await c.expect("ended", timeout=15)
    notes = transcript(n1, pair, sid)["notes"]
    assert "mentor-typed. " in notes and "mentee-typed. " in notes, notes
    assert notes == pads[mentor].value


@pytest.mark.slow
async def test_cluster_notes_missed_during_a_redis_cut_are_repaired(
    workdir: Path, pg_url: str
) -> None:
    """Node 2's Redis connection is cut while the mentor (node 1) edits the notes: node 2 misses
    the relay. Once back, node 2 repairs its copy from the store (its welcomes show the edit),
    and the session ended on node 2 keeps every member's text."""
    with nodes_with_proxy(workdir, pg_url, ttl=5.0) as (n1, n2, proxy):
        pair = n1.pair()
        mentor = await Client.open(n1, pair.id, pair.mentor_token)
        mentee = await Client.open(n2, pair.id, pair.mentee_token)
        sid = mentor.welcome["session_id"]
        for c in (mentor, mentee):
            await read_to(c, 2)
        pads = {c: Pad(c.welcome["notes"]) for c in (mentor, mentee)}
        await type_both(mentor, mentee, pads, "before")

        proxy.cut()
        await send_notes(mentor, pads[mentor].append("mentor-during. "))
        deadline = time.monotonic() + 10
        while "mentor-during. " not in transcript(n1, pair, sid)["notes"]:  # stored by node 1
            assert time.monotonic() < deadline, "node 1 did not store the update"
            await asyncio.sleep(0.05)
        proxy.restore()
        await wait_ready(n2, 200)

        deadline = time.monotonic() + 15
        while True:  # node 2 repairs by itself: a welcome from it shows the edit
            mentee = await Client.open(n2, pair.id, pair.mentee_token)
            seen = Pad(mentee.welcome["notes"]).value
            if "mentor-during. " in seen:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"node 2's welcome still lacks the edit made during its cut: {seen!r}")
            await asyncio.sleep(0.2)

        await mentee.send({"t": "end"})
        for c in (mentor, mentee):
            await c.expect("ended", timeout=15)
        notes = transcript(n1, pair, sid)["notes"]
        for piece in ("mentor-before. ", "mentee-before. ", "mentor-during. "):
            assert piece in notes, (piece, notes)


# 7. a node cut off from Redis ------------------------------------------------------------------
@pytest.mark.slow
async def test_a_node_cut_off_from_redis_closes_its_sockets(workdir: Path, pg_url: str) -> None:
    """Node 1 loses Redis for longer than its lease: it closes its members' sockets with 1013
    and refuses joins; node 2 marks its member left; the member resumes on node 2 and gets
    every event it missed, once. Once Redis is back, node 1 serves joins again."""
    ttl = 1.5
    with nodes_with_proxy(workdir, pg_url, ttl=ttl) as (n2, n1, proxy):  # node 1: the proxied
        pair, quiet = n1.pair(), n1.pair()
        mentor = await Client.open(n1, pair.id, pair.mentor_token)
        mentee = await Client.open(n2, pair.id, pair.mentee_token)
        sid = mentor.welcome["session_id"]
        for c in (mentor, mentee):
            await read_to(c, 2)

        proxy.cut()
        cut_at = time.monotonic()
        for i in range(5):  # said while the mentor's node cannot hear
            await mentee.send({"t": "chat", "id": f"e{i}", "text": f"are you there {i}"})
            await mentee.expect("ack", id=f"e{i}")
        code = await closed_within(mentor, 3 * ttl + 5)
        assert code is not None, f"node 1 kept the mentor's socket open {3 * ttl + 5}s w/o Redis"
        print(f"cut off: mentor closed {code} after {time.monotonic() - cut_at:.2f}s")
        assert code == 1013
        await wait_ready(n1, 503)
        assert await refused_join(n1, quiet.id, quiet.mentor_token) == 1013
        left = await first(
            mentee, lambda f: f["t"] == "presence" and f["state"] == "left", timeout=15
        )
        assert left["user"]["id"] == pair.mentor

        # the mentor resumes on node 2: every event it missed, once, in order
        mentor2 = await Client.open(
            n2,
            pair.id,
            pair.mentor_token,
            resume={"session_id": sid, "last_seq": last_seen(mentor)},
        )
        assert mentor2.welcome["session_id"] == sid
        mine = await until_own_join(mentor2)
        events = transcript(n2, pair, sid)["events"]
        assert_no_holes(events, len(events))
        assert mentor.events() + mentor2.events() == events[: mine["seq"]]
        assert [e["id"] for e in mentor2.events() if e["t"] == "chat"] == [
            f"e{i}" for i in range(5)
        ]

        proxy.restore()
        joiner = await join_when_ready(n1, quiet.id, quiet.mentor_token)
        await wait_ready(n1, 200)
        await mentor2.send(BYE)
        assert (await mentee.expect("signal"))["from"] == pair.mentor
        # node 1, back, adds nothing to the mentor's presence: joined, left (the cut), joined
        await mentee.send({"t": "chat", "id": "last", "text": "welcome back"})
        await first(mentor2, chat_from(pair.mentee, "last"))
        events = transcript(n2, pair, sid)["events"]
        assert presence(events, pair.mentor) == ["joined", "left", "joined"]
        for c in (joiner, mentor2, mentee):
            await c.close()
