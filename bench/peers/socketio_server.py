"""The peer baseline: python-socketio's AsyncServer with AsyncRedisManager on uvicorn.

The usual Python way to build this product's live part, doing the same workload: rooms of two,
a ``chat`` event relayed to the room (``emit(..., room=room, skip_sid=sender)``) and answered
with an ack callback once relayed. Nothing is stored. Every emit goes through Redis, as it does
for a deployment of several nodes (the manager publishes each emit on its channel).

    python -m bench.peers.socketio_server --port 8100 --redis redis://127.0.0.1:6379/0

A client connects to ``/socket.io/?EIO=4&transport=websocket`` and joins its room with the
connect packet's auth: ``40{"room": "r1", "user": "u1"}``. ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import socketio
import uvicorn


def create_app(redis_url: str, channel: str) -> Any:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins=[])
    members: dict[str, tuple[str, str]] = {}  # sid -> (room, user)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        if not isinstance(auth, dict) or not auth.get("room") or not auth.get("user"):
            return False
        room, user = str(auth["room"]), str(auth["user"])
        members[sid] = (room, user)
        await sio.enter_room(sid, room)
        return True

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        members.pop(sid, None)

    @sio.on("chat")
    async def chat(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, user = members[sid]
        await sio.emit(
            "chat",
            {"id": data["id"], "from": user, "text": data["text"]},
            room=room,
            skip_sid=sid,
        )
        return {"id": data["id"]}  # the ack

    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        status = 200 if scope["type"] == "http" and scope["path"] == "/healthz" else 404
        body = b'{"status":"ok"}' if status == 200 else b""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return socketio.ASGIApp(sio, other_asgi_app=health)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--channel", default=f"bench-socketio-{uuid.uuid4().hex[:8]}")
    args = ap.parse_args()
    uvicorn.run(
        create_app(args.redis, args.channel),
        host=args.host,
        port=args.port,
        ws_per_message_deflate=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
