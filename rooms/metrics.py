"""What a node counts. This base class counts nothing (unit tests and tools need no registry);
``server.metrics.PrometheusMetrics`` exports the same calls in Prometheus' text format."""

from __future__ import annotations

from collections.abc import Callable


class Metrics:
    def live(self, connections: Callable[[], int], rooms: Callable[[], int]) -> None:
        """Read the live connection and room counts from these functions when scraped."""

    def frame_in(self) -> None:
        """A client frame after the hello reached the hub."""

    def frame_out(self, count: int = 1) -> None:
        """Frames were written to a client's socket."""

    def ack_latency(self, seconds: float) -> None:
        """From a chat's arrival to its ack (seq allocated and the event committed)."""

    def commit_batch(self, size: int) -> None:
        """The writer committed one batch of ``size`` writes."""

    def broker_error(self) -> None:
        """A broker call failed."""

    def store_error(self) -> None:
        """A store write (or commit attempt) failed."""

    def slow_consumer_close(self) -> None:
        """A connection was closed 1013 because its outbox overflowed."""

    def rate_limit_close(self) -> None:
        """A connection was closed 4429 for flooding."""
