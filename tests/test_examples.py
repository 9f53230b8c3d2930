"""Every example in examples/ runs with one command and serves what it says (issue: docs)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys

import pytest

from prometheus_client.parser import text_string_to_metric_families

from .peers import EXAMPLES, example, free_port, http_get, prometheus, running, wait_for
from .test_e2e_fleet import gunicorn_options, require_gunicorn
from .test_fanin_cli import child_has_exited


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

    @pytest.mark.parametrize("kind", ["sync", "gthread", "aiohttp"])
    def test_gunicorn(self, tmp_path, kind):
        """The gunicorn example's hooks: a fan-in from the master, and every worker behind it.

        ``--threads`` makes gunicorn run threaded workers instead of sync ones.
        """
        require_gunicorn()
        log = tmp_path / "gunicorn.log"
        app = {
            "sync": ["app:app"],
            "gthread": ["--threads", "2", "app:app"],
            "aiohttp": ["--worker-class", "aiohttp.GunicornWebWorker", "aiohttp_app:make_app"],
        }[kind]
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(EXAMPLES / "gunicorn" / "gunicorn.conf.py"),
            "--chdir",
            str(EXAMPLES / "gunicorn"),
            "--error-logfile",
            str(log),
            *gunicorn_options(),
            *app,
        ]
        environment = {
            **os.environ,
            "METRICS_TARGETS": str(tmp_path / "targets"),
            "METRICS_PORT": "0",
            "APP_BIND": "127.0.0.1:0",
        }

        def logged(pattern):
            return lambda: log.exists() and re.search(pattern, log.read_text())

        with running(command, env=environment) as master:
            found = wait_for(
                logged(r"Serving metrics at (\S+) \(fan-in process (\d+)\)"),
                timeout=60,
                what="the fan-in",
            )
            fanin_url, fanin_pid = found[1], int(found[2])
            app_url = wait_for(logged(r"Listening at: (\S+)"), timeout=60, what="gunicorn")[1]
            workers = wait_for(
                lambda: len(worker_labels(fanin_url)) == 3 and worker_labels(fanin_url),
                timeout=60,
                what="three workers behind the fan-in",
            )
            for _ in range(6):
                http_get(app_url)
            requests = wait_for(
                lambda: (
                    sum(
                        value
                        for (name, _), value in samples(fanin_url).items()
                        if name == "app_requests_total"
                    )
                    == 6
                ),
                timeout=30,
                what="six requests counted",
            )
            master.terminate()
            master.wait(30)
            gone = wait_for(
                lambda: child_has_exited(fanin_pid),
                timeout=30,
                what="the fan-in to stop with gunicorn",
            )

        assert {"0", "1", "2"} == workers
        assert requests
        assert gone
        assert [] == list((tmp_path / "targets").glob("*.json"))


def worker_labels(url):
    """Return the worker labels of the targets the fan-in at *url* merged."""
    return {
        dict(labels)["worker"]
        for (name, labels), value in samples(url).items()
        if name == "promloop_fanin_target_up" and value == 1.0
    }


@contextlib.contextmanager
def example_fleet(tmp_path):
    """Run a copy of the fleet (run_fleet.py writes next to itself); yield the target files."""
    targets = tmp_path / "examples" / "fleet" / "targets"
    script = tmp_path / "examples" / "fleet" / "run_fleet.py"
    with running([sys.executable, str(script)], cwd=tmp_path):
        wait_for(lambda: len(list(targets.glob("*.json"))) == 3, timeout=30, what="three workers")
        yield list(targets.glob("*.json"))
