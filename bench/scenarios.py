"""The scenarios of issue 5, and their tiny versions for ``--smoke``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # "menteo" | "socketio" (the peer) | "bare" (the ceiling)
    title: str
    rooms: int
    mode: str = "rate"  # "rate" | "saturate" | "idle"
    rate: float = 1.0  # chats/s per client
    window: int = 10  # outstanding acks per client
    nodes: int = 1
    cluster: bool = False  # Redis broker + PostgreSQL store (else memory broker + SQLite)
    warmup: float = 5.0
    seconds: float = 20.0
    drain: float = 10.0

    @property
    def connections(self) -> int:
        return 2 * self.rooms


FULL: list[Scenario] = [
    Scenario("S1", "menteo", "100 rooms, 1 msg/s per client", 100),
    Scenario("S1-peer", "socketio", "S1 on python-socketio + Redis", 100),
    Scenario("S2", "menteo", "1,000 rooms, 1 msg/s per client, SQLite", 1000),
    Scenario("S2-peer", "socketio", "S2 on python-socketio + Redis", 1000),
    Scenario("S2-bare", "bare", "S2 on a bare websockets fan-out (no store)", 1000),
    Scenario(
        "S3",
        "menteo",
        "S2 on two nodes, Redis + PostgreSQL",
        1000,
        nodes=2,
        cluster=True,
    ),
    Scenario("S4", "menteo", "50 rooms saturating, window 10", 50, mode="saturate"),
    Scenario("S4-peer", "socketio", "S4 on python-socketio + Redis", 50, mode="saturate"),
    Scenario("S4-bare", "bare", "S4 on a bare websockets fan-out", 50, mode="saturate"),
    Scenario(
        "S5",
        "menteo",
        "10,000 idle connections",
        5000,
        mode="idle",
        warmup=3.0,
        seconds=5.0,
    ),
]


def smoke(s: Scenario) -> Scenario:
    """A tiny version of ``s``: a few rooms for a couple of seconds."""
    rooms = 50 if s.mode == "idle" else 5
    return dataclasses.replace(
        s,
        rooms=rooms,
        warmup=0.5,
        seconds=1.0 if s.mode == "idle" else 2.0,
        drain=5.0,
    )


def by_name() -> dict[str, Scenario]:
    return {s.name.upper(): s for s in FULL}
