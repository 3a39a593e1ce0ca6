"""Failed authentication counted per client address in a sliding window: 429 past the limit.

A client address that sent `limit` bad credentials within `window` seconds has its failing
requests answered 429 (with Retry-After: when its oldest failure leaves the window) until then;
valid credentials from the same address are still served, so one bad client behind a NAT or a
proxy cannot lock the others out. The tokens themselves are not guessable (signed JWTs, static
tokens of 32+ random characters); the throttle keeps a failing client from flooding the server
and its audit trail. In-process: each server process counts on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

# Addresses whose failures are all outside the window are forgotten past this many entries.
MAX_TRACKED = 10_000


class FailureThrottle:
    """Sliding-window counts of failed authentications per client address."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait, or None when it may try."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, client: str) -> None:
        """Count one failed authentication of `client`."""
        with self._lock:
            now = self.clock()
            if len(self._failures) >= MAX_TRACKED:
                for key in list(self._failures):
                    self._recent(key, now)
            times = self._recent(client, now)
            if times is None:
                times = self._failures[client] = deque()
            times.append(now)
