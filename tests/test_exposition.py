"""The framework-free exposition core that every mount point shares (docs/exposition.md)."""

from __future__ import annotations

import base64
import gzip
import logging
import threading
import zlib

import pytest

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, CONTENT_TYPE_PLAIN_1_0_0
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from promloop import BasicAuth, BearerToken
from promloop._exposition import (
    DEFAULT_FORMAT,
    GZIP_LEVEL,
    Exposition,
    Guard,
    Reply,
    SharedRenders,
    encoded,
    gzip_accepted,
    gzipped,
    negotiate,
    requested_names,
    scrape_seconds,
    too_slow,
)
from promloop._render import render, render_pieces

from .accept_headers import PROMETHEUS_2_42


UNDERSCORES = "; escaping=underscores"


def run_now(work):
    """Run the work at once, in the calling thread (a spawn for tests)."""
    work()


class TestNegotiate:
    """Real scrapers' headers are in tests/test_negotiation.py; here, the edge cases."""

    @pytest.mark.parametrize(
        ("accept", "content_type"),
        [
            ("", CONTENT_TYPE_LATEST),
            ("Application/OpenMetrics-Text", OPENMETRICS + UNDERSCORES),
            ("application/openmetrics-text; version=0.0.1", OPENMETRICS + UNDERSCORES),
            ("application/openmetrics-text;q=0,text/plain;version=0.0.4", CONTENT_TYPE_PLAIN_0_0_4),
            ("application/openmetrics-text;q=0", CONTENT_TYPE_LATEST),
            ("text/plain;version=0.0.4;q=0,application/json", CONTENT_TYPE_LATEST),
            (
                "application/openmetrics-text;q=0.5,text/plain;version=0.0.4;q=0.5",
                CONTENT_TYPE_PLAIN_0_0_4,
            ),
            (
                'text/plain; version="1.0.0"; escaping="dots"',
                CONTENT_TYPE_PLAIN_1_0_0 + "; escaping=dots",
            ),
            ("text/plain;version=0.0.4;escaping=dots", CONTENT_TYPE_PLAIN_0_0_4),
            ("application/openmetrics-text;version=0.0.1;escaping=dots", OPENMETRICS + UNDERSCORES),
            ("text/*;q=0.9,application/openmetrics-text;q=0.8", CONTENT_TYPE_LATEST),
            (
                "application/openmetrics-text;q=abc,text/plain;version=0.0.4",
                CONTENT_TYPE_PLAIN_0_0_4,
            ),
            ("application/json", CONTENT_TYPE_LATEST),
        ],
        ids=[
            "empty",
            "case-insensitive",
            "openmetrics-0.0.1",
            "openmetrics-q0",
            "only-openmetrics-q0",
            "text-q0-is-never",
            "tie-goes-to-text",
            "quoted-parameters",
            "no-escaping-on-0.0.4",
            "no-escaping-from-0.0.1",
            "text-wildcard-preferred",
            "malformed-q-ignored",
            "unsupported-type",
        ],
    )
    def test_content_type(self, accept, content_type):
        """The chosen format is announced with the content type a scraper expects."""
        assert content_type == negotiate(accept).content_type

    @pytest.mark.parametrize(
        "accept",
        [
            b"application/openmetrics-text, text/plain\xc2\x85",
            b"application/openmetrics-text;q=\xef\xbc\x91, text/plain;version=0.0.4;q=0.5",
            b"text/plain;version=1.0.0\xc2\xa0, application/openmetrics-text;q=0.9",
        ],
        ids=["NEL-after-type", "fullwidth-digit-q", "NBSP-after-param"],
    )
    def test_same_bytes_same_answer(self, accept):
        """Bytes (Twisted) and the text aiohttp decodes from them (UTF-8) negotiate alike.

        Decoded, U+0085 and U+00A0 are whitespace and U+FF11 a digit to Python;
        as bytes they are neither: only HTTP's own whitespace and ASCII digits count.
        """
        as_text = accept.decode("utf-8", "surrogateescape")

        assert negotiate(accept) == negotiate(as_text)
        assert gzip_accepted(b"gzip;q=\xef\xbc\x90, *") is gzip_accepted("gzip;q=\uff10, *")

    def test_text_no_bytes_decode_to(self):
        """A stand-in request's text that no bytes decode to (a lone surrogate) still negotiates."""
        assert (
            OPENMETRICS + UNDERSCORES
            == negotiate(
                "application/openmetrics-text\ud800, application/openmetrics-text"
            ).content_type
        )

    def test_default(self):
        """No Accept header gets prometheus-async's answer, CONTENT_TYPE_LATEST exactly."""
        assert DEFAULT_FORMAT == negotiate(None)
        assert CONTENT_TYPE_LATEST == DEFAULT_FORMAT.content_type

    def test_escaping(self):
        """A requested escaping scheme is applied to UTF-8 names."""
        registry = CollectorRegistry()
        Gauge("my.gauge", "A dotted name.", registry=registry).set(1)

        escaped = negotiate("text/plain;version=1.0.0").render(registry)
        utf8 = negotiate("text/plain;version=1.0.0;escaping=allow-utf-8").render(registry)

        assert b"my_gauge 1.0" in escaped
        assert b'{"my.gauge"} 1.0' in utf8


class TestScrapeSeconds:
    @pytest.mark.parametrize(
        ("stated", "seconds"),
        [("10", 9.75), (b"10", 9.75), ("1.5", 1.25), ("0.2", 0.1), ("3e1", 29.75)],
    )
    def test_a_little_less_than_the_scraper_waits(self, stated, seconds):
        """A scrape is answered a quarter second before the scraper gives up (half, if sooner)."""
        assert seconds == scrape_seconds(stated)

    @pytest.mark.parametrize("stated", [None, "", "soon", "0", "-5", "nan", "inf", "301"])
    def test_default(self, stated):
        """Without a usable timeout, a scrape waits 30 s."""
        assert 30.0 == scrape_seconds(stated)

    def test_too_slow(self, caplog):
        """The 503 says how long the render took, and the log names the registry."""
        reply = too_slow("the registry", 9.75)

        assert 503 == reply.status
        assert b"took longer than 9.75 s" in reply.body
        assert "the registry" in caplog.text


class TestGzipAccepted:
    @pytest.mark.parametrize(
        ("header", "accepted"),
        [
            (None, False),
            ("", False),
            ("gzip", True),
            ("gzip, deflate, br", True),
            ("GZIP", True),
            ("x-gzip", True),
            ("deflate", False),
            ("identity", False),
            ("gzip;q=0", False),
            ("*", True),
            ("*;q=0", False),
            ("gzip;q=0, *", False),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ],
    )
    def test_header(self, header, accepted):
        """Gzip is used when Accept-Encoding allows it, q-values honoured."""
        assert accepted is gzip_accepted(header)


class TestRequestedNames:
    @pytest.mark.parametrize(
        ("query", "names"),
        [
            ("", set()),
            ("name[]=a", {"a"}),
            ("name%5B%5D=a&name[]=b&name[]=a", {"a", "b"}),
            ("other=x&name[]=a+b&name[]=c%20d", {"a b", "c d"}),
            ("name[]=&name[]", {""}),
            ("name[]=%C3%A9t%C3%A9", {"été"}),
            (b"name[]=%C3%A9&x=%ff", {"é"}),
            ("name[]=\udcc3\udca9", {"é"}),
        ],
        ids=[
            "none",
            "one",
            "encoded-key-and-repeats",
            "plus-and-percent",
            "empty",
            "utf-8-encoded",
            "bytes-other-params-ignored",
            "text-from-raw-bytes",
        ],
    )
    def test_values(self, query, names):
        """name[] values are percent-decoded as UTF-8, whatever else the query holds."""
        assert names == requested_names(query)

    @pytest.mark.parametrize("query", ["name[]=%ff", b"name[]=%C3", "name[]=\ud800"])
    def test_not_utf_8(self, query):
        """A value that is not UTF-8, or text no bytes decode to, is refused."""
        with pytest.raises(ValueError):
            requested_names(query)


class TestGuard:
    @pytest.mark.parametrize(
        "authorization",
        [
            b"Bearer t\xf6k\xe9n",
            "Bearer t\udcf6k",
            "Bearer \ud800",
            b"\xff",
            "Bearer tök€n ",
            "Bearer tök€n!".encode().decode("latin-1"),
        ],
        ids=[
            "latin-1-bytes",
            "surrogate-escaped",
            "lone-surrogate",
            "garbage",
            "utf-8-text-wrong-token",
            "mojibake",
        ],
    )
    def test_refuses_without_raising(self, authorization):
        """Undecodable or wrong credentials are refused with 401, never an exception."""
        reply = Guard(BearerToken("tök€n!")).refusal(authorization)

        assert reply is not None
        assert 401 == reply.status

    @pytest.mark.parametrize(
        "authorization",
        ["Bearer tök€n", "Bearer tök€n".encode(), b"bearer  t\xc3\xb6k\xe2\x82\xacn "],
        ids=["text", "bytes", "bytes-lowercase-scheme"],
    )
    def test_one_rule_for_text_and_bytes(self, authorization):
        """A UTF-8 token is accepted as text (aiohttp) and as raw bytes (Twisted) alike."""
        assert None is Guard(BearerToken("tök€n")).refusal(authorization)

    def test_no_auth(self):
        """Without credentials configured, every request passes."""
        assert None is Guard(None).refusal(None)


class TestSharedRenders:
    def test_joins_a_render_that_has_not_started(self):
        """Scrapes of one view arriving before the render starts share it."""
        renders = SharedRenders(gather=0)
        queued = []
        calls = []

        def render():
            calls.append(1)
            return Reply(200, (), (b"x",))

        first = renders.submit("view", render, queued.append)
        second = renders.submit("view", render, queued.append)

        assert first is second
        assert 1 == len(queued)
        queued[0]()
        assert [1] == calls
        assert b"x" == first.result().body

    def test_never_joins_a_started_render(self):
        """A scrape arriving while a render reads the registry gets a fresh render."""
        renders = SharedRenders(gather=0)
        queued = []

        first = renders.submit("view", lambda: Reply(200, (), (b"1",)), queued.append)
        queued[0]()
        second = renders.submit("view", lambda: Reply(200, (), (b"2",)), queued.append)

        assert first is not second
        assert 2 == len(queued)

    def test_views_are_separate(self):
        """Different views (format, filter, compression) never share."""
        renders = SharedRenders(gather=0)
        queued = []

        assert renders.submit("a", lambda: None, queued.append) is not renders.submit(
            "b", lambda: None, queued.append
        )

    def test_failure_reaches_every_waiter(self):
        """A render that raises fails every scrape that shared it."""
        renders = SharedRenders(gather=0)
        queued = []

        def broken():
            raise RuntimeError("collect failed")

        first = renders.submit("view", broken, queued.append)
        second = renders.submit("view", broken, queued.append)
        queued[0]()

        for future in (first, second):
            with pytest.raises(RuntimeError, match="collect failed"):
                future.result()

    def test_spawn_failure(self):
        """If the work cannot be spawned, the error is raised and the view stays usable."""
        renders = SharedRenders(gather=0)

        def refuse(work):
            raise RuntimeError("executor shut down")

        with pytest.raises(RuntimeError, match="executor shut down"):
            renders.submit("view", lambda: Reply(200, (), (b"",)), refuse)

        ok = renders.submit("view", lambda: Reply(200, (), (b"ok",)), run_now)
        assert b"ok" == ok.result().body

    def test_spawn_failure_after_running(self):
        """A spawn that ran the work and then raised leaves the view usable too."""
        renders = SharedRenders(gather=0)

        def run_then_refuse(work):
            work()
            raise RuntimeError("late failure")

        with pytest.raises(RuntimeError, match="late failure"):
            renders.submit("view", lambda: Reply(200, (), (b"",)), run_then_refuse)

        ok = renders.submit("view", lambda: Reply(200, (), (b"ok",)), run_now)
        assert b"ok" == ok.result().body

    def test_waiter_cannot_cancel_the_shared_render(self):
        """Cancelling one waiter's future does not cancel the render the others wait for."""
        renders = SharedRenders(gather=0)
        queued = []

        future = renders.submit("view", lambda: Reply(200, (), (b"x",)), queued.append)

        assert not future.cancel()
        queued[0]()
        assert b"x" == future.result().body

    def test_gathers_before_reading(self):
        """A render waits before it reads, so that scrapes arriving with it can join."""
        renders = SharedRenders(gather=0.5)  # ample: the test must not race
        started = threading.Event()

        def spawn(work):
            threading.Thread(target=work).start()
            started.set()

        first = renders.submit("view", lambda: Reply(200, (), (b"shared",)), spawn)
        started.wait()
        second = renders.submit("view", lambda: Reply(200, (), (b"other",)), spawn)

        assert first is second
        assert b"shared" == second.result(timeout=10).body

    def test_concurrent_scrapes_see_changes(self):
        """Under real threads, every scrape reflects the changes made before it started."""
        registry = CollectorRegistry()
        gauge = Gauge("value", "The value.", registry=registry)
        exposition = Exposition(registry)

        def spawn(work):
            threading.Thread(target=work).start()

        for value in range(50):
            gauge.set(value)
            reply = exposition.scrape(
                authorization=None, accept=None, accept_encoding=None, query="", spawn=spawn
            ).result(timeout=10)
            assert f"value {float(value)}".encode() in reply.body


class TestGzipped:
    def test_same_bytes_as_one_compression(self, registry):
        """Compressed a piece at a time, the body is what compressing it whole gives."""
        gauge = Gauge("many", "Many.", ["id"], registry=registry)
        for i in range(20_000):
            gauge.labels(str(i)).set(i / 7)
        body = render_pieces(registry, openmetrics=False, escaping="underscores")
        whole = b"".join(body)

        found = gzipped(body)

        at_once = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # the gzip format
        assert at_once.compress(whole) + at_once.flush() == b"".join(found)
        assert whole == gzip.decompress(b"".join(found))
        assert [] == body  # each piece let go once compressed
        assert 1 < len(found)

    def test_nothing(self):
        """No piece at all still makes a whole gzip stream, of nothing."""
        assert b"" == gzip.decompress(b"".join(gzipped([])))


class TestReply:
    def test_body_and_length(self):
        """A reply's body is its pieces joined, and its length theirs."""
        reply = Reply(200, (), (b"ab", b"", b"cde"))

        assert (b"abcde", 5) == (reply.body, reply.length)

    def test_encoded_plain(self):
        """Uncompressed, encoded() keeps the pieces as they are, in the format's content type."""
        pieces = [b"x" * 70_000, b"y" * 70_000]

        reply = encoded(DEFAULT_FORMAT, list(pieces), compress=False)

        assert (200, tuple(pieces)) == (reply.status, reply.pieces)
        assert (("Content-Type", DEFAULT_FORMAT.content_type),) == reply.headers

    def test_encoded_gzip(self):
        """Compressed, the pieces are the whole body gzipped, and the list given is emptied."""
        pieces = [b"x" * 70_000, b"y" * 70_000]
        given = list(pieces)

        reply = encoded(DEFAULT_FORMAT, given, compress=True)

        assert b"".join(pieces) == gzip.decompress(reply.body)
        assert ("Content-Encoding", "gzip") in reply.headers
        assert [] == given


class TestExposition:
    def scrape(self, exposition, **headers):
        arguments = {"authorization": None, "accept": None, "accept_encoding": None, "query": ""}
        arguments.update(headers)
        return exposition.scrape(**arguments, spawn=run_now).result()

    def test_default_registry(self):
        """Without registry=, the global REGISTRY is served."""
        reply = self.scrape(Exposition())

        assert 200 == reply.status
        assert b"python_info" in reply.body

    def test_text(self, registry):
        """A plain scrape gets the text format."""
        Counter("hits", "Hits.", registry=registry).inc(3)

        reply = self.scrape(Exposition(registry))

        assert (("Content-Type", CONTENT_TYPE_LATEST),) == reply.headers
        assert b"hits_total 3.0\n" in reply.body

    def test_openmetrics(self, registry):
        """An OpenMetrics scrape gets OpenMetrics, ending in # EOF."""
        Counter("hits", "Hits.", registry=registry).inc()

        reply = self.scrape(Exposition(registry), accept=PROMETHEUS_2_42)

        assert reply.body.endswith(b"# EOF\n")

    def test_gzip(self, registry):
        """A scrape that accepts gzip gets a compressed body."""
        Counter("hits", "Hits.", registry=registry).inc()

        reply = self.scrape(Exposition(registry), accept_encoding="gzip")

        assert ("Content-Encoding", "gzip") in reply.headers
        assert b"hits_total 1.0" in gzip.decompress(reply.body)

    def test_disable_compression(self, registry):
        """disable_compression=True never compresses."""
        reply = self.scrape(Exposition(registry, disable_compression=True), accept_encoding="gzip")

        assert "Content-Encoding" not in dict(reply.headers)

    def test_name_filter(self, registry):
        """name[] restricts the output to the named series."""
        Counter("hits", "Hits.", registry=registry).inc()
        Gauge("temperature", "Temperature.", registry=registry).set(20)

        reply = self.scrape(Exposition(registry), query="name[]=temperature")

        assert b"temperature 20.0" in reply.body
        assert b"hits" not in reply.body

    def test_name_filter_on_plain_collector(self):
        """name[] works on a collector that is not a CollectorRegistry."""
        registry = CollectorRegistry()
        Counter("hits", "Hits.", registry=registry).inc()
        Gauge("temperature", "Temperature.", registry=registry).set(20)

        class JustCollect:
            def collect(self):
                return registry.collect()

        reply = self.scrape(Exposition(JustCollect()), query="name%5B%5D=temperature")

        assert b"temperature 20.0" in reply.body
        assert b"hits" not in reply.body

    def test_name_not_utf_8(self, registry):
        """A name[] that is not UTF-8 gets 400, once the credentials are accepted."""
        exposition = Exposition(registry, auth=BearerToken("t"))

        anonymous = self.scrape(exposition, query=b"name[]=%ff")
        authorised = self.scrape(exposition, query=b"name[]=%ff", authorization=b"Bearer t")

        assert (401, 400) == (anonymous.status, authorised.status)

    def test_compressed_elsewhere(self, registry):
        """may_compress=False leaves the body uncompressed, for a wrapper to compress."""
        Counter("hits", "Hits.", registry=registry).inc()

        reply = self.scrape(Exposition(registry), accept_encoding=b"gzip", may_compress=False)

        assert "Content-Encoding" not in dict(reply.headers)
        assert b"hits_total 1.0" in reply.body

    def test_render_failure(self, registry, caplog):
        """A collector that raises gives a 500, and the traceback goes to the log."""

        class Broken:
            def collect(self):
                raise RuntimeError("database gone")

        registry.register(Broken())

        with caplog.at_level(logging.ERROR, logger="promloop"):
            reply = self.scrape(Exposition(registry))

        assert 500 == reply.status
        assert "database gone" in caplog.text

    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Basic", "Basic !!!", "Basic dXNlcjp3cm9uZw==", "Bearer dXNlcjpzZWNyZXQ="],
        ids=["missing", "empty", "no-credentials", "malformed", "wrong", "wrong-scheme"],
    )
    def test_basic_auth_rejects(self, registry, authorization):
        """Any request without valid basic credentials gets 401 with a Basic challenge."""
        reply = self.scrape(
            Exposition(registry, auth=BasicAuth("user", "secret")), authorization=authorization
        )

        assert 401 == reply.status
        assert dict(reply.headers)["WWW-Authenticate"].startswith("Basic ")

    def test_basic_auth_accepts(self, registry):
        """Valid basic credentials get the metrics."""
        reply = self.scrape(
            Exposition(registry, auth=BasicAuth("user", "secret")),
            authorization="Basic dXNlcjpzZWNyZXQ=",
        )

        assert 200 == reply.status

    @pytest.mark.parametrize(
        "authorization", [None, "Bearer", "Bearer wrong", "Basic token", "token"]
    )
    def test_bearer_rejects(self, registry, authorization):
        """Any request without the right bearer token gets 401 with a Bearer challenge."""
        reply = self.scrape(
            Exposition(registry, auth=BearerToken("token")), authorization=authorization
        )

        assert 401 == reply.status
        assert 'Bearer realm="metrics"' == dict(reply.headers)["WWW-Authenticate"]

    def test_bearer_accepts(self, registry):
        """The right bearer token gets the metrics, whatever the scheme's case."""
        exposition = Exposition(registry, auth=BearerToken("token"))

        assert 200 == self.scrape(exposition, authorization="Bearer token").status
        assert 200 == self.scrape(exposition, authorization="bearer token").status

    def test_bad_registry(self):
        """registry= must be able to collect."""
        with pytest.raises(TypeError, match="registry= must be a CollectorRegistry"):
            Exposition(object())

    def test_bad_auth(self, registry):
        """auth= must be one of promloop's credential types; the error shows its type only."""
        with pytest.raises(TypeError, match=r"auth= must be a promloop\.BasicAuth") as info:
            Exposition(registry, auth=("user", "secret"))  # type: ignore[arg-type]

        assert "not tuple" in str(info.value)
        assert "secret" not in str(info.value)

    @pytest.mark.parametrize("method", ["POST", b"PUT", "get", "BREW"])
    def test_other_methods(self, registry, method):
        """A method other than GET and HEAD gets 405 -- after 401, without valid credentials."""
        auth = BearerToken("t0k")
        exposition = Exposition(registry, auth=auth)

        def scrape(authorization):
            return exposition.scrape(
                authorization=authorization,
                accept=None,
                accept_encoding=None,
                query="",
                spawn=run_now,
                method=method,
            ).result()

        refused, not_allowed = scrape(None), scrape(auth.authorization())

        assert 401 == refused.status
        assert 405 == not_allowed.status
        assert ("Allow", "GET, HEAD") in not_allowed.headers


class JustCollect:
    """Any collector that is not a CollectorRegistry: prometheus_client renders it."""

    def __init__(self, registry):
        self._registry = registry

    def collect(self):
        return self._registry.collect()


def registry_with_created():
    """Counters, histograms and summaries (with _created), and a gauge merely named so."""
    registry = CollectorRegistry()
    Counter("hits", "Hits.", ["route"], registry=registry).labels("/").inc(3)
    Counter("plain", "No labels.", registry=registry).inc()
    Histogram("latency_seconds", "Latency.", ["route"], registry=registry).labels("/").observe(1)
    Summary("payload_bytes", "Payload.", registry=registry).observe(512)
    Gauge("started_created", "A gauge whose name ends so.", registry=registry).set(1)
    return registry


def client_without_created(registry, openmetrics):
    """Render as prometheus_client does with its process-wide switch off (then back on)."""
    disable_created_metrics()
    try:
        if openmetrics:
            return openmetrics_exposition.generate_latest(registry)
        return generate_latest(registry)
    finally:
        enable_created_metrics()


class TestCreated:
    @pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
    @pytest.mark.parametrize("wrap", [False, True], ids=["streamed", "prometheus_client"])
    def test_same_as_the_process_wide_switch(self, openmetrics, wrap):
        """created=False writes what prometheus_client writes with _created disabled."""
        registry = registry_with_created()
        source = JustCollect(registry) if wrap else registry

        ours = render(
            source,
            openmetrics=openmetrics,
            escaping=openmetrics_exposition.UNDERSCORES,
            created=False,
        )

        assert client_without_created(registry, openmetrics) == ours
        assert b"hits_created" not in ours
        assert b"started_created 1.0" in ours

    @pytest.mark.parametrize("wrap", [False, True], ids=["streamed", "prometheus_client"])
    def test_with_name_filter(self, wrap):
        """A filtered render drops _created too, and a filter naming only _created is empty."""
        registry = registry_with_created()
        source = JustCollect(registry) if wrap else registry
        escaping = openmetrics_exposition.UNDERSCORES

        both = render(
            source,
            openmetrics=False,
            escaping=escaping,
            names=frozenset({"hits_total", "hits_created"}),
            created=False,
        )
        only_created = render(
            source,
            openmetrics=False,
            escaping=escaping,
            names=frozenset({"hits_created"}),
            created=False,
        )

        assert b'hits_total{route="/"} 3.0' in both
        assert b"_created" not in both
        assert b"" == only_created

    def test_custom_collectors_too(self, registry):
        """A custom collector's _created samples are dropped as well."""

        class Custom:
            def collect(self):
                family = CounterMetricFamily("jobs", "Jobs.", labels=["queue"])
                family.add_metric(["a"], 2, created=1700000000.0)
                yield family

        registry.register(Custom())

        body = self.scrape(Exposition(registry, created=False))
        served = self.scrape(Exposition(registry))

        assert b'jobs_total{queue="a"} 2.0' in body
        assert b"jobs_created" not in body
        assert b'jobs_created{queue="a"} 1.7e+09' in served

    def test_this_endpoint_alone(self):
        """One endpoint without _created leaves another endpoint, and the process, as they were."""
        registry = registry_with_created()

        without = self.scrape(Exposition(registry, created=False))
        with_created = self.scrape(Exposition(registry))

        assert b"hits_created" not in without
        assert b'hits_created{route="/"}' in with_created
        assert generate_latest(registry) == with_created

    def scrape(self, exposition):
        reply = exposition.scrape(
            authorization=None, accept=None, accept_encoding=None, query="", spawn=run_now
        ).result()
        assert 200 == reply.status
        return reply.body


class TestBasicAuth:
    @pytest.mark.parametrize(("username", "password"), [("", "x"), ("x", ""), ("a:b", "x")])
    def test_invalid(self, username, password):
        """Empty credentials, or a colon in the username, fail at once."""
        with pytest.raises(ValueError, match="BasicAuth"):
            BasicAuth(username, password)

    def test_repr_hides_password(self):
        """The password never appears in a repr (and so in a log)."""
        assert "BasicAuth(username='user', password=<hidden>)" == repr(BasicAuth("user", "pw"))

    def test_non_ascii(self):
        """UTF-8 credentials work (RFC 7617's charset)."""
        auth = BasicAuth("jürgen", "pässword")
        header = "Basic " + base64.b64encode("jürgen:pässword".encode()).decode()

        assert auth.accepts(header)


class TestBearerToken:
    @pytest.mark.parametrize("token", ["", "a b"])
    def test_invalid(self, token):
        """An empty token, or one with whitespace, fails at once."""
        with pytest.raises(ValueError, match="BearerToken"):
            BearerToken(token)

    def test_repr_hides_token(self):
        """The token never appears in a repr."""
        assert "BearerToken(token=<hidden>)" == repr(BearerToken("s3cret"))
