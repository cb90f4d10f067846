"""A connection writes a frame at once when nothing waits before it, and never lets one overtake
another: a paused socket, a frame queued or a gap in seqs sends it through the queue. An ack
held for the chat it acknowledges shares that chat's write."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgpack

from rooms.connection import Connection, Outgoing


class Socket:
    """A transport that takes frames at once unless ``paused``."""

    def __init__(self) -> None:
        self.paused = False
        self.now: list[int | str] = []  # frames written by send_now (seq, or "ack <id>")
        self.later: list[int | str] = []  # frames written by send
        self.writes: list[list[int | str]] = []  # what each write (either way) carried
        self.closes: list[int] = []

    def send_now(self, frames: Sequence[bytes | str]) -> bool:
        if self.paused:
            return False
        self.now += [label(f) for f in frames]
        self.writes.append([label(f) for f in frames])
        return True

    async def send(self, data: bytes | str) -> None:
        self.later.append(label(data))
        self.writes.append([label(data)])

    async def close(self, code: int, reason: str) -> None:
        self.closes.append(code)


def label(data: bytes | str) -> int | str:
    assert isinstance(data, bytes)
    frame = msgpack.unpackb(data)
    return f"ack {frame['id']}" if frame["t"] == "ack" else int(frame["seq"])


def event(seq: int) -> Outgoing:
    return Outgoing({"t": "chat", "seq": seq, "text": "hi"}, seq)


def connection(socket: Socket, stored: dict[int, bytes] | None = None) -> Connection:
    async def load(after: int, upto: int) -> list[tuple[int, bytes]]:
        return [(s, b) for s, b in sorted((stored or {}).items()) if after < s <= upto]

    conn = Connection(
        socket,
        pair_id="p",
        user_id="u",
        fmt="msgpack",
        loader=load,
        max_items=100,
        max_bytes=1_000_000,
    )
    conn.start()
    return conn


async def wait_written(conn: Connection) -> None:
    async with asyncio.timeout(5):
        while (task := conn._task) is not None:
            await task


async def test_a_frame_with_nothing_before_it_is_written_at_once() -> None:
    socket = Socket()
    conn = connection(socket)
    conn.push(event(1))
    conn.push(event(2))
    assert socket.now == [1, 2] and conn._task is None  # no task, no await
    assert conn.delivered == 2
    conn.push(event(2))  # a duplicate is dropped
    assert socket.now == [1, 2] and socket.later == []


async def test_frames_keep_their_order_through_a_pause() -> None:
    socket = Socket()
    conn = connection(socket)
    socket.paused = True
    conn.push(event(1))
    socket.paused = False
    conn.push(event(2))  # the socket takes it, but frame 1 waits before it
    await wait_written(conn)
    assert socket.now == [] and socket.later == [1, 2]
    conn.push(event(3))
    assert socket.now == [3]


async def test_a_gap_in_seqs_is_filled_from_the_store_first() -> None:
    socket = Socket()
    stored = {2: msgpack.packb({"t": "chat", "seq": 2, "text": "from the store"})}
    conn = connection(socket, stored)
    conn.push(event(1))
    conn.push(event(3))
    await wait_written(conn)
    assert socket.now == [1] and socket.later == [2, 3]
    assert conn.delivered == 3


def ack(cid: str) -> Outgoing:
    return Outgoing({"t": "ack", "id": cid, "seq": 0})


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_held_ack_shares_the_write_of_the_event_after_it() -> None:
    socket = Socket()
    conn = connection(socket)
    conn.push(ack("m1"), hold=True)
    assert socket.writes == []  # not yet: its chat is on the way
    conn.push(event(1))
    assert socket.writes == [["ack m1", 1]] and conn.delivered == 1
    await turns(3)  # the release finds nothing left to write
    assert socket.writes == [["ack m1", 1]]


async def test_a_held_ack_goes_alone_when_nothing_follows() -> None:
    socket = Socket()
    conn = connection(socket)
    conn.push(ack("m1"), hold=True)
    await turns(1)
    assert socket.writes == []  # the event it waits for is scheduled in the same turn
    await turns(1)
    assert socket.writes == [["ack m1"]]


async def test_a_held_ack_stays_before_a_frame_that_takes_the_queue() -> None:
    socket = Socket()
    conn = connection(socket)
    conn.push(ack("m1"), hold=True)
    socket.paused = True
    conn.push(event(1))
    socket.paused = False
    await wait_written(conn)
    assert socket.later == ["ack m1", 1] and socket.now == []
    await turns(3)
    assert socket.writes == [["ack m1"], [1]]


async def test_a_held_ack_is_written_before_a_close_after_the_queue() -> None:
    socket = Socket()
    conn = connection(socket)
    conn.push(ack("m1"), hold=True)
    conn.close_after_queue(1000, "ended")
    await wait_written(conn)
    assert socket.later == ["ack m1"] and socket.closes == [1000]


async def test_an_aborted_connection_drops_what_it_held() -> None:
    socket = Socket()
    conn = connection(socket)
    conn.push(ack("m1"), hold=True)
    conn.abort(4000, "gone")
    await conn.wait_closed()
    await turns(3)
    assert socket.writes == [] and socket.closes == [4000]
