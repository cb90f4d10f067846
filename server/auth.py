"""Room tokens: JWT HS256 with ``sub`` (user id), ``room`` (pair id) and ``exp``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

DEFAULT_TTL = 12 * 3600
LEEWAY = 30  # seconds of clock skew allowed on ``exp`` between the minting host and a node


class TokenError(Exception):
    """The token is missing, malformed, badly signed or expired (401 / close 4401)."""


@dataclass(frozen=True)
class Claims:
    user_id: str
    room: str
    exp: int = 0


def mint(secret: str, user_id: str, room: str, ttl: int = DEFAULT_TTL) -> str:
    exp = int(time.time()) + int(ttl)
    return jwt.encode({"sub": user_id, "room": room, "exp": exp}, secret, algorithm="HS256")


def verify(secret: str, token: str) -> Claims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            leeway=LEEWAY,
            # the contract: claims other than sub/room/exp are ignored, not checked
            options={
                "require": ["exp", "sub", "room"],
                "verify_aud": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_iss": False,
            },
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    sub, room = claims.get("sub"), claims.get("room")
    if not isinstance(sub, str) or not isinstance(room, str):
        raise TokenError("invalid token: 'sub' and 'room' must be strings")
    exp = claims["exp"]
    return Claims(sub, room, int(exp) if isinstance(exp, int | float) else 0)
