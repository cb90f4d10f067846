"""A connection writes a frame at once when nothing waits before it, and never lets one overtake
another: a paused socket, a frame queued or a gap in seqs sends it through the queue."""

from __future__ import annotations

import asyncio

import msgpack

from rooms.connection import Connection, Outgoing


class Socket:
    """A transport that takes frames at once unless ``paused``."""

    def __init__(self) -> None:
        self.paused = False
        self.now: list[int] = []  # seqs written by send_now
        self.later: list[int] = []  # seqs written by send

    def send_now(self, data: bytes | str) -> bool:
        if self.paused:
            return False
        self.now.append(seq_of(data))
        return True

    async def send(self, data: bytes | str) -> None:
        self.later.append(seq_of(data))

    async def close(self, code: int, reason: str) -> None:
        pass


def seq_of(data: bytes | str) -> int:
    assert isinstance(data, bytes)
    return int(msgpack.unpackb(data)["seq"])


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
