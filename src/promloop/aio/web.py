"""Expose metrics over aiohttp: a handler to mount, or a server of its own.

Every entry point follows the rules of :mod:`promloop`'s exposition core:
content negotiation, ``name[]`` filters, gzip, credentials, and rendering in
a worker thread so that a large registry never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
import logging
import queue
import socket as socket_module
import threading

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._optional import import_extra


import_extra("aiohttp", "aiohttp", needed_by=__name__)

from aiohttp import web  # noqa: E402

from .._exposition import Exposition, Reply  # noqa: E402
from ._hooks import BeforeScrape  # noqa: E402
from ._middleware import metrics_middleware  # noqa: E402


if TYPE_CHECKING:
    import ssl

    from .._auth import BasicAuth, BearerToken
    from ..types import Deregisterer, ServiceDiscovery


__all__ = [
    "MetricsHTTPServer",
    "Socket",
    "ThreadedMetricsHTTPServer",
    "make_handler",
    "metrics_middleware",
    "server_stats",
    "start_http_server",
    "start_http_server_in_thread",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = logging.getLogger("promloop")


def _response(reply: Reply) -> web.Response:
    # Headers are set as given: aiohttp's content_type= argument rejects a
    # content type with parameters (https://github.com/aio-libs/aiohttp/issues/2197).
    return web.Response(status=reply.status, headers=dict(reply.headers), body=reply.body)


def make_handler(
    registry: Any = None,
    *,
    auth: BasicAuth | BearerToken | None = None,
    disable_compression: bool = False,
    before_scrape: Sequence[Callable[[], Awaitable[object]]] = (),
    before_scrape_timeout: float = 5.0,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Return an aiohttp handler that serves *registry*'s metrics.

    Mount it where you like: ``app.router.add_get("/metrics", make_handler())``
    (``add_get`` also answers HEAD).

    Args:
        registry: The ``CollectorRegistry`` to serve; the global ``REGISTRY``
            by default.  For prometheus_client's multiprocess mode, pass a
            registry holding a ``MultiProcessCollector``.
        auth: A :class:`promloop.BasicAuth` or :class:`promloop.BearerToken`
            that every request must carry; others get 401.
        disable_compression: Never gzip the answer.
        before_scrape: Coroutine functions, taking no arguments, awaited
            concurrently before each (authorised) scrape, so that gauges can
            be refreshed from async I/O.  One that raises or takes longer
            than *before_scrape_timeout* seconds (it is then cancelled) is
            logged at WARNING and counted in
            ``promloop_before_scrape_failures_total{hook="..."}``; the scrape
            answers with the values as they are.
        before_scrape_timeout: Seconds each hook may take.

    Raises:
        TypeError: *registry* has no ``collect()``, *auth* is not one of
            promloop's credential types, or a hook is not callable.
        ValueError: *before_scrape_timeout* is not positive.

    .. versionadded:: 26.0.0
    """
    exposition = Exposition(registry, auth=auth, disable_compression=disable_compression)
    hooks = BeforeScrape(before_scrape, before_scrape_timeout, registry) if before_scrape else None

    async def metrics(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        headers = request.headers
        refusal = exposition.refusal(headers.get("Authorization"))
        if refusal is not None:
            return _response(refusal)
        if hooks is not None:
            await hooks.run()
        rendering = exposition.render(
            accept=headers.get("Accept"),
            accept_encoding=headers.get("Accept-Encoding"),
            names=request.query.getall("name[]", ()),
            spawn=lambda work: loop.run_in_executor(None, work),
        )
        return _response(await asyncio.wrap_future(rendering))

    return metrics


_serve_global_registry = make_handler()


async def server_stats(request: web.Request) -> web.Response:
    """Serve the metrics of prometheus_client's global ``REGISTRY``.

    A ready-made aiohttp handler: ``app.router.add_get("/metrics", server_stats)``.
    Use :func:`make_handler` for another registry, credentials, or no gzip.
    """
    return await _serve_global_registry(request)


class Socket(NamedTuple):
    """The address and port a server listens on."""

    addr: str
    port: int


def _root_page(metrics_path: str) -> Handler:
    page = (
        "<!DOCTYPE html>\n<html><head><title>Metrics</title></head>"
        f'<body><a href="{html.escape(metrics_path)}">Metrics</a></body></html>\n'
    ).encode()

    async def root(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    return root


def _listening_sockets(addr: str, port: int) -> list[socket_module.socket]:
    """Bind every address *addr* stands for, all on one port.

    ``""`` means every interface: one dual-stack IPv6 socket where the host
    has IPv6 (it accepts IPv4 too), else IPv4.  A name such as ``localhost``
    may resolve to both ``::1`` and ``127.0.0.1``: both are bound, on the
    port the first one got.
    """
    if addr == "":
        return [_listening(_dual_stack_socket(port))]
    infos = socket_module.getaddrinfo(
        addr, port, type=socket_module.SOCK_STREAM, flags=socket_module.AI_PASSIVE
    )
    sockets: list[socket_module.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if sockets:  # the others follow the first one's port
                address = (address[0], sockets[0].getsockname()[1], *address[2:])  # noqa: PLW2901
            sockets.append(_bound(family, kind, proto, address))
        return [_listening(sock) for sock in sockets]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


def _dual_stack_socket(port: int) -> socket_module.socket:
    """Bind (without listening) a socket for every interface, IPv6 and IPv4."""
    if socket_module.has_dualstack_ipv6():
        sock = _bound(socket_module.AF_INET6, socket_module.SOCK_STREAM, 0, ("::", port), True)
    else:  # pragma: no cover -- a host without IPv6
        sock = _bound(socket_module.AF_INET, socket_module.SOCK_STREAM, 0, ("0.0.0.0", port))  # noqa: S104
    return sock


def _listening(sock: socket_module.socket) -> socket_module.socket:
    sock.listen(128)
    return sock


def _bound(
    family: int, kind: int, proto: int, address: Any, dual_stack: bool = False
) -> socket_module.socket:
    sock = socket_module.socket(family, kind, proto)
    try:
        sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_REUSEADDR, 1)
        if family == socket_module.AF_INET6:
            sock.setsockopt(socket_module.IPPROTO_IPV6, socket_module.IPV6_V6ONLY, not dual_stack)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            msg = f"cannot listen on {address[0]!r} port {address[1]}: the address is in use"
            raise OSError(error.errno, msg) from error
        raise
    return sock


class MetricsHTTPServer:
    """A running metrics server; :func:`start_http_server` returns it.

    Attributes:
        socket: The address and port it listens on.
        https: Whether it speaks TLS.
    """

    def __init__(
        self,
        socket: Socket,
        runner: web.AppRunner,
        *,
        https: bool,
        metrics_path: str,
    ) -> None:
        self.socket = socket
        self.https = https
        self._runner = runner
        self._metrics_path = metrics_path
        self._deregister: Deregisterer | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<MetricsHTTPServer {self.metrics_url}>"

    @property
    def url(self) -> str:
        """The server's root URL, such as ``http://127.0.0.1:9100/`` (IPv6 in brackets)."""
        host = self.socket.addr
        if ":" in host:
            host = f"[{host}]"
        return f"http{'s' if self.https else ''}://{host}:{self.socket.port}/"

    @property
    def metrics_url(self) -> str:
        """The URL of the metrics, such as ``http://127.0.0.1:9100/metrics``."""
        return self.url + self._metrics_path.lstrip("/")

    @property
    def metrics_path(self) -> str:
        """The path the metrics are served under."""
        return self._metrics_path

    @property
    def is_registered(self) -> bool:
        """Whether the server is registered with service discovery."""
        return self._deregister is not None

    async def close(self) -> None:
        """Deregister from service discovery, then stop serving and free the socket.

        Calling it again does nothing.  The socket is freed even when
        deregistration fails; that failure is raised afterwards.
        """
        if self._closed:
            return
        self._closed = True
        deregister, self._deregister = self._deregister, None
        try:
            if deregister is not None:
                await deregister()
        finally:
            await self._runner.cleanup()


async def start_http_server(
    *,
    addr: str = "",
    port: int = 0,
    ssl_ctx: ssl.SSLContext | None = None,
    service_discovery: ServiceDiscovery | None = None,
    registry: Any = None,
    path: str = "/metrics",
    auth: BasicAuth | BearerToken | None = None,
    before_scrape: Sequence[Callable[[], Awaitable[object]]] = (),
    before_scrape_timeout: float = 5.0,
) -> MetricsHTTPServer:
    """Start serving metrics over HTTP(S) in the running event loop.

    ``GET /`` answers a small page linking to the metrics; *path* serves them.
    The access log is off.

    Args:
        addr: The interface to listen on; ``""`` means all of them, IPv4 and
            IPv6, on one port.
        port: The port; 0 picks a free one (see ``socket`` on the result).
        ssl_ctx: Serve HTTPS with these settings; a context that requires
            client certificates (``verify_mode = CERT_REQUIRED``) enforces them.
        service_discovery: Registers the server once it listens; see
            :class:`promloop.types.ServiceDiscovery`.
        registry: The registry to serve; the global ``REGISTRY`` by default.
        path: Where the metrics are served; it must start with ``/`` and not
            be ``/`` itself.
        auth: Credentials every metrics request must carry.
        before_scrape: Coroutine functions awaited before each scrape; see
            :func:`make_handler`.
        before_scrape_timeout: Seconds each of them may take.

    Returns:
        The running server.

    Raises:
        ValueError: *path* is not a valid metrics path.
        OSError: The address cannot be listened on (for example, the port is
            in use); nothing is left open.

    .. versionchanged:: 26.0.0
       *registry*, *path* and *auth*; ``addr=""`` listens on one port for
       IPv4 and IPv6.
    """
    if not path.startswith("/") or path == "/":
        msg = f"path= must start with '/' and not be '/' itself, not {path!r}."
        raise ValueError(msg)
    handler = make_handler(
        registry,
        auth=auth,
        before_scrape=before_scrape,
        before_scrape_timeout=before_scrape_timeout,
    )

    app = web.Application()
    app.router.add_get("/", _root_page(path))
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sockets: list[socket_module.socket] = []
    try:
        sockets = _listening_sockets(addr, port)
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_ctx).start()
        host, bound_port = sockets[0].getsockname()[:2]
        server = MetricsHTTPServer(
            Socket(host, bound_port), runner, https=ssl_ctx is not None, metrics_path=path
        )
        if service_discovery is not None:
            # The server cannot be registered before it exists, nor exist
            # unregistered after start_http_server() returns.
            deregister = await service_discovery.register(server)
            server._deregister = deregister  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    except BaseException:
        await runner.cleanup()
        for sock in sockets:  # those no site took over yet
            sock.close()
        raise
    return server


class ThreadedMetricsHTTPServer:
    """A metrics server running its own event loop in a daemon thread.

    :func:`start_http_server_in_thread` returns it; its attributes mirror
    :class:`MetricsHTTPServer`'s, and :meth:`close` is synchronous.
    """

    def __init__(
        self,
        server: MetricsHTTPServer,
        thread: threading.Thread,
        loop: asyncio.AbstractEventLoop,
        stop: asyncio.Event,
        closed: threading.Event,
    ) -> None:
        self._server = server
        self._thread = thread
        self._loop = loop
        self._stop = stop
        self._closed = closed

    def __repr__(self) -> str:
        return f"<ThreadedMetricsHTTPServer {self.metrics_url}>"

    @property
    def socket(self) -> Socket:
        """The address and port the server listens on."""
        return self._server.socket

    @property
    def https(self) -> bool:
        """Whether the server speaks TLS."""
        return self._server.https

    @property
    def url(self) -> str:
        """The server's root URL."""
        return self._server.url

    @property
    def metrics_url(self) -> str:
        """The URL of the metrics."""
        return self._server.metrics_url

    @property
    def is_registered(self) -> bool:
        """Whether the server is registered with service discovery."""
        return self._server.is_registered

    def close(self, timeout: float = 10.0) -> None:
        """Deregister, stop serving and free the socket; the thread ends shortly after.

        Returns once the socket is closed and deregistration has been
        attempted; a failure to deregister is logged on the ``promloop``
        logger.  Calling it again does nothing.

        Args:
            timeout: How many seconds to wait for the server's loop at most.
        """
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            self._loop.call_soon_threadsafe(self._stop.set)
        self._closed.wait(timeout)


def start_http_server_in_thread(
    *,
    addr: str = "",
    port: int = 0,
    ssl_ctx: ssl.SSLContext | None = None,
    service_discovery: ServiceDiscovery | None = None,
    registry: Any = None,
    path: str = "/metrics",
    auth: BasicAuth | BearerToken | None = None,
    before_scrape: Sequence[Callable[[], Awaitable[object]]] = (),
    before_scrape_timeout: float = 5.0,
) -> ThreadedMetricsHTTPServer:
    """Start a metrics server with an event loop of its own, in a daemon thread.

    For synchronous applications: no asyncio needed.  The arguments are
    those of :func:`start_http_server`; *before_scrape* hooks run in the
    server's own event loop, in its thread.

    Returns:
        The running server.

    Raises:
        ValueError, OSError: As :func:`start_http_server`; a failure to start
            is raised here, in the caller, and leaves no thread behind.

    .. versionchanged:: 26.0.0
       Start-up failures are raised in the caller instead of hanging.
    """
    started: queue.Queue[tuple[MetricsHTTPServer, asyncio.Event] | BaseException] = queue.Queue()
    closed = threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        try:
            server = await start_http_server(
                addr=addr,
                port=port,
                ssl_ctx=ssl_ctx,
                service_discovery=service_discovery,
                registry=registry,
                path=path,
                auth=auth,
                before_scrape=before_scrape,
                before_scrape_timeout=before_scrape_timeout,
            )
        except BaseException as error:  # noqa: BLE001 -- handed to the caller
            started.put(error)
            return
        stop = asyncio.Event()
        started.put((server, stop))
        try:
            await stop.wait()
            await server.close()
        except Exception:  # noqa: BLE001 -- no caller to raise to: logged
            _log.exception("Closing %r failed; its socket is closed.", server)
        finally:
            closed.set()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            closed.set()

    thread = threading.Thread(target=run, name="promloop-metrics-server", daemon=True)
    thread.start()
    outcome = started.get()
    if isinstance(outcome, BaseException):
        thread.join()
        raise outcome
    server, stop = outcome
    return ThreadedMetricsHTTPServer(server, thread, loop, stop, closed)
