"""The WebSocket endpoint: origin and subprotocol checks, the hello, then a pump to the hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

from rooms.codec import SUBPROTOCOLS, decode
from rooms.errors import Close, FatalError, ProtocolError, Unavailable
from server.errors import error_response
from server.security import PendingSockets
from server.services import Services

log = logging.getLogger(__name__)


class StarletteTransport:
    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_text(data)

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            await self.ws.close(code, reason[:120])


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    if allowed:
        return origin.rstrip("/") in allowed or "*" in allowed
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


def payload(message: Mapping[str, Any]) -> bytes | str:
    data = message.get("bytes")
    if data is not None:
        return bytes(data)
    return str(message.get("text") or "")


async def deny(websocket: WebSocket, response: Response) -> None:
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(1008)


async def first_message(websocket: WebSocket, wait: float) -> Mapping[str, Any] | None:
    """The first message after accept (the hello, or a disconnect); None after ``wait`` seconds."""
    try:
        return await asyncio.wait_for(websocket.receive(), wait)
    except TimeoutError:
        return None


async def room_socket(websocket: WebSocket) -> None:
    svc: Services = websocket.app.state.services
    settings = svc.settings
    pair_id = websocket.path_params["pair_id"]
    if not origin_allowed(websocket, settings.allowed_origins):
        await deny(websocket, error_response(403, "origin not allowed", "forbidden_origin"))
        return
    offered = websocket.scope.get("subprotocols") or []
    chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
    if chosen is None:
        await deny(
            websocket,
            error_response(400, "subprotocol menteo.v1.msgpack is required", "bad_request"),
        )
        return
    fmt = SUBPROTOCOLS[chosen]
    pending: PendingSockets = websocket.app.state.pending
    address = websocket.client.host if websocket.client else "?"
    if not pending.enter(address):
        await deny(
            websocket,
            error_response(
                429, "too many connections waiting for their hello; retry later", "too_many_pending"
            ),
        )
        return
    try:
        await websocket.accept(subprotocol=chosen)
        hello_msg = await first_message(websocket, settings.hello_timeout)
    finally:
        pending.leave(address)  # said hello, went silent too long, or left
    transport = StarletteTransport(websocket)

    async def refuse(code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await transport.close(code, reason)

    if hello_msg is None:
        await refuse(Close.UNAUTHORIZED, "no hello in time")
        return
    if hello_msg["type"] == "websocket.disconnect":
        return
    data = payload(hello_msg)
    if len(data) > settings.max_frame:
        await refuse(Close.TOO_BIG, "frame too large")
        return
    try:
        hello = decode(data, fmt)
        if hello["t"] != "hello":
            raise ProtocolError("the first frame must be hello")
    except ProtocolError as exc:
        await refuse(Close.UNAUTHORIZED, f"hello expected: {exc.message}")
        return
    try:
        conn = await svc.hub.join(transport, pair_id, fmt, hello)
    except Unavailable:
        await refuse(Close.TRY_AGAIN, "the room is unavailable; retry")
        return
    except FatalError as exc:
        await refuse(exc.close_code, exc.reason)
        return
    except Exception:
        log.exception("join failed")
        await refuse(Close.INTERNAL, "internal error")
        return
    busy = False

    async def pump() -> None:
        nonlocal busy
        try:
            while conn.closed is None:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                data = payload(msg)
                if len(data) > settings.max_frame:
                    conn.abort(Close.TOO_BIG, "frame too large")
                    return
                busy = True
                await svc.hub.receive(conn, data)
                busy = False
        except Exception:
            if conn.closed is None:
                log.exception("connection %s failed", conn.id[:8])
                conn.abort(Close.INTERNAL, "internal error")

    # The server may end the connection (slow reader, flood, replacement) while the client
    # sends nothing and cannot even take the close frame: stop reading then, and leave now.
    # The pump runs in this task (no reader or watcher task per socket: memory per idle
    # connection); ending the connection cancels it while it is idle in receive(), and a
    # frame in progress finishes first.
    me = asyncio.current_task()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not busy and not stopped and me is not None:
            stopped = True
            me.cancel()

    conn.on_done = stop
    try:
        if not conn.done.is_set():
            await pump()
    except asyncio.CancelledError:
        if not stopped or me is None:
            raise
        me.uncancel()  # our own stop, not the server's shutdown
    finally:
        conn.on_done = None
        await svc.hub.leave(conn)
        await conn.wait_closed()
