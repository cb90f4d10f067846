"""WebRTC signaling payloads: what may be relayed between the two members."""

from __future__ import annotations

from typing import Any

from rooms.errors import Invalid

SIGNAL_TYPES = frozenset({"offer", "answer", "candidate", "bye"})


def check_signal(data: dict[str, Any], ref: str | None = None) -> dict[str, Any]:
    """Return ``data`` if it is a signal the relay accepts, else raise :class:`Invalid`."""
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in SIGNAL_TYPES:  # (a list is unhashable)
        raise Invalid("'data.type' must be offer, answer, candidate or bye", ref)
    if kind in ("offer", "answer") and not isinstance(data.get("sdp"), str):
        raise Invalid("'data.sdp' must be str", ref)
    if kind == "candidate":
        if "candidate" not in data:
            raise Invalid("'data.candidate' is required (a map or null)", ref)
        if data["candidate"] is not None and not isinstance(data["candidate"], dict):
            raise Invalid("'data.candidate' must be a map or null", ref)
    return data
