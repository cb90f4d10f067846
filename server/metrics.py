"""Prometheus metrics for one node, in a registry of the app's own (two apps in one process
do not collide). Served as text by ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rooms.metrics import Metrics

CONTENT_TYPE = CONTENT_TYPE_LATEST

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


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
        self._frames_in = Counter(
            "menteo_frames_in", "Client frames received after the hello", labels, registry=r
        ).labels(node)
        self._frames_out = Counter(
            "menteo_frames_out", "Frames written to client sockets", labels, registry=r
        ).labels(node)
        self._ack = Histogram(
            "menteo_ack_latency_seconds", "From a chat's arrival to its ack (committed)",
            labels, registry=r, buckets=ACK_BUCKETS,
        ).labels(node)  # fmt: skip
        self._batch = Histogram(
            "menteo_commit_batch_size", "Writes per store commit", labels, registry=r,
            buckets=BATCH_BUCKETS,
        ).labels(node)  # fmt: skip
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
        self._frames_in.inc()

    def frame_out(self, count: int = 1) -> None:
        self._frames_out.inc(count)

    def ack_latency(self, seconds: float) -> None:
        self._ack.observe(seconds)

    def commit_batch(self, size: int) -> None:
        self._batch.observe(size)

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
