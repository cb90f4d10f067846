"""Every protocol failure and the code it maps to, in one place.

ProtocolError            recoverable: answered with an ``error`` frame
├── BadFrame             bad_frame: not msgpack, not a map, no ``t``, unknown ``t``
├── Invalid              invalid: a field missing, of the wrong type or out of bounds
├── RateLimited          rate_limited
├── PeerAbsent           peer_absent
├── NotesRejected        notes_rejected
└── Unavailable          unavailable: a backend (store, broker) is down
FatalError               fatal: the connection is closed with ``close_code``
"""

from __future__ import annotations

from enum import IntEnum


class Close(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL = 1011
    TOO_BIG = 1009
    TRY_AGAIN = 1013
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    REPLACED = 4409
    FLOODING = 4429


class ProtocolError(Exception):
    code = "bad_frame"

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref

    def frame(self) -> dict[str, object]:
        return {"t": "error", "code": self.code, "message": self.message, "ref": self.ref}


class BadFrame(ProtocolError):
    code = "bad_frame"


class Invalid(ProtocolError):
    code = "invalid"


class RateLimited(ProtocolError):
    code = "rate_limited"


class PeerAbsent(ProtocolError):
    code = "peer_absent"


class NotesRejected(ProtocolError):
    code = "notes_rejected"


class Unavailable(ProtocolError):
    code = "unavailable"


class FatalError(Exception):
    """Ends the connection with ``close_code``; ``reason`` is safe to show the client."""

    def __init__(self, close_code: Close, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
