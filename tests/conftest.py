from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server process; each test makes its own pairs."""
    proc = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database URL for a fresh PostgreSQL schema of this test's own (dropped afterwards);
    skips when PostgreSQL is unreachable, fails instead when CI=true."""
    from tests.pg import pg_schema

    with pg_schema() as url:
        yield url


def _dump_tasks() -> None:
    """Print every pending asyncio task's stack: what a hung test was waiting for."""
    out = io.StringIO()
    try:
        tasks = [t for t in list(asyncio.tasks._all_tasks) if not t.done()]
    except RuntimeError:  # the set changed under us; a diagnostic only
        tasks = []
    out.write(f"\n--- watchdog: {len(tasks)} pending asyncio tasks ---\n")
    for task in tasks:
        task.print_stack(limit=12, file=out)
    sys.__stderr__.write(out.getvalue())
    sys.__stderr__.flush()


@pytest.fixture(autouse=True)
def watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shortly before pytest-timeout fails a test, show where its tasks are stuck."""
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else request.config.getini("timeout")
    timer = threading.Timer(max(float(limit or 180) - 10, 1), _dump_tasks)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
