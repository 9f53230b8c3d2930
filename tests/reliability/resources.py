"""What the reliability tests measure: a process's resources, and their figures."""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time

from pathlib import Path
from typing import Any


LONG = os.environ.get("PROMLOOP_RELIABILITY", "").lower() == "long"
"""The long form, run by hand: ``PROMLOOP_RELIABILITY=long pytest -m reliability``."""


def scaled(short: float, long: float) -> Any:
    """Return *long* in the long form, *short* otherwise (keeping the type)."""
    return long if LONG else short


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure of one test."""

    test: str
    name: str
    value: float
    unit: str
    context: dict[str, Any]

    def line(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        extra = "".join(f", {k}={v}" for k, v in self.context.items())
        return f"{self.test.split('::', 1)[-1]}: {self.name} = {value} {self.unit}{extra}".rstrip()

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc/self")


@dataclasses.dataclass(frozen=True)
class Resources:
    """What a process holds: file descriptors, OS threads, resident memory."""

    fds: int
    threads: int
    rss: int

    @classmethod
    def now(cls) -> Resources:
        gc.collect()
        resident_pages = int(_PROC.joinpath("statm").read_text().split()[1])
        return cls(
            fds=sum(1 for _ in _PROC.joinpath("fd").iterdir()),
            threads=sum(1 for _ in _PROC.joinpath("task").iterdir()),
            rss=resident_pages * _PAGE,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.fds - other.fds, self.threads - other.threads, self.rss - other.rss)


def steady(timeout: float = 5.0) -> Resources:
    """Measure until two readings 0.1 s apart hold the same descriptors and threads.

    A baseline taken while the last warm-up cycle's thread or socket is still
    going away would make the measured cycles look like they freed something.
    """
    deadline = time.monotonic() + timeout
    previous = Resources.now()
    while True:
        time.sleep(0.1)
        now = Resources.now()
        if (now.fds, now.threads) == (previous.fds, previous.threads) or (
            time.monotonic() > deadline
        ):
            return now
        previous = now


def settled(baseline: Resources, timeout: float = 5.0) -> Resources:
    """Measure again until threads and descriptors are back to *baseline*, or *timeout* passes.

    Threads and sockets end shortly after a close() returns (a daemon thread
    finishes its loop's shutdown); this waits for that, and no longer.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = Resources.now()
        if (now.fds <= baseline.fds and now.threads <= baseline.threads) or (
            time.monotonic() > deadline
        ):
            return now
        time.sleep(0.05)


def python_threads() -> list[str]:
    """Name the Python threads alive now (for a message when one leaks)."""
    return sorted(thread.name for thread in threading.enumerate())
