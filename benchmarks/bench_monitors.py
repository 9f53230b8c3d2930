"""Cost of one interval of monitor_event_loop() and monitor_reactor().

Run:  python benchmarks/bench_monitors.py

Each interval is one timer callback that reads the clock, observes a real
Histogram and schedules the next one.  This times that callback directly,
many times, next to a bare callback that only reschedules itself.
"""

from __future__ import annotations

import asyncio
import sys
import timeit

from prometheus_client import CollectorRegistry

from promloop import aio


NUMBER = 100_000


async def measure_asyncio() -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    monitor = aio.monitor_event_loop(registry=CollectorRegistry(), interval=3600)
    handles = []

    def bare() -> None:
        handles.append(loop.call_at(loop.time() + 3600, bare))

    bare_ns = min(timeit.repeat(bare, number=NUMBER, repeat=5)) / NUMBER * 1e9
    tick_ns = min(timeit.repeat(monitor._tick, number=NUMBER, repeat=5)) / NUMBER * 1e9  # noqa: SLF001
    monitor.stop()
    for handle in handles:
        handle.cancel()
    return bare_ns, tick_ns


def measure_twisted() -> tuple[float, float] | None:
    try:
        from twisted.internet import reactor

        from promloop import tx
    except ImportError:
        return None
    monitor = tx.monitor_reactor(registry=CollectorRegistry(), interval=3600)

    def bare() -> None:
        reactor.callLater(3600, bare)

    bare_ns = min(timeit.repeat(bare, number=NUMBER, repeat=5)) / NUMBER * 1e9
    tick_ns = min(timeit.repeat(monitor._tick, number=NUMBER, repeat=5)) / NUMBER * 1e9  # noqa: SLF001
    return bare_ns, tick_ns


def main() -> None:
    print(f"Python {sys.version.split()[0]}; ns per interval, fastest of 5 rounds")
    bare, tick = asyncio.run(measure_asyncio())
    print(f"monitor_event_loop: {tick:6.0f} ns (a bare rescheduling callback: {bare:.0f} ns)")
    twisted = measure_twisted()
    if twisted is not None:
        bare, tick = twisted
        print(f"monitor_reactor:    {tick:6.0f} ns (a bare rescheduling callback: {bare:.0f} ns)")
    print("at the default interval of 0.1 s, that is 10 callbacks a second")


if __name__ == "__main__":
    main()
