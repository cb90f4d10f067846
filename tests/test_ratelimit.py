"""rooms.ratelimit.TokenBucket: a member's frame budget, with a fake clock."""

from __future__ import annotations

import pytest

from rooms.ratelimit import TokenBucket


def test_bucket_allows_a_burst_of_twice_the_rate() -> None:
    bucket = TokenBucket(5, now=100.0)
    assert [bucket.take(100.0) for _ in range(10)] == ["ok"] * 10
    assert bucket.take(100.0) == "limited"


def test_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(5, now=0.0)
    for _ in range(10):
        assert bucket.take(0.0) == "ok"
    assert bucket.take(0.0) == "limited"
    assert bucket.take(0.1) == "limited"  # half a token
    assert bucket.take(0.2) == "ok"  # one token after 0.2 s at 5/s
    assert bucket.take(0.2) == "limited"
    # a long pause refills only up to the burst
    assert [bucket.take(60.0) for _ in range(11)] == ["ok"] * 10 + ["limited"]


def test_bucket_flood_after_another_burst_of_refusals() -> None:
    bucket = TokenBucket(2, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == ["ok"] * 4
    verdicts = [bucket.take(0.0) for _ in range(5)]
    assert verdicts == ["limited"] * 4 + ["flood"]


def test_bucket_forgives_after_an_accepted_frame() -> None:
    bucket = TokenBucket(2, now=0.0)
    for _ in range(4):
        bucket.take(0.0)
    assert [bucket.take(0.0) for _ in range(3)] == ["limited"] * 3
    assert bucket.take(0.5) == "ok"  # one token back; the refusal count starts over
    assert [bucket.take(0.5) for _ in range(4)] == ["limited"] * 4
    assert bucket.take(0.5) == "flood"


@pytest.mark.parametrize("rate", [0, -1])
def test_bucket_off(rate: float) -> None:
    bucket = TokenBucket(rate, now=0.0)
    assert all(bucket.take(0.0) == "ok" for _ in range(10_000))
