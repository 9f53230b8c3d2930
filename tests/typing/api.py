"""Realistic use of promloop's public API, checked by mypy and pyright; never run.

Lines ending in ``# type: ignore[code]`` must be type errors: mypy's
unused-ignore check fails if one of them stops being an error.
"""

from __future__ import annotations

import asyncio
import functools
import ssl

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from twisted.internet.defer import Deferred, succeed
from twisted.web.resource import Resource

import promloop

from promloop import BasicAuth, BearerToken, aio, tx
from promloop.aio.fanin import FanInProcess, start_fanin, start_fanin_in_process
from promloop.aio.push import (
    PushgatewayError,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)
from promloop.aio.sd import ConsulAgent, FileSD
from promloop.aio.web import (
    MetricsHTTPServer,
    Socket,
    ThreadedMetricsHTTPServer,
    make_handler,
    metrics_middleware,
    server_stats,
    start_http_server,
    start_http_server_in_thread,
)
from promloop.tx.web import MetricsResource
from promloop.types import (
    Deregisterer,
    ExemplarFactory,
    Incrementer,
    InProgressGauge,
    LabelsFactory,
    ListeningAddress,
    MetricsServer,
    Observer,
    ServiceDiscovery,
)


REQUEST_TIME = Histogram("request_seconds", "Time spent in requests.", ["route"])
PLAIN_TIME = Summary("plain_seconds", "Time spent elsewhere.")
FAILURES = Counter("failures", "Failed requests.")
IN_PROGRESS = Gauge("in_progress", "Requests in progress.")

version: str = promloop.__version__


# --- promloop.aio: decorators -------------------------------------------------


def route_label(route: str) -> tuple[str]:
    return (route,)


def trace_exemplar(route: str) -> dict[str, str] | None:
    return {"trace_id": route} if route else None


@aio.time(REQUEST_TIME, labels=route_label, exemplar=trace_exemplar)
@aio.count_exceptions(FAILURES, exc=(KeyError, ValueError))
@aio.track_inprogress(IN_PROGRESS)
async def handle(route: str) -> int:
    await asyncio.sleep(0)
    return len(route)


@aio.time(PLAIN_TIME)
async def stream() -> AsyncIterator[int]:
    yield 1


@aio.count_exceptions(FAILURES)
def numbers() -> Iterator[int]:
    yield 1


@aio.track_inprogress(IN_PROGRESS)
def synchronous(x: float) -> float:
    return x * 2


async def use_aio() -> None:
    length: int = await handle("/")
    doubled: float = synchronous(2.0)
    async for item in stream():
        _: int = item
    for number in numbers():
        _ = number

    # The one-awaitable form returns a coroutine of the awaitable's result.
    task = asyncio.ensure_future(handle("/task"))
    from_task: int = await aio.time(PLAIN_TIME, task)
    counted: int = await aio.count_exceptions(FAILURES, handle("/c"), exc=KeyError)
    tracked: int = await asyncio.create_task(aio.track_inprogress(IN_PROGRESS, handle("/t")))
    print(length, doubled, from_task, counted, tracked)

    wrong: str = await handle("/")  # type: ignore[assignment]
    await handle(42)  # type: ignore[arg-type]
    aio.time(FAILURES)  # type: ignore[call-overload]
    aio.track_inprogress(REQUEST_TIME)  # type: ignore[call-overload]
    aio.count_exceptions(FAILURES, exc=42)  # type: ignore[call-overload]
    aio.count_exceptions(FAILURES, 42)  # type: ignore[call-overload]
    print(wrong)


# --- promloop.tx -----------------------------------------------------------------


@tx.time(PLAIN_TIME)
@tx.count_exceptions(FAILURES, exc=KeyError)
@tx.track_inprogress(IN_PROGRESS)
def render(page: str) -> Deferred[str]:
    return succeed(page)


@tx.time(PLAIN_TIME)
async def render_async(page: str) -> str:
    return await succeed(page)


def use_tx() -> None:
    rendered: Deferred[str] = render("home")
    same: Deferred[str] = tx.time(PLAIN_TIME, rendered)
    counted: Deferred[str] = tx.count_exceptions(FAILURES, same, exc=(KeyError, IndexError))
    tracked: Deferred[str] = tx.track_inprogress(IN_PROGRESS, counted)
    from_coroutine: Deferred[str] = Deferred.fromCoroutine(render_async("about"))
    print(tracked, from_coroutine)

    tx.time(PLAIN_TIME, "not a Deferred")  # type: ignore[call-overload]
    render(1)  # type: ignore[arg-type]


# --- promloop.types ------------------------------------------------------------


class MyObserver:
    def observe(self, amount: float, /) -> None:
        pass


class MyCounter:
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        pass


class MyGauge:
    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass


def labels_for(route: str) -> Mapping[str, str]:
    return {"route": route}


observer: Observer = MyObserver()
incrementer: Incrementer = MyCounter()
gauge: InProgressGauge = MyGauge()
labels_factory: LabelsFactory = labels_for
exemplar_factory: ExemplarFactory = lambda: None
not_an_observer: Observer = MyCounter()  # type: ignore[assignment]
not_a_gauge: InProgressGauge = MyObserver()  # type: ignore[assignment]


async def deregister() -> None:
    pass


deregisterer: Deregisterer = deregister


# --- exposition: promloop.aio.web and promloop.tx.web --------------------------
async def use_web() -> None:
    registry = CollectorRegistry()
    app = web.Application()
    app.router.add_get("/metrics", server_stats)
    app.router.add_get("/private", make_handler(registry, auth=BearerToken("t")))
    app.router.add_get("/plain", make_handler(disable_compression=True))

    server: MetricsHTTPServer = await start_http_server(
        addr="127.0.0.1",
        port=0,
        ssl_ctx=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        registry=registry,
        path="/metrics",
        auth=BasicAuth("prometheus", "secret"),
    )
    as_registered: MetricsServer = server  # what a ServiceDiscovery is given
    listening: ListeningAddress = as_registered.socket
    print(listening.addr, listening.port, as_registered.https, as_registered.metrics_path)
    print(as_registered.protected)
    where: Socket = server.socket
    urls: tuple[str, str, bool, bool] = (
        server.url,
        server.metrics_url,
        server.https,
        server.is_registered,
    )
    await server.close()

    threaded: ThreadedMetricsHTTPServer = start_http_server_in_thread(port=0, registry=registry)
    threaded.close()
    print(where, urls)

    await start_http_server(auth="secret")  # type: ignore[arg-type]


def use_tx_web() -> Resource:
    # Mount with root.putChild(b"metrics", resource); putChild's IResource
    # parameter needs the mypy-zope plugin, as for any twisted.web Resource.
    private: Resource = MetricsResource(CollectorRegistry(), auth=BearerToken("t"))
    MetricsResource(auth=("user", "pw"))  # type: ignore[arg-type]
    return private if private.isLeaf else MetricsResource()


def use_credentials() -> bool:
    token = BearerToken("t0k€n")
    basic = BasicAuth("prometheus", "secret")
    print(token.challenge(), basic.challenge())
    token.accepts(None)  # no header
    basic.accepts("Basic cHJvbWV0aGV1czpzZWNyZXQ=")  # as aiohttp hands it over
    basic.accepts(42)  # type: ignore[arg-type]
    return token.accepts(b"Bearer t0k\xe2\x82\xacn")  # raw bytes, as Twisted hands them over


async def use_created() -> None:
    registry = CollectorRegistry()
    make_handler(registry, created=False)
    server = await start_http_server(registry=registry, created=False)
    await server.close()
    start_http_server_in_thread(registry=registry, created=False).close()
    MetricsResource(registry, created=False)
    await push_to_gateway("pushgateway:9091", "nightly", registry, created=False)
    await pushadd_to_gateway("pushgateway:9091", "nightly", registry, created=False)
    make_handler(created="no")  # type: ignore[arg-type]


# --- service discovery: promloop.aio.sd -------------------------------------------


async def use_sd() -> None:
    consul: ServiceDiscovery = ConsulAgent(
        name="billing-metrics",
        service_id=None,
        tags=("payments",),
        token=None,
        deregister=True,
        agent_url="http://127.0.0.1:8500",
        meta={"team": "payments"},
        address="10.0.0.7",
        check_interval="10s",
        check_timeout="2s",
        deregister_critical_after="1m",
        keep_registered=True,
        timeout=2.5,
    )
    file_sd: ServiceDiscovery = FileSD("/run/targets", labels={"env": "prod"}, filename="me.json")
    slotted: ServiceDiscovery = FileSD(Path("/run/targets"), slot="worker")
    server = await start_http_server(service_discovery=consul)
    await start_http_server(service_discovery=file_sd)
    await server.close()

    ConsulAgent(tags="payments")  # type: ignore[arg-type]
    ConsulAgent(timeout="10s")  # type: ignore[arg-type]
    FileSD("/run/targets", labels={"env": 1})  # type: ignore[dict-item]
    FileSD("/run/targets", slot=0)  # type: ignore[arg-type]
    print(slotted)


# --- fleets: promloop.aio.fanin ---------------------------------------------------


async def use_fanin() -> None:
    server: MetricsHTTPServer = await start_fanin(
        "/run/my-app/targets",
        addr="127.0.0.1",
        port=9100,
        ssl_ctx=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        auth=BasicAuth("prometheus", "s3cret"),
        path="/metrics",
        aggregate=True,
        gauges="max",
        created=False,
        scrape_timeout=2.5,
        registry=CollectorRegistry(),
        service_discovery=FileSD(Path("/run/fanins")),
    )
    url: str = server.metrics_url
    await server.close()
    child: FanInProcess = start_fanin_in_process(
        Path("/run/my-app/targets"),
        port=9100,
        aggregate=True,
        auth=BearerToken("t0ken"),
        tls_cert="/etc/tls/cert.pem",
        tls_key=Path("/etc/tls/key.pem"),
        tls_client_ca=None,
        start_timeout=10,
    )
    pid: int = child.pid
    running: bool = child.running
    child.close(timeout=5)
    print(url, pid, running, child.metrics_url)

    await start_fanin("/run/targets", aggregate="yes")  # type: ignore[arg-type]
    start_fanin_in_process("/run/targets", ssl_ctx=None)  # type: ignore[call-arg]


# --- loop and reactor health ------------------------------------------------------


async def use_monitors() -> None:
    monitor: aio.EventLoopMonitor = aio.monitor_event_loop(registry=CollectorRegistry())
    running: bool = monitor.running
    monitor.stop()
    reactor_monitor: tx.ReactorMonitor = tx.monitor_reactor(interval=0.5)
    reactor_monitor.stop()
    print(running)
    aio.monitor_event_loop(interval="fast")  # type: ignore[arg-type]


async def refresh_gauges() -> None:
    pass


async def use_before_scrape() -> None:
    make_handler(before_scrape=[refresh_gauges], before_scrape_timeout=2.0)
    server = await start_http_server(before_scrape=(refresh_gauges,))
    await server.close()
    start_http_server_in_thread(before_scrape=[refresh_gauges]).close()
    make_handler(before_scrape=[42])  # type: ignore[list-item]
    make_handler(before_scrape={"gauges": refresh_gauges, "later": lambda: asyncio.sleep(1)})
    await start_http_server(before_scrape={"gauges": functools.partial(refresh_gauges)})
    start_http_server_in_thread(before_scrape={"gauges": refresh_gauges}).close()
    make_handler(before_scrape={1: refresh_gauges})  # type: ignore[dict-item]


def use_middleware() -> web.Application:
    middleware = metrics_middleware(
        registry=CollectorRegistry(), prefix="api", exclude_paths=("/metrics", "/health")
    )
    metrics_middleware(buckets=(0.1, 1.0))
    metrics_middleware(prefix=42)  # type: ignore[arg-type]
    return web.Application(middlewares=[middleware])


async def use_push() -> None:
    registry = CollectorRegistry()
    await push_to_gateway("pushgateway:9091", "nightly", registry, {"instance": "a/b"})
    await pushadd_to_gateway(
        "https://pushgateway.example", "nightly", registry, timeout=5, auth=BearerToken("t")
    )
    try:
        await delete_from_gateway("pushgateway:9091", "nightly", {"instance": "a/b"})
    except PushgatewayError as error:
        status: int = error.status
        print(status, error.body)
    await push_to_gateway("pushgateway:9091", "nightly")  # type: ignore[call-arg]
