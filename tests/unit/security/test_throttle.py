"""The failed-authentication throttle: a sliding window per client address."""

from __future__ import annotations

from fhir_app.api.security.throttle import FailureThrottle


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_within_the_window_throttles_until_the_oldest_failure_leaves() -> None:
    clock = Clock()
    throttle = FailureThrottle(limit=3, window=60, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")  # failures at 1000, 1010, 1020
    assert throttle.retry_after("10.0.0.1") == 40  # the one at 1000 leaves at 1060
    assert throttle.retry_after("10.0.0.2") is None  # per client
    clock.now = 1060
    assert throttle.retry_after("10.0.0.1") is None  # sliding: two left in the window
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 10  # the one at 1010 leaves at 1070
    clock.now = 2000
    assert throttle.retry_after("10.0.0.1") is None
