"""Per-request cost of metrics_middleware(), next to a bare handler.

Run:  python benchmarks/bench_middleware.py

Drives aiohttp's request handling in-process (a mocked request resolved by
the real router, the real middleware, the response prepared and finished on
a mocked transport), so that the measurement is the middleware's own cost,
not the network's.  Both variants run side by side in one run.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from promloop.aio.web import metrics_middleware


NUMBER = 20_000


async def user(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["id"])


async def per_request(app: web.Application, middlewares: list) -> float:
    """Return the best-of-5 seconds per request through *middlewares*."""

    async def call(request: web.Request) -> web.StreamResponse:
        handler = user
        for middleware in reversed(middlewares):
            handler = _bind(middleware, handler)
        return await handler(request)

    # One request, resolved once: making a mocked request costs far more than
    # what is measured, and would drown it.
    request = make_mocked_request("GET", "/users/42", app=app, transport=_Transport())
    match = await app.router.resolve(request)
    match.add_app(app)
    request._match_info = match  # noqa: SLF001 -- as aiohttp does
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(NUMBER):
            response = await call(request)
            await response.prepare(request)
            await response.write_eof()
        best = min(best, (time.perf_counter() - started) / NUMBER)
    return best


class _Transport:
    """A connection that stays open, without a mock's cost per call."""

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:  # noqa: ARG002
        return default


def _bind(middleware, handler):
    async def bound(request):
        return await middleware(request, handler)

    return bound


async def main() -> None:
    app = web.Application()
    app.router.add_get("/users/{id}", user)
    app.freeze()
    middleware = metrics_middleware(registry=CollectorRegistry())

    bare = await per_request(app, [])
    measured = await per_request(app, [middleware])
    print(f"Python {sys.version.split()[0]}; microseconds per request, best of 5 x {NUMBER}")
    print(f"bare handler:                 {bare * 1e6:6.1f} us")
    print(f"with metrics_middleware():    {measured * 1e6:6.1f} us")
    print(f"middleware's own cost:        {(measured - bare) * 1e6:6.1f} us per request")


if __name__ == "__main__":
    asyncio.run(main())
