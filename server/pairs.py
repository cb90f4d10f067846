"""Creating pairs and minting their tokens: shared by the admin API and the CLI."""

from __future__ import annotations

import time
from typing import Any

from persistence.store import PairRecord, Store
from server.auth import DEFAULT_TTL, mint

MAX_NAME = 200


def check_name(value: Any) -> str | None:
    if isinstance(value, str) and 1 <= len(value.strip()) <= MAX_NAME:
        return value.strip()
    return None


def pair_json(
    pair: PairRecord, secret: str | None = None, ttl: int = DEFAULT_TTL
) -> dict[str, Any]:
    """The admin API's pair body; with ``secret``, each member also gets a token."""
    body: dict[str, Any] = {
        "pair_id": pair.id,
        "mentor": {"id": pair.mentor_id, "name": pair.mentor_name},
        "mentee": {"id": pair.mentee_id, "name": pair.mentee_name},
    }
    if secret is not None:
        for role in ("mentor", "mentee"):
            body[role]["token"] = mint(secret, body[role]["id"], pair.id, ttl)
    return body


async def create_pair(store: Store, mentor: str, mentee: str) -> PairRecord:
    return await store.create_pair(mentor, mentee, time.time())
