"""promloop.aio.web.start_http_server_in_thread: servers left open at exit, and SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from .peers import port_is_free


pytest.importorskip("aiohttp")

from promloop.aio import _thread
from promloop.aio.web import start_http_server_in_thread


class Registered:
    """A ServiceDiscovery that registers nothing: enough to ask for exit handling."""

    async def register(self, metrics_server):
        return None


@pytest.fixture
def sigterm():
    """Restore SIGTERM's disposition after the test."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


class TestClosedAtExit:
    def test_open_servers_closed(self, registry):
        """The exit hook closes a server nobody closed, and frees its port."""
        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)

        _thread._close_open_servers()

        assert port_is_free(server.socket.port)
        assert server not in _thread._open_servers

    def test_closed_servers_forgotten(self, registry):
        """A server closed by the application is not closed again at exit."""
        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)

        server.close()

        assert server not in _thread._open_servers


class TestFork:
    # Python 3.12+ warns about fork() in a process with threads: this test forks one on purpose.
    @pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
    def test_child_does_not_close_its_parents_servers(self, registry):
        """A forked child exits at once: its parent's servers are not its to close."""
        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        try:
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:  # pragma: no cover -- the child; coverage does not follow it
                os._exit(0 if not _thread._open_servers else 1)
            _, status = os.waitpid(pid, 0)
            seconds = time.monotonic() - started
        finally:
            server.close()

        assert 0 == os.waitstatus_to_exitcode(status)
        assert seconds < 2

    def test_forgetting(self, registry):
        """What the child runs after a fork: it owns none of the open servers."""
        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        try:
            _thread._forget_after_fork()

            assert server not in _thread._open_servers
        finally:
            server.close()


class TestSigterm:
    def test_handler_installed_with_discovery(self, registry, sigterm):
        """With service discovery and SIGTERM's default action, SIGTERM closes the servers."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        server = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry, service_discovery=Registered()
        )
        try:
            assert _thread._terminate is signal.getsignal(signal.SIGTERM)
        finally:
            server.close()

    def test_applications_handler_kept(self, registry, sigterm):
        """An application's own SIGTERM handler is left alone."""

        def own(signum, frame):
            pass

        signal.signal(signal.SIGTERM, own)
        server = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry, service_discovery=Registered()
        )
        server.close()

        assert own is signal.getsignal(signal.SIGTERM)

    def test_not_from_another_thread(self, registry, sigterm):
        """Only the main thread may install a signal handler: elsewhere, exit handling only."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        servers = []
        starter = threading.Thread(
            target=lambda: servers.append(
                start_http_server_in_thread(
                    addr="127.0.0.1", registry=registry, service_discovery=Registered()
                )
            )
        )
        starter.start()
        starter.join()
        servers[0].close()

        assert signal.SIG_DFL is signal.getsignal(signal.SIGTERM)

    def test_terminate_closes_then_dies(self, registry, sigterm, monkeypatch):
        """The handler closes every open server, restores the default and re-sends SIGTERM."""
        killed = []
        monkeypatch.setattr(_thread.os, "kill", lambda pid, signum: killed.append(signum))
        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)

        _thread._terminate(signal.SIGTERM, None)

        assert port_is_free(server.socket.port)
        assert signal.SIG_DFL is signal.getsignal(signal.SIGTERM)
        assert [signal.SIGTERM] == killed
