"""gunicorn settings: every worker serves its own metrics; one fan-in serves them all.

Run from the repository's root::

    gunicorn -c examples/gunicorn/gunicorn.conf.py --chdir examples/gunicorn app:app

Each worker serves its metrics on a free port of its own, registered with a
slot in ``METRICS_TARGETS``; the fan-in, a child process of gunicorn's master,
serves the merged metrics of every live worker on ``METRICS_PORT`` (9100).
For aiohttp workers, add ``--worker-class aiohttp.GunicornWebWorker`` and serve
``aiohttp_app:make_app`` instead: it starts its metrics server in its own loop.
"""

from __future__ import annotations

import os

from pathlib import Path

from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from promloop.aio.fanin import start_fanin_in_process
from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server_in_thread


TARGETS = Path(os.environ.get("METRICS_TARGETS", "/tmp/my-app-metrics"))  # noqa: S108 -- an example
PORT = int(os.environ.get("METRICS_PORT", "9100"))

bind = os.environ.get("APP_BIND", "127.0.0.1:8000")
workers = 3


def when_ready(server):
    # In the master, once it listens and before it forks the workers: the
    # fan-in runs in a process of its own, so no worker inherits its socket.
    TARGETS.mkdir(parents=True, exist_ok=True)
    server.fanin = start_fanin_in_process(TARGETS, addr="127.0.0.1", port=PORT)
    server.log.info(
        "Serving metrics at %s (fan-in process %d)", server.fanin.metrics_url, server.fanin.pid
    )


def post_fork(server, worker):
    # In each sync or threaded worker (gunicorn runs threaded ones with
    # --threads): its own metrics server, on a free port, in a thread,
    # registered with the lowest free worker number.
    if isinstance(worker, (SyncWorker, ThreadWorker)):
        start_http_server_in_thread(
            addr="127.0.0.1", service_discovery=FileSD(TARGETS, slot="worker")
        )


def on_exit(server):
    server.fanin.close()
