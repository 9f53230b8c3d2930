"""Faults: peers that are down or slow, collectors that fail, work that is cancelled, full disks.

Each fault must end in a clear error or a clean recovery, within a bound,
and never in a hang, a leaked gauge or a lost result.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
import time

from pathlib import Path

import pytest

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from promloop import aio

from .client import get


aiohttp = pytest.importorskip("aiohttp")

from promloop.aio.push import push_to_gateway  # noqa: E402
from promloop.aio.sd import FileSD  # noqa: E402
from promloop.aio.web import start_http_server  # noqa: E402


def batch_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("batch_runs", "Runs.", registry=registry).inc()
    return registry


class TestPushgatewayFaults:
    def test_down(self, figure):
        """A gateway that refuses connections fails the push at once, naming the address."""
        with socket.socket() as reserved:
            reserved.bind(("127.0.0.1", 0))  # bound, not listening: refused
            port = reserved.getsockname()[1]
            started = time.perf_counter()
            with pytest.raises(aiohttp.ClientConnectionError, match=f"127.0.0.1:{port}"):
                asyncio.run(push_to_gateway(f"127.0.0.1:{port}", "job", batch_registry()))
        figure(
            "push to a gateway that is down fails after",
            round(time.perf_counter() - started, 3),
            "s",
        )

    def test_slow(self, figure):
        """A gateway that never answers fails the push at timeout=, naming it and the limit."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)  # accepts connections, never answers
            port = silent.getsockname()[1]
            started = time.perf_counter()
            with pytest.raises(TimeoutError, match=r"did not answer within timeout=0.5 s"):
                asyncio.run(
                    push_to_gateway(f"127.0.0.1:{port}", "job", batch_registry(), timeout=0.5)
                )
        seconds = time.perf_counter() - started
        figure("push to a silent gateway, timeout=0.5, fails after", round(seconds, 3), "s")
        assert seconds < 2.0


class Faulty:
    """A collector that raises, blocks, or works, as the test tells it to."""

    def __init__(self) -> None:
        self.mode = "works"
        self.release = threading.Event()

    def collect(self):
        if self.mode == "raises":
            raise RuntimeError("the database is gone")
        if self.mode == "blocks":
            self.release.wait(30)
        return []


class TestCollectorFaults:
    def test_raising_collector(self, figure, caplog):
        """A collector that raises fails that scrape with 500 and a log line; the next works."""
        registry, faulty = CollectorRegistry(), Faulty()
        Counter("hits", "Hits.", registry=registry).inc()
        registry.register(faulty)

        async def main():
            server = await start_http_server(addr="127.0.0.1", registry=registry)
            try:
                faulty.mode = "raises"
                failed = await get(server.socket.port)
                faulty.mode = "works"
                return failed, await get(server.socket.port)
            finally:
                await server.close()

        failed, recovered = asyncio.run(main())
        figure("scrape while a collector raises", failed.status, "status")
        figure("next scrape", recovered.status, "status")
        assert 500 == failed.status
        assert b"collecting the metrics failed" in failed.body
        assert "the database is gone" in caplog.text
        assert 200 == recovered.status

    def test_blocking_collector(self, figure):
        """A blocked collector gets 503 at the scraper's timeout; other registries are served."""
        registry, faulty, other = CollectorRegistry(), Faulty(), CollectorRegistry()
        registry.register(faulty)
        Counter("other_hits", "Hits.", registry=other).inc()

        async def main():
            stuck = await start_http_server(addr="127.0.0.1", registry=registry)
            fine = await start_http_server(addr="127.0.0.1", registry=other)
            try:
                faulty.mode = "blocks"
                started = time.perf_counter()
                blocked = asyncio.create_task(
                    get(stuck.socket.port, x_prometheus_scrape_timeout_seconds="1.5")
                )
                await asyncio.sleep(0.1)
                meanwhile_started = time.perf_counter()
                meanwhile = await get(fine.socket.port)
                meanwhile_seconds = time.perf_counter() - meanwhile_started
                answer = await blocked
                seconds = time.perf_counter() - started
                faulty.mode = "works"
                faulty.release.set()
                recovered = await get(stuck.socket.port)
                return answer, seconds, meanwhile, meanwhile_seconds, recovered
            finally:
                faulty.release.set()
                await stuck.close()
                await fine.close()

        answer, seconds, meanwhile, meanwhile_seconds, recovered = asyncio.run(main())
        figure("blocked scrape answered 503 after", round(seconds, 3), "s", timeout="1.5 s")
        figure("another server's scrape meanwhile", round(meanwhile_seconds * 1000, 1), "ms")
        assert 503 == answer.status
        assert seconds < 1.5
        assert 200 == meanwhile.status
        assert 200 == recovered.status


class TestCancellationAtEveryAwait:
    """A decorated coroutine cancelled at each of its await points leaves every metric right."""

    AWAITS = 5

    def test_each_await_point(self, figure):
        """Gauges come back to 0, nothing is counted as an error, and every call is timed."""
        registry = CollectorRegistry()
        in_progress = Gauge("work_in_progress", "Work.", registry=registry)
        failures = Counter("work_failures", "Work that failed.", registry=registry)
        durations = Histogram("work_seconds", "Work.", registry=registry)
        reached = []

        @aio.time(durations)
        @aio.count_exceptions(failures)
        @aio.track_inprogress(in_progress)
        async def work() -> None:
            for point in range(self.AWAITS):
                reached.append(point)
                await asyncio.sleep(0)

        async def cancel_at(point: int) -> None:
            task = asyncio.create_task(work())
            for _ in range(point + 1):  # let it reach await number *point*
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        for point in range(self.AWAITS):
            asyncio.run(cancel_at(point))

        observed = registry.get_sample_value("work_seconds_count")
        figure("cancellations", self.AWAITS, "await points")
        figure("gauge after them", registry.get_sample_value("work_in_progress"), "")
        figure("counted as failures", registry.get_sample_value("work_failures_total"), "")
        assert 0 == registry.get_sample_value("work_in_progress")
        assert 0 == registry.get_sample_value("work_failures_total")
        assert self.AWAITS == observed
        assert set(range(self.AWAITS)) == set(reached)


class TestFileSDFaults:
    def test_disk_full_at_start(self, tmp_path, figure, monkeypatch):
        """A full disk fails the start with an error naming the directory; nothing is left."""
        real_write = os.write

        def full(descriptor, data):
            if str(Path(f"/proc/self/fd/{descriptor}").readlink()).startswith(str(tmp_path)):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(descriptor, data)

        monkeypatch.setattr(os, "write", full)
        with pytest.raises(OSError, match=str(tmp_path)) as info:
            asyncio.run(start_http_server(addr="127.0.0.1", service_discovery=FileSD(tmp_path)))
        figure("start on a full disk", info.value.errno, "errno", meaning="ENOSPC")
        assert errno.ENOSPC == info.value.errno
        assert [] == list(tmp_path.iterdir())

    def test_read_only_file_system(self, tmp_path, figure, monkeypatch):
        """A read-only file system fails the start, naming the directory.

        The file system is made read-only by failing every file creation in
        the directory with EROFS, as the kernel would (these tests run as
        root, which a mode of 0o555 would not stop).
        """
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
                raise OSError(errno.EROFS, "Read-only file system")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        with pytest.raises(OSError, match=str(tmp_path)) as info:
            asyncio.run(start_http_server(addr="127.0.0.1", service_discovery=FileSD(tmp_path)))
        figure("start on a read-only file system", info.value.errno, "errno", meaning="EROFS")
        assert errno.EROFS == info.value.errno
        assert [] == list(tmp_path.iterdir())

    def test_directory_gone_while_serving(self, tmp_path, figure, caplog):
        """A directory removed under a serving server: it keeps serving, and closes cleanly."""
        directory = tmp_path / "targets"
        directory.mkdir()

        async def main():
            server = await start_http_server(addr="127.0.0.1", service_discovery=FileSD(directory))
            for entry in directory.iterdir():
                entry.unlink()
            directory.rmdir()
            answer = await get(server.socket.port)
            await server.close()
            return answer

        answer = asyncio.run(main())
        figure("scrape after its directory vanished", answer.status, "status")
        assert 200 == answer.status


RESTORE_BOUND = 7.0
"""Seconds within which keep_registered must restore a registration once the agent is back:
the documented schedule retries at most 5 s apart and checks the agent's list every 5 s,
plus a second for the request on a loaded machine."""


def wait_registered(consul, timeout: float) -> float:
    """Wait until *consul* lists one service; return how long that took."""
    started = time.perf_counter()
    while not consul.services:
        if time.perf_counter() - started > timeout:
            pytest.fail(f"not registered within {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - started


@pytest.fixture
def consul():
    from ..fake_consul import FakeConsul

    agent = FakeConsul().start()
    yield agent
    agent.close()


def keep_registered_server(consul, **options):
    from promloop.aio.sd import ConsulAgent
    from promloop.aio.web import start_http_server_in_thread

    agent = ConsulAgent(
        name="faults", agent_url=consul.url, keep_registered=True, check_interval="1s", **options
    )
    return start_http_server_in_thread(addr="127.0.0.1", service_discovery=agent)


class TestConsulFaults:
    """keep_registered=True against an agent that misbehaves, in real time."""

    def test_down_at_start(self, consul, figure):
        """The server starts at once with the agent down, and registers once it is up."""
        consul.stop()
        started = time.perf_counter()
        server = keep_registered_server(consul)
        start_seconds = time.perf_counter() - started
        try:
            time.sleep(1.5)
            consul.start()
            seconds = wait_registered(consul, RESTORE_BOUND)
        finally:
            server.close()
        figure("start with the agent down", round(start_seconds * 1000, 1), "ms")
        figure("registered after the agent came up", round(seconds, 2), "s")
        assert {} == consul.services  # deregistered on close

    def test_flapping(self, consul, figure):
        """An agent restarted without its data, three times: registered again each time."""
        server = keep_registered_server(consul)
        restored = []
        try:
            wait_registered(consul, RESTORE_BOUND)
            for _ in range(3):
                consul.stop()
                consul.forget_all()  # restarted without its data
                time.sleep(0.5)
                consul.start()
                restored.append(wait_registered(consul, RESTORE_BOUND))
        finally:
            server.close()
        figure("re-registered after each restart, worst", round(max(restored), 2), "s")
        assert {} == consul.services

    def test_forgetting(self, consul, figure):
        """An agent that forgets the service (a restart, an operator) is reminded of it."""
        server = keep_registered_server(consul)
        try:
            wait_registered(consul, RESTORE_BOUND)
            consul.forget_all()
            seconds = wait_registered(consul, RESTORE_BOUND)
        finally:
            server.close()
        figure("re-registered after the agent forgot it", round(seconds, 2), "s")

    def test_answering_500(self, consul, figure):
        """An agent answering 500 for a while: registered once it answers again."""
        consul.fail_status = 500
        server = keep_registered_server(consul)
        try:
            time.sleep(2)
            assert {} == consul.services
            consul.fail_status = None
            seconds = wait_registered(consul, RESTORE_BOUND)
        finally:
            server.close()
        figure("registered after the agent recovered from 500s", round(seconds, 2), "s")

    def test_slow(self, consul, figure):
        """A slow agent within timeout= registers; past it, start fails naming the agent."""
        from promloop.aio.sd import ConsulAgent
        from promloop.aio.web import start_http_server_in_thread

        consul.delay = 0.5
        started = time.perf_counter()
        server = start_http_server_in_thread(
            addr="127.0.0.1",
            service_discovery=ConsulAgent(name="faults", agent_url=consul.url, timeout=2),
        )
        registered = time.perf_counter() - started
        server.close()
        consul.delay = 3.0
        started = time.perf_counter()
        with pytest.raises(TimeoutError, match=f"{consul.url}.*within 1 s"):
            start_http_server_in_thread(
                addr="127.0.0.1",
                service_discovery=ConsulAgent(name="faults", agent_url=consul.url, timeout=1),
            )
        failed = time.perf_counter() - started
        figure("start with an agent answering in 0.5 s", round(registered, 2), "s")
        figure("start with an agent answering in 3 s, timeout=1", round(failed, 2), "s")
        assert failed < 2.5
        # The agent registers the service after the start gave up on it, then
        # deregisters it, as the failed start asked.
        deadline = time.perf_counter() + 10
        while consul.calls("PUT", "/v1/agent/service/deregister") == 0 or consul.services:
            assert time.perf_counter() < deadline, consul.services
            time.sleep(0.05)
