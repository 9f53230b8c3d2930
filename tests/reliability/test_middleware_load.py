"""The request middleware under many concurrent keep-alive requests, some of them abandoned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import pytest

from prometheus_client import CollectorRegistry

from .resources import Resources, scaled


aiohttp = pytest.importorskip("aiohttp")
web = pytest.importorskip("aiohttp.web")

from promloop.aio.web import metrics_middleware  # noqa: E402


CONCURRENT = 1000
ROUNDS = scaled(4, 20)


def total(registry: CollectorRegistry, name: str) -> float:
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    )


def status_total(registry: CollectorRegistry, status: str) -> float:
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "http_server_requests_total" and sample.labels["status"] == status
    )


class Workload:
    """Concurrent clients, a fifth of which give up mid-request, against one handler.

    A tenth of the handlers are cancelled and a tenth raise; the others answer.
    """

    def __init__(self) -> None:
        self.entered = 0
        self.chooser = random.Random(1)

    async def handler(self, request: web.Request) -> web.Response:
        self.entered += 1
        fate = request.query.get("fate")
        await asyncio.sleep(0.05)
        if fate == "cancelled":
            raise asyncio.CancelledError
        if fate == "raise":
            raise RuntimeError("the handler failed")
        return web.Response(text="ok")

    async def client(self, session: aiohttp.ClientSession, port: int) -> None:
        fate = self.chooser.choices(("ok", "abandoned", "cancelled", "raise"), (6, 2, 1, 1))[0]
        url = f"http://127.0.0.1:{port}/work?fate={fate}"
        if fate == "abandoned":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(session.get(url), 0.01)
            return
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                await response.read()

    async def run(self, registry: CollectorRegistry) -> list[Resources]:
        """Serve ROUNDS rounds of CONCURRENT requests; measure resources after each."""
        app = web.Application(middlewares=[metrics_middleware(registry=registry)])
        app.router.add_get("/work", self.handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        measured = []
        connector = aiohttp.TCPConnector(limit=CONCURRENT)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(ROUNDS):
                await asyncio.gather(*(self.client(session, port) for _ in range(CONCURRENT)))
                await asyncio.sleep(0.3)  # abandoned requests' handlers finish
                measured.append(Resources.now())
        await runner.cleanup()
        return measured


class TestManyKeepAliveRequests:
    def test_counts_exact_gauge_back_to_zero_memory_flat(self, figure):
        """Every request a handler saw is counted once; the gauge ends at 0; memory is flat."""
        registry = CollectorRegistry()
        workload = Workload()
        server_log = logging.getLogger("aiohttp.server")
        level = server_log.level
        server_log.setLevel(logging.CRITICAL)  # the handlers that raise do so on purpose
        try:
            measured = asyncio.run(workload.run(registry))
        finally:
            server_log.setLevel(level)

        counted = total(registry, "http_server_requests_total")
        in_progress = total(registry, "http_server_requests_in_progress")
        growth = measured[-1] - measured[1]
        figure("requests", workload.entered, "handled", rounds=ROUNDS, concurrent=CONCURRENT)
        figure("requests counted", counted, "")
        figure("of them 499", status_total(registry, "499"), "")
        figure("in-progress gauge at the end", in_progress, "")
        figure("RSS growth after round 2", round(growth.rss / 1024), "kB")
        assert workload.entered == counted
        assert 0 == in_progress
        assert growth.rss < 4 * 1024 * 1024
