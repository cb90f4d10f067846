"""A live room holds bounded state: nothing in the room machine or the memory broker grows with
each chat (issue 8, defect 6). Measured with tracemalloc over the machine, the codec, the node
messages and the broker's seq allocation, after a warm-up that fills every bounded window."""

from __future__ import annotations

import gc
import tracemalloc

import msgpack

from rooms.broker import MemoryBackbone, MemoryBroker
from rooms.messages import decode_message, encode_message
from rooms.room import Allocate, Config, Member, Publish, Room, Write

MENTOR = Member("u-mentor", "Mara", "mentor")
MENTEE = Member("u-mentee", "Milo", "mentee")


async def test_a_long_session_holds_bounded_state() -> None:
    broker = MemoryBroker(MemoryBackbone())
    room = Room("pair", "sess", {MENTOR.id: MENTOR, MENTEE.id: MENTEE}, broker.node_id)
    room.config = Config(rate_limit=0)
    room.connect("c1", MENTOR.id, "msgpack", 0.0, ice_servers=[])
    room.connect("c2", MENTEE.id, "msgpack", 0.0, ice_servers=[])

    async def chats(start: int, n: int) -> None:
        for i in range(start, start + n):
            conn = ("c1", "c2")[i % 2]
            frame = msgpack.packb({"t": "chat", "id": f"{conn}-{i:08d}", "text": "a chat " * 8})
            todo = room.receive(conn, frame, float(i))
            while todo:
                effect = todo.pop(0)
                if isinstance(effect, Allocate):
                    seq, new = await broker.allocate_seq("sess", effect.key, room.head)
                    todo += room.allocated(effect.op, seq, new, float(i))
                elif isinstance(effect, Write) and effect.op is not None:
                    todo += room.stored(effect.op)
                elif isinstance(effect, Publish):
                    todo += room.message(decode_message(encode_message(effect.msg)), float(i))

    tracemalloc.start()  # before the warm-up: what the windows hold then is traced too
    await chats(0, 1_000)  # fills the de-duplication windows and every cache
    gc.collect()
    before = tracemalloc.take_snapshot()
    await chats(1_000, 5_000)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert room.head == 6_000
    assert grown < 5_000 * 4, f"{grown} bytes for 5,000 chats"  # < 4 bytes a chat
