"""Content negotiation with the Accept headers real scrapers send, on every mount point.

The table lives in tests/accept_headers.py; the rules in docs/exposition.md.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import pytest

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from promloop._exposition import negotiate

from .accept_headers import REAL_ACCEPT_HEADERS


CASES = [pytest.param(case, id=name) for name, case in REAL_ACCEPT_HEADERS.items()]


def expected_body(registry, case):
    """Render *registry* as prometheus_client does in the format and escaping of *case*."""
    if case.openmetrics:
        return openmetrics_exposition.generate_latest(registry, escaping=case.escaping)
    return generate_latest(registry, escaping=case.escaping)


class TestNegotiate:
    @pytest.mark.parametrize("case", CASES)
    def test_real_headers(self, case):
        """Each real Accept header gets the format, escaping and content type of the table."""
        chosen = negotiate(case.accept)

        assert (case.content_type, case.openmetrics, case.escaping) == (
            chosen.content_type,
            chosen.openmetrics,
            chosen.escaping,
        )

    @pytest.mark.parametrize("case", CASES)
    def test_bytes_like_text(self, case):
        """A header handed over as bytes (Twisted) is negotiated as the same text (aiohttp)."""
        as_bytes = None if case.accept is None else case.accept.encode()

        assert negotiate(case.accept) == negotiate(as_bytes)


@pytest.fixture(scope="module")
def utf8_registry():
    """Build a registry with a name outside the legacy character set, so escaping shows."""
    registry = CollectorRegistry()
    Gauge("my.gauge", "A dotted name.", ["label.dot"], registry=registry).labels("x").set(1)
    Counter("hits", "Hits.", registry=registry).inc(2)
    return registry


def get(url, accept):
    headers = {} if accept is None else {"Accept": accept}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 -- loopback URL
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, response.headers["Content-Type"], response.read()


@pytest.fixture(scope="module")
def aiohttp_mounts(utf8_registry):
    """Serve the handler, the in-loop server and the threaded server, each on 127.0.0.1."""
    pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")
    from aiohttp import web

    from promloop.aio.web import make_handler, start_http_server, start_http_server_in_thread

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="negotiation-test-loop")
    thread.start()

    def in_loop(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)

    async def mounted_handler():
        app = web.Application()
        app.router.add_get("/metrics", make_handler(utf8_registry))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = in_loop(mounted_handler())
    server = in_loop(start_http_server(addr="127.0.0.1", registry=utf8_registry))
    threaded = start_http_server_in_thread(addr="127.0.0.1", registry=utf8_registry)
    try:
        yield {
            "handler": f"http://127.0.0.1:{runner.addresses[0][1]}/metrics",
            "server": server.metrics_url,
            "threaded": threaded.metrics_url,
        }
    finally:
        threaded.close()
        in_loop(server.close())
        in_loop(runner.cleanup())
        in_loop(loop.shutdown_default_executor())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class TestMountPoints:
    @pytest.mark.parametrize("mount", ["handler", "server", "threaded"])
    @pytest.mark.parametrize("case", CASES)
    def test_aiohttp(self, aiohttp_mounts, utf8_registry, mount, case):
        """Every aiohttp mount point answers each real header as the table says."""
        status, content_type, body = get(aiohttp_mounts[mount], case.accept)

        assert (200, case.content_type) == (status, content_type)
        assert expected_body(utf8_registry, case) == body

    @pytest.mark.parametrize("case", CASES)
    def test_twisted(self, utf8_registry, case):
        """MetricsResource answers each real header as the table says."""
        pytest.importorskip(
            "twisted", reason="the no-Twisted tox environments test the ImportError"
        )
        from twisted.internet.task import Clock
        from twisted.web.test.requesthelper import DummyRequest

        from promloop.tx.web import MetricsResource

        class Pool:
            def callInThread(self, work):  # noqa: N802 -- Twisted's name
                work()

        class Reactor(Clock):
            def getThreadPool(self):  # noqa: N802 -- Twisted's name
                return Pool()

            def callFromThread(self, function, *args):  # noqa: N802 -- Twisted's name
                function(*args)

        request = DummyRequest([b"metrics"])
        if case.accept is not None:
            request.requestHeaders.addRawHeader(b"Accept", case.accept.encode())

        MetricsResource(utf8_registry, reactor=Reactor()).render(request)

        assert request.finished
        assert [case.content_type.encode()] == request.responseHeaders.getRawHeaders(
            b"Content-Type"
        )
        assert expected_body(utf8_registry, case) == b"".join(request.written)
