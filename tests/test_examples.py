"""Every example in examples/ runs with one command and serves what it says (issue: docs)."""

from __future__ import annotations

import contextlib
import shutil
import sys

import pytest

from prometheus_client.parser import text_string_to_metric_families

from .peers import EXAMPLES, example, free_port, http_get, prometheus, running, wait_for


pytest.importorskip("aiohttp")

pytestmark = pytest.mark.e2e


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, _, body = http_get(url, **{"Accept-Encoding": "identity"})
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


class TestExamples:
    def test_demo(self):
        """The README's demo serves simulated requests."""
        with example("demo.py", "--port", "0") as url:
            found = wait_for(
                lambda: any(n == "demo_request_seconds_count" for n, _ in samples(url)),
                timeout=30,
                what="simulated requests",
            )
        assert found

    def test_aiohttp_app(self):
        """The aiohttp app measures its requests by route template, and its lookups."""
        port = free_port()
        with example("aiohttp_app.py", "--port", str(port)) as url:
            for user in ("1", "2"):
                http_get(f"http://127.0.0.1:{port}/users/{user}")
            metrics = samples(url)

        key = (("method", "GET"), ("route", "/users/{id}"), ("status", "200"))
        assert 2.0 == metrics["http_server_requests_total", key]
        assert 2.0 == metrics["user_lookup_seconds_count", ()]

    def test_sync_worker(self):
        """The synchronous program serves its job metrics from a thread."""
        with example("sync_worker.py", "--port", "0") as url:
            jobs = wait_for(
                lambda: samples(url).get(("worker_jobs_total", ())), timeout=30, what="jobs"
            )
        assert jobs >= 1

    def test_klein_app(self):
        """The Klein app times its route with tx decorators and serves MetricsResource."""
        pytest.importorskip("klein")
        port = free_port()
        with example("klein_app.py", "--port", str(port)) as url:
            _, _, body = http_get(f"http://127.0.0.1:{port}/hello")
            metrics = samples(url)

        assert b"Hello!" == body
        assert 1.0 == metrics["greeting_seconds_count", ()]

    def test_fleet(self, tmp_path):
        """Three workers on port 0 register through FileSD; the example config finds them all."""
        shutil.copytree(EXAMPLES / "fleet", tmp_path / "examples" / "fleet")
        config = tmp_path / "examples" / "fleet" / "prometheus.yml"
        scrape = {
            "job_name": "fleet",
            "file_sd_configs": [
                {
                    "files": [str(tmp_path / "examples/fleet/targets/*.json")],
                    "refresh_interval": "1s",
                }
            ],
        }
        assert "examples/fleet/targets/*.json" in config.read_text()  # what the example says
        with (
            example_fleet(tmp_path) as targets,
            prometheus(tmp_path, [scrape]) as server,
        ):
            up = server.wait_until_up(3)

        assert 3 == len(list(targets))
        assert {"alpha", "beta", "gamma"} == {t["labels"]["worker"] for t in up}


@contextlib.contextmanager
def example_fleet(tmp_path):
    """Run a copy of the fleet (run_fleet.py writes next to itself); yield the target files."""
    targets = tmp_path / "examples" / "fleet" / "targets"
    script = tmp_path / "examples" / "fleet" / "run_fleet.py"
    with running([sys.executable, str(script)], cwd=tmp_path):
        wait_for(lambda: len(list(targets.glob("*.json"))) == 3, timeout=30, what="three workers")
        yield list(targets.glob("*.json"))
