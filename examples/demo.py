"""promloop's demo: instrument some asyncio work, then print the metrics.

Run it with ``python examples/demo.py``.
"""

from __future__ import annotations

import asyncio
import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from promloop import aio


registry = CollectorRegistry()
REQUEST_TIME = Histogram(
    "demo_request_seconds", "Time spent handling requests.", ["route"], registry=registry
)
FAILURES = Counter("demo_request_failures", "Requests that raised.", registry=registry)
IN_PROGRESS = Gauge("demo_requests_in_progress", "Requests being handled.", registry=registry)


@aio.time(REQUEST_TIME, labels=lambda route: (route,))
@aio.count_exceptions(FAILURES)
@aio.track_inprogress(IN_PROGRESS)
async def handle(route: str) -> str:
    await asyncio.sleep(random.uniform(0.001, 0.02))
    if random.random() < 0.2:
        msg = f"{route} failed"
        raise RuntimeError(msg)
    return f"{route} ok"


async def main() -> None:
    routes = ["/", "/users/{id}", "/orders"] * 10
    results = await asyncio.gather(*(handle(r) for r in routes), return_exceptions=True)
    failed = sum(isinstance(r, Exception) for r in results)
    print(f"# handled {len(results)} simulated requests, {failed} failed\n")
    print(generate_latest(registry).decode(), end="")


if __name__ == "__main__":
    asyncio.run(main())
