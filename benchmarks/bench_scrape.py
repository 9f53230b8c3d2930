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
  relative to one scrape;
- at 1M series, for promloop's three mount points and prometheus_client's
  threaded server: the scrape time, and the worst and p99 stall of the loop
  while the server is scraped back to back for ten seconds, in three runs
  (``--quick``: 100k series, one short run); in each run, first the same
  loop for ten seconds without a scrape (the machine's own noise then).

Each stall is also given less the time the loop's thread waited for a CPU
meanwhile, and less that and the longest such wait of another thread of the
process (the thread holding the GIL the loop waits for): see ``_Probe``.

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
import math
import multiprocessing
import os
import pathlib
import statistics
import sys
import threading
import time
import urllib.request

from typing import Any


SIZES = (1_000, 10_000, 100_000)
STALL_SIZE = 50_000
STALL_ROUNDS = 3
LARGE_SIZE = 1_000_000
LARGE_SECONDS = 10.0
LARGE_VARIANTS = (
    "promloop in-loop",
    "promloop threaded",
    "promloop Twisted",
    "prometheus_client threaded",
)
HEADERS = {
    "Accept-Encoding": "gzip",
    "Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    # The first scrape of a million series builds each one's line heads: seconds on a busy
    # machine, beyond the 30 s a scrape that states no timeout may take.
    "X-Prometheus-Scrape-Timeout-Seconds": "120",
}

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


class _CpuWaits:
    """How long each thread of this process has run, and waited for a CPU, so far (schedstat).

    On a shared machine a thread that is ready to run may wait for a core
    while other processes use both.  When the loop's own thread waits so,
    or the thread holding the GIL that the loop waits for, the loop is late
    without any server causing it.  The files stay open: reading one is a
    ``pread`` of a few microseconds, cheap enough at every probe.
    """

    def __init__(self) -> None:
        self._files: dict[int, int] = {}

    def read(self) -> dict[int, tuple[float, float]]:
        """Return each thread's time on a CPU and waiting for one, in seconds; {} if unknown."""
        waits: dict[int, tuple[float, float]] = {}
        try:
            threads = [int(task.name) for task in pathlib.Path("/proc/self/task").iterdir()]
        except OSError:
            return waits
        for thread in threads:
            descriptor = self._files.get(thread)
            try:
                if descriptor is None:
                    path = f"/proc/self/task/{thread}/schedstat"
                    descriptor = self._files[thread] = os.open(path, os.O_RDONLY)
                ran, waited = os.pread(descriptor, 100, 0).split()[:2]
                waits[thread] = (int(ran) / 1e9, int(waited) / 1e9)
            except (OSError, IndexError, ValueError):  # the thread ended meanwhile
                if self._files.pop(thread, None) is not None:
                    os.close(descriptor)
        return waits


class _Probe:
    """The application loop's lateness, each time a 5 ms sleep wakes up.

    Each lateness is kept three ways: as measured; less the time the loop's
    thread waited for a CPU meanwhile ("own"); and less that and the
    longest wait for a CPU of any other thread of the process meanwhile
    ("ours"): the loop that does not wait for a CPU waits for the GIL, and
    a thread that holds the GIL but waits for a CPU is the machine's delay,
    not the server's.  "Ours" errs low when two of the threads waited at
    the same time; "own" errs high.  The three highest "ours" are kept with
    what each thread did meanwhile, to show where the time went.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.own: list[float] = []
        self.ours: list[float] = []
        self.highest: list[tuple[float, ...]] = []
        self._waits = _CpuWaits()
        self._thread = threading.get_native_id()

    def clear(self) -> None:
        self.lags, self.own, self.ours, self.highest = [], [], [], []

    async def sample(self, measuring: bool) -> None:
        before = self._waits.read() if measuring else {}
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        if not measuring:
            return
        lag = time.perf_counter() - started - 0.005
        after = self._waits.read()
        ran = {t: after[t][0] - before[t][0] for t in after if t in before}
        waited = {t: after[t][1] - before[t][1] for t in after if t in before}
        own = lag - waited.pop(self._thread, 0.0)
        ours = max(0.0, own - max(waited.values(), default=0.0))
        self.lags.append(lag)
        self.own.append(own)
        self.ours.append(ours)
        if len(self.highest) < 3 or ours > self.highest[-1][0]:
            loop_ran = ran.pop(self._thread, 0.0)
            window = (ours, lag, lag - own, loop_ran, max(waited.values(), default=0.0))
            self.highest = sorted([*self.highest, (*window, max(ran.values(), default=0.0))])
            self.highest = self.highest[::-1][:3]

    def report(self) -> dict[str, float]:
        """Return the worst and 99th percentile lateness, each way, in seconds."""
        found = {}
        for name, values in (("", self.lags), ("own_", self.own), ("ours_", self.ours)):
            values.sort()
            found[f"{name}worst"] = values[-1]
            found[f"{name}p99"] = values[int(len(values) * 0.99)]
        return {**found, "highest": self.highest}


def _waited_for_cpu() -> float:
    """Return the seconds this process's threads have waited for a CPU (Linux), or nan."""
    waits = _CpuWaits().read()
    return sum(waited for _, waited in waits.values()) if waits else math.nan


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
        probe = _Probe()
        collections = _FullCollections()
        connection.send(port)
        loop = asyncio.get_running_loop()
        measuring = False
        while True:
            if connection.poll():
                command = connection.recv()
                if command == "measure":
                    measuring = True
                    probe.clear()
                    collections.start()
                    waited, began = _waited_for_cpu(), loop.time()
                elif command == "report":
                    measuring = False
                    full, longest = collections.stop()
                    share = (_waited_for_cpu() - waited) / (loop.time() - began)
                    found = probe.report()
                    connection.send(
                        {**found, "full_gcs": full, "longest_full_gc": longest, "share": share}
                    )
                else:
                    break
            await probe.sample(measuring)
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


def stalls(
    kind: str, freeze: bool, seconds: float, series: int = STALL_SIZE, *, idle: bool = False
) -> dict[str, Any]:
    """Scrape a fresh server back to back, after one scrape to warm it up.

    Return what :meth:`_Probe.report` does, the number of full garbage
    collections in that time and the longest, the seconds its threads
    waited for a CPU per second, and each scrape's seconds.  With *idle*,
    first measure the loop as long without a scrape: the machine's own
    noise at that time (``idle_worst`` and ``idle_p99``).
    """
    _wait_for_quiet()
    with server(kind, series, freeze) as (port, control):
        found: dict[str, Any] = {}
        if idle:
            control.send("measure")
            time.sleep(seconds)
            control.send("report")
            quiet = control.recv()
            found = {"idle_worst": quiet["worst"], "idle_p99": quiet["p99"]}
        control.send("measure")
        taken = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            taken.append(scrape(port)[0])
        control.send("report")
        found.update(control.recv())
    return {**found, "taken": taken}


QUIET = {"load": math.inf}
"""Wait before each stall run until the machine's 1-minute load is below this."""


def _wait_for_quiet(patience: float = 900.0) -> None:
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] >= QUIET["load"] and time.monotonic() < deadline:
        time.sleep(5)


def measure_large(kind: str, series: int, seconds: float, runs: int) -> dict[str, Any]:
    """Scrape a large registry back to back in *runs* fresh servers."""
    rounds = [stalls(kind, False, seconds, series, idle=True) for _ in range(runs)]
    result = {
        "series": series,
        "seconds": seconds,
        "runs": runs,
        "scrapes": sum(len(r["taken"]) for r in rounds),
        "scrape_ms": statistics.median(t for r in rounds for t in r["taken"]) * 1000,
        **_summary(rounds, ""),
    }
    for prefix in ("idle_", "own_", "ours_"):
        result[f"{prefix}worst_stall_ms"] = _median(rounds, f"{prefix}worst")
        result[f"{prefix}p99_stall_ms"] = _median(rounds, f"{prefix}p99")
        result[f"{prefix}max_stall_ms"] = max(r[f"{prefix}worst"] for r in rounds) * 1000
    windows = sorted((w for r in rounds for w in r["highest"]), reverse=True)[:3]
    result["highest_windows_ms"] = [[round(x * 1000, 1) for x in w] for w in windows]
    return result


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds) * 1000


def _summary(rounds: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    """Sum up the stall runs: medians of their worst stalls and p99s, and the highest."""
    return {
        f"worst_stall{suffix}_ms": _median(rounds, "worst"),
        f"p99_stall{suffix}_ms": _median(rounds, "p99"),
        f"max_stall{suffix}_ms": max(r["worst"] for r in rounds) * 1000,
        f"full_gcs{suffix}": sum(r["full_gcs"] for r in rounds),
        f"longest_full_gc{suffix}_ms": max(r["longest_full_gc"] for r in rounds) * 1000,
        f"waited_for_cpu{suffix}_ms_per_s": _median(rounds, "share"),
        f"own_worst_stall{suffix}_ms": _median(rounds, "own_worst"),
        f"own_p99_stall{suffix}_ms": _median(rounds, "own_p99"),
        f"own_max_stall{suffix}_ms": max(r["own_worst"] for r in rounds) * 1000,
        f"ours_worst_stall{suffix}_ms": _median(rounds, "ours_worst"),
        f"ours_p99_stall{suffix}_ms": _median(rounds, "ours_p99"),
        f"ours_max_stall{suffix}_ms": max(r["ours_worst"] for r in rounds) * 1000,
    }


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
        result.update(_summary(rounds, "_frozen" if freeze else ""))

    with server(kind, STALL_SIZE) as (port, _):
        one = min(scrape(port)[0] for _ in range(3))
        result["eight_concurrent_vs_one"] = min(concurrent_scrapes(port, 8) for _ in range(3)) / one
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--markdown", help="also write the table, in Markdown, to this file")
    parser.add_argument("--markdown-large", help="and the table at 1M series to this one")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=math.inf,
        help="start each stall run once the 1-minute load average is below this",
    )
    parser.add_argument(
        "--large-only",
        action="store_true",
        help="measure only at 1M series, updating the results --json names",
    )
    options = parser.parse_args()
    QUIET["load"] = options.quiet_load
    sizes = (1_000, 10_000) if options.quick else SIZES
    scrapes, stall_seconds = (2, 1.0) if options.quick else (5, 5.0)
    large_series, large_seconds, large_runs = (
        (100_000, 2.0, 1) if options.quick else (LARGE_SIZE, LARGE_SECONDS, STALL_ROUNDS)
    )

    if options.large_only:
        results = json.loads(pathlib.Path(options.json).read_text())
        sizes = tuple(int(n) for n in next(iter(results.values()))["latency_ms"])
    else:
        results = measure_all(sizes, scrapes, stall_seconds)
    for name in LARGE_VARIANTS:
        results[name]["large"] = measure_large(
            VARIANTS[name], large_series, large_seconds, large_runs
        )
        print(f"measured {name} at {large_series} series", file=sys.stderr, flush=True)

    print_report(results, sizes)
    if options.json:
        pathlib.Path(options.json).write_text(json.dumps(results, indent=1))
    if options.markdown:
        pathlib.Path(options.markdown).write_text(markdown_table(results, sizes))
    if options.markdown_large:
        pathlib.Path(options.markdown_large).write_text(markdown_large(results))


def measure_all(sizes: tuple[int, ...], scrapes: int, stall_seconds: float) -> dict[str, Any]:
    """Measure every variant (those whose package is installed) at the usual sizes."""
    have_peer = importlib.util.find_spec("prometheus_async") is not None
    results = {}
    for name, kind in VARIANTS.items():
        if kind.startswith("peer") and not have_peer:
            continue
        results[name] = measure(kind, sizes, scrapes, stall_seconds)
        print(f"measured {name}", file=sys.stderr, flush=True)
    return results


def print_report(results: dict[str, Any], sizes: tuple[int, ...]) -> None:
    """Print the results as text tables."""
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
            row += f" {_at(result['latency_ms'], n):8.1f} {_at(result['bytes'], n) / 1000:8.1f}"
        for suffix, width in (("", 13), ("_frozen", 12)):
            row += f" {result[f'worst_stall{suffix}_ms']:{width}.1f}"
            row += f" {result[f'p99_stall{suffix}_ms']:5.1f} {result[f'max_stall{suffix}_ms']:6.1f}"
        row += f" {result['eight_concurrent_vs_one']:10.2f}"
        print(row)
    print(
        "\nFull garbage collections during the three unfrozen stall runs and the longest;"
        " the time the server's\nthreads waited for a CPU (ms per s, median run); the worst"
        " stall less the time the loop's own\nthread waited for a CPU (median run, and highest),"
        " and less also the longest wait of another\nthread of the process (the GIL's holder):"
    )
    for name, result in results.items():
        print(
            f"{name:28} {result['full_gcs']:4d} {result['longest_full_gc_ms']:8.1f} ms"
            f" {result['waited_for_cpu_ms_per_s']:8.1f}"
            f" {result['own_worst_stall_ms']:8.1f} ({result['own_max_stall_ms']:.1f})"
            f" {result['ours_worst_stall_ms']:8.1f} ({result['ours_max_stall_ms']:.1f})"
        )
    large = results[LARGE_VARIANTS[0]]["large"]
    print(
        f"\nAt {large['series']} series, scraped back to back for {large['seconds']:.0f} s"
        f" in {large['runs']} fresh servers (after one warm-up scrape each):"
    )
    print(
        "Stalls in ms: worst (median run), p99 (median run), highest; the same without a"
        " scrape (idle),\nless the loop's waits for a CPU (own), and less also the GIL"
        " holder's (ours)."
    )
    print(
        f"{'server':28} {'scrapes':>7} {'scrape ms':>10}"
        + "".join(
            f" {label:>6} {'p99':>5} {'max':>6}" for label in ("stall", "idle", "own", "ours")
        )
        + f" {'full GCs':>9} {'CPU wait ms/s':>14}"
    )
    for name in LARGE_VARIANTS:
        large = results[name]["large"]
        print(
            f"{name:28} {large['scrapes']:7d} {large['scrape_ms']:10.0f}"
            + "".join(
                f" {large[f'{prefix}worst_stall_ms']:6.1f} {large[f'{prefix}p99_stall_ms']:5.1f}"
                f" {large[f'{prefix}max_stall_ms']:6.1f}"
                for prefix in ("", "idle_", "own_", "ours_")
            )
            + f" {large['full_gcs']:9d} {large['waited_for_cpu_ms_per_s']:14.1f}"
        )
    print(
        "\nThe three highest stalls of ours in those runs, in ms: ours, as measured, the loop's"
        " wait for a CPU,\nthe loop's own time on a CPU, the longest wait for a CPU and the"
        " longest time on one of another thread:"
    )
    for name in LARGE_VARIANTS:
        windows = results[name]["large"].get("highest_windows_ms", [])
        print(f"{name:28} " + "; ".join(" ".join(f"{x:.1f}" for x in w) for w in windows))


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
        cells = [
            f"{_at(result['latency_ms'], n):.0f} / {_at(result['bytes'], n) / 1000:.0f}"
            for n in sizes
        ]
        cells += [
            _stall_cell(result, ""),
            _stall_cell(result, "_frozen"),
            f"{result['eight_concurrent_vs_one']:.2f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_large(results: dict[str, Any]) -> str:
    """Render the large registry's results as the table the docs include."""
    series = next(results[name]["large"]["series"] for name in LARGE_VARIANTS)
    header = f"| server | scrape of {series // 1000}k series, ms | stall"
    lines = [
        header + ", worst / p99 (highest), ms | the same loop, no scrape"
        " | less the loop's waits for a CPU | less also the GIL holder's: ours | full GCs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in LARGE_VARIANTS:
        large = results[name]["large"]
        lines.append(
            f"| {name} | {large['scrape_ms']:.0f} | {_stall_cell(large, '')}"
            f" | {_stall_cell(large, '', 'idle_')} | {_stall_cell(large, '', 'own_')}"
            f" | {_stall_cell(large, '', 'ours_')} | {large['full_gcs']} |"
        )
    return "\n".join(lines) + "\n"


def _at(by_size: dict[Any, float], size: int) -> float:
    """Read a figure by size, whether the keys are numbers or (read from JSON) strings."""
    return by_size[size] if size in by_size else by_size[str(size)]


def _stall_cell(result: dict[str, Any], suffix: str, prefix: str = "") -> str:
    worst = result[f"{prefix}worst_stall{suffix}_ms"]
    p99 = result[f"{prefix}p99_stall{suffix}_ms"]
    return f"{worst:.0f} / {p99:.0f} ({result[f'{prefix}max_stall{suffix}_ms']:.0f})"


if __name__ == "__main__":
    main()
