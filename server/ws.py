"""The WebSocket endpoint: origin and subprotocol checks, the hello, then a pump to the hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

from rooms.codec import SUBPROTOCOLS, decode
from rooms.connection import Connection
from rooms.errors import Close, FatalError, ProtocolError, Unavailable
from server.errors import error_response
from server.security import PendingSockets
from server.services import Services

log = logging.getLogger(__name__)


# the scope extension through which the endpoint writes a frame straight to the socket
DIRECT = "menteo.send_now"


# uvicorn's socket, lighter while idle ------------------------------------------------------------
class Inbox:
    """What uvicorn's WebSocket protocol uses of ``asyncio.Queue`` (``put_nowait``, ``get``,
    ``empty``), the same way, but holding no deque or event while empty: an idle
    ``asyncio.Queue`` is four deques and an event, about 3 KiB per socket (bench S5)."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        self._wakeup_next()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        if not self._items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # in case it is not done yet
                self._forget(getter)
                if self._items and not getter.cancelled():
                    self._wakeup_next()
                raise
            self._forget(getter)
        return self.get_nowait()

    def _forget(self, getter: asyncio.Future[None]) -> None:
        if self._getters is not None:
            with contextlib.suppress(ValueError):
                self._getters.remove(getter)
            if not self._getters:
                self._getters = None

    def _wakeup_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not self._getters:
            self._getters = None


class Flag:
    """``asyncio.Event`` (``is_set``, ``set``, ``clear``, ``wait``) without its waiter deque
    while nobody waits (memory per idle socket)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._waiters or ():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
            return True
        finally:
            self._waiters.remove(fut)
            if not self._waiters:
                self._waiters = None


class SocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (``ws="websockets-sansio"``), holding less for an
    idle socket: an :class:`Inbox` and a :class:`Flag` instead of an ``asyncio.Queue`` and an
    ``asyncio.Event``, and nothing of the opening handshake once it is done (the request's
    headers, which the ASGI scope has its own copy of, and the response)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # websockets' parser keeps the request object for the life of the socket
        event.headers.clear()
        self.request = None  # type: ignore[assignment]
        if getattr(self, "scope", None) is not None:
            self.scope["extensions"][DIRECT] = self  # type: ignore[assignment]

    def send_now(self, frames: Sequence[bytes | str]) -> bool:
        """What ``send`` does for ``websocket.send`` messages, at once and only when it would
        go straight through: accepted, no close sent or received, the transport not paused
        (else ``send`` waits, and the caller takes that path). The frames share one write."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        try:
            for data in frames:
                if isinstance(data, bytes):
                    self.conn.send_binary(data)
                else:
                    self.conn.send_text(data.encode())
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def start_keepalive(self) -> None:
        # called once, right after the accepting response was written: it is not needed again
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()


class StarletteTransport:
    __slots__ = ("direct", "ws")

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        extensions = websocket.scope.get("extensions") or {}
        self.direct: SocketProtocol | None = extensions.get(DIRECT)

    def send_now(self, frames: Sequence[bytes | str]) -> bool:
        return self.direct is not None and self.direct.send_now(frames)

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


async def _join(websocket: WebSocket) -> Connection | None:
    """Origin and subprotocol checks, the accept, the hello and the join: the connection, or
    ``None`` once the socket was refused. A coroutine of its own so that nothing of the handshake
    (the hello, its message, this frame) stays alive with the socket."""
    svc: Services = websocket.app.state.services
    settings = svc.settings
    pair_id = websocket.path_params["pair_id"]
    if not origin_allowed(websocket, settings.allowed_origins):
        await deny(websocket, error_response(403, "origin not allowed", "forbidden_origin"))
        return None
    offered = websocket.scope.get("subprotocols") or []
    chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
    if chosen is None:
        await deny(
            websocket,
            error_response(400, "subprotocol menteo.v1.msgpack is required", "bad_request"),
        )
        return None
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
        return None
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
        return None
    if hello_msg["type"] == "websocket.disconnect":
        return None
    data = payload(hello_msg)
    if len(data) > settings.max_frame:
        await refuse(Close.TOO_BIG, "frame too large")
        return None
    try:
        hello = decode(data, fmt)
        if hello["t"] != "hello":
            raise ProtocolError("the first frame must be hello")
    except ProtocolError as exc:
        await refuse(Close.UNAUTHORIZED, f"hello expected: {exc.message}")
        return None
    try:
        return await svc.hub.join(transport, pair_id, fmt, hello)
    except Unavailable:
        await refuse(Close.TRY_AGAIN, "the room is unavailable; retry")
    except FatalError as exc:
        await refuse(exc.close_code, exc.reason)
    except Exception:
        log.exception("join failed")
        await refuse(Close.INTERNAL, "internal error")
    return None


class Reading:
    """What the socket's read loop and ``Connection.on_done`` share: whether a frame is being
    handled, and whether the connection's end stopped the loop (fields, not closure cells)."""

    __slots__ = ("busy", "stopped", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.busy = False
        self.stopped = False

    def stop(self) -> None:
        if not self.busy and not self.stopped and self.task is not None:
            self.stopped = True
            self.task.cancel()


class RoomSocket:
    """The room endpoint, ``/ws/rooms/{pair_id}``, as a plain ASGI app: Starlette's
    ``WebSocketRoute`` calls it as it is, without the ``websocket_session`` wrapper whose
    coroutines and closures would stay alive as long as the socket (memory per idle
    connection, bench S5). Exceptions still reach Starlette's exception middleware."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive=receive, send=send)
        conn = await _join(websocket)
        if conn is None:
            return
        svc: Services = websocket.app.state.services
        max_frame = svc.settings.max_frame
        # The server may end the connection (slow reader, flood, replacement) while the client
        # sends nothing and cannot even take the close frame: stop reading then, and leave now.
        # The read loop runs in this task (no reader or watcher task per socket: memory per
        # idle connection); ending the connection cancels it while it is idle in receive(),
        # and a frame in progress finishes first.
        reading = Reading(asyncio.current_task())
        conn.on_done = reading.stop
        try:
            if not conn.done.is_set():
                try:
                    while conn.closed is None:
                        msg = await websocket.receive()
                        if msg["type"] == "websocket.disconnect":
                            return
                        data = payload(msg)
                        del msg
                        if len(data) > max_frame:
                            conn.abort(Close.TOO_BIG, "frame too large")
                            return
                        reading.busy = True
                        await svc.hub.receive(conn, data)
                        reading.busy = False
                        del data  # not kept while the socket is idle
                except Exception:
                    if conn.closed is None:
                        log.exception("connection %s failed", conn.id[:8])
                        conn.abort(Close.INTERNAL, "internal error")
        except asyncio.CancelledError:
            if not reading.stopped or reading.task is None:
                raise
            reading.task.uncancel()  # our own stop, not the server's shutdown
        finally:
            conn.on_done = None
            await svc.hub.leave(conn)
            await conn.wait_closed()


room_socket = RoomSocket()
