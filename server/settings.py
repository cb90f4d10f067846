"""Settings from the environment (``MENTEO_*``)."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_FILE = ".menteo-secret"


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def local_secret(folder: Path) -> str:
    """A development secret kept beside the default database, so the CLI and server agree."""
    path = folder / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    try:  # owner-only from the start: never briefly readable by others
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    log.warning("MENTEO_SECRET is not set; generated a development secret in %s", path)
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///menteo.db"
    broker_url: str = "memory://"
    redis_prefix: str = "menteo:"
    node_ttl: float = 10.0
    secret: str = ""
    admin_token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    max_frame: int = 256 * 1024
    rate_limit: float = 40.0
    joins_per_minute: float = 6.0
    hello_timeout: float = 10.0
    session_grace: float = 600.0
    send_queue: int = 2048
    send_queue_bytes: int = 8 * 1024 * 1024
    commit_wait: float = 0.002
    notes_compact_every: int = 200
    notes_max_update: int = 256 * 1024
    notes_max_bytes: int = 1024 * 1024
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    # where the generated development secret is kept, when MENTEO_SECRET is not set
    secret_file: str | None = None
    max_token_ttl: int = 7 * 86400
    metrics_token: str | None = None
    max_pending_per_address: int = 100
    max_pending: int = 2000
    limit_concurrency: int = 20000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, folder: Path | None = None) -> Settings:
        env = os.environ if env is None else env
        folder = folder or Path.cwd()

        def num(key: str, default: float) -> float:
            raw = env.get(key)
            if raw is None or raw == "":
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{key} must be a number, not {raw!r}") from None

        return cls(
            database_url=env.get("MENTEO_DATABASE_URL") or f"sqlite:///{folder / 'menteo.db'}",
            broker_url=env.get("MENTEO_BROKER_URL") or "memory://",
            redis_prefix=env.get("MENTEO_REDIS_PREFIX", "menteo:"),
            node_ttl=num("MENTEO_NODE_TTL", 10.0),
            secret=env.get("MENTEO_SECRET") or local_secret(folder),
            secret_file=None if env.get("MENTEO_SECRET") else str(folder / SECRET_FILE),
            admin_token=env.get("MENTEO_ADMIN_TOKEN") or None,
            allowed_origins=_list(env.get("MENTEO_ALLOWED_ORIGINS")),
            max_frame=int(num("MENTEO_MAX_FRAME", 256 * 1024)),
            rate_limit=num("MENTEO_RATE_LIMIT", 40.0),
            joins_per_minute=num("MENTEO_JOINS_PER_MINUTE", 6.0),
            hello_timeout=num("MENTEO_HELLO_TIMEOUT", 10.0),
            session_grace=num("MENTEO_SESSION_GRACE", 600.0),
            send_queue=int(num("MENTEO_SEND_QUEUE", 2048)),
            send_queue_bytes=int(num("MENTEO_SEND_QUEUE_BYTES", 8 * 1024 * 1024)),
            commit_wait=num("MENTEO_COMMIT_WAIT", 0.002),
            notes_compact_every=int(num("MENTEO_NOTES_COMPACT_EVERY", 200)),
            notes_max_update=int(num("MENTEO_NOTES_MAX_UPDATE", 256 * 1024)),
            notes_max_bytes=int(num("MENTEO_NOTES_MAX_BYTES", 1024 * 1024)),
            stun_urls=_list(env.get("MENTEO_STUN_URLS")),
            turn_urls=_list(env.get("MENTEO_TURN_URLS")),
            turn_secret=env.get("MENTEO_TURN_SECRET") or None,
            public_url=(env.get("MENTEO_PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/"),
            max_token_ttl=int(num("MENTEO_MAX_TOKEN_TTL", 7 * 86400)),
            metrics_token=env.get("MENTEO_METRICS_TOKEN") or None,
            max_pending_per_address=int(num("MENTEO_MAX_PENDING_PER_ADDRESS", 100)),
            max_pending=int(num("MENTEO_MAX_PENDING", 2000)),
            limit_concurrency=int(num("MENTEO_LIMIT_CONCURRENCY", 20000)),
        )
