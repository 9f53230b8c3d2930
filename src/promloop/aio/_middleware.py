"""Request metrics for aiohttp applications: ``metrics_middleware()``."""

from __future__ import annotations

import asyncio
import weakref

from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from .._registries import registry_or_default


if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.typedefs import Middleware


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNMATCHED: Final = "<unmatched>"
"""The route of requests that no route matched (404s): one value, whatever the path."""

CLIENT_GONE: Final = "499"
"""The status of a request whose client went away, or whose handler was cancelled."""

_SWITCHING_PROTOCOLS: Final = 101

_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)

# The prefixes in use, per registry: two middlewares must not share metrics.
_prefixes: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def metrics_middleware(
    *,
    registry: Any = None,
    prefix: str = "http_server",
    exclude_paths: Sequence[str] = ("/metrics",),
    buckets: Sequence[float] | None = None,
) -> Middleware:
    """Return an aiohttp middleware that measures every request.

    Records ``<prefix>_requests_total{method,route,status}``,
    ``<prefix>_request_duration_seconds{method,route}`` and
    ``<prefix>_requests_in_progress{method}``:

    - ``route`` is the matched route's template (``/users/{id}``), never the
      raw path, so that the number of series stays bounded; requests that no
      route matched share the route ``<unmatched>``.  ``method`` is the HTTP
      method, or ``OTHER`` for a method that HTTP does not define.
    - The duration ends when the response is fully sent -- including a body
      that aiohttp streams after the handler returned.
    - A client that goes away before the response is complete, or a
      cancelled handler, is status ``499``, never ``500``, even if the handler
      itself returned 200.  An exception is ``500`` (an ``HTTPException`` its
      own status), and is re-raised untouched.
    - A WebSocket handler is status ``101``, and its duration is the whole
      session.
    - The in-progress gauge comes down on every way out, and each request is
      finished as soon as it ends: however many requests a keep-alive
      connection carries, none of their responses is kept.

    Use it as ``web.Application(middlewares=[metrics_middleware(), ...])``:
    first, so that it sees the response that is sent.  (Behind a middleware
    that replaces the response, a request is finished when aiohttp is done
    with it, with the status of the response the handler gave.)

    Args:
        registry: Where the metrics go; the global ``REGISTRY`` by default.
        prefix: The metric names' prefix.
        exclude_paths: Paths not measured (exact matches), such as the
            metrics endpoint itself.
        buckets: The duration histogram's buckets; prometheus_client's
            default if None.

    Raises:
        ValueError: A middleware with the same *prefix* already records into
            *registry*, or the registry already has one of these metric names.

    .. versionadded:: 26.0.0
    """
    target = registry_or_default(registry)
    used = _prefixes.setdefault(target, set())
    if prefix in used:
        msg = (
            f"metrics_middleware(): a middleware with prefix {prefix!r} already records into "
            f"this registry; give each middleware its own prefix= (or registry=)."
        )
        raise ValueError(msg)
    created: list[Any] = []
    try:
        requests = Counter(
            f"{prefix}_requests",
            "HTTP requests handled, by method, route template and status.",
            ["method", "route", "status"],
            registry=target,
        )
        created.append(requests)
        durations = Histogram(
            f"{prefix}_request_duration_seconds",
            "Seconds from receiving a request to sending the whole response.",
            ["method", "route"],
            registry=target,
            buckets=Histogram.DEFAULT_BUCKETS if buckets is None else tuple(buckets),
        )
        created.append(durations)
        in_progress = Gauge(
            f"{prefix}_requests_in_progress",
            "HTTP requests being handled, by method.",
            ["method"],
            registry=target,
        )
    except ValueError as error:
        for metric in created:  # leave the registry as it was
            target.unregister(metric)
        msg = (
            f"metrics_middleware(): prefix {prefix!r} clashes with the registry's metrics: {error}"
        )
        raise ValueError(msg) from error
    used.add(prefix)
    excluded = frozenset(exclude_paths)

    children = _Children(requests, durations, in_progress)

    @web.middleware
    async def measure_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in excluded:
            return await handler(request)

        method = request.method if request.method in _METHODS else "OTHER"
        resource = request.match_info.route.resource
        route = UNMATCHED if resource is None else resource.canonical
        gauge = children.gauge(method)
        gauge.inc()
        started = perf_counter()

        def finish(status: str) -> None:
            children.duration(method, route).observe(perf_counter() - started)
            children.requests(method, route, status).inc()
            gauge.dec()

        try:
            response = await handler(request)
        except BaseException as error:
            finish(_status_of_failure(request, error))
            raise
        _Delivery(request, response, finish)
        return response

    return measure_requests


class _Children:
    """The metrics' labelled children, made once and then looked up in plain dicts.

    prometheus_client's ``labels()`` validates and locks on every call; the
    keys here are bounded (methods x route templates x statuses).
    """

    def __init__(self, requests: Counter, durations: Histogram, in_progress: Gauge) -> None:
        self._metrics = (requests, durations, in_progress)
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._gauges: dict[str, Any] = {}

    def requests(self, method: str, route: str, status: str) -> Any:
        child = self._requests.get((method, route, status))
        if child is None:
            child = self._requests[method, route, status] = self._metrics[0].labels(
                method, route, status
            )
        return child

    def duration(self, method: str, route: str) -> Any:
        child = self._durations.get((method, route))
        if child is None:
            child = self._durations[method, route] = self._metrics[1].labels(method, route)
        return child

    def gauge(self, method: str) -> Any:
        child = self._gauges.get(method)
        if child is None:
            child = self._gauges[method] = self._metrics[2].labels(method)
        return child


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _status_of_failure(request: web.Request, error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError) or _client_gone(request):
        return CLIENT_GONE
    if isinstance(error, web.HTTPException):
        return str(error.status)
    return "500"


class _Delivery:
    """Call *finish*, once, when aiohttp has sent the whole response (or failed to).

    aiohttp sends a returned response after the middleware returns: it calls
    ``prepare()`` then ``write_eof()`` on it.  Wrapping both on this one
    response is the only place where the end of a streamed body is seen.

    A class rather than closures: closures that name each other form a
    reference cycle holding the response, which only the cycle collector
    would free.  Once the request is finished the response is unwrapped, and
    nothing here refers to it any more.
    """

    def __init__(
        self, request: web.Request, response: web.StreamResponse, finish: Callable[[str], None]
    ) -> None:
        self._request = request
        self._response = response
        self._finish: Callable[[str], None] | None = finish
        self._prepare = response.prepare
        self._write_eof = response.write_eof
        # If an outer middleware answers with another response, this one is
        # never sent: the request is still finished (with the status this
        # middleware saw) when aiohttp is done with it -- at the end of the
        # task aiohttp runs each request in.  (request.task is the
        # connection's task: on a keep-alive connection it would hold every
        # response until the client hangs up.)
        task = asyncio.current_task()
        if task is not None:  # pragma: no branch -- aiohttp runs each request in a task
            task.add_done_callback(self._request_ended)
        # Instance attributes on purpose: only this response is watched.
        response.prepare = self.prepare  # type: ignore[method-assign]
        response.write_eof = self.write_eof  # type: ignore[method-assign]

    def _done(self, status: str) -> None:
        finish, self._finish = self._finish, None
        if finish is None:  # finished already: aiohttp may call write_eof() again
            return
        finish(status)
        attributes = vars(self._response)
        if attributes.get("prepare") == self.prepare:
            del attributes["prepare"]
        if attributes.get("write_eof") == self.write_eof:
            del attributes["write_eof"]

    def _request_ended(self, _: object) -> None:
        self._done(str(self._response.status))

    def _sending_failed(self, error: BaseException) -> str:
        # While sending, a broken connection is the client's; anything else
        # (a header aiohttp refuses, say) is the server's.
        if isinstance(error, ConnectionError):
            return CLIENT_GONE
        return _status_of_failure(self._request, error)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await self._prepare(request)
        except BaseException as error:
            self._done(self._sending_failed(error))
            raise

    async def write_eof(self, *args: Any, **kwargs: Any) -> None:
        # Whatever arguments the response's own write_eof() takes: a
        # WebSocketResponse's takes none.
        try:
            await self._write_eof(*args, **kwargs)
        except BaseException as error:
            self._done(self._sending_failed(error))
            raise
        status = self._response.status
        # A 101 was complete once its headers were sent; the protocol it
        # switched to (a WebSocket) closes the connection when it is over.
        if status != _SWITCHING_PROTOCOLS and _client_gone(self._request):
            self._done(CLIENT_GONE)
        else:
            self._done(str(status))
