"""Shared notes through a real server: concurrent edits converge, offline edits merge, the
server never echoes a sender's own update, and compaction keeps the text while shrinking rows.

Clients hold a pycrdt document with a ``Y.Text`` named ``notes``. pycrdt counts Text
positions in UTF-8 bytes, so every edit here computes byte offsets from the Python string.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pycrdt

from tests.support import Client, ServerProcess


class Pad:
    """A client's copy of the notes."""

    def __init__(self, state: bytes | None = None) -> None:
        self.doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        self.text = self.doc.get("notes", type=pycrdt.Text)
        if state is not None:
            self.doc.apply_update(state)

    @property
    def value(self) -> str:
        return str(self.text)

    def _edit(self, index: int, piece: str) -> bytes:
        """Insert at a UTF-8 byte ``index``; return the incremental update."""
        before = self.doc.get_state()
        self.text.insert(index, piece)
        return self.doc.get_update(before)

    def append(self, piece: str) -> bytes:
        return self._edit(len(self.value.encode()), piece)

    def prepend(self, piece: str) -> bytes:
        return self._edit(0, piece)

    def insert_after(self, anchor: str, piece: str) -> bytes:
        at = self.value.index(anchor) + len(anchor)  # in code points
        return self._edit(len(self.value[:at].encode()), piece)

    def apply(self, update: bytes) -> None:
        self.doc.apply_update(update)

    def missing_from(self, state: bytes) -> bytes:
        """What this document holds that the document ``state`` lacks, as one update."""
        return self.doc.get_update(Pad(state).doc.get_state())


async def send_notes(client: Client, update: bytes) -> None:
    await client.send({"t": "notes", "u": update})


async def update_from(client: Client, user: str) -> bytes:
    """The next notes frame; it must come from ``user`` (never the receiver's own)."""
    frame = await client.expect("notes")
    assert frame["from"] == user, frame
    update: bytes = frame["u"]
    return update


async def settle(client: Client) -> dict[str, Any]:
    """Every frame this client sent before is processed once the pong arrives."""
    await client.send({"t": "ping"})
    return await client.expect("pong")


async def barrier(client: Client, cid: str) -> None:
    """A durable chat of one's own: anything relayed after earlier writes arrives before it."""
    await client.send({"t": "chat", "id": cid, "text": "barrier"})
    await client.expect("chat", id=cid)


def notes_from(client: Client, user: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["t"] == "notes" and f["from"] == user]


def transcript_notes(server: ServerProcess, session_id: str, token: str) -> str:
    status, doc, _ = server.request("GET", f"/api/sessions/{session_id}/transcript", token=token)
    assert status == 200, doc
    notes: str = doc["notes"]
    return notes


async def test_concurrent_edits_converge(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    pad_a = Pad(a.welcome["notes"])
    assert pad_a.value == ""
    await send_notes(a, pad_a.append("Agenda: café ☕ done\n"))
    await barrier(a, "agenda")  # stored and relayed (to nobody) before the mentee joins

    b = await Client.open(server, pair.id, pair.mentee_token)
    pad_b = Pad(b.welcome["notes"])
    assert pad_b.value == "Agenda: café ☕ done\n"

    rounds = 8

    async def type_into(client: Client, pad: Pad, tag: str) -> list[str]:
        typed = []
        for i in range(rounds):
            piece = f"[{tag}{i} ü€😀]"
            typed.append(piece)
            if i == 0:
                update = pad.insert_after("café ", piece)  # same spot for both: a real conflict
            elif i % 2:
                update = pad.append(piece)
            else:
                update = pad.prepend(piece)
            await send_notes(client, update)
        return typed

    typed_a, typed_b = await asyncio.gather(type_into(a, pad_a, "A"), type_into(b, pad_b, "B"))
    assert pad_a.value != pad_b.value  # they really diverged before merging

    for _ in range(rounds):
        pad_a.apply(await update_from(a, pair.mentee))
        pad_b.apply(await update_from(b, pair.mentor))

    merged = pad_a.value
    assert pad_b.value == merged
    for piece in [*typed_a, *typed_b]:
        assert merged.count(piece) == 1, (piece, merged)
    for piece in ("Agenda: ", "café ", "☕ done\n"):
        assert piece in merged
    assert len(merged) == len("Agenda: café ☕ done\n") + sum(map(len, typed_a + typed_b))

    # nobody gets their own updates back
    await barrier(a, "done-a")
    await barrier(b, "done-b")
    assert notes_from(a, pair.mentor) == []
    assert notes_from(b, pair.mentee) == []
    assert len(notes_from(a, pair.mentee)) == rounds
    assert len(notes_from(b, pair.mentor)) == rounds  # the agenda came in b's welcome

    sid = a.welcome["session_id"]
    assert transcript_notes(server, sid, pair.mentee_token) == merged

    # the mentor reconnects: the welcome alone carries the merged document
    again = await Client.open(server, pair.id, pair.mentor_token)
    assert again.welcome["session_id"] == sid
    assert Pad(again.welcome["notes"]).value == merged
    assert await a.closed() == 4409
    await again.close()
    await b.close()


async def test_offline_edits_are_merged(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    pad_a, pad_b = Pad(a.welcome["notes"]), Pad(b.welcome["notes"])
    await send_notes(a, pad_a.append("shared: base ✓\n"))
    pad_b.apply(await update_from(b, pair.mentor))
    assert pad_b.value == "shared: base ✓\n"

    await a.close()
    await b.expect("presence", state="left")

    # both edit; only b is connected
    pad_a.prepend("A title ⚑\n")
    pad_a.insert_after("shared: ", "(edited offline é) ")
    pad_a.append("A offline ñ\n")
    await send_notes(b, pad_b.append("B online 漢字\n"))
    await send_notes(b, pad_b.insert_after("base", " plus"))
    await barrier(b, "b-stored")  # merged once stored: the writer is first in, first out

    a2 = await Client.open(server, pair.id, pair.mentor_token)
    welcome_notes = a2.welcome["notes"]
    assert "B online 漢字" in Pad(welcome_notes).value
    assert "A offline" not in Pad(welcome_notes).value
    catch_up = pad_a.missing_from(welcome_notes)
    pad_a.apply(welcome_notes)
    await send_notes(a2, catch_up)
    pad_b.apply(await update_from(b, pair.mentor))

    merged = pad_a.value
    assert pad_b.value == merged
    for piece in (
        "A title ⚑\n",
        "(edited offline é) ",
        "A offline ñ\n",
        "B online 漢字\n",
        " plus",
        "shared: ",
    ):
        assert merged.count(piece) == 1, (piece, merged)
    await barrier(a2, "a2-stored")
    sid = a2.welcome["session_id"]
    assert transcript_notes(server, sid, pair.mentor_token) == merged
    b2 = await Client.open(server, pair.id, pair.mentee_token)
    assert Pad(b2.welcome["notes"]).value == merged
    await a2.close()
    await b2.close()


async def test_invalid_update_is_rejected(server: ServerProcess) -> None:
    pair = server.pair()
    a = await Client.open(server, pair.id, pair.mentor_token)
    b = await Client.open(server, pair.id, pair.mentee_token)
    pad = Pad(a.welcome["notes"])
    await send_notes(a, pad.append("kept"))
    await update_from(b, pair.mentor)
    await a.send({"t": "notes", "u": b"\xff\xfe\x00 not a yjs update"})
    err = await a.expect("error")
    assert err["code"] == "notes_rejected"
    await settle(a)  # still usable
    await barrier(a, "after-bad")
    assert len(notes_from(b, pair.mentor)) == 1  # the bad one was not relayed
    sid = a.welcome["session_id"]
    assert transcript_notes(server, sid, pair.mentor_token) == "kept"
    c = await Client.open(server, pair.id, pair.mentee_token)
    assert Pad(c.welcome["notes"]).value == "kept"
    await a.close()
    await c.close()


def count_rows(db: Path, session_id: str) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM notes_updates WHERE session_id = ?", (session_id,)
        ).fetchone()
    return int(row[0])


def stored_text(db: Path, session_id: str) -> str:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        rows = conn.execute(
            "SELECT data FROM notes_updates WHERE session_id = ? ORDER BY id", (session_id,)
        ).fetchall()
    pad = Pad()
    for (data,) in rows:
        pad.apply(bytes(data))
    return pad.value


async def test_compaction_shrinks_rows_and_keeps_text(workdir: Path) -> None:
    srv = ServerProcess(
        workdir, env={"MENTEO_NOTES_COMPACT_EVERY": "10", "MENTEO_RATE_LIMIT": "0"}
    ).start()
    try:
        pair = srv.pair()
        a = await Client.open(srv, pair.id, pair.mentor_token)
        b = await Client.open(srv, pair.id, pair.mentee_token)
        sid = a.welcome["session_id"]
        pad = Pad(a.welcome["notes"])
        n = 50
        for i in range(n):
            await send_notes(a, pad.append(f"w{i}é "))
        for _ in range(n):  # relayed only once stored: all 50 are written now
            await update_from(b, pair.mentor)
        full = "".join(f"w{i}é " for i in range(n))
        assert pad.value == full

        db = workdir / "rooms.db"
        deadline = time.monotonic() + 10
        rows = count_rows(db, sid)
        while rows > 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            rows = count_rows(db, sid)
        assert 1 <= rows <= 20, f"{rows} notes rows after {n} updates with compaction every 10"
        assert stored_text(db, sid) == full
        assert transcript_notes(srv, sid, pair.mentee_token) == full

        joiner = await Client.open(srv, pair.id, pair.mentor_token)
        assert Pad(joiner.welcome["notes"]).value == full
        # editing continues on top of the compacted document
        fresh = Pad(joiner.welcome["notes"])
        await send_notes(joiner, fresh.append("tail ✓"))
        await update_from(b, pair.mentor)
        assert transcript_notes(srv, sid, pair.mentee_token) == full + "tail ✓"
        await joiner.close()
        await b.close()
    finally:
        srv.stop()
