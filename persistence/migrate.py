"""Schema migrations with Alembic, configured in code (no ``alembic.ini`` at runtime).

The scripts live in ``persistence/migrations`` (``env.py``, ``versions/``). Every function here
takes a synchronous SQLAlchemy connection inside a transaction; the async store calls them
through ``AsyncConnection.run_sync``. On PostgreSQL the whole check-and-migrate holds an
advisory lock, so nodes that start together on an empty database migrate it once.

To write a new revision: add ``versions/NNNN_<what>.py`` with ``down_revision`` set to the
current head (``alembic.command.revision(config(), message, autogenerate=...)`` can draft one
from the models when given a connection in ``config(conn)``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
TABLES = frozenset({"users", "pairs", "sessions", "events", "notes_updates"})
VERSION_TABLE = "alembic_version"
LEGACY_REVISION = "0001"  # the schema that ``SQLModel.metadata.create_all`` made before migrations


class SchemaError(RuntimeError):
    """The database's schema cannot be used (or migrated) by this version as it is."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    heads = ScriptDirectory.from_config(config()).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations must have exactly one head, not {heads}")
    return heads[0]


def current(conn: Connection) -> str | None:
    """The revision recorded in ``alembic_version`` (``None`` if the table is missing or empty)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"the database records several schema heads: {sorted(rows)}")
    return str(rows[0]) if rows else None


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock("
                "hashtext('menteo-rooms schema ' || coalesce(current_schema(), '')))"
            )
        )


def state(conn: Connection) -> tuple[str, str | None]:
    """``(state, revision)``: state is empty, legacy, current, behind or unknown."""
    tables = set(inspect(conn).get_table_names())
    ours = TABLES & tables
    revision = current(conn) if VERSION_TABLE in tables else None
    if revision is None:
        if not ours:
            return "empty", None
        if ours == TABLES:
            return "legacy", None
        raise SchemaError(
            f"the database has some of this app's tables ({', '.join(sorted(ours))}) but no "
            "migration history; restore it or start from an empty database"
        )
    script = ScriptDirectory.from_config(config())
    if revision == head():
        return "current", revision
    try:
        script.get_revision(revision)
    except Exception:
        return "unknown", revision
    return "behind", revision


def upgrade(conn: Connection) -> str:
    """Bring the schema to the head revision; return what was done (for ``migrate``)."""
    _lock(conn)
    found, revision = state(conn)
    cfg = config(conn)
    if found == "unknown":
        raise SchemaError(
            f"the database is at revision {revision}, which this version does not know "
            "(made by a newer version?)"
        )
    if found == "current":
        return f"already at {revision}"
    if found == "legacy":
        command.stamp(cfg, LEGACY_REVISION)
        log.info("stamped a schema made without migrations as revision %s", LEGACY_REVISION)
        if LEGACY_REVISION == head():
            return f"stamped the existing schema as {LEGACY_REVISION}"
    command.upgrade(cfg, "head")
    done = "created" if found == "empty" else f"upgraded from {revision or LEGACY_REVISION}"
    return f"{done} (now at {head()})"


def prepare(conn: Connection) -> None:
    """On start: migrate an empty schema, stamp one made by ``create_all``, and refuse one that
    is behind (an operator runs ``menteo-rooms migrate`` once for the whole cluster)."""
    _lock(conn)
    found, revision = state(conn)
    if found == "empty":
        command.upgrade(config(conn), "head")
        log.info("created the database schema (revision %s)", head())
    elif found == "legacy":
        command.stamp(config(conn), LEGACY_REVISION)
        log.info("stamped a schema made without migrations as revision %s", LEGACY_REVISION)
        if LEGACY_REVISION != head():
            raise SchemaError(
                f"the database schema is at revision {LEGACY_REVISION}, this version needs "
                f"{head()}: run `menteo-rooms migrate`"
            )
    elif found == "behind":
        raise SchemaError(
            f"the database schema is at revision {revision}, this version needs {head()}: "
            "run `menteo-rooms migrate`"
        )
    elif found == "unknown":
        log.warning("the database is at revision %s, unknown to this version; going on", revision)
