"""The broker's clock: one object that partitions, the group coordinator and retention read
time from, so that a test can drive time instead of waiting for it."""

from __future__ import annotations

import time

import trio

from tidelog.storage.api import wall_clock_ms


class Clock:
    """Monotonic seconds for timeouts and intervals (session timeouts, the flush interval)
    and wall-clock milliseconds for what is stored (timestamps, retention, offset expiry).
    Both are safe to read from worker threads."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return wall_clock_ms()

    def move_on_at(self, deadline: float) -> trio.CancelScope:
        """A cancel scope ending at ``deadline`` on this clock (``monotonic``), which is not
        Trio's: a deadline from it must never be given to ``trio.move_on_at`` directly."""
        return trio.move_on_after(max(0.0, deadline - self.monotonic()))


class ManualClock(Clock):
    """The system clock moved forward by ``advance`` (for tests): both readings jump together,
    and the broker's periodic tasks see the jump at their next tick."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall_ms(self) -> int:
        return wall_clock_ms() + int(self.offset * 1000)
