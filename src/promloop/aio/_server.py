"""A metrics server in the running event loop: :func:`start_http_server`."""

from __future__ import annotations

import html
import logging

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.log import server_logger

from .._exposition import Exposition, Guard, single
from . import _sockets
from ._handler import before_scrape_hooks, response, serve


if TYPE_CHECKING:
    import socket as socket_module
    import ssl

    from aiohttp.typedefs import Handler as NextHandler
    from aiohttp.typedefs import Middleware

    from .._auth import BasicAuth, BearerToken
    from ..types import Deregisterer, ServiceDiscovery


__all__ = ["MetricsHTTPServer", "Socket", "start_http_server"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLOSE_GRACE_SECONDS: Final = 1.0
"""How long :meth:`MetricsHTTPServer.close` lets scrapes in flight finish before it cuts them.

aiohttp's default is 60 s: a collector stuck in a render would hold an
application's shutdown that long.
"""


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


def require_credentials(guard: Guard) -> Middleware:
    """Return a middleware that refuses a request without valid credentials, on every path.

    The root page, the metrics path and unknown paths alike answer 401, before
    routing could answer 404 or 405.
    """

    @web.middleware
    async def require_credentials(request: web.Request, handler: NextHandler) -> web.StreamResponse:
        refusal = guard.refusal(single(request.headers.getall("Authorization", None)))
        if refusal is not None:
            return response(refusal)
        return await handler(request)

    return require_credentials


if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:  # it takes a type argument only from Python 3.11 on, at run time
    _LoggerAdapter = logging.LoggerAdapter


class _ServerLog(_LoggerAdapter):
    """aiohttp's server log, where a request its parser refused is one DEBUG line.

    aiohttp logs each such request at ERROR, with a traceback whose message
    quotes the offending line: a client sending garbage would fill the
    application's log with tracebacks, and a malformed ``Authorization``
    line would put credentials in it.  The client gets aiohttp's 400 either
    way; the line names the error's kind only.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            self.logger.debug("Refused a malformed request: %s.", type(error).__name__)
            return
        super().log(level, msg, *args, **kwargs)


class MetricsHTTPServer:
    """A running metrics server; :func:`start_http_server` returns it.

    Attributes:
        socket: The address and port it listens on.
        https: Whether it speaks TLS.
        protected: Whether every request must carry credentials (``auth=``).
    """

    def __init__(
        self,
        socket: Socket,
        runner: web.AppRunner,
        *,
        https: bool,
        metrics_path: str,
        protected: bool = False,
    ) -> None:
        self.socket = socket
        self.https = https
        self.protected = protected
        self._runner = runner
        self._metrics_path = metrics_path
        self._deregister: Deregisterer | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<MetricsHTTPServer {self.metrics_url}>"

    @property
    def url(self) -> str:
        """The server's root URL, such as ``http://127.0.0.1:9100/`` (IPv6 in brackets).

        A server on every interface (``socket.addr`` is ``::`` or
        ``0.0.0.0``) names this host instead, as service discovery does:
        ``http://<host name>:9100/``, an address a person can open.
        """
        host = _sockets.reachable_host(self.socket.addr)
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
    created: bool = True,
    before_scrape: (
        Sequence[Callable[[], Awaitable[object]]] | Mapping[str, Callable[[], Awaitable[object]]]
    ) = (),
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
        created: Serve the ``_created`` series; False leaves them out of this
            server's answers only.
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
       *registry*, *path*, *auth* and *created*; ``addr=""`` listens on one
       port for IPv4 and IPv6.
    """
    if not path.startswith("/") or path == "/":
        msg = f"path= must start with '/' and not be '/' itself, not {path!r}."
        raise ValueError(msg)
    exposition = Exposition(registry, auth=auth, created=created)
    hooks = before_scrape_hooks(exposition, before_scrape, before_scrape_timeout)

    # The middleware guards every path, the metrics path included: the handler
    # need not check the credentials a second time.
    app = web.Application(
        middlewares=[require_credentials(exposition.guard)] if auth is not None else []
    )
    app.router.add_get("/", _root_page(path))
    app.router.add_get(path, serve(exposition, hooks, check_credentials=False))
    return await serve_app(
        app,
        addr=addr,
        port=port,
        ssl_ctx=ssl_ctx,
        metrics_path=path,
        service_discovery=service_discovery,
        protected=auth is not None,
    )


async def serve_app(
    app: web.Application,
    *,
    addr: str,
    port: int,
    ssl_ctx: ssl.SSLContext | None,
    metrics_path: str,
    service_discovery: ServiceDiscovery | None,
    protected: bool,
) -> MetricsHTTPServer:
    """Serve *app* on every address *addr* stands for, then register it.

    What every promloop server shares (the metrics server, the fan-in): no
    access log, no signal handling, one port for IPv4 and IPv6, a bounded
    close, and nothing left open when listening or registering fails.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=CLOSE_GRACE_SECONDS,
        logger=_ServerLog(server_logger, {}),
    )
    await runner.setup()
    sockets: list[socket_module.socket] = []
    try:
        sockets = _sockets.listening_sockets(addr, port)
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_ctx).start()
        host, bound_port = sockets[0].getsockname()[:2]
        server = MetricsHTTPServer(
            Socket(host, bound_port),
            runner,
            https=ssl_ctx is not None,
            metrics_path=metrics_path,
            protected=protected,
        )
        if service_discovery is not None:
            # The server cannot be registered before it exists, nor exist
            # unregistered after it is returned.
            deregister = await service_discovery.register(server)
            server._deregister = deregister  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    except BaseException:
        await runner.cleanup()
        for sock in sockets:  # those no site took over yet
            sock.close()
        raise
    return server
