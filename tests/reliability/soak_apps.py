"""Applications under load for the soak test: every mount point, serving a busy registry.

``python -m tests.reliability.soak_apps aio`` serves one registry from the
in-loop server, the threaded server and a handler in an aiohttp app;
``... twisted`` serves it from MetricsResource under twisted.web;
``... worker DIRECTORY`` runs a fleet worker registered in DIRECTORY.  All change
their metrics all the time (from the event loop or reactor, and from a
thread), announce their ports as one line of JSON, and run until stopped.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


if TYPE_CHECKING:
    from collections.abc import Callable


ROUTES = [f"/route/{n}" for n in range(100)]
STATUSES = ("200", "404", "500")


def busy_registry() -> tuple[CollectorRegistry, Callable[[random.Random], None]]:
    """Return a registry of ~2,500 series, and the function that changes a few of them."""
    registry = CollectorRegistry()
    requests = Counter("soak_requests", "Requests.", ["route", "status"], registry=registry)
    latency = Histogram("soak_latency_seconds", "Latency.", ["route"], registry=registry)
    queue = Gauge("soak_queue_length", "Queue.", ["route"], registry=registry)
    for route in ROUTES:  # every series exists from the start: the sample count stays put
        for status in STATUSES:
            requests.labels(route, status)
        latency.labels(route)
        queue.labels(route)

    def change(chooser: random.Random) -> None:
        route = chooser.choice(ROUTES)
        requests.labels(route, chooser.choice(STATUSES)).inc()
        latency.labels(route).observe(chooser.random())
        queue.labels(route).set(chooser.randint(0, 50))

    return registry, change


def load_in_thread(change: Callable[[random.Random], None]) -> None:
    def work() -> None:
        chooser = random.Random(2)
        while True:
            for _ in range(50):
                change(chooser)
            time.sleep(0.005)

    threading.Thread(target=work, name="soak-load", daemon=True).start()


async def serve_aio() -> None:
    from aiohttp import web

    from promloop.aio.web import make_handler, start_http_server, start_http_server_in_thread

    registry, change = busy_registry()
    load_in_thread(change)
    in_loop = await start_http_server(addr="127.0.0.1", registry=registry)
    threaded = start_http_server_in_thread(addr="127.0.0.1", registry=registry)
    app = web.Application()
    app.router.add_get("/metrics", make_handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ports = {
        "in-loop": in_loop.socket.port,
        "threaded": threaded.socket.port,
        "handler": runner.addresses[0][1],
    }
    print(json.dumps(ports), flush=True)  # noqa: T201 -- the announcement
    chooser = random.Random(1)
    while True:  # the loop's own share of the load
        for _ in range(20):
            change(chooser)
        await asyncio.sleep(0.005)


def serve_worker(directory: str) -> None:
    """Run one fleet worker: a threaded server registered in *directory* with a slot."""
    from promloop.aio.sd import FileSD
    from promloop.aio.web import start_http_server_in_thread

    registry, change = busy_registry()
    server = start_http_server_in_thread(
        addr="127.0.0.1", registry=registry, service_discovery=FileSD(directory, slot="worker")
    )
    print(json.dumps({"worker": server.socket.port}), flush=True)  # noqa: T201
    chooser = random.Random()
    while True:
        for _ in range(50):
            change(chooser)
        time.sleep(0.005)


def serve_twisted() -> None:
    from twisted.internet import reactor, task
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from promloop.tx.web import MetricsResource

    registry, change = busy_registry()
    load_in_thread(change)
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    print(json.dumps({"twisted": port.getHost().port}), flush=True)  # noqa: T201
    chooser = random.Random(1)
    task.LoopingCall(lambda: [change(chooser) for _ in range(20)]).start(0.005)
    reactor.run()


if __name__ == "__main__":
    if sys.argv[1] == "aio":
        asyncio.run(serve_aio())
    elif sys.argv[1] == "worker":
        serve_worker(sys.argv[2])
    else:
        serve_twisted()
