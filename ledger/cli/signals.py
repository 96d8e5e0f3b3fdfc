"""SIGTERM and SIGINT for the long-running service commands, from the first instant.

A service asked to stop while it is still importing or connecting must exit 0 like one
asked later, not die of the signal. The console script holds these signals for a service
command before importing anything heavy (`hold`); the service takes them over once it can
stop cleanly (`hand_over`), and receives any that came in between.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_pending: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def hold() -> None:
    for signum in _SIGNALS:
        signal.signal(signum, _remember)


def hand_over(stop: Callable[[int, FrameType | None], None]) -> None:
    for signum in _SIGNALS:
        signal.signal(signum, stop)
    while _pending:
        stop(_pending.pop(0), None)
