"""The ceiling: a bare ``websockets`` fan-out speaking the chat subset of protocol v1.

No store, no broker, no tokens: ``hello``'s token is taken as the user id, a chat is encoded
once, sent to both members of the room (sender included) and acked at once. What any durable
server on this machine can at best approach.

    python -m bench.peers.bare_ws --port 8200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from http import HTTPStatus

import msgpack
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

PROTOCOL = "menteo.v1.msgpack"
rooms: dict[str, dict[str, ServerConnection]] = {}
seqs: dict[str, int] = {}


def health(conn: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return conn.respond(HTTPStatus.OK, '{"status":"ok"}\n')
    return None


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else ""
    if not path.startswith("/ws/rooms/"):
        await ws.close(4404, "no such room")
        return
    room_id = path.rsplit("/", 1)[1]
    hello = msgpack.unpackb(await ws.recv(), raw=False)
    user = str(hello.get("token"))
    members = rooms.setdefault(room_id, {})
    members[user] = ws
    await ws.send(
        msgpack.packb(
            {"t": "welcome", "session_id": room_id, "user": {"id": user}, "head": 0},
            use_bin_type=True,
        )
    )
    try:
        async for data in ws:
            frame = msgpack.unpackb(data, raw=False)
            if frame.get("t") != "chat":
                continue
            seq = seqs[room_id] = seqs.get(room_id, 0) + 1
            out = msgpack.packb(
                {
                    "t": "chat",
                    "seq": seq,
                    "id": frame["id"],
                    "from": user,
                    "text": frame["text"],
                    "ts": time.time(),
                },
                use_bin_type=True,
            )
            for member in list(members.values()):
                with contextlib.suppress(ConnectionClosed):
                    await member.send(out)
            await ws.send(msgpack.packb({"t": "ack", "id": frame["id"], "seq": seq}))
    except ConnectionClosed:
        pass
    finally:
        if members.get(user) is ws:
            del members[user]


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        host,
        port,
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        process_request=health,
        compression=None,
        max_size=256 * 1024,
    ):
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8200)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.host, args.port))
    except ImportError:
        asyncio.run(main(args.host, args.port))
