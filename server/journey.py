"""A pair's journey: its sessions with goals and key moments, every item with its history."""

from __future__ import annotations

from typing import Any

import msgpack

from persistence.store import ITEM_CHANGES, PairRecord, Store
from server.transcript import KIND_NAMES, clock, item_change, item_fields, md, when

MARK_FIELDS = ("seq", "kind", "text", "by", "ts", "ref")
STATES = ("open", "done", "dropped")


async def journey(store: Store, pair: PairRecord) -> dict[str, Any]:
    """The journey JSON: sessions oldest first, every item of the pair oldest first."""
    summaries = await store.list_sessions(pair.id)
    events = await store.pair_events(pair.id, ("mark", "item", "item_update"))
    marks: dict[str, list[dict[str, Any]]] = {}
    history: dict[str, list[dict[str, Any]]] = {}
    for row in events:
        ev = msgpack.unpackb(row.body, raw=False)
        if row.kind == "mark":
            marks.setdefault(row.session_id, []).append({f: ev.get(f) for f in MARK_FIELDS})
            continue
        step = {"session_id": row.session_id, "seq": row.seq, "by": ev.get("by"), "ts": row.ts}
        if row.kind == "item":
            item = ev.get("item") or {}
            item_id = item.get("id")
            step.update({k: item[k] for k in ITEM_CHANGES if k in item})
        else:
            item_id = ev.get("item")
            step.update({k: ev[k] for k in ITEM_CHANGES if k in ev})
        if isinstance(item_id, str):
            history.setdefault(item_id, []).append(step)
    return {
        "pair": {
            "id": pair.id,
            "mentor": {"id": pair.mentor_id, "name": pair.mentor_name},
            "mentee": {"id": pair.mentee_id, "name": pair.mentee_name},
        },
        "sessions": [
            {
                "id": s.session.id,
                "started_at": s.session.started_at,
                "ended_at": s.session.ended_at,
                "goal": s.goal,
                "message_count": s.message_count,
                "marks": marks.get(s.session.id, []),
            }
            for s in reversed(summaries)
        ],
        "items": [
            {**item, "history": history.get(item["id"], [])} for item in await store.items(pair.id)
        ],
    }


def journey_markdown(doc: dict[str, Any]) -> str:
    """The whole journey as one Markdown document, members named, every text escaped."""
    pair = doc["pair"]
    mentor, mentee = pair["mentor"], pair["mentee"]
    names = {mentor["id"]: mentor["name"], mentee["id"]: mentee["name"]}

    def who(user: Any) -> str:
        return md(names.get(str(user), str(user)))

    items = doc["items"]
    counts = ", ".join(f"{sum(i['state'] == s for i in items)} {s}" for s in STATES)
    lines = [
        f"# Mentoring journey: {md(mentor['name'])} and {md(mentee['name'])}",
        "",
        f"- Mentor: {md(mentor['name'])}",
        f"- Mentee: {md(mentee['name'])}",
        f"- Sessions: {len(doc['sessions'])}",
        f"- Action items: {counts}" if items else "- Action items: none",
        "",
        "## Sessions",
    ]
    if not doc["sessions"]:
        lines += ["", "_No sessions yet._"]
    for n, s in enumerate(doc["sessions"], 1):
        ended = when(s["ended_at"]) if s["ended_at"] else "still live"
        lines += [
            "",
            f"### {n}. {when(s['started_at'])}",
            "",
            f"- Goal: {md(s['goal']) if s['goal'] else '_none set_'}",
            f"- Ended: {ended}",
            f"- Messages: {s['message_count']}",
        ]
        if s["marks"]:
            lines.append("- Key moments:")
            for m in s["marks"]:
                kind = KIND_NAMES.get(str(m["kind"]), md(str(m["kind"])))
                lines.append(
                    f"  - **{kind}** ({who(m['by'])}, {clock(m['ts'])}): {md(str(m['text']))}"
                )
    lines += ["", "## Action items"]
    if not items:
        lines += ["", "_No action items._"]
    for state in STATES:
        group = [i for i in items if i["state"] == state]
        if not group:
            continue
        lines += ["", f"### {state.capitalize()}", ""]
        for item in group:
            box = {"open": "[ ]", "done": "[x]"}.get(state, "[-]")
            fields = item_fields(item, names, with_state=False)
            lines.append(f"- {box} {md(str(item['text']))} ({fields})")
            for step in item["history"]:
                first = step is item["history"][0]
                what = "created it" if first else item_change(step, names)
                lines.append(f"  - {when(step['ts'])}: {who(step['by'])} {what}")
    lines.append("")
    return "\n".join(lines)
