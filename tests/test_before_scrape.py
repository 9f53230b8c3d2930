"""before_scrape=: coroutine functions awaited before each scrape."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

import aiohttp

from prometheus_client import Gauge

from promloop import BearerToken
from promloop.aio import _hooks
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
                f"{__name__}.TestBeforeScrape.test_hooks_run_concurrently.<locals>.main.<locals>.hook_a",
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

        hook = (
            f"{__name__}.TestBeforeScrape.test_failure_is_logged_and_counted.<locals>.broken_sensor"
        )
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

        hook = f"{__name__}.TestBeforeScrape.test_timeout_cancels_and_counts.<locals>.slow"
        assert 200 == status
        assert [True] == cancelled
        assert 1.0 == failures(registry, hook)
        assert "timed out after 0.1 s" in caplog.text
        assert f'promloop_before_scrape_failures_total{{hook="{hook}"}} 1.0' in body

    def test_own_timeout_is_a_failure(self, registry, caplog):
        """A hook that raises a TimeoutError of its own is logged as failed, with its traceback.

        Not as having run out of before_scrape_timeout, which it had not.
        """

        async def query_database():
            raise TimeoutError("the database did not answer within 0.1 s")

        with caplog.at_level(logging.WARNING, logger="promloop"):
            [(status, _)] = run(scrape_server(registry, before_scrape={"db": query_database}))

        assert (200, 1.0) == (status, failures(registry, "db"))
        assert "before_scrape hook db failed" in caplog.text
        assert "the database did not answer within 0.1 s" in caplog.text
        assert "timed out after" not in caplog.text

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
            ({"before_scrape": {"": asyncio.sleep}}, TypeError, "must be a non-empty string"),
            ({"before_scrape": {1: asyncio.sleep}}, TypeError, "must be a non-empty string"),
            ({"before_scrape": {"sleep": 42}}, TypeError, "must hold coroutine functions"),
        ],
    )
    def test_invalid(self, registry, kwargs, error, match):
        """Bad hooks or timeouts fail when the handler is made."""
        with pytest.raises(error, match=match):
            make_handler(registry, **kwargs)


async def refresh(source="queue"):
    """Refresh nothing: a module-level hook."""


class Queue:
    async def refresh(self):
        pass


class CallableHook:
    async def __call__(self):
        pass


class TestHookNames:
    """A hook's failures are counted under a name that is the same in every run."""

    @pytest.mark.parametrize(
        ("hook", "expected"),
        [
            (refresh, f"{__name__}.refresh"),
            (functools.partial(refresh, "jobs"), f"{__name__}.refresh"),
            (functools.partial(functools.partial(refresh), "jobs"), f"{__name__}.refresh"),
            (Queue().refresh, f"{__name__}.Queue.refresh"),
            (functools.partial(Queue().refresh), f"{__name__}.Queue.refresh"),
            (CallableHook(), f"{__name__}.CallableHook"),
            (asyncio.sleep, "asyncio.tasks.sleep"),
        ],
        ids=["function", "partial", "nested-partial", "method", "partial-method", "object", "lib"],
    )
    def test_stable_names(self, hook, expected):
        """Functions, methods, partials and callable objects: module and qualified name."""
        assert expected == _hooks.hook_name(hook)

    def test_without_module(self):
        """A function that belongs to no module is named by its qualified name alone."""
        namespace = {}
        exec("async def generated():\n    pass", namespace)  # noqa: S102 -- a module-less function

        assert "generated" == _hooks.hook_name(namespace["generated"])

    def test_partial_counted_by_its_function(self, registry):
        """A partial's failures are counted under its function's name, not its memory address."""

        async def fail(what):
            raise RuntimeError(what)

        run(scrape_server(registry, before_scrape=[functools.partial(fail, "disk")]))

        expected = f"{__name__}.TestHookNames.test_partial_counted_by_its_function.<locals>.fail"
        assert 1.0 == failures(registry, expected)

    def test_lambda_needs_a_name(self, registry):
        """A lambda in a sequence is refused when the handler is made: it has no name."""

        async def fail():
            raise RuntimeError

        with pytest.raises(ValueError, match="is a lambda, which has no name"):
            make_handler(registry, before_scrape=[lambda: fail()])

    def test_one_name_twice(self, registry):
        """Two hooks that would share a series are refused, pointing to the mapping form."""
        with pytest.raises(ValueError, match=r"two hooks would be counted as .*refresh'; name"):
            make_handler(
                registry,
                before_scrape=[functools.partial(refresh, "a"), functools.partial(refresh, "b")],
            )

    def test_mapping_names_its_hooks(self, registry, caplog):
        """A mapping's keys are the hooks' names, in logs and in the counter; lambdas welcome."""

        async def fail(what):
            raise RuntimeError(what)

        hooks = {
            "disk": functools.partial(fail, "disk"),
            "network": lambda: fail("network"),
        }

        with caplog.at_level(logging.WARNING, logger="promloop"):
            [(_, body)] = run(scrape_server(registry, before_scrape=hooks))

        assert 1.0 == failures(registry, "disk")
        assert 1.0 == failures(registry, "network")
        assert "before_scrape hook network failed" in caplog.text
        assert 'promloop_before_scrape_failures_total{hook="disk"} 1.0' in body


class TestMultiprocessMode:
    def test_counter_left_to_the_shared_files(self, registry, monkeypatch):
        """In multiprocess mode the served registry does not hold the failure counter.

        prometheus_client writes it to the multiprocess files, whose
        MultiProcessCollector serves it; tests/test_multiprocess.py checks
        that in real multiprocess mode, in other processes.
        """
        monkeypatch.setattr(_hooks, "_multiprocess_mode", lambda: True)
        monkeypatch.setattr(_hooks, "_shared", [])

        async def fail():
            raise RuntimeError

        handlers = [make_handler(registry, before_scrape=[fail]) for _ in range(2)]
        run(scrape_server(registry, before_scrape={"named": fail}))

        [shared] = _hooks._shared
        assert 2 == len(handlers)
        [family] = shared.collect()
        counted = {s.labels["hook"]: s.value for s in family.samples if s.name.endswith("_total")}
        assert {"named": 1.0} == counted
        assert [] == [f.name for f in registry.collect()]
