"""Loopback ports for tests that run beside others (pytest-xdist workers share the machine).

    from support.ports import refused_port, unclaimed_port

- `refused_port()`: a block holding a port bound but not listening, so connections to it are
  refused and no other process can take it meanwhile (unlike a port bound and closed at once).
- `unclaimed_port()`: a free port for a server process that binds it itself, taken outside the
  kernel's ephemeral range, which every `bind(("127.0.0.1", 0))` and outgoing connection of the
  other workers draws from; such a port stays free until the server binds it.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default ip_local_port_range; used where /proc does not say.
DEFAULT_EPHEMERAL = (32768, 60999)
# Below this: well-known and commonly configured service ports.
LOWEST = 10_000


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port on which connections are refused, reserved until the block ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))  # bound, never listening: a SYN to it is answered RST
        port: int = held.getsockname()[1]
        yield port


def _ephemeral() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def unclaimed_port() -> int:
    """A loopback port free now and outside the ephemeral range, for a server to bind."""
    low, high = _ephemeral()
    candidates = [p for p in range(LOWEST, 65536) if not low <= p <= high]
    for port in random.sample(candidates, 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port outside the ephemeral range")
