"""End to end: a real Prometheus scrapes every promloop mount point (docs/exposition.md).

Debian's ``prometheus`` scrapes the in-loop aiohttp server (in an asyncio
app), the threaded server (in this process), a threaded server behind basic
auth, and MetricsResource (in a Twisted app: under twisted.web, under Klein,
and behind twisted.web's gzip wrapper); the assertions go through
Prometheus's HTTP API.  ``promtool check metrics`` lints the text output.
"""

from __future__ import annotations

import gzip
import subprocess
import threading

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


pytest.importorskip("aiohttp")
pytest.importorskip("twisted")

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from promloop import BasicAuth
from promloop._exposition import gzip_accepted, negotiate
from promloop.aio.web import start_http_server_in_thread

from .accept_headers import PROMETHEUS_2_42, REAL_ACCEPT_HEADERS, VICTORIA_METRICS
from .peers import app, http_get, prometheus, require_binary, victoria_metrics, wait_for


pytestmark = pytest.mark.e2e


@pytest.fixture
def threaded_registry():
    registry = CollectorRegistry()
    Counter("e2e_threaded_jobs", "Jobs done.", registry=registry).inc(5)
    Gauge("e2e_threaded_queue_length", "Jobs waiting.", ["queue"], registry=registry).labels(
        "default"
    ).set(3)
    return registry


def static(job: str, port: int, **extra: object) -> dict[str, object]:
    return {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}], **extra}


class TestPrometheusScrapes:
    def test_every_mount_point(self, tmp_path, threaded_registry):
        """Prometheus finds every endpoint up and reads the values the apps recorded."""
        threaded = start_http_server_in_thread(addr="127.0.0.1", registry=threaded_registry)
        protected = start_http_server_in_thread(
            addr="127.0.0.1", registry=threaded_registry, auth=BasicAuth("prometheus", "s3cret")
        )
        try:
            with app("aio_app.py") as aio_app, app("tx_app.py") as tx_app:
                scrape_configs = [
                    static("inloop", aio_app["port"]),
                    static("threaded", threaded.socket.port),
                    static(
                        "protected",
                        protected.socket.port,
                        basic_auth={"username": "prometheus", "password": "s3cret"},
                    ),
                    static("twisted", tx_app["port"]),
                    static("klein", tx_app["klein_port"]),
                    static("twisted-gzip", tx_app["gzip_port"]),
                ]
                with prometheus(tmp_path, scrape_configs) as server:
                    targets = server.wait_until_up(6)
                    values = {
                        "inloop /a": server.value('e2e_request_seconds_count{route="/a"}'),
                        "inloop failures": server.value("e2e_request_failures_total"),
                        "inloop in progress": server.value("e2e_requests_in_progress"),
                        "threaded": server.value('e2e_threaded_jobs_total{job="threaded"}'),
                        "protected": server.value('e2e_threaded_jobs_total{job="protected"}'),
                        "queue": server.value(
                            'e2e_threaded_queue_length{job="threaded",queue="default"}'
                        ),
                        "twisted": server.value('e2e_render_seconds_count{job="twisted"}'),
                        "klein": server.value('e2e_render_seconds_count{job="klein"}'),
                        "twisted-gzip": server.value(
                            'e2e_render_seconds_count{job="twisted-gzip"}'
                        ),
                    }
        finally:
            threaded.close()
            protected.close()

        assert {"inloop", "threaded", "protected", "twisted", "klein", "twisted-gzip"} == {
            t["labels"]["job"] for t in targets
        }
        assert all("" == t["lastError"] for t in targets)
        assert {
            "inloop /a": 2.0,
            "inloop failures": 1.0,
            "inloop in progress": 0.0,
            "threaded": 5.0,
            "protected": 5.0,
            "queue": 3.0,
            "twisted": 2.0,
            "klein": 2.0,
            "twisted-gzip": 2.0,
        } == values

    def test_wrong_credentials_are_refused(self, tmp_path, threaded_registry):
        """Prometheus with the wrong password sees the target down with a 401."""
        protected = start_http_server_in_thread(
            addr="127.0.0.1", registry=threaded_registry, auth=BasicAuth("prometheus", "s3cret")
        )
        try:
            scrape_configs = [
                static(
                    "protected",
                    protected.socket.port,
                    basic_auth={"username": "prometheus", "password": "wrong"},
                )
            ]
            with prometheus(tmp_path, scrape_configs) as server:

                def scraped_once():
                    [target] = server.targets()
                    return target if target["health"] != "unknown" else None

                target = wait_for(scraped_once, timeout=30, what="the first scrape")
        finally:
            protected.close()

        assert "down" == target["health"]
        assert "401" in target["lastError"]


class Recorder(BaseHTTPRequestHandler):
    """Answer any scrape with one gauge, and remember the headers it came with."""

    seen: list[tuple[str | None, str | None]]

    def do_GET(self):
        self.seen.append((self.headers.get("Accept"), self.headers.get("Accept-Encoding")))
        body = b"# TYPE probe gauge\nprobe 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def captured_headers(scraper, tmp_path):
    """Return the (Accept, Accept-Encoding) of the first scrape *scraper* makes."""
    seen: list[tuple[str | None, str | None]] = []
    handler = type("Recording", (Recorder,), {"seen": seen})
    recorder = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    try:
        with scraper(tmp_path, [static("capture", recorder.server_address[1])]) as server:
            server.wait_until_up(1)
    finally:
        recorder.shutdown()
        recorder.server_close()
    return seen[0]


class TestNegotiationWithPrometheus:
    def test_prometheus_gets_openmetrics(self, tmp_path):
        """The Accept header this Prometheus sends is the table's, and gets OpenMetrics, gzipped."""
        accept, accept_encoding = captured_headers(prometheus, tmp_path)

        assert PROMETHEUS_2_42 == accept
        assert REAL_ACCEPT_HEADERS["prometheus-2.42"].content_type == negotiate(accept).content_type
        assert gzip_accepted(accept_encoding), accept_encoding

    def test_victoria_metrics_gets_text(self, tmp_path):
        """The Accept header VictoriaMetrics sends is the table's, and gets text 0.0.4."""
        accept, _ = captured_headers(victoria_metrics, tmp_path)

        assert VICTORIA_METRICS == accept
        assert (
            REAL_ACCEPT_HEADERS["victoria-metrics"].content_type == negotiate(accept).content_type
        )


class TestPromtool:
    def test_text_output_lints_clean(self, threaded_registry):
        """The text output passes `promtool check metrics` without a remark."""
        promtool = require_binary("promtool")
        Histogram("e2e_latency_seconds", "Latency.", registry=threaded_registry).observe(0.2)
        Summary("e2e_payload_bytes", "Payload size.", registry=threaded_registry).observe(512)
        server = start_http_server_in_thread(addr="127.0.0.1", registry=threaded_registry)
        try:
            _, headers, body = http_get(server.metrics_url, **{"Accept-Encoding": "gzip"})
        finally:
            server.close()
        text = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body

        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, check=False, timeout=60
        )

        assert (0, b"", b"") == (result.returncode, result.stdout, result.stderr)
