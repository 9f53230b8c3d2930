"""Start, scrape and stop a twisted.web Site serving MetricsResource, many times.

Run by test_lifecycle.py in a process of its own: ``python -m
tests.reliability.twisted_cycles WARMUP CYCLES``.  Prints the growth of file
descriptors, threads, resident memory and the reactor's delayed calls, as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from prometheus_client import CollectorRegistry, Counter
from twisted.internet import defer, task, threads
from twisted.web.server import Site

from promloop.tx.web import MetricsResource

from .client import blocking_get
from .resources import Resources


async def cycles(reactor, resource: MetricsResource, count: int) -> None:
    for _ in range(count):
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        answer = await threads.deferToThread(blocking_get, port.getHost().port)
        assert answer.status == 200, answer
        await port.stopListening()


async def main(reactor, warmup: int, count: int) -> None:
    registry = CollectorRegistry()
    Counter("cycles", "Start/scrape/close cycles.", registry=registry).inc()
    resource = MetricsResource(registry, reactor=reactor)
    # The reactor's thread pool grows one thread at a time up to its bound;
    # the measurement starts once it is full.
    pool = reactor.getThreadPool()
    await defer.gatherResults(
        [threads.deferToThread(time.sleep, 0.05) for _ in range(pool.max * 2)]
    )
    await cycles(reactor, resource, warmup)
    before, calls_before = Resources.now(), len(reactor.getDelayedCalls())
    started = time.perf_counter()
    await cycles(reactor, resource, count)
    seconds = time.perf_counter() - started
    await task.deferLater(reactor, 0.1, lambda: None)  # closed connections' last callbacks
    growth = Resources.now() - before
    print(  # noqa: T201 -- the result, for the test
        json.dumps(
            {
                "growth": dataclasses.asdict(growth),
                "delayed_calls": len(reactor.getDelayedCalls()) - calls_before,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    warmup, count = (int(arg) for arg in sys.argv[1:3])
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, warmup, count)))
