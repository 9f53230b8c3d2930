"""promloop's demo: simulated requests, measured, served on a metrics endpoint.

Run it with ``python examples/demo.py``, then, while it runs::

    curl http://127.0.0.1:8000/metrics

``--port 0`` picks a free port; ``--duration 30`` stops after 30 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal

from prometheus_client import Counter, Gauge, Histogram

from promloop import aio
from promloop.aio.web import start_http_server


REQUEST_TIME = Histogram("demo_request_seconds", "Time spent handling requests.", ["route"])
FAILURES = Counter("demo_request_failures", "Requests that raised.", ["route"])
IN_PROGRESS = Gauge("demo_requests_in_progress", "Requests being handled.")
ROUTES = ("/", "/users/{id}", "/orders")


@aio.time(REQUEST_TIME, labels=lambda route: (route,))
@aio.count_exceptions(FAILURES, labels=lambda route: (route,))
@aio.track_inprogress(IN_PROGRESS)
async def handle(route: str) -> str:
    """Pretend to handle a request: wait a little, and fail now and then."""
    await asyncio.sleep(random.uniform(0.005, 0.2))
    if random.random() < 0.1:
        msg = f"{route} failed"
        raise RuntimeError(msg)
    return f"{route} ok"


async def simulate_traffic() -> None:
    """Start a few requests every 100 ms, forever."""
    requests: set[asyncio.Task[str]] = set()
    while True:
        for _ in range(random.randint(1, 4)):
            request = asyncio.create_task(handle(random.choice(ROUTES)))
            requests.add(request)
            request.add_done_callback(requests.discard)
            request.add_done_callback(lambda task: task.cancelled() or task.exception())
        await asyncio.sleep(0.1)


async def main(port: int, duration: float | None) -> None:
    server = await start_http_server(addr="127.0.0.1", port=port)
    print(f"Serving metrics at {server.metrics_url} (Ctrl-C to stop)", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    traffic = asyncio.create_task(simulate_traffic())
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)

    traffic.cancel()
    await server.close()
    print("Stopped.", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.duration))
