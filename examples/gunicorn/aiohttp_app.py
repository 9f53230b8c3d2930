"""An aiohttp app for gunicorn's aiohttp.GunicornWebWorker; see gunicorn.conf.py.

Each worker starts its metrics server in its own event loop when the app
starts, registered with the lowest free worker number, and closes it when the
app stops.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import Counter

from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server


REQUESTS = Counter("app_requests", "Requests handled.")
TARGETS = os.environ.get("METRICS_TARGETS", "/tmp/my-app-metrics")  # noqa: S108 -- an example


async def hello(request):
    REQUESTS.inc()
    return web.Response(text="Hello!\n")


async def metrics_server(app):
    server = await start_http_server(
        addr="127.0.0.1", service_discovery=FileSD(TARGETS, slot="worker")
    )
    yield
    await server.close()


async def make_app():
    app = web.Application()
    app.router.add_get("/", hello)
    app.cleanup_ctx.append(metrics_server)
    return app
