"""promloop.aio.web.metrics_middleware against real aiohttp servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import weakref

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

import aiohttp

from aiohttp import web
from prometheus_client import CollectorRegistry

from promloop.aio.web import metrics_middleware


run = asyncio.run


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


async def serve(app, **runner_options):
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def get(url, **options):
    async with aiohttp.ClientSession() as session, session.get(url, **options) as response:
        return response.status, await response.read()


def application(registry, **options):
    app = web.Application(middlewares=[metrics_middleware(registry=registry, **options)])

    async def user(request):
        return web.json_response({"id": request.match_info["id"]})

    async def broken(request):
        raise LookupError("not here")

    async def forbidden(request):
        raise web.HTTPForbidden

    async def streamed(request):
        async def body():
            for chunk in (b"a", b"b", b"c"):
                await asyncio.sleep(0.1)
                yield chunk

        return web.Response(body=body())

    async def slow(request):
        await asyncio.sleep(0.5)
        return web.Response(text="too late")

    async def metrics(request):
        return web.Response(text="metrics")

    app.router.add_get("/users/{id}", user)
    app.router.add_get("/broken", broken)
    app.router.add_get("/forbidden", forbidden)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/slow", slow)
    app.router.add_get("/metrics", metrics)
    return app


class TestMetricsMiddleware:
    def test_routes_methods_statuses(self, registry):
        """Requests are counted by route template, never by raw path."""

        async def main():
            runner, base = await serve(application(registry))
            try:
                for user in ("1", "2", "3"):
                    await get(f"{base}/users/{user}")
                await get(f"{base}/no/such/{'x' * 5}")
                await get(f"{base}/no/such/thing")
                await get(f"{base}/metrics")
            finally:
                await runner.cleanup()

        run(main())

        total = "http_server_requests_total"
        assert 3.0 == value(registry, total, method="GET", route="/users/{id}", status="200")
        assert 2.0 == value(registry, total, method="GET", route="<unmatched>", status="404")
        assert value(registry, total, method="GET", route="/metrics", status="200") is None
        assert 3.0 == value(
            registry,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="/users/{id}",
        )
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")

    def test_exceptions(self, registry):
        """An exception is a 500 (an HTTPException its status), re-raised unchanged."""
        seen = []

        @web.middleware
        async def outer(request, handler):
            try:
                return await handler(request)
            except BaseException as error:
                seen.append(error)
                raise

        async def main():
            app = application(registry)
            app.middlewares.insert(0, outer)
            runner, base = await serve(app)
            try:
                return await get(f"{base}/broken"), await get(f"{base}/forbidden")
            finally:
                await runner.cleanup()

        (broken, _), (forbidden, _) = run(main())

        total = "http_server_requests_total"
        assert (500, 403) == (broken, forbidden)
        assert 1.0 == value(registry, total, method="GET", route="/broken", status="500")
        assert 1.0 == value(registry, total, method="GET", route="/forbidden", status="403")
        assert LookupError is type(seen[0])
        assert "not here" == str(seen[0])

    def test_streamed_body_is_timed(self, registry):
        """The duration lasts until a body streamed after the handler returned is sent."""

        async def main():
            runner, base = await serve(application(registry))
            try:
                return await get(f"{base}/streamed")
            finally:
                await runner.cleanup()

        status, body = run(main())
        seconds = value(
            registry, "http_server_request_duration_seconds_sum", method="GET", route="/streamed"
        )

        assert (200, b"abc") == (status, body)
        assert seconds >= 0.3

    @pytest.mark.parametrize(
        "handler_cancellation",
        [False, True],
        ids=["handler-finishes-unheard", "handler-cancelled"],
    )
    def test_client_gone_is_499(self, registry, handler_cancellation):
        """A client that hangs up before the response is sent is 499; the gauge comes down.

        Whether aiohttp lets the handler finish (and fail to answer) or cancels it.
        """

        async def main():
            app = application(registry)
            runner, base = await serve(app, handler_cancellation=handler_cancellation)
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await get(f"{base}/slow", timeout=aiohttp.ClientTimeout(total=0.1))
                await asyncio.sleep(0.7)  # past the handler's own 0.5 s
            finally:
                await runner.cleanup()

        run(main())

        assert 1.0 == value(
            registry, "http_server_requests_total", method="GET", route="/slow", status="499"
        )
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")

    def test_in_progress(self, registry):
        """The in-progress gauge is up while a request is handled."""
        during = []

        async def main():
            app = web.Application(middlewares=[metrics_middleware(registry=registry)])

            async def handler(request):
                during.append(value(registry, "http_server_requests_in_progress", method="GET"))
                return web.Response()

            app.router.add_get("/", handler)
            runner, base = await serve(app)
            try:
                await get(f"{base}/")
            finally:
                await runner.cleanup()

        run(main())

        assert [1.0] == during

    def test_unknown_method_is_other(self, registry):
        """A method HTTP does not define is OTHER: clients cannot create series at will."""

        async def main():
            runner, base = await serve(application(registry))
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.request("PROPFIND", f"{base}/users/1") as response,
                ):
                    return response.status
            finally:
                await runner.cleanup()

        assert 405 == run(main())
        assert 1.0 == value(
            registry,
            "http_server_requests_total",
            method="OTHER",
            route="<unmatched>",
            status="405",
        )

    def test_custom_prefix_and_buckets(self, registry):
        """prefix= names the metrics; buckets= sets the histogram's buckets."""

        async def main():
            runner, base = await serve(application(registry, prefix="api", buckets=(0.25, 7.0)))
            try:
                await get(f"{base}/users/1")
            finally:
                await runner.cleanup()

        run(main())

        bucket = "api_request_duration_seconds_bucket"
        assert 1.0 == value(registry, bucket, method="GET", route="/users/{id}", le="7.0")

    def test_server_failure_while_sending_is_500(self, registry):
        """A response aiohttp cannot send (a bad header) is the server's fault: 500, not 499."""

        async def main():
            app = web.Application(middlewares=[metrics_middleware(registry=registry)])

            async def bad_header(request):
                return web.Response(headers={"X-Bad": "a\r\nb"})

            app.router.add_get("/bad", bad_header)
            runner, base = await serve(app)
            try:
                with contextlib.suppress(aiohttp.ClientError):
                    await get(f"{base}/bad")
            finally:
                await runner.cleanup()

        run(main())

        assert 0 < value(
            registry, "http_server_requests_total", method="GET", route="/bad", status="500"
        )
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")

    def test_replaced_response_still_finishes(self, registry):
        """If an outer middleware answers with another response, the gauge still comes down."""

        @web.middleware
        async def replace(request, handler):
            await handler(request)
            return web.Response(text="replaced")

        async def main():
            app = application(registry)
            app.middlewares.insert(0, replace)
            runner, base = await serve(app)
            try:
                return await get(f"{base}/users/1")  # the session closes the connection
            finally:
                await runner.cleanup()

        status, body = run(main())

        assert (200, b"replaced") == (status, body)
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")
        assert 1.0 == value(
            registry, "http_server_requests_total", method="GET", route="/users/{id}", status="200"
        )

    def test_keep_alive_connection_frees_each_response(self, registry):
        """Many requests on one keep-alive connection leave no response behind them.

        Each request is finished when it is, not when its connection closes:
        memory stays flat however long a client keeps its connection.
        """
        responses = []
        connections = set()

        async def handler(request):
            connections.add(id(request.transport))
            response = web.Response(body=b"x" * 1000)
            responses.append(weakref.ref(response))
            return response

        async def main():
            app = web.Application(middlewares=[metrics_middleware(registry=registry)])
            app.router.add_get("/", handler)
            runner, base = await serve(app)
            try:
                connector = aiohttp.TCPConnector(limit=1)
                async with aiohttp.ClientSession(connector=connector) as session:
                    for _ in range(300):
                        async with session.get(f"{base}/") as response:
                            await response.read()
                    await asyncio.sleep(0)  # the last request's task ends
                    gc.collect()
                    # Counted while the connection is still open.  aiohttp
                    # itself keeps the last response until the next request.
                    return sum(ref() is not None for ref in responses[:-1])
            finally:
                await runner.cleanup()

        alive = run(main())

        assert 1 == len(connections)  # one keep-alive connection served them all
        assert 0 == alive
        assert 300.0 == value(
            registry, "http_server_requests_total", method="GET", route="/", status="200"
        )
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")

    def test_responses_freed_without_the_cycle_collector(self, registry):
        """A sent response is freed as soon as its request ends: no reference cycle holds it."""
        responses = []

        async def handler(request):
            response = web.Response(text="ok")
            responses.append(weakref.ref(response))
            return response

        async def main():
            app = web.Application(middlewares=[metrics_middleware(registry=registry)])
            app.router.add_get("/", handler)
            runner, base = await serve(app)
            gc.disable()
            try:
                async with aiohttp.ClientSession() as session:
                    for _ in range(20):
                        async with session.get(f"{base}/") as response:
                            await response.read()
                    await asyncio.sleep(0)
                    return sum(ref() is not None for ref in responses[:-1])
            finally:
                gc.enable()
                await runner.cleanup()

        assert 0 == run(main())

    def test_websocket_is_101(self, registry, caplog):
        """A WebSocket handler is recorded as 101, and aiohttp logs nothing about it."""
        received = []

        async def echo(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                received.append(message.data)
                await ws.send_str(message.data.upper())
            return ws

        async def main():
            app = web.Application(middlewares=[metrics_middleware(registry=registry)])
            app.router.add_get("/ws", echo)
            runner, base = await serve(app)
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.ws_connect(f"{base}/ws") as ws:
                        await ws.send_str("hello")
                        answer = await ws.receive_str()
                    # The server's side of the session ends after the client's close.
                    for _ in range(100):
                        if value(registry, "http_server_requests_in_progress", method="GET") == 0:
                            break
                        await asyncio.sleep(0.01)
                return answer
            finally:
                await runner.cleanup()

        with caplog.at_level(logging.DEBUG):
            answer = run(main())

        assert "HELLO" == answer
        assert ["hello"] == received
        assert [] == [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert 1.0 == value(
            registry, "http_server_requests_total", method="GET", route="/ws", status="101"
        )
        assert (
            value(registry, "http_server_requests_total", method="GET", route="/ws", status="499")
            is None
        )
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")

    def test_clash_leaves_registry_clean(self, registry):
        """A refused prefix registers nothing: the same prefix works once the clash is gone."""
        from prometheus_client import Gauge

        taken = Gauge("p_requests_in_progress", "Taken.", registry=registry)
        with pytest.raises(ValueError, match="clashes"):
            metrics_middleware(registry=registry, prefix="p")
        registry.unregister(taken)

        metrics_middleware(registry=registry, prefix="p")

    def test_duplicate_prefix(self, registry):
        """A second middleware with the same prefix and registry is refused up front."""
        metrics_middleware(registry=registry, prefix="api")

        with pytest.raises(ValueError, match="a middleware with prefix 'api' already records"):
            metrics_middleware(registry=registry, prefix="api")

    def test_clashing_names(self, registry):
        """A prefix whose metric names the registry already has is refused, naming it."""
        from prometheus_client import Counter

        Counter("web_requests", "Taken.", registry=registry)

        with pytest.raises(ValueError, match="prefix 'web' clashes"):
            metrics_middleware(registry=registry, prefix="web")


class FakeTransport:
    def __init__(self, closing=False):
        self.closing = closing

    def is_closing(self):
        return self.closing


class FakeRequest:
    def __init__(self, closing=False):
        self.transport = FakeTransport(closing)


class FakeResponse:
    """What aiohttp calls on a returned response: prepare(), then write_eof()."""

    status = 200

    def __init__(self, fail_prepare=False):
        self.fail_prepare = fail_prepare

    async def prepare(self, request):
        if self.fail_prepare:
            raise ConnectionResetError("client gone")

    async def write_eof(self, data=b""):
        pass


class TestDelivery:
    def test_prepare_fails(self):
        """A response that cannot even start (client gone) finishes as 499, once."""
        from promloop.aio._middleware import _Delivery

        finished = []
        response = FakeResponse(fail_prepare=True)

        async def main():
            _Delivery(FakeRequest(), response, finished.append)
            await response.prepare(None)

        with pytest.raises(ConnectionResetError):
            run(main())

        assert ["499"] == finished

    def test_finishes_once(self):
        """However often write_eof() is called, the request is recorded once."""
        from promloop.aio._middleware import metrics_middleware as make

        registry = CollectorRegistry()
        middleware = make(registry=registry)
        response = FakeResponse()

        class Route:
            resource = None

        class MatchInfo:
            route = Route()

        class Request(FakeRequest):
            path = "/"
            method = "GET"
            match_info = MatchInfo()

        async def handler(request):
            return response

        async def main():
            await middleware(Request(), handler)
            await response.prepare(None)
            await response.write_eof()
            await response.write_eof()

        run(main())

        assert 1.0 == value(
            registry, "http_server_requests_total", method="GET", route="<unmatched>", status="200"
        )
        assert 0.0 == value(registry, "http_server_requests_in_progress", method="GET")

    def test_client_gone_after_the_last_write(self):
        """A response written out to a connection that is closing is 499."""
        from promloop.aio._middleware import _Delivery

        finished = []
        response = FakeResponse()

        async def main():
            _Delivery(FakeRequest(closing=True), response, finished.append)
            await response.prepare(None)
            await response.write_eof()

        run(main())

        assert ["499"] == finished

    def test_unwraps_only_its_own_wrappers(self):
        """Once finished, the response loses this middleware's wrappers, and keeps others'."""
        from promloop.aio._middleware import _Delivery

        finished = []
        mine, theirs = FakeResponse(), FakeResponse()

        async def outer_prepare(request):
            pass

        async def outer_write_eof():
            pass

        async def main():
            _Delivery(FakeRequest(), mine, finished.append)
            _Delivery(FakeRequest(), theirs, finished.append)
            theirs.prepare, theirs.write_eof = outer_prepare, outer_write_eof
            # Finished when this task ends, unsent, as if another response replaced them.

        run(main())

        assert ["200", "200"] == finished
        assert {} == {k: v for k, v in vars(mine).items() if k in ("prepare", "write_eof")}
        assert (outer_prepare, outer_write_eof) == (theirs.prepare, theirs.write_eof)
