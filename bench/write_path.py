"""The store's write path alone: CPU per batch and per chat of ``Store.write`` on SQLite.

    python -m bench.write_path                 # 3,000 batches of one chat, then 1,500 of five
    python -m bench.write_path --batches 500 --size 20

No server, no sockets: what one group commit costs the process (Python, SQLite and the
commit's fsync as system time), measured with ``getrusage`` around the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time

import msgpack

from persistence.store import Store, StoredEvent

WORDS = "the quick brown fox mentor goal feedback career draft review plan week".split()


def chat(session: str, seq: int, rng: random.Random) -> StoredEvent:
    text = " ".join(rng.choices(WORDS, k=12))
    body = {"t": "chat", "seq": seq, "id": f"c{seq}", "from": "u1", "text": text, "ts": 1000.0}
    return StoredEvent(session, seq, "chat", "u1", f"c{seq}", 1000.0, msgpack.packb(body))


async def measure(batches: int, size: int) -> dict[str, float]:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        async with Store(f"sqlite:///{tmp}/write.db") as store:
            pair = await store.create_pair("Mara", "Milo", 1000.0)
            session = (await store.start_session(pair.id, 1000.0)).id
            seq = 0
            before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(batches):
                ops = [chat(session, seq + i + 1, rng) for i in range(size)]
                seq += size
                await store.write(ops)
            after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return {
        "batches": batches,
        "size": size,
        "wall_s": round(wall, 2),
        "cpu_per_batch_us": round((user + system) / batches * 1e6),
        "cpu_per_chat_us": round((user + system) / seq * 1e6),
        "system_share": round(system / max(user + system, 1e-9), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int)
    ap.add_argument("--size", type=int)
    args = ap.parse_args()
    runs = [(args.batches or 1500, args.size)] if args.size else [(3000, 1), (1500, 5)]
    for batches, size in runs:
        print(asyncio.run(measure(batches, size)), flush=True)


if __name__ == "__main__":
    main()
