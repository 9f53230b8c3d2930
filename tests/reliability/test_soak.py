"""Soak: a real Prometheus scrapes every mount point each second while the apps run load."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from pathlib import Path

import pytest

from ..peers import prometheus, running
from .resources import scaled


pytest.importorskip("aiohttp")
pytest.importorskip("twisted")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parent.parent.parent
SOAK_SECONDS = scaled(40, 600)


@contextlib.contextmanager
def soak_app(kind: str):
    with running([sys.executable, "-m", "tests.reliability.soak_apps", kind], cwd=ROOT) as app:
        assert app.stdout is not None
        line = app.stdout.readline()
        if not line:
            pytest.fail(f"the {kind} soak app did not start: {app.communicate()[1]}")
        yield json.loads(line)


class TestSoak:
    def test_every_mount_point_scraped_every_second(self, tmp_path, figure):
        """Not one failed scrape, and the same number of samples at every scrape."""
        with soak_app("aio") as aio_ports, soak_app("twisted") as tx_ports:
            ports = {**aio_ports, **tx_ports}
            scrape_configs = [
                {
                    "job_name": name,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
                for name, port in ports.items()
            ]
            with prometheus(tmp_path, scrape_configs) as server:
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
