"""promloop.aio.sd.ConsulAgent, against a faithful fake agent (docs/discovery.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

from promloop.aio.sd import ConsulAgent
from promloop.aio.web import Socket, start_http_server

from .fake_consul import FakeConsul
from .peers import port_is_free


run = asyncio.run


class StandIn:
    """What a ServiceDiscovery sees of a server: socket, https, metrics_path."""

    def __init__(self, addr="127.0.0.1", port=9100, *, https=False, metrics_path="/metrics"):
        self.socket = Socket(addr, port)
        self.https = https
        self.metrics_path = metrics_path


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


class TestKeepRegistered:
    def test_agent_down_at_start(self, consul):
        """The server starts anyway, and registers within a second of the agent coming up."""
        consul.stop()

        async def main():
            agent = ConsulAgent(agent_url=consul.url, service_id="kept", keep_registered=True)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await asyncio.sleep(1.5)  # a few failed attempts
            assert server.is_registered  # the registration is kept: the server runs
            up = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, consul.start)
            while consul.registered("kept") is None:
                await asyncio.sleep(0.05)
            registered_after = time.monotonic() - up
            await server.close()
            return registered_after

        registered_after = run(main())

        assert registered_after < 6  # the backoff is capped at 5 s
        assert consul.registered("kept") is None  # deregistered on close

    def test_reregisters_after_agent_forgets(self, consul):
        """A listed service is left alone; one the agent no longer lists is registered again."""

        async def main():
            agent = ConsulAgent(agent_url=consul.url, service_id="kept", keep_registered=True)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            while consul.registered("kept") is None:
                await asyncio.sleep(0.05)
            await asyncio.sleep(5.5)  # one check of the service list: still listed
            registrations = [r for r in consul.requests if r[1] == "/v1/agent/service/register"]
            assert 1 == len(registrations)  # nothing registered needlessly
            consul.forget_all()
            forgotten = time.monotonic()
            while consul.registered("kept") is None:
                await asyncio.sleep(0.05)
            again_after = time.monotonic() - forgotten
            await server.close()
            return again_after

        assert run(main()) < 7  # the service list is checked at least every 5 s

    def test_refused_then_accepted(self, caplog):
        """A refusing agent is asked again until it accepts."""
        fake = FakeConsul(token="right").start()
        try:

            async def main():
                agent = ConsulAgent(
                    agent_url=fake.url, token="right", service_id="kept", keep_registered=True
                )
                fake.fail_status = 503
                server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
                await asyncio.sleep(1.5)
                fake.fail_status = None
                deadline = time.monotonic() + 10
                while fake.registered("kept") is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                registered = fake.registered("kept") is not None
                await server.close()
                return registered

            with caplog.at_level(logging.WARNING, logger="promloop"):
                assert run(main())
        finally:
            fake.close()
        assert "HTTP 503" in caplog.text

    def test_survives_a_garbled_answer(self, consul, caplog):
        """A reply that is not even JSON does not end the background registration."""

        async def main():
            agent = ConsulAgent(agent_url=consul.url, service_id="kept", keep_registered=True)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            while consul.registered("kept") is None:
                await asyncio.sleep(0.05)
            consul.garble_next_service_list = True
            consul.forget_all()
            deadline = time.monotonic() + 15
            while consul.registered("kept") is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            registered = consul.registered("kept") is not None
            await server.close()
            return registered

        with caplog.at_level(logging.WARNING, logger="promloop"):
            assert run(main())
        assert consul.registered("kept") is None  # deregistered on close
        assert "JSONDecodeError" in caplog.text or "ContentTypeError" in caplog.text

    def test_never_reached_agent_closes_quietly(self):
        """A server whose agent never answered closes without trying to deregister."""
        dead = f"http://127.0.0.1:{_unused_port()}"

        async def main():
            agent = ConsulAgent(agent_url=dead, keep_registered=True)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            await asyncio.sleep(0.2)
            await server.close()
            return server

        server = run(main())

        assert port_is_free(server.socket.port)

    def test_flapping_agent(self, consul):
        """An agent that goes down and up again ends with the service registered."""

        async def main():
            agent = ConsulAgent(agent_url=consul.url, service_id="kept", keep_registered=True)
            server = await start_http_server(addr="127.0.0.1", service_discovery=agent)
            loop = asyncio.get_running_loop()
            for _ in range(3):
                await loop.run_in_executor(None, consul.stop)
                consul.forget_all()
                await asyncio.sleep(0.3)
                await loop.run_in_executor(None, consul.start)
                await asyncio.sleep(0.3)
            deadline = time.monotonic() + 10
            while consul.registered("kept") is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            registered = consul.registered("kept") is not None
            await server.close()
            return registered

        assert run(main())


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
