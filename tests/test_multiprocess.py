"""prometheus_client's multiprocess mode through promloop's exposition (docs/exposition.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from typing import TYPE_CHECKING

import pytest


pytest.importorskip("aiohttp")

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from promloop.aio.web import start_http_server_in_thread

from .peers import APPS, app, http_get, require_binary


if TYPE_CHECKING:
    from pathlib import Path


class TestMultiprocessMode:
    def test_sum_of_workers(self, tmp_path):
        """Two worker processes' samples are served summed, by any promloop server."""
        environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        for jobs in ("2", "3"):
            subprocess.run(
                [sys.executable, str(APPS / "multiprocess_worker.py"), jobs],
                env=environment,
                check=True,
                timeout=60,
            )
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))

        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        try:
            _, _, body = http_get(server.metrics_url, **{"Accept-Encoding": "identity"})
        finally:
            server.close()

        assert b"mp_jobs_total 5.0\n" in body
        assert b"mp_job_seconds_count 5.0\n" in body


class TestBeforeScrapeFailures:
    @pytest.mark.e2e
    def test_counted_once_in_the_shared_files(self, tmp_path: Path) -> None:
        """A failing hook's counter is served once per scrape, summed over the processes.

        Every scrape lints clean with `promtool check metrics` (a family served
        twice is "second HELP line for metric name").
        """
        promtool = require_binary("promtool")
        environment = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        with (
            app("multiprocess_server.py", env=environment) as first,
            app("multiprocess_server.py", env=environment) as second,
        ):
            bodies = [
                http_get(server["metrics_url"], **{"Accept-Encoding": "identity"})[2]
                for server in (first, first, second)
            ]

        for body in bodies:
            assert 1 == body.count(b"# HELP promloop_before_scrape_failures"), body.decode()
            linted = subprocess.run(
                [promtool, "check", "metrics"],
                input=body,
                capture_output=True,
                check=False,
                timeout=60,
            )
            assert (0, b"", b"") == (linted.returncode, linted.stdout, linted.stderr)
        counted = b'promloop_before_scrape_failures_total{hook="__main__.check_disk"}'
        assert counted + b" 1.0\n" in bodies[0]
        assert counted + b" 3.0\n" in bodies[2]  # two in the first process, one in the second
        assert b"mp_jobs_total 2.0\n" in bodies[2]
