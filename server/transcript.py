"""A session's transcript as JSON and as Markdown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack

from persistence.store import PairRecord, SessionRecord, Store, notes_text


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def transcript(store: Store, session: SessionRecord) -> dict[str, Any]:
    """Every durable event of the session (``void`` included) and its notes text."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        rows = await store.events(session.id, after, limit=1000)
        if not rows:
            break
        events.extend(msgpack.unpackb(r.body, raw=False) for r in rows)
        after = rows[-1].seq
    if session.ended_at is not None and session.notes_text is not None:
        notes = session.notes_text
    else:
        notes = notes_text(await store.notes_updates(session.id))
    return {
        "session": {
            "id": session.id,
            "pair_id": session.pair_id,
            "started_at": session.started_at,
            "ended_at": session.ended_at,
        },
        "events": events,
        "notes": notes,
    }


def markdown(doc: dict[str, Any], pair: PairRecord) -> str:
    """The transcript as a Markdown document (``void`` events left out)."""
    names = {pair.mentor_id: pair.mentor_name, pair.mentee_id: pair.mentee_name}
    s = doc["session"]
    lines = [
        f"# Mentoring session {_when(s['started_at'])}",
        "",
        f"- Mentor: {pair.mentor_name}",
        f"- Mentee: {pair.mentee_name}",
        f"- Started: {_when(s['started_at'])}",
        f"- Ended: {_when(s['ended_at']) if s['ended_at'] else 'still live'}",
        f"- Session id: `{s['id']}`",
        "",
        "## Timeline",
        "",
    ]
    for ev in doc["events"]:
        if ev["t"] == "void":
            continue  # a seq that was allocated but holds nothing: kept in JSON, not shown here
        at = datetime.fromtimestamp(ev["ts"], UTC).strftime("%H:%M:%S")
        if ev["t"] == "chat":
            who = names.get(ev["from"], ev["from"])
            text = ev["text"].replace("\n", "\n  ")
            lines.append(f"- `{at}` **{who}**: {text}")
        elif ev["t"] == "presence":
            lines.append(f"- `{at}` _{ev['user']['name']} {ev['state']}_")
        elif ev["t"] == "ended":
            lines.append(f"- `{at}` _session ended by {names.get(ev['by'], ev['by'])}_")
    lines += ["", "## Notes", "", doc["notes"] or "_No notes._", ""]
    return "\n".join(lines)
