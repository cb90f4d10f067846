"""Property tests: the codec never raises anything but ProtocolError, and a live server answers
every random frame with an error, a valid response or a contract close, and keeps serving."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pycrdt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from rooms.codec import ACKED_TYPES, CLIENT_TYPES, decode, encode
from rooms.errors import ProtocolError
from tests.support import ServerProcess

TYPES = sorted(CLIENT_TYPES)
ERROR_CODES = {"bad_frame", "invalid", "rate_limited", "peer_absent", "notes_rejected"}
CONTRACT_CLOSES = {1000, 1009, 1013, 4401, 4403, 4409, 4429}


# strategies ------------------------------------------------------------------------------------
def yjs_update(text: str) -> bytes:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    notes = doc.get("notes", type=pycrdt.Text)
    notes += text
    return doc.get_update()


def other_root_update(root: str, text: str) -> bytes:
    """A valid Yjs update that writes outside the ``notes`` text (refused: notes_rejected)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get(root or "x", type=pycrdt.Map)["k"] = text
    return doc.get_update()


plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
exts = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12)) | st.builds(
    msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 10**9 - 1)
)


def nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), kids, max_size=3)
        ),
        max_leaves=8,
    )


plain = nested(plain_scalars)  # anything msgpack carries without extension types
values = nested(plain_scalars | exts)
ids = st.text(st.sampled_from("abc"), min_size=1, max_size=3) | st.text(max_size=70) | plain
texts = (
    st.text(min_size=1, max_size=40)
    | st.just("")
    | st.builds(lambda c, n: c * n, st.characters(), st.sampled_from([4000, 4001]))
)
owners = st.sampled_from(["mentor", "mentee", ""]) | st.text(max_size=8) | plain
dues = (
    st.none()
    | st.dates().map(lambda d: d.isoformat())
    | st.sampled_from(["2026-02-30", "tomorrow", "2026-1-1"])
    | plain
)
signal_data = st.fixed_dictionaries(
    {"type": st.sampled_from(["offer", "answer", "candidate", "bye"]) | plain},
    optional={
        "sdp": st.text(max_size=30) | plain,
        "candidate": st.none() | st.dictionaries(st.text(max_size=8), values, max_size=3) | plain,
        "x": values,
    },
)
good_signals = (
    st.fixed_dictionaries({"type": st.sampled_from(["offer", "answer"]), "sdp": st.text()})
    | st.fixed_dictionaries(
        {
            "type": st.just("candidate"),
            "candidate": st.none() | st.dictionaries(st.text(max_size=8), plain, max_size=3),
        }
    )
    | st.fixed_dictionaries({"type": st.just("bye")}, optional={"x": plain})
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)


def _frame(t: Any, fields: dict[str, Any], with_t: bool) -> dict[Any, Any]:
    return {**fields, "t": t} if with_t else fields


def typed(t: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A frame of type ``t`` whose fields are mostly right, sometimes missing or wrong."""
    return st.fixed_dictionaries({"t": st.just(t)}, optional=fields)


def frames(live: bool) -> st.SearchStrategy[dict[Any, Any]]:
    """Near-valid frames of every client type, and maps with anything as ``t`` and fields."""
    near = (
        typed("chat", {"id": ids, "text": texts | plain})
        | typed("chat", {"id": ids, "text": texts}).filter(lambda f: "id" in f and "text" in f)
        | typed("typing", {"on": st.booleans() | plain})
        | typed(
            "notes", {"u": st.text(max_size=10).map(yjs_update) | st.binary(max_size=16) | plain}
        )
        | typed("awareness", {"u": st.binary(max_size=16) | plain})
        | typed("signal", {"data": signal_data | plain})
        | st.fixed_dictionaries({"t": st.just("signal"), "data": good_signals})
        | st.fixed_dictionaries({"t": st.just("typing"), "on": st.booleans()})
        | typed("ping", {"id": ids})
        | typed("notes", {"u": st.builds(other_root_update, st.text(max_size=6), st.text())})
        | typed("goal", {"id": ids, "text": texts | plain})
        | typed("item", {"id": ids, "text": texts | plain, "owner": owners, "due": dues})
        | typed(
            "item_update",
            {
                "id": ids,
                "item": st.text(max_size=20) | plain,
                "state": st.sampled_from(["open", "done", "dropped"]) | plain,
                "text": texts | plain,
                "owner": owners,
                "due": dues,
            },
        )
        | typed(
            "mark",
            {
                "id": ids,
                "kind": st.sampled_from(["learning", "feedback", "decision", "question"]) | plain,
                "text": texts | plain,
                "ref": st.none() | st.integers(-2, 40) | plain,
            },
        )
        | typed("record", {"id": ids, "on": st.booleans() | plain})
        | typed("hello", {"token": st.text(max_size=20) | plain, "resume": plain})
        | (st.nothing() if live else typed("end", {"junk": plain}))
    )
    kinds = [k for k in TYPES if k != "end"] if live else TYPES
    t = st.sampled_from(kinds) | st.text(max_size=8) | values
    fields = st.fixed_dictionaries(
        {},
        optional={
            "id": ids | values,
            "text": texts | values,
            "on": st.booleans() | values,
            "u": st.binary(max_size=16) | values,
            "data": signal_data | values,
            "token": st.text(max_size=20) | values,
            "resume": st.fixed_dictionaries(
                {
                    "session_id": st.text(max_size=8) | values,
                    "last_seq": st.integers(-(2**63), 2**64 - 1) | values,
                }
            )
            | values,
            "junk": values,
        },
    )
    anything = st.builds(_frame, t, fields, st.booleans().map(lambda b: b or live))
    return near | anything


def strict_json(text: str) -> Any:
    """Parse as a browser would: no NaN or Infinity."""

    def bad(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=bad)


def check_decoded(frame: dict[str, Any]) -> None:
    """Whatever the codec accepts is a known frame that can be relayed to either subprotocol."""
    assert frame["t"] in CLIENT_TYPES
    if frame["t"] == "chat":
        assert 1 <= len(frame["id"]) <= 64 and 1 <= len(frame["text"]) <= 4000
    relayed = encode(frame, "json")
    assert isinstance(relayed, str)
    strict_json(relayed)
    assert isinstance(encode(frame, "msgpack"), bytes)


# (a) the codec, pure ---------------------------------------------------------------------------
@settings(max_examples=400, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    try:
        check_decoded(decode(data, "msgpack"))
    except ProtocolError:
        pass
    with pytest.raises(ProtocolError):
        decode(data, "json")  # a binary frame on the JSON subprotocol


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=200) | json_values.map(json.dumps))
def test_decode_arbitrary_text(data: str) -> None:
    try:
        check_decoded(decode(data, "json"))
    except ProtocolError:
        pass
    with pytest.raises(ProtocolError):
        decode(data, "msgpack")  # a text frame on the msgpack subprotocol


@settings(max_examples=600, deadline=None, database=None)
@given(frames(live=False) | values)
def test_decode_arbitrary_msgpack_structures(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    try:
        frame = decode(data, "msgpack")
    except ProtocolError as exc:
        assert exc.code in {"bad_frame", "invalid"}
        assert exc.ref is None or isinstance(exc.ref, str)
        return
    check_decoded(frame)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.fixed_dictionaries(
        {
            "t": st.just("signal"),
            "data": st.fixed_dictionaries(
                {"type": st.sampled_from(["offer", "answer", "candidate", "bye"])},
                optional={"sdp": st.text(max_size=8), "candidate": st.none() | values, "x": values},
            ),
        }
    )
)
def test_decoded_signals_relay_to_both_subprotocols(value: dict[str, Any]) -> None:
    try:
        frame = decode(msgpack.packb(value, use_bin_type=True), "msgpack")
    except ProtocolError as exc:
        assert exc.code in {"bad_frame", "invalid"}  # bad_frame: int map keys, ext types
        return
    check_decoded(frame)


@settings(max_examples=300, deadline=None, database=None)
@given(frames(live=False))
def test_decode_arbitrary_json_structures(value: dict[Any, Any]) -> None:
    def default(v: object) -> object:
        if isinstance(v, bytes):
            return base64.b64encode(v).decode()
        return repr(v)

    try:
        data = json.dumps(value, default=default)
    except (TypeError, ValueError):  # non-str keys of mixed types, circular, ...
        return
    try:
        frame = decode(data, "json")
    except ProtocolError as exc:
        assert exc.code in {"bad_frame", "invalid"}
        return
    check_decoded(frame)


# (b) a live server -----------------------------------------------------------------------------
@dataclass
class Room:
    server: ServerProcess
    pair_id: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    sender: ClientConnection | None = None
    peer: ClientConnection | None = None
    relays: list[tuple[str, Any]] = field(default_factory=list)  # what the peer must get
    sent_frames: int = 0
    sender_id: str = ""
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def open(self) -> None:
        p = self.server.pair("Fuzz Mentor", "Fuzz Mentee")
        self.pair_id, self.tokens = p.id, {"mentor": p.mentor_token, "mentee": p.mentee_token}
        self.sender_id = p.mentor
        url = f"{self.server.ws}/ws/rooms/{self.pair_id}"
        self.sender = self.stack.enter_context(
            connect(url, subprotocols=["menteo.v1.msgpack"], max_size=None)  # type: ignore[list-item]
        )
        self.sender.send(msgpack.packb({"t": "hello", "token": self.tokens["mentor"]}))
        assert self.recv_sender()["t"] == "welcome"
        # the other member speaks JSON: whatever is relayed to it must encode for it
        self.peer = self.stack.enter_context(
            connect(url, subprotocols=["menteo.v1.json"], max_size=None)  # type: ignore[list-item]
        )
        self.peer.send(json.dumps({"t": "hello", "token": self.tokens["mentee"]}))
        assert self.recv_peer()["t"] == "welcome"
        for _ in range(10):  # the peer is online once its join is committed
            frame = self.recv_sender()
            if frame["t"] == "presence" and frame["user"]["role"] == "mentee":
                break
        else:
            pytest.fail("the peer's join never arrived")

    def recv_sender(self, timeout: float = 10) -> dict[str, Any]:
        assert self.sender is not None
        frame: dict[str, Any] = msgpack.unpackb(self.sender.recv(timeout), raw=False)
        return frame

    def recv_peer(self, timeout: float = 10) -> dict[str, Any]:
        assert self.peer is not None
        data = self.peer.recv(timeout)
        assert isinstance(data, str)
        frame: dict[str, Any] = strict_json(data)
        return frame

    def close(self) -> None:
        self.stack.close()


def expected_error(value: dict[Any, Any]) -> str | None:
    """What the contract says a frame gets: an error code, or None (accepted)."""
    try:
        frame = decode(msgpack.packb(value, use_bin_type=True), "msgpack")
    except ProtocolError as exc:
        return exc.code
    except Exception:  # a codec bug; the server must still answer, not drop the connection
        return "invalid"
    return "invalid" if frame["t"] == "hello" else None


def readable(data: bytes) -> bool:
    def no_ext(code: int, data: bytes) -> Any:
        raise ValueError("ext")

    try:
        msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=no_ext)
    except ValueError:
        return False
    return True


def send_one(room: Room, value: dict[Any, Any]) -> None:
    """Send one frame then a ping; check every frame up to the pong."""
    assert room.sender is not None
    data = msgpack.packb(value, use_bin_type=True)
    want = expected_error(value)
    ref = value.get("id") if isinstance(value.get("id"), str) else None
    room.sender.send(data)
    room.sender.send(msgpack.packb({"t": "ping"}))
    room.sent_frames += 1
    got: list[dict[str, Any]] = []
    pongs = 2 if value.get("t") == "ping" and want is None else 1
    try:
        while pongs:
            frame = room.recv_sender()
            got.append(frame)
            pongs -= frame["t"] == "pong"
    except ConnectionClosed:
        code = room.sender.close_code
        assert code in CONTRACT_CLOSES, (value, code, got)
        pytest.fail(f"the server closed {code} on {value!r}; got {got}")
    assert isinstance(got[-1]["head"], int)
    t = value.get("t") if isinstance(value.get("t"), str) else None
    acked = t in ACKED_TYPES and want is None
    if acked:  # its ack follows the commit, maybe the pong; an earlier frame's may come too

        def answered() -> bool:
            return any(f.get("id" if f["t"] == "ack" else "ref") == ref for f in got)

        for _ in range(10):
            if answered():
                break
            got.append(room.recv_sender())
    got = [f for f in got if f["t"] != "ack" or f["id"] == ref]  # other frames' late acks
    errors = [f for f in got if f["t"] == "error"]
    for e in errors:
        assert e["code"] in ERROR_CODES and isinstance(e["message"], str), e
    notes_ok = value.get("t") == "notes" and want is None
    if want is not None:
        assert [e["code"] for e in errors] == [want], (value, got)
        # the id is the frame's, when it is a map at all (an undecodable one may lose it)
        refs = {ref} if readable(data) else {ref, None}
        assert errors[0]["ref"] in refs, (value, got)
    elif notes_ok:  # a Yjs check the codec does not make: rejected, or merged and relayed
        assert [e["code"] for e in errors] in ([], ["notes_rejected"]), (value, got)
    elif t in ("item", "item_update", "mark"):  # the room checks owner, item, ref
        assert [(e["code"], e["ref"]) for e in errors] in ([], [("invalid", ref)]), (value, got)
    else:
        assert errors == [], (value, got)
    if want is None and not errors:
        if t in ACKED_TYPES:
            assert [f["id"] for f in got if f["t"] == "ack"] == [value["id"]], (value, got)
        elif t in ("typing", "awareness", "notes", "signal"):
            room.relays.append((t, value))


def check_peer(room: Room) -> None:
    """The JSON peer got every relay and still answers a ping. Relays keep their order, except
    that notes are relayed once stored, so they keep their order only among themselves."""
    assert room.peer is not None
    room.peer.send(json.dumps({"t": "ping"}))
    relayed: list[dict[str, Any]] = []
    ponged = False
    while not ponged or len(relayed) < len(room.relays):  # stored notes may trail the pong
        try:
            frame = room.recv_peer()
        except ConnectionClosed:
            pytest.fail(f"the JSON peer was closed {room.peer.close_code}; relays {room.relays}")
        if frame["t"] == "pong":
            ponged = True
        if frame["t"] in ("typing", "awareness", "notes", "signal"):
            relayed.append(frame)
    for notes in (True, False):
        got = [f for f in relayed if (f["t"] == "notes") is notes]
        want = [(t, sent) for t, sent in room.relays if (t == "notes") is notes]
        assert [f["t"] for f in got] == [t for t, _ in want]
        for f, (t, sent) in zip(got, want, strict=True):
            assert f["from"] == room.sender_id
            if t == "typing":
                assert f["on"] is sent["on"]
            elif t in ("awareness", "notes"):
                assert base64.b64decode(f["u"]) == sent["u"]
            else:
                assert f["data"]["type"] == sent["data"]["type"]
    room.relays.clear()


def healthz(server: ServerProcess) -> int:
    with urllib.request.urlopen(server.http + "/healthz", timeout=5) as r:
        return int(r.status)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # long reprs
def test_live_random_frames(server: ServerProcess) -> None:
    rooms: list[Room] = []

    @settings(
        max_examples=10,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each run is a live room
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(frames(live=True), min_size=20, max_size=30))
    def run(batch: list[dict[Any, Any]]) -> None:
        room = Room(server)
        rooms.append(room)
        room.open()
        try:
            for value in batch:
                send_one(room, value)
            check_peer(room)
        finally:
            room.close()

    run()
    assert sum(r.sent_frames for r in rooms) >= 200
    # the server still serves: a fresh client in a fuzzed room gets a pong, and /healthz is 200
    last = rooms[-1]
    with connect(
        f"{server.ws}/ws/rooms/{last.pair_id}",
        subprotocols=["menteo.v1.msgpack"],  # type: ignore[list-item]
    ) as fresh:
        fresh.send(msgpack.packb({"t": "hello", "token": last.tokens["mentor"]}))
        fresh.send(msgpack.packb({"t": "ping"}))
        for _ in range(100):
            frame = msgpack.unpackb(fresh.recv(10), raw=False)
            if frame["t"] == "pong":
                break
        else:
            pytest.fail("no pong")
    assert healthz(server) == 200


def test_nan_is_never_relayed_as_json() -> None:
    """A non-finite float cannot reach a JSON peer (browsers reject NaN/Infinity)."""
    for bad in (math.nan, math.inf):
        value = {"t": "signal", "data": {"type": "candidate", "candidate": {"x": bad}}}
        try:
            frame = decode(msgpack.packb(value), "msgpack")
        except ProtocolError:
            continue
        strict_json(str(encode(frame, "json")))
