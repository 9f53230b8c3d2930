"""An aiohttp application: decorated handlers, request metrics, and /metrics mounted.

Run it with ``python examples/aiohttp_app.py``, then::

    curl http://127.0.0.1:8080/users/42
    curl http://127.0.0.1:8080/metrics
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web
from prometheus_client import Histogram

from promloop import aio
from promloop.aio.web import metrics_middleware, server_stats


LOOKUP_TIME = Histogram("user_lookup_seconds", "Time spent looking users up.")


@aio.time(LOOKUP_TIME)
async def find_user(user_id: str) -> dict[str, str]:
    await asyncio.sleep(0.01)  # as if asking a database
    return {"id": user_id, "name": f"user {user_id}"}


async def show_user(request: web.Request) -> web.Response:
    return web.json_response(await find_user(request.match_info["id"]))


def make_app() -> web.Application:
    app = web.Application(middlewares=[metrics_middleware()])
    app.router.add_get("/users/{id}", show_user)
    app.router.add_get("/metrics", server_stats)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8080)
    port = parser.parse_args().port

    # run_app calls print= once the socket listens (on_startup would be too early).
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=port,
        print=lambda _: print(f"Serving metrics at http://127.0.0.1:{port}/metrics", flush=True),
    )
