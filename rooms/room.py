"""The room state machine: frames and committed events in, decisions out.

It never awaits, touches a socket or reads the clock (``now`` is passed in). The hub
(:mod:`rooms.hub`) carries out what it returns: stores durable events, relays, replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rooms.codec import Frame
from rooms.errors import Invalid, PeerAbsent
from rooms.notes import Notes


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    role: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role}


@dataclass(frozen=True)
class Reply:
    """Send ``frame`` back to the member whose frame this answers."""

    frame: Frame


@dataclass(frozen=True)
class Append:
    """Allocate a seq, store the event, then publish it. ``key`` de-duplicates chat retries."""

    kind: str
    body: Frame
    key: str | None = None


@dataclass(frozen=True)
class AwaitAck:
    """A retry of a chat that is still being stored: ack it once ``key`` is committed."""

    key: str
    id: str


@dataclass(frozen=True)
class Relay:
    """Deliver ``frame`` to the members other than ``sender``; not stored."""

    frame: Frame


@dataclass(frozen=True)
class StoreNotes:
    """Store a notes update, then relay it to the other member."""

    update: bytes


Action = Reply | Append | AwaitAck | Relay | StoreNotes


def chat_key(user_id: str, client_id: str) -> str:
    return f"{user_id}\x00{client_id}"


@dataclass
class Room:
    """One live session of a pair's room, as this node sees it."""

    pair_id: str
    members: dict[str, Member]
    session_id: str
    head: int = 0
    chats: dict[str, int] = field(default_factory=dict)
    online: set[str] = field(default_factory=set)
    notes: Notes = field(default_factory=Notes)
    ended: bool = False
    ending: bool = False  # an end was decided here and is being stored
    present: set[str] = field(default_factory=set)  # presence as decided, ahead of `online`
    pending: set[str] = field(default_factory=set)
    joined: dict[str, int] = field(default_factory=dict)  # seq of each online member's join
    _early: dict[int, tuple[Frame | None, Any]] = field(default_factory=dict)

    def other(self, user_id: str) -> list[str]:
        return [m for m in self.members if m != user_id]

    # decisions on a member's frame -------------------------------------------------------
    def receive(self, user_id: str, frame: Frame) -> list[Action]:
        t = frame["t"]
        if self.ended or self.ending:
            return []  # nothing is decided after the session's end, even before it is stored
        if t == "ping":
            return [Reply({"t": "pong", "head": self.head})]
        if t == "chat":
            key = chat_key(user_id, frame["id"])
            if key in self.chats:
                return [Reply({"t": "ack", "id": frame["id"], "seq": self.chats[key]})]
            if key in self.pending:
                return [AwaitAck(key, frame["id"])]
            self.pending.add(key)
            return [
                Append("chat", {"id": frame["id"], "from": user_id, "text": frame["text"]}, key)
            ]
        if t == "typing":
            return [Relay({"t": "typing", "from": user_id, "on": frame["on"]})]
        if t == "awareness":
            return [Relay({"t": "awareness", "from": user_id, "u": frame["u"]})]
        if t == "notes":
            self.notes.apply(frame["u"])
            return [StoreNotes(frame["u"])]
        if t == "signal":
            if not any(m in self.online for m in self.other(user_id)):
                raise PeerAbsent("the other member is not in the room")
            return [Relay({"t": "signal", "from": user_id, "data": frame["data"]})]
        if t == "end":
            self.ending = True
            return [Append("ended", {"by": user_id})]
        raise Invalid(f"{t!r} is not allowed after hello")

    def join(self, user_id: str) -> Append:
        self.present.add(user_id)
        return Append("presence", {"user": self.members[user_id].as_dict(), "state": "joined"})

    def leave(self, user_id: str) -> Append:
        """The member's leave; keyed by the join it ends, so nodes that notice it at once
        (a clean close here, a dead node's sweep there) store it only once."""
        key = f"left\x00{user_id}\x00{self.joined.get(user_id, 0)}"
        self.present.discard(user_id)
        return Append("presence", {"user": self.members[user_id].as_dict(), "state": "left"}, key)

    def welcome(self, user_id: str, ice_servers: list[dict[str, Any]]) -> Frame:
        return {
            "t": "welcome",
            "session_id": self.session_id,
            "user": self.members[user_id].as_dict(),
            "members": [m.as_dict() for m in self.members.values()],
            "peers": [self.members[m].as_dict() for m in self.other(user_id) if m in self.online],
            "head": self.head,
            "ice_servers": ice_servers,
            "notes": self.notes.state(),
        }

    # committed events ----------------------------------------------------------------------
    def commit(self, seq: int, event: Frame | None, payload: Any = None) -> list[tuple[Frame, Any]]:
        """Take a stored event (in any order); return those now deliverable, in seq order.

        ``event=None`` is a tombstone: a seq whose write the store rejected, skipped so that
        it does not hold back the events after it.
        """
        if seq > self.head:
            self._early[seq] = (event, payload)
        ready = []
        while self.head + 1 in self._early:
            self.head += 1
            ev, pl = self._early.pop(self.head)
            if ev is not None:
                self._apply(ev)
                ready.append((ev, pl))
        return ready

    def gap(self) -> tuple[int, int] | None:
        """Seqs missing before the earliest held-back event, as ``(after, upto)``."""
        if self._early:
            return self.head, min(self._early) - 1
        return None

    def _apply(self, event: Frame) -> None:
        t = event["t"]
        if t == "chat":
            key = chat_key(event["from"], event["id"])
            self.chats[key] = event["seq"]
            self.pending.discard(key)
        elif t == "presence":
            uid = event["user"]["id"]
            if event["state"] == "joined":
                self.online.add(uid)
                self.present.add(uid)
                self.joined[uid] = event["seq"]
            else:
                self.online.discard(uid)
                self.present.discard(uid)
        elif t == "ended":
            self.ended = True
            self.online.clear()
