"""Load: many scrapers at once while the application changes its metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import sys
import threading
import time

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .resources import scaled


if TYPE_CHECKING:
    from collections.abc import Iterator


pytest.importorskip("aiohttp")

from promloop.aio.web import start_http_server


ROOT = Path(__file__).parent.parent.parent
SCRAPERS = 64
SECONDS = scaled(5.0, 120.0)
MUTATING_THREADS = 4
BASELINE_SECONDS = 2.0


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def busy_registry() -> tuple[CollectorRegistry, list]:
    registry = CollectorRegistry()
    requests = Counter("requests", "Requests.", ["route", "status"], registry=registry)
    latency = Histogram("latency_seconds", "Latency.", ["route"], registry=registry)
    in_flight = Gauge("in_flight", "In flight.", ["route"], registry=registry)
    routes = [f"/route/{n}" for n in range(40)]
    return registry, [requests, latency, in_flight, routes]


def mutate(metrics: list, stop: threading.Event, seed: int) -> int:
    """Change the metrics until *stop*; return how many changes were made."""
    requests, latency, in_flight, routes = metrics
    chooser = random.Random(seed)
    changes = 0
    while not stop.is_set():
        route = chooser.choice(routes)
        requests.labels(route, chooser.choice(("200", "404", "500"))).inc()
        latency.labels(route).observe(chooser.random())
        in_flight.labels(route).set(chooser.randint(0, 10))
        changes += 1
        if changes % 10 == 0:
            time.sleep(0.001)  # an application waits for I/O too: ~10k changes a second
    return changes


class FullCollections:
    """Count the garbage collector's full (generation 2) runs, and time the longest."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._started)


@contextlib.contextmanager
def full_collections() -> Iterator[FullCollections]:
    """Count the full garbage collections that happen in the block."""
    counter = FullCollections()
    gc.callbacks.append(counter)
    try:
        yield counter
    finally:
        gc.callbacks.remove(counter)


async def run_scrapers(port: int) -> dict:
    """Run SCRAPERS scrapers for SECONDS in a process of their own; return their summary."""
    scrapers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.scrapers",
        str(port),
        str(SCRAPERS),
        str(SECONDS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # The scrapers check their answers between rounds: that takes a while too.
        stdout, stderr = await asyncio.wait_for(scrapers.communicate(), 5 * SECONDS + 120)
    finally:
        if scrapers.returncode is None:  # timed out: never leave them scraping
            scrapers.kill()
            await scrapers.wait()
    assert 0 == scrapers.returncode, stderr.decode()
    return json.loads(stdout)


class TestConcurrentScrapers:
    def test_64_scrapers_while_mutating(self, figure):
        """64 scrapers for a while: no error, every answer parses, no counter goes down."""
        registry, metrics = busy_registry()
        stop = threading.Event()
        changes = [0] * MUTATING_THREADS

        def mutator(number: int) -> None:
            changes[number] = mutate(metrics, stop, number)

        async def main() -> tuple[dict, float, float]:
            server = await start_http_server(addr="127.0.0.1", registry=registry)
            lags: list[float] = []

            async def loop_mutations_and_lag() -> None:
                requests, latency, _, routes = metrics
                while not stop.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append(time.perf_counter() - before - 0.005)
                    requests.labels(random.choice(routes), "200").inc()
                    latency.labels(random.choice(routes)).observe(0.001)

            watcher = asyncio.create_task(loop_mutations_and_lag())
            try:
                # What the application's own threads cost the loop, before any scrape.
                await asyncio.sleep(BASELINE_SECONDS)
                baseline = sorted(lags)
                lags.clear()
                summary = await run_scrapers(server.socket.port)
            finally:  # a failure leaves no server behind for the next test to trip on
                stop.set()
                await watcher
                await server.close()
            return summary, baseline, sorted(lags)

        threads = [threading.Thread(target=mutator, args=(n,)) for n in range(MUTATING_THREADS)]
        for thread in threads:
            thread.start()
        try:
            with full_collections() as collections:
                summary, baseline, lags = asyncio.run(main())
        finally:
            stop.set()
            for thread in threads:
                thread.join()

        figure("scrapes", summary["scrapes"], "answers", scrapers=SCRAPERS, seconds=SECONDS)
        figure("fully parsed by prometheus_client", summary["parsed"], "answers")
        figure("errors", summary["error_count"], "")
        figure("counter decreases", len(summary["decreases"]), "")
        figure("scrape latency p50", round(summary["latency_p50"] * 1000, 1), "ms")
        figure("scrape latency max", round(summary["latency_max"] * 1000, 1), "ms")
        for name, measured in (("not scraped", baseline), ("scraped", lags)):
            figure(f"event loop lag p99, {name}", round(percentile(measured, 0.99) * 1000, 1), "ms")
            figure(f"event loop lag worst, {name}", round(measured[-1] * 1000, 1), "ms")
        figure("metric changes by threads", sum(changes), "")
        # The worst lag is a full garbage collection of the whole test process,
        # set off by the ~1,000 requests a second that aiohttp parses.
        figure(
            "full garbage collections",
            collections.count,
            "",
            longest_ms=round(collections.longest * 1000, 1),
        )
        assert [] == summary["errors"]
        assert [] == summary["decreases"]
        assert summary["scrapes"] > SCRAPERS
