"""A Twisted app for the end-to-end tests: tx decorators and MetricsResource.

It renders two simulated pages and serves MetricsResource at /metrics on
127.0.0.1 three times: mounted with putChild under twisted.web, returned from
a Klein route, and wrapped in twisted.web's gzip EncodingResourceWrapper.  It
announces the ports as one line of JSON, and runs until stopped.
"""

from __future__ import annotations

import json

from klein import Klein
from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet import reactor, task
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory, Site

from promloop import tx
from promloop.tx.web import MetricsResource


registry = CollectorRegistry()
RENDER_TIME = Histogram("e2e_render_seconds", "Time spent rendering pages.", registry=registry)
RENDER_FAILURES = Counter("e2e_render_failures", "Renders that failed.", registry=registry)


@tx.time(RENDER_TIME)
@tx.count_exceptions(RENDER_FAILURES)
def render(page: str) -> object:
    return task.deferLater(reactor, 0.001, lambda: f"<h1>{page}</h1>")


klein = Klein()
klein_metrics = MetricsResource(registry)


@klein.route("/metrics", branch=False)
def metrics(request: object) -> MetricsResource:
    return klein_metrics


def main() -> None:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    web_port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    klein_port = reactor.listenTCP(0, Site(klein.resource()), interface="127.0.0.1")
    gzipped = Resource()
    gzipped.putChild(
        b"metrics", EncodingResourceWrapper(MetricsResource(registry), [GzipEncoderFactory()])
    )
    gzip_port = reactor.listenTCP(0, Site(gzipped), interface="127.0.0.1")
    ports = {
        "port": web_port.getHost().port,
        "klein_port": klein_port.getHost().port,
        "gzip_port": gzip_port.getHost().port,
    }
    print(json.dumps(ports), flush=True)
    reactor.callWhenRunning(render, "home")
    reactor.callWhenRunning(render, "about")
    reactor.run()


if __name__ == "__main__":
    main()
