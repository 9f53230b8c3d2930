"""Fleet mode: a fan-in over worker processes beside prometheus_client's multiprocess mode.

Run:  python benchmarks/bench_fleet.py --json benchmarks/results/fleet.json \\
          --markdown benchmarks/results/fleet.md > benchmarks/results/fleet.txt

Two fleets of identical worker processes, each with the same metrics (by
default 10,000 series: a labelled counter, histogram and gauge), run side by
side:

* promloop: each worker serves its own registry with
  ``start_http_server_in_thread`` on port 0 and announces itself with
  ``FileSD(directory, slot="worker")``; a fan-in scrapes them all on each
  request and serves the merge, per worker (labels added) or aggregated;
* prometheus_client's multiprocess mode: each worker writes mmap files to
  ``PROMETHEUS_MULTIPROC_DIR`` (gauges ``livesum``); one process serves
  ``MultiProcessCollector`` with ``prometheus_client.start_http_server``.

For each fleet size (live workers, and workers that have died: killed, their
files left behind, ``mark_process_dead`` called as gunicorn's ``child_exit``
hook does), every round scrapes each server in turn, as Prometheus 3 would
(OpenMetrics, no gzip), and measures: the scrape's latency; the CPU time the
serving process (fan-in, or multiprocess server) spent; the CPU time of the
whole fleet (that, plus every worker's: the workers render for the fan-in).
CPU comes from ``/proc/<pid>/stat`` (every thread, ticks of 10 ms): a sample
is a batch of scrapes.  Medians and bests of the rounds; ratios are between
variants measured in the same rounds.  The cost of one ``inc()`` in a worker
(in memory, and mmap-backed in multiprocess mode) closes the report.

The fan-in is promloop's: ``python -m promloop fanin DIRECTORY [--aggregate]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from collections.abc import Iterator


ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
"""What Prometheus 3 sends."""
TICK = os.sysconf("SC_CLK_TCK")
HERE = Path(__file__).resolve()


# --- the metrics every worker has -----------------------------------------------------------


def populate(series: int, worker: int, gauge_kwargs: dict[str, Any]) -> Any:
    """Return a registry of this worker's metrics: *series* series in all.

    (In multiprocess mode, the values go to the mmap files whatever the registry.)
    """
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    rnd = random.Random(worker)  # noqa: S311 -- the same values in both fleets, not secrets
    scale = series / 10_000
    requests = Counter("app_requests", "Requests.", ["method", "path", "status"], registry=registry)
    latency = Histogram(
        "app_request_duration_seconds", "Latency.", ["method", "path"], registry=registry
    )
    in_progress = Gauge(
        "app_in_progress", "In progress.", ["path"], registry=registry, **gauge_kwargs
    )
    for i in range(round(2000 * scale)):
        requests.labels(("GET", "POST")[i % 2], f"/path/{i // 2}", str(200 + i % 5)).inc(
            rnd.randint(1, 1000)
        )
    for i in range(round(400 * scale)):  # 17 series each: 15 buckets, count, sum
        latency.labels(("GET", "POST")[i % 2], f"/path/{i}").observe(rnd.random())
    for i in range(round(1200 * scale)):
        in_progress.labels(f"/path/{i}").set(rnd.randint(0, 10))
    return registry


def wait_for_stdin_to_close() -> None:
    sys.stdin.read()


def worker_promloop(directory: str, series: int) -> None:
    from promloop.aio.sd import FileSD
    from promloop.aio.web import start_http_server_in_thread

    registry = populate(series, int(os.environ["BENCH_WORKER"]), {})
    discovery = FileSD(directory, slot="worker")
    server = start_http_server_in_thread(
        addr="127.0.0.1", registry=registry, service_discovery=discovery
    )
    print("ready", flush=True)
    wait_for_stdin_to_close()
    server.close()


def worker_multiprocess(series: int) -> None:
    populate(series, int(os.environ["BENCH_WORKER"]), {"multiprocess_mode": "livesum"})
    print("ready", flush=True)
    wait_for_stdin_to_close()


def serve_multiprocess() -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_port, flush=True)
    wait_for_stdin_to_close()


def inc_cost() -> None:
    """Print the cost of one inc() of a labelled child, in this process's value mode."""
    import timeit

    from prometheus_client import Counter

    child = Counter("bench_inc", "inc() cost.", ["path"]).labels("/a")
    timer = timeit.Timer(child.inc)
    best = min(timer.repeat(repeat=7, number=100_000)) / 100_000
    print(best * 1e9)


# --- the fleets -----------------------------------------------------------------------------


class Process:
    """A child process (this script in a role, or a module), stopped by closing its stdin."""

    def __init__(self, role: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = (
            [sys.executable, "-m", *args]
            if role == "-m"
            else [sys.executable, str(HERE), role, *args]
        )
        self.popen = subprocess.Popen(  # noqa: S603 -- this script, our arguments
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def first_line(self) -> str:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().strip()
        if not line:
            msg = f"{self.popen.args} exited before it started"
            raise RuntimeError(msg)
        return line

    def cpu(self) -> float:
        """Return the CPU seconds this process has used, all its threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                assert self.popen.stdin is not None
                self.popen.stdin.close()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_all(processes: list[Process]) -> None:
    for process in processes:
        line = process.first_line()
        assert line == "ready", line


def get(port: int) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return response.read()  # type: ignore[no-any-return]


class Variant:
    """A server and the workers whose CPU counts with it."""

    def __init__(self, name: str, server: Process, workers: list[Process]) -> None:
        self.name = name
        self.server = server
        first = server.first_line()  # a port, or "Serving metrics at http://host:port/metrics"
        self.port = int(first.rsplit(":", 1)[1].split("/")[0] if "Serving" in first else first)
        self.workers = workers
        self.samples: dict[str, list[float]] = {"latency": [], "server": [], "fleet": []}

    def live_workers(self) -> list[Process]:
        return [w for w in self.workers if w.popen.poll() is None]

    def measure(self, batch: int) -> bytes:
        workers = self.live_workers()
        server_before = self.server.cpu()
        workers_before = sum(w.cpu() for w in workers)
        latencies = []
        for _ in range(batch):
            started = time.perf_counter()
            body = get(self.port)
            latencies.append(time.perf_counter() - started)
        server = (self.server.cpu() - server_before) / batch
        up = [line for line in body.split(b"\n") if line.startswith(b"promloop_fanin_target_up{")]
        if any(not line.endswith(b" 1.0") for line in up):
            print(f"{self.name}: a worker did not answer", file=sys.stderr)
        fleet = server + (sum(w.cpu() for w in workers) - workers_before) / batch
        self.samples["latency"].append(statistics.median(latencies))
        self.samples["server"].append(server)
        self.samples["fleet"].append(fleet)
        return body


@contextlib.contextmanager
def fleets(live: int, dead: int, series: int) -> Iterator[tuple[list[Variant], Engine]]:
    """Run both fleets, *dead* of their workers killed after a first scrape."""
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    file_sd, mmap_dir = root / "targets", root / "multiproc"
    file_sd.mkdir()
    mmap_dir.mkdir()
    mp_env = {"PROMETHEUS_MULTIPROC_DIR": str(mmap_dir)}
    ours = [
        Process("_worker_promloop", str(file_sd), str(series), env={"BENCH_WORKER": str(i)})
        for i in range(live + dead)
    ]
    theirs = [
        Process("_worker_multiprocess", str(series), env={**mp_env, "BENCH_WORKER": str(i)})
        for i in range(live + dead)
    ]
    servers: list[Process] = []
    try:
        start_all(ours)
        start_all(theirs)
        fan_in = ["promloop", "fanin", str(file_sd), "--addr", "127.0.0.1", "--exit-on-eof"]
        fan_in += ["--scrape-timeout", "60"]  # a loaded machine is slow, not absent
        servers = [
            Process("_serve_multiprocess", env=mp_env),
            Process("-m", *fan_in),
            Process("-m", *fan_in, "--aggregate"),
        ]
        variants = [
            Variant("multiprocess", servers[0], theirs),
            Variant("fan-in per-worker", servers[1], ours),
            Variant("fan-in aggregate", servers[2], ours),
        ]
        for variant in variants:
            get(variant.port)  # the aggregate fan-in must see the workers that will die
        engine = Engine(file_sd, mmap_dir, live + dead)
        if dead:
            from prometheus_client.multiprocess import mark_process_dead

            for process in (*ours[live:], *theirs[live:]):
                process.kill()
            for process in theirs[live:]:
                mark_process_dead(process.pid, str(mmap_dir))
        for variant in variants:
            get(variant.port)
        engine.live(live)
        yield variants, engine
    finally:
        for process in (*servers, *ours, *theirs):
            process.stop()
        shutil.rmtree(root, ignore_errors=True)


class Engine:
    """The merge alone, in this process, beside MultiProcessCollector alone.

    The workers' answers are fetched once (all of them, then the live ones
    again after the others died); each round times, with this thread's CPU
    clock, a merge and write of them, and prometheus_client's collection and
    writing of the multiprocess files.
    """

    def __init__(self, file_sd: Path, mmap_dir: Path, workers: int) -> None:
        from promloop._file_sd import TargetDirectory
        from promloop._merge import Scrape

        self.mmap_dir = mmap_dir
        self.directory = TargetDirectory(file_sd)
        listed = self.directory.read()
        assert len(listed) == workers, listed
        self.everyone = [Scrape(t.identity, t.labels, fetch(t.address)) for t in listed]
        self.scrapes = self.everyone
        self.samples: dict[str, list[float]] = {
            "multiprocess": [],
            "fan-in per-worker": [],
            "fan-in aggregate": [],
        }

    def live(self, count: int) -> None:
        from promloop._merge import Scrape

        listed = self.directory.read()
        alive = {t.identity for t in listed[:count]}
        self.scrapes = [
            Scrape(s.target, s.labels, fetch(s.target.split("|")[1]))
            for s in self.everyone
            if s.target in alive
        ]

    def measure(self, rounds: int) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from prometheus_client.openmetrics.exposition import generate_latest

        from promloop._merge import Merger

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.mmap_dir))
        mergers = {}
        for aggregate in (False, True):
            merger = mergers[aggregate] = Merger(aggregate=aggregate)
            merger.merge(self.everyone)
            merger.merge(self.scrapes)
        for _ in range(rounds):
            started = time.thread_time()
            generate_latest(registry, escaping="allow-utf-8")
            self.samples["multiprocess"].append(time.thread_time() - started)
            for aggregate, name in ((False, "fan-in per-worker"), (True, "fan-in aggregate")):
                started = time.thread_time()
                mergers[aggregate].merge(self.scrapes).expose(
                    openmetrics=True, escaping="allow-utf-8"
                )
                self.samples[name].append(time.thread_time() - started)


def fetch(address: str) -> bytes:
    request = urllib.request.Request(f"http://{address}/metrics", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return response.read()  # type: ignore[no-any-return]


def agree(multiprocess: bytes, aggregate: bytes) -> bool:
    """Tell whether the aggregate fan-in and multiprocess mode wrote the same values.

    (Beside the fan-in's own metrics, and the ``_created`` that multiprocess mode lacks.)
    """
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): float(s.value)
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if not s.name.endswith("_created") and not s.name.startswith("promloop_fanin_")
        }

    ours, theirs = samples(aggregate), samples(multiprocess)
    return ours.keys() == theirs.keys() and all(
        abs(ours[k] - theirs[k]) <= 1e-9 * max(1.0, abs(theirs[k])) for k in ours
    )


def run(live: int, dead: int, series: int, rounds: int) -> dict[str, Any]:
    print(f"  {live} live, {dead} dead workers ...", file=sys.stderr, flush=True)
    with fleets(live, dead, series) as (variants, engine):
        batch = max(2, 16 // live)  # CPU is counted in 10 ms ticks: enough work per sample
        bodies = {}
        for _ in range(rounds):
            for variant in variants:
                bodies[variant.name] = variant.measure(batch)
        engine.measure(rounds)
        result: dict[str, Any] = {
            "live": live,
            "dead": dead,
            "agree": agree(bodies["multiprocess"], bodies["fan-in aggregate"]),
        }
        for variant in variants:
            result[variant.name] = {
                what: {"median": statistics.median(values), "best": min(values)}
                for what, values in variant.samples.items()
            }
        for name, values in engine.samples.items():
            result[name]["engine"] = {"median": statistics.median(values), "best": min(values)}
        for variant in variants[1:]:
            result[variant.name]["engine_ratio"] = statistics.median(
                theirs / ours
                for theirs, ours in zip(
                    engine.samples["multiprocess"], engine.samples[variant.name], strict=True
                )
            )
            result[variant.name]["server_ratio"] = statistics.median(
                theirs / ours
                for theirs, ours in zip(
                    variants[0].samples["server"], variant.samples["server"], strict=True
                )
                if ours
            )
    return result


def inc_costs() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as mmap_dir:
        costs = {}
        for name, env in (("in memory", {}), ("mmap", {"PROMETHEUS_MULTIPROC_DIR": mmap_dir})):
            output = subprocess.run(  # noqa: S603 -- this script, our arguments
                [sys.executable, str(HERE), "_inc_cost"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            costs[name] = float(output)
        return costs


def report(results: list[dict[str, Any]], costs: dict[str, float], series: int) -> str:
    lines = [
        (
            f"Python {sys.version.split()[0]}; {series} series a worker; OpenMetrics, no gzip;"
            f" {os.cpu_count()} CPUs; median (best) of the rounds, ms per scrape"
        ),
        "",
        (
            f"{'workers':>13} {'variant':18} {'latency':>15} {'server CPU':>15}"
            f" {'fleet CPU':>15} {'server x':>9} {'engine alone':>15} {'engine x':>9}"
        ),
    ]
    for result in results:
        fleet = f"{result['live']} + {result['dead']} dead"
        for name in ("multiprocess", "fan-in per-worker", "fan-in aggregate"):
            row = result[name]
            cells = [
                f"{row[what]['median'] * 1000:7.1f} ({row[what]['best'] * 1000:5.1f})"
                for what in ("latency", "server", "fleet")
            ]
            ratio = f"{row['server_ratio']:8.2f}x" if "server_ratio" in row else " " * 9
            engine = f"{row['engine']['median'] * 1000:7.1f} ({row['engine']['best'] * 1000:5.1f})"
            engine_ratio = f"{row['engine_ratio']:8.2f}x" if "engine_ratio" in row else ""
            lines.append(f"{fleet:>13} {name:18} {' '.join(cells)} {ratio} {engine} {engine_ratio}")
            fleet = ""
        lines.append(f"{'':13} aggregate fan-in and multiprocess values agree: {result['agree']}")
    lines += [
        "",
        "server x: multiprocess mode's server CPU over the fan-in's, per round (median).",
        "fleet CPU: the server's and every live worker's (the fan-in's workers render).",
        "engine alone: in this process, CPU of MultiProcessCollector + generate_latest, or of",
        "  Merger.merge + Merged.expose over the workers' answers fetched beforehand; engine x:",
        "  the ratio, per round (median).",
        (
            f"One inc() of a labelled counter: {costs['in memory']:.0f} ns in memory,"
            f" {costs['mmap']:.0f} ns mmap-backed (multiprocess mode)."
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--fleets",
        default="2+0,8+0,32+0,8+8,8+32",
        help="live+dead workers, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    options = parser.parse_args()
    results = []
    for fleet in options.fleets.split(","):
        live, dead = (int(n) for n in fleet.split("+"))
        results.append(run(live, dead, options.series, options.rounds))
    costs = inc_costs()
    text = report(results, costs, options.series)
    print(text)
    if options.json:
        options.json.write_text(json.dumps({"results": results, "inc_ns": costs}, indent=1))
    if options.markdown:
        options.markdown.write_text(markdown(results, costs, options.series))


def markdown(results: list[dict[str, Any]], costs: dict[str, float], series: int) -> str:
    rows = [
        f"{series:,} series a worker; OpenMetrics; medians of the rounds, ms per scrape.",
        "",
        "| workers | variant | latency | server CPU | fleet CPU | ÷ | engine alone | ÷ |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for name in ("multiprocess", "fan-in per-worker", "fan-in aggregate"):
            row = result[name]
            cells = [f"{row[w]['median'] * 1000:.0f}" for w in ("latency", "server", "fleet")]
            cells.append(f"{row['server_ratio']:.1f}x" if "server_ratio" in row else "")
            cells.append(f"{row['engine']['median'] * 1000:.0f}")
            cells.append(f"{row['engine_ratio']:.1f}x" if "engine_ratio" in row else "")
            fleet = f"{result['live']} + {result['dead']} dead"
            rows.append(f"| {fleet} | {name} | {' | '.join(cells)} |")
    rows += [
        "",
        "÷: multiprocess mode's CPU over the fan-in's, per round (median).  Fleet CPU: the",
        "server's and every live worker's.  Engine alone: MultiProcessCollector and",
        "generate_latest, or Merger.merge and Merged.expose, in one process, without HTTP.",
        "",
        f"One `inc()`: {costs['in memory']:.0f} ns in memory, {costs['mmap']:.0f} ns mmap-backed.",
    ]
    return "\n".join(rows) + "\n"


ROLES = {
    "_worker_promloop": lambda args: worker_promloop(args[0], int(args[1])),
    "_worker_multiprocess": lambda args: worker_multiprocess(int(args[0])),
    "_serve_multiprocess": lambda _: serve_multiprocess(),
    "_inc_cost": lambda _: inc_cost(),
}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ROLES:
        ROLES[sys.argv[1]](sys.argv[2:])
    else:
        main()
