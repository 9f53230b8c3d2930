"""prometheus_client's multiprocess mode through promloop's exposition (SPEC §4)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


pytest.importorskip("aiohttp")

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from promloop.aio.web import start_http_server_in_thread

from .peers import APPS, http_get


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
