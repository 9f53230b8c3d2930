"""An asyncio app for the end-to-end tests: decorated coroutines and the in-loop server.

It handles a few simulated requests, starts promloop's server on 127.0.0.1
(registered with FileSD or Consul when asked), announces the server as one
line of JSON, and serves until it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from promloop import aio
from promloop.aio.sd import ConsulAgent, FileSD
from promloop.aio.web import start_http_server


registry = CollectorRegistry()
REQUEST_TIME = Histogram(
    "e2e_request_seconds", "Time spent handling requests.", ["route"], registry=registry
)
FAILURES = Counter("e2e_request_failures", "Requests that raised.", registry=registry)
IN_PROGRESS = Gauge("e2e_requests_in_progress", "Requests being handled.", registry=registry)


@aio.time(REQUEST_TIME, labels=lambda route: (route,))
@aio.count_exceptions(FAILURES)
@aio.track_inprogress(IN_PROGRESS)
async def handle(route: str) -> str:
    await asyncio.sleep(0.001)
    if route == "/fail":
        msg = "simulated failure"
        raise RuntimeError(msg)
    return route


async def main(options: argparse.Namespace) -> None:
    for route in ("/a", "/a", "/b", "/fail"):
        with contextlib.suppress(RuntimeError):
            await handle(route)

    discovery: FileSD | ConsulAgent | None = None
    if options.file_sd:
        discovery = FileSD(options.file_sd, labels={"app": "aio", "worker": options.worker})
    elif options.consul:
        discovery = ConsulAgent(name="e2e-metrics", agent_url=options.consul, check_interval="1s")
    server = await start_http_server(
        addr="127.0.0.1", registry=registry, service_discovery=discovery
    )
    print(json.dumps({"metrics_url": server.metrics_url, "port": server.socket.port}), flush=True)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--file-sd", help="register with FileSD in this directory")
    parser.add_argument("--consul", help="register with the Consul agent at this URL")
    parser.add_argument("--worker", default="0", help="the worker label for FileSD")
    asyncio.run(main(parser.parse_args()))
