"""A Klein application: tx decorators on a route, and MetricsResource at /metrics.

Run it with ``python examples/klein_app.py``, then::

    curl http://127.0.0.1:8002/hello
    curl http://127.0.0.1:8002/metrics
"""

from __future__ import annotations

import argparse

from klein import Klein
from prometheus_client import Counter, Histogram
from twisted.internet import reactor, task

from promloop import tx
from promloop.tx.web import MetricsResource


GREETING_TIME = Histogram("greeting_seconds", "Time spent greeting.")
GREETING_FAILURES = Counter("greeting_failures", "Greetings that failed.")

app = Klein()
metrics = MetricsResource()


@app.route("/hello")
@tx.time(GREETING_TIME)
@tx.count_exceptions(GREETING_FAILURES)
def hello(request: object) -> object:
    return task.deferLater(reactor, 0.01, lambda: "Hello!")


@app.route("/metrics", branch=False)
def serve_metrics(request: object) -> MetricsResource:
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8002)
    port = parser.parse_args().port
    reactor.callWhenRunning(
        lambda: print(f"Serving metrics at http://127.0.0.1:{port}/metrics", flush=True)
    )
    app.run("127.0.0.1", port)
