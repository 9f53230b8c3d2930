"""One worker of a fleet: a metrics server on a free port, registered with file_sd.

Run three with ``python examples/fleet/run_fleet.py``; point Prometheus at
``examples/fleet/prometheus.yml``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal

from prometheus_client import Counter

from promloop import aio
from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server


TASKS = Counter("fleet_tasks", "Tasks done by this worker.")


@aio.count_exceptions(Counter("fleet_task_failures", "Tasks that failed."))
async def work() -> None:
    await asyncio.sleep(random.uniform(0.01, 0.1))
    TASKS.inc()


async def main(targets: str, name: str) -> None:
    discovery = FileSD(targets, labels={"worker": name})
    server = await start_http_server(addr="127.0.0.1", port=0, service_discovery=discovery)
    print(f"Serving metrics at {server.metrics_url}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    while not stop.is_set():
        await work()
    await server.close()  # removes this worker's target file


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--targets", required=True, help="the file_sd directory")
    parser.add_argument("--name", required=True, help="this worker's name")
    options = parser.parse_args()
    asyncio.run(main(options.targets, options.name))
