"""S6, the notes path (issue 11): both members of every room type in the shared notes.

Each member holds its own ``pycrdt.Doc`` with the ``notes`` ``Text`` and types like an editor:
every update is one small transaction (1-4 characters at its cursor, sometimes a newline,
sometimes a backspace, now and then a jump of the cursor elsewhere in its own text), encoded
as the Yjs v1 update of that transaction (the doc's transaction observer: what a Yjs editor's
``doc.on("update")`` sends), ``rate`` updates per second per member (5 for S6).

**Pre-generated.** A member never applies the other's updates to the document it types in, so
each member edits only its own content and its updates depend on nothing but its own earlier
ones (the server refuses an update that builds on one it does not have). Each member's whole
sequence of updates is therefore made before the connections open, and packed into its msgpack
frames (``{"t":"notes","u":bytes}``), so the timed window spends no generator CPU on Yjs; the
time it took is ``pregen_s``. Text is ASCII (pycrdt's Text positions count UTF-8 bytes).

**Relay latency.** Notes updates have no id and no ack, and the sender gets no echo (protocol
v1). The receiver recognises each relayed ``u`` by its bytes: every update of a member is
unique (its client id and clock, or the items it deletes), and the generator keeps, per member,
a map from the update's bytes to its index in the sequence and the send time of each index
(sender and receiver are in this one process). Relay latency = receive time - send time, for
updates sent in the measuring window (``relay_ms``; also under ``fanout_ms``, the key the
other scenarios and the table use). ``lost`` = sent but never relayed to the other member by
the end of the drain; ``dup`` = relayed more than once; ``unknown_relays`` = a ``notes`` frame
that is none of the other member's updates (e.g. a full state sent after a reload).

**Stored.** The server relays an update only after storing it, so after the drain the stored
notes of every room should hold every update either member sent. Checked for every room, after
the drain and before the connections close (the session is live, so the transcript's ``notes``
is computed from the stored update rows, whatever compaction has merged):
``GET /api/sessions/{session_id}/transcript`` with a member's token, whose ``notes`` text must
equal (a) the text of a fresh document that applied every update both members sent, and (b) the
text each member's document converges to: its own updates plus the other's updates it received.
``notes_rooms_stored`` counts rooms whose stored text equals (a); ``notes_rooms_converged`` those
where both members' (b) equal it too. Rooms that differ are listed in
``notes_mismatch_examples`` (first few).

**Late, or lost?** When the server falls behind, updates still queued in it at the end of the
drain count as ``lost`` (as for the chats of S1-S4) and their rooms as not stored. To tell a
backlog from a real loss, the generator then waits (at most ``LATE_WAIT`` seconds) until every
update is relayed, and checks the rooms that did not match again: ``relayed_late``,
``lost_final``, ``late_wait_s``, ``notes_rooms_stored_final``, and ``relay_ms_final`` (the
latency percentiles with the late relays: ``relay_ms`` leaves out what was not relayed by the
end of the drain, so it understates the tail when ``lost`` > 0).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pycrdt
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench.loadgen import LoadGen, Member, MenteoAdapter, percentiles

ROOT = "notes"  # the one text root the server accepts (rooms/notes.py)
EMPTY_DOC = b"\x00\x00"  # welcome.notes of an empty document
WORDS = (
    "goal",
    "cv",
    "interview",
    "portfolio",
    "next",
    "step",
    "review",
    "plan",
    "talk",
    "read",
    "ship",
    "ask",
    "todo",
    "demo",
    "notes",
    "week",
)
RELAY_P99_TARGET_MS = 20.0  # issue 11
LATE_WAIT = 60.0  # seconds, after the drain and the first check, for a server that fell behind


@dataclass(eq=False)
class Script:
    """One member's pre-generated edits: updates, their frames, and when each was sent."""

    updates: list[bytes]
    frames: list[bytes]
    index: dict[bytes, int]  # update bytes -> its position in ``updates``
    sent_ns: list[int] = field(default_factory=list)  # send time (perf_counter_ns) by index


def typing_script(n: int, rng: random.Random, client_id: int) -> Script:
    """``n`` Yjs updates of one member typing in its own document, one transaction each."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc(client_id=client_id)
    text = doc.get(ROOT, type=pycrdt.Text)
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    length = cursor = 0
    pending = ""  # the rest of the word being typed
    try:
        while len(updates) < n:
            r = rng.random()
            if r < 0.04 and length:
                cursor = rng.randint(0, length)  # a click elsewhere in its own text
                continue
            if r < 0.12 and cursor:  # backspace
                del text[cursor - 1 : cursor]
                cursor -= 1
                length -= 1
                pending = ""
                continue
            if r < 0.20:
                chunk = "\n"
            else:
                if not pending:
                    pending = rng.choice(WORDS) + " "
                k = rng.randint(1, 4)  # an editor sends one update per keystroke or small burst
                chunk, pending = pending[:k], pending[k:]
            text.insert(cursor, chunk)
            cursor += len(chunk)
            length += len(chunk)
    finally:
        doc.unobserve(sub)
    del updates[n:]
    index = {u: i for i, u in enumerate(updates)}
    if len(index) != len(updates):
        raise RuntimeError("two updates of one member have the same bytes: cannot tell them apart")
    frames = [msgpack.packb({"t": "notes", "u": u}, use_bin_type=True) for u in updates]
    return Script(updates, frames, index)


def notes_of(*update_lists: Sequence[bytes]) -> str:
    """The ``notes`` text of a fresh document after applying these updates."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    text = doc.get(ROOT, type=pycrdt.Text)
    for updates in update_lists:
        for u in updates:
            doc.apply_update(u)
    return str(text)


class NotesAdapter(MenteoAdapter):
    """Protocol v1, keeping each member's welcome: its session id (for the transcript) and its
    notes state (empty for a fresh pair)."""

    def __init__(self, setup_workers: int = 8) -> None:
        super().__init__(setup_workers=setup_workers)
        self.session_of: dict[Member, str] = {}
        self.welcome_notes_not_empty = 0

    async def handshake(self, m: Member, ws: ClientConnection) -> None:
        await ws.send(msgpack.packb({"t": "hello", "token": m.token}, use_bin_type=True))
        frame = msgpack.unpackb(await ws.recv(), raw=False)
        if frame.get("t") != "welcome":
            raise RuntimeError(f"expected welcome, got {frame}")
        self.session_of[m] = frame["session_id"]
        if frame.get("notes") != EMPTY_DOC:
            self.welcome_notes_not_empty += 1


class NotesLoadGen(LoadGen):
    """:class:`LoadGen` with notes updates instead of chats (``Load.mode == "notes"``)."""

    adapter: NotesAdapter

    def __init__(self, adapter: NotesAdapter, *args: Any, **kwargs: Any) -> None:
        super().__init__(adapter, *args, **kwargs)
        self.expect_echo = False  # notes are relayed to the other member only
        self.scripts: dict[Member, Script] = {}
        self.error_codes: collections.Counter[str] = collections.Counter()
        self.error_examples: list[str] = []
        self.unknown_relays = 0
        self.exhausted = 0
        self.pregen_s = 0.0
        self._unmatched: list[int] = []  # rooms of the last check whose notes did not match

    async def prepare(self) -> float:
        took = await super().prepare()
        load = self.load
        # every due time of a rate sender falls in [start, stop): at most this many sends
        n = math.ceil(load.rate * (load.warmup + load.seconds)) + 2
        t0 = time.process_time()
        for m in self.members:
            rng = random.Random(f"{load.seed}/{m.room}/{m.role}")
            # distinct client ids within a room; Yjs orders concurrent inserts by them
            client_id = (rng.getrandbits(30) << 1) | m.role
            self.scripts[m] = typing_script(n, rng, client_id)
        self.pregen_s = time.process_time() - t0
        return took

    # traffic ------------------------------------------------------------------------------
    async def _sender(self, m: Member, start: float, stop: float) -> None:
        try:
            await self._rate_sender(m, start, stop)
        except ConnectionClosed:
            pass

    async def _send(self, m: Member) -> None:
        assert m.ws is not None
        script = self.scripts[m]
        n = m.sent
        if n >= len(script.frames):
            self.exhausted += 1
            return
        m.sent += 1
        self.total_sent += 1
        t = time.perf_counter_ns()
        script.sent_ns.append(t)
        if self.w0 <= t < self.w1:
            self.sent_in_window += 1
        await m.ws.send(script.frames[n])

    async def _reader(self, m: Member) -> None:
        ws = m.ws
        assert ws is not None and m.peer is not None
        other = self.scripts[m.peer]
        index, sent_ns, peer_uid = other.index, other.sent_ns, m.peer.uid
        unpack, now = msgpack.unpackb, time.perf_counter_ns
        try:
            async for data in ws:
                f = unpack(data, raw=False)
                t = f.get("t")
                if t == "notes":
                    tr = now()
                    n = index.get(f.get("u"), -1)
                    if n < 0 or n >= len(sent_ns) or f.get("from") != peer_uid:
                        self.unknown_relays += 1
                        continue
                    if n in m.seen:
                        m.dups += 1
                        continue
                    m.seen.add(n)
                    self.total_delivered += 1
                    ts = sent_ns[n]
                    if self.w0 <= ts < self.w1:
                        self.fanout.append((tr - ts) / 1e9)
                    if self.w0 <= tr < self.w1:
                        self.delivered_in_window += 1
                elif t == "error":
                    self.errors += 1
                    code = str(f.get("code"))
                    self.error_codes[code] += 1
                    if len(self.error_examples) < 3:
                        self.error_examples.append(f"{code}: {f.get('message')}"[:200])
        except ConnectionClosed:
            pass
        finally:
            self._reader_done(m, ws)

    def _settled(self) -> bool:
        return self.total_delivered >= self.total_sent

    async def _traffic(self, live: list[Member], loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        result = await super()._traffic(live, loop)
        relay = result["fanout_ms"]
        p99 = relay.get("p99")
        result.update(
            {
                "relay_ms": relay,
                "relay_p99_target_ms": RELAY_P99_TARGET_MS,
                "relay_p99_within_target": None if p99 is None else p99 <= RELAY_P99_TARGET_MS,
                "relayed": result["delivered"],
                "acked": None,  # notes have no ack and no echo
                "unacked": None,
                "ack_ms": None,
                "acks_per_s": None,
                "echo_missing": None,
                "error_codes": dict(self.error_codes),
                "error_examples": self.error_examples,
                "unknown_relays": self.unknown_relays,
                "script_exhausted": self.exhausted,
                "pregen_s": round(self.pregen_s, 2),
                "pregen_updates": sum(len(s.updates) for s in self.scripts.values()),
                "update_bytes_mean": self._mean_update_bytes(),
                "welcome_notes_not_empty": self.adapter.welcome_notes_not_empty,
            }
        )
        checked = await self._verify_stored(self.pairs)
        result.update(checked)
        if not self._settled():
            result.update(await self._late(result, loop))
        return result

    async def _late(
        self, result: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> dict[str, Any]:
        """Wait for a backlog to clear, then count again and check the unmatched rooms again."""
        t0 = loop.time()
        while not self._settled() and loop.time() - t0 < LATE_WAIT:
            if all(m.close_code is not None for m in self.members if m.ws is not None):
                break
            await asyncio.sleep(0.1)
        waited = loop.time() - t0
        unmatched = set(self._unmatched)
        again = await self._verify_stored([(a, b) for a, b in self.pairs if a.room in unmatched])
        sent = sum(m.sent for m in self.members)
        unique = sum(len(m.seen) for m in self.members)
        return {
            "late_wait_s": round(waited, 2),
            "relayed_late": unique - result["delivered"],
            "lost_final": sent - unique,
            "notes_rooms_stored_final": result["notes_rooms_stored"] + again["notes_rooms_stored"],
            "notes_rooms_converged_final": result["notes_rooms_converged"]
            + again["notes_rooms_converged"],
            "notes_mismatch_examples_final": again["notes_mismatch_examples"],
            "relay_ms_final": percentiles(self.fanout, 1000),
        }

    def _mean_update_bytes(self) -> float | None:
        sizes = [len(u) for m in self.members for u in self.scripts[m].updates[: m.sent]]
        return round(sum(sizes) / len(sizes), 1) if sizes else None

    # storage ------------------------------------------------------------------------------
    def _transcript_notes(self, m: Member, session_id: str) -> str | None:
        """The ``notes`` text of the session's transcript, read with ``m``'s token."""
        node = self.nodes[0]
        req = urllib.request.Request(f"{node.http}/api/sessions/{session_id}/transcript")
        req.add_header("Authorization", f"Bearer {m.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                notes = json.loads(r.read())["notes"]
                return notes if isinstance(notes, str) else None
        except (OSError, ValueError, KeyError):
            return None

    async def _verify_stored(self, pairs: Sequence[tuple[Member, Member]]) -> dict[str, Any]:
        """Each room's stored notes against what its members sent and received (see above);
        the rooms that do not match (stored or converged) are kept in ``_unmatched``."""
        t0 = time.monotonic()
        sessions = self.adapter.session_of
        rooms = [(a, b) for a, b in pairs if a in sessions]
        self._unmatched = []
        split = sum(1 for a, b in rooms if sessions.get(b, sessions[a]) != sessions[a])
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(8) as pool:
            stored = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, self._transcript_notes, a, sessions[a])
                    for a, _ in rooms
                )
            )
        ok = converged = unread = 0
        examples: list[dict[str, Any]] = []
        chars = 0
        for (a, b), text in zip(rooms, stored, strict=True):
            sa, sb = self.scripts[a], self.scripts[b]
            mine_a, mine_b = sa.updates[: a.sent], sb.updates[: b.sent]
            expected = notes_of(mine_a, mine_b)
            chars += len(expected)
            # what each member's document holds: its own updates and the other's it received
            views = []
            for m, mine, theirs in ((a, mine_a, sb), (b, mine_b, sa)):
                peer_sent = len(theirs.sent_ns)
                if len(m.seen) == peer_sent:
                    views.append(expected)  # it received all the other sent: the same updates
                else:
                    got = [theirs.updates[i] for i in sorted(m.seen)]
                    views.append(notes_of(mine, got))
            if text is None:
                unread += 1
            elif text == expected:
                ok += 1
                if all(v == text for v in views):
                    converged += 1
            if text != expected or any(v != expected for v in views):
                self._unmatched.append(a.room)
            if (text != expected or any(v != expected for v in views)) and len(examples) < 3:
                examples.append(
                    {
                        "room": a.room,
                        "session_id": sessions[a],
                        "stored_chars": None if text is None else len(text),
                        "expected_chars": len(expected),
                        "members_chars": [len(v) for v in views],
                        "first_difference": None if text is None else _first_diff(text, expected),
                    }
                )
        return {
            "notes_rooms_checked": len(rooms),
            "notes_rooms_stored": ok,
            "notes_rooms_converged": converged,
            "notes_rooms_unread": unread,
            "notes_rooms_split_session": split,
            "notes_mismatch_examples": examples,
            "notes_chars_mean": round(chars / len(rooms), 1) if rooms else None,
            "verify_s": round(time.monotonic() - t0, 2),
        }


def _first_diff(a: str, b: str) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def summary(r: dict[str, Any]) -> list[str]:
    """What the table's notes column says of an S6 run."""
    out = ["fan-out column = notes relay"]
    checked = r.get("notes_rooms_checked")
    if checked is not None:
        out.append(f"stored {r.get('notes_rooms_stored')}/{checked} rooms")
        if r.get("notes_rooms_converged") != r.get("notes_rooms_stored"):
            out.append(f"converged {r.get('notes_rooms_converged')}/{checked}")
    if r.get("relay_p99_within_target") is False:
        out.append(f"relay p99 over {r.get('relay_p99_target_ms'):.0f} ms")
    if r.get("error_codes"):
        out.append(" ".join(f"{k} x{v}" for k, v in sorted(r["error_codes"].items())))
    if r.get("late_wait_s") is not None:
        out.append(
            f"then {r.get('relayed_late')} relayed late in {r['late_wait_s']:.1f} s, "
            f"lost {r.get('lost_final')}, stored {r.get('notes_rooms_stored_final')}/{checked}"
        )
    if r.get("server_log_warnings"):
        out.append(f"{r['server_log_warnings']} warnings in server log")
    if r.get("unknown_relays"):
        out.append(f"{r['unknown_relays']} unknown relays")
    if r.get("script_exhausted"):
        out.append(f"{r['script_exhausted']} sends past the script")
    return out
