"""Messages between the nodes that hold one room, on the room's broker channel.

Every message names its session, so a late message of an earlier session is told apart.
One encoder and one decoder; payloads stay bytes (``packed`` is a frame as members get it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack


@dataclass(frozen=True)
class Stored:
    """A durable event is in the store (a ``void`` too): deliver it in seq order."""

    session: str
    seq: int
    packed: bytes


@dataclass(frozen=True)
class NotesStored:
    """A notes update is in the store: merge it and relay it to the members but its sender."""

    session: str
    sender: str
    update: bytes
    packed: bytes


@dataclass(frozen=True)
class Relayed:
    """A frame that is not stored (typing, awareness, signal), for the members but ``sender``."""

    session: str
    sender: str
    packed: bytes


@dataclass(frozen=True)
class Online:
    """``user`` was welcomed on ``node`` through ``conn``; any other connection of it is over."""

    session: str
    user: str
    conn: str
    node: str


@dataclass(frozen=True)
class Offline:
    """``conn`` of ``user`` on ``node`` closed."""

    session: str
    user: str
    conn: str
    node: str


@dataclass(frozen=True)
class Erased:
    """The pair and everything it said were erased: close its sockets (4403), drop the room."""

    session: str  # "" : every session of the room


NodeMessage = Stored | NotesStored | Relayed | Online | Offline | Erased

_KINDS: dict[type[Any], str] = {
    Stored: "e",
    NotesStored: "n",
    Relayed: "r",
    Online: "on",
    Offline: "off",
    Erased: "erased",
}
_TYPES = {kind: cls for cls, kind in _KINDS.items()}


class BadMessage(ValueError):
    """Bytes on a room channel that are not a node message (another version, or garbage)."""


def encode_message(msg: NodeMessage) -> bytes:
    fields = list(msg.__dict__.values())
    data: bytes = msgpack.packb([_KINDS[type(msg)], *fields], use_bin_type=True)
    return data


def decode_message(data: bytes) -> NodeMessage:
    try:
        kind, *fields = msgpack.unpackb(data, raw=False)
        msg: NodeMessage = _TYPES[kind](*fields)
    except Exception as exc:
        raise BadMessage(f"not a node message: {type(exc).__name__}") from None
    return msg
