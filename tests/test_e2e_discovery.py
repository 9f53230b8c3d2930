"""End to end: real scrapers discover promloop processes (docs/discovery.md).

A real Prometheus finds two promloop processes through ``file_sd_configs``
over a FileSD directory; VictoriaMetrics (Debian's Prometheus is built
without Consul discovery) finds one through ``consul_sd_configs`` pointed at
the fake Consul agent it registered with -- which also shows that the fake
speaks Consul's catalog API as real clients expect.
"""

from __future__ import annotations

import pytest


pytest.importorskip("aiohttp")

from .fake_consul import FakeConsul
from .peers import app, prometheus, victoria_metrics


pytestmark = pytest.mark.e2e


class TestFileSDWithPrometheus:
    def test_two_processes_discovered(self, tmp_path):
        """Prometheus discovers both processes through their files, with their labels."""
        targets_dir = tmp_path / "targets"
        targets_dir.mkdir()
        scrape_configs = [
            {
                "job_name": "fleet",
                "file_sd_configs": [{"files": [f"{targets_dir}/*.json"], "refresh_interval": "1s"}],
            }
        ]
        with (
            app("aio_app.py", "--file-sd", str(targets_dir), "--worker", "1") as first,
            app("aio_app.py", "--file-sd", str(targets_dir), "--worker", "2") as second,
            prometheus(tmp_path, scrape_configs) as server,
        ):
            targets = server.wait_until_up(2)
            total = server.value('sum(e2e_request_seconds_count{job="fleet",app="aio"})')

        assert {f"127.0.0.1:{first['port']}", f"127.0.0.1:{second['port']}"} == {
            t["labels"]["instance"] for t in targets
        }
        assert {"1", "2"} == {t["labels"]["worker"] for t in targets}
        assert 8.0 == total  # four requests in each process, the failed one included


class TestConsulWithVictoriaMetrics:
    def test_registered_service_is_scraped(self, tmp_path):
        """VictoriaMetrics discovers the service ConsulAgent registered, and scrapes it."""
        consul = FakeConsul().start()
        try:
            scrape_configs = [
                {
                    "job_name": "consul",
                    "consul_sd_configs": [
                        {"server": f"127.0.0.1:{consul.port}", "services": ["e2e-metrics"]}
                    ],
                    "relabel_configs": [
                        {
                            "source_labels": ["__meta_consul_service_id"],
                            "target_label": "service_id",
                        }
                    ],
                }
            ]
            with (
                app("aio_app.py", "--consul", consul.url) as registered,
                victoria_metrics(tmp_path, scrape_configs) as server,
            ):
                [target] = server.wait_until_up(1)
                failures = server.value('e2e_request_failures_total{job="consul"}')
        finally:
            consul.close()

        assert f"127.0.0.1:{registered['port']}" == target["labels"]["instance"]
        assert f"e2e-metrics-127.0.0.1-{registered['port']}" == target["labels"]["service_id"]
        assert 1.0 == failures
