"""Contract v1.1, the mentorship journey, through real server processes: the session goal,
action items carried from session to session, key moments, off the record by consent of both,
search, the journey (JSON and Markdown) and erase; on SQLite, and on PostgreSQL across two nodes
on Redis (skipped when those are missing, failed instead when CI=true).

Every wait is a bounded wait on a condition. An absence is checked behind a barrier: a later
event that must arrive after anything the absent one would have caused (a durable chat whose
seq is the next one, a search hit on a later write). The words searched for are random, so no
two tests, pairs or runs share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import string
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests import support
from tests.pg import pg_schema
from tests.redis_support import REDIS_URL, new_prefix, require_redis
from tests.support import ADMIN, Client, Pair, ServerProcess
from tests.test_cluster import Cluster, Pad, delete_keys, head, node_env

Frame = dict[str, Any]
MENTOR_NAME = "Ada Mentor"
MENTEE_NAME = "Grace Mentee"
ITEM_KEYS = ("id", "text", "owner", "due", "state", "by", "session_id", "created_at")
MARK_KEYS = ("seq", "kind", "text", "by", "ts", "ref")
KINDS = ("learning", "feedback", "decision", "question")


# fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes on the shared Redis (under a key prefix of their own) and one fresh PostgreSQL
    schema, as in test_cluster.py."""
    require_redis()
    with pg_schema() as database_url:
        prefix = new_prefix()
        cluster = Cluster(
            tmp_path_factory.mktemp("journey-cluster"),
            node_env(database_url, REDIS_URL, prefix),
        )
        try:
            cluster.add()  # the first node migrates the empty schema; then the second starts
            cluster.add()
            yield cluster
        finally:
            cluster.stop()
            delete_keys(REDIS_URL, prefix)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> tuple[ServerProcess, ServerProcess]:
    """Where the mentor and the mentee connect: the shared SQLite server for both, or the two
    nodes of the PostgreSQL cluster (the mentor on the first, the mentee on the second)."""
    if request.param == "sqlite":
        server: ServerProcess = request.getfixturevalue("server")
        return server, server
    cluster: Cluster = request.getfixturevalue("nodes")
    return cluster.nodes[0], cluster.nodes[1]


@pytest.fixture(autouse=True)
async def close_sockets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Close every socket a test opened, also when it failed halfway (an unclosed socket is a
    ResourceWarning, an error under ``filterwarnings = error``, in whichever test sees it)."""
    opened: list[ClientConnection] = []

    async def connect_(*args: Any, **kw: Any) -> ClientConnection:
        ws = await connect(*args, **kw)
        opened.append(ws)
        return ws

    monkeypatch.setattr(support, "connect", connect_)
    yield
    for ws in opened:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)


# helpers: frames -------------------------------------------------------------------------------
def word() -> str:
    """A random word that no other text contains."""
    return "zq" + "".join(random.choices(string.ascii_lowercase, k=10))


def new_pair(node: ServerProcess) -> Pair:
    return node.pair(MENTOR_NAME, MENTEE_NAME)


async def wait_for(
    client: Client, match: Callable[[Frame], bool], since: int = 0, timeout: float = 10.0
) -> Frame:
    """The first frame from index ``since`` on (already received or still to come) that
    ``match``es."""
    i = since
    deadline = time.monotonic() + timeout
    while True:
        while i < len(client.frames):
            frame = client.frames[i]
            i += 1
            if match(frame):
                return frame
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no matching frame; last frames {client.frames[-5:]}")
        await client.recv(left)


async def call(client: Client, frame: Frame) -> Frame:
    """Send an acked frame; the answer to it (its ack or the error naming its id)."""
    since = len(client.frames)
    cid = frame["id"]
    await client.send(frame)
    return await wait_for(
        client,
        lambda f: (
            (f["t"] == "ack" and f.get("id") == cid) or (f["t"] == "error" and f.get("ref") == cid)
        ),
        since,
    )


async def ack_of(client: Client, frame: Frame) -> Frame:
    reply = await call(client, frame)
    assert reply["t"] == "ack", (frame, reply)
    return reply


def is_event(f: Frame) -> bool:
    return f["t"] != "ack" and isinstance(f.get("seq"), int) and not isinstance(f["seq"], bool)


async def event(client: Client, seq: int) -> Frame:
    """The durable event ``seq`` as ``client`` received it."""
    return await wait_for(client, lambda f: is_event(f) and f["seq"] == seq)


async def durable(sender: Client, other: Client, frame: Frame) -> Frame:
    """Send an acked frame; it is acked with a seq, and the event of that seq reaches both
    members alike. The event."""
    ack = await ack_of(sender, frame)
    assert set(ack) == {"t", "id", "seq"}, ack
    seq = ack["seq"]
    assert isinstance(seq, int) and not isinstance(seq, bool) and seq > 0, ack
    got = [await event(c, seq) for c in (sender, other)]
    assert got[0] == got[1], got
    assert got[0]["t"] == frame["t"], (frame, got[0])
    assert isinstance(got[0]["ts"], float), got[0]
    return got[0]


def last_seq(client: Client) -> int:
    return max((f["seq"] for f in client.frames if is_event(f)), default=0)


async def meet(
    pair: Pair, mentor_node: ServerProcess, mentee_node: ServerProcess | None = None
) -> tuple[Client, Client]:
    """The mentor joins, then the mentee, into a new session; both have seen both joins."""
    mentor = await Client.open(mentor_node, pair.id, pair.mentor_token)
    mentee = await Client.open(mentee_node or mentor_node, pair.id, pair.mentee_token)
    assert mentee.welcome["session_id"] == mentor.welcome["session_id"]
    for c in (mentor, mentee):
        for uid in (pair.mentor, pair.mentee):
            await wait_for(
                c,
                lambda f, uid=uid: (
                    is_event(f)
                    and f["t"] == "presence"
                    and f["user"]["id"] == uid
                    and f["state"] == "joined"
                ),
            )
    return mentor, mentee


async def rejoin(
    node: ServerProcess, pair: Pair, old: Client, last_seq_: int | None = None
) -> Client:
    """The member of ``old`` connects again (to ``node``) and resumes the session from
    ``last_seq_`` (default: what ``old`` saw); ``old`` is closed with 4409."""
    uid = old.welcome["user"]["id"]
    token = pair.mentor_token if uid == pair.mentor else pair.mentee_token
    resume = {
        "session_id": old.welcome["session_id"],
        "last_seq": last_seq(old) if last_seq_ is None else last_seq_,
    }
    new = await Client.open(node, pair.id, token, resume=resume)
    assert await old.closed() == 4409
    return new


async def end(a: Client, b: Client) -> None:
    """``a`` ends the session; both see `ended` and are closed with 1000."""
    await a.send({"t": "end"})
    for c in (a, b):
        await wait_for(c, lambda f: f["t"] == "ended")
        assert await c.closed() == 1000


def item_view(item: Frame) -> Frame:
    """An ITEM's contract fields (a missing one is a KeyError)."""
    return {k: item[k] for k in ITEM_KEYS}


def author(e: Frame) -> str:
    """Who made a durable event (an item event names its creator inside the ITEM)."""
    by: str = e["item"]["by"] if e["t"] == "item" else e["by"]
    return by


def assert_update(e: Frame, item: str, by: str, **fields: Any) -> None:
    """An item_update event: the item, who, and exactly the fields that changed."""
    assert e["t"] == "item_update", e
    assert {"t", "seq", "item", "by", "ts"} <= set(e), e
    assert (e["item"], e["by"]) == (item, by), e
    for k in ("state", "text", "owner", "due"):
        if k in fields:
            assert k in e and e[k] == fields[k], (k, e)
        else:
            assert k not in e, (k, e)


# helpers: HTTP ---------------------------------------------------------------------------------
def get_json(node: ServerProcess, path: str, token: str) -> Any:
    status, body, _ = node.request("GET", path, token=token)
    assert status == 200, (path, status, body)
    return body


def get_text(node: ServerProcess, path: str, token: str) -> str:
    status, text, headers = node.request("GET", path, token=token, raw=True)
    assert status == 200, (path, status, text[:500])
    assert headers.get("content-type", "").startswith("text/markdown"), headers
    return str(text)


def transcript(node: ServerProcess, pair: Pair, sid: str) -> Frame:
    doc: Frame = get_json(node, f"/api/sessions/{sid}/transcript", pair.mentor_token)
    return doc


def transcript_md(node: ServerProcess, pair: Pair, sid: str) -> str:
    return get_text(node, f"/api/sessions/{sid}/transcript?format=md", pair.mentee_token)


def session_row(node: ServerProcess, pair: Pair, sid: str) -> Frame:
    rows = get_json(node, f"/api/rooms/{pair.id}/sessions", pair.mentee_token)
    row: Frame = next(r for r in rows if r["id"] == sid)
    return row


def search(
    node: ServerProcess,
    pair: Pair,
    q: str | None,
    limit: int | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    params: dict[str, str] = {}
    if q is not None:
        params["q"] = q
    if limit is not None:
        params["limit"] = str(limit)
    query = urllib.parse.urlencode(params)
    path = f"/api/rooms/{pair.id}/search" + (f"?{query}" if query else "")
    status, body, _ = node.request("GET", path, token=token or pair.mentor_token)
    return status, body


def results(node: ServerProcess, pair: Pair, q: str, limit: int | None = None) -> list[Frame]:
    status, body = search(node, pair, q, limit)
    assert status == 200, (q, status, body)
    assert set(body) == {"results"}, body
    found: list[Frame] = body["results"]
    return found


async def search_until(
    node: ServerProcess,
    pair: Pair,
    q: str,
    ready: Callable[[list[Frame]], bool],
    timeout: float = 10.0,
) -> list[Frame]:
    """Search until the results are ``ready`` (an index may trail its writes a little)."""
    deadline = time.monotonic() + timeout
    while True:
        found = results(node, pair, q)
        if ready(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"search {q!r}: not ready within {timeout}s: {found}")
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline


def assert_api_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"].get("code"), str), body
    assert isinstance(body["error"].get("message"), str), body


async def refused_join(node: ServerProcess, pair_id: str, token: str) -> int | None:
    """Say hello with ``token``; the close code the server answers with."""
    client = await Client.open(node, pair_id, None)
    await client.send({"t": "hello", "token": token})
    return await client.closed()


# 1. the session goal ---------------------------------------------------------------------------
async def test_goal_set_changed_and_cleared(server: ServerProcess) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]
    for c in (mentor, mentee):
        assert c.welcome["goal"] is None
        assert c.welcome["items"] == []
        assert (c.welcome["record"], c.welcome["record_by"]) == ("on", None)
    assert session_row(server, pair, sid)["goal"] is None

    e = await durable(mentor, mentee, {"t": "goal", "id": "g1", "text": "Prepare the promotion"})
    assert {"t", "seq", "by", "text", "ts"} <= set(e), e
    assert (e["by"], e["text"]) == (pair.mentor, "Prepare the promotion")
    stored = {x["seq"]: x for x in transcript(server, pair, sid)["events"]}
    assert stored[e["seq"]] == e  # acked and delivered means stored
    row = session_row(server, pair, sid)
    assert set(row) == {"id", "started_at", "ended_at", "message_count", "goal"}, row
    assert row["goal"] == "Prepare the promotion"

    # either member changes it; 300 code points fit (1200 bytes of UTF-8, 600 UTF-16 units)
    long = "\U0001f3af" * 300
    e2 = await durable(mentee, mentor, {"t": "goal", "id": "g2", "text": long})
    assert (e2["by"], e2["text"]) == (pair.mentee, long)
    mentor = await rejoin(server, pair, mentor)
    assert mentor.welcome["goal"] == long
    assert session_row(server, pair, sid)["goal"] == long

    # "" clears it: null in the welcome and in the sessions list
    e3 = await durable(mentor, mentee, {"t": "goal", "id": "g3", "text": ""})
    assert (e3["by"], e3["text"]) == (pair.mentor, "")
    mentee = await rejoin(server, pair, mentee)
    assert mentee.welcome["goal"] is None
    assert session_row(server, pair, sid)["goal"] is None
    events = transcript(server, pair, sid)["events"]
    assert [(x["by"], x["text"]) for x in events if x["t"] == "goal"] == [
        (pair.mentor, "Prepare the promotion"),
        (pair.mentee, long),
        (pair.mentor, ""),
    ]
    md = transcript_md(server, pair, sid)
    assert "Prepare the promotion" in md

    # the goal belongs to its session: the next one starts without
    await ack_of(mentee, {"t": "goal", "id": "g4", "text": "Last words"})
    await end(mentor, mentee)
    mentor, mentee = await meet(pair, server)
    assert mentor.welcome["session_id"] != sid
    assert mentor.welcome["goal"] is None and mentee.welcome["goal"] is None
    assert session_row(server, pair, sid)["goal"] == "Last words"
    await mentor.close()
    await mentee.close()


# 2. action items -------------------------------------------------------------------------------
async def test_item_created_with_owner_and_due(server: ServerProcess) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]
    e1 = await durable(
        mentee,
        mentor,
        {
            "t": "item",
            "id": "i1",
            "text": "Send the draft to Ada",
            "owner": pair.mentee,
            "due": "2026-03-01",
        },
    )
    assert {"t", "seq", "item", "ts"} <= set(e1), e1
    item = e1["item"]
    assert set(ITEM_KEYS) <= set(item), item
    assert isinstance(item["id"], str) and item["id"]
    assert (
        item["text"],
        item["owner"],
        item["due"],
        item["state"],
        item["by"],
        item["session_id"],
    ) == ("Send the draft to Ada", pair.mentee, "2026-03-01", "open", pair.mentee, sid)
    created = item["created_at"]
    assert isinstance(created, int | float) and not isinstance(created, bool)
    assert abs(created - time.time()) < 300

    # due left out, or null; the owner may be the other member; 500 code points fit
    e2 = await durable(
        mentor, mentee, {"t": "item", "id": "i2", "text": "\U0001f331" * 500, "owner": pair.mentor}
    )
    e3 = await durable(
        mentor,
        mentee,
        {"t": "item", "id": "i3", "text": "Book the mock", "owner": pair.mentee, "due": None},
    )
    assert (e2["item"]["text"], e2["item"]["owner"], e2["item"]["by"]) == (
        "\U0001f331" * 500,
        pair.mentor,
        pair.mentor,
    )
    assert e2["item"]["due"] is None and e3["item"]["due"] is None
    ids = [e["item"]["id"] for e in (e1, e2, e3)]
    assert len(set(ids)) == 3

    stored = {x["seq"]: x for x in transcript(server, pair, sid)["events"]}
    for e in (e1, e2, e3):
        assert stored[e["seq"]] == e
    md = transcript_md(server, pair, sid)
    assert "Send the draft to Ada" in md and "Book the mock" in md

    # the welcome of this session lists them, oldest first
    mentor = await rejoin(server, pair, mentor)
    assert [item_view(i) for i in mentor.welcome["items"]] == [
        item_view(e["item"]) for e in (e1, e2, e3)
    ]
    await mentor.close()
    await mentee.close()


async def test_items_carried_into_the_next_session_and_updated_there(
    server: ServerProcess,
) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    s1 = mentor.welcome["session_id"]

    async def item(by: Client, other: Client, cid: str, text: str, owner: str, **kw: Any) -> Frame:
        e = await durable(by, other, {"t": "item", "id": cid, "text": text, "owner": owner, **kw})
        return item_view(e["item"])

    a = await item(mentor, mentee, "a", "Read chapter 3", pair.mentee, due="2026-03-01")
    b = await item(mentee, mentor, "b", "Book a mock interview", pair.mentee)
    c = await item(mentor, mentee, "c", "Introduce Grace to the platform team", pair.mentor)
    d = await item(mentee, mentor, "d", "Fix the CV typo", pair.mentee)
    done = await durable(
        mentee, mentor, {"t": "item_update", "id": "d1", "item": d["id"], "state": "done"}
    )
    assert_update(done, d["id"], pair.mentee, state="done")
    for i in range(3):  # items on both sides of seq 10
        await durable(mentor, mentee, {"t": "chat", "id": f"c{i}", "text": f"talk {i}"})
    f = await item(mentor, mentee, "f", "Draft the one-page pitch", pair.mentee, due="2026-03-20")
    assert all(x["session_id"] == s1 and x["state"] == "open" for x in (a, b, c, f))

    # within the session: the done item is no longer listed
    mentee = await rejoin(server, pair, mentee)
    assert [item_view(i) for i in mentee.welcome["items"]] == [a, b, c, f]
    await end(mentor, mentee)

    # the next session: every open item is "since last time", with its current fields
    mentor, mentee = await meet(pair, server)
    s2 = mentor.welcome["session_id"]
    assert s2 != s1
    for cl in (mentor, mentee):
        assert [item_view(i) for i in cl.welcome["items"]] == [a, b, c, f]

    # updated there: done, dropped, text + owner + due, due cleared, reopened
    u1 = await durable(
        mentee, mentor, {"t": "item_update", "id": "u1", "item": a["id"], "state": "done"}
    )
    assert_update(u1, a["id"], pair.mentee, state="done")
    u2 = await durable(
        mentor, mentee, {"t": "item_update", "id": "u2", "item": b["id"], "state": "dropped"}
    )
    assert_update(u2, b["id"], pair.mentor, state="dropped")
    change = {
        "text": "Introduce Grace to the platform and data teams",
        "owner": pair.mentee,
        "due": "2026-04-01",
    }
    u3 = await durable(mentee, mentor, {"t": "item_update", "id": "u3", "item": c["id"], **change})
    assert_update(u3, c["id"], pair.mentee, **change)
    u4 = await durable(
        mentor, mentee, {"t": "item_update", "id": "u4", "item": f["id"], "due": None}
    )
    assert_update(u4, f["id"], pair.mentor, due=None)
    g = await item(mentee, mentor, "g", "Share the notes from the mock", pair.mentor)
    assert g["session_id"] == s2
    mentor = await rejoin(server, pair, mentor)
    c_now = {**c, **change}
    f_now = {**f, "due": None}
    assert [item_view(i) for i in mentor.welcome["items"]] == [c_now, f_now, g]
    u5 = await durable(
        mentor, mentee, {"t": "item_update", "id": "u5", "item": a["id"], "state": "open"}
    )
    assert_update(u5, a["id"], pair.mentor, state="open")
    mentee = await rejoin(server, pair, mentee)
    assert [item_view(i) for i in mentee.welcome["items"]] == [a, c_now, f_now, g]

    # the updates are in the session where they were made
    updates = [e for e in transcript(server, pair, s2)["events"] if e["t"] == "item_update"]
    assert updates == [u1, u2, u3, u4, u5]
    s1_updates = [e for e in transcript(server, pair, s1)["events"] if e["t"] == "item_update"]
    assert s1_updates == [done]
    md = transcript_md(server, pair, s2)
    assert "Introduce Grace to the platform and data teams" in md
    assert "Share the notes from the mock" in md
    await end(mentee, mentor)

    # and once more: the mentee joins first into a third session
    mentee = await Client.open(server, pair.id, pair.mentee_token)
    assert mentee.welcome["session_id"] not in (s1, s2)
    assert [item_view(i) for i in mentee.welcome["items"]] == [a, c_now, f_now, g]
    await mentee.close()


# 3. key moments --------------------------------------------------------------------------------
async def test_key_moments(server: ServerProcess) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]
    chat = await durable(mentor, mentee, {"t": "chat", "id": "c1", "text": "Lead with the impact"})
    marks = [
        await durable(
            mentee,
            mentor,
            {
                "t": "mark",
                "id": "m1",
                "kind": "feedback",
                "text": "Impact first, then how",
                "ref": chat["seq"],
            },
        ),
        await durable(
            mentor, mentee, {"t": "mark", "id": "m2", "kind": "learning", "text": "Write it down"}
        ),
        await durable(
            mentor,
            mentee,
            {"t": "mark", "id": "m3", "kind": "decision", "text": "Apply in May", "ref": None},
        ),
    ]
    top = await head(mentee)
    marks.append(
        await durable(
            mentee,
            mentor,
            {"t": "mark", "id": "m4", "kind": "question", "text": "Who decides?", "ref": top},
        )
    )
    marks.append(
        await durable(
            mentee,
            mentor,
            {"t": "mark", "id": "m5", "kind": "learning", "text": "\U0001f331" * 500, "ref": 1},
        )
    )
    expected = [
        (pair.mentee, "feedback", "Impact first, then how", chat["seq"]),
        (pair.mentor, "learning", "Write it down", None),
        (pair.mentor, "decision", "Apply in May", None),
        (pair.mentee, "question", "Who decides?", top),
        (pair.mentee, "learning", "\U0001f331" * 500, 1),
    ]
    for m in marks:
        assert set(MARK_KEYS) | {"t"} <= set(m), m
    assert [(m["by"], m["kind"], m["text"], m["ref"]) for m in marks] == expected
    stored = [e for e in transcript(server, pair, sid)["events"] if e["t"] == "mark"]
    assert stored == marks
    md = transcript_md(server, pair, sid)
    for text in ("Impact first, then how", "Write it down", "Apply in May", "Who decides?"):
        assert text in md
    await mentor.close()
    await mentee.close()


# 4. every acked frame: idempotent retry, invalid fields ----------------------------------------
@dataclass
class Ctx:
    pair: Pair
    head: int = 0
    item: str = ""  # an open item of the pair
    chat: int = 0  # the seq of a chat of this session
    stranger: str = ""  # the user id of another pair's member
    foreign_item: str = ""  # an item of another pair


async def context(
    server: ServerProcess, pair: Pair, mentor: Client, mentee: Client, needs: str
) -> Ctx:
    ctx = Ctx(pair)
    if needs.startswith(("update", "item_update")):
        e = await durable(
            mentor,
            mentee,
            {"t": "item", "id": "setup-item", "text": "An item", "owner": pair.mentee},
        )
        ctx.item = e["item"]["id"]
    if needs.startswith("mark"):
        ctx.chat = (
            await durable(mentor, mentee, {"t": "chat", "id": "setup-chat", "text": "hello"})
        )["seq"]
    if "member" in needs:
        ctx.stranger = server.pair().mentor
    if "another-pair" in needs:
        other = server.pair()
        them = await Client.open(server, other.id, other.mentor_token)
        e = await durable(
            them, them, {"t": "item", "id": "theirs", "text": "Theirs", "owner": other.mentee}
        )
        ctx.foreign_item = e["item"]["id"]
        await them.close()
    ctx.head = await head(mentor)
    return ctx


RETRY: dict[str, Callable[[Ctx], Frame]] = {
    "goal": lambda c: {"t": "goal", "text": "Ship the portfolio"},
    "item": lambda c: {"t": "item", "text": "Send it", "owner": c.pair.mentee, "due": "2026-03-01"},
    "item_update": lambda c: {"t": "item_update", "item": c.item, "state": "done"},
    "mark": lambda c: {"t": "mark", "kind": "feedback", "text": "Impact first", "ref": c.chat},
    "record": lambda c: {"t": "record", "on": False},
}


@pytest.mark.parametrize("kind", list(RETRY))
async def test_retry_with_the_same_id_is_idempotent(server: ServerProcess, kind: str) -> None:
    """The same id again, on the same socket and after a reconnect: the same ack, nothing new
    stored or delivered."""
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]
    ctx = await context(server, pair, mentor, mentee, kind)
    frame = {"id": "once", **RETRY[kind](ctx)}
    first = await durable(mentor, mentee, frame)
    before = transcript(server, pair, sid)["events"]
    assert before[-1] == first

    again = await ack_of(mentor, frame)
    assert again == {"t": "ack", "id": "once", "seq": first["seq"]}
    mentor = await rejoin(server, pair, mentor)
    again = await ack_of(mentor, frame)
    assert again == {"t": "ack", "id": "once", "seq": first["seq"]}

    # a barrier: the next durable event takes the next seq; nothing came in between
    barrier = await durable(mentor, mentee, {"t": "chat", "id": "barrier", "text": "barrier"})
    assert barrier["seq"] == first["seq"] + 1
    assert [f for f in mentee.frames if is_event(f) and f["seq"] == first["seq"]] == [first]
    assert transcript(server, pair, sid)["events"] == [*before, barrier]
    await mentor.close()
    await mentee.close()


PLANT = "\U0001f331"


def new_item(c: Ctx, **fields: Any) -> Frame:
    return {"t": "item", "text": "x", "owner": c.pair.mentee, **fields}


INVALID: dict[str, Callable[[Ctx], Frame]] = {
    "goal-301-code-points": lambda c: {"t": "goal", "text": "\U0001f3af" * 301},
    "goal-text-not-str": lambda c: {"t": "goal", "text": 5},
    "goal-text-missing": lambda c: {"t": "goal"},
    "item-text-empty": lambda c: {"t": "item", "text": "", "owner": c.pair.mentee},
    "item-501-code-points": lambda c: {"t": "item", "text": PLANT * 501, "owner": c.pair.mentee},
    "item-text-missing": lambda c: {"t": "item", "owner": c.pair.mentee},
    "item-owner-not-a-member": lambda c: {"t": "item", "text": "x", "owner": c.stranger},
    "item-owner-unknown": lambda c: {"t": "item", "text": "x", "owner": "nobody"},
    "item-owner-missing": lambda c: {"t": "item", "text": "x"},
    "item-owner-not-str": lambda c: {"t": "item", "text": "x", "owner": 5},
    "item-due-feb-30": lambda c: new_item(c, due="2026-02-30"),
    "item-due-tomorrow": lambda c: new_item(c, due="tomorrow"),
    "item-due-unpadded": lambda c: new_item(c, due="2026-3-1"),
    "item-due-number": lambda c: new_item(c, due=20260301),
    "update-no-field": lambda c: {"t": "item_update", "item": c.item},
    "update-item-missing": lambda c: {"t": "item_update", "state": "done"},
    "update-unknown-item": lambda c: {"t": "item_update", "item": "no-such-item", "state": "done"},
    "update-item-of-another-pair": lambda c: {
        "t": "item_update",
        "item": c.foreign_item,
        "state": "done",
    },
    "update-bad-state": lambda c: {"t": "item_update", "item": c.item, "state": "closed"},
    "update-text-empty": lambda c: {"t": "item_update", "item": c.item, "text": ""},
    "update-text-501-code-points": lambda c: {
        "t": "item_update",
        "item": c.item,
        "text": PLANT * 501,
    },
    "update-owner-not-a-member": lambda c: {
        "t": "item_update",
        "item": c.item,
        "owner": c.stranger,
    },
    "update-due-feb-30": lambda c: {"t": "item_update", "item": c.item, "due": "2026-02-30"},
    "update-due-tomorrow": lambda c: {"t": "item_update", "item": c.item, "due": "tomorrow"},
    "mark-bad-kind": lambda c: {"t": "mark", "kind": "insight", "text": "x"},
    "mark-kind-missing": lambda c: {"t": "mark", "text": "x"},
    "mark-text-empty": lambda c: {"t": "mark", "kind": "learning", "text": ""},
    "mark-501-code-points": lambda c: {"t": "mark", "kind": "learning", "text": PLANT * 501},
    "mark-ref-0": lambda c: {"t": "mark", "kind": "learning", "text": "x", "ref": 0},
    "mark-ref-past-head": lambda c: {
        "t": "mark",
        "kind": "learning",
        "text": "x",
        "ref": c.head + 1,
    },
    "mark-ref-bool": lambda c: {"t": "mark", "kind": "learning", "text": "x", "ref": True},
    "mark-ref-str": lambda c: {"t": "mark", "kind": "learning", "text": "x", "ref": str(c.chat)},
    "mark-ref-negative": lambda c: {"t": "mark", "kind": "learning", "text": "x", "ref": -1},
    "record-on-missing": lambda c: {"t": "record"},
    "record-on-str": lambda c: {"t": "record", "on": "false"},
    "record-on-int": lambda c: {"t": "record", "on": 0},
    "record-on-null": lambda c: {"t": "record", "on": None},
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_frame_is_refused_and_stores_nothing(
    server: ServerProcess, case: str
) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]
    ctx = await context(server, pair, mentor, mentee, case)
    before = transcript(server, pair, sid)["events"]
    assert before[-1]["seq"] == ctx.head

    reply = await call(mentor, {"id": "bad", **INVALID[case](ctx)})
    assert (reply["t"], reply.get("code"), reply.get("ref")) == ("error", "invalid", "bad"), reply
    assert isinstance(reply.get("message"), str), reply

    # nothing stored: the connection stays usable and the next durable event is the next seq
    assert await head(mentor) == ctx.head
    barrier = await durable(mentee, mentor, {"t": "chat", "id": "barrier", "text": "barrier"})
    assert barrier["seq"] == ctx.head + 1
    assert transcript(server, pair, sid)["events"] == [*before, barrier]
    await mentor.close()
    await mentee.close()


# 5. off the record -----------------------------------------------------------------------------
def records(events: list[Frame]) -> list[tuple[str, str]]:
    return [(e["state"], e["by"]) for e in events if e["t"] == "record"]


async def test_record_requested_withdrawn_and_declined(server: ServerProcess) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]

    # on:true while on since the start changes nothing: acked with seq null
    top = await head(mentor)
    assert await ack_of(mentee, {"t": "record", "id": "r0", "on": True}) == {
        "t": "ack",
        "id": "r0",
        "seq": None,
    }
    assert await head(mentor) == top

    # the mentee asks; asking again stores nothing and is acked with the request's seq
    req = await durable(mentee, mentor, {"t": "record", "id": "r1", "on": False})
    assert {"t", "seq", "by", "state", "ts"} <= set(req), req
    assert (req["state"], req["by"]) == ("requested", pair.mentee)
    again = await ack_of(mentee, {"t": "record", "id": "r2", "on": False})
    assert again == {"t": "ack", "id": "r2", "seq": req["seq"]}
    assert await head(mentee) == req["seq"]

    # while only requested, chat is still on the record
    chat = await durable(mentor, mentee, {"t": "chat", "id": "c1", "text": "still recorded"})
    assert "off" not in chat
    mentor = await rejoin(server, pair, mentor)
    assert (mentor.welcome["record"], mentor.welcome["record_by"]) == ("requested", pair.mentee)

    # the requester withdraws: on again, set by the mentee; on:true now acks that seq
    on = await durable(mentee, mentor, {"t": "record", "id": "r3", "on": True})
    assert (on["state"], on["by"]) == ("on", pair.mentee)
    again = await ack_of(mentor, {"t": "record", "id": "r4", "on": True})
    assert again == {"t": "ack", "id": "r4", "seq": on["seq"]}

    # the mentor asks, the mentee declines
    req2 = await durable(mentor, mentee, {"t": "record", "id": "r5", "on": False})
    assert (req2["state"], req2["by"]) == ("requested", pair.mentor)
    declined = await durable(mentee, mentor, {"t": "record", "id": "r6", "on": True})
    assert (declined["state"], declined["by"]) == ("on", pair.mentee)
    mentee = await rejoin(server, pair, mentee)
    assert (mentee.welcome["record"], mentee.welcome["record_by"]) == ("on", pair.mentee)
    chat2 = await durable(mentor, mentee, {"t": "chat", "id": "c2", "text": "recorded too"})
    assert "off" not in chat2
    events = transcript(server, pair, sid)["events"]
    assert records(events) == [
        ("requested", pair.mentee),
        ("on", pair.mentee),
        ("requested", pair.mentor),
        ("on", pair.mentee),
    ]
    assert [e["text"] for e in events if e["t"] == "chat"] == ["still recorded", "recorded too"]
    await mentor.close()
    await mentee.close()


async def off_chat(sender: Client, other: Client, cid: str, text: str) -> Frame:
    """A chat while off the record: acked with seq null, relayed to both without a seq."""
    ack = await ack_of(sender, {"t": "chat", "id": cid, "text": text})
    assert ack == {"t": "ack", "id": cid, "seq": None, "off": True}
    uid = sender.welcome["user"]["id"]
    got = []
    for c in (sender, other):
        f = await wait_for(c, lambda f: f["t"] == "chat" and f.get("id") == cid)
        assert set(f) == {"t", "id", "from", "text", "ts", "off"}, f
        assert (f["from"], f["text"], f["off"]) == (uid, text, True), f
        assert isinstance(f["ts"], float)
        got.append(f)
    assert got[0] == got[1]
    return got[0]


async def go_off(asker: Client, agreer: Client, tag: str) -> tuple[Frame, Frame]:
    req = await durable(asker, agreer, {"t": "record", "id": f"{tag}-ask", "on": False})
    assert (req["state"], req["by"]) == ("requested", asker.welcome["user"]["id"])
    off = await durable(agreer, asker, {"t": "record", "id": f"{tag}-agree", "on": False})
    assert (off["state"], off["by"]) == ("off", agreer.welcome["user"]["id"])
    return req, off


async def test_off_the_record_by_consent_keeps_nothing(server: ServerProcess) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    sid = mentor.welcome["session_id"]
    kept, secret, secret2, secret3 = word(), word(), word(), word()
    await durable(mentor, mentee, {"t": "chat", "id": "before", "text": f"before {kept}"})

    # stretch 1: the mentee asks, the mentor agrees
    _, off = await go_off(mentee, mentor, "s1")
    for c in (mentor, mentee):  # going off again changes nothing
        cid = f"again-{c.welcome['user']['role']}"
        again = await ack_of(c, {"t": "record", "id": cid, "on": False})
        assert again == {"t": "ack", "id": cid, "seq": off["seq"]}
    assert await head(mentor) == off["seq"]
    mentee = await rejoin(server, pair, mentee)
    assert (mentee.welcome["record"], mentee.welcome["record_by"]) == ("off", pair.mentor)

    o1 = {"t": "chat", "id": "o1", "text": f"What worries me is {secret}"}
    await off_chat(mentee, mentor, "o1", o1["text"])
    await off_chat(mentor, mentee, "o2", f"Tell me about {secret2}")
    # a retry of an off chat: the same ack, relayed once only
    assert await ack_of(mentee, o1) == {"t": "ack", "id": "o1", "seq": None, "off": True}
    # everything else stays recorded; the off chats took no seq
    goal = await durable(mentor, mentee, {"t": "goal", "id": "goal", "text": f"Talk {kept}"})
    assert goal["seq"] == off["seq"] + 1
    assert [f["id"] for f in mentor.frames if f["t"] == "chat" and f.get("off")] == ["o1", "o2"]

    # the asker turns it back on
    on = await durable(mentee, mentor, {"t": "record", "id": "s1-on", "on": True})
    assert (on["state"], on["by"]) == ("on", pair.mentee)
    back = await durable(mentee, mentor, {"t": "chat", "id": "back", "text": f"back {kept}"})
    assert "off" not in back

    # stretch 2: the mentor asks, the mentee agrees, and the agreer turns it back on
    await go_off(mentor, mentee, "s2")
    await off_chat(mentor, mentee, "o3", f"Between us: {secret3}")
    on2 = await durable(mentee, mentor, {"t": "record", "id": "s2-on", "on": True})
    assert (on2["state"], on2["by"]) == ("on", pair.mentee)
    last = await durable(mentor, mentee, {"t": "chat", "id": "last", "text": f"last {kept}"})
    assert "off" not in last

    # kept nowhere: not in the transcript, not counted
    doc = transcript(server, pair, sid)
    for s in (secret, secret2, secret3):
        assert s not in repr(doc)
    events = doc["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["id"] for e in events if e["t"] == "chat"] == ["before", "back", "last"]
    assert all("off" not in e for e in events)
    assert records(events) == [
        ("requested", pair.mentee),
        ("off", pair.mentor),
        ("on", pair.mentee),
        ("requested", pair.mentor),
        ("off", pair.mentee),
        ("on", pair.mentee),
    ]
    assert session_row(server, pair, sid)["message_count"] == 3

    # the Markdown shows each stretch as one line, with who asked and who agreed
    md = transcript_md(server, pair, sid)
    for s in (secret, secret2, secret3):
        assert s not in md
    stretches = [line for line in md.splitlines() if "agreed by" in line]
    assert len(stretches) == 2, stretches
    assert re.search(
        rf"off the record\b.*asked by {MENTEE_NAME}, agreed by {MENTOR_NAME}", stretches[0], re.I
    ), stretches
    assert re.search(
        rf"off the record\b.*asked by {MENTOR_NAME}, agreed by {MENTEE_NAME}", stretches[1], re.I
    ), stretches

    # not replayed: a resume from the session's start, and a fresh join, get the stored events
    for resume_from in (0, None):
        if resume_from is None:
            fresh = await Client.open(server, pair.id, pair.mentor_token)
            assert await mentor.closed() == 4409
        else:
            fresh = await rejoin(server, pair, mentor, resume_from)
        await event(fresh, fresh.welcome["head"])
        replayed = [f for f in fresh.frames if f["t"] == "chat"]
        assert [f["id"] for f in replayed] == ["before", "back", "last"]
        assert not any(s in repr(fresh.frames) for s in (secret, secret2, secret3))
        mentor = fresh

    # never found: once the chat said after them is indexed, the off ones never are
    await search_until(server, pair, kept, lambda rs: any("last" in r["text"] for r in rs))
    for s in (secret, secret2, secret3):
        assert results(server, pair, s) == []
    await mentor.close()
    await mentee.close()


async def test_a_new_session_starts_on_the_record(server: ServerProcess) -> None:
    pair = new_pair(server)
    mentor, mentee = await meet(pair, server)
    s1 = mentor.welcome["session_id"]
    await go_off(mentor, mentee, "off")
    await off_chat(mentee, mentor, "o1", "said off the record")
    await end(mentee, mentor)  # ended while off

    mentor, mentee = await meet(pair, server)
    assert mentor.welcome["session_id"] != s1
    for c in (mentor, mentee):
        assert (c.welcome["record"], c.welcome["record_by"]) == ("on", None)
    chat = await durable(mentee, mentor, {"t": "chat", "id": "o1", "text": "on the record"})
    assert "off" not in chat
    s2 = mentor.welcome["session_id"]
    assert [e["text"] for e in transcript(server, pair, s2)["events"] if e["t"] == "chat"] == [
        "on the record"
    ]
    md = transcript_md(server, pair, s1)
    assert "said off the record" not in md
    assert len([line for line in md.splitlines() if "agreed by" in line]) == 1
    await mentor.close()
    await mentee.close()


# 6. search -------------------------------------------------------------------------------------
async def test_search_finds_each_kind_across_sessions(
    backend: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = backend
    pair, other = new_pair(a), new_pair(a)
    w = {k: word() for k in ("chat", "notes", "goal", "item", "mark", "shared", "theirs")}
    sessions: list[str] = []
    seqs: dict[tuple[str, str], int] = {}
    for n in range(2):
        mentor, mentee = await meet(pair, a, b)
        sid = mentor.welcome["session_id"]
        sessions.append(sid)
        chat = await durable(
            mentor,
            mentee,
            {"t": "chat", "id": "c", "text": f"Session {n}: the {w['chat']} and {w['shared']}"},
        )
        goal = await durable(
            mentee, mentor, {"t": "goal", "id": "g", "text": f"Understand {w['goal']} {n}"}
        )
        item = await durable(
            mentor,
            mentee,
            {"t": "item", "id": "i", "text": f"Write up {w['item']} {n}", "owner": pair.mentee},
        )
        mark = await durable(
            mentee,
            mentor,
            {
                "t": "mark",
                "id": "m",
                "kind": "learning",
                "text": f"{w['mark']} matters {n}",
                "ref": chat["seq"],
            },
        )
        for kind, e in (("chat", chat), ("goal", goal), ("item", item), ("mark", mark)):
            seqs[(kind, sid)] = e["seq"]
        pad = Pad(mentor.welcome["notes"])
        await mentor.send({"t": "notes", "u": pad.append(f"Notes {n}: {w['notes']} today ")})
        await wait_for(mentee, lambda f: f["t"] == "notes" and f["from"] == pair.mentor)
        await end(mentor, mentee)
    om, oe = await meet(other, a, b)
    await durable(
        om, oe, {"t": "chat", "id": "c", "text": f"{w['chat']} {w['shared']} {w['theirs']}"}
    )
    await durable(oe, om, {"t": "goal", "id": "g", "text": f"{w['goal']} {w['theirs']}"})

    def both_sessions(found: list[Frame]) -> bool:
        return {r["session_id"] for r in found} >= set(sessions)

    for kind in ("chat", "notes", "goal", "item", "mark"):
        found = await search_until(a, pair, w[kind], both_sessions)
        for r in found:
            assert {"session_id", "kind", "seq", "text", "ts"} <= set(r), r
            assert r["session_id"] in sessions, (kind, r)  # never another pair's
            assert r["kind"] == kind, (kind, r)
            assert w[kind] in r["text"].lower() and len(r["text"]) <= 300, r
            assert isinstance(r["ts"], float), r
            if kind == "notes":
                assert r["seq"] is None, r
            else:
                assert r["seq"] == seqs[(kind, r["session_id"])], (kind, r)
        # whole words, case-insensitive, from the other node too
        assert both_sessions(results(b, pair, w[kind].upper()))
        assert results(b, pair, w[kind][:7]) == []

    # never another pair's text, though both pairs said the same words
    theirs = await search_until(a, other, w["theirs"], lambda rs: len(rs) == 2)
    assert {r["kind"] for r in theirs} == {"chat", "goal"}
    assert results(a, pair, w["theirs"]) == []
    shared = results(a, pair, w["shared"])
    assert sorted(r["session_id"] for r in shared) == sorted(sessions)
    assert all(r["session_id"] not in sessions for r in results(a, other, w["shared"]))
    await om.close()
    await oe.close()


async def test_search_excerpt_and_limit(backend: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = backend
    pair = new_pair(a)
    mentor, mentee = await meet(pair, a, b)
    needle, many = word(), word()
    long = "lorem ipsum " * 160 + f"the {needle} is here " + "dolor sit " * 160
    assert len(long) <= 4000
    await durable(mentor, mentee, {"t": "chat", "id": "long", "text": long})
    for i in range(5):
        await durable(mentee, mentor, {"t": "chat", "id": f"m{i}", "text": f"{many} number {i}"})
    [hit] = await search_until(a, pair, needle, lambda rs: len(rs) == 1)
    assert needle in hit["text"] and len(hit["text"]) <= 300, hit
    assert len(await search_until(b, pair, many, lambda rs: len(rs) == 5)) == 5
    assert len(results(b, pair, many, limit=2)) == 2
    assert len(results(b, pair, many, limit=100)) == 5
    await mentor.close()
    await mentee.close()


@pytest.mark.parametrize("q", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_search_without_q_is_422(server: ServerProcess, q: str | None) -> None:
    pair = new_pair(server)
    status, body = search(server, pair, q)
    assert_api_error(status, body, 422)


def test_search_needs_a_member_token(server: ServerProcess) -> None:
    pair, other = new_pair(server), new_pair(server)
    status, body = search(server, pair, "hello", token="garbage")
    assert_api_error(status, body, 401)
    status, body = search(server, pair, "hello", token=other.mentor_token)
    assert_api_error(status, body, 403)


# 7. the journey --------------------------------------------------------------------------------
async def test_journey_json_and_markdown(backend: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = backend
    pair = new_pair(a)
    secret = word()

    # session 1: a goal changed once, two chats, a mark, two items (one done), off the record
    mentor, mentee = await meet(pair, a, b)
    s1 = mentor.welcome["session_id"]
    await durable(mentor, mentee, {"t": "goal", "id": "g0", "text": "A first idea"})
    await durable(mentee, mentor, {"t": "goal", "id": "g1", "text": "Plan the promotion case"})
    chat = await durable(mentor, mentee, {"t": "chat", "id": "c1", "text": "Lead with impact"})
    await durable(mentee, mentor, {"t": "chat", "id": "c2", "text": "Noted"})
    m1 = await durable(
        mentee,
        mentor,
        {"t": "mark", "id": "m1", "kind": "feedback", "text": "Impact first", "ref": chat["seq"]},
    )
    ia = await durable(
        mentor,
        mentee,
        {
            "t": "item",
            "id": "ia",
            "text": "Draft the case",
            "owner": pair.mentee,
            "due": "2026-03-01",
        },
    )
    ib = await durable(
        mentee, mentor, {"t": "item", "id": "ib", "text": "Ask for a sponsor", "owner": pair.mentor}
    )
    ub = await durable(
        mentor, mentee, {"t": "item_update", "id": "ub", "item": ib["item"]["id"], "state": "done"}
    )
    await go_off(mentee, mentor, "off")
    await off_chat(mentee, mentor, "o1", f"off the record: {secret}")
    await durable(mentor, mentee, {"t": "record", "id": "on", "on": True})
    await end(mentor, mentee)

    # session 2: the goal set and cleared, one chat, a mark, item A changed twice, item C
    mentor, mentee = await meet(pair, a, b)
    s2 = mentor.welcome["session_id"]
    await durable(mentor, mentee, {"t": "goal", "id": "g2", "text": "Something else"})
    await durable(mentor, mentee, {"t": "goal", "id": "g3", "text": ""})
    await durable(mentee, mentor, {"t": "chat", "id": "c3", "text": "I sent the draft"})
    m2 = await durable(
        mentor, mentee, {"t": "mark", "id": "m2", "kind": "decision", "text": "Apply in May"}
    )
    ua1 = await durable(
        mentee,
        mentor,
        {"t": "item_update", "id": "ua1", "item": ia["item"]["id"], "text": "Draft the case v2"},
    )
    ua2 = await durable(
        mentor, mentee, {"t": "item_update", "id": "ua2", "item": ia["item"]["id"], "state": "done"}
    )
    ic = await durable(
        mentee, mentor, {"t": "item", "id": "ic", "text": "Book the panel", "owner": pair.mentee}
    )
    await end(mentee, mentor)

    for node in (a, b):
        doc = get_json(node, f"/api/rooms/{pair.id}/journey", pair.mentee_token)
        assert doc["pair"] == {
            "id": pair.id,
            "mentor": {"id": pair.mentor, "name": MENTOR_NAME},
            "mentee": {"id": pair.mentee, "name": MENTEE_NAME},
        }
        sessions = doc["sessions"]
        assert [s["id"] for s in sessions] == [s1, s2]  # oldest first
        for s in sessions:
            assert {"id", "started_at", "ended_at", "goal", "message_count", "marks"} <= set(s)
            assert isinstance(s["started_at"], float) and isinstance(s["ended_at"], float)
        assert sessions[0]["started_at"] <= sessions[0]["ended_at"] <= sessions[1]["started_at"]
        assert [(s["goal"], s["message_count"]) for s in sessions] == [
            ("Plan the promotion case", 2),  # the off chat is not counted
            (None, 1),
        ]
        for s, marks in zip(sessions, ([m1], [m2]), strict=True):
            assert [{k: m[k] for k in MARK_KEYS if k != "ts"} for m in s["marks"]] == [
                {k: m[k] for k in MARK_KEYS if k != "ts"} for m in marks
            ]
            assert [m["ts"] for m in s["marks"]] == pytest.approx([m["ts"] for m in marks])

        items = doc["items"]
        assert [i["id"] for i in items] == [e["item"]["id"] for e in (ia, ib, ic)]
        ia_now = {**item_view(ia["item"]), "text": "Draft the case v2", "state": "done"}
        ib_now = {**item_view(ib["item"]), "state": "done"}
        assert [item_view(i) for i in items] == [ia_now, ib_now, item_view(ic["item"])]
        for i, steps in zip(items, ([ia, ua1, ua2], [ib, ub], [ic]), strict=True):
            history = i["history"]
            assert [(h["session_id"], h["seq"], h["by"]) for h in history] == [
                (s1 if e in (ia, ib, ub) else s2, e["seq"], author(e)) for e in steps
            ], history
            assert all(isinstance(h["ts"], float) for h in history)
            created = history[0]
            assert created["text"] == steps[0]["item"]["text"]
            assert created["owner"] == steps[0]["item"]["owner"]
            for h, e in zip(history[1:], steps[1:], strict=True):
                for k in ("state", "text", "owner", "due"):
                    if k in e:
                        assert h[k] == e[k], (h, e)
        assert secret not in repr(doc)

        md = get_text(node, f"/api/rooms/{pair.id}/journey?format=md", pair.mentor_token)
        for text in (
            MENTOR_NAME,
            MENTEE_NAME,
            "Plan the promotion case",
            "Impact first",
            "Apply in May",
            "Draft the case v2",
            "Ask for a sponsor",
            "Book the panel",
        ):
            assert text in md, text
        assert secret not in md
        assert md.index("Plan the promotion case") < md.index("Apply in May")


def test_journey_needs_a_member_token(server: ServerProcess) -> None:
    pair, other = new_pair(server), new_pair(server)
    path = f"/api/rooms/{pair.id}/journey"
    status, body, _ = server.request("GET", path)
    assert_api_error(status, body, 401)
    status, body, _ = server.request("GET", path, token=other.mentee_token)
    assert_api_error(status, body, 403)
    empty = get_json(server, path, pair.mentor_token)
    assert (empty["sessions"], empty["items"]) == ([], [])


# 8. erase --------------------------------------------------------------------------------------
async def test_erase_a_pair(backend: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = backend
    pair, other = new_pair(a), new_pair(a)
    secret, theirs = word(), word()
    mentor, mentee = await meet(pair, a, b)
    s1 = mentor.welcome["session_id"]
    await durable(mentor, mentee, {"t": "chat", "id": "c1", "text": f"said {secret}"})
    await durable(mentee, mentor, {"t": "goal", "id": "g1", "text": f"goal {secret}"})
    await durable(
        mentor, mentee, {"t": "item", "id": "i1", "text": f"do {secret}", "owner": pair.mentee}
    )
    await end(mentor, mentee)
    mentor, mentee = await meet(pair, a, b)
    s2 = mentor.welcome["session_id"]
    await durable(mentee, mentor, {"t": "chat", "id": "c2", "text": f"again {secret}"})
    om, oe = await meet(other, a, b)
    await durable(om, oe, {"t": "chat", "id": "c1", "text": f"their {theirs}"})

    # only the admin may erase
    path = f"/api/pairs/{pair.id}"
    status, body, _ = a.request("DELETE", path)
    assert_api_error(status, body, 401)
    status, body, _ = a.request("DELETE", path, token=pair.mentor_token)
    assert status in (401, 403), body
    get_json(a, f"/api/rooms/{pair.id}/sessions", pair.mentor_token)  # still there

    status, body, _ = a.request("DELETE", path, token=ADMIN)
    assert (status, body) == (204, None)
    # its open sockets, on either node, are closed with 4403
    assert await mentor.closed() == 4403
    assert await mentee.closed() == 4403

    # afterwards its ids answer 404 and its tokens get 4403 on the socket
    for node in (a, b):
        for p in (
            f"/api/rooms/{pair.id}/sessions",
            f"/api/sessions/{s1}/transcript",
            f"/api/sessions/{s2}/transcript",
            f"/api/rooms/{pair.id}/journey",
            f"/api/rooms/{pair.id}/search?q={secret}",
        ):
            status, body, _ = node.request("GET", p, token=pair.mentor_token)
            assert_api_error(status, body, 404)
        status, body, _ = node.request(
            "POST", f"/api/pairs/{pair.id}/tokens", {"user_id": pair.mentee}, ADMIN
        )
        assert_api_error(status, body, 404)
    assert await refused_join(a, pair.id, pair.mentor_token) == 4403
    assert await refused_join(b, pair.id, pair.mentee_token) == 4403

    # erasing it again, or a pair that never was: 404
    status, body, _ = a.request("DELETE", path, token=ADMIN)
    assert_api_error(status, body, 404)
    status, body, _ = b.request("DELETE", "/api/pairs/no-such-pair", token=ADMIN)
    assert_api_error(status, body, 404)

    # the other pair is untouched: its sockets, its sessions, its search
    await durable(oe, om, {"t": "chat", "id": "c2", "text": "still here"})
    assert len(get_json(b, f"/api/rooms/{other.id}/sessions", other.mentee_token)) == 1
    assert [r["kind"] for r in results(b, other, theirs)] == ["chat"]
    assert results(b, other, secret) == []
    await om.close()
    await oe.close()


# 9. across two nodes ---------------------------------------------------------------------------
async def test_item_created_on_one_node_and_updated_on_the_other(nodes: Cluster) -> None:
    n1, n2 = nodes.nodes[:2]
    pair = new_pair(n1)
    mentor, mentee = await meet(pair, n1, n2)
    s1 = mentor.welcome["session_id"]
    e = await durable(
        mentor,
        mentee,
        {
            "t": "item",
            "id": "i1",
            "text": "Draft the case",
            "owner": pair.mentee,
            "due": "2026-03-01",
        },
    )
    item = item_view(e["item"])
    u1 = await durable(
        mentee,
        mentor,
        {
            "t": "item_update",
            "id": "u1",
            "item": item["id"],
            "due": "2026-03-08",
            "text": "Draft it",
        },
    )
    assert_update(u1, item["id"], pair.mentee, due="2026-03-08", text="Draft it")
    item = {**item, "due": "2026-03-08", "text": "Draft it"}
    mentor = await rejoin(n2, pair, mentor)  # moves to the other node
    assert [item_view(i) for i in mentor.welcome["items"]] == [item]
    await end(mentee, mentor)

    # the next session, the other way round: the mentor on node 2, the mentee on node 1
    mentor, mentee = await meet(pair, n2, n1)
    assert mentor.welcome["session_id"] != s1
    for c in (mentor, mentee):
        assert [item_view(i) for i in c.welcome["items"]] == [item]
    u2 = await durable(
        mentee, mentor, {"t": "item_update", "id": "u2", "item": item["id"], "owner": pair.mentor}
    )
    assert_update(u2, item["id"], pair.mentee, owner=pair.mentor)
    item = {**item, "owner": pair.mentor}
    mentor = await rejoin(n1, pair, mentor)
    assert [item_view(i) for i in mentor.welcome["items"]] == [item]
    u3 = await durable(
        mentor, mentee, {"t": "item_update", "id": "u3", "item": item["id"], "state": "done"}
    )
    assert_update(u3, item["id"], pair.mentor, state="done")
    mentee = await rejoin(n2, pair, mentee)
    assert mentee.welcome["items"] == []
    s2 = mentor.welcome["session_id"]
    for node in (n1, n2):
        updates = [x for x in transcript(node, pair, s2)["events"] if x["t"] == "item_update"]
        assert updates == [u2, u3]
    await mentor.close()
    await mentee.close()


async def test_off_the_record_agreed_across_nodes(nodes: Cluster) -> None:
    n1, n2 = nodes.nodes[:2]
    pair = new_pair(n1)
    mentor, mentee = await meet(pair, n1, n2)
    sid = mentor.welcome["session_id"]
    secret, secret2, kept = word(), word(), word()

    req = await durable(mentee, mentor, {"t": "record", "id": "ask", "on": False})  # node 2
    assert (req["state"], req["by"]) == ("requested", pair.mentee)
    again = await ack_of(mentee, {"t": "record", "id": "ask2", "on": False})
    assert again["seq"] == req["seq"]
    off = await durable(mentor, mentee, {"t": "record", "id": "agree", "on": False})  # node 1
    assert (off["state"], off["by"]) == ("off", pair.mentor)

    # off chats relayed across nodes, both ways, kept nowhere
    await off_chat(mentor, mentee, "o1", f"node one says {secret}")
    await off_chat(mentee, mentor, "o2", f"node two says {secret2}")
    mentee = await rejoin(n2, pair, mentee)
    assert (mentee.welcome["record"], mentee.welcome["record_by"]) == ("off", pair.mentor)
    assert not any(s in repr(mentee.frames) for s in (secret, secret2))

    on = await durable(mentee, mentor, {"t": "record", "id": "on", "on": True})
    assert (on["state"], on["by"]) == ("on", pair.mentee)
    back = await durable(mentor, mentee, {"t": "chat", "id": "back", "text": f"back {kept}"})
    assert "off" not in back
    assert back["seq"] == on["seq"] + 1
    for node in (n1, n2):
        doc = transcript(node, pair, sid)
        assert not any(s in repr(doc) for s in (secret, secret2))
        assert records(doc["events"]) == [
            ("requested", pair.mentee),
            ("off", pair.mentor),
            ("on", pair.mentee),
        ]
    await search_until(n2, pair, kept, lambda rs: len(rs) == 1)
    assert results(n1, pair, secret) == results(n2, pair, secret2) == []
    await mentor.close()
    await mentee.close()
