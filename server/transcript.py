"""A session's transcript as JSON and as Markdown, and the Markdown escaping both exports use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgpack

from persistence.store import PairRecord, SessionRecord, Store, notes_text

# every line break a member could send, and the control characters that are dropped
_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
# backslash-escaped wherever they are: emphasis, code, links, tables, HTML and entities
_INLINE = re.compile(r"([\\`*_\[\]~|<>&])")
# block markers that only count at the start of a line: headings, lists, setext underlines
_LINE_START = re.compile(r"^(\s*)(#|\+|-|=|\d+[.)])")

DASH = "\u2013"  # an en dash, as in "off the record 10:02-10:09"
KIND_NAMES = {
    "learning": "Learning",
    "feedback": "Feedback",
    "decision": "Decision",
    "question": "Question",
}


def _escape_start(m: re.Match[str]) -> str:
    """``# x`` becomes ``\\# x``; ``1. x`` becomes ``1\\. x`` (a digit cannot be escaped)."""
    indent, marker = m.group(1), m.group(2)
    if marker[0].isdigit():
        return f"{indent}{marker[:-1]}\\{marker[-1]}"
    return f"{indent}\\{marker}"


def md(text: str, indent: str | None = None) -> str:
    """Member-written text made inert in Markdown: HTML and Markdown syntax escaped, control
    characters dropped, every kind of line break normalised. Without ``indent`` the result is
    one line (breaks become spaces); with it, later lines are indented by ``indent`` so they
    stay inside the list item they belong to and can never start a line of their own."""
    text = _CONTROLS.sub("", _BREAKS.sub("\n", text).replace("\t", " "))
    lines = [
        _LINE_START.sub(_escape_start, _INLINE.sub(r"\\\1", line)) for line in text.split("\n")
    ]
    if indent is None:
        return " ".join(line.strip() for line in lines if line.strip())
    return ("\n" + indent).join(lines)


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ts: float, seconds: bool = True) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S" if seconds else "%H:%M")


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


def item_fields(
    change: Mapping[str, Any], names: Mapping[str, str], with_state: bool = True
) -> str:
    """An item's owner, due date and state (those present in ``change``), for a line."""
    parts = []
    if "owner" in change:
        parts.append(f"owner {md(names.get(change['owner'], change['owner']))}")
    if "due" in change:
        parts.append(f"due {md(change['due'])}" if change["due"] else "no due date")
    if with_state and "state" in change:
        parts.append(md(str(change["state"])))
    return ", ".join(parts)


def item_change(change: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """What an ``item_update`` did, in words ("marked it done, gave it to Ada")."""
    parts = []
    if "state" in change:
        state = str(change["state"])
        verbs = {"done": "marked it done", "dropped": "dropped it", "open": "reopened it"}
        parts.append(verbs.get(state, f"set its state to {md(state)}"))
    if "text" in change:
        parts.append(f"changed its text to “{md(str(change['text']))}”")
    if "owner" in change:
        parts.append(f"gave it to {md(names.get(change['owner'], str(change['owner'])))}")
    if "due" in change:
        due = change["due"]
        parts.append(f"set its due date to {md(str(due))}" if due else "removed its due date")
    return ", ".join(parts)


class _Record:
    """Folds a session's ``record`` events into one line per off-the-record stretch (where it
    went off) and one per request that was withdrawn, declined or never answered (where it
    was made)."""

    GONE = "\x00"  # a placeholder no longer needed (no member text holds a NUL)

    def __init__(self, lines: list[str], names: Mapping[str, str], members: tuple[str, str]):
        self.lines = lines
        self.names = names
        self.members = members
        self.request: tuple[int, str, float] | None = None  # line index, by, ts
        self.off: tuple[int, str, str, float] | None = None  # line index, asked, agreed, ts

    def name(self, user: str) -> str:
        return md(self.names.get(user, user))

    def placeholder(self) -> int:
        self.lines.append(self.GONE)
        return len(self.lines) - 1

    def event(self, ev: Mapping[str, Any]) -> None:
        state, by, ts = ev.get("state"), str(ev.get("by", "")), float(ev["ts"])
        if state == "requested":
            self.request = (self.placeholder(), by, ts)
        elif state == "off":
            if self.request is not None:
                asked = self.request[1]
            else:  # agreed to a request this transcript does not hold: the other member asked
                asked = next((m for m in self.members if m != by), by)
            self.request = None
            self.off = (self.placeholder(), asked, by, ts)
        elif state == "on":
            if self.off is not None:
                self._stretch(f"{self.since()}{DASH}{clock(ts, seconds=False)}")
            elif self.request is not None:
                index, asked, at = self.request
                answer = "withdrew it" if by == asked else f"{self.name(by)} declined"
                self.lines[index] = (
                    f"- `{clock(at)}` _{self.name(asked)} asked to go off the record; {answer}_"
                )
                self.request = None

    def since(self) -> str:
        assert self.off is not None
        return clock(self.off[3], seconds=False)

    def _stretch(self, span: str) -> None:
        assert self.off is not None
        index, asked, agreed, ts = self.off
        self.lines[index] = (
            f"- `{clock(ts)}` _off the record {span}, "
            f"asked by {self.name(asked)}, agreed by {self.name(agreed)}_"
        )
        self.off = None

    def finish(self, ended_at: float | None) -> None:
        if self.off is not None:
            if ended_at is not None:
                self._stretch(f"{self.since()}{DASH}{clock(ended_at, seconds=False)} (session end)")
            else:
                self._stretch(f"since {self.since()} (still off)")
        if self.request is not None:
            index, asked, at = self.request
            self.lines[index] = (
                f"- `{clock(at)}` _{self.name(asked)} asked to go off the record (no answer)_"
            )
        self.lines[:] = [line for line in self.lines if line != self.GONE]


def markdown(
    doc: dict[str, Any], pair: PairRecord, items: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The transcript as a Markdown document (``void`` events left out). ``items``: the pair's
    items by id, to name an item updated here that was created in an earlier session."""
    names = {pair.mentor_id: pair.mentor_name, pair.mentee_id: pair.mentee_name}
    items = items or {}

    def who(user: Any) -> str:
        return md(names.get(str(user), str(user)))

    s = doc["session"]
    events = [ev for ev in doc["events"] if ev.get("t") != "void"]
    goals = [ev for ev in events if ev["t"] == "goal"]
    goal = goals[-1].get("text") if goals else None
    by_seq = {ev["seq"]: ev for ev in events}
    titles: dict[str, str] = {i: str(item.get("text", "")) for i, item in items.items()}
    touched: list[str] = []
    marks: list[str] = []
    lines = [
        f"# Mentoring session {when(s['started_at'])}",
        "",
        f"- Mentor: {md(pair.mentor_name)}",
        f"- Mentee: {md(pair.mentee_name)}",
        f"- Started: {when(s['started_at'])}",
        f"- Ended: {when(s['ended_at']) if s['ended_at'] else 'still live'}",
        *([f"- Goal: {md(goal)}"] if goal else []),
        f"- Session id: `{s['id']}`",
        "",
        "## Timeline",
        "",
    ]
    record = _Record(lines, names, (pair.mentor_id, pair.mentee_id))
    for ev in events:
        t = ev["t"]
        at = clock(ev["ts"])
        if t == "chat":
            lines.append(f"- `{at}` **{who(ev['from'])}**: {md(ev['text'], '  ')}")
        elif t == "presence":
            lines.append(f"- `{at}` _{md(ev['user'].get('name', ''))} {md(ev['state'])}_")
        elif t == "ended":
            lines.append(f"- `{at}` _session ended by {who(ev['by'])}_")
        elif t == "goal":
            if ev.get("text"):
                lines.append(f"- `{at}` _{who(ev['by'])} set the goal:_ {md(ev['text'])}")
            else:
                lines.append(f"- `{at}` _{who(ev['by'])} cleared the goal_")
        elif t == "item":
            item = ev["item"]
            titles[item["id"]] = item["text"]
            touched.append(item["id"])
            fields = item_fields(item, names, with_state=False)
            lines.append(f"- `{at}` _{who(ev['by'])} added an item:_ {md(item['text'])} ({fields})")
        elif t == "item_update":
            item_id = str(ev["item"])
            title = titles.get(item_id, item_id)
            if "text" in ev:
                titles[item_id] = str(ev["text"])
            touched.append(item_id)
            change = item_change(ev, names)
            lines.append(f"- `{at}` _{who(ev['by'])} updated the item_ {md(title)}: {change}")
        elif t == "mark":
            kind = KIND_NAMES.get(ev.get("kind", ""), md(str(ev.get("kind", ""))))
            about = ""
            ref = by_seq.get(ev.get("ref")) if ev.get("ref") is not None else None
            if ref is not None:
                what = "message" if ref["t"] == "chat" else "event"
                about = f" (about the {what} at {clock(ref['ts'])})"
            elif ev.get("ref") is not None:
                about = f" (about event {int(ev['ref'])})"
            text = md(ev["text"])
            lines.append(f"- `{at}` **{kind}** marked by {who(ev['by'])}: {text}{about}")
            marks.append(f"- **{kind}** ({who(ev['by'])}, {at}): {text}")
        elif t == "record":
            record.event(ev)
    record.finish(s["ended_at"])
    if marks:
        lines += ["", "## Key moments", "", *marks]
    if touched:
        lines += ["", "## Action items", ""]
        for item_id in dict.fromkeys(touched):
            item = items.get(item_id)
            if item is None:
                continue
            box = {"open": "[ ]", "done": "[x]"}.get(str(item["state"]), "[-]")
            fields = item_fields(item, names)
            lines.append(f"- {box} {md(str(item['text']))} ({fields})")
    lines += ["", "## Notes", "", *notes_block(doc["notes"]), ""]
    return "\n".join(lines)


def notes_block(notes: str) -> list[str]:
    """The shared notes as written (they are Markdown), fenced so that no line of them can
    pass for a line of the document around them."""
    notes = _CONTROLS.sub("", _BREAKS.sub("\n", notes)).strip("\n")
    if not notes.strip():
        return ["_No notes._"]
    longest = max((len(run) for run in re.findall(r"~+|`+", notes)), default=0)
    fence = "~" * max(3, longest + 1)
    return [f"{fence}markdown", notes, fence]
