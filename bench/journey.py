"""J1: the mentorship journey at size (issue 9, "Speed").

    python -m bench.run --scenarios J1                     # full size: 1.1 M chats, ~7 min
    python -m bench.run --scenarios J1 --smoke             # a tiny version, seconds
    python -m bench.run --scenarios J1 --j1-db /tmp/j1.db  # keep the loaded file, reuse it

1. **Load**, by the benchmark itself, into a fresh SQLite file with the product's own store
   (``persistence.store.Store``: WAL, ``synchronous=FULL``, its schema and FTS5 triggers):
   one *big* pair with ``big_sessions`` sessions of ``big_chats`` chats, beside ``other_pairs``
   pairs with ``other_sessions`` sessions of ``other_chats`` chats. Every event goes through
   ``Store.write`` in batches of ``BATCH`` events (one transaction each), so the items table and
   the search index are kept by the store's own code, exactly as the server keeps them. Only
   the session rows are inserted in bulk (one ``INSERT`` per round of sessions, instead of
   ``start_session`` for each); pairs are made with ``Store.create_pair``. Each session: both
   members' ``presence``, a ``goal`` (sometimes changed later), chats of Zipf-distributed
   English words (3 % carry a made-up rare word), key moments (``mark``), items created and
   later done, dropped or edited (``item_update``), notes text (a Yjs update, turned into the
   session's notes by the store when the ``ended`` event is stored). The big pair ends with
   exactly ``open_items`` items open.
2. **Measure** through the real server (``menteo-rooms serve`` on that file) over HTTP and
   WebSocket, one request at a time, as a member of the big pair:
   - ``GET /api/rooms/{pair}/search?q=`` over ``queries`` queries: common words, mid-frequency
     words, rare words (1-3 chats in the pair), two-word queries and words found nowhere;
   - ``GET /api/rooms/{pair}/journey`` as JSON and as Markdown, ``journeys`` times each;
   - ``welcome``: hello sent -> welcome received on ``/ws/rooms/{pair}``
     (``menteo.v1.msgpack``), a fresh connection each time, closed before the next:
     *warm* (the other member stays connected, so the room is live on the node) and *cold*
     (nobody there, the room dropped after its grace period, so the join builds the room from
     the store: a new session, the open items read) -- each with the 100 open items.
3. Before the server starts, the bench also reads the file directly (``sqlite3``): each
   query's matches in the pair, the query plan of the SQL that ``Store.search`` sends (caught
   on its way), and three shapes of the FTS5 query timed side by side (``SHAPES``). After the
   server stops, it times the store calls of a room build in this process (``build_calls``).

Nothing is asserted: the targets of issue 9 (search p95 < 50 ms, welcome < 20 ms) are
reported as met or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import itertools
import json
import math
import random
import re
import shutil
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
from sqlalchemy import insert

from bench.loadgen import percentiles
from bench.proc import SECRET, MenteoServer, sample
from bench.scenarios import JourneySize
from bench.words import FUNCTION, MARK_KINDS, NAMES, VOCABULARY, Words, rare_words
from persistence.store import SESSIONS, Store, StoredEvent, StoredNotes, WriteOp
from server.auth import mint

BATCH = 20_000  # events per Store.write (one transaction)
T0 = 1_672_560_000.0  # 2023-01-01 08:00 UTC: the big pair's first session
WEEK = 7 * 86400.0
LOAD_LIMIT_S = 45 * 60.0  # the load gives up after this long
SEARCH_TARGET_MS = 50.0
WELCOME_TARGET_MS = 20.0


# the load ------------------------------------------------------------------------------------
@dataclass
class Items:
    """When each of a pair's items is created, edited and closed (by session index)."""

    per_session: int
    close_at: dict[int, int] = field(default_factory=dict)  # item number -> session index
    edit_at: dict[int, int] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)  # item number -> item id, once created

    @classmethod
    def plan(cls, rng: random.Random, sessions: int, per_session: int, open_count: int) -> Items:
        n = sessions * per_session
        open_count = min(open_count, n)
        recent = list(range(n - open_count // 2, n))  # the newest stay open, and some old ones
        rest = [k for k in range(n - open_count // 2)]
        keep = set(recent) | set(rng.sample(rest, open_count - len(recent)))
        plan = cls(per_session)
        last = sessions - 1
        for k in range(n):
            made = k // per_session
            if k not in keep:
                plan.close_at[k] = min(last, made + 1 + int(rng.expovariate(1 / 2)))
            if rng.random() < 0.3:
                end = plan.close_at.get(k, last)
                plan.edit_at[k] = rng.randint(made, end)
        return plan

    def in_session(self, index: int) -> tuple[list[int], list[int], list[int], list[int]]:
        """(edits of older items, closes of older items, edits and closes of this session's)."""
        first = index * self.per_session
        mine = range(first, first + self.per_session)
        old_edits = [k for k, s in self.edit_at.items() if s == index and k < first]
        old_closes = [k for k, s in self.close_at.items() if s == index and k < first]
        new_edits = [k for k in mine if self.edit_at.get(k) == index]
        new_closes = [k for k in mine if self.close_at.get(k) == index]
        return old_edits, old_closes, new_edits, new_closes


@dataclass
class PairLoad:
    pair_id: str
    mentor: dict[str, str]
    mentee: dict[str, str]
    sessions: int
    chats: int
    items: Items
    marks: int
    big: bool = False

    @property
    def members(self) -> list[dict[str, str]]:
        return [self.mentor, self.mentee]


class SessionWriter:
    """The stored events of one session, shaped as ``rooms/room.py`` stores them."""

    def __init__(self, words: Words, rng: random.Random, pair: PairLoad, sid: str, start: float):
        self.words, self.rng, self.pair, self.sid = words, rng, pair, sid
        self.ts = start
        self.seq = 0
        self.ops: list[WriteOp] = []
        self.last_chat = 0
        self.item_text: dict[int, str] = {}

    def add(self, kind: str, user: str, body: dict[str, Any], acked: bool = True) -> int:
        self.seq += 1
        self.ts += self.rng.uniform(4.0, 30.0)
        cid = f"{kind[0]}{self.seq:x}{self.rng.getrandbits(24):06x}" if acked else None
        if kind == "item":  # its creation time is the event's, as the room sets it
            body = {**body, "item": {**body["item"], "created_at": self.ts}}
        frame = {"t": kind, "seq": self.seq, **({"id": cid} if acked else {}), **body}
        frame["ts"] = self.ts
        packed = msgpack.packb(frame, use_bin_type=True)
        self.ops.append(
            StoredEvent(self.sid, self.seq, kind, user, cid, self.ts, packed, kind == "ended")
        )
        return self.seq

    def who(self) -> dict[str, str]:
        return self.rng.choice(self.pair.members)

    def item_update(self, k: int, close: bool) -> None:
        items, u = self.pair.items, self.who()
        change: dict[str, Any]
        if close:
            change = {"state": "done" if self.rng.random() < 0.8 else "dropped"}
        else:
            pick = self.rng.random()
            if pick < 0.4:
                change = {"due": self.due()}
            elif pick < 0.7:
                change = {"owner": self.who()["id"]}
            else:
                change = {"text": self.words.item(NAMES) + " (revised)"}
        self.add("item_update", u["id"], {"by": u["id"], "item": items.ids[k], **change})

    def due(self) -> str | None:
        if self.rng.random() < 0.3:
            return None
        return time.strftime("%Y-%m-%d", time.gmtime(self.ts + self.rng.randint(3, 21) * 86400))

    def session(self, index: int, chats: int) -> list[WriteOp]:
        pair, rng, words = self.pair, self.rng, self.words
        for m in pair.members:
            self.add("presence", m["id"], {"user": m, "state": "joined"}, acked=False)
        goal_by = pair.mentee
        goal = words.goal()
        self.add("goal", goal_by["id"], {"by": goal_by["id"], "text": goal})
        old_edits, old_closes, new_edits, new_closes = pair.items.in_session(index)
        for k in old_edits:
            self.item_update(k, False)
        for k in old_closes:
            self.item_update(k, True)
        per = pair.items.per_session
        extras = ["item"] * per + ["mark"] * pair.marks
        if rng.random() < 0.15:
            extras.append("goal")
        at = sorted(rng.sample(range(chats), min(len(extras), chats)))
        rng.shuffle(extras)
        made = index * per
        j = 0
        for n in range(chats):
            u = self.who()
            self.last_chat = self.add("chat", u["id"], {"from": u["id"], "text": words.sentence()})
            while j < len(at) and at[j] == n:
                kind = extras[j]
                j += 1
                u = self.who()
                if kind == "mark":
                    text = " ".join(words.words(rng.randint(3, 9)))
                    mark_kind = rng.choice(MARK_KINDS)
                    body = {"by": u["id"], "kind": mark_kind, "text": text, "ref": self.last_chat}
                    self.add("mark", u["id"], body)
                elif kind == "goal":
                    goal = words.goal()
                    self.add("goal", u["id"], {"by": u["id"], "text": goal})
                else:
                    self._item(made, u)
                    made += 1
        while made < (index + 1) * per:  # fewer chats than extras (tiny sizes)
            self._item(made, self.who())
            made += 1
        for k in new_edits:
            self.item_update(k, False)
        for k in new_closes:
            self.item_update(k, True)
        texts = [self.item_text[k] for k in range(index * per, made)]
        doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        notes = doc.get("notes", type=pycrdt.Text)
        notes += words.notes(index + 1, goal, texts)
        self.ops.append(StoredNotes(self.sid, doc.get_update()))
        ender = pair.mentor
        self.add("ended", ender["id"], {"by": ender["id"]}, acked=False)
        return self.ops

    def _item(self, k: int, u: dict[str, str]) -> None:
        text = self.words.item(NAMES)
        item_id = f"{self.sid[:12]}.{self.seq + 1}"  # as the room makes it from the seq
        self.pair.items.ids[k] = item_id
        self.item_text[k] = text
        item = {
            "id": item_id,
            "text": text,
            "owner": self.who()["id"],
            "due": self.due(),
            "state": "open",
            "by": u["id"],
            "session_id": self.sid,
        }
        self.add("item", u["id"], {"by": u["id"], "item": item})


def _say(msg: str) -> None:
    print(f"   J1 {msg}", flush=True)


async def load(db: Path, size: JourneySize, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Fill a fresh SQLite file; what the measuring needs to know about it."""
    rng = random.Random(size.seed)
    words = Words(rng, rare_words(20_000))
    t0 = time.monotonic()
    counts = {"events": 0, "chats": 0, "sessions": 0, "batches": 0}
    async with Store(f"sqlite:///{db}") as store:
        big_rec = await store.create_pair("Ada Okafor", "Grace Lindqvist", T0 - 86400)
        pairs: list[PairLoad] = []

        def pair_load(rec: Any, big: bool) -> PairLoad:
            sessions = size.big_sessions if big else size.other_sessions
            if big:
                per = max(3, math.ceil(2 * size.open_items / max(1, sessions)))
                items = Items.plan(rng, sessions, per, size.open_items)
            else:
                items = Items.plan(rng, sessions, 1, rng.randint(1, max(1, sessions // 3)))
            return PairLoad(
                rec.id,
                {"id": rec.mentor_id, "name": rec.mentor_name, "role": "mentor"},
                {"id": rec.mentee_id, "name": rec.mentee_name, "role": "mentee"},
                sessions,
                size.big_chats if big else size.other_chats,
                items,
                marks=3 if big else 1,
                big=big,
            )

        big = pair_load(big_rec, True)
        for i in range(size.other_pairs):
            rec = await store.create_pair(
                f"{rng.choice(NAMES)} {i}", f"{rng.choice(NAMES)} {i}", T0 - 86400
            )
            pairs.append(pair_load(rec, False))
        say(f"{1 + len(pairs)} pairs made in {time.monotonic() - t0:.1f} s")

        rounds = max(size.big_sessions, size.other_sessions)
        batch: list[WriteOp] = []
        pending = {"chats": 0, "events": 0}  # in ``batch``, not stored yet
        last_say = [time.monotonic()]

        def progress(r: int, force: bool = False) -> None:
            now = time.monotonic()
            if now - t0 > LOAD_LIMIT_S:
                raise RuntimeError(f"the load took over {LOAD_LIMIT_S:.0f} s; gave up")
            if now - last_say[0] < 5 and not force:
                return
            last_say[0] = now
            done, elapsed = counts["chats"], now - t0
            rate = done / elapsed if elapsed else 0.0
            eta = (size.chats - done) / rate if rate else 0.0
            say(
                f"load: round {r + 1}/{rounds}, {done:,}/{size.chats:,} chats stored, "
                f"{elapsed:.0f} s, {rate:,.0f} chats/s, ~{eta:.0f} s left"
            )

        async def flush(r: int) -> None:
            nonlocal batch
            if not batch:
                return
            rejected = await store.write(batch)
            if rejected:
                raise RuntimeError(f"the store refused {len(rejected)} events of the load")
            counts["batches"] += 1
            counts["chats"] += pending["chats"]
            counts["events"] += pending["events"]
            pending["chats"] = pending["events"] = 0
            batch = []
            progress(r)

        for r in range(rounds):
            members: list[tuple[PairLoad, int]] = []
            if r >= rounds - size.big_sessions:
                members.append((big, r - (rounds - size.big_sessions)))
            if r >= rounds - size.other_sessions:
                members += [(p, r - (rounds - size.other_sessions)) for p in pairs]
            rows = []
            starts = []
            for n, (p, index) in enumerate(members):
                sid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
                start = T0 + r * WEEK + (0 if p.big else (n % 5) * 86400 + rng.uniform(0, 8) * 3600)
                rows.append({"id": sid, "pair_id": p.pair_id, "started_at": start})
                starts.append((p, index, sid, start))
            async with store.engine.begin() as conn:
                await conn.execute(insert(SESSIONS), rows)
            counts["sessions"] += len(rows)
            for p, index, sid, start in starts:
                words.recording = p.big
                ops = SessionWriter(words, rng, p, sid, start).session(index, p.chats)
                batch.extend(ops)
                pending["events"] += sum(isinstance(o, StoredEvent) for o in ops)
                pending["chats"] += p.chats
                if len(batch) >= BATCH:
                    await flush(r)
            await flush(r)  # every session of this round is ended before the next round's
        progress(rounds - 1, force=True)
        words.recording = False
    load_s = time.monotonic() - t0
    open_now = sum(1 for k in range(len(big.items.ids)) if k not in big.items.close_at)
    info = {
        "size": dataclasses.asdict(size),
        "load_s": round(load_s, 1),
        "loader": f"Store.write, batches of {BATCH} events (session rows inserted in bulk)",
        "counts": counts,
        "chats_per_s": round(counts["chats"] / load_s) if load_s else None,
        "pair_id": big.pair_id,
        "mentor": big.mentor,
        "mentee": big.mentee,
        "open_items": open_now,
        "items": len(big.items.ids),
        "rare_in_pair": sorted(words.used_rare.items())[:5000],
        "other_pair": pairs[0].pair_id if pairs else None,
    }
    info.update(db_size(db))
    return info


def db_size(db: Path) -> dict[str, Any]:
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    total = sum(f.stat().st_size for f in files if f.exists())
    out: dict[str, Any] = {"db_mib": round(total / 2**20, 1)}
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as c:
        rows = c.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8"
        ).fetchall()
        out["db_largest_mib"] = {n: round(b / 2**20, 1) for n, b in rows}
    return out


# queries -------------------------------------------------------------------------------------
def queries(info: dict[str, Any], n: int, seed: int) -> list[tuple[str, str]]:
    """(class, query): common, mid, rare (1-3 chats of the pair), two words, absent."""
    rng = random.Random(seed + 1)
    rare = [w for w, c in info["rare_in_pair"] if c <= 3] or ["kalomi"]
    common = VOCABULARY[:60]
    mid = VOCABULARY[len(FUNCTION) + 150 : len(FUNCTION) + 450]
    shares = {"common": 0.30, "mid": 0.20, "rare": 0.30, "two": 0.15, "absent": 0.05}
    out: list[tuple[str, str]] = []
    for cls, share in shares.items():
        for _ in range(max(1, round(n * share))):
            if cls == "common":
                q = rng.choice(common)
            elif cls == "mid":
                q = rng.choice(mid)
            elif cls == "rare":
                q = rng.choice(rare)
            elif cls == "two":
                q = f"{rng.choice(common)} {rng.choice(mid)}"
            else:
                q = f"qzx{rng.randrange(10**6)}"
            out.append((cls, q))
    rng.shuffle(out)
    return out[:n] if len(out) > n else out


# what the file says, read directly -----------------------------------------------------------
# Shapes of the FTS5 query, timed side by side straight on the file (sqlite3, no server): the
# store's first one (the planner drives it from the pair's index, newest first, and asks FTS5
# about each entry in turn); the same with FTS5 forced first (CROSS JOIN: every match of the
# pair joined and sorted by ts); and one that lets FTS5 walk its rowids newest first and stop
# at the limit (rowid order is the order entries were indexed in).
SHAPES = {
    "join_then_sort_by_ts": (
        "SELECT e.session_id, e.kind, e.seq, e.text, e.ts FROM search_fts "
        "JOIN search_entries e ON e.id = search_fts.rowid "
        "WHERE search_fts MATCH :match AND e.pair_id = :pair "
        "ORDER BY e.ts DESC, e.id DESC LIMIT :limit"
    ),
    "fts_first_sort_by_ts": (
        "SELECT e.session_id, e.kind, e.seq, e.text, e.ts FROM search_fts "
        "CROSS JOIN search_entries e ON e.id = search_fts.rowid "
        "WHERE search_fts MATCH :match AND e.pair_id = :pair "
        "ORDER BY e.ts DESC, e.id DESC LIMIT :limit"
    ),
    "fts_rowid_desc_limit": (
        "SELECT e.session_id, e.kind, e.seq, e.text, e.ts FROM ("
        "SELECT rowid AS id FROM search_fts WHERE search_fts MATCH :match "
        "ORDER BY rowid DESC LIMIT :limit) AS hit "
        "JOIN search_entries e ON e.id = hit.id WHERE e.pair_id = :pair "
        "ORDER BY e.id DESC"
    ),
}


async def store_search_sql(db: Path, pair_id: str, q: str) -> tuple[str, Any]:
    """The SQL and parameters that ``Store.search`` of this tree sends, caught on its way."""
    from sqlalchemy import event

    caught: list[tuple[str, Any]] = []
    async with Store(f"sqlite:///{db}", prepare=False) as store:

        def spy(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if "search_fts" in statement:
                caught.append((statement, params))

        event.listen(store.engine.sync_engine, "before_cursor_execute", spy)
        await store.search(pair_id, q)
    if not caught:
        raise RuntimeError("Store.search sent no query to search_fts")
    return caught[-1]


def compare_shapes(
    db: Path,
    pair_id: str,
    qs: Sequence[tuple[str, str]],
    per_class: int = 15,
    budget_s: float = 10.0,
    cap_s: float = 20.0,
) -> dict[str, Any]:
    """Each shape's time per query class, the same queries, limit 20, in this process. A class
    stops after ``budget_s`` of queries (at least one is run); a query is cut at ``cap_s`` and
    counted as taking that long."""
    picked: dict[str, list[str]] = {}
    for cls, q in qs:
        if len(picked.setdefault(cls, [])) < per_class:
            picked[cls].append(q)
    out: dict[str, Any] = {}
    with contextlib.closing(sqlite3.connect(db)) as c:
        deadline = [0.0]
        c.set_progress_handler(lambda: int(time.perf_counter() > deadline[0]), 10_000)
        for name, sql in SHAPES.items():
            out[name] = {}
            for cls, batch in picked.items():
                values: list[float] = []
                cut = 0
                for q in batch:
                    args = {"match": fts_match(pair_id, q), "pair": pair_id, "limit": 20}
                    t0 = time.perf_counter()
                    deadline[0] = t0 + cap_s
                    try:
                        c.execute(sql, args).fetchall()
                        values.append((time.perf_counter() - t0) * 1000)
                    except sqlite3.OperationalError:  # interrupted at the cap
                        values.append(cap_s * 1000)
                        cut += 1
                    if sum(values) > budget_s * 1000:
                        break
                out[name][cls] = {**percentiles(values), "cut_at_cap": cut}
            deadline[0] = time.perf_counter() + cap_s
            out[name]["plan"] = [
                r[-1]
                for r in c.execute(
                    "EXPLAIN QUERY PLAN " + sql,
                    {"match": fts_match(pair_id, "the"), "pair": pair_id, "limit": 20},
                )
            ]
    return out


async def build_calls(db: Path, pair_id: str, reps: int = 5) -> dict[str, Any]:
    """The store calls a node makes to build a room (``rooms/hub.py`` ``_build``, in its order
    when this was written), each timed in this process on ``db``, median of ``reps``: where a
    cold join's time goes before its welcome. Writes a session (started, then ended)."""
    from persistence.store import EndSession

    times: dict[str, list[float]] = {}
    async with Store(f"sqlite:///{db}", prepare=False) as store:
        pair = await store.get_pair(pair_id)
        assert pair is not None
        for _ in range(reps + 1):
            laps: list[tuple[str, float]] = [("", time.perf_counter())]

            def lap(name: str, laps: list[tuple[str, float]] = laps) -> None:
                laps.append((name, time.perf_counter()))

            entered = await store.enter(pair_id, pair.mentor_id, time.time())
            assert entered is not None
            session = entered[1]
            lap("enter")
            await store.room_state(pair_id, session.id)
            lap("room_state")
            await store.write([EndSession(session.id, time.time())])
            for (_, before), (name, after) in itertools.pairwise(laps):
                times.setdefault(name, []).append((after - before) * 1000)
    out = {n: round(sorted(v[1:])[len(v[1:]) // 2], 2) for n, v in times.items()}
    out["total"] = round(sum(out.values()), 1)
    return out


def fts_match(pair_id: str, q: str) -> str:
    from persistence.store import _fts_quote, search_words

    terms = [f"text : {_fts_quote(w)}" for w in search_words(q)]
    return " AND ".join([f"pair_id : {_fts_quote(pair_id)}", *terms])


def inspect_db(db: Path, pair_id: str, qs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Matches per query in the pair, and the store's query plan, straight from the file."""
    out: dict[str, Any] = {}
    with contextlib.closing(sqlite3.connect(db)) as c:
        hits: dict[str, int] = {}
        for _, q in qs:
            if q not in hits:
                row = c.execute(
                    "SELECT count(*) FROM search_fts WHERE search_fts MATCH ?",
                    (fts_match(pair_id, q),),
                ).fetchone()
                hits[q] = int(row[0])
        out["hits"] = hits
        out["entries_in_pair"] = c.execute(
            "SELECT count(*) FROM search_entries WHERE pair_id = ?", (pair_id,)
        ).fetchone()[0]
        out["entries"] = c.execute("SELECT max(id) FROM search_entries").fetchone()[0]
    return out


# the measuring -------------------------------------------------------------------------------
class Http:
    """One keep-alive HTTP/1.1 connection, one request at a time, timed to the last byte."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> tuple[int, bytes, float]:
        t0 = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
            body = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # one retry on a fresh connection (a dropped keep-alive)
            t0 = time.perf_counter()
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
            body = r.read()
        return r.status, body, (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self.conn.close()


def measure_search(
    api: Http, pair_id: str, qs: Sequence[tuple[str, str]], hits: dict[str, int]
) -> dict[str, Any]:
    by_class: dict[str, list[float]] = {}
    every: list[float] = []
    errors = 0
    slowest: list[tuple[float, str, str, int]] = []
    for q in ("warm", "up", "the"):  # untimed: the first requests pay for imports and caches
        api.get(f"/api/rooms/{pair_id}/search?q={q}")
    for cls, q in qs:
        st, body, ms = api.get(f"/api/rooms/{pair_id}/search?q={urllib.parse.quote(q)}")
        if st != 200:
            errors += 1
            continue
        results = json.loads(body)["results"]
        if cls != "absent" and hits.get(q, 1) and not results:
            errors += 1
        every.append(ms)
        by_class.setdefault(cls, []).append(ms)
        slowest.append((round(ms, 1), cls, q, hits.get(q, -1)))
    slowest.sort(reverse=True)
    classes: dict[str, Any] = {}
    for cls, values in by_class.items():
        hs = [hits.get(q, 0) for c, q in qs if c == cls]
        classes[cls] = {
            **percentiles(values),
            "hits_median": sorted(hs)[len(hs) // 2] if hs else None,
        }
    return {
        "search_ms": percentiles(every),
        "search_by_class": classes,
        "search_errors": errors,
        "search_slowest": slowest[:8],
    }


def measure_journey(api: Http, pair_id: str, times: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fmt in ("json", "md"):
        values: list[float] = []
        size = 0
        for _ in range(times + 1):
            st, body, ms = api.get(f"/api/rooms/{pair_id}/journey?format={fmt}")
            if st != 200:
                raise RuntimeError(f"journey {fmt}: HTTP {st}: {body[:300]!r}")
            values.append(ms)
            size = len(body)
            if fmt == "json" and "journey_sessions" not in out:
                doc = json.loads(body)
                out["journey_sessions"] = len(doc["sessions"])
                out["journey_items"] = len(doc["items"])
                out["journey_marks"] = sum(len(s["marks"]) for s in doc["sessions"])
        out[f"journey_{fmt}_ms"] = percentiles(values[1:])  # the first one untimed
        out[f"journey_{fmt}_first_ms"] = round(values[0], 1)
        out[f"journey_{fmt}_kib"] = round(size / 1024, 1)
    return out


async def join(url: str, token: str) -> tuple[float, float, dict[str, Any], Any]:
    """Connect, hello -> welcome; (connect ms, hello->welcome ms, the welcome, the socket)."""
    from websockets.asyncio.client import connect

    t0 = time.perf_counter()
    ws = await connect(url, subprotocols=["menteo.v1.msgpack"], max_size=2**24)  # type: ignore[list-item]
    t1 = time.perf_counter()
    await ws.send(msgpack.packb({"t": "hello", "token": token}, use_bin_type=True))
    data = await ws.recv()
    t2 = time.perf_counter()
    frame = msgpack.unpackb(data.encode() if isinstance(data, str) else data, raw=False)
    if frame.get("t") != "welcome":
        await ws.close()
        raise RuntimeError(f"expected welcome, got {str(frame)[:300]}")
    return (t1 - t0) * 1000, (t2 - t1) * 1000, frame, ws


def live_rooms(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    found = re.search(r"^menteo_live_rooms(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(float(found.group(1))) if found else -1


async def measure_welcome(
    server: MenteoServer, info: dict[str, Any], size: JourneySize
) -> dict[str, Any]:
    pair_id = info["pair_id"]
    url = f"{server.ws}/ws/rooms/{pair_id}"
    mentor = mint(SECRET, info["mentor"]["id"], pair_id, 6 * 3600)
    mentee = mint(SECRET, info["mentee"]["id"], pair_id, 6 * 3600)
    out: dict[str, Any] = {}
    items_seen: set[int] = set()

    async def drain(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    # the first join of all builds the room (and starts a session) on a node that has just
    # started: reported apart, as the first of the cold ones
    _, first, welcome, holder = await join(url, mentee)
    out["welcome_first_ms"] = round(first, 1)
    items_seen.add(len(welcome.get("items") or []))
    reader = asyncio.create_task(drain(holder))
    warm, warm_connect = [], []
    try:
        for _ in range(size.welcomes_warm):
            c, w, welcome, ws = await join(url, mentor)
            items_seen.add(len(welcome.get("items") or []))
            warm.append(w)
            warm_connect.append(c)
            await ws.close()
    finally:
        await holder.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    out["welcome_warm_ms"] = percentiles(warm)
    out["ws_connect_ms"] = percentiles(warm_connect)
    cold: list[float] = []
    not_dropped = 0
    for _ in range(size.welcomes_cold):
        deadline = time.monotonic() + size.grace + 15
        while True:
            rooms = await asyncio.to_thread(live_rooms, server.port)
            if rooms == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if rooms != 0:
            not_dropped += 1
        _, w, welcome, ws = await join(url, mentor)
        items_seen.add(len(welcome.get("items") or []))
        cold.append(w)
        await ws.close()
    out["welcome_cold_ms"] = percentiles(cold)
    out["welcome_cold_not_dropped"] = not_dropped
    out["welcome_items"] = sorted(items_seen)
    return out


# the scenario --------------------------------------------------------------------------------
def run_journey(
    size: JourneySize, runner: asyncio.Runner, tmp: Path, keep: Path | None = None
) -> dict[str, Any]:
    """Load (or reuse ``keep``), measure through a fresh server, return the figures. With
    ``keep`` the loaded file is kept there and the server runs on a copy of it, so a reused
    file is exactly what the load made."""
    db = tmp / "journey.db"
    source = keep or db
    sidecar = Path(f"{source}.j1.json")
    info: dict[str, Any] | None = None
    if keep is not None and keep.exists() and sidecar.exists():
        saved = json.loads(sidecar.read_text())
        if saved.get("size") == dataclasses.asdict(size):
            info = saved
            info["reused"] = True
            _say(f"reusing {keep} (loaded in {info['load_s']} s; delete it to load again)")
    if info is None:
        for f in (source, Path(f"{source}-wal"), Path(f"{source}-shm"), sidecar):
            f.unlink(missing_ok=True)
        _say(f"loading {size.chats:,} chats into {source} ...")
        info = runner.run(load(source, size))
        sidecar.write_text(json.dumps(info))
        _say(f"loaded in {info['load_s']} s, {info['db_mib']} MiB")
    if keep is not None:
        for suffix in ("", "-wal"):
            if Path(f"{keep}{suffix}").exists():
                shutil.copyfile(f"{keep}{suffix}", f"{db}{suffix}")
    qs = queries(info, size.queries, size.seed)
    t0 = time.monotonic()
    found = inspect_db(db, info["pair_id"], qs)
    _say(f"counted matches per query in {time.monotonic() - t0:.1f} s")
    sql, params = runner.run(store_search_sql(db, info["pair_id"], "the"))
    with contextlib.closing(sqlite3.connect(db)) as c:
        plan = [r[-1] for r in c.execute("EXPLAIN QUERY PLAN " + sql, params)]
    shapes = compare_shapes(db, info["pair_id"], qs, per_class=15)
    result: dict[str, Any] = {
        "load_s": info["load_s"],
        "loader": info["loader"],
        "load_counts": info["counts"],
        "load_chats_per_s": info["chats_per_s"],
        "db_mib": info["db_mib"],
        "db_largest_mib": info.get("db_largest_mib"),
        "db_reused": bool(info.get("reused")),
        "size": info["size"],
        "open_items": info["open_items"],
        "items_in_pair": info["items"],
        "entries_in_pair": found["entries_in_pair"],
        "entries": found["entries"],
        "search_sql": sql,
        "search_plan": plan,
        "search_shapes_direct_ms": shapes,
        "code": code_state(),
        "queries": len(qs),
    }
    server = MenteoServer(
        tmp,
        {
            "MENTEO_DATABASE_URL": f"sqlite:///{db}",
            "MENTEO_SESSION_GRACE": str(size.grace),
            # one member joins hundreds of times a minute here, on purpose: no join limit
            "MENTEO_JOINS_PER_MINUTE": "0",
        },
    )
    try:
        t0 = time.monotonic()
        server.start(timeout=300)
        result["server_start_s"] = round(time.monotonic() - t0, 2)
        token = mint(SECRET, info["mentor"]["id"], info["pair_id"], 6 * 3600)
        api = Http(server.port, token)
        try:
            _say(f"search: {len(qs)} queries ...")
            result.update(measure_search(api, info["pair_id"], qs, found["hits"]))
            _say(f"journey: {size.journeys} x JSON and Markdown ...")
            result.update(measure_journey(api, info["pair_id"], size.journeys))
        finally:
            api.close()
        _say(f"welcome: {size.welcomes_warm} warm, {size.welcomes_cold} cold joins ...")
        result.update(runner.run(measure_welcome(server, info, size)))
        result["server_rss_mib"] = round(sample(server.pid).rss / 2**20, 1)
    finally:
        result["servers_alive"] = server.alive()
        server.stop()
    result["build_store_calls_direct_ms"] = runner.run(build_calls(db, info["pair_id"]))
    text = server.log.read_text(errors="replace") if server.log.exists() else ""
    result["server_log_problems"] = text.count("Traceback") + len(re.findall(r"^ERROR", text, re.M))
    result["targets"] = targets(result)
    print(journey_table(result), flush=True)
    return result


def code_state() -> dict[str, Any]:
    """The commit measured, and whether the product had changes not committed yet."""
    from bench.proc import git_state

    state = git_state()
    return {"commit": state["commit"], "uncommitted": "\n".join(state["uncommitted"])}


def targets(r: dict[str, Any]) -> dict[str, Any]:
    p95 = (r.get("search_ms") or {}).get("p95")
    warm = (r.get("welcome_warm_ms") or {}).get("p95")
    cold = (r.get("welcome_cold_ms") or {}).get("p95")
    return {
        "search_p95_lt_50ms": None if p95 is None else p95 < SEARCH_TARGET_MS,
        "welcome_warm_p95_lt_20ms": None if warm is None else warm < WELCOME_TARGET_MS,
        "welcome_cold_p95_lt_20ms": None if cold is None else cold < WELCOME_TARGET_MS,
    }


def _p(d: dict[str, Any] | None, keys: Sequence[str] = ("p50", "p95", "p99")) -> str:
    d = d or {}
    return "/".join("-" if d.get(k) is None else f"{d[k]:.1f}" for k in keys)


def journey_table(r: dict[str, Any]) -> str:
    size = r["size"]
    t = r.get("targets") or {}

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "MISSED")

    rows = [
        ("what", "ms p50/p95/p99 (or value)", "target"),
        (
            "load",
            f"{r['load_s']} s, {r['load_counts']['chats']:,} chats, {r['db_mib']} MiB",
            "",
        ),
        (
            f"search, {r['queries']} queries",
            _p(r.get("search_ms")),
            f"p95 < 50 ms: {verdict(t.get('search_p95_lt_50ms'))}",
        ),
    ]
    for cls, d in (r.get("search_by_class") or {}).items():
        rows.append((f"  {cls} (median {d.get('hits_median')} hits)", _p(d), ""))
    rows += [
        (f"journey JSON ({r.get('journey_json_kib')} KiB)", _p(r.get("journey_json_ms")), ""),
        (f"journey Markdown ({r.get('journey_md_kib')} KiB)", _p(r.get("journey_md_ms")), ""),
        (
            f"welcome warm ({size['welcomes_warm']} joins, items {r.get('welcome_items')})",
            _p(r.get("welcome_warm_ms")),
            f"< 20 ms: {verdict(t.get('welcome_warm_p95_lt_20ms'))}",
        ),
        (
            f"welcome cold ({size['welcomes_cold']} joins, room built)",
            _p(r.get("welcome_cold_ms")),
            f"< 20 ms: {verdict(t.get('welcome_cold_p95_lt_20ms'))}",
        ),
        ("welcome, first join after start", f"{r.get('welcome_first_ms')}", ""),
    ]
    build = r.get("build_store_calls_direct_ms")
    if build:
        rows.append(("  room build: store calls, direct", f"{build['total']} (median sum)", ""))
    for name, by_class in (r.get("search_shapes_direct_ms") or {}).items():
        for cls in ("common", "two", "rare"):
            if cls in by_class:
                rows.append((f"direct SQL {name}, {cls}", _p(by_class[cls]), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(r: dict[str, Any]) -> str:
    """One line for the harness's table."""
    return (
        f"search p50/p95/p99 {_p(r.get('search_ms'))} ms; "
        f"journey json/md p50 {_p(r.get('journey_json_ms'), ('p50',))}/"
        f"{_p(r.get('journey_md_ms'), ('p50',))} ms; "
        f"welcome warm p50/p95 {_p(r.get('welcome_warm_ms'), ('p50', 'p95'))}, "
        f"cold {_p(r.get('welcome_cold_ms'), ('p50', 'p95'))} ms; "
        f"load {r.get('load_s')} s, {r.get('db_mib')} MiB"
    )
