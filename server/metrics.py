"""Prometheus metrics for one node, in a registry of the app's own (two apps in one process
do not collide). Served as text by ``GET /metrics``."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rooms.metrics import Metrics

CONTENT_TYPE = CONTENT_TYPE_LATEST

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Tally:
    """A histogram kept as plain numbers: ``observe`` is a bisect and two additions, without
    the lock and the per-bucket loop of ``prometheus_client``'s (taken on every chat)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str, node: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["node"])
        cumulative, buckets = 0, []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += count
            buckets.append(
                ("+Inf" if bound == float("inf") else repr(float(bound)), float(cumulative))
            )
        family.add_metric([node], buckets, self.total)
        return family


class PerFrame:
    """The counts taken for every frame, exported when scraped. Plain numbers: only the event
    loop's thread changes them, and ``prometheus_client``'s locked counters were 3 % of its
    time under S2."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.frames_in = 0
        self.frames_out = 0
        self.ack = Tally(ACK_BUCKETS)
        self.batch = Tally(BATCH_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        for name, documentation, value in (
            ("menteo_frames_in", "Client frames received after the hello", self.frames_in),
            ("menteo_frames_out", "Frames written to client sockets", self.frames_out),
        ):
            family = CounterMetricFamily(name, documentation, labels=["node"])
            family.add_metric([self.node], value)
            yield family
        yield self.ack.family(
            "menteo_ack_latency_seconds", "From a chat's arrival to its ack (committed)", self.node
        )
        yield self.batch.family("menteo_commit_batch_size", "Writes per store commit", self.node)


class PrometheusMetrics(Metrics):
    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r, labels = self.registry, ["node"]
        self._connections = Gauge(
            "menteo_live_connections", "Live WebSocket connections on this node", labels,
            registry=r,
        ).labels(node)  # fmt: skip
        self._rooms = Gauge(
            "menteo_live_rooms", "Rooms held live on this node", labels, registry=r
        ).labels(node)
        self._per_frame = PerFrame(node)
        r.register(self._per_frame)
        self._broker_errors = Counter(
            "menteo_broker_errors", "Failed broker calls", labels, registry=r
        ).labels(node)
        self._store_errors = Counter(
            "menteo_store_errors", "Failed store writes and commit attempts", labels, registry=r
        ).labels(node)
        closes = Counter(
            "menteo_closes", "Connections the server closed, by reason", [*labels, "reason"],
            registry=r,
        )  # fmt: skip
        self._slow = closes.labels(node, "slow_consumer")  # close code 1013
        self._flood = closes.labels(node, "rate_limit")  # close code 4429

    def live(self, connections: Callable[[], int], rooms: Callable[[], int]) -> None:
        self._connections.set_function(connections)
        self._rooms.set_function(rooms)

    def frame_in(self) -> None:
        self._per_frame.frames_in += 1

    def frame_out(self, count: int = 1) -> None:
        self._per_frame.frames_out += count

    def ack_latency(self, seconds: float) -> None:
        self._per_frame.ack.observe(seconds)

    def commit_batch(self, size: int) -> None:
        self._per_frame.batch.observe(size)

    def broker_error(self) -> None:
        self._broker_errors.inc()

    def store_error(self) -> None:
        self._store_errors.inc()

    def slow_consumer_close(self) -> None:
        self._slow.inc()

    def rate_limit_close(self) -> None:
        self._flood.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
