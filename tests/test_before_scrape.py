"""before_scrape=: coroutine functions awaited before each scrape."""

from __future__ import annotations

import asyncio
import logging

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

import aiohttp

from prometheus_client import Gauge

from promloop import BearerToken
from promloop.aio.web import make_handler, start_http_server, start_http_server_in_thread


run = asyncio.run


async def scrape(url, **headers):
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


async def scrape_server(registry, *requests, **options):
    """Start a server on loopback with *options*, scrape it (once per header dict), close it."""
    server = await start_http_server(addr="127.0.0.1", registry=registry, **options)
    try:
        return [await scrape(server.metrics_url, **headers) for headers in requests or [{}]]
    finally:
        await server.close()


def failures(registry, hook):
    return registry.get_sample_value("promloop_before_scrape_failures_total", {"hook": hook})


class TestBeforeScrape:
    def test_refreshes_before_render(self, registry):
        """A hook's update is in the very scrape that ran it."""
        queue_length = Gauge("queue_length", "Jobs waiting.", registry=registry)
        reads = []

        async def refresh_queue_length():
            await asyncio.sleep(0.01)  # as if asking a database
            reads.append(1)
            queue_length.set(len(reads) * 10)

        (_, first), (_, second) = run(
            scrape_server(registry, {}, {}, before_scrape=[refresh_queue_length])
        )

        assert "queue_length 10.0" in first
        assert "queue_length 20.0" in second

    def test_hooks_run_concurrently(self, registry):
        """Hooks are awaited together: two that wait for each other both finish."""
        ran = []

        async def main():
            a_started, b_started = asyncio.Event(), asyncio.Event()

            async def hook_a():
                a_started.set()
                await b_started.wait()
                ran.append("a")

            async def hook_b():
                b_started.set()
                await a_started.wait()
                ran.append("b")

            return await scrape_server(
                registry, before_scrape=[hook_a, hook_b], before_scrape_timeout=2
            )

        [(status, _)] = run(main())

        assert 200 == status
        assert ["a", "b"] == sorted(ran)
        assert (
            failures(
                registry,
                "TestBeforeScrape.test_hooks_run_concurrently.<locals>.main.<locals>.hook_a",
            )
            is None
        )

    def test_failure_is_logged_and_counted(self, registry, caplog):
        """A hook that raises is logged and counted; the scrape answers with the last values."""
        Gauge("temperature", "Degrees.", registry=registry).set(21)

        async def broken_sensor():
            raise ConnectionError("sensor offline")

        with caplog.at_level(logging.WARNING, logger="promloop"):
            [(status, body)] = run(scrape_server(registry, before_scrape=[broken_sensor]))

        hook = "TestBeforeScrape.test_failure_is_logged_and_counted.<locals>.broken_sensor"
        assert (200, True) == (status, "temperature 21.0" in body)
        assert 1.0 == failures(registry, hook)
        assert f"before_scrape hook {hook} failed" in caplog.text
        assert "sensor offline" in caplog.text

    def test_timeout_cancels_and_counts(self, registry, caplog):
        """A hook that takes too long is cancelled, logged and counted; the scrape answers."""
        cancelled = []

        async def slow():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        with caplog.at_level(logging.WARNING, logger="promloop"):
            [(status, body)] = run(
                scrape_server(registry, before_scrape=[slow], before_scrape_timeout=0.1)
            )

        hook = "TestBeforeScrape.test_timeout_cancels_and_counts.<locals>.slow"
        assert 200 == status
        assert [True] == cancelled
        assert 1.0 == failures(registry, hook)
        assert "timed out after 0.1 s" in caplog.text
        assert f'promloop_before_scrape_failures_total{{hook="{hook}"}} 1.0' in body

    def test_not_for_unauthorised_requests(self, registry):
        """A request without valid credentials runs no hook."""
        ran = []

        async def hook():
            ran.append(1)

        (denied, _), (allowed, _) = run(
            scrape_server(
                registry,
                {},
                {"Authorization": "Bearer t"},
                auth=BearerToken("t"),
                before_scrape=[hook],
            )
        )

        assert (401, 200) == (denied, allowed)
        assert [1] == ran

    def test_one_counter_per_registry(self, registry):
        """Several handlers with hooks may serve one registry."""

        async def hook():
            pass

        make_handler(registry, before_scrape=[hook])
        make_handler(registry, before_scrape=[hook])

        names = [family.name for family in registry.collect()]
        assert 1 == names.count("promloop_before_scrape_failures")

    def test_threaded_server(self, registry):
        """The threaded server awaits the hooks in its own loop."""
        gauge = Gauge("refreshed", "Set by the hook.", registry=registry)

        async def refresh():
            await asyncio.sleep(0)
            gauge.set(7)

        server = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry, before_scrape=[refresh]
        )
        try:
            status, body = run(scrape(server.metrics_url))
        finally:
            server.close()

        assert (200, True) == (status, "refreshed 7.0" in body)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"before_scrape": [42]}, TypeError, "before_scrape= must hold coroutine functions"),
            (
                {"before_scrape": [asyncio.sleep], "before_scrape_timeout": 0},
                ValueError,
                "before_scrape_timeout= must be a positive number",
            ),
        ],
    )
    def test_invalid(self, registry, kwargs, error, match):
        """Bad hooks or timeouts fail when the handler is made."""
        with pytest.raises(error, match=match):
            make_handler(registry, **kwargs)
