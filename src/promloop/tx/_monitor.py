"""How late the reactor runs what it was asked to run: ``monitor_reactor()``."""

from __future__ import annotations

from typing import Any

from .._lag import lag_histogram, unregister


__all__ = ["ReactorMonitor", "monitor_reactor"]


class ReactorMonitor:
    """A running reactor monitor; :func:`monitor_reactor` returns it."""

    def __init__(self, reactor: Any, registry: Any, interval: float) -> None:
        self._reactor = reactor
        self._registry = registry
        self._interval = interval
        self._histogram = lag_histogram(
            "monitor_reactor()",
            "promloop_reactor_lag_seconds",
            "How late the Twisted reactor ran a call scheduled for a given time.",
            registry,
            interval,
        )
        self._due = reactor.seconds() + interval
        self._call = reactor.callLater(interval, self._tick)

    def _tick(self) -> None:
        now = self._reactor.seconds()
        self._histogram.observe(max(0.0, now - self._due))
        self._due = now + self._interval
        self._call = self._reactor.callLater(self._interval, self._tick)

    @property
    def running(self) -> bool:
        """Whether the monitor still observes."""
        return bool(self._call.active())

    def stop(self) -> None:
        """Stop observing, and remove the histogram from the registry.

        Call it in the reactor's thread (or with ``reactor.callFromThread``);
        calling it again does nothing.
        """
        if self._call.active():
            self._call.cancel()
            unregister(self._registry, self._histogram)


def monitor_reactor(
    *, registry: Any = None, interval: float = 0.1, reactor: Any = None
) -> ReactorMonitor:
    """Measure how late the Twisted reactor is, in a histogram.

    Every *interval* seconds a call is scheduled with ``callLater``; how late
    the reactor runs it is observed in ``promloop_reactor_lag_seconds``.  A
    reactor that something blocks shows as lag.

    Args:
        registry: Where the histogram goes; the global ``REGISTRY`` by default.
        interval: Seconds between two observations.
        reactor: The reactor to watch; the global one by default (imported
            only then).

    Returns:
        The running monitor; its ``stop()`` ends it.

    Raises:
        ValueError: *interval* is not positive, or the registry already has
            the histogram (another monitor is running).

    .. versionadded:: 26.0.0
    """
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415 -- installs it: only when needed
    return ReactorMonitor(reactor, registry, interval)
