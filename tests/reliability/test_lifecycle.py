"""Lifecycle: starting, scraping and closing every mount point, over and over.

Each test runs warm-up cycles first (thread pools, caches and imports fill
up once), measures what the process holds, runs the measured cycles, and
reports the growth of file descriptors, OS threads, asyncio tasks and
resident memory.  Anything but ~0 is a leak.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import threading
import time

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prometheus_client import CollectorRegistry, Counter

from .client import blocking_get, get
from .resources import Resources, scaled, settled, steady


web = pytest.importorskip("aiohttp.web")

from promloop.aio.web import (  # noqa: E402
    make_handler,
    start_http_server,
    start_http_server_in_thread,
)


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


CYCLES = scaled(500, 2000)
WARMUP = 30
RSS_SLACK = 4 * 1024 * 1024
"""Resident memory may grow this much without counting as a leak: the allocator's
arenas and aiohttp's caches settle in steps, not per cycle."""

CLOSE_BOUND = 3.0
"""Seconds close() may take with scrapes in flight (docs/reliability.md): aiohttp gives
them one second to finish, cancels them, and waits at most one second more."""

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("cycles", "Start/scrape/close cycles.", registry=registry).inc()
    return registry


async def fill_default_executor() -> None:
    """Start every thread of the loop's default executor, which grows one thread at a time.

    Renders run there; a pool that grows to its bound is not a leak, so the
    measurement starts once it is full.
    """
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.05) for _ in range(64)))


def report(figure, growth: Resources, tasks: int, seconds: float) -> None:
    figure("fd growth", growth.fds, "fds", cycles=CYCLES)
    figure("thread growth", growth.threads, "threads")
    figure("task growth", tasks, "tasks")
    figure("RSS growth", round(growth.rss / 1024), "kB")
    figure("one cycle", round(seconds / CYCLES * 1000, 2), "ms")


def assert_no_leak(growth: Resources, tasks: int) -> None:
    assert 0 == growth.fds
    assert 0 == growth.threads
    assert 0 == tasks
    assert growth.rss < RSS_SLACK


async def measured(cycles: Callable[[int], Awaitable[None]]) -> tuple[Resources, int, float]:
    """Run WARMUP cycles, then CYCLES measured ones.

    Returns what the process grew by, how many more asyncio tasks it has, and
    how long the measured cycles took.
    """
    await fill_default_executor()
    await cycles(WARMUP)
    before, tasks_before = Resources.now(), len(asyncio.all_tasks())
    started = time.perf_counter()
    await cycles(CYCLES)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.1)  # let closed transports finish their last callbacks
    return Resources.now() - before, len(asyncio.all_tasks()) - tasks_before, seconds


class TestStartScrapeClose:
    """CYCLES start/scrape/close cycles of each mount point leave nothing behind."""

    def test_in_loop_server(self, registry, figure):
        """start_http_server() in the running loop, scraped, then closed."""

        async def cycles(count: int) -> None:
            for _ in range(count):
                server = await start_http_server(addr="127.0.0.1", registry=registry)
                assert 200 == (await get(server.socket.port)).status
                await server.close()

        growth, tasks, seconds = asyncio.run(measured(cycles))
        report(figure, growth, tasks, seconds)
        assert_no_leak(growth, tasks)

    def test_threaded_server(self, registry, figure):
        """start_http_server_in_thread() from synchronous code, scraped, then closed."""

        def cycles(count: int) -> None:
            for _ in range(count):
                server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
                assert 200 == blocking_get(server.socket.port).status
                server.close()

        cycles(WARMUP)
        before = steady()
        started = time.perf_counter()
        cycles(CYCLES)
        seconds = time.perf_counter() - started
        growth = settled(before) - before
        report(figure, growth, 0, seconds)
        assert_no_leak(growth, 0)

    def test_handler_in_an_app(self, registry, figure):
        """make_handler() mounted in an aiohttp app that is started, scraped and cleaned up."""

        async def cycles(count: int) -> None:
            for _ in range(count):
                app = web.Application()
                app.router.add_get("/metrics", make_handler(registry))
                runner = web.AppRunner(app)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                assert 200 == (await get(port)).status
                await runner.cleanup()

        growth, tasks, seconds = asyncio.run(measured(cycles))
        report(figure, growth, tasks, seconds)
        assert_no_leak(growth, tasks)

    def test_fan_in(self, registry, figure, tmp_path):
        """start_fanin() in front of a worker: started, scraped (so is the worker), closed."""
        from promloop.aio.fanin import start_fanin
        from promloop.aio.sd import FileSD

        async def cycles(count: int) -> None:
            for _ in range(count):
                fan_in = await start_fanin(tmp_path, addr="127.0.0.1")
                answer = await get(fan_in.socket.port)
                assert 200 == answer.status
                assert b'cycles_total{worker="0"} 1.0' in answer.body
                await fan_in.close()

        async def main() -> tuple[Resources, int, float]:
            worker = await start_http_server(
                addr="127.0.0.1",
                registry=registry,
                service_discovery=FileSD(tmp_path, slot="worker"),
            )
            try:
                return await measured(cycles)
            finally:
                await worker.close()

        growth, tasks, seconds = asyncio.run(main())
        report(figure, growth, tasks, seconds)
        assert_no_leak(growth, tasks)

    def test_twisted_resource(self, figure):
        """MetricsResource on a twisted.web Site that starts listening, is scraped and stops.

        Run in a process of its own, with a real reactor; the reactor's pending
        delayed calls stand for asyncio's tasks.
        """
        pytest.importorskip("twisted")
        result = subprocess.run(
            [sys.executable, "-m", "tests.reliability.twisted_cycles", str(WARMUP), str(CYCLES)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert 0 == result.returncode, result.stderr
        measured = json.loads(result.stdout)
        growth = Resources(**measured["growth"])
        report(figure, growth, measured["delayed_calls"], measured["seconds"])
        assert_no_leak(growth, measured["delayed_calls"])


class BlockingCollector:
    """A collector whose collect() blocks until released: a render stuck in flight."""

    def __init__(self, seconds: float) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seconds = seconds

    def collect(self):
        self.entered.set()
        self.release.wait(self.seconds)
        return []


class TestCloseWhileScraping:
    """close() with 16 scrapes in flight returns within a bound; each scrape ends cleanly."""

    SCRAPES = 16

    @pytest.mark.parametrize("stuck_for", [1.0, 30.0], ids=["slow-render", "stuck-render"])
    def test_in_loop_server(self, figure, stuck_for):
        """Each scrape gets its full answer or a closed connection, never a hang."""
        registry = CollectorRegistry()
        collector = BlockingCollector(stuck_for)
        registry.register(collector)

        async def scrape(port: int) -> str:
            try:
                answer = await get(port, timeout=60)
            except (ConnectionError, OSError, ValueError, IndexError):
                return "cut"
            return "answered" if answer.status == 200 else f"status {answer.status}"

        async def main() -> tuple[float, list[str]]:
            server = await start_http_server(addr="127.0.0.1", registry=registry)
            scrapes = [asyncio.create_task(scrape(server.socket.port)) for _ in range(self.SCRAPES)]
            await asyncio.get_running_loop().run_in_executor(None, collector.entered.wait, 10)
            await asyncio.sleep(0.2)  # every client has sent its request
            started = time.perf_counter()
            await server.close()
            seconds = time.perf_counter() - started
            outcomes = await asyncio.wait_for(asyncio.gather(*scrapes), 10)
            collector.release.set()
            return seconds, outcomes

        seconds, outcomes = asyncio.run(main())
        figure("close() with 16 scrapes in flight", round(seconds, 3), "s", render=stuck_for)
        figure("scrapes answered", outcomes.count("answered"), f"of {self.SCRAPES}")
        assert set(outcomes) <= {"answered", "cut"}
        assert seconds < CLOSE_BOUND

    @pytest.mark.parametrize("stuck_for", [1.0, 30.0], ids=["slow-render", "stuck-render"])
    def test_threaded_server(self, figure, stuck_for):
        """The synchronous close() is bounded the same way, from the caller's thread."""
        registry = CollectorRegistry()
        collector = BlockingCollector(stuck_for)
        registry.register(collector)

        def scrape(port: int) -> str:
            try:
                answer = blocking_get(port, timeout=60)
            except (ConnectionError, OSError, ValueError, IndexError):
                return "cut"
            return "answered" if answer.status == 200 else f"status {answer.status}"

        server = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
        with concurrent.futures.ThreadPoolExecutor(self.SCRAPES) as pool:
            scrapes = [pool.submit(scrape, server.socket.port) for _ in range(self.SCRAPES)]
            assert collector.entered.wait(10)
            time.sleep(0.2)
            started = time.perf_counter()
            server.close()
            seconds = time.perf_counter() - started
            outcomes = [future.result(timeout=10) for future in scrapes]
        collector.release.set()
        figure("close() with 16 scrapes in flight", round(seconds, 3), "s", render=stuck_for)
        figure("scrapes answered", outcomes.count("answered"), f"of {self.SCRAPES}")
        assert set(outcomes) <= {"answered", "cut"}
        assert seconds < CLOSE_BOUND
