"""End to end: fleets of gunicorn workers behind the fan-in, scraped by a real Prometheus.

gunicorn runs three workers (sync workers serving their metrics from a
thread started in ``post_fork``, or aiohttp workers serving them in their own
event loop), each registered with ``FileSD(..., slot="worker")``.  Two
fan-ins run from the command line on that directory, one per-worker and one
``--aggregate``; Debian's Prometheus scrapes both with static targets, and
discovers the workers themselves through the fan-in's ``/targets`` with
``http_sd_configs``.  One worker is killed with SIGKILL: gunicorn starts
another, which takes the same slot, and neither fan-in's scrape fails.

Every worker counts 100 ticks a second, so the fleet's rate is known: a
false counter reset would show as a spike in ``rate()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

from typing import TYPE_CHECKING

import pytest


pytest.importorskip("aiohttp")

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

from promloop.aio.fanin import start_fanin_in_process
from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server_in_thread

from .peers import APPS, http_get, peers_required, prometheus, require_binary, running, wait_for


if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


pytestmark = pytest.mark.e2e

TICKS_PER_SECOND = 100  # per worker, as the apps count them
WORKERS = 3
WINDOW = "5m"  # longer than any test: the whole run
# The fan-ins are scraped every 2 s, with 2 s to answer: 1.3 s for the workers,
# and room to merge on a loaded machine.  (The workers themselves, through
# /targets, every second.)
FANIN_SCRAPES = {"scrape_interval": "2s", "scrape_timeout": "2s"}


def require_gunicorn() -> None:
    """Skip without gunicorn (a test dependency), or fail in CI."""
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        if peers_required():
            pytest.fail("gunicorn is not installed; CI must install the tests extra.")
        pytest.skip("gunicorn is not installed (pip install gunicorn)")


def gunicorn_options() -> list[str]:
    """Return options that keep parallel gunicorns apart (a control socket in $HOME, 23+)."""
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for setting in KNOWN_SETTINGS for flag in setting.cli or ()}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


@contextlib.contextmanager
def gunicorn(tmp_path: Path, targets: Path, kind: str) -> Iterator[subprocess.Popen[str]]:
    """Run gunicorn with three workers of *kind* until the block ends."""
    require_gunicorn()
    app = {
        "sync": ["-c", str(APPS / "fleet_gunicorn.py"), "fleet_sync:app"],
        "aiohttp": ["--worker-class", "aiohttp.GunicornWebWorker", "fleet_aiohttp:make_app"],
    }[kind]
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--chdir",
        str(APPS),
        "--workers",
        str(WORKERS),
        "--bind",
        "127.0.0.1:0",
        "--error-logfile",
        str(tmp_path / "gunicorn.log"),
        "--graceful-timeout",
        "5",
        *gunicorn_options(),
        *app,
    ]
    environment = {**os.environ, "FLEET_TARGETS": str(targets)}
    with running(command, env=environment) as process:
        wait_for(
            lambda: len(slot_files(targets)) == WORKERS,
            timeout=60,
            what=f"{WORKERS} workers to register (log: {tmp_path / 'gunicorn.log'})",
        )
        yield process


@contextlib.contextmanager
def fanin(targets: Path, *options: str) -> Iterator[str]:
    """Run ``python -m promloop fanin`` until the block ends; yield its metrics URL."""
    command = [sys.executable, "-m", "promloop", "fanin", str(targets), "--addr=127.0.0.1"]
    with running([*command, *options]) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Serving metrics at "), process.communicate(timeout=10)
        yield line.removeprefix("Serving metrics at ").strip()


def slot_files(targets: Path) -> dict[str, str]:
    """Map each worker's slot to the address its file names."""
    found = {}
    for path in targets.glob("promloop-worker-*.json"):
        with contextlib.suppress(FileNotFoundError, ValueError):
            [group] = json.loads(path.read_text())
            found[group["labels"]["worker"]] = group["targets"][0]
    return found


def worker_pid(address: str) -> int:
    """Ask a worker for its process ID (the e2e_fleet_worker_pid gauge it serves)."""
    _, _, body = http_get(f"http://{address}/metrics", **{"Accept-Encoding": "identity"})
    for family in text_families(body.decode()):
        if family.name == "e2e_fleet_worker_pid":
            return int(family.samples[0].value)
    raise AssertionError(body)


def host_port(url: str) -> str:
    return url.split("/")[2]


class TestGunicornFleet:
    @pytest.mark.parametrize("kind", ["sync", "aiohttp"])
    def test_kill_a_worker(self, tmp_path, kind):
        """A killed worker's slot is reused; scrapes never fail; rate() sees no spike."""
        targets = tmp_path / "targets"
        targets.mkdir()
        with (
            gunicorn(tmp_path, targets, kind),
            fanin(targets, "--aggregate") as aggregate,
            fanin(targets) as per_worker,
        ):
            scrape_configs = [
                {
                    "job_name": "aggregate",
                    "static_configs": [{"targets": [host_port(aggregate)]}],
                    **FANIN_SCRAPES,
                },
                {
                    "job_name": "per_worker",
                    "static_configs": [{"targets": [host_port(per_worker)]}],
                    **FANIN_SCRAPES,
                },
                {
                    "job_name": "direct",
                    "http_sd_configs": [
                        {"url": f"http://{host_port(aggregate)}/targets", "refresh_interval": "1s"}
                    ],
                },
            ]
            with prometheus(tmp_path, scrape_configs) as server:
                server.wait_until_up(2 + WORKERS)
                # A baseline: the fleet's rate before anything happens.
                wait_for(
                    lambda: server.value('count_over_time(up{job="aggregate"}[1m])') >= 6,
                    timeout=60,
                    what="six scrapes of the fan-in",
                )
                baseline = server.value('rate(e2e_fleet_ticks_total{job="aggregate"}[10s])')

                before = slot_files(targets)
                killed = worker_pid(before["1"])
                os.kill(killed, signal.SIGKILL)

                def replaced() -> int | None:
                    address = slot_files(targets).get("1")
                    if address is None or address == before["1"]:
                        return None
                    return worker_pid(address)

                replacement = wait_for(replaced, timeout=60, what="slot 1 to be taken again")
                # Twelve seconds of the replacement, seen through the per-worker
                # fan-in: every rate() window below has seen the change.
                wait_for(
                    lambda: (
                        server.value(
                            'e2e_fleet_ticks_total{job="per_worker",worker="1"}', timeout=5
                        )
                        >= 12 * TICKS_PER_SECOND
                    ),
                    timeout=60,
                    what="the replacement to count for twelve seconds",
                )
                direct = wait_for(
                    lambda: direct_targets(server, slot_files(targets)),
                    timeout=30,
                    what="Prometheus to find the replacement through /targets",
                )
                query = {
                    "up": 'min(min_over_time(up{job=~"aggregate|per_worker"}[%s]))',
                    "aggregate resets": 'resets(e2e_fleet_ticks_total{job="aggregate"}[%s])',
                    "aggregate peak": (
                        'max_over_time(rate(e2e_fleet_ticks_total{job="aggregate"}[10s])[%s:1s])'
                    ),
                    "slot 1 resets": (
                        'resets(e2e_fleet_ticks_total{job="per_worker",worker="1"}[%s])'
                    ),
                    "per-worker peak": (
                        "max_over_time(sum(rate("
                        'e2e_fleet_ticks_total{job="per_worker"}[10s]))[%s:1s])'
                    ),
                    "naive sum resets": (
                        'resets(sum(e2e_fleet_ticks_total{job="per_worker"})[%s:1s])'
                    ),
                    "naive sum peak": (
                        "max_over_time(rate(sum("
                        'e2e_fleet_ticks_total{job="per_worker"})[10s:1s])[%s:1s])'
                    ),
                    "pid": 'e2e_fleet_worker_pid{job="per_worker",worker="1"}',
                }
                values = {
                    what: server.value(q % WINDOW if "%s" in q else q) for what, q in query.items()
                }
                files = sorted(slot_files(targets))

        expected_rate = WORKERS * TICKS_PER_SECOND
        assert expected_rate * 0.5 < baseline < expected_rate * 1.5, baseline
        assert ["0", "1", "2"] == files  # the replacement took slot 1: no slot 3
        assert killed != replacement
        assert float(replacement) == values["pid"]
        assert 1.0 == values["up"]  # neither fan-in's scrape ever failed
        assert 0.0 == values["aggregate resets"]  # the dead worker's ticks were carried
        assert values["aggregate peak"] < 1.5 * baseline, (values, baseline)
        assert 1.0 == values["slot 1 resets"]  # per worker: a reset, which rate() handles
        assert values["per-worker peak"] < 1.5 * baseline, (values, baseline)
        # What the aggregate checks guard against: summing per-worker series
        # after the fact goes backwards when a worker dies, and rate() spikes.
        assert values["naive sum resets"] >= 1.0
        assert values["naive sum peak"] > 1.5 * baseline, (values, baseline)
        assert {"0", "1", "2"} == {t["labels"]["worker"] for t in direct}


def direct_targets(server, files: dict[str, str]) -> list[dict[str, object]] | None:
    """Return Prometheus's targets of the direct job once they are the workers now registered."""
    direct = [t for t in server.targets() if t["labels"]["job"] == "direct"]
    current = {t["labels"]["instance"] for t in direct if t["health"] == "up"}
    return direct if current == set(files.values()) and len(direct) == WORKERS else None


def rich_registry(offset: int) -> CollectorRegistry:
    """Return a registry with every kind of metric, its values shifted by *offset*."""
    registry = CollectorRegistry()
    counter = Counter("e2e_jobs", "Jobs done.", ["queue"], registry=registry)
    counter.labels("default").inc(1 + offset)
    counter.labels('odd "quoted" \\ value\n').inc(2, exemplar={"trace_id": f"t{offset}"})
    Gauge("e2e_queue_length", "Jobs waiting.", registry=registry).set(3 + offset)
    histogram = Histogram("e2e_latency_seconds", "Latency.", registry=registry)
    histogram.observe(0.2 + offset, exemplar={"trace_id": "abc"})
    Summary("e2e_payload_bytes", "Payload size.", registry=registry).observe(512 + offset)
    Info("e2e_build", "Build information.", registry=registry).info({"version": "1.2"})
    Enum("e2e_state", "State.", states=["up", "down"], registry=registry).state("up")
    return registry


class TestFanInOutput:
    @pytest.mark.parametrize(
        "options", [{}, {"aggregate": True}, {"aggregate": True, "gauges": "per-worker"}]
    )
    def test_parsers_and_promtool_accept_it(self, tmp_path, options):
        """The merged output passes promtool and both of prometheus_client's parsers."""
        promtool = require_binary("promtool")
        workers = [
            start_http_server_in_thread(
                addr="127.0.0.1",
                registry=rich_registry(n),
                service_discovery=FileSD(tmp_path, slot="worker"),
            )
            for n in range(2)
        ]
        fanin = start_fanin_in_process(tmp_path, addr="127.0.0.1", **options)
        try:
            _, _, text = http_get(fanin.metrics_url, **{"Accept-Encoding": "identity"})
            _, _, om = http_get(
                fanin.metrics_url,
                Accept="application/openmetrics-text;version=1.0.0",
                **{"Accept-Encoding": "identity"},
            )
        finally:
            fanin.close()
            for server in workers:
                server.close()

        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, check=False, timeout=60
        )
        text_names = {f.name for f in text_families(text.decode())}
        om_families = list(openmetrics_families(om.decode()))

        assert (0, b"", b"") == (lint.returncode, lint.stdout, lint.stderr)
        assert {"e2e_jobs", "e2e_latency_seconds", "e2e_payload_bytes", "e2e_state"} <= text_names
        assert {"e2e_build", "promloop_fanin_target_up"} <= {f.name for f in om_families}
        exemplars = [s.exemplar for f in om_families for s in f.samples if s.exemplar]
        assert exemplars  # kept through the trip
