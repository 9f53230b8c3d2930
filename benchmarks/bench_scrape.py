"""Scrape cost and event-loop stalls: promloop's servers beside prometheus_client's and peers'.

Run:  python benchmarks/bench_scrape.py [--quick] [--json FILE]

Each server runs in a process of its own, next to an application event loop
whose lateness is measured continuously (a 5 ms sleep that wakes up late is a
stall: the application could not run then).  In-loop servers share that loop;
threaded servers run beside it, in the same process, as they do in an
application.  This process is the scraper: it asks for gzip like Prometheus.

Reported for 1k, 10k and 100k series:

- scrape latency (median of a few scrapes) and response bytes (gzip);
- at 50k series: the worst stall of the application loop while the server is
  scraped back to back for five seconds, as is and with the registry's
  objects frozen out of garbage collection (``gc.freeze()``), which shows
  how much of a stall is Python's cyclic collector rather than the server.
  Each is measured in three runs, each a fresh server process: the table
  gives the median of the three runs' worst stalls and 99th percentiles,
  and the highest stall of all three, since a shared machine now and then
  deschedules a process for tens of milliseconds whatever it runs; the text
  output also counts the full garbage collections during those runs;
- at 50k series: the wall time of 8 concurrent scrapes of the same view,
  relative to one scrape.

Variants: promloop's in-loop and threaded servers, prometheus_client's
aiohttp handler (in-loop) and its threaded WSGI server, promloop's and
prometheus_client's Twisted resources (on Twisted's asyncio reactor, so the
loop measured is the reactor), and, when installed, prometheus-async's
in-loop and threaded servers.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import importlib.util
import json
import multiprocessing
import statistics
import sys
import threading
import time
import urllib.request

from typing import Any


SIZES = (1_000, 10_000, 100_000)
STALL_SIZE = 50_000
STALL_ROUNDS = 3
HEADERS = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"}

VARIANTS = {
    "promloop in-loop": "promloop_inloop",
    "promloop threaded": "promloop_threaded",
    "prometheus_client aiohttp": "client_aiohttp",
    "prometheus_client threaded": "client_threaded",
    "promloop Twisted": "promloop_twisted",
    "prometheus_client Twisted": "client_twisted",
    "prometheus-async in-loop": "peer_inloop",
    "prometheus-async threaded": "peer_threaded",
}


def _fill(registry: Any, series: int) -> None:
    from prometheus_client import Gauge

    gauge = Gauge("bench_series", "One series per label value.", ["id"], registry=registry)
    for i in range(series):
        gauge.labels(str(i)).set(i)


async def _start(kind: str, registry: Any) -> tuple[int, Any]:
    """Start one kind of server; return its port and a closer."""
    if kind == "promloop_inloop":
        from promloop.aio.web import start_http_server

        server = await start_http_server(addr="127.0.0.1", registry=registry)
        return server.socket.port, server.close
    if kind == "promloop_threaded":
        from promloop.aio.web import start_http_server_in_thread

        threaded = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        return threaded.socket.port, threaded.close
    if kind == "client_aiohttp":
        from aiohttp import web
        from prometheus_client.aiohttp import make_aiohttp_handler

        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1], runner.cleanup
    if kind == "client_threaded":
        from prometheus_client import start_http_server as client_server

        httpd, _ = client_server(0, addr="127.0.0.1", registry=registry)
        return httpd.server_port, httpd.shutdown
    if kind == "peer_inloop":  # prometheus-async serves the global registry only
        from prometheus_async.aio.web import start_http_server as peer_server

        server = await peer_server(addr="127.0.0.1")
        return server.socket.port, server.close
    if kind == "peer_threaded":
        from prometheus_async.aio.web import start_http_server_in_thread as peer_threaded

        threaded = peer_threaded(addr="127.0.0.1")
        return threaded.socket.port, threaded.close
    raise ValueError(kind)


def _start_twisted(kind: str, registry: Any) -> tuple[int, Any]:
    """Serve a Twisted resource from a reactor running on this process's asyncio loop."""
    from twisted.internet import asyncioreactor

    asyncioreactor.install(asyncio.get_running_loop())
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    if kind == "promloop_twisted":
        from promloop.tx.web import MetricsResource

        metrics = MetricsResource(registry)
    else:
        from prometheus_client.twisted import MetricsResource as ClientResource

        metrics = ClientResource(registry)
    root = Resource()
    root.putChild(b"metrics", metrics)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    reactor.startRunning(installSignalHandlers=False)

    def close() -> None:
        port.stopListening()
        reactor.getThreadPool().stop()

    return port.getHost().port, close


class _FullCollections:
    """Count the full (generation 2) garbage collections in a window, and the longest."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:  # the oldest generation: a full collection
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._began)

    def start(self) -> None:
        self.count, self.longest = 0, 0.0
        gc.callbacks.append(self)

    def stop(self) -> tuple[int, float]:
        gc.callbacks.remove(self)
        return self.count, self.longest


def serve(kind: str, series: int, freeze: bool, connection: Any) -> None:
    """Child process: fill a registry, serve it, and measure the loop's lateness."""
    from prometheus_client import REGISTRY, CollectorRegistry

    registry = REGISTRY if kind.startswith("peer") else CollectorRegistry()
    _fill(registry, series)
    if freeze:  # keep the registry's objects out of every garbage collection
        gc.freeze()

    async def main() -> None:
        if kind.endswith("_twisted"):
            port, close = _start_twisted(kind, registry)
        else:
            port, close = await _start(kind, registry)
        lags: list[float] = []
        collections = _FullCollections()
        connection.send(port)
        loop = asyncio.get_running_loop()
        measuring = False
        while True:
            if connection.poll():
                command = connection.recv()
                if command == "measure":
                    measuring, lags = True, []
                    collections.start()
                elif command == "report":
                    lags.sort()
                    full = collections.stop()
                    connection.send((lags[-1], lags[int(len(lags) * 0.99)], *full))
                    measuring = False
                else:
                    break
            started = loop.time()
            await asyncio.sleep(0.005)
            if measuring:
                lags.append(loop.time() - started - 0.005)
        result = close()
        if asyncio.iscoroutine(result):
            await result

    asyncio.run(main())


def scrape(port: int) -> tuple[float, int]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=HEADERS)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 -- loopback
        size = len(response.read())
    return time.perf_counter() - started, size


def concurrent_scrapes(port: int, count: int) -> float:
    """Send *count* scrapes at the same moment; return the seconds until all are answered."""
    barrier = threading.Barrier(count + 1)

    def one() -> None:
        barrier.wait()
        scrape(port)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        answered = [pool.submit(one) for _ in range(count)]
        barrier.wait()
        started = time.perf_counter()
        for future in answered:
            future.result()
    return time.perf_counter() - started


@contextlib.contextmanager
def server(kind: str, series: int, freeze: bool = False) -> Any:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=serve, args=(kind, series, freeze, child), daemon=True)
    process.start()
    try:
        if not parent.poll(120):
            raise RuntimeError(f"{kind} did not start")
        port = parent.recv()
        scrape(port)  # warm up
        yield port, parent
    finally:
        parent.send("stop")
        process.join(30)
        if process.is_alive():
            process.kill()


def stalls(kind: str, freeze: bool, seconds: float) -> tuple[float, float, int, float]:
    """Scrape a fresh 50k-series server back to back.

    Return its loop's worst and p99 stall, and the number of full garbage
    collections in that time and the longest.
    """
    with server(kind, STALL_SIZE, freeze) as (port, control):
        control.send("measure")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            scrape(port)
        control.send("report")
        report: tuple[float, float, int, float] = control.recv()
    return report


def measure(
    kind: str, sizes: tuple[int, ...], scrapes: int, stall_seconds: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"latency_ms": {}, "bytes": {}}
    for series in sizes:
        with server(kind, series) as (port, _):
            samples = [scrape(port) for _ in range(scrapes)]
        result["latency_ms"][series] = statistics.median(s[0] for s in samples) * 1000
        result["bytes"][series] = samples[0][1]

    for freeze in (False, True):
        rounds = [stalls(kind, freeze, stall_seconds) for _ in range(STALL_ROUNDS)]
        suffix = "_frozen" if freeze else ""
        result[f"worst_stall{suffix}_ms"] = statistics.median(r[0] for r in rounds) * 1000
        result[f"p99_stall{suffix}_ms"] = statistics.median(r[1] for r in rounds) * 1000
        result[f"max_stall{suffix}_ms"] = max(r[0] for r in rounds) * 1000
        result[f"full_gcs{suffix}"] = sum(r[2] for r in rounds)
        result[f"longest_full_gc{suffix}_ms"] = max(r[3] for r in rounds) * 1000

    with server(kind, STALL_SIZE) as (port, _):
        one = min(scrape(port)[0] for _ in range(3))
        result["eight_concurrent_vs_one"] = min(concurrent_scrapes(port, 8) for _ in range(3)) / one
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--markdown", help="also write the table, in Markdown, to this file")
    options = parser.parse_args()
    sizes = (1_000, 10_000) if options.quick else SIZES
    scrapes, stall_seconds = (2, 1.0) if options.quick else (5, 5.0)

    have_peer = importlib.util.find_spec("prometheus_async") is not None
    results = {}
    for name, kind in VARIANTS.items():
        if kind.startswith("peer") and not have_peer:
            continue
        results[name] = measure(kind, sizes, scrapes, stall_seconds)
        print(f"measured {name}", file=sys.stderr, flush=True)

    print(f"Python {sys.version.split()[0]}; scrapes ask for gzip, as Prometheus does")
    header = f"{'server':28}" + "".join(
        f" {f'{n // 1000}k ms':>8} {f'{n // 1000}k kB':>8}" for n in sizes
    )
    print(
        header
        + f" {'stall@50k ms':>13} {'p99':>5} {'max':>6}"
        + f" {'(gc frozen)':>12} {'p99':>5} {'max':>6} {'8x/1x@50k':>10}"
    )
    for name, result in results.items():
        row = f"{name:28}"
        for n in sizes:
            row += f" {result['latency_ms'][n]:8.1f} {result['bytes'][n] / 1000:8.1f}"
        for suffix, width in (("", 13), ("_frozen", 12)):
            row += f" {result[f'worst_stall{suffix}_ms']:{width}.1f}"
            row += f" {result[f'p99_stall{suffix}_ms']:5.1f} {result[f'max_stall{suffix}_ms']:6.1f}"
        row += f" {result['eight_concurrent_vs_one']:10.2f}"
        print(row)
    print("\nFull garbage collections during the three unfrozen stall runs, and the longest:")
    for name, result in results.items():
        print(f"{name:28} {result['full_gcs']:4d} {result['longest_full_gc_ms']:8.1f} ms")
    if options.json:
        with open(options.json, "w") as file:  # noqa: PTH123
            json.dump(results, file, indent=1)
    if options.markdown:
        with open(options.markdown, "w") as file:  # noqa: PTH123
            file.write(markdown_table(results, sizes))


def markdown_table(results: dict[str, Any], sizes: tuple[int, ...]) -> str:
    """Render the results as the table the docs include."""
    columns = [f"{n // 1000}k series: ms / kB" for n in sizes]
    columns += [
        "stall at 50k, worst / p99 (highest), ms",
        "same, gc frozen",
        "8 scrapes / 1 at 50k",
    ]
    lines = ["| server | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, result in results.items():
        cells = [f"{result['latency_ms'][n]:.0f} / {result['bytes'][n] / 1000:.0f}" for n in sizes]
        cells += [
            _stall_cell(result, ""),
            _stall_cell(result, "_frozen"),
            f"{result['eight_concurrent_vs_one']:.2f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _stall_cell(result: dict[str, Any], suffix: str) -> str:
    worst, p99 = result[f"worst_stall{suffix}_ms"], result[f"p99_stall{suffix}_ms"]
    return f"{worst:.0f} / {p99:.0f} ({result[f'max_stall{suffix}_ms']:.0f})"


if __name__ == "__main__":
    main()
