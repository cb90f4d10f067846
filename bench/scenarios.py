"""The scenarios of issue 5 (and J1, the journey at size of issue 9, and S6, the notes path of
issue 11), and their tiny versions for ``--smoke``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class JourneySize:
    """J1's sizes (issue 9): one big pair beside many small ones, and how much to measure."""

    big_sessions: int = 200
    big_chats: int = 500
    other_pairs: int = 1000
    other_sessions: int = 10
    other_chats: int = 100
    open_items: int = 100  # the big pair's open items at the end of the load
    queries: int = 300
    journeys: int = 10  # journey requests of each format
    welcomes_warm: int = 200
    welcomes_cold: int = 50
    grace: float = 0.5  # MENTEO_SESSION_GRACE: how soon an empty room is dropped (cold joins)
    seed: int = 9

    @property
    def chats(self) -> int:
        return self.big_sessions * self.big_chats + (
            self.other_pairs * self.other_sessions * self.other_chats
        )


JOURNEY_FULL = JourneySize()
JOURNEY_SMOKE = JourneySize(
    big_sessions=4,
    big_chats=40,
    other_pairs=20,
    other_sessions=2,
    other_chats=20,
    open_items=10,
    queries=25,
    journeys=2,
    welcomes_warm=15,  # past the join limit's burst (12): the smoke test sees J1 is exempt
    welcomes_cold=2,
    grace=0.3,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # "menteo" | "socketio" (the peer) | "node" (the JS peer) | "bare" (the ceiling)
    title: str
    rooms: int
    # "rate" | "saturate" | "idle" | "journey" (J1: bench/journey.py) | "notes" (S6: notes
    # updates instead of chats, at ``rate`` per client: bench/notes_load.py)
    mode: str = "rate"
    rate: float = 1.0  # chats/s per client (notes updates/s per client in mode "notes")
    window: int = 10  # outstanding acks per client
    nodes: int = 1
    cluster: bool = False  # Redis broker + PostgreSQL store (else memory broker + SQLite)
    warmup: float = 5.0
    seconds: float = 20.0
    drain: float = 10.0
    journey: JourneySize | None = None  # J1's sizes (mode "journey")
    deflate: bool = False  # clients offer permessage-deflate, as browsers do

    @property
    def connections(self) -> int:
        return 2 * self.rooms


FULL: list[Scenario] = [
    Scenario("S1", "menteo", "100 rooms, 1 msg/s per client", 100),
    Scenario("S1-peer", "socketio", "S1 on python-socketio + Redis", 100),
    Scenario("S2", "menteo", "1,000 rooms, 1 msg/s per client, SQLite", 1000),
    Scenario("S2-peer", "socketio", "S2 on python-socketio + Redis", 1000),
    Scenario("S2-node", "node", "S2 on Node.js Socket.IO + Redis adapter", 1000),
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
    Scenario("S4-node", "node", "S4 on Node.js Socket.IO + Redis adapter", 50, mode="saturate"),
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
    Scenario(
        "S5-deflate",
        "menteo",
        "S5 with clients offering permessage-deflate",
        5000,
        mode="idle",
        warmup=3.0,
        seconds=5.0,
        deflate=True,
    ),
    # S6 (issue 11), the notes path: both members of each room type in the shared notes, 5 Yjs
    # updates/s each (one small edit per update, as an editor sends them; pre-generated before
    # the connections open). Every update must be relayed to the other member (relay latency
    # p50-p99, target p99 <= 20 ms; lost, dup) and stored: after the drain, every room's
    # transcript `notes` (computed by the server from its stored update rows while the session
    # is live) must equal the text of all the updates both members sent, and the text each
    # member's document converged to. Server CPU and RSS as for S2. See bench/notes_load.py.
    Scenario(
        "S6",
        "menteo",
        "500 rooms typing in the notes, 5 Yjs updates/s per client, SQLite",
        500,
        mode="notes",
        rate=5.0,
    ),
    Scenario(
        "J1",
        "menteo",
        "journey at size: search, journey, welcome over 1.1 M chats, SQLite",
        1,
        mode="journey",
        journey=JOURNEY_FULL,
    ),
]


def smoke(s: Scenario) -> Scenario:
    """A tiny version of ``s``: a few rooms for a couple of seconds."""
    if s.mode == "journey":
        return dataclasses.replace(s, journey=JOURNEY_SMOKE)
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
