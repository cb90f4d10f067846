"""HTTP routes: health, readiness, metrics, sessions and transcripts for members, the admin API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from persistence.store import PairRecord
from server.auth import DEFAULT_TTL, TokenError, mint, verify
from server.errors import ApiError
from server.journey import journey, journey_markdown
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.pairs import check_name, create_pair, pair_json
from server.security import equal
from server.services import Services
from server.transcript import markdown, transcript

SEARCH_LIMIT = 20
SEARCH_MAX_LIMIT = 100
SEARCH_MAX_QUERY = 500


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "a Bearer token is required")
    return token.strip()


async def member_of(request: Request, pair_id: str | None, missing: str) -> PairRecord:
    """The pair, if the caller is its member: else 401 (bad token), 404 (unknown), 403."""
    svc = services(request)
    try:
        claims = verify(svc.settings.secret, bearer(request))
    except TokenError as exc:
        raise ApiError(401, str(exc)) from None
    pair = await svc.store.get_pair(pair_id) if pair_id is not None else None
    if pair is None:
        raise ApiError(404, missing)
    if claims.room != pair.id or claims.user_id not in (pair.mentor_id, pair.mentee_id):
        raise ApiError(403, "not a member of this pair")
    return pair


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


READY_TIMEOUT = 2.0
log = logging.getLogger(__name__)


async def _check(part: str, ping: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(ping(), READY_TIMEOUT)
        return "ok"
    except Exception as exc:
        log.warning("readiness: the %s is down: %r", part, exc)
        return "down"


def operator(request: Request) -> None:
    """With ``MENTEO_METRICS_TOKEN`` set, ``/readyz`` and ``/metrics`` need it as Bearer token."""
    expected = services(request).settings.metrics_token
    if expected and not equal(bearer(request), expected):
        raise ApiError(401, "invalid metrics token")


async def readyz(request: Request) -> Response:
    """200 when this node can serve (database and broker answer), else 503 naming what is down."""
    operator(request)
    svc = services(request)
    database, broker = await asyncio.gather(
        _check("database", svc.store.ping), _check("broker", svc.broker.ping)
    )
    ready = database == broker == "ok"
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "database": database, "broker": broker},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    """This node's metrics in Prometheus' text format."""
    operator(request)
    return Response(services(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def list_sessions(request: Request) -> Response:
    svc = services(request)
    pair_id = request.path_params["pair_id"]
    await member_of(request, pair_id, "no such pair")
    rows = await svc.store.list_sessions(pair_id)
    return JSONResponse(
        [
            {
                "id": s.id,
                "started_at": s.started_at,
                "ended_at": s.ended_at,
                "message_count": n,
                "goal": goal,
            }
            for s, n, goal in rows
        ]
    )


def md_response(text: str, filename: str) -> Response:
    return PlainTextResponse(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={"content-disposition": f'inline; filename="{filename}"'},
    )


def output_format(request: Request) -> str:
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "md"):
        raise ApiError(422, "format must be json or md")
    return fmt


async def search(request: Request) -> Response:
    """The pair's texts that hold every word of ``q``, newest first."""
    svc = services(request)
    pair = await member_of(request, request.path_params["pair_id"], "no such pair")
    q = request.query_params.get("q", "")
    if not q.strip():
        raise ApiError(422, "'q' is required: the words to search for")
    if len(q) > SEARCH_MAX_QUERY:
        raise ApiError(422, f"'q' must be at most {SEARCH_MAX_QUERY} characters")
    raw = request.query_params.get("limit", str(SEARCH_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= SEARCH_MAX_LIMIT:
        raise ApiError(422, f"'limit' must be an integer from 1 to {SEARCH_MAX_LIMIT}")
    return JSONResponse({"results": await svc.store.search(pair.id, q, limit)})


async def get_journey(request: Request) -> Response:
    """The pair's sessions, goals, key moments and items with their history."""
    svc = services(request)
    pair = await member_of(request, request.path_params["pair_id"], "no such pair")
    fmt = output_format(request)
    doc = await journey(svc.store, pair)
    if fmt == "md":
        return md_response(journey_markdown(doc), f"journey-{pair.id}.md")
    return JSONResponse(doc)


async def get_transcript(request: Request) -> Response:
    svc = services(request)
    fmt = request.query_params.get("format", "json")
    session = await svc.store.get_session(request.path_params["session_id"])
    pair = await member_of(request, session.pair_id if session else None, "no such session")
    assert session is not None
    if fmt not in ("json", "md"):
        raise ApiError(422, "format must be json or md")
    doc = await transcript(svc.store, session)
    if fmt == "md":
        items = {item["id"]: item for item in await svc.store.items(pair.id)}
        return md_response(markdown(doc, pair, items), f"session-{session.id}.md")
    return JSONResponse(doc)


def admin(request: Request) -> None:
    expected = services(request).settings.admin_token
    if not expected:
        raise ApiError(401, "the admin API is disabled (MENTEO_ADMIN_TOKEN is not set)")
    if not equal(bearer(request), expected):
        raise ApiError(401, "invalid admin token")


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(422, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    return body


async def post_pair(request: Request) -> Response:
    admin(request)
    body = await json_body(request)
    names = {}
    for role in ("mentor", "mentee"):
        part = body.get(role)
        name = check_name(part.get("name")) if isinstance(part, dict) else None
        if name is None:
            raise ApiError(422, f"'{role}.name' must be a string of 1-200 characters")
        names[role] = name
    pair = await create_pair(services(request).store, names["mentor"], names["mentee"])
    return JSONResponse(pair_json(pair), status_code=201)


async def post_token(request: Request) -> Response:
    admin(request)
    svc = services(request)
    body = await json_body(request)
    longest = svc.settings.max_token_ttl
    user_id, ttl = body.get("user_id"), body.get("ttl", min(DEFAULT_TTL, longest))
    if not isinstance(user_id, str) or not user_id:
        raise ApiError(422, "'user_id' must be a string")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= longest:
        raise ApiError(
            422,
            f"'ttl' must be an integer number of seconds (1-{longest}; "
            "the longest is MENTEO_MAX_TOKEN_TTL)",
        )
    pair = await svc.store.get_pair(request.path_params["pair_id"])
    if pair is None:
        raise ApiError(404, "no such pair")
    if user_id not in (pair.mentor_id, pair.mentee_id):
        raise ApiError(404, "no such member in this pair")
    return JSONResponse(
        {"token": mint(svc.settings.secret, user_id, pair.id, ttl)}, status_code=201
    )


async def delete_pair(request: Request) -> Response:
    """Erase the pair and everything it stored, then close its sockets on every node."""
    admin(request)
    svc = services(request)
    pair_id = request.path_params["pair_id"]
    if not await svc.store.erase_pair(pair_id):
        raise ApiError(404, "no such pair")
    await svc.hub.erase(pair_id)
    return Response(status_code=204)
