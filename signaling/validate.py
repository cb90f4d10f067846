"""WebRTC signaling payloads: what may be relayed between the two members."""

from __future__ import annotations

from typing import Any

SIGNAL_TYPES = frozenset({"offer", "answer", "candidate", "bye"})


class SignalInvalid(ValueError):
    """A signal payload the relay refuses; the message says which field and why."""


def check_signal(data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` if it is a signal the relay accepts, else raise :class:`SignalInvalid`."""
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in SIGNAL_TYPES:  # (a list is unhashable)
        raise SignalInvalid("'data.type' must be offer, answer, candidate or bye")
    if kind in ("offer", "answer") and not isinstance(data.get("sdp"), str):
        raise SignalInvalid("'data.sdp' must be str")
    if kind == "candidate":
        if "candidate" not in data:
            raise SignalInvalid("'data.candidate' is required (a map or null)")
        if data["candidate"] is not None and not isinstance(data["candidate"], dict):
            raise SignalInvalid("'data.candidate' must be a map or null")
    return data
