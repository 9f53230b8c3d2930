"""promloop.tx.web.MetricsResource, without a running reactor (docs/exposition.md)."""

from __future__ import annotations

import gzip

import pytest


pytest.importorskip("twisted", reason="the no-Twisted tox environments test the ImportError")

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import parse_qs
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import NOT_DONE_YET, GzipEncoderFactory, Site
from twisted.web.test.requesthelper import DummyRequest

from promloop import BasicAuth, BearerToken
from promloop.tx.web import MetricsResource


class FakeThreadPool:
    def __init__(self):
        self.queued = []

    def callInThread(self, work):  # noqa: N802 -- Twisted's name
        self.queued.append(work)


class FakeReactor(Clock):
    """Runs thread-pool work when told to, callFromThread at once, and time when advanced."""

    def __init__(self):
        super().__init__()
        self.pool = FakeThreadPool()

    def getThreadPool(self):  # noqa: N802 -- Twisted's name
        return self.pool

    def callFromThread(self, function, *args):  # noqa: N802 -- Twisted's name
        function(*args)

    def run_pool(self):
        while self.pool.queued:
            self.pool.queued.pop(0)()


def request(method=b"GET", *, query=b"", **headers):
    """Return a request as twisted.web makes it: raw URI, parsed args, raw header bytes."""
    dummy = DummyRequest([b"metrics"])
    dummy.method = method
    dummy.uri = b"/metrics?" + query if query else b"/metrics"
    dummy.args = parse_qs(query, keep_blank_values=True)
    for name, value in headers.items():
        raw = value if isinstance(value, bytes) else value.encode()
        dummy.requestHeaders.addRawHeader(name.replace("_", "-").encode(), raw)
    return dummy


class Consuming(DummyRequest):
    """A request whose transport is full after each write, until its producer is resumed."""

    def __init__(self):
        super().__init__([b"metrics"])
        self.uri = b"/metrics"
        self.producer = None

    def registerProducer(self, producer, streaming):  # noqa: N802 -- Twisted's name
        assert streaming
        self.producer = producer

    def unregisterProducer(self):  # noqa: N802 -- Twisted's name
        self.producer = None

    def write(self, data):
        super().write(data)
        if self.producer is not None:
            self.producer.pauseProducing()


def fill(registry):
    """Give *registry* 10k series: a body of several pieces."""
    many = Gauge("many", "Many.", ["id"], registry=registry)
    for i in range(10_000):
        many.labels(str(i)).set(i)


def scrape(resource, reactor, dummy):
    assert NOT_DONE_YET == resource.render(dummy)
    reactor.run_pool()
    assert dummy.finished
    return dummy.responseCode or 200, dummy.responseHeaders, b"".join(dummy.written)


@pytest.fixture
def reactor():
    return FakeReactor()


@pytest.fixture
def hits(registry):
    counter = Counter("hits", "Hits.", registry=registry)
    counter.inc(5)
    return counter


class TestMetricsResource:
    def test_get(self, registry, hits, reactor):
        """GET answers the registry's metrics, rendered in the thread pool."""
        resource = MetricsResource(registry, reactor=reactor)
        dummy = request()

        assert NOT_DONE_YET == resource.render(dummy)
        assert not dummy.finished  # nothing rendered in the reactor's thread

        status, headers, body = scrape(resource, reactor, dummy)

        assert 200 == status
        assert [CONTENT_TYPE_LATEST.encode()] == headers.getRawHeaders(b"Content-Type")
        assert b"hits_total 5.0\n" in body

    def test_head(self, registry, hits, reactor):
        """HEAD answers the headers of GET, with no body."""
        resource = MetricsResource(registry, reactor=reactor)

        _, _, get_body = scrape(resource, reactor, request())
        status, headers, body = scrape(resource, reactor, request(b"HEAD"))

        assert (200, b"") == (status, body)
        assert [str(len(get_body)).encode()] == headers.getRawHeaders(b"Content-Length")

    def test_openmetrics_gzip_filter(self, registry, hits, reactor):
        """Negotiation, name[] and gzip follow the shared rules."""
        Gauge("other", "Other.", registry=registry).set(1)
        resource = MetricsResource(registry, reactor=reactor)

        _, headers, body = scrape(
            resource,
            reactor,
            request(
                query=b"name%5B%5D=hits_total",
                Accept="application/openmetrics-text;version=1.0.0",
                Accept_Encoding="gzip",
            ),
        )
        text = gzip.decompress(body)

        assert [b"gzip"] == headers.getRawHeaders(b"Content-Encoding")
        assert text.endswith(b"# EOF\n")
        assert b"hits_total 5.0" in text
        assert b"other" not in text

    def test_auth(self, registry, reactor):
        """With auth=, a request without credentials gets 401 and a challenge."""
        resource = MetricsResource(registry, auth=BasicAuth("prom", "pw"), reactor=reactor)

        status, headers, _ = scrape(resource, reactor, request())

        assert 401 == status
        assert headers.getRawHeaders(b"WWW-Authenticate")[0].startswith(b"Basic ")

    @pytest.mark.parametrize("method", [b"POST", b"PUT", b"OPTIONS", b"DELETE", b"BREW", b"get"])
    def test_other_methods_need_credentials_first(self, registry, hits, reactor, method):
        """Any other method gets 401 without valid credentials, then 405 (never twisted.web's 501).

        twisted.web's own dispatch would answer 405 or 501 before the
        credentials were checked.
        """
        resource = MetricsResource(registry, auth=BearerToken("t"), reactor=reactor)

        anonymous, _, _ = scrape(resource, reactor, request(method))
        status, headers, body = scrape(resource, reactor, request(method, Authorization="Bearer t"))

        assert (401, 405) == (anonymous, status)
        assert [b"GET, HEAD"] == headers.getRawHeaders(b"Allow")
        assert b"hits" not in body

    def test_render_get(self, registry, hits, reactor):
        """render_GET(), twisted.web's name, answers as render() does, for callers that use it."""
        resource = MetricsResource(registry, auth=BearerToken("t"), reactor=reactor)
        anonymous, authorised = request(), request(Authorization="Bearer t")

        assert NOT_DONE_YET == resource.render_GET(anonymous)
        assert NOT_DONE_YET == resource.render_GET(authorised)
        reactor.run_pool()

        assert (401, 200) == (anonymous.responseCode, authorised.responseCode or 200)
        assert b"hits_total 5.0" in b"".join(authorised.written)

    def test_other_methods_without_auth(self, registry, hits, reactor):
        """Without auth=, a method other than GET and HEAD gets 405 at once."""
        resource = MetricsResource(registry, reactor=reactor)

        status, _, _ = scrape(resource, reactor, request(b"POST"))

        assert 405 == status

    def test_created(self, registry, hits, reactor):
        """created=False drops _created from this resource's answers alone."""
        _, _, without = scrape(
            MetricsResource(registry, created=False, reactor=reactor), reactor, request()
        )
        _, _, with_created = scrape(MetricsResource(registry, reactor=reactor), reactor, request())

        assert b"hits_total 5.0" in without
        assert b"hits_created" not in without
        assert b"hits_created " in with_created

    def test_undecodable_name_before_credentials(self, registry, hits, reactor):
        """Credentials come first: an anonymous request with a non-UTF-8 name[] gets 401."""
        resource = MetricsResource(registry, auth=BearerToken("t"), reactor=reactor)

        anonymous, _, _ = scrape(resource, reactor, request(query=b"name[]=%ff"))
        authorised, _, body = scrape(
            resource, reactor, request(query=b"name[]=%ff", Authorization="Bearer t")
        )

        assert (401, 400) == (anonymous, authorised)
        assert b"name[]" in body

    def test_utf8_token(self, registry, hits, reactor):
        """A non-ASCII token is compared as its UTF-8 bytes, as the aiohttp handler does."""
        resource = MetricsResource(registry, auth=BearerToken("tök€n"), reactor=reactor)

        status, _, body = scrape(resource, reactor, request(Authorization="Bearer tök€n".encode()))
        undecodable, _, _ = scrape(resource, reactor, request(Authorization=b"Bearer \xff"))

        assert (200, True) == (status, b"hits_total 5.0" in body)
        assert 401 == undecodable

    def test_header_lines_repeated(self, registry, hits, reactor):
        """Two Authorization lines get 401 (one of them right or not); Accept lines are one list.

        As the aiohttp handler answers: Twisted's getHeader() would read the
        last line only, where aiohttp's headers.get() reads the first.
        """
        resource = MetricsResource(registry, auth=BearerToken("t"), reactor=reactor)

        def twice(name, first, second):
            dummy = request(Authorization="Bearer t")
            dummy.requestHeaders.setRawHeaders(name, [first, second])
            return dummy

        refused = [
            scrape(resource, reactor, twice(b"Authorization", *lines))[0]
            for lines in ((b"Bearer t", b"Bearer x"), (b"Bearer x", b"Bearer t"))
        ]
        _, _, body = scrape(
            resource,
            reactor,
            twice(
                b"Accept",
                b"text/plain;version=0.0.4;q=0.5",
                b"application/openmetrics-text;version=1.0.0",
            ),
        )

        assert [401, 401] == refused
        assert body.endswith(b"# EOF\n")

    @pytest.mark.parametrize("method", [b"GET", b"HEAD"])
    def test_behind_gzip_encoding_wrapper(self, registry, hits, reactor, method):
        """Behind EncodingResourceWrapper(GzipEncoderFactory), the body is gzipped once.

        A real twisted.web site parses the request and encodes the answer,
        over a transport in memory (no reactor runs).
        """
        root = Resource()
        root.putChild(
            b"metrics",
            EncodingResourceWrapper(
                MetricsResource(registry, reactor=reactor), [GzipEncoderFactory()]
            ),
        )
        channel = Site(root, reactor=Clock()).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)

        channel.dataReceived(
            method + b" /metrics HTTP/1.0\r\nHost: test\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        reactor.run_pool()
        head, _, body = transport.value().partition(b"\r\n\r\n")
        headers = [line.lower() for line in head.split(b"\r\n")[1:]]

        assert head.startswith(b"HTTP/1.0 200 ")
        assert [b"content-encoding: gzip"] == [h for h in headers if h.startswith(b"content-enc")]
        assert not [h for h in headers if h.startswith(b"content-length")]
        if method == b"GET":
            assert generate_latest(registry) == gzip.decompress(body)
        else:
            assert b"" == body

    def test_client_gone(self, registry, reactor):
        """A client that disconnects before the render ends gets nothing written."""
        resource = MetricsResource(registry, reactor=reactor)
        dummy = request()

        resource.render(dummy)
        dummy.processingFailed(Failure(ConnectionError("client gone")))
        written = len(dummy.written)
        reactor.run_pool()

        assert written == len(dummy.written)

    def test_large_body_written_a_piece_at_a_time(self, registry, reactor):
        """A body of many pieces is written as the transport takes them, with its length."""
        fill(registry)
        resource = MetricsResource(registry, reactor=reactor)
        dummy = Consuming()

        resource.render(dummy)
        reactor.run_pool()
        first = len(dummy.written)
        while not dummy.finished:
            dummy.producer.resumeProducing()

        assert 1 == first  # the transport's buffer was full after one piece
        assert generate_latest(registry) == b"".join(dummy.written)
        assert 1 < len(dummy.written)
        assert [str(len(b"".join(dummy.written))).encode()] == dummy.responseHeaders.getRawHeaders(
            b"Content-Length"
        )
        assert dummy.producer is None  # unregistered once done

    def test_large_body_head(self, registry, reactor):
        """HEAD of a large body writes nothing and finishes at once."""
        fill(registry)
        dummy = request(b"HEAD")

        status, headers, body = scrape(MetricsResource(registry, reactor=reactor), reactor, dummy)

        assert (200, b"") == (status, body)
        assert [str(len(generate_latest(registry))).encode()] == headers.getRawHeaders(
            b"Content-Length"
        )

    @pytest.mark.parametrize("how", ["stopped", "client gone"])
    def test_large_body_stopped(self, registry, reactor, how):
        """A transport that stops its producer, or a client that goes away, ends the writing."""
        fill(registry)
        dummy = Consuming()
        MetricsResource(registry, reactor=reactor).render(dummy)
        reactor.run_pool()
        producer = dummy.producer

        if how == "stopped":
            producer.stopProducing()
        else:
            dummy.processingFailed(Failure(ConnectionError("client gone")))
        producer.resumeProducing()

        assert 1 == len(dummy.written)
        assert not dummy.finished

    def test_large_body_through_a_real_channel(self, registry, reactor):
        """Through twisted.web's own channel and a transport in memory, the body arrives whole."""
        fill(registry)
        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry, reactor=reactor))
        channel = Site(root, reactor=Clock()).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)

        channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        reactor.run_pool()
        head, _, body = transport.value().partition(b"\r\n\r\n")

        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"content-length: {len(body)}".encode() in head.lower()
        assert generate_latest(registry) == body

    @pytest.mark.parametrize(
        ("stated", "waited"), [(None, 30.0), (b"10", 9.75), (b"nonsense", 30.0)]
    )
    def test_render_too_slow(self, registry, reactor, caplog, stated, waited):
        """A render that outlasts the scraper's patience is answered 503 first, and logged."""
        resource = MetricsResource(registry, reactor=reactor)
        headers = {} if stated is None else {"X-Prometheus-Scrape-Timeout-Seconds": stated}
        dummy = request(**headers)

        resource.render(dummy)
        reactor.advance(waited - 0.01)
        assert not dummy.finished
        reactor.advance(0.01)

        assert dummy.finished
        assert 503 == dummy.responseCode
        assert b"took longer than" in b"".join(dummy.written)
        assert "A collector may be blocked" in caplog.text
        reactor.run_pool()  # the render ends after all: nothing more is written
        assert 1 == len(dummy.written)

    def test_render_in_time_cancels_the_deadline(self, registry, reactor):
        """A render that ends in time leaves no pending timer behind."""
        resource = MetricsResource(registry, reactor=reactor)

        scrape(resource, reactor, request())

        assert [] == reactor.getDelayedCalls()

    def test_put_child_and_default_registry(self, reactor):
        """It mounts with putChild, and serves the global REGISTRY by default."""
        root = Resource()
        root.putChild(b"metrics", MetricsResource(reactor=reactor))
        dummy = request()

        resource = root.getChildWithDefault(b"metrics", dummy)
        _, _, body = scrape(resource, reactor, dummy)

        assert b"python_info" in body

    def test_default_reactor(self, registry):
        """Without reactor=, the global reactor is used (imported only then)."""
        from twisted.internet import reactor as global_reactor

        assert global_reactor is MetricsResource(registry)._reactor

    def test_invalid_arguments(self):
        """Bad registry= or auth= fail when the resource is made."""
        with pytest.raises(TypeError, match="registry="):
            MetricsResource(42)
        with pytest.raises(TypeError, match="auth="):
            MetricsResource(auth="secret")  # type: ignore[arg-type]
