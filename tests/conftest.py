from __future__ import annotations

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
