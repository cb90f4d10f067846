"""The ICE server list given to clients in ``welcome``.

TURN credentials follow coturn's REST scheme (``use-auth-secret``): the username is
``expiry:user_id`` and the credential is base64(HMAC-SHA1(secret, username)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def turn_credential(secret: str, user_id: str, now: float, ttl: int) -> tuple[str, str]:
    username = f"{int(now) + ttl}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(
    user_id: str,
    now: float,
    *,
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secret: str | None,
    ttl: int = 86400,
    expires: float | None = None,
) -> list[dict[str, Any]]:
    """STUN and TURN entries; the TURN credential ends at ``expires`` (the room token's
    ``exp``) when given, else ``ttl`` seconds from ``now``."""
    if expires is not None:
        ttl = max(0, int(expires) - int(now))
    servers: list[dict[str, Any]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secret:
        username, credential = turn_credential(turn_secret, user_id, now, ttl)
        servers.append({"urls": list(turn_urls), "username": username, "credential": credential})
    return servers
