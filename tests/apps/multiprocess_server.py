"""A metrics server in prometheus_client's multiprocess mode, with a failing pre-scrape hook.

Run with PROMETHEUS_MULTIPROC_DIR set.  It serves a registry holding a
MultiProcessCollector on 127.0.0.1, as prometheus_client's documentation
describes, announces its metrics URL as one line of JSON, and serves until it
is stopped.
"""

from __future__ import annotations

import asyncio
import json
import signal

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import MultiProcessCollector

from promloop.aio.web import start_http_server


JOBS = Counter("mp_jobs", "Jobs done, by all workers.")


async def check_disk() -> None:
    msg = "disk not mounted"
    raise OSError(msg)


async def main() -> None:
    JOBS.inc()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    server = await start_http_server(
        addr="127.0.0.1", registry=registry, before_scrape=[check_disk]
    )
    print(json.dumps({"metrics_url": server.metrics_url}), flush=True)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()


if __name__ == "__main__":
    asyncio.run(main())
