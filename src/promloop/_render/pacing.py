"""Pausing a render every few milliseconds, so that the event loop never waits long for the GIL."""

from __future__ import annotations

import time

from typing import Final


WORK_SECONDS: Final = 0.002
"""How long a render runs before it pauses: about the longest it keeps the GIL from the loop."""

PAUSE_SECONDS: Final = 0.0005
"""How long it pauses: long enough for a thread that waits for the GIL to take it.

A thread waiting for the GIL sleeps on a condition variable, and on a
virtual machine waking it takes up to a few hundred microseconds (its idle
virtual CPU must be woken first).  A shorter pause ends before: the render
takes the GIL back, and since the GIL changed hands, the waiter's 5 ms
timer starts over, so the interpreter never forces a switch either.  With
``time.sleep(0)`` (some 70 µs) every millisecond, an event loop beside a
render measured stalls of 30 to 57 ms (``benchmarks/bench_scrape.py``, a
million series); with 0.5 ms every 2 ms, under 10 ms, and the render takes
about a quarter longer in wall time, the same CPU time.
"""


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
