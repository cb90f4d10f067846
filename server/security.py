"""Hardening checks: secrets and admin token at start, constant-time comparisons."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

MIN_SECRET_BYTES = 32
MIN_ADMIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """True for a listen address only this machine can reach (``127.0.0.1``, ``::1``, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def equal(given: str, expected: str) -> bool:
    """Compare two secrets in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode(), expected.encode())


def serve_problems(
    *, secret: str, secret_from_env: bool, admin_token: str | None, host: str
) -> list[str]:
    """Why ``serve`` must refuse to start with these settings (empty: it may start)."""
    problems = []
    if not secret_from_env and not is_loopback(host):
        problems.append(
            f"MENTEO_SECRET is not set and the server listens on {host!r}, not on loopback: "
            "a generated development secret is only for 127.0.0.1/localhost. Set MENTEO_SECRET "
            f"to at least {MIN_SECRET_BYTES} random bytes, the same on every node "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    elif len(secret.encode()) < MIN_SECRET_BYTES:
        problems.append(
            f"MENTEO_SECRET is {len(secret.encode())} bytes; at least {MIN_SECRET_BYTES} are "
            "required (a short HS256 secret can be found offline from one token)"
        )
    if admin_token is not None and len(admin_token) < MIN_ADMIN_TOKEN:
        problems.append(
            f"MENTEO_ADMIN_TOKEN is {len(admin_token)} characters; at least {MIN_ADMIN_TOKEN} "
            "are required (or leave it unset to turn the admin API off)"
        )
    return problems


# security headers ----------------------------------------------------------------------------
# the same policy tests/test_browser.py holds the browser client to (issue 10, item 5)
CSP = (
    "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "object-src 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """A pure ASGI middleware: every HTTP response (pages, API, static files, a refused
    WebSocket upgrade) gets the CSP, ``nosniff`` and ``no-referrer``; HSTS only over TLS."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extra = list(HEADERS)
        if scope.get("scheme") in ("https", "wss"):
            extra.append((b"strict-transport-security", HSTS.encode()))

        async def send_with_headers(message: Any) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# sockets that have not said hello ------------------------------------------------------------
class PendingSockets:
    """Counts accepted WebSockets that have not said ``hello`` yet, per client address and in
    total, so silent sockets cannot pile up until the hello timeout."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.by_address: dict[str, int] = {}
        self.count = 0

    def enter(self, address: str) -> bool:
        """Take a place for ``address``; False (and nothing taken) past either cap."""
        held = self.by_address.get(address, 0)
        if held >= self.per_address or self.count >= self.total:
            return False
        self.by_address[address] = held + 1
        self.count += 1
        return True

    def leave(self, address: str) -> None:
        held = self.by_address.get(address, 0) - 1
        if held > 0:
            self.by_address[address] = held
        else:
            self.by_address.pop(address, None)
        self.count = max(0, self.count - 1)
