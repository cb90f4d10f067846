"""Per-connection token bucket, fed the time by its caller."""

from __future__ import annotations


class TokenBucket:
    """``rate`` frames per second with bursts of ``2 * rate``; ``rate <= 0`` allows all.

    ``take`` answers "ok", "limited" (drop the frame, warn once) or "flood" (the client kept
    sending for another whole burst after it was warned).
    """

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = 2 * rate if burst is None else burst
        self.tokens = self.burst
        self.stamp = now
        self.refused = 0

    def take(self, now: float) -> str:
        if self.rate <= 0:
            return "ok"
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = 0
            return "ok"
        self.refused += 1
        return "flood" if self.refused > self.burst else "limited"
