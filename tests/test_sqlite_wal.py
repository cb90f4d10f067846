"""SQLite's write-ahead log stays bounded under steady writes: passive checkpoints beside the
writer never find it idle, so the store starts it over once it passes a bound."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from persistence.store import Store
from tests.test_store_contract import ev, new_session

PAGE = 4096


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def test_the_wal_is_started_over_under_steady_writes(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    async with Store(f"sqlite:///{db}") as store:
        store.checkpoint_every = 0.02
        store.wal_reset_frames = 64  # 256 KiB
        assert store._checkpointer is not None
        store._checkpointer.cancel()  # start it again with the short period
        store._checkpointer = asyncio.get_running_loop().create_task(
            store._checkpoints(store.checkpoint_every)
        )
        _, session = await new_session(store)
        wal = Path(f"{db}-wal")
        seq, largest = 0, 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and (store.wal_resets < 3 or seq < 2000):
            batch = []
            for _ in range(10):  # a group commit of ten chats, as the writer makes them
                seq += 1
                batch.append(ev(session, seq, "chat", "u1", f"c{seq}", text="word " * 40))
            await store.write(batch)
            largest = max(largest, size(wal))
        assert store.wal_resets >= 1, (seq, largest)
        # never far past the bound: what one checkpoint period of writes adds to it
        assert largest < 16 * store.wal_reset_frames * PAGE, (seq, largest)
        assert await store.head(session) == seq
