"""Rendering alone: promloop's streaming renderer beside prometheus_client's generate_latest().

Run:  python benchmarks/bench_render.py

Three registries of 50k series each, rendered in the text format by both, in
turns, in this one process; the table gives the median of seven renders and
the ratio.  promloop's figure includes its pauses for the GIL (one sleep(0)
per millisecond of work).  Both outputs are checked to be the same bytes.
"""

from __future__ import annotations

import statistics
import sys
import time

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from promloop._render import render


if TYPE_CHECKING:
    from collections.abc import Callable


def one_gauge() -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("bench_series", "One series per label value.", ["id"], registry=registry)
    for i in range(50_000):
        gauge.labels(str(i)).set(i)
    return registry


def many_counters() -> CollectorRegistry:
    registry = CollectorRegistry()
    for family in range(500):
        counter = Counter(f"bench_c{family}", "A counter.", ["id"], registry=registry)
        for i in range(100):
            counter.labels(str(i)).inc(i)
    return registry


def histograms() -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = Histogram("bench_seconds", "A histogram.", ["route", "method"], registry=registry)
    for i in range(50_000 // 17):  # 14 buckets, count, sum and created: 17 series a child
        histogram.labels(f"/route/{i}", "GET").observe(i / 1000)
    return registry


def medians_ms(*actions: Callable[[], object], times: int = 7) -> list[float]:
    """Time the actions in turns, *times* rounds; return each one's median, in ms."""
    samples: list[list[float]] = [[] for _ in actions]
    for _ in range(times):
        for action, taken in zip(actions, samples, strict=True):
            started = time.perf_counter()
            action()
            taken.append(time.perf_counter() - started)
    return [statistics.median(taken) * 1000 for taken in samples]


def main() -> None:
    print(f"Python {sys.version.split()[0]}; text format, 50k series, median of 7 renders")
    print(f"{'registry':32} {'prometheus_client':>18} {'promloop':>10} {'ratio':>7}")
    for name, build in (
        ("one gauge, 50k children", one_gauge),
        ("500 counters, 100 children each", many_counters),
        ("one histogram, 2941 children", histograms),
    ):
        registry = build()

        def ours(registry: CollectorRegistry = registry) -> bytes:
            return render(registry, openmetrics=False, escaping="underscores")

        def theirs(registry: CollectorRegistry = registry) -> bytes:
            return generate_latest(registry)

        if ours() != theirs():
            raise SystemExit(f"{name}: promloop and prometheus_client differ")
        client, promloop = medians_ms(theirs, ours)
        print(f"{name:32} {client:15.0f} ms {promloop:7.0f} ms {client / promloop:6.1f}x")


if __name__ == "__main__":
    main()
