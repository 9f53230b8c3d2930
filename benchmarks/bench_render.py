"""Rendering alone, 1k to 1M series: promloop's renderer beside prometheus_client's.

Run:  python benchmarks/bench_render.py [--quick] [--json FILE]

For each registry shape and size, a fresh process builds the registry, then
renders it in rounds; in each round prometheus_client and promloop render
the text format and OpenMetrics in turns, as each one's servers do:
prometheus_client's ``generate_latest()``, then for "+ gzip" the same bytes
through ``gzip.compress()`` at its default level, 9; promloop's renderer
(its output in pieces, as its servers take it), then for "+ gzip" a render
compressed a piece at a time at level 1.  Both write the same bytes: the
script checks, once per process.

Figures are the CPU time of the process (``time.process_time()``): the
server's cost per exposition, without the pauses promloop's renderer makes
to hand the GIL to the event loop, and less disturbed by other processes
than wall time on a shared machine.  Series are sample lines of the text
format (a counter's ``_total`` and ``_created`` are two).  At 1M series
there are two rounds instead of seven (prometheus_client takes ten to
twenty seconds a round there).

Memory, measured with tracemalloc after the timed rounds: the line heads
promloop keeps on each child (built by the first render, released with the
child), and the peak of what one render allocates beyond the registry, for
both (prometheus_client's only up to 100k series: traced, its render of 1M
takes minutes).  The first render's time (when promloop builds the heads)
is reported too.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import statistics
import subprocess
import sys
import time
import tracemalloc

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from promloop._exposition import GZIP_LEVEL, gzipped
from promloop._render import render, render_pieces
from promloop._render.families import HEADS_ATTRIBUTE


if TYPE_CHECKING:
    from collections.abc import Callable


SIZES = (1_000, 10_000, 100_000, 1_000_000)
LARGE = 1_000_000
"""From this size on: two rounds, and prometheus_client's memory is not traced."""
CLIENT_GZIP_LEVEL = 9  # gzip.compress()'s default, which prometheus_client's servers use
SHAPES = {
    "gauge": "one gauge, a series per child",
    "counters": "counters of 100 children, 2 series a child",
    "histograms": "one histogram, 18 series a child",
}


def one_gauge(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("bench_series", "One series per label value.", ["id"], registry=registry)
    for i in range(series):
        gauge.labels(str(i)).set(i)
    return registry


def counters(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    for family in range(max(1, series // 200)):  # _total and _created: two series a child
        counter = Counter(f"bench_c{family}", "A counter.", ["id"], registry=registry)
        for i in range(100):
            counter.labels(str(i)).inc(i)
    return registry


def histograms(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = Histogram("bench_seconds", "A histogram.", ["route", "method"], registry=registry)
    for i in range(max(1, series // 18)):  # 15 buckets, count, sum and created
        histogram.labels(f"/route/{i}", "GET").observe(i / 1000)
    return registry


BUILDERS: dict[str, Callable[[int], CollectorRegistry]] = {
    "gauge": one_gauge,
    "counters": counters,
    "histograms": histograms,
}


def cpu(action: Callable[[], Any]) -> tuple[float, Any]:
    """Run *action*; return the CPU seconds it took and what it returned."""
    started = time.process_time()
    result = action()
    return time.process_time() - started, result


def forget_heads(registry: CollectorRegistry) -> None:
    """Drop the heads promloop keeps on each child, as if never rendered."""
    for collector in list(registry._collector_to_names):  # noqa: SLF001
        for child in [collector, *getattr(collector, "_metrics", {}).values()]:
            if hasattr(child, HEADS_ATTRIBUTE):
                delattr(child, HEADS_ATTRIBUTE)


def traced(action: Callable[[], Any]) -> tuple[int, int]:
    """Return the peak allocated by *action* beyond what was there, and what it left."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = action()
    peak = tracemalloc.get_traced_memory()[1] - before
    del result
    gc.collect()
    return peak, tracemalloc.get_traced_memory()[0] - before


def measure(shape: str, size: int, rounds: int) -> dict[str, Any]:
    """In this process: build one registry and measure everything on it."""
    checked, _ = cpu(lambda: render(CollectorRegistry(), openmetrics=False, escaping="underscores"))
    registry = BUILDERS[shape](size)

    def ours(openmetrics: bool) -> Callable[[], list[bytes]]:
        return lambda: render_pieces(registry, openmetrics=openmetrics, escaping="underscores")

    theirs = {
        False: lambda: generate_latest(registry),
        True: lambda: generate_openmetrics(registry),
    }
    result: dict[str, Any] = {"shape": shape, "self_check_s": checked}
    first, pieces = cpu(ours(False))
    result["first_render_s"] = first
    text = b"".join(pieces)
    del pieces
    if text != theirs[False]() or b"".join(ours(True)()) != theirs[True]():
        raise SystemExit(f"{shape}, {size}: promloop and prometheus_client differ")
    result["series"] = sum(1 for line in text.splitlines() if not line.startswith(b"#"))
    result["bytes"] = {
        "text": len(text),
        f"text gzip {CLIENT_GZIP_LEVEL}": len(gzip.compress(text, CLIENT_GZIP_LEVEL)),
        f"text gzip {GZIP_LEVEL}": len(b"".join(gzipped([text]))),
    }
    del text
    times: dict[str, dict[str, list[float]]] = {
        variant: {"prometheus_client": [], "promloop": []}
        for variant in ("text", "openmetrics", "text + gzip", "openmetrics + gzip")
    }
    for _ in range(rounds):
        for openmetrics, name in ((False, "text"), (True, "openmetrics")):
            theirs_s, data = cpu(theirs[openmetrics])
            theirs_gz, _ = cpu(lambda data=data: gzip.compress(data, CLIENT_GZIP_LEVEL))
            del data
            ours_s, _ = cpu(ours(openmetrics))
            ours_gz, _ = cpu(lambda openmetrics=openmetrics: gzipped(ours(openmetrics)()))
            times[name]["prometheus_client"].append(theirs_s)
            times[name]["promloop"].append(ours_s)
            times[f"{name} + gzip"]["prometheus_client"].append(theirs_s + theirs_gz)
            times[f"{name} + gzip"]["promloop"].append(ours_gz)
    result["cpu_s"] = times

    forget_heads(registry)
    tracemalloc.start()
    try:
        _, result["heads_bytes"] = traced(ours(False))
        result["peak_bytes"] = {
            "promloop text": traced(ours(False))[0],
            "promloop openmetrics": traced(ours(True))[0],
        }
        if size < LARGE:
            result["peak_bytes"]["prometheus_client text"] = traced(theirs[False])[0]
            result["peak_bytes"]["prometheus_client openmetrics"] = traced(theirs[True])[0]
    finally:
        tracemalloc.stop()
    return result


def run_child(shape: str, size: int, rounds: int) -> dict[str, Any]:
    """Measure one shape and size in a fresh process."""
    ran = subprocess.run(  # noqa: S603 -- this very script, with arguments it made
        [sys.executable, __file__, "--child", shape, str(size), str(rounds)],
        capture_output=True,
        check=True,
        text=True,
    )
    return json.loads(ran.stdout)  # type: ignore[no-any-return]


def report(results: dict[str, dict[int, dict[str, Any]]], rounds: dict[int, int]) -> None:
    print(f"Python {sys.version.split()[0]}; CPU time per exposition, best and median of rounds")
    for shape, by_size in results.items():
        print(f"\n{SHAPES[shape]}")
        print(
            f"{'series':>9} {'rounds':>6} {'format':20}"
            f" {'prometheus_client ms':>21} {'promloop ms':>14} {'ratio':>12}"
            f" {'µs/series':>16}"
        )
        for size, result in by_size.items():
            for variant, taken in result["cpu_s"].items():
                theirs, ours = taken["prometheus_client"], taken["promloop"]
                best = (min(theirs), min(ours))
                median = (statistics.median(theirs), statistics.median(ours))
                per_series = [t / result["series"] * 1e6 for t in best]
                print(
                    f"{result['series']:>9} {rounds[size]:>6} {variant:20}"
                    f" {best[0] * 1000:9.1f} ({median[0] * 1000:8.1f})"
                    f" {best[1] * 1000:5.1f} ({median[1] * 1000:6.1f})"
                    f" {best[0] / best[1]:5.1f}x ({median[0] / median[1]:4.1f})"
                    f" {per_series[0]:7.2f} {per_series[1]:7.3f}"
                )
    print(
        "\nMemory per series (tracemalloc): heads promloop keeps, and the peak one render"
        " allocates;\nthe first render's CPU time (building the heads), and the output's size"
    )
    print(
        f"{'shape':11} {'series':>9} {'heads B':>8} {'peak text B':>12} {'(client)':>9}"
        f" {'peak OM B':>10} {'(client)':>9} {'first µs':>9} {'text B':>7} {'gz1 B':>6}"
    )
    for shape, by_size in results.items():
        for result in by_size.values():
            n = result["series"]
            peaks = {key: f"{value / n:.0f}" for key, value in result["peak_bytes"].items()}
            print(
                f"{shape:11} {n:>9} {result['heads_bytes'] / n:8.0f}"
                f" {peaks['promloop text']:>12} {peaks.get('prometheus_client text', '-'):>9}"
                f" {peaks['promloop openmetrics']:>10}"
                f" {peaks.get('prometheus_client openmetrics', '-'):>9}"
                f" {result['first_render_s'] / n * 1e6:9.2f}"
                f" {result['bytes']['text'] / n:7.1f}"
                f" {result['bytes'][f'text gzip {GZIP_LEVEL}'] / n:6.1f}"
            )
    print(
        "\nScaling, promloop's text format: CPU µs per series (best round) and peak bytes per"
        " series, by size;\nin parentheses the highest divided by the lowest from 10k series on"
        " (1.00: exactly linear;\nbelow 10k, a render's fixed costs weigh on each series)"
    )
    for shape, by_size in results.items():
        times = [min(r["cpu_s"]["text"]["promloop"]) / r["series"] * 1e6 for r in by_size.values()]
        peaks = [r["peak_bytes"]["promloop text"] / r["series"] for r in by_size.values()]
        large = [n >= 10_000 for n in by_size]
        print(
            f"{shape:11} µs "
            + " ".join(f"{t:6.3f}" for t in times)
            + f"  ({_spread(times, large)});  B "
            + " ".join(f"{p:5.0f}" for p in peaks)
            + f"  ({_spread(peaks, large)})"
        )


def _spread(figures: list[float], kept: list[bool]) -> str:
    chosen = [figure for figure, keep in zip(figures, kept, strict=True) if keep]
    return f"{max(chosen) / min(chosen):.2f}" if chosen else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k series only")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--report", help="print the report of results written by --json, again")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        shape, size, rounds = options.child
        print(json.dumps(measure(shape, int(size), int(rounds))))
        return
    sizes = SIZES[:2] if options.quick else SIZES
    results: dict[str, dict[int, dict[str, Any]]] = {}
    if options.report:
        with open(options.report) as file:  # noqa: PTH123
            stored = json.load(file)
        results = {shape: {int(n): r for n, r in by.items()} for shape, by in stored.items()}
        sizes = tuple(next(iter(results.values())))
    rounds = {size: 2 if size >= LARGE else 7 for size in sizes}
    for shape in () if options.report else SHAPES:
        for size in sizes:
            results.setdefault(shape, {})[size] = run_child(shape, size, rounds[size])
            print(f"measured {shape} at {size}", file=sys.stderr, flush=True)
    report(results, rounds)
    checks = [r["self_check_s"] for by_size in results.values() for r in by_size.values()]
    print(
        f"\npromloop's self-check, once per process before its first render:"
        f" {statistics.median(checks) * 1000:.0f} ms of CPU (median of {len(checks)} processes)"
    )
    if options.json:
        with open(options.json, "w") as file:  # noqa: PTH123
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
