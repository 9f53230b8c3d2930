"""An aiohttp app for gunicorn's ``aiohttp.GunicornWebWorker``, in the fleet end-to-end tests.

Each worker serves its own registry on a free port in its own event loop,
registered with a slot in the directory named by ``FLEET_TARGETS``.  A
ticker counts 100 a second, so that the fleet's rate is known.
"""

from __future__ import annotations

import asyncio
import os

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import Counter, Gauge

from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server


if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TICKS = Counter("e2e_fleet_ticks", "Ticks counted by this worker, 100 a second.")
PID = Gauge("e2e_fleet_worker_pid", "This worker's process ID.")


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def tick() -> None:
    while True:
        await asyncio.sleep(0.01)
        TICKS.inc()


async def metrics(app: web.Application) -> AsyncIterator[None]:
    PID.set(os.getpid())
    server = await start_http_server(
        addr="127.0.0.1", service_discovery=FileSD(os.environ["FLEET_TARGETS"], slot="worker")
    )
    ticker = asyncio.create_task(tick())
    yield
    ticker.cancel()
    await server.close()


async def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    app.cleanup_ctx.append(metrics)
    return app
