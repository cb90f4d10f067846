"""rooms.codec as a pure function: client frames in (msgpack and JSON), checked frames out."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import pytest

from rooms.codec import MAX_ID, MAX_TEXT, SUBPROTOCOLS, decode, encode, unpack
from rooms.errors import BadFrame, Invalid, ProtocolError


def mp(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def js(obj: Any) -> str:
    return json.dumps(obj)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_subprotocols() -> None:
    assert SUBPROTOCOLS == {"menteo.v1.msgpack": "msgpack", "menteo.v1.json": "json"}


# valid frames, one per client type ----------------------------------------------------------
VALID: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"t": "hello", "token": "tok"}, {"t": "hello", "token": "tok"}),
    (
        {"t": "hello", "token": "tok", "resume": {"session_id": "s1", "last_seq": 7}},
        {"t": "hello", "token": "tok", "resume": {"session_id": "s1", "last_seq": 7}},
    ),
    (
        {"t": "hello", "token": "tok", "resume": {"session_id": "s1", "last_seq": 0}},
        {"t": "hello", "token": "tok", "resume": {"session_id": "s1", "last_seq": 0}},
    ),
    ({"t": "hello", "token": "tok", "resume": None}, {"t": "hello", "token": "tok"}),
    ({"t": "chat", "id": "c1", "text": "hi ☕"}, {"t": "chat", "id": "c1", "text": "hi ☕"}),
    ({"t": "typing", "on": True}, {"t": "typing", "on": True}),
    ({"t": "typing", "on": False}, {"t": "typing", "on": False}),
    ({"t": "signal", "data": {"type": "bye"}}, {"t": "signal", "data": {"type": "bye"}}),
    (
        {"t": "signal", "data": {"type": "offer", "sdp": "v=0"}},
        {"t": "signal", "data": {"type": "offer", "sdp": "v=0"}},
    ),
    (
        {"t": "signal", "data": {"type": "answer", "sdp": ""}},
        {"t": "signal", "data": {"type": "answer", "sdp": ""}},
    ),
    (
        {"t": "signal", "data": {"type": "candidate", "candidate": {"candidate": "c", "m": 0}}},
        {"t": "signal", "data": {"type": "candidate", "candidate": {"candidate": "c", "m": 0}}},
    ),
    (
        {"t": "signal", "data": {"type": "candidate", "candidate": None}},
        {"t": "signal", "data": {"type": "candidate", "candidate": None}},
    ),
    ({"t": "ping"}, {"t": "ping"}),
    ({"t": "end"}, {"t": "end"}),
    # unknown extra fields are dropped, not an error
    ({"t": "ping", "extra": 1}, {"t": "ping"}),
    ({"t": "chat", "id": "x", "text": "y", "junk": [1]}, {"t": "chat", "id": "x", "text": "y"}),
]


@pytest.mark.parametrize(("frame", "expected"), VALID, ids=lambda v: str(v)[:40])
def test_valid_msgpack(frame: dict[str, Any], expected: dict[str, Any]) -> None:
    assert decode(mp(frame), "msgpack") == expected


@pytest.mark.parametrize(("frame", "expected"), VALID, ids=lambda v: str(v)[:40])
def test_valid_json(frame: dict[str, Any], expected: dict[str, Any]) -> None:
    assert decode(js(frame), "json") == expected


@pytest.mark.parametrize("t", ["notes", "awareness"])
def test_bytes_frames_msgpack(t: str) -> None:
    raw = b"\x00\xff\x01binary\xfe"
    got = decode(mp({"t": t, "u": raw}), "msgpack")
    assert got == {"t": t, "u": raw}
    assert type(got["u"]) is bytes


@pytest.mark.parametrize("t", ["notes", "awareness"])
def test_bytes_frames_json_are_base64(t: str) -> None:
    raw = b"\x00\xff\x01binary\xfe"
    got = decode(js({"t": t, "u": b64(raw)}), "json")
    assert got == {"t": t, "u": raw}


@pytest.mark.parametrize("t", ["notes", "awareness"])
def test_bytes_frames_reject_bad_base64_and_empty(t: str) -> None:
    with pytest.raises(Invalid):
        decode(js({"t": t, "u": "not base64!!"}), "json")
    with pytest.raises(Invalid):
        decode(js({"t": t, "u": ""}), "json")
    with pytest.raises(Invalid):
        decode(mp({"t": t, "u": b""}), "msgpack")
    with pytest.raises(Invalid):
        decode(mp({"t": t, "u": "a string, not bytes"}), "msgpack")
    with pytest.raises(Invalid):
        decode(mp({"t": t}), "msgpack")
    with pytest.raises(Invalid):
        decode(js({"t": t, "u": 5}), "json")


# bad frames -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x92\x01\x02",  # a list
        mp("just a string"),
        mp(42),
        mp({"no_t": 1}),
        mp({"t": 5}),
        mp({"t": None}),
        mp({"t": "nope"}),
        mp({"t": "welcome"}),  # a server frame type
        mp({"t": "ack"}),
        mp({1: "x", "t": "ping"}),  # non-string key
        mp({"t": "ping"}) + b"\x00",  # trailing data
        msgpack.packb({"t": "ping", "x": msgpack.ExtType(1, b"ext")}),
        mp({"t": "ping"})[:-1],  # truncated
    ],
)
def test_bad_frame_msgpack(data: bytes) -> None:
    with pytest.raises(BadFrame) as err:
        decode(data, "msgpack")
    assert err.value.code == "bad_frame"
    assert err.value.frame()["t"] == "error"
    assert err.value.frame()["code"] == "bad_frame"


@pytest.mark.parametrize(
    "data",
    ["", "{", "[1,2]", '"str"', "null", '{"x":1}', '{"t":1}', '{"t":"nope"}', "{'t':'ping'}"],
)
def test_bad_frame_json(data: str) -> None:
    with pytest.raises(BadFrame):
        decode(data, "json")


def test_frame_kind_must_match_the_subprotocol() -> None:
    with pytest.raises(BadFrame):
        decode(js({"t": "ping"}), "msgpack")
    with pytest.raises(BadFrame):
        decode(mp({"t": "ping"}), "json")


def test_bad_frame_carries_the_id_as_ref() -> None:
    with pytest.raises(BadFrame) as err:
        decode(mp({"t": "bogus", "id": "r1"}), "msgpack")
    assert err.value.ref == "r1"
    assert err.value.frame() == {
        "t": "error",
        "code": "bad_frame",
        "message": err.value.message,
        "ref": "r1",
    }
    with pytest.raises(BadFrame) as err:
        decode(mp({"t": "bogus", "id": 3}), "msgpack")
    assert err.value.ref is None


def test_lone_surrogate_in_json_is_rejected() -> None:
    """A JSON escape can spell a string no UTF-8 peer (or the msgpack store) can carry."""
    for frame in (
        '{"t":"chat","id":"c","text":"bad \\ud800 text"}',
        '{"t":"chat","id":"\\udfff","text":"x"}',
        '{"t":"signal","data":{"type":"offer","sdp":"\\ud834"}}',
    ):
        with pytest.raises(ProtocolError):
            decode(frame, "json")
    # a proper surrogate pair is one character and fine
    ok = decode('{"t":"chat","id":"c","text":"\\ud83d\\ude00"}', "json")
    assert ok["text"] == "😀"


# invalid fields --------------------------------------------------------------------------
INVALID: list[dict[str, Any]] = [
    {"t": "hello"},
    {"t": "hello", "token": 5},
    {"t": "hello", "token": None},
    {"t": "hello", "token": "x", "resume": "s1"},
    {"t": "hello", "token": "x", "resume": []},
    {"t": "hello", "token": "x", "resume": {"session_id": "s"}},
    {"t": "hello", "token": "x", "resume": {"last_seq": 1}},
    {"t": "hello", "token": "x", "resume": {"session_id": 1, "last_seq": 1}},
    {"t": "hello", "token": "x", "resume": {"session_id": "s", "last_seq": -1}},
    {"t": "hello", "token": "x", "resume": {"session_id": "s", "last_seq": "1"}},
    {"t": "hello", "token": "x", "resume": {"session_id": "s", "last_seq": 1.0}},
    {"t": "hello", "token": "x", "resume": {"session_id": "s", "last_seq": True}},
    {"t": "chat"},
    {"t": "chat", "id": "c"},
    {"t": "chat", "text": "hello"},
    {"t": "chat", "id": 1, "text": "hello"},
    {"t": "chat", "id": "c", "text": 1},
    {"t": "chat", "id": "c", "text": None},
    {"t": "chat", "id": "", "text": "hello"},
    {"t": "chat", "id": "c", "text": ""},
    {"t": "chat", "id": "c" * (MAX_ID + 1), "text": "hello"},
    {"t": "chat", "id": "c", "text": "x" * (MAX_TEXT + 1)},
    {"t": "typing"},
    {"t": "typing", "on": 1},
    {"t": "typing", "on": "true"},
    {"t": "typing", "on": None},
    {"t": "signal"},
    {"t": "signal", "data": "offer"},
    {"t": "signal", "data": []},
    {"t": "signal", "data": {}},
    {"t": "signal", "data": {"type": "hack"}},
    {"t": "signal", "data": {"type": 1}},
    {"t": "signal", "data": {"type": "offer"}},
    {"t": "signal", "data": {"type": "offer", "sdp": 5}},
    {"t": "signal", "data": {"type": "answer", "sdp": None}},
    {"t": "signal", "data": {"type": "candidate"}},
    {"t": "signal", "data": {"type": "candidate", "candidate": "a=candidate"}},
    {"t": "signal", "data": {"type": "candidate", "candidate": [1]}},
]


@pytest.mark.parametrize("frame", INVALID, ids=lambda v: str(v)[:60])
def test_invalid_msgpack(frame: dict[str, Any]) -> None:
    with pytest.raises(Invalid) as err:
        decode(mp(frame), "msgpack")
    assert err.value.frame()["code"] == "invalid"
    assert err.value.message


@pytest.mark.parametrize("frame", INVALID, ids=lambda v: str(v)[:60])
def test_invalid_json(frame: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        decode(js(frame), "json")


def test_invalid_signal_data_with_non_string_keys() -> None:
    """A JSON peer could not be sent such a map, so the relay must not accept it."""
    with pytest.raises(ProtocolError):
        decode(mp({"t": "signal", "data": {"type": "bye", b"raw": 1}}), "msgpack")
    with pytest.raises(ProtocolError):
        decode(
            mp({"t": "signal", "data": {"type": "candidate", "candidate": {b"k": "v"}}}),
            "msgpack",
        )


def test_invalid_chat_refs_its_id() -> None:
    with pytest.raises(Invalid) as err:
        decode(mp({"t": "chat", "id": "c9", "text": ""}), "msgpack")
    assert err.value.ref == "c9"
    with pytest.raises(Invalid) as err:
        decode(mp({"t": "chat", "id": "c9", "text": 7}), "msgpack")
    assert err.value.ref == "c9"


# limits are counted in Unicode code points, not bytes or UTF-16 units -----------------------
@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize("char", ["a", "é", "☕", "😀"])
def test_limits_count_code_points(fmt: str, char: str) -> None:
    def dec(frame: dict[str, Any]) -> dict[str, Any]:
        return decode(mp(frame) if fmt == "msgpack" else js(frame), fmt)  # type: ignore[arg-type]

    at_limit = dec({"t": "chat", "id": char * MAX_ID, "text": char * MAX_TEXT})
    assert len(at_limit["id"]) == MAX_ID == 64
    assert len(at_limit["text"]) == MAX_TEXT == 4000
    assert dec({"t": "chat", "id": char, "text": char})["text"] == char
    with pytest.raises(Invalid):
        dec({"t": "chat", "id": char * (MAX_ID + 1), "text": "x"})
    with pytest.raises(Invalid):
        dec({"t": "chat", "id": "x", "text": char * (MAX_TEXT + 1)})


# encode ------------------------------------------------------------------------------------
def test_encode_msgpack_round_trip() -> None:
    frame = {"t": "notes", "from": "u1", "u": b"\x00\xff", "seq": 3, "ts": 1.5, "x": None}
    data = encode(frame)
    assert isinstance(data, bytes)
    assert unpack(data) == frame
    assert msgpack.unpackb(data, raw=False) == frame
    assert encode(frame, "msgpack") == data


def test_encode_json_base64_bytes() -> None:
    frame = {"t": "welcome", "notes": b"\x00\x01\xff", "user": {"name": "Zoë ☕"}, "head": 0}
    text = encode(frame, "json")
    assert isinstance(text, str)
    back = json.loads(text)
    assert back["notes"] == b64(b"\x00\x01\xff")
    assert base64.b64decode(back["notes"]) == b"\x00\x01\xff"
    assert back["user"]["name"] == "Zoë ☕"
    assert "Zoë ☕" in text  # not \u-escaped
    assert back["head"] == 0


def test_json_bytes_round_trip_through_decode() -> None:
    """What the server encodes for a JSON client, that client can send back as is."""
    update = bytes(range(256))
    sent = encode({"t": "notes", "u": update}, "json")
    assert isinstance(sent, str)
    assert decode(sent, "json") == {"t": "notes", "u": update}


def test_encode_refuses_unencodable_values() -> None:
    with pytest.raises(TypeError):
        encode({"t": "x", "v": object()}, "json")


@pytest.mark.parametrize("cid", ["a\x00b", "tab\there", "new\nline"])
def test_chat_id_with_control_characters_is_invalid(cid: str) -> None:
    # such an id cannot be stored by every database (PostgreSQL refuses NUL in text)
    with pytest.raises(Invalid) as info:
        decode(msgpack.packb({"t": "chat", "id": cid, "text": "hi"}))
    assert info.value.ref == cid


# contract v1.1: frames that create durable events ---------------------------------------------
JOURNEY_VALID: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"t": "goal", "id": "g", "text": ""}, {"t": "goal", "id": "g", "text": ""}),
    ({"t": "goal", "id": "g", "text": "é" * 300}, {"t": "goal", "id": "g", "text": "é" * 300}),
    (
        {"t": "item", "id": "i", "text": "x", "owner": "u"},
        {"t": "item", "id": "i", "text": "x", "owner": "u", "due": None},
    ),
    (
        {"t": "item", "id": "i", "text": "漢" * 500, "owner": "u", "due": "2028-02-29"},
        {"t": "item", "id": "i", "text": "漢" * 500, "owner": "u", "due": "2028-02-29"},
    ),
    (
        {"t": "item_update", "id": "u", "item": "a.1", "state": "dropped", "due": None},
        {"t": "item_update", "id": "u", "item": "a.1", "state": "dropped", "due": None},
    ),
    (
        {"t": "mark", "id": "m", "kind": "question", "text": "why?"},
        {"t": "mark", "id": "m", "kind": "question", "text": "why?", "ref": None},
    ),
    (
        {"t": "mark", "id": "m", "kind": "decision", "text": "go", "ref": 3},
        {"t": "mark", "id": "m", "kind": "decision", "text": "go", "ref": 3},
    ),
    ({"t": "record", "id": "r", "on": False}, {"t": "record", "id": "r", "on": False}),
]


@pytest.mark.parametrize(("frame", "expected"), JOURNEY_VALID)
def test_journey_frames_valid(frame: dict[str, Any], expected: dict[str, Any]) -> None:
    assert decode(mp(frame)) == expected
    assert decode(js(frame), "json") == expected


JOURNEY_INVALID: list[dict[str, Any]] = [
    {"t": "goal", "id": "g"},
    {"t": "goal", "id": "g", "text": "x" * 301},
    {"t": "goal", "id": "", "text": "x"},
    {"t": "item", "id": "i", "text": "", "owner": "u"},
    {"t": "item", "id": "i", "text": "x" * 501, "owner": "u"},
    {"t": "item", "id": "i", "text": "x", "owner": 5},
    {"t": "item", "id": "i", "text": "x", "owner": "u", "due": "2026-02-30"},
    {"t": "item", "id": "i", "text": "x", "owner": "u", "due": "tomorrow"},
    {"t": "item", "id": "i", "text": "x", "owner": "u", "due": "2026-2-3"},
    {"t": "item", "id": "i", "text": "x", "owner": "u", "due": 20260203},
    {"t": "item_update", "id": "u", "item": "a.1"},
    {"t": "item_update", "id": "u", "item": "a.1", "state": "finished"},
    {"t": "item_update", "id": "u", "state": "done"},
    {"t": "item_update", "id": "u", "item": "a.1", "text": ""},
    {"t": "mark", "id": "m", "kind": "praise", "text": "x"},
    {"t": "mark", "id": "m", "kind": "learning", "text": ""},
    {"t": "mark", "id": "m", "kind": "learning", "text": "x", "ref": True},
    {"t": "mark", "id": "m", "kind": "learning", "text": "x", "ref": "3"},
    {"t": "record", "id": "r"},
    {"t": "record", "id": "r", "on": 1},
]


@pytest.mark.parametrize("frame", JOURNEY_INVALID)
def test_journey_frames_invalid(frame: dict[str, Any]) -> None:
    with pytest.raises(Invalid) as exc:
        decode(mp(frame))
    assert exc.value.ref == frame["id"]
