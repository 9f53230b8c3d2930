"""promloop.aio.web: handlers and servers on real sockets (docs/exposition.md)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
import ssl
import sys
import threading
import urllib.error
import urllib.request
import zlib

from types import SimpleNamespace
from unittest import mock

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

import aiohttp
import trustme

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from promloop import BasicAuth, BearerToken
from promloop.aio import _handler
from promloop.aio.web import (
    MetricsHTTPServer,
    Socket,
    ThreadedMetricsHTTPServer,
    make_handler,
    server_stats,
    start_http_server,
    start_http_server_in_thread,
)

from .peers import port_is_free


run = asyncio.run
PLAIN = {"Accept-Encoding": "identity"}


def fill(registry):
    """Give *registry* 25k series: some 100 kB gzipped, a body of two pieces or more."""
    gauge = Gauge("many", "Many.", ["id"], registry=registry)
    for i in range(25_000):
        gauge.labels(str(i)).set(i / 7)


@pytest.fixture
def hits(registry):
    counter = Counter("hits", "Hits.", registry=registry)
    counter.inc(7)
    return counter


async def fetch(url, *, method="GET", headers=None, ssl_context=None):
    """Return (status, headers, raw body) without decompressing."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, url, headers=headers or PLAIN, ssl=ssl_context) as response,
    ):
        return response.status, response.headers, await response.read()


async def with_middleware(registry, method, headers, requests=1):
    """Serve *registry* behind a middleware that calls *method* on each answer.

    Return (status, headers, raw body), or with *requests* of 2 a HEAD's and
    then a GET's, on one connection.
    """

    @web.middleware
    async def middleware(request, handler):
        answer = await handler(request)
        getattr(answer, method)()
        return answer

    app = web.Application(middlewares=[middleware])
    app.router.add_get("/metrics", make_handler(registry))
    runner, base = await serve_app(app)
    answers = []
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for verb in ["HEAD", "GET"][-requests:]:
                async with session.request(verb, f"{base}/metrics", headers=headers) as answer:
                    answers.append((answer.status, answer.headers, await answer.read()))
    finally:
        await runner.cleanup()
    return answers[0] if requests == 1 else answers


async def raw_request(base, request_line, *header_lines):
    """Send a request byte for byte (as no HTTP client would); return (status, body)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = b"\r\n".join((request_line, b"Host: test", b"Connection: close", *header_lines))
        writer.write(head + b"\r\n\r\n")
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def serve_app(app):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


class _ReportsWildcard(socket.socket):
    """A loopback socket that reports the wildcard address, as a server on "" would."""

    def __init__(self, sock):
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def getsockname(self):
        return ("::", super().getsockname()[1], 0, 0)


class FakeDiscovery:
    """A ServiceDiscovery that records what happens to it."""

    def __init__(self, *, fail_register=False, fail_deregister=False):
        self.registered = []
        self.deregistered = 0
        self.fail_register = fail_register
        self.fail_deregister = fail_deregister

    async def register(self, metrics_server):
        if self.fail_register:
            raise ConnectionError("agent unreachable")
        self.registered.append(metrics_server)

        async def deregister():
            self.deregistered += 1
            if self.fail_deregister:
                raise ConnectionError("agent gone")

        return deregister


class TestMakeHandler:
    def test_mounted(self, registry, hits):
        """A handler mounted in an existing app serves its registry over GET and HEAD."""

        async def main():
            app = web.Application()
            app.router.add_get("/custom/metrics", make_handler(registry))
            runner, base = await serve_app(app)
            try:
                got = await fetch(f"{base}/custom/metrics")
                head = await fetch(f"{base}/custom/metrics", method="HEAD")
            finally:
                await runner.cleanup()
            return got, head

        (status, headers, body), (head_status, head_headers, head_body) = run(main())

        assert (200, CONTENT_TYPE_LATEST) == (status, headers["Content-Type"])
        assert b"hits_total 7.0\n" in body
        assert (200, b"") == (head_status, head_body)
        assert str(len(body)) == head_headers["Content-Length"]

    def test_negotiation_filter_gzip(self, registry, hits):
        """OpenMetrics, name[] and gzip work through aiohttp."""
        Gauge("other", "Other.", registry=registry).set(1)

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry))
            runner, base = await serve_app(app)
            try:
                return await fetch(
                    f"{base}/metrics?name[]=hits_total",
                    headers={
                        "Accept": "application/openmetrics-text;version=1.0.0",
                        "Accept-Encoding": "gzip",
                    },
                )
            finally:
                await runner.cleanup()

        status, headers, body = run(main())
        text = gzip.decompress(body)

        assert 200 == status
        assert (
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
            == headers["Content-Type"]
        )
        assert "gzip" == headers["Content-Encoding"]
        assert b"hits_total 7.0" in text
        assert b"other" not in text

    @pytest.mark.parametrize("encoding", ["identity", "gzip"])
    def test_large_body_written_a_piece_at_a_time(self, registry, encoding):
        """A body of many pieces is streamed, with its length: not joined, not chunked."""
        fill(registry)
        bodies = []

        @web.middleware
        async def spy(request, handler):
            response = await handler(request)
            bodies.append(response._body)  # what aiohttp writes
            return response

        async def main():
            app = web.Application(middlewares=[spy])
            app.router.add_get("/metrics", make_handler(registry))
            runner, base = await serve_app(app)
            headers = {"Accept-Encoding": encoding}
            try:
                got = await fetch(f"{base}/metrics", headers=headers)
                head = await fetch(f"{base}/metrics", method="HEAD", headers=headers)
            finally:
                await runner.cleanup()
            return got, head

        (status, headers, body), (_, head_headers, head_body) = run(main())

        assert 200 == status
        assert generate_latest(registry) == (gzip.decompress(body) if encoding == "gzip" else body)
        assert str(len(body)) == headers["Content-Length"]
        assert "Transfer-Encoding" not in headers
        assert (str(len(body)), b"") == (head_headers["Content-Length"], head_body)
        assert not any(isinstance(streamed, bytes) for streamed in bodies)

    def test_large_body_reads_as_bytes(self, registry):
        """Read by its caller, a body written in pieces is bytes, as in prometheus-async."""
        fill(registry)
        request = make_mocked_request("GET", "/metrics")  # aiohttp's own stand-in

        answer = run(make_handler(registry)(request))

        assert generate_latest(registry) == answer.body
        assert answer.body.decode() == answer.text

    @pytest.mark.parametrize("attribute", ["body", "text"])
    def test_large_body_replaced(self, registry, attribute):
        """A middleware that replaces a large body sends the new one, with its own length."""
        fill(registry)
        read = []

        @web.middleware
        async def replace(request, handler):
            answer = await handler(request)
            setattr(answer, attribute, b"replaced" if attribute == "body" else "replaced")
            read.append((answer.body, answer.text))
            return answer

        async def main():
            app = web.Application(middlewares=[replace])
            app.router.add_get("/metrics", make_handler(registry))
            runner, base = await serve_app(app)
            try:
                return await fetch(f"{base}/metrics", headers={"Accept-Encoding": "identity"})
            finally:
                await runner.cleanup()

        status, headers, body = run(main())

        assert (200, b"replaced", "8") == (status, body, headers["Content-Length"])
        assert [(b"replaced", "replaced")] == read  # read back as set

    def test_large_piece_handed_over_in_slices(self):
        """A large piece (the fan-in's copy of a worker's family) goes out in slices."""
        large = b"x" * (2 * _handler._AT_A_TIME + 1)

        async def main():
            return [bytes(piece) async for piece in _handler._one_by_one((large, b"y"))]

        handed = run(main())

        assert [_handler._AT_A_TIME, _handler._AT_A_TIME, 1, 1] == [len(p) for p in handed]
        assert large + b"y" == b"".join(handed)

    @pytest.mark.parametrize("size", ["small", "large"])
    def test_compression_middleware_encodes_once(self, registry, hits, size):
        """A middleware's enable_compression() leaves a body promloop gzipped already alone."""
        if size == "large":
            fill(registry)

        status, headers, body = run(
            with_middleware(registry, "enable_compression", {"Accept-Encoding": "gzip"})
        )

        assert (200, "gzip") == (status, headers["Content-Encoding"])
        assert generate_latest(registry) == gzip.decompress(body)  # one layer

    def test_compression_middleware_on_head(self, registry):
        """HEAD of a large answer, with a compression middleware, leaves the connection sound."""
        fill(registry)

        (head, get) = run(
            with_middleware(registry, "enable_compression", {"Accept-Encoding": "deflate"}, 2)
        )

        assert (200, b"") == (head[0], head[2])
        assert (200, "deflate") == (get[0], get[1]["Content-Encoding"])
        assert generate_latest(registry) == zlib.decompress(get[2])

    def test_chunked_middleware(self, registry):
        """A middleware's enable_chunked_encoding() on a large answer sends it chunked, whole."""
        fill(registry)

        status, headers, body = run(
            with_middleware(registry, "enable_chunked_encoding", {"Accept-Encoding": "identity"})
        )

        assert (200, "chunked") == (status, headers["Transfer-Encoding"])
        assert generate_latest(registry) == body

    def test_chunked_with_a_length_of_the_callers(self, registry):
        """A length the caller set on a replaced body is theirs: chunked fails, as in aiohttp."""
        fill(registry)
        answer = run(make_handler(registry)(make_mocked_request("GET", "/metrics")))
        answer.body = b"replaced"
        answer.headers["Content-Length"] = "8"

        with pytest.raises(RuntimeError, match="content length is set"):
            answer.enable_chunked_encoding()

    def test_pieces_one_per_turn(self):
        """The pieces of a streamed body are handed over one per turn of the event loop."""
        ticks = 0
        seen = []

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async def main():
            task = asyncio.ensure_future(ticker())
            await asyncio.sleep(0)
            seen.extend(
                [(piece, ticks) async for piece in _handler._one_by_one((b"a", b"b", b"c"))]
            )
            task.cancel()

        run(main())
        counts = [count for _, count in seen]

        assert [b"a", b"b", b"c"] == [piece for piece, _ in seen]
        assert counts == sorted(set(counts))  # the ticker ran between every two pieces

    def test_auth(self, registry, hits):
        """With auth=, a request without credentials gets 401 and a challenge."""

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry, auth=BearerToken("t0k3n")))
            runner, base = await serve_app(app)
            try:
                denied = await fetch(f"{base}/metrics")
                allowed = await fetch(
                    f"{base}/metrics", headers={"Authorization": "Bearer t0k3n", **PLAIN}
                )
            finally:
                await runner.cleanup()
            return denied, allowed

        (status, headers, _), (allowed_status, _, body) = run(main())

        assert (401, 'Bearer realm="metrics"') == (status, headers["WWW-Authenticate"])
        assert 200 == allowed_status
        assert b"hits_total 7.0" in body

    def test_renders_off_the_loop(self, registry):
        """Collecting happens in a worker thread, never in the event loop's thread."""
        threads = []

        class Spy:
            def collect(self):
                threads.append(threading.get_ident())
                return []

        registry.register(Spy())

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry))
            runner, base = await serve_app(app)
            try:
                await fetch(f"{base}/metrics")
            finally:
                await runner.cleanup()
            return threading.get_ident()

        loop_thread = run(main())

        assert 1 == len(threads)
        assert loop_thread != threads[0]

    def test_client_gone_mid_render(self, registry, hits):
        """A client that disconnects mid-render fails no one: the next scrape gets its answer."""
        release = threading.Event()
        entered = threading.Event()

        class Slow:
            def collect(self):
                entered.set()
                release.wait(10)
                return []

        registry.register(Slow())

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry))
            runner, base = await serve_app(app)
            try:
                impatient = asyncio.ensure_future(fetch(f"{base}/metrics"))
                await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
                impatient.cancel()  # the client hangs up while the registry is being read
                with contextlib.suppress(asyncio.CancelledError):
                    await impatient
                patient = asyncio.ensure_future(fetch(f"{base}/metrics"))
                await asyncio.sleep(0.1)
                release.set()
                return await patient
            finally:
                release.set()
                await runner.cleanup()

        status, _, body = run(main())

        assert 200 == status
        assert b"hits_total 7.0" in body

    @pytest.mark.parametrize(
        "authorization",
        [b"Bearer \xff\xfe", b"Bearer t0k\xe9n", b"Basic \xff", b"\xff t0k3n"],
        ids=["invalid-utf-8", "latin-1", "basic-invalid-utf-8", "undecodable-scheme"],
    )
    def test_undecodable_credentials(self, registry, hits, authorization):
        """Credentials whose bytes are not UTF-8 get 401, never a 500 and a traceback."""

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry, auth=BearerToken("t0k3n")))
            runner, base = await serve_app(app)
            try:
                return await raw_request(
                    base, b"GET /metrics HTTP/1.1", b"Authorization: " + authorization
                )
            finally:
                await runner.cleanup()

        status, _ = run(main())

        assert 401 == status

    def test_utf8_token(self, registry, hits):
        """A non-ASCII token is compared as its UTF-8 bytes, as the Twisted resource does."""

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry, auth=BearerToken("tök€n")))
            runner, base = await serve_app(app)
            try:
                right = await raw_request(
                    base, b"GET /metrics HTTP/1.1", "Authorization: Bearer tök€n".encode()
                )
                latin_1 = await raw_request(
                    base, b"GET /metrics HTTP/1.1", b"Authorization: Bearer t\xf6k\x80n"
                )
            finally:
                await runner.cleanup()
            return right, latin_1

        (status, body), (latin_1_status, _) = run(main())

        assert (200, True) == (status, b"hits_total 7.0" in body)
        assert 401 == latin_1_status

    def test_header_lines_repeated(self, registry, hits):
        """Two Authorization lines get 401 (one of them right or not); Accept lines are one list.

        As MetricsResource answers: aiohttp's headers.get() would read the first
        line only, where Twisted's getHeader() reads the last.
        """
        right, wrong = b"Authorization: Bearer t", b"Authorization: Bearer x"

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry, auth=BearerToken("t")))
            runner, base = await serve_app(app)
            try:
                refused = [
                    (await raw_request(base, b"GET /metrics HTTP/1.1", *lines))[0]
                    for lines in ((right, wrong), (wrong, right), (right, right))
                ]
                _, body = await raw_request(
                    base,
                    b"GET /metrics HTTP/1.1",
                    right,
                    b"Accept: text/plain;version=0.0.4;q=0.5",
                    b"Accept: application/openmetrics-text;version=1.0.0",
                )
            finally:
                await runner.cleanup()
            return refused, body

        refused, body = run(main())

        assert [401, 401, 401] == refused
        assert body.endswith(b"# EOF\n")

    def test_undecodable_name_filter(self, registry, hits):
        """A name[] that is not UTF-8 gets 400 once authorised, and 401 before."""

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", make_handler(registry, auth=BearerToken("t")))
            runner, base = await serve_app(app)
            try:
                anonymous = await raw_request(base, b"GET /metrics?name[]=%ff HTTP/1.1")
                authorised = await raw_request(
                    base, b"GET /metrics?name[]=%ff HTTP/1.1", b"Authorization: Bearer t"
                )
            finally:
                await runner.cleanup()
            return anonymous, authorised

        (anonymous, _), (authorised, body) = run(main())

        assert (401, 400) == (anonymous, authorised)
        assert b"name[]" in body

    def test_created(self, registry, hits):
        """created=False drops _created from this handler's answers alone."""

        async def main():
            app = web.Application()
            app.router.add_get("/without", make_handler(registry, created=False))
            app.router.add_get("/with", make_handler(registry))
            runner, base = await serve_app(app)
            try:
                return await fetch(f"{base}/without"), await fetch(f"{base}/with")
            finally:
                await runner.cleanup()

        (_, _, without), (_, _, with_created) = run(main())

        assert b"hits_total 7.0" in without
        assert b"hits_created" not in without
        assert b"hits_created " in with_created

    def test_invalid_arguments(self):
        """Bad registry= or auth= fail when the handler is made, not on the first scrape."""
        with pytest.raises(TypeError, match="registry="):
            make_handler(42)
        with pytest.raises(TypeError, match="auth="):
            make_handler(auth="user:secret")  # type: ignore[arg-type]


class Blocking:
    """A collector that blocks each collect() until released."""

    def __init__(self):
        self.release = threading.Event()

    def collect(self):
        self.release.wait(30)
        return []


class TestScrapeDeadline:
    def test_blocked_render_gets_503_and_the_next_scrape_works(self, registry, hits):
        """A render outlasting the scraper's timeout is answered 503; a later scrape is served."""
        blocking = Blocking()
        registry.register(blocking)

        async def main():
            runner, base = await serve_app(app_with(make_handler(registry)))
            try:
                slow = await fetch(
                    f"{base}/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "0.6"}
                )
                blocking.release.set()
                registry.unregister(blocking)
                return slow, await fetch(f"{base}/metrics")
            finally:
                await runner.cleanup()

        (status, _, body), (next_status, _, next_body) = asyncio.run(main())

        assert 503 == status
        assert b"took longer than 0.35 s" in body
        assert 200 == next_status
        assert b"hits_total 7.0" in next_body


def app_with(handler):
    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app


class TestServerStats:
    def test_stand_in_request(self):
        """A stand-in request with nothing but headers is served; the body is bytes."""
        response = run(server_stats(SimpleNamespace(headers=CIMultiDict())))

        assert CONTENT_TYPE_LATEST == response.headers["Content-Type"]
        assert "text/plain" == response.content_type
        assert isinstance(response.body, bytes)
        assert b"python_info" in response.body

    def test_stand_in_request_openmetrics(self):
        """A stand-in request's Accept header is negotiated as a real one's."""
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

        response = run(server_stats(SimpleNamespace(headers=CIMultiDict(Accept=accept))))

        assert OPENMETRICS + "; escaping=underscores" == response.headers["Content-Type"]
        assert response.body.endswith(b"# EOF\n")

    def test_stand_in_request_with_a_plain_dict(self, registry, hits):
        """A plain dict of headers is looked up case-insensitively, as HTTP headers are."""
        handler = make_handler(registry, auth=BearerToken("t"))
        headers = {"authorization": "Bearer t", "accept": "text/plain;version=0.0.4"}

        refused = run(handler(SimpleNamespace(headers={})))
        response = run(handler(SimpleNamespace(headers=headers)))

        assert 401 == refused.status
        assert "text/plain; version=0.0.4; charset=utf-8" == response.headers["Content-Type"]
        assert b"hits_total 7.0" in response.body

    def test_stand_in_request_large_body(self, registry):
        """A stand-in request's body is bytes, however many pieces the render made."""
        gauge = Gauge("many", "Many.", ["id"], registry=registry)
        for i in range(10_000):
            gauge.labels(str(i)).set(i)

        response = run(make_handler(registry)(SimpleNamespace(headers=CIMultiDict())))

        assert generate_latest(registry) == response.body

    def test_mock_request(self, registry, hits):
        """A unittest.mock request is served: its made-up attributes are not taken for a path."""
        handler = make_handler(registry)
        request = mock.Mock(headers={"Accept": "text/plain;version=0.0.4"})

        response = run(handler(request))

        assert 200 == response.status
        assert "text/plain; version=0.0.4; charset=utf-8" == response.headers["Content-Type"]
        assert b"hits_total 7.0" in response.body

    def test_global_registry(self):
        """server_stats serves prometheus_client's global registry."""

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", server_stats)
            runner, base = await serve_app(app)
            try:
                return await fetch(f"{base}/metrics")
            finally:
                await runner.cleanup()

        status, _, body = run(main())

        assert 200 == status
        assert b"python_info" in body


class TestStartHttpServer:
    def test_serves_and_links(self, registry, hits):
        """GET / links to the metrics path, which serves the registry."""

        async def main():
            server = await start_http_server(addr="127.0.0.1", registry=registry, path="/m")
            try:
                root = await fetch(server.url)
                metrics = await fetch(server.metrics_url)
            finally:
                await server.close()
            return server, root, metrics

        server, (_, root_headers, root_body), (_, _, body) = run(main())

        assert isinstance(server, MetricsHTTPServer)
        assert Socket("127.0.0.1", server.socket.port) == server.socket
        assert f"http://127.0.0.1:{server.socket.port}/" == server.url
        assert f"http://127.0.0.1:{server.socket.port}/m" == server.metrics_url
        assert "/m" == server.metrics_path
        assert root_headers["Content-Type"].startswith("text/html")
        assert b'<a href="/m">' in root_body
        assert b"hits_total 7.0" in body

    def test_all_interfaces_is_one_dual_stack_socket(self):
        """addr="" binds one IPv6 socket that takes IPv4 too: one port for both families.

        Only bound, never listening: tests listen on loopback addresses only.
        """
        import promloop.aio._sockets as module

        if not socket.has_dualstack_ipv6():  # pragma: no cover
            pytest.skip("this host has no dual-stack IPv6")

        with module.dual_stack_socket(0) as sock:
            assert socket.AF_INET6 == sock.family
            assert 0 == sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            assert "::" == sock.getsockname()[0]

    def test_all_interfaces_url(self, registry, monkeypatch):
        """A server on every interface reports "::", and names this host in its URLs."""
        import promloop.aio._sockets as module

        def dual_stack_on_loopback(port):  # listens on loopback, reports "::"
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.bind(("::1", port))
            sock.setblocking(False)
            return _ReportsWildcard(sock)

        monkeypatch.setattr(module, "dual_stack_socket", dual_stack_on_loopback)

        async def main():
            server = await start_http_server(registry=registry)
            try:
                return server, await fetch(f"http://[::1]:{server.socket.port}/metrics")
            finally:
                await server.close()

        server, (status, _, _) = run(main())

        assert 200 == status
        assert "::" == server.socket.addr
        assert f"http://{socket.gethostname()}:{server.socket.port}/" == server.url
        assert f"http://{socket.gethostname()}:{server.socket.port}/metrics" == server.metrics_url

    def test_ipv6_url(self, registry, hits):
        """An IPv6 address is bracketed in the server's URLs, which open."""
        if not socket.has_ipv6:  # pragma: no cover
            pytest.skip("this host has no IPv6")

        async def main():
            server = await start_http_server(addr="::1", registry=registry)
            try:
                return server, await fetch(server.metrics_url)
            finally:
                await server.close()

        server, (status, _, body) = run(main())

        assert f"http://[::1]:{server.socket.port}/metrics" == server.metrics_url
        assert (200, True) == (status, b"hits_total 7.0" in body)

    def test_name_with_two_addresses(self, registry, hits):
        """A name that resolves to several addresses is served on all, on one port."""
        addresses = {
            info[4][0] for info in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
        }

        async def main():
            server = await start_http_server(addr="localhost", registry=registry)
            try:
                return server.socket.port, [
                    (
                        await fetch(
                            f"http://{'[::1]' if a == '::1' else a}:{server.socket.port}/metrics"
                        )
                    )[0]
                    for a in addresses
                ]
            finally:
                await server.close()

        _, statuses = run(main())

        assert [200] * len(addresses) == statuses

    def test_created(self, registry, hits):
        """created=False reaches the server's metrics path."""

        async def main():
            server = await start_http_server(addr="127.0.0.1", registry=registry, created=False)
            try:
                return await fetch(server.metrics_url)
            finally:
                await server.close()

        _, _, body = run(main())

        assert b"hits_total 7.0" in body
        assert b"hits_created" not in body

    def test_close_frees_socket_and_is_idempotent(self, registry):
        """close() frees the port, and a second close() does nothing."""

        async def main():
            server = await start_http_server(addr="127.0.0.1", registry=registry)
            await server.close()
            await server.close()
            return server.socket.port

        assert port_is_free(run(main()))

    def test_address_not_on_this_host(self, registry):
        """An address that is not this host's fails at start with the system's error."""
        with pytest.raises(OSError, match=r"[Aa]ssign"):
            run(start_http_server(addr="192.0.2.1", registry=registry))

    def test_second_address_fails(self, registry, monkeypatch):
        """If one of several addresses cannot be bound, none stays open."""
        import promloop.aio._sockets as module

        bound = []
        real_bound = module._bound

        def bind_once(*args, **kwargs):
            if bound:
                raise OSError(99, "cannot bind the second address")
            bound.append(real_bound(*args, **kwargs))
            return bound[-1]

        monkeypatch.setattr(module, "_bound", bind_once)
        monkeypatch.setattr(
            module.socket,
            "getaddrinfo",
            lambda *a, **k: [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 0)),
            ],
        )

        with pytest.raises(OSError, match="second address"):
            run(start_http_server(addr="twice.example", registry=registry))
        assert -1 == bound[0].fileno()

    def test_port_in_use(self, registry):
        """A port in use fails at start with an error naming the address and port."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]

            with pytest.raises(OSError, match=f"cannot listen on '127.0.0.1' port {port}"):
                run(start_http_server(addr="127.0.0.1", port=port, registry=registry))

    @pytest.mark.parametrize("path", ["metrics", "/", ""])
    def test_bad_path(self, path):
        """A path that does not start with / (or is /) fails at start."""
        with pytest.raises(ValueError, match="path= must start with '/'"):
            run(start_http_server(path=path))

    def test_service_discovery(self, registry):
        """The server registers once it listens, and deregisters on close."""
        discovery = FakeDiscovery()

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", registry=registry, service_discovery=discovery
            )
            registered = server.is_registered
            await server.close()
            await server.close()
            return server, registered

        server, registered = run(main())

        assert [server] == discovery.registered
        assert registered
        assert not server.is_registered
        assert 1 == discovery.deregistered

    def test_registration_failure_frees_socket(self, registry):
        """If registration raises, start fails with it and leaves no socket open."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]

        with pytest.raises(ConnectionError, match="agent unreachable"):
            run(
                start_http_server(
                    addr="127.0.0.1",
                    port=port,
                    registry=registry,
                    service_discovery=FakeDiscovery(fail_register=True),
                )
            )
        assert port_is_free(port)

    def test_deregistration_failure_still_frees_socket(self, registry):
        """A failing deregistration is raised, after the socket has been freed."""

        async def main():
            server = await start_http_server(
                addr="127.0.0.1",
                registry=registry,
                service_discovery=FakeDiscovery(fail_deregister=True),
            )
            with pytest.raises(ConnectionError, match="agent gone"):
                await server.close()
            await server.close()
            return server

        server = run(main())

        assert not server.is_registered
        assert port_is_free(server.socket.port)

    def test_auth(self, registry, hits):
        """With auth=, every path answers 401 without valid credentials, before 404 or 405."""
        auth = BasicAuth("prom", "pw")
        wrong = {"Authorization": BasicAuth("prom", "wrong").authorization(), **PLAIN}
        right = {"Authorization": auth.authorization(), **PLAIN}

        async def main():
            server = await start_http_server(addr="127.0.0.1", registry=registry, auth=auth)
            base = server.url.rstrip("/")
            try:
                refused = [
                    await fetch(f"{base}{path}", method=method, headers=headers)
                    for path in ("/", "/metrics", "/nowhere")
                    for method in ("GET", "HEAD", "POST")
                    for headers in (PLAIN, wrong)
                ]
                allowed = [
                    (await fetch(f"{base}{path}", headers=right))[0]
                    for path in ("/", "/metrics", "/nowhere")
                ]
            finally:
                await server.close()
            return refused, allowed

        refused, allowed = run(main())

        assert [401] * 18 == [status for status, _, _ in refused]
        assert all(headers["WWW-Authenticate"].startswith("Basic ") for _, headers, _ in refused)
        assert [200, 200, 404] == allowed

    def test_auth_header_repeated(self, registry, hits):
        """Every path answers 401 to two Authorization lines, even if one of them is right."""
        right = BearerToken("t").authorization().encode()

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", registry=registry, auth=BearerToken("t")
            )
            base = server.url.rstrip("/")
            try:
                return [
                    (await raw_request(base, b"GET " + path + b" HTTP/1.1", *lines))[0]
                    for path in (b"/", b"/metrics")
                    for lines in (
                        (b"Authorization: " + right,),
                        (b"Authorization: " + right, b"Authorization: Bearer x"),
                        (b"Authorization: Bearer x", b"Authorization: " + right),
                    )
                ]
            finally:
                await server.close()

        assert [200, 401, 401, 200, 401, 401] == run(main())


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    return ca, server_ctx, client_ctx


class TestMalformedRequests:
    def test_one_debug_line_no_traceback(self, registry, caplog):
        """A request aiohttp's parser refuses gets 400, and one DEBUG line without its bytes.

        aiohttp logs each at ERROR with a traceback quoting the offending line:
        a malformed Authorization header would put credentials in the log.
        """

        async def main():
            server = await start_http_server(addr="127.0.0.1", registry=registry)
            try:
                return await raw_request(
                    server.url.rstrip("/"),
                    b"GET /metrics HTTP/1.1",
                    b"Authorization : Bearer s3cret-token",
                )
            finally:
                await server.close()

        with caplog.at_level(logging.DEBUG, logger="aiohttp"):
            status, _ = run(main())

        server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
        assert 400 == status
        assert [(logging.DEBUG, "Refused a malformed request: BadHttpMessage.")] == [
            (r.levelno, r.getMessage()) for r in server_records
        ]
        assert not any(r.exc_info for r in server_records)
        assert "s3cret-token" not in caplog.text

    def test_other_records_unchanged(self, caplog):
        """Whatever else aiohttp's server logs reaches its logger as it was."""
        from promloop.aio._server import _ServerLog

        log = _ServerLog(logging.getLogger("aiohttp.server"), {})
        error = RuntimeError("a handler failed")
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            log.error("Error handling request from %s", "127.0.0.1", exc_info=error)
            log.warning("Something else")

        assert [
            (logging.ERROR, "Error handling request from 127.0.0.1", error),
            (logging.WARNING, "Something else", None),
        ] == [
            (r.levelno, r.getMessage(), r.exc_info[1] if r.exc_info else None)
            for r in caplog.records
        ]


class TestTLS:
    def test_https(self, registry, hits, tls):
        """With ssl_ctx=, the server speaks HTTPS and says so."""
        _, server_ctx, client_ctx = tls

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", registry=registry, ssl_ctx=server_ctx
            )
            try:
                return server, await fetch(server.metrics_url, ssl_context=client_ctx)
            finally:
                await server.close()

        server, (status, _, body) = run(main())

        assert server.https
        assert server.metrics_url.startswith("https://127.0.0.1:")
        assert (200, True) == (status, b"hits_total 7.0" in body)

    # Python 3.10's asyncio leaves the transport of a failed TLS handshake
    # unclosed (its SSL layer was rewritten in 3.11); the warning comes from
    # the garbage collector, not from promloop.
    @pytest.mark.filterwarnings(
        "ignore::pytest.PytestUnraisableExceptionWarning"
        if sys.version_info < (3, 11)
        else "error::pytest.PytestUnraisableExceptionWarning"
    )
    def test_client_certificates(self, registry, hits, tls):
        """A context that requires client certificates turns away clients without one."""
        ca, _, _ = tls
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        ca.configure_trust(server_ctx)
        server_ctx.verify_mode = ssl.CERT_REQUIRED

        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(anonymous)
        identified = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(identified)
        ca.issue_cert("prometheus.example").configure_cert(identified)

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", registry=registry, ssl_ctx=server_ctx
            )
            try:
                with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                    await fetch(server.metrics_url, ssl_context=anonymous)
                return await fetch(server.metrics_url, ssl_context=identified)
            finally:
                await server.close()

        status, _, _ = run(main())

        assert 200 == status


def get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 -- loopback URL
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class TestStartHttpServerInThread:
    def test_serves_from_a_named_daemon_thread(self, registry, hits):
        """A synchronous program gets a metrics endpoint without any asyncio."""
        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        try:
            status, body = get(server.metrics_url)
            threads = [t for t in threading.enumerate() if t.name == "promloop-metrics-server"]
        finally:
            server.close()

        assert isinstance(server, ThreadedMetricsHTTPServer)
        assert (200, True) == (status, b"hits_total 7.0" in body)
        assert 1 == len(threads)
        assert threads[0].daemon
        assert server.url == f"http://127.0.0.1:{server.socket.port}/"
        assert server.metrics_url == server.url + "metrics"
        assert not server.https
        assert not server.protected

    def test_protected(self, registry):
        """A server started with auth= says so (service discovery reads it)."""
        server = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry, auth=BearerToken("t")
        )
        server.close()

        assert server.protected

    def test_close(self, registry):
        """close() frees the socket and is idempotent; the thread ends shortly after."""
        discovery = FakeDiscovery()
        server = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry, service_discovery=discovery
        )
        assert server.is_registered
        thread = next(t for t in threading.enumerate() if t.name == "promloop-metrics-server")

        server.close()
        server.close()

        assert port_is_free(server.socket.port)
        assert not server.is_registered
        assert 1 == discovery.deregistered
        thread.join(10)
        assert not thread.is_alive()

    def test_deregistration_failure_logged(self, registry, caplog):
        """A failing deregistration is logged; close() still frees the socket."""
        server = start_http_server_in_thread(
            addr="127.0.0.1",
            registry=registry,
            service_discovery=FakeDiscovery(fail_deregister=True),
        )

        with caplog.at_level(logging.ERROR, logger="promloop"):
            server.close()

        assert port_is_free(server.socket.port)
        assert "agent gone" in caplog.text

    def test_port_in_use_raises_in_caller(self, registry):
        """A port in use is raised in the caller at once; no thread is left behind."""
        before = set(threading.enumerate())
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError, match="address is in use"):
                start_http_server_in_thread(
                    addr="127.0.0.1", port=taken.getsockname()[1], registry=registry
                )

        assert set() == set(threading.enumerate()) - before

    def test_discovery_failure_raises_in_caller(self, registry):
        """A registration failure is raised in the caller."""
        with pytest.raises(ConnectionError, match="agent unreachable"):
            start_http_server_in_thread(
                addr="127.0.0.1",
                registry=registry,
                service_discovery=FakeDiscovery(fail_register=True),
            )

    def test_same_arguments(self, registry, hits):
        """It takes the same keyword arguments as start_http_server."""
        server = start_http_server_in_thread(
            addr="127.0.0.1",
            registry=registry,
            path="/stats",
            auth=BearerToken("t"),
            created=False,
        )
        try:
            denied, _ = get(server.metrics_url)
            allowed, body = get(server.metrics_url, Authorization="Bearer t")
        finally:
            server.close()

        assert server.metrics_url.endswith("/stats")
        assert (401, 200) == (denied, allowed)
        assert b"hits_total 7.0" in body
        assert b"hits_created" not in body


class TestRepr:
    def test_repr(self, registry):
        """Both servers name their metrics URL in their repr."""
        threaded = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        with contextlib.closing(threaded):
            assert f"<ThreadedMetricsHTTPServer {threaded.metrics_url}>" == repr(threaded)
            assert f"<MetricsHTTPServer {threaded.metrics_url}>" == repr(threaded._server)
