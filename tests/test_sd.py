"""promloop.aio.sd.ConsulAgent, against a faithful fake agent (docs/discovery.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

from promloop import BearerToken
from promloop.aio.sd import ConsulAgent
from promloop.aio.web import Socket, start_http_server, start_http_server_in_thread

from .fake_consul import FakeConsul
from .peers import port_is_free


run = asyncio.run


class StandIn:
    """What a ServiceDiscovery sees of a server: socket, https, metrics_path."""

    def __init__(
        self, addr="127.0.0.1", port=9100, *, https=False, metrics_path="/metrics", protected=False
    ):
        self.socket = Socket(addr, port)
        self.https = https
        self.metrics_path = metrics_path
        self.protected = protected


@pytest.fixture
def consul():
    fake = FakeConsul().start()
    yield fake
    fake.close()


class TestConsulAgent:
    def test_registers_and_deregisters(self, consul):
        """The agent gets Consul's fields, the check URL and Meta; close deregisters once."""
        agent = ConsulAgent(
            name="billing-metrics",
            tags=("a", "b"),
            agent_url=consul.url,
            meta={"team": "payments"},
            check_interval="5s",
            check_timeout="1s",
            deregister_critical_after="1m",
        )

        async def main():
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            service_id = f"billing-metrics-127.0.0.1-{server.socket.port}"
            registered = dict(consul.registered(service_id))
            await server.close()
            await server.close()
            return server, service_id, registered

        server, service_id, registered = run(main())
        port = server.socket.port

        assert {
            "Name": "billing-metrics",
            "ID": service_id,
            "Tags": ["a", "b"],
            "Address": "127.0.0.1",
            "Port": port,
            "Meta": {"team": "payments", "metrics_path": "/metrics", "scheme": "http"},
            "Check": {
                "HTTP": f"http://127.0.0.1:{port}/",
                "Interval": "5s",
                "Timeout": "1s",
                "DeregisterCriticalServiceAfter": "1m",
            },
        } == registered
        assert consul.registered(service_id) is None
        deregistrations = [r for r in consul.requests if "deregister" in r[1]]
        assert 1 == len(deregistrations)
        assert not server.is_registered

    def test_protected_server_checked_by_connecting(self, consul):
        """A server with auth= gets a TCP check: an HTTP one would need its credentials."""
        agent = ConsulAgent(name="private", agent_url=consul.url, check_interval="5s")

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", service_discovery=agent, auth=BearerToken("s3cret")
            )
            registered = dict(consul.registered(f"private-127.0.0.1-{server.socket.port}"))
            await server.close()
            return server, registered

        server, registered = run(main())

        assert server.protected
        assert {"TCP": f"127.0.0.1:{server.socket.port}", "Interval": "5s"} == registered["Check"]
        assert "s3cret" not in repr(registered)

    def test_compatible_defaults(self, consul):
        """prometheus-async's arguments keep their meaning; deregister=False leaves it."""

        async def main():
            server = await start_http_server(
                addr="127.0.0.1",
                service_discovery=ConsulAgent(
                    service_id="fixed-id", deregister=False, agent_url=consul.url
                ),
            )
            await server.close()

        run(main())

        assert "app-metrics" == consul.registered("fixed-id")["Name"]

    def test_token_in_header_only(self, monkeypatch, caplog):
        """The token (from CONSUL_HTTP_TOKEN) goes in X-Consul-Token, never in a URL or a log."""
        fake = FakeConsul(token="s3cret-token").start()
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "s3cret-token")
        monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{fake.port}")
        try:
            agent = ConsulAgent(service_id="with-token")

            async def main():
                server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
                await server.close()

            with caplog.at_level(logging.DEBUG):
                run(main())
        finally:
            fake.close()

        assert 2 == len(fake.requests)
        for _, path, headers, _ in fake.requests:
            assert "s3cret-token" == headers["X-Consul-Token"]
            assert "s3cret-token" not in path
        assert "s3cret-token" not in caplog.text
        assert "s3cret-token" not in repr(agent)

    def test_refused_is_logged_not_registered(self, caplog):
        """A non-2xx answer means "not registered", logged with status and body, never the token."""
        fake = FakeConsul(token="right").start()
        try:
            agent = ConsulAgent(agent_url=fake.url, token="wrong")

            async def main():
                server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
                registered = server.is_registered
                await server.close()
                return registered

            with caplog.at_level(logging.WARNING, logger="promloop"):
                registered = run(main())
        finally:
            fake.close()

        assert not registered
        assert "HTTP 403: ACL not found" in caplog.text
        assert "wrong" not in caplog.text.replace("refused", "")

    def test_server_error(self, consul, caplog):
        """A 5xx answer is a refusal too."""
        consul.fail_status = 500

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", service_discovery=ConsulAgent(agent_url=consul.url)
            )
            registered = server.is_registered
            await server.close()
            return registered

        with caplog.at_level(logging.WARNING, logger="promloop"):
            assert not run(main())
        assert "HTTP 500: fake Consul: simulated failure" in caplog.text

    def test_invalid_registration_is_refused(self, consul, caplog):
        """The fake validates as Consul does: a bad check interval is a 400."""

        async def main():
            server = await start_http_server(
                addr="127.0.0.1",
                service_discovery=ConsulAgent(agent_url=consul.url, check_interval="ten seconds"),
            )
            await server.close()
            return server.is_registered

        with caplog.at_level(logging.WARNING, logger="promloop"):
            run(main())
        assert "HTTP 400" in caplog.text
        assert "invalid duration" in caplog.text

    def test_agent_down_raises_and_frees_socket(self):
        """With default settings, an unreachable agent fails the start; the socket is freed."""
        dead = f"http://127.0.0.1:{_unused_port()}"
        port = _unused_port()

        with pytest.raises(OSError):
            run(
                start_http_server(
                    addr="127.0.0.1", port=port, service_discovery=ConsulAgent(agent_url=dead)
                )
            )
        assert port_is_free(port)

    def test_failed_deregistration_still_frees_socket(self, consul):
        """If the agent is gone at close, the server still closes and frees its port."""

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", service_discovery=ConsulAgent(agent_url=consul.url)
            )
            consul.stop()
            with pytest.raises(OSError):
                await server.close()
            return server

        server = run(main())

        assert port_is_free(server.socket.port)
        assert not server.is_registered

    def test_one_session_per_agent(self, consul):
        """Two servers registered by one agent object share its session, closed after both."""
        agent = ConsulAgent(agent_url=consul.url)

        async def main():
            first = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            second = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            session = agent._session
            await first.close()
            still_open = not session.closed
            await second.close()
            return session, still_open

        session, still_open = run(main())

        assert still_open
        assert session.closed
        assert {} == consul.services

    def test_refused_deregistration_is_logged(self, consul, caplog):
        """An agent that refuses the deregistration (it forgot the service) is logged."""

        async def main():
            server = await start_http_server(
                addr="127.0.0.1",
                service_discovery=ConsulAgent(agent_url=consul.url, service_id="gone"),
            )
            consul.forget_all()
            await server.close()

        with caplog.at_level(logging.WARNING, logger="promloop"):
            run(main())
        assert "refused to deregister service 'gone': HTTP 404" in caplog.text

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (None, "http://127.0.0.1:8500"),
            ("consul.internal:8500", "http://consul.internal:8500"),
            ("http://consul.internal:8500/", "http://consul.internal:8500"),
            ("https://consul.internal:8501", "https://consul.internal:8501"),
        ],
    )
    def test_agent_address_forms(self, monkeypatch, given, expected):
        """CONSUL_HTTP_ADDR is accepted in Consul's forms."""
        monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
        if given is not None:
            monkeypatch.setenv("CONSUL_HTTP_ADDR", given)

        assert expected == ConsulAgent().agent_url

    def test_bad_agent_address(self):
        """A non-HTTP agent address fails at once."""
        with pytest.raises(ValueError, match="http:// or https://"):
            ConsulAgent(agent_url="unix:///var/run/consul.sock")


class TestTimeout:
    def test_silent_agent_at_threaded_start(self, silent_agent):
        """An agent that accepts and never answers fails the start, naming Consul and the limit."""
        agent = ConsulAgent(agent_url=silent_agent, token="s3cret-token", timeout=0.2)

        with pytest.raises(TimeoutError) as raised:
            start_http_server_in_thread(addr="127.0.0.1", service_discovery=agent)

        message = str(raised.value)
        assert f"Consul agent {silent_agent} did not answer within 0.2 s" in message
        assert "timeout=" in message
        assert "s3cret-token" not in message + repr(raised.value) + repr(agent)

    def test_silent_agent_in_the_background(self, silent_agent, caplog):
        """With keep_registered, each attempt gives up after the limit, and is logged so."""
        waits = Waits()
        agent = kept(silent_agent, waits, timeout=0.1)

        async def main():
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await until(lambda: len(waits.asked) >= 2, "two attempts")
            # The first attempt may have reached the agent: close tries to
            # deregister, which the silent agent does not answer either.
            with pytest.raises(TimeoutError, match=r"did not answer within 0\.1 s"):
                await server.close()
            return server

        with caplog.at_level(logging.WARNING, logger="promloop"):
            server = run(main())

        assert port_is_free(server.socket.port)
        assert f"Consul agent {silent_agent} unreachable: TimeoutError: Consul agent" in caplog.text

    @pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "10"])
    def test_invalid(self, timeout):
        """A limit that is not a positive number of seconds fails at once."""
        with pytest.raises(ValueError, match="timeout= must be a positive number of seconds"):
            ConsulAgent(timeout=timeout)


class TestKeepRegistered:
    def test_agent_down_at_start(self, consul):
        """The server starts anyway; retries back off from under 1 s to 5 s; then it registers."""
        consul.stop()
        waits = Waits()

        async def main():
            agent = kept(consul.url, waits)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await until(lambda: len(waits.asked) >= 7, "seven failed attempts")
            assert server.is_registered  # the registration is kept: the server runs
            retries = list(waits.asked)
            await asyncio.get_running_loop().run_in_executor(None, consul.start)
            await until(lambda: consul.registered("kept") is not None, "the registration")
            await server.close()
            return retries

        retries = run(main())

        assert_backs_off(retries)
        assert consul.registered("kept") is None  # deregistered on close

    def test_reregisters_after_agent_forgets(self, consul):
        """The service list is checked every 5 s: a listed service is left alone, else re-added."""
        waits = Waits()

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", service_discovery=kept(consul.url, waits)
            )
            await until(lambda: consul.calls("GET", "/v1/agent/services") >= 3, "three checks")
            checks = list(waits.asked)
            registrations = consul.calls("PUT", "/v1/agent/service/register")
            consul.forget_all()
            await until(lambda: consul.registered("kept") is not None, "a new registration")
            await server.close()
            return checks, registrations

        checks, registrations = run(main())

        assert 1 == registrations  # nothing registered needlessly
        assert {5.0} == set(checks)
        assert 2 == consul.calls("PUT", "/v1/agent/service/register")

    def test_refused_then_accepted(self, caplog):
        """A refusing agent is asked again, backing off, until it accepts."""
        fake = FakeConsul(token="right").start()
        waits = Waits()
        try:

            async def main():
                fake.fail_status = 503
                server = await start_http_server(
                    addr="127.0.0.1", service_discovery=kept(fake.url, waits, token="right")
                )
                await until(lambda: len(waits.asked) >= 3, "three refusals")
                retries = list(waits.asked)
                fake.fail_status = None
                await until(lambda: fake.registered("kept") is not None, "the registration")
                await server.close()
                return retries

            with caplog.at_level(logging.WARNING, logger="promloop"):
                retries = run(main())
        finally:
            fake.close()
        assert_backs_off(retries)
        assert "HTTP 503" in caplog.text

    def test_survives_a_garbled_answer(self, caplog):
        """A reply that is not even JSON does not end the background registration.

        The warning names the error, never the token (aiohttp's repr of a
        response error would show the request's headers).
        """
        fake = FakeConsul(token="s3cret-token").start()
        waits = Waits()
        try:

            async def main():
                agent = kept(fake.url, waits, token="s3cret-token")
                server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
                await until(lambda: fake.registered("kept") is not None, "the registration")
                fake.garble_next_service_list = True
                fake.forget_all()
                await until(lambda: fake.registered("kept") is not None, "a new registration")
                fake.fail_status = 500  # and a service list refused
                await until(lambda: "refused to list" in caplog.text, "a refused list")
                fake.fail_status = None
                await server.close()

            with caplog.at_level(logging.DEBUG):
                run(main())
        finally:
            fake.close()
        assert fake.registered("kept") is None  # deregistered on close
        assert "ContentTypeError" in caplog.text
        assert "HTTP 500: fake Consul: simulated failure" in caplog.text
        assert "s3cret-token" not in caplog.text

    def test_password_in_the_agent_url_never_shown(self, caplog, silent_agent):
        """A password in agent_url authenticates, and appears in no repr, log line or error."""
        fake = FakeConsul(token="right").start()
        try:

            async def main():
                refused = kept(fake.url.replace("://", "://user:pa55word@"), Waits(), token="no")
                server = await start_http_server(addr="127.0.0.1", service_discovery=refused)
                await until(lambda: "refused to register" in caplog.text, "a refusal")
                await server.close()
                silent = ConsulAgent(
                    agent_url=silent_agent.replace("://", "://user:pa55word@"), timeout=0.1
                )
                with pytest.raises(TimeoutError) as info:
                    await start_http_server(addr="127.0.0.1", service_discovery=silent)
                return refused, info.value

            with caplog.at_level(logging.DEBUG, logger="promloop"):
                agent, error = run(main())
        finally:
            fake.close()

        assert "Basic dXNlcjpwYTU1d29yZA==" == fake.requests[0][2]["Authorization"]
        assert "Consul agent http://user:***@127.0.0.1" in caplog.text
        assert "http://user:***@127.0.0.1" in str(error)
        assert "pa55word" not in caplog.text + repr(agent) + str(error)

    def test_never_reached_agent_closes_quietly(self, caplog):
        """A server whose agent never answered closes without trying to deregister."""
        dead = f"http://127.0.0.1:{_unused_port()}"
        waits = Waits()

        async def main():
            server = await start_http_server(addr="127.0.0.1", service_discovery=kept(dead, waits))
            await until(lambda: len(waits.asked) >= 2, "two attempts")
            await server.close()
            return server

        with caplog.at_level(logging.WARNING, logger="promloop"):
            server = run(main())

        assert port_is_free(server.socket.port)
        assert "deregister" not in caplog.text

    def test_flapping_agent(self, consul):
        """An agent that goes down and up again ends with the service registered."""
        waits = Waits()

        async def main():
            server = await start_http_server(
                addr="127.0.0.1", service_discovery=kept(consul.url, waits)
            )
            loop = asyncio.get_running_loop()
            for _ in range(3):
                await until(lambda: consul.registered("kept") is not None, "the registration")
                await loop.run_in_executor(None, consul.stop)
                consul.forget_all()
                failed = len(waits.asked)
                await until(lambda: len(waits.asked) >= failed + 2, "two failed attempts")  # noqa: B023
                await loop.run_in_executor(None, consul.start)
            await until(lambda: consul.registered("kept") is not None, "the registration")
            await server.close()

        run(main())

        assert 4 <= consul.calls("PUT", "/v1/agent/service/register")

    @pytest.mark.parametrize("deregister", [True, False])
    def test_closed_while_registering(self, consul, deregister):
        """Closed while a registration is in flight, the service is deregistered all the same.

        The agent registered it, but its answer had not arrived.
        """
        consul.hang_registrations = "after-registering"

        async def main():
            agent = kept(consul.url, Waits(), deregister=deregister)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await until(lambda: consul.registered("kept") is not None, "the registration")
            await server.close()

        run(main())

        assert (consul.registered("kept") is None) is deregister
        assert int(deregister) == consul.calls("PUT", "/v1/agent/service/deregister/")

    def test_closed_before_the_agent_registered(self, consul, caplog):
        """A registration that never reached the agent's books is not worth a warning.

        Close cannot know: it deregisters, and the agent's 404 is expected.
        """
        consul.hang_registrations = "before-registering"

        async def main():
            agent = kept(consul.url, Waits())
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await until(lambda: consul.calls("PUT", "/v1/agent/service/register"), "an attempt")
            await server.close()

        with caplog.at_level(logging.WARNING, logger="promloop"):
            run(main())

        assert 1 == consul.calls("PUT", "/v1/agent/service/deregister/")
        assert "" == caplog.text

    def test_closed_while_registering_deregistration_refused(self, consul, caplog):
        """Any other refusal of that deregistration is logged."""
        consul.hang_registrations = "before-registering"

        async def main():
            agent = kept(consul.url, Waits())
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await until(lambda: consul.calls("PUT", "/v1/agent/service/register"), "an attempt")
            consul.fail_status = 500
            await server.close()

        with caplog.at_level(logging.WARNING, logger="promloop"):
            run(main())

        assert "refused to deregister service 'kept': HTTP 500" in caplog.text


class Waits:
    """Stands in for asyncio.sleep in ConsulAgent's background registration.

    It records each wait asked for and lets it pass at once (after a moment
    of real time, so that the test and the fake agent's thread run): the
    retry schedule is checked exactly, and no test sleeps for seconds.
    """

    def __init__(self):
        self.asked = []

    async def __call__(self, seconds):
        self.asked.append(seconds)
        await asyncio.sleep(0.002)


def kept(agent_url, waits, **options):
    """Return a ConsulAgent that keeps the service "kept" registered, waiting with *waits*."""
    agent = ConsulAgent(agent_url=agent_url, service_id="kept", keep_registered=True, **options)
    agent._sleep = waits
    return agent


def assert_backs_off(waits):
    """Check the retry schedule: retry n waits base * [0.5, 1] s, base = 0.5 * 2**n up to 5."""
    base = 0.5
    for wait in waits:
        assert base / 2 <= wait <= base, waits
        base = min(base * 2, 5.0)


async def until(condition, what, timeout=30.0):
    """Wait until *condition()* holds; fail after *timeout* seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def silent_agent():
    """Yield the URL of an agent that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
