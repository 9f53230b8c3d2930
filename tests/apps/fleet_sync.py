"""A WSGI app for gunicorn's sync workers, in the fleet end-to-end tests.

Each worker serves its own registry on a free port from a thread, registered
with a slot in the directory named by ``FLEET_TARGETS``: ``post_fork`` in
``fleet_gunicorn.py`` calls :func:`start_metrics`.  A ticker counts 100 a
second, so that the fleet's rate is known.
"""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import Counter, Gauge

from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server_in_thread


REQUESTS = Counter("e2e_fleet_requests", "Requests handled by this worker.")
TICKS = Counter("e2e_fleet_ticks", "Ticks counted by this worker, 100 a second.")
PID = Gauge("e2e_fleet_worker_pid", "This worker's process ID.")


def app(environ: dict[str, object], start_response: object) -> list[bytes]:
    REQUESTS.inc()
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"ok\n"]


def tick() -> None:
    while True:
        time.sleep(0.01)
        TICKS.inc()


def start_metrics() -> None:
    PID.set(os.getpid())
    threading.Thread(target=tick, name="ticker", daemon=True).start()
    start_http_server_in_thread(
        addr="127.0.0.1", service_discovery=FileSD(os.environ["FLEET_TARGETS"], slot="worker")
    )
