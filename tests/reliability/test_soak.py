"""Soak: a real Prometheus scrapes every mount point each second while the apps run load."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from pathlib import Path

import pytest

from ..peers import free_port, prometheus, running
from .resources import scaled


pytest.importorskip("aiohttp")
pytest.importorskip("twisted")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parent.parent.parent
SOAK_SECONDS = scaled(40, 600)
LIFETIME = SOAK_SECONDS + 300
"""Seconds each process of the soak may live (peers.LIFETIME is shorter than the long soak)."""


@contextlib.contextmanager
def soak_app(kind: str, *args: str):
    command = [sys.executable, "-m", "tests.reliability.soak_apps", kind, *args]
    with running(command, cwd=ROOT, lifetime=LIFETIME) as app:
        assert app.stdout is not None
        line = app.stdout.readline()
        if not line:
            pytest.fail(f"the {kind} soak app did not start: {app.communicate()[1]}")
        yield json.loads(line)


@contextlib.contextmanager
def fan_in(directory: Path, *options: str):
    """Run ``python -m promloop fanin`` on *directory*; yield its port."""
    port = free_port()
    command = [
        sys.executable, "-m", "promloop", "fanin", str(directory),
        "--addr", "127.0.0.1", "--port", str(port), *options,
    ]  # fmt: skip
    with running(command, lifetime=LIFETIME) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "Serving metrics at" not in line:
            pytest.fail(f"the fan-in did not start: {line}{process.communicate()[1]}")
        yield port


class TestSoak:
    def test_every_mount_point_scraped_every_second(self, tmp_path, figure):
        """Not one failed scrape, and the same number of samples at every scrape.

        The mount points of an asyncio app and a Twisted app, and two fan-ins (one
        labelling each worker's samples, one summing them) in front of two workers.
        """
        directory = tmp_path / "fleet"
        directory.mkdir()
        with (
            soak_app("aio") as aio_ports,
            soak_app("twisted") as tx_ports,
            soak_app("worker", str(directory)),
            soak_app("worker", str(directory)),
            fan_in(directory) as per_worker_port,
            fan_in(directory, "--aggregate") as aggregate_port,
        ):
            ports = {
                **aio_ports,
                **tx_ports,
                "fan-in": per_worker_port,
                "fan-in --aggregate": aggregate_port,
            }
            scrape_configs = [
                {
                    "job_name": name,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
                for name, port in ports.items()
            ]
            with prometheus(tmp_path, scrape_configs, lifetime=LIFETIME) as server:
                server.wait_until_up(len(ports))
                started = time.monotonic()
                time.sleep(SOAK_SECONDS)
                window = f"{int(time.monotonic() - started)}s"
                results = {
                    name: {
                        "scrapes": server.value(f'count_over_time(up{{job="{name}"}}[{window}])'),
                        "failed": server.value(
                            f'count_over_time(up{{job="{name}"}}[{window}])'
                            f' - sum_over_time(up{{job="{name}"}}[{window}])'
                        ),
                        "samples_min": server.value(
                            f'min_over_time(scrape_samples_scraped{{job="{name}"}}[{window}])'
                        ),
                        "samples_max": server.value(
                            f'max_over_time(scrape_samples_scraped{{job="{name}"}}[{window}])'
                        ),
                        "duration_max": server.value(
                            f'max_over_time(scrape_duration_seconds{{job="{name}"}}[{window}])'
                        ),
                    }
                    for name in ports
                }
        for name, result in results.items():
            figure(f"{name}: scrapes", result["scrapes"], "", seconds=SOAK_SECONDS)
            figure(f"{name}: failed scrapes", result["failed"], "")
            figure(
                f"{name}: samples per scrape",
                result["samples_min"],
                "",
                highest=result["samples_max"],
            )
            figure(f"{name}: slowest scrape", round(result["duration_max"] * 1000, 1), "ms")
        for result in results.values():
            assert 0 == result["failed"]
            assert result["samples_min"] == result["samples_max"]
            assert result["scrapes"] >= SOAK_SECONDS * 0.8
