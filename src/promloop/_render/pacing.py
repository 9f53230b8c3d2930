"""Pausing a render every millisecond, so that the event loop never waits long for the GIL."""

from __future__ import annotations

import time

from typing import Final


WORK_SECONDS: Final = 0.001
"""How long a render runs before it pauses: the longest it keeps the GIL from the loop.

Measured at 50k series (``benchmarks/bench_scrape.py``): 1 ms keeps the
event loop's worst stall under 5 ms for ~15% more render time; 2 ms, under
7 ms for ~5%; without pauses the loop waits a full switch interval (5 ms)
for the GIL at nearly every wake-up, and twice as long at worst.
"""

PAUSE_SECONDS: Final = 0.0
"""``time.sleep(0)`` releases the GIL for the ~50 µs the kernel sleeps: time
enough for a thread waiting for it to take it."""


class Pacer:
    """Let other threads have the GIL every :data:`WORK_SECONDS` of rendering.

    A render calls its pacer between two small pieces of work (a batch of
    children, a slice of a family's list of children); the pacer sleeps only
    once a whole :data:`WORK_SECONDS` has passed since it last did.
    """

    def __init__(self) -> None:
        self._work = WORK_SECONDS
        self._pause = PAUSE_SECONDS
        self._mark = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self._mark >= self._work:
            time.sleep(self._pause)
            self._mark = time.perf_counter()
