"""The app factory: one node's HTTP and WebSocket surface, services run in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from rooms.broker import MemoryBackbone
from server import http
from server.errors import http_exception, server_error
from server.security import PendingSockets, SecurityHeaders
from server.services import running
from server.settings import Settings
from server.ws import room_socket

STATIC = Path(__file__).resolve().parent.parent / "static"


def page(name: str) -> Callable[[Request], Awaitable[Response]]:
    """A route serving one of the browser client's HTML pages (tokens travel in the fragment)."""

    async def serve(request: Request) -> Response:
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return serve


def asset(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type=media_type)

    return serve


def create_app(
    settings: Settings | None = None, backbone: MemoryBackbone | None = None
) -> Starlette:
    """Build one node. Nodes in one process share a ``memory://`` broker through ``backbone``."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, backbone) as services:
            app.state.services = services
            yield

    routes = [
        Route("/healthz", http.healthz),
        Route("/readyz", http.readyz),
        Route("/metrics", http.metrics),
        Route("/api/pairs", http.post_pair, methods=["POST"]),
        Route("/api/pairs/{pair_id}", http.delete_pair, methods=["DELETE"]),
        Route("/api/pairs/{pair_id}/tokens", http.post_token, methods=["POST"]),
        Route("/api/rooms/{pair_id}/sessions", http.list_sessions),
        Route("/api/rooms/{pair_id}/search", http.search),
        Route("/api/rooms/{pair_id}/journey", http.get_journey),
        Route("/api/sessions/{session_id}/transcript", http.get_transcript),
        WebSocketRoute("/ws/rooms/{pair_id}", room_socket),
        Route("/", page("index.html")),
        Route("/rooms/{pair_id}", page("room.html")),
        Route("/rooms/{pair_id}/sessions", page("sessions.html")),
        Route("/rooms/{pair_id}/journey", page("journey.html")),
        Route("/sessions/{session_id}", page("session.html")),
        # only the built bundle and the stylesheet: not the sources or node_modules
        Mount("/static/dist", StaticFiles(directory=STATIC / "dist", check_dir=False)),
        Route("/static/style.css", asset("style.css", "text/css")),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: http_exception, Exception: server_error},
    )
    app.state.pending = PendingSockets(settings.max_pending_per_address, settings.max_pending)
    return app
