"""Security: what auth= and TLS promise, on every mount point, attacked.

Without valid credentials every path and method gets 401; credentials are
compared in constant time; credentials and Consul tokens appear in no log
record, repr or exception message; a bearer token is never echoed back; TLS
that requires client certificates refuses a client without one.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import gc
import hmac
import importlib.util
import socket
import ssl
import statistics
import time
import traceback

from typing import TYPE_CHECKING, Any

import pytest


pytest.importorskip("aiohttp")
pytest.importorskip("hypothesis")
trustme = pytest.importorskip("trustme")

from aiohttp import web  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from prometheus_client import CollectorRegistry, Counter  # noqa: E402

from promloop import BasicAuth, BearerToken  # noqa: E402
from promloop.aio.push import delete_from_gateway, push_to_gateway  # noqa: E402
from promloop.aio.sd import ConsulAgent  # noqa: E402
from promloop.aio.web import (  # noqa: E402
    make_handler,
    start_http_server,
    start_http_server_in_thread,
)

from ..fake_consul import FakeConsul  # noqa: E402
from .client import Answer, ask, request_bytes  # noqa: E402
from .mounts import (  # noqa: E402
    FANIN,
    HANDLER,
    IN_LOOP,
    MOUNT_POINTS,
    THREADED,
    TWISTED,
    Mount,
    ServerLog,
    started,
)
from .properties import HYPOTHESIS  # noqa: E402
from .resources import scaled  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Iterator


USERNAME = "prometheus"
PASSWORD = "pw-Sekr1t-8d1c"
TOKEN = "tok-Sekr1t-51ab9e"
CONSUL_TOKEN = "consul-Sekr1t-77f0"
SECRETS = (PASSWORD, TOKEN, CONSUL_TOKEN, "Sekr1t")
"""What must appear in no log, repr, error or answer ("Sekr1t" catches any of them in part)."""

CREDENTIALS = {
    "basic": BasicAuth(USERNAME, PASSWORD),
    "bearer": BearerToken(TOKEN),
}
HAS_TWISTED = importlib.util.find_spec("twisted") is not None


def leaked(text: str | bytes) -> list[str]:
    """Return the secrets (or their base64 forms) that *text* contains."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    forms = [*SECRETS, CREDENTIALS["basic"].authorization().split()[1]]
    return [form for form in forms if form in text]


def guarded_params() -> list[object]:
    return [
        pytest.param(
            (name, kind),
            id=f"{name}-{kind}",
            marks=pytest.mark.skipif(name == TWISTED and not HAS_TWISTED, reason="no Twisted"),
        )
        for name in MOUNT_POINTS
        for kind in CREDENTIALS
    ]


@pytest.fixture(scope="module")
def server_log() -> Iterator[ServerLog]:
    # What earlier tests left for the garbage collector is logged now, not during these.
    gc.collect()
    with ServerLog().installed() as log:
        yield log


@pytest.fixture(scope="module", params=guarded_params())
def served(request: pytest.FixtureRequest, server_log: ServerLog) -> Iterator[Mount]:
    name, kind = request.param
    with started(name, server_log, auth=CREDENTIALS[kind]) as mount:
        yield mount


@pytest.fixture
def guarded(served: Mount) -> Iterator[Mount]:
    """Yield a mount point with auth=; its log must show no problem and no secret from this test."""
    mark = served.mark()
    yield served
    assert [] == served.problems(mark)
    assert [] == leaked(served.logged(mark))


# --- requests without valid credentials ------------------------------------------

WRONG_AUTHORIZATIONS = [
    None,
    b"",
    b"Bearer",
    b"Bearer ",
    b"Basic",
    b"Basic !!!not-base64!!!",
    b"Basic " + base64.b64encode(b"prometheus"),
    b"Basic " + base64.b64encode(f"{USERNAME}:wrong".encode()),
    b"Basic " + base64.b64encode(f"other:{PASSWORD}".encode()),
    b"Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}x".encode()),
    b"Bearer " + TOKEN.encode() + b"x",
    b"Bearer " + TOKEN[:-1].encode(),
    b"Bearer " + TOKEN.upper().encode(),
    b"bearer " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()),
    b"Token " + TOKEN.encode(),
    b"Digest username=prometheus",
    b"Bearer \xff\xfe" + TOKEN.encode(),
    b"Basic \xc3\x28",
    b"Bearer " + b"A" * 7000,
]
"""Missing, malformed, of the wrong scheme, or almost right -- for either kind of auth=."""

METRICS = b"# HELP"
"""What every answer with metrics holds (a 400 page may quote a metric's name from the query)."""

CHECKED_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"]
CHECKED_PATHS = [
    b"/",
    b"/metrics",
    b"/metrics/",
    b"/metrics?name[]=probes_total",
    b"/unknown",
    b"/favicon.ico",
    b"//metrics",
    b"/metrics/../metrics",
    b"/%2e%2e/metrics",
    b"/METRICS",
]


def refused(mount: Mount, method: bytes, target: bytes, authorization: bytes | None) -> Answer:
    """Send one request; return its answer, read as if to GET (an answer to HEAD has no body)."""
    headers = [] if authorization is None else [(b"Authorization", authorization)]
    found = ask(mount.port, request_bytes(method, target, headers))
    assert 1 == len(found), (method, target, authorization)
    return found[0]


def assert_refused(mount: Mount, answer: Answer, method: bytes, sent: bytes | None) -> None:
    """Check for a 401 with the challenge of the mount point's scheme, and nothing else of use."""
    context = (mount.name, method, sent, answer)
    assert mount.auth is not None
    assert 401 == answer.status, context
    assert mount.auth.challenge() == answer.headers["www-authenticate"], context
    assert METRICS not in answer.body, context
    if method == b"HEAD":
        assert b"" == answer.body
    if sent and len(sent) > 8:
        assert sent not in answer.body, context


class TestEveryPathAndMethod:
    """With auth=, nothing is answered without valid credentials: 401, on every mount point."""

    def test_fixed_matrix(self, guarded, figure):
        """Eight methods, ten paths (/, unknown ones, tricks), every kind of wrong credentials: 401.

        The same request with valid credentials gets the metrics, so that the
        401s come from the check, not from a broken server.
        """
        statuses: collections.Counter[int] = collections.Counter()
        for method in CHECKED_METHODS:
            for target in CHECKED_PATHS:
                for authorization in (None, WRONG_AUTHORIZATIONS[7], WRONG_AUTHORIZATIONS[10]):
                    answer = refused(guarded, method, target, authorization)
                    statuses[answer.status] += 1
                    assert_refused(guarded, answer, method, authorization)
        for authorization in WRONG_AUTHORIZATIONS:
            answer = refused(guarded, b"GET", b"/metrics", authorization)
            statuses[answer.status] += 1
            assert_refused(guarded, answer, b"GET", authorization)
        good = guarded.auth.authorization().encode()
        allowed = refused(guarded, b"GET", b"/metrics", good)
        figure(
            "refused requests",
            sum(statuses.values()),
            "",
            mount=guarded.name,
            statuses=dict(statuses),
        )
        assert 200 == allowed.status
        assert b"probes_total" in allowed.body

    def test_any_request(self, guarded, figure):
        """Any method, path and Authorization value hypothesis makes: 401, or the parser's 400.

        A request aiohttp's parser refuses (an unknown method, a byte no
        target may hold) gets its 400 before any route: it never reaches the
        metrics either.
        """
        statuses: collections.Counter[int] = collections.Counter()
        tokens = st.text(
            st.sampled_from(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/="
            ),
            max_size=64,
        )
        authorization = st.one_of(
            st.sampled_from(WRONG_AUTHORIZATIONS),
            st.tuples(
                st.sampled_from(["Bearer", "Basic", "bearer", "BASIC", "Token", "Negotiate", ""]),
                st.sampled_from([" ", "  ", "\t"]),
                tokens,
            ).map(lambda parts: "".join(parts).strip(" \t").encode()),
            st.binary(max_size=64).filter(lambda raw: not any(c in raw for c in b"\r\n\x00")),
        )
        # aiohttp's parser refuses methods it does not know (400): a few suffice.
        methods = st.sampled_from([*CHECKED_METHODS, b"CONNECT", b"PROPFIND", b"BREW", b"get"])
        paths = st.lists(
            st.sampled_from(["metrics", "", "..", ".", "%2e", "a", "%ff", "metrics;x", "~"]),
            max_size=5,
        ).map(lambda segments: ("/" + "/".join(segments)).encode())
        paths |= st.sampled_from(CHECKED_PATHS)

        @HYPOTHESIS
        @given(methods, paths, authorization)
        def example(method: bytes, target: bytes, sent: bytes) -> None:
            answer = refused(guarded, method, target, sent)
            statuses[answer.status] += 1
            if answer.status == 400 and guarded.name != TWISTED:
                assert METRICS not in answer.body
                return
            if (answer.status, method, guarded.name) == (404, b"CONNECT", HANDLER):
                # CONNECT names a host:port, which the application routes nowhere.
                assert METRICS not in answer.body
                return
            assert_refused(guarded, answer, method, sent)

        example()
        figure("requests", sum(statuses.values()), "", mount=guarded.name, statuses=dict(statuses))


class TestBearerTokenNeverEchoed:
    def test_not_in_any_answer(self, guarded, figure):
        """Neither the configured credentials nor those sent appear in any answer promloop gives."""
        good = guarded.auth.authorization().encode()
        sent = [good, good + b"x", good.upper(), b"Bearer " + TOKEN.encode() + b"-" + b"x" * 40]
        answered = 0
        for authorization in sent:
            for method in (b"GET", b"HEAD", b"POST"):
                for target in (b"/", b"/metrics", b"/unknown"):
                    raw = request_bytes(method, target, [(b"Authorization", authorization)])
                    [answer] = ask(guarded.port, raw, [method.decode()])
                    answered += 1
                    everything = repr(answer.headers).encode() + answer.body
                    assert [] == leaked(everything), (method, target, answer)
                    assert authorization.split()[-1] not in everything
        figure("answers checked", answered, "", mount=guarded.name)

    def test_malformed_lines(self, guarded, figure):
        """A malformed Authorization line is refused: the parser's 400, or 401.

        aiohttp's parser refuses each line before any promloop code runs, and
        its 400 page quotes the offending line back to the client that sent it
        (only to it; promloop's servers keep it out of their log).  Twisted
        passes a control character on (401: not the credentials), quotes
        nothing, and closes a line over 16 kB without answering.  The figure
        counts the quotes.
        """
        assert guarded.auth is not None
        mark = guarded.mark()
        good = guarded.auth.authorization().encode()
        lines = [
            b"Authorization : " + good,
            b"Authorization: " + good + b"\x01",
            b"Authorization: " + good + b"\x7f",
            b"Authorization\t: " + good,
            b"Authorization: " + good + b"X" * 20000,
        ]
        quoted = 0
        for line in lines:
            raw = request_bytes(b"GET", b"/metrics", close=True).replace(
                b"\r\n\r\n", b"\r\n" + line + b"\r\n\r\n"
            )
            found = ask(guarded.port, raw)
            if found:
                assert found[0].status in (400, 401), (line, found)
                assert METRICS not in found[0].body
                quoted += bool(leaked(found[0].body))
            else:
                assert TWISTED == guarded.name  # a line over 16 kB: closed without an answer
        figure(
            "malformed lines quoted back to their sender",
            quoted,
            f"of {len(lines)}",
            mount=guarded.name,
        )
        if guarded.name == TWISTED:
            assert 0 == quoted
        if guarded.name == HANDLER:
            # The application's own aiohttp server logs these at ERROR, quoting the line.
            figure("quoted in the application's server log", guarded.parser_refusals(mark), "")


# --- constant-time comparison ------------------------------------------------------


class CompareSpy:
    """Stands for hmac.compare_digest: records each comparison, then makes it."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((bytes(a), bytes(b)))
        return _compare_digest(a, b)


_compare_digest = hmac.compare_digest

SECRETS_OF_EVERY_LENGTH = ["k", "a-token-of-moderate-length", "z" * 300]


class TestConstantTime:
    """Credentials are compared with hmac.compare_digest, once, whole, whatever the secret."""

    def test_one_whole_comparison_per_candidate(self, monkeypatch, figure):
        """Every candidate of the right scheme goes through exactly one full comparison.

        Bearer: whatever its length or content, one hmac.compare_digest() of
        the whole candidate against the whole token.  Basic: one of the whole
        decoded candidate against the whole ``user:password``; a candidate
        that is not base64 is refused before any comparison -- a decision
        about the candidate alone, the same for every secret.  What is
        compared, and whether, never depends on the secret: the calls are the
        same for secrets of 1, 26 and 300 characters.
        """
        spy = CompareSpy()
        monkeypatch.setattr(hmac, "compare_digest", spy)
        candidates = 0

        @HYPOTHESIS
        @given(
            st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "basic"]),
            st.one_of(
                st.binary(max_size=400),
                st.sampled_from([s.encode() for s in SECRETS_OF_EVERY_LENGTH]),
                st.binary(max_size=300).map(base64.b64encode),
            ),
            st.booleans(),
        )
        def example(scheme: str, candidate: bytes, as_text: bool) -> None:
            nonlocal candidates
            candidates += 1
            header: str | bytes = scheme.encode() + b" " + candidate
            if as_text:  # as aiohttp hands it over
                header = header.decode("utf-8", "surrogateescape")
            given_per_secret = []
            for secret in SECRETS_OF_EVERY_LENGTH:
                auth = (
                    BasicAuth("user", secret) if scheme.lower() == "basic" else BearerToken(secret)
                )
                expected = (
                    f"user:{secret}".encode() if isinstance(auth, BasicAuth) else secret.encode()
                )
                spy.calls.clear()
                auth.accepts(header)
                assert all(b == expected for _, b in spy.calls), "the whole secret, each time"
                given_per_secret.append([a for a, _ in spy.calls])
            # What reached the comparison depends on the candidate alone.
            assert all(given == given_per_secret[0] for given in given_per_secret)
            compared = given_per_secret[0]
            presented = candidate.strip()
            if scheme.lower() == "bearer":
                assert [presented] == compared
            else:
                try:
                    decoded = base64.b64decode(presented, validate=True)
                except ValueError:
                    assert [] == compared
                else:
                    assert [decoded] == compared

        example()
        figure("candidates checked", candidates, "", secrets=len(SECRETS_OF_EVERY_LENGTH))

    def test_timing(self, figure):
        """Mismatch in the first byte or the last: the same time (measured, not asserted).

        The same measurement of a naive ``==`` shows what an early exit looks
        like at this resolution.  A 4 kB token makes the difference visible.
        """
        secret = "t" * 4096
        auth = BearerToken(secret)
        first = b"Bearer x" + secret[1:].encode()
        last = b"Bearer " + secret[:-1].encode() + b"x"
        naive_secret = secret.encode()
        naive_first, naive_last = (header.split(b" ", 1)[1] for header in (first, last))
        rounds = scaled(300, 3000)

        def per_call(function, argument, calls=200) -> float:
            started = time.perf_counter_ns()
            for _ in range(calls):
                function(argument)
            return (time.perf_counter_ns() - started) / calls

        measured: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(rounds):  # interleaved, so that the machine's load hits all alike
            measured["first"].append(per_call(auth.accepts, first))
            measured["last"].append(per_call(auth.accepts, last))
            measured["naive first"].append(per_call(naive_secret.__eq__, naive_first))
            measured["naive last"].append(per_call(naive_secret.__eq__, naive_last))
        median = {name: statistics.median(values) for name, values in measured.items()}
        figure(
            "accepts(), first byte wrong", round(median["first"]), "ns", rounds=rounds, token=4096
        )
        figure("accepts(), last byte wrong", round(median["last"]), "ns")
        figure("difference", round(median["last"] - median["first"]), "ns")
        figure("naive ==, difference", round(median["naive last"] - median["naive first"]), "ns")
        assert not auth.accepts(first)
        assert not auth.accepts(last)


# --- nothing secret in logs, reprs and errors ----------------------------------------


def described(error: BaseException) -> str:
    """Everything an application would show of an error: message, repr, whole traceback."""
    return f"{error}\n{error!r}\n" + "".join(traceback.format_exception(error))


class TestNothingSecretShown:
    def test_reprs_and_errors_of_the_exposition(self, figure):
        """Credential objects, servers, handlers and argument errors show no credential."""
        shown: list[str] = [repr(auth) for auth in CREDENTIALS.values()]
        shown += [str(auth) for auth in CREDENTIALS.values()]
        shown.append(repr(make_handler(CollectorRegistry(), auth=CREDENTIALS["bearer"])))
        server = start_http_server_in_thread(addr="127.0.0.1", auth=CREDENTIALS["basic"])
        shown += [repr(server), str(server.metrics_url)]
        server.close()

        async def in_loop() -> str:
            server = await start_http_server(addr="127.0.0.1", auth=CREDENTIALS["bearer"])
            await server.close()
            return repr(server)

        shown.append(asyncio.run(in_loop()))
        if HAS_TWISTED:
            from promloop.tx.web import MetricsResource

            resource = MetricsResource(
                CollectorRegistry(), auth=CREDENTIALS["basic"], reactor=object()
            )
            shown.append(repr(resource))
        # Credentials passed the wrong way: the error names the type, not the value.
        for wrong in (TOKEN, (USERNAME, PASSWORD), {"token": TOKEN}):
            with pytest.raises(TypeError) as info:
                make_handler(auth=wrong)  # type: ignore[arg-type]
            shown.append(described(info.value))
        for invalid in (
            lambda: BasicAuth(f"user:{PASSWORD}", PASSWORD),
            lambda: BearerToken(f"{TOKEN} x"),
        ):
            with pytest.raises(ValueError) as info:
                invalid()
            shown.append(described(info.value))
        figure("reprs and errors checked", len(shown), "")
        assert [] == leaked("\n".join(shown))

    def test_consul_failures(self, server_log, figure):
        """The Consul token (and a password in the agent's URL) in no log, error or repr.

        Each failure path of ConsulAgent: the agent refuses the token (403),
        answers 500 to a registration, to the service list of a kept
        registration and to a deregistration, is unreachable, and times out.
        """
        mark = len(server_log.records)
        errors: list[BaseException] = []
        shown: list[str] = []

        async def start_and_close(agent: ConsulAgent, wait: float = 0.0) -> None:
            shown.append(repr(agent))
            try:
                server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            except Exception as error:
                errors.append(error)
                return
            await asyncio.sleep(wait)
            try:
                await server.close()
            except Exception as error:
                errors.append(error)

        def agent(url: str, **options: Any) -> ConsulAgent:
            return ConsulAgent(agent_url=url, token=CONSUL_TOKEN, **options)

        async def main(
            consul: FakeConsul, refusing: FakeConsul, closed_port: int, silent: int
        ) -> None:
            with_password = consul.url.replace("://", f"://{USERNAME}:{PASSWORD}@")
            consul.fail_status = 500
            failing_registration = start_and_close(agent(consul.url, service_id="failing"))
            await asyncio.gather(
                start_and_close(agent(refusing.url, service_id="refused")),
                failing_registration,
                start_and_close(agent(f"http://127.0.0.1:{closed_port}")),
                start_and_close(agent(with_password.replace(str(consul.port), str(closed_port)))),
                start_and_close(agent(f"http://127.0.0.1:{silent}", timeout=0.5)),
                self.kept_registration(
                    consul,
                    agent(with_password, keep_registered=True, service_id="kept"),
                    shown,
                    server_log,
                ),
            )

        consul = FakeConsul(token=CONSUL_TOKEN).start()
        refusing = FakeConsul(token="another-token").start()
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        # Bound, never listening: connections are refused, and no other test's
        # socket can take the port meanwhile (one closed at once could be reused).
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        try:
            asyncio.run(main(consul, refusing, closed_port, silent.getsockname()[1]))
        finally:
            closed.close()
            silent.close()
            consul.close()
            refusing.close()

        logged = server_log.text(mark)
        kinds = sorted({type(error).__name__ for error in errors})
        figure(
            "failures provoked", len(errors) + logged.count("WARNING promloop"), "", errors=kinds
        )
        assert [] == leaked(logged)
        assert "refused to register" in logged
        assert "refused to list" in logged
        assert "refused to deregister" in logged
        assert {"ClientConnectorError", "TimeoutError"} <= set(kinds)
        assert [] == leaked("\n".join(shown + [described(error) for error in errors]))

    @staticmethod
    async def kept_registration(
        consul: FakeConsul, agent: ConsulAgent, shown: list[str], log: ServerLog
    ) -> None:
        """Keep a registration through a 500, a failing service list, a refused deregistration."""
        shown.append(repr(agent))
        server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
        await asyncio.sleep(1.5)  # registration fails (500), and is retried
        consul.fail_status = None
        await wait_until(lambda: "kept" in consul.services)
        consul.fail_status = 500  # the service list fails (checked every 5 s)
        await wait_until(lambda: "refused to list" in log.text(), timeout=10)
        consul.fail_status = 500  # and the deregistration is refused
        await server.close()
        consul.fail_status = None

    def test_push_failures(self, server_log, figure):
        """Pushgateway credentials in no error or log: refused, failing, unreachable, too slow."""
        mark = len(server_log.records)
        registry = CollectorRegistry()
        Counter("pushed", "Pushed.", registry=registry).inc()
        errors: list[BaseException] = []

        async def main() -> None:
            async def gateway(request: web.Request) -> web.Response:
                status = 401 if "Authorization" not in request.headers else 500
                return web.Response(status=status, text="the gateway says no")

            app = web.Application()
            app.router.add_route("*", "/{anything:.*}", gateway)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            silent = socket.socket()
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            closed = socket.socket()  # bound, never listening: refused
            closed.bind(("127.0.0.1", 0))
            closed_port = closed.getsockname()[1]
            targets = [
                (f"127.0.0.1:{port}", CREDENTIALS["basic"]),
                (f"http://127.0.0.1:{port}", CREDENTIALS["bearer"]),
                (f"http://{USERNAME}:{PASSWORD}@127.0.0.1:{port}", None),
                (f"http://{USERNAME}:{PASSWORD}@127.0.0.1:{closed_port}", None),
                (f"127.0.0.1:{closed_port}", CREDENTIALS["bearer"]),
                (f"http://{USERNAME}:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}", None),
                (f"127.0.0.1:{silent.getsockname()[1]}", CREDENTIALS["basic"]),
            ]
            try:
                for gateway_url, auth in targets:
                    for push in (push_to_gateway, delete_from_gateway):
                        arguments = (
                            (gateway_url, "job")
                            if push is delete_from_gateway
                            else (gateway_url, "job", registry)
                        )
                        try:
                            await push(*arguments, timeout=0.5, auth=auth)
                        except Exception as error:
                            errors.append(error)
            finally:
                closed.close()
                silent.close()
                await runner.cleanup()

        asyncio.run(main())
        kinds = collections.Counter(type(error).__name__ for error in errors)
        figure("failures provoked", len(errors), "", errors=dict(kinds))
        assert {"PushgatewayError", "ClientConnectorError", "TimeoutError"} <= set(kinds)
        assert 14 == len(errors)
        assert [] == leaked("\n".join(described(error) for error in errors))
        assert [] == leaked(server_log.text(mark))


async def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# --- TLS with client certificates -------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> dict[str, Any]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED

    def client(cert_from: Any | None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(context)
        if cert_from is not None:
            cert_from.issue_cert("scraper.example").configure_cert(context)
        return context

    return {
        "server": server,
        "anonymous": client(None),
        "foreign certificate": client(trustme.CA()),
        "certificate": client(ca),
    }


async def tls_exchange(port: int, context: ssl.SSLContext) -> bytes | str:
    """GET /metrics over TLS; return the answer's bytes, or how the connection failed."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"), 10
        )
    except (ssl.SSLError, ConnectionError, OSError) as error:
        return f"handshake failed: {type(error).__name__}"
    try:
        writer.write(request_bytes())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10) or "closed without an answer"
    except (ssl.SSLError, ConnectionError, OSError) as error:
        return f"refused after the handshake: {type(error).__name__}"
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
            await writer.wait_closed()


class TestClientCertificates:
    @pytest.mark.parametrize("name", [IN_LOOP, THREADED, HANDLER, FANIN])
    def test_refuses_a_client_without_one(self, server_log, tls, figure, name):
        """A server requiring client certificates answers nothing to a client without a valid one.

        Twisted's TLS (listenSSL) belongs to the application and needs
        pyOpenSSL: not tested here.
        """
        with started(name, server_log, ssl_ctx=tls["server"]) as mount:
            mark = mount.mark()
            outcomes = {
                client: asyncio.run(tls_exchange(mount.port, tls[client]))
                for client in ("anonymous", "foreign certificate", "certificate")
            }
            problems = mount.problems(mark)
        for client in ("anonymous", "foreign certificate"):
            figure(f"{client} client", str(outcomes[client]), "", mount=name)
            assert isinstance(outcomes[client], str) or b"HTTP/" not in outcomes[client], client
        answer = outcomes["certificate"]
        assert isinstance(answer, bytes), answer
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
        assert [] == problems
