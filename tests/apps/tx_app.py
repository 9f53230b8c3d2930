"""A Twisted app for the end-to-end tests: tx decorators and MetricsResource.

It renders two simulated pages, serves MetricsResource at /metrics on
127.0.0.1, announces its port as one line of JSON, and runs until stopped.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet import reactor, task
from twisted.web.resource import Resource
from twisted.web.server import Site

from promloop import tx
from promloop.tx.web import MetricsResource


registry = CollectorRegistry()
RENDER_TIME = Histogram("e2e_render_seconds", "Time spent rendering pages.", registry=registry)
RENDER_FAILURES = Counter("e2e_render_failures", "Renders that failed.", registry=registry)


@tx.time(RENDER_TIME)
@tx.count_exceptions(RENDER_FAILURES)
def render(page: str) -> object:
    return task.deferLater(reactor, 0.001, lambda: f"<h1>{page}</h1>")


def main() -> None:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    print(json.dumps({"port": port.getHost().port}), flush=True)
    reactor.callWhenRunning(render, "home")
    reactor.callWhenRunning(render, "about")
    reactor.run()


if __name__ == "__main__":
    main()
