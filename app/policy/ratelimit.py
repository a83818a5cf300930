"""Per-user limits on job starts: a token bucket per user. Pure code with an injected clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``per_minute`` starts a minute per key, with bursts up to ``burst``."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self._forget_full_buckets(now)
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full_buckets(self, now: float) -> None:
        # Bounded memory: a bucket that has refilled completely carries no state worth keeping.
        if len(self._buckets) < 1024:
            return
        refill = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1, for a Retry-After header."""
    return str(max(1, math.ceil(seconds)))
