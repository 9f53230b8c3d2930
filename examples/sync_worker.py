"""A synchronous program with a metrics endpoint: no asyncio in sight.

Run it with ``python examples/sync_worker.py``, then::

    curl http://127.0.0.1:8001/metrics
"""

from __future__ import annotations

import argparse
import random
import signal
import time

from prometheus_client import Counter, Histogram

from promloop.aio.web import start_http_server_in_thread


JOBS = Counter("worker_jobs", "Jobs done.")
JOB_TIME = Histogram("worker_job_seconds", "Time spent on a job.")


def do_job() -> None:
    with JOB_TIME.time():
        time.sleep(random.uniform(0.01, 0.05))
    JOBS.inc()


def main(port: int) -> None:
    server = start_http_server_in_thread(addr="127.0.0.1", port=port)
    print(f"Serving metrics at {server.metrics_url}", flush=True)
    running = True

    def stop(signum: int, frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        do_job()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8001)
    main(parser.parse_args().port)
