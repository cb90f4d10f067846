"""Frame codec and validator: bytes in, checked frames out, and back. Never raises anything
but :class:`ProtocolError` on input; never touches a socket."""

from __future__ import annotations

import base64
import json
import math
from datetime import date
from typing import Any, Literal

import msgpack

from rooms.errors import BadFrame, Invalid, ProtocolError
from signaling.validate import SignalInvalid, check_signal

Frame = dict[str, Any]
Format = Literal["msgpack", "json"]

SUBPROTOCOLS: dict[str, Format] = {"menteo.v1.msgpack": "msgpack", "menteo.v1.json": "json"}
CLIENT_TYPES = frozenset(
    {
        "hello", "chat", "typing", "notes", "awareness", "signal", "ping", "end",
        "goal", "item", "item_update", "mark", "record",
    }
)  # fmt: skip
ACKED_TYPES = frozenset({"chat", "goal", "item", "item_update", "mark", "record"})
BYTES_FIELDS = ("u",)  # client frames' binary fields, base64 strings in JSON
MAX_ID = 64
MAX_TEXT = 4000
MAX_GOAL = 300
MAX_ITEM = 500
ITEM_STATES = ("open", "done", "dropped")
MARK_KINDS = ("learning", "feedback", "decision", "question")


def _no_ext(code: int, data: bytes) -> object:
    raise BadFrame("msgpack extension types are not accepted")


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(frame: Frame, fmt: Format = "msgpack") -> bytes | str:
    """Serialize one server frame for the given subprotocol."""
    if fmt == "msgpack":
        data: bytes = msgpack.packb(frame, use_bin_type=True)
        return data
    return json.dumps(frame, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def unpack(data: bytes) -> Frame:
    """Decode a msgpack map that the server itself produced (broker payloads, stored events)."""
    frame: Frame = msgpack.unpackb(data, raw=False)
    return frame


def decode(data: bytes | str, fmt: Format = "msgpack") -> Frame:
    """Parse and validate one client frame; raise :class:`ProtocolError` on anything wrong."""
    try:
        if fmt == "msgpack":
            if not isinstance(data, bytes | bytearray):
                raise BadFrame("expected a binary frame")
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext)
        else:
            if not isinstance(data, str):
                raise BadFrame("expected a text frame")
            raw = json.loads(data)
            if "\\u" in data:  # an escape may spell a lone surrogate, which UTF-8 cannot carry
                json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except ProtocolError:
        raise
    except Exception as exc:  # every decoder failure is the client's bad frame
        raise BadFrame(f"not valid {fmt}: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise BadFrame("a frame must be a map")
    ref = raw.get("id") if isinstance(raw.get("id"), str) else None
    t = raw.get("t")
    if not isinstance(t, str):
        raise BadFrame("a frame needs a string key 't'", ref)
    if t not in CLIENT_TYPES:
        raise BadFrame(f"unknown frame type {t[:40]!r}", ref)
    if fmt == "json":
        for key in BYTES_FIELDS:
            if isinstance(raw.get(key), str):
                try:
                    raw[key] = base64.b64decode(raw[key], validate=True)
                except ValueError:
                    raise Invalid(f"'{key}' must be base64", ref) from None
    return _validate(t, raw, ref)


def _field(raw: Frame, key: str, kind: type | tuple[type, ...], ref: str | None) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise Invalid(f"'{key}' must be {name}", ref)
    return value


def _validate(t: str, raw: Frame, ref: str | None) -> Frame:
    if t == "hello":
        frame: Frame = {"t": t, "token": _field(raw, "token", str, ref)}
        resume = raw.get("resume")
        if resume is not None:
            if not isinstance(resume, dict):
                raise Invalid("'resume' must be a map", ref)
            sid = _field(resume, "session_id", str, ref)
            last = _field(resume, "last_seq", int, ref)
            if last < 0:
                raise Invalid("'resume.last_seq' must be >= 0", ref)
            frame["resume"] = {"session_id": sid, "last_seq": last}
        return frame
    if t in ACKED_TYPES:
        cid = _field(raw, "id", str, ref)
        if not 1 <= len(cid) <= MAX_ID:
            raise Invalid(f"'id' must be 1-{MAX_ID} characters", ref)
        if not cid.isprintable():
            raise Invalid("'id' must not contain control characters", ref)
        return {"t": t, "id": cid, **_acked(t, raw, cid)}
    if t == "typing":
        return {"t": t, "on": _field(raw, "on", bool, ref)}
    if t in ("notes", "awareness"):
        u = _field(raw, "u", (bytes, bytearray), ref)
        if not u:
            raise Invalid("'u' must not be empty", ref)
        return {"t": t, "u": bytes(u)}
    if t == "signal":
        data = _field(raw, "data", dict, ref)
        if not _str_keys(data):
            raise Invalid("'data' must hold string-keyed maps of JSON-safe values", ref)
        try:
            return {"t": t, "data": check_signal(data)}
        except SignalInvalid as exc:
            raise Invalid(str(exc), ref) from None
    return {"t": t}  # ping, end


def _text(raw: Frame, key: str, low: int, high: int, ref: str) -> str:
    value: str = _field(raw, key, str, ref)
    if not low <= len(value) <= high:
        raise Invalid(f"'{key}' must be {low}-{high} characters", ref)
    return value


def _due(raw: Frame, ref: str) -> str | None:
    value = raw.get("due")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 10:
        raise Invalid("'due' must be null or a date YYYY-MM-DD", ref)
    try:
        date.fromisoformat(value)
    except ValueError:
        raise Invalid("'due' must be null or a date YYYY-MM-DD", ref) from None
    return value


def _acked(t: str, raw: Frame, ref: str) -> Frame:
    """The fields of a frame that creates a durable event (``id`` checked already)."""
    if t == "chat":
        return {"text": _text(raw, "text", 1, MAX_TEXT, ref)}
    if t == "goal":
        return {"text": _text(raw, "text", 0, MAX_GOAL, ref)}
    if t == "item":
        return {
            "text": _text(raw, "text", 1, MAX_ITEM, ref),
            "owner": _field(raw, "owner", str, ref),
            "due": _due(raw, ref),
        }
    if t == "item_update":
        out: Frame = {"item": _field(raw, "item", str, ref)}
        if "state" in raw:
            if raw["state"] not in ITEM_STATES:
                raise Invalid(f"'state' must be one of {', '.join(ITEM_STATES)}", ref)
            out["state"] = raw["state"]
        if "text" in raw:
            out["text"] = _text(raw, "text", 1, MAX_ITEM, ref)
        if "owner" in raw:
            out["owner"] = _field(raw, "owner", str, ref)
        if "due" in raw:
            out["due"] = _due(raw, ref)
        if len(out) == 1:
            raise Invalid("an item_update changes at least one of state, text, owner, due", ref)
        return out
    if t == "mark":
        if raw.get("kind") not in MARK_KINDS:
            raise Invalid(f"'kind' must be one of {', '.join(MARK_KINDS)}", ref)
        mark_ref = raw.get("ref")
        if mark_ref is not None and (not isinstance(mark_ref, int) or isinstance(mark_ref, bool)):
            raise Invalid("'ref' must be null or a seq", ref)
        return {"kind": raw["kind"], "text": _text(raw, "text", 1, MAX_ITEM, ref), "ref": mark_ref}
    return {"on": _field(raw, "on", bool, ref)}  # record


def _str_keys(value: object, depth: int = 0) -> bool:
    """True if every map inside ``value`` has string keys and every leaf encodes for a JSON
    peer too: no msgpack Timestamp (ext -1 bypasses ``ext_hook``), no NaN or Infinity."""
    if depth > 32:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _str_keys(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_str_keys(v, depth + 1) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bytes)
