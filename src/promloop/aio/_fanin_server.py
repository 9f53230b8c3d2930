"""The fan-in's HTTP server: :func:`start_fanin`."""

from __future__ import annotations

import asyncio
import html

from typing import TYPE_CHECKING

from aiohttp import web

from .._exposition import SCRAPE_TIMEOUT_HEADER, Guard, joined, scrape_seconds, single, too_slow
from ._fleet import DEFAULT_SCRAPE_TIMEOUT, Fleet
from ._handler import raw_query, response
from ._server import MetricsHTTPServer, require_credentials, serve_app


if TYPE_CHECKING:
    import os
    import ssl

    from prometheus_client import CollectorRegistry

    from .._auth import BasicAuth, BearerToken
    from ..types import ServiceDiscovery


__all__ = ["TARGETS_PATH", "start_fanin"]

TARGETS_PATH = "/targets"
"""Where the fan-in lists its workers for Prometheus's ``http_sd_configs``."""


def _index_page(metrics_path: str) -> bytes:
    links = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(what)}</a></li>'
        for path, what in (
            (metrics_path, "Metrics of every worker"),
            (TARGETS_PATH, "Workers (http_sd_configs)"),
        )
    )
    return (
        "<!DOCTYPE html>\n<html><head><title>Fan-in</title></head>"
        f"<body><ul>{links}</ul></body></html>\n"
    ).encode()


async def start_fanin(
    directory: str | os.PathLike[str],
    *,
    addr: str = "",
    port: int = 0,
    ssl_ctx: ssl.SSLContext | None = None,
    auth: BasicAuth | BearerToken | None = None,
    path: str = "/metrics",
    aggregate: bool = False,
    gauges: str = "sum",
    created: bool = True,
    scrape_timeout: float = DEFAULT_SCRAPE_TIMEOUT,
    registry: CollectorRegistry | None = None,
    service_discovery: ServiceDiscovery | None = None,
) -> MetricsHTTPServer:
    """Serve the merged metrics of the workers in *directory*, in the running event loop.

    Each scrape of *path* reads the directory, scrapes every worker listed
    there concurrently (in OpenMetrics, forwarding ``name[]`` unless the
    filter is too long for a worker's request line), merges their
    answers in a worker thread and answers in the format the scraper asked
    for, like every promloop mount point.  A worker that does not answer
    within the deadline, answers an error or something that is not
    OpenMetrics is left out, and its ``promloop_fanin_target_up`` is 0; the
    file of a worker whose process died is removed.  ``GET /targets`` lists
    the live workers for Prometheus's ``http_sd_configs``; ``GET /`` links to
    both.

    The workers' deadline is *scrape_timeout*, or three quarters of the time
    the scrape may take if that is shorter: Prometheus states its own timeout
    in the ``X-Prometheus-Scrape-Timeout-Seconds`` header, and the fan-in
    answers a little before it, with whatever workers answered in time.  A
    merge that takes longer than that answers 503, as every mount point does.

    Args:
        directory: The file_sd directory the workers register in (with
            :class:`promloop.aio.sd.FileSD`, ideally with ``slot="worker"``).
            It must exist and be writable: the fan-in removes stale files.
        addr: The interface to listen on; ``""`` means all of them.
        port: The port; 0 picks a free one (see ``socket`` on the result).
        ssl_ctx: Serve HTTPS with these settings.
        auth: Credentials every request must carry, on every path.
        path: Where the merged metrics are served.
        aggregate: Sum over the workers, without a ``worker`` label; the
            counters of workers that exit are carried forward.
        gauges: How gauges combine with *aggregate*: ``"sum"``, ``"max"``,
            ``"min"``, or ``"per-worker"`` (each keeps its worker's labels).
        created: Serve ``_created`` samples.
        scrape_timeout: The most seconds a worker may take to answer.
        registry: The registry that receives the fan-in's own metrics
            (``promloop_fanin_*``), served with the workers'; a new one by
            default.  Pass ``prometheus_client.REGISTRY`` to serve this
            process's metrics too.
        service_discovery: Registers the fan-in once it listens.

    Returns:
        The running server; its :meth:`~promloop.aio.web.MetricsHTTPServer.close`
        also ends the fan-in's scrapes and threads.

    Raises:
        FileNotFoundError, PermissionError: *directory* is missing or not
            writable; the message names it.
        ValueError: *path*, *gauges* or *scrape_timeout* is invalid.
        OSError: The address cannot be listened on.

    .. versionadded:: 26.0.0
    """
    if not path.startswith("/") or path in ("/", TARGETS_PATH):
        msg = f"path= must start with '/' and be neither '/' nor {TARGETS_PATH!r}, not {path!r}."
        raise ValueError(msg)
    guard = Guard(auth)
    fleet = Fleet(
        directory,
        aggregate=aggregate,
        gauges=gauges,
        created=created,
        scrape_timeout=scrape_timeout,
        registry=registry,
    )
    try:
        await fleet.start()
    except BaseException:
        await fleet.close()
        raise

    async def metrics(request: web.Request) -> web.Response:
        headers = request.headers
        # Repeated, it is malformed, as every mount point reads it.
        scraper_timeout = single(headers.getall(SCRAPE_TIMEOUT_HEADER, None))
        answering = fleet.scrape(
            # Every line of a list-valued header, as every mount point reads it.
            accept=joined(headers.getall("Accept", None)),
            accept_encoding=joined(headers.getall("Accept-Encoding", None)),
            query=raw_query(request),
            scraper_timeout=scraper_timeout,
        )
        seconds = scrape_seconds(scraper_timeout)
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(answering), seconds)
        except asyncio.TimeoutError:
            reply = too_slow(fleet, seconds)
        return response(reply)

    async def targets(request: web.Request) -> web.Response:
        body = await fleet.targets_json()
        return web.Response(body=body, content_type="application/json")

    page = _index_page(path)

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    app = web.Application(middlewares=[require_credentials(guard)] if auth is not None else [])
    app.router.add_get("/", index)
    app.router.add_get(path, metrics)
    app.router.add_get(TARGETS_PATH, targets)

    async def call_off(app: web.Application) -> None:
        # Before aiohttp waits for the handlers: scrapes in flight end now.
        fleet.call_off()

    async def close(app: web.Application) -> None:
        await fleet.close()

    app.on_shutdown.append(call_off)
    app.on_cleanup.append(close)
    try:
        return await serve_app(
            app,
            addr=addr,
            port=port,
            ssl_ctx=ssl_ctx,
            metrics_path=path,
            service_discovery=service_discovery,
            protected=auth is not None,
        )
    except BaseException:
        await fleet.close()
        raise
