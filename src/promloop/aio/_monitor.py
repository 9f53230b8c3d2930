"""How late the event loop runs what it was asked to run: ``monitor_event_loop()``."""

from __future__ import annotations

import asyncio
import threading

from typing import Any

from .._lag import lag_histogram, unregister


__all__ = ["EventLoopMonitor", "monitor_event_loop"]


class EventLoopMonitor:
    """A running event-loop monitor; :func:`monitor_event_loop` returns it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: Any, interval: float) -> None:
        self._loop = loop
        self._registry = registry
        self._interval = interval
        self._histogram = lag_histogram(
            "monitor_event_loop()",
            "promloop_event_loop_lag_seconds",
            "How late the event loop ran a callback scheduled for a given time.",
            registry,
            interval,
        )
        self._lock = threading.Lock()
        self._stopped = False
        self._due = loop.time() + interval
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        with self._lock:
            if self._stopped:
                return
            self._histogram.observe(max(0.0, now - self._due))
            self._due = now + self._interval
            self._handle = self._loop.call_at(self._due, self._tick)

    @property
    def running(self) -> bool:
        """Whether the monitor still observes."""
        return not self._stopped

    def stop(self) -> None:
        """Stop observing, and remove the histogram from the registry.

        Safe to call from any thread, and more than once.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            handle = self._handle
        unregister(self._registry, self._histogram)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(handle.cancel)


def monitor_event_loop(*, registry: Any = None, interval: float = 0.1) -> EventLoopMonitor:
    """Measure how late the running event loop is, in a histogram.

    Every *interval* seconds a callback is scheduled for a precise moment;
    how late the loop runs it is observed in
    ``promloop_event_loop_lag_seconds``.  A loop that something blocks (a
    synchronous call, a long computation) shows as lag.  The cost is one
    timer callback per interval.

    Call it from a coroutine (it monitors the running loop)::

        monitor = promloop.aio.monitor_event_loop()
        ...
        monitor.stop()

    Args:
        registry: Where the histogram goes; the global ``REGISTRY`` by default.
        interval: Seconds between two observations.

    Returns:
        The running monitor; its ``stop()`` ends it.

    Raises:
        RuntimeError: No event loop is running.
        ValueError: *interval* is not positive, or the registry already has
            the histogram (another monitor is running).

    .. versionadded:: 26.0.0
    """
    return EventLoopMonitor(asyncio.get_running_loop(), registry, interval)
