"""``menteo-rooms``: serve, migrate the database, create pairs, mint tokens, print demo links."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from typing import Any

from persistence.store import Store
from server.auth import DEFAULT_TTL, mint
from server.pairs import check_name, create_pair, pair_json
from server.security import is_loopback
from server.settings import Settings


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a server holding thousands of sockets.

    With the default thresholds a full collection walks every live connection's objects and
    stalls the event loop for 100-300 ms every few seconds at 2,000 connections (bench S2:
    fan-out p99 211 ms); with these, p99 is about 5 ms. Objects alive at start are frozen out of
    collection altogether.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def serve(settings: Settings, host: str, port: int) -> None:
    import contextlib
    from collections.abc import Iterator

    import uvicorn

    tune_gc()

    class Server(uvicorn.Server):
        """After a graceful shutdown on SIGTERM/SIGINT, exit 0 (uvicorn re-raises the signal)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    from server.app import create_app
    from server.security import SecurityHeaders
    from server.ws import SocketProtocol

    config = uvicorn.Config(
        # outermost too, so that even a 500 from Starlette's error middleware has the headers
        SecurityHeaders(create_app(settings)),
        host=host,
        port=port,
        ws=SocketProtocol,  # uvicorn's websockets-sansio protocol, lighter per idle socket
        ws_max_size=settings.max_frame,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=settings.limit_concurrency or None,
        log_level="info",
    )
    Server(config).run()


async def _new_pair(settings: Settings, mentor: str, mentee: str) -> dict[str, Any]:
    async with Store(settings.database_url) as store:
        pair = await create_pair(store, mentor, mentee)
    return pair_json(pair, settings.secret, min(DEFAULT_TTL, settings.max_token_ttl))


async def _token(settings: Settings, pair_id: str, user_id: str, ttl: int) -> str | None:
    async with Store(settings.database_url) as store:
        pair = await store.get_pair(pair_id)
    if pair is None or user_id not in (pair.mentor_id, pair.mentee_id):
        return None
    return mint(settings.secret, user_id, pair_id, ttl)


async def _migrate(settings: Settings) -> str:
    async with Store(settings.database_url, prepare=False) as store:
        return await store.migrate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="menteo-rooms", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve HTTP, WebSocket and the browser client")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_pair = sub.add_parser("pair", help="manage pairs")
    pair_sub = p_pair.add_subparsers(dest="pair_command", required=True)
    p_create = pair_sub.add_parser("create", help="create a mentor/mentee pair")
    p_create.add_argument("--mentor", required=True)
    p_create.add_argument("--mentee", required=True)
    p_create.add_argument("--json", action="store_true")
    p_token = sub.add_parser("token", help="mint a member's token")
    p_token.add_argument("--pair", required=True)
    p_token.add_argument("--user", required=True)
    p_token.add_argument("--ttl", type=int, default=None, help=f"seconds (default {DEFAULT_TTL})")
    p_token.add_argument("--json", action="store_true")
    sub.add_parser("demo", help="create a pair and print each member's browser link")
    sub.add_parser("migrate", help="apply the database schema migrations (safe to repeat)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if (
        args.command == "serve"
        and not os.environ.get("MENTEO_SECRET")
        and not is_loopback(args.host)
    ):
        # refuse before a development secret file is generated for a public listener
        print(
            f"error: MENTEO_SECRET is not set and the server listens on {args.host!r}, not on "
            "loopback: a generated development secret is only for 127.0.0.1/localhost. Set "
            "MENTEO_SECRET to at least 32 random bytes, the same on every node",
            file=sys.stderr,
        )
        return 2
    settings = Settings.from_env()

    if args.command == "serve":
        from server.security import serve_problems

        problems = serve_problems(
            secret=settings.secret,
            secret_from_env=settings.secret_file is None,
            admin_token=settings.admin_token,
            host=args.host,
        )
        if problems:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        if settings.secret_file is not None:
            logging.getLogger("server.settings").warning(
                "MENTEO_SECRET is not set: using the DEVELOPMENT secret kept in %s "
                "(loopback only; set MENTEO_SECRET for anything else)",
                settings.secret_file,
            )
        serve(settings, args.host, args.port)
        return 0
    if args.command == "pair":
        mentor, mentee = check_name(args.mentor), check_name(args.mentee)
        if mentor is None or mentee is None:
            print("error: names must be 1-200 characters", file=sys.stderr)
            return 2
        body = asyncio.run(_new_pair(settings, mentor, mentee))
        if args.json:
            print(json.dumps(body))
        else:
            print(f"pair {body['pair_id']}")
            for role in ("mentor", "mentee"):
                print(f"  {role}: {body[role]['name']} ({body[role]['id']})")
                print(f"    token: {body[role]['token']}")
        return 0
    if args.command == "token":
        if args.ttl is None:
            args.ttl = min(DEFAULT_TTL, settings.max_token_ttl)
        if args.ttl < 1:
            print("error: --ttl must be positive", file=sys.stderr)
            return 2
        if args.ttl > settings.max_token_ttl:
            print(
                f"error: --ttl must be at most {settings.max_token_ttl} seconds "
                "(MENTEO_MAX_TOKEN_TTL)",
                file=sys.stderr,
            )
            return 2
        token = asyncio.run(_token(settings, args.pair, args.user, args.ttl))
        if token is None:
            print("error: no such pair, or the user is not one of its members", file=sys.stderr)
            return 1
        print(json.dumps({"token": token}) if args.json else token)
        return 0
    if args.command == "migrate":
        from sqlalchemy.exc import SQLAlchemyError

        from persistence.migrate import SchemaError

        try:
            done = asyncio.run(_migrate(settings))
        except (SchemaError, SQLAlchemyError, OSError) as exc:
            print(f"error: the migration failed: {exc}", file=sys.stderr)
            return 1
        print(f"database schema: {done}")
        return 0
    if args.command == "demo":
        body = asyncio.run(_new_pair(settings, "Ada (mentor)", "Grace (mentee)"))
        print("Demo pair created. Open each link in its own browser window:")
        for role in ("mentor", "mentee"):
            link = f"{settings.public_url}/rooms/{body['pair_id']}#token={body[role]['token']}"
            print(f"  {role:6} {body[role]['name']}: {link}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
