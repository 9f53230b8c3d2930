"""A metrics server in a thread of its own, for synchronous programs."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import signal
import threading

from typing import TYPE_CHECKING, Any

from ._server import MetricsHTTPServer, Socket, start_http_server


if TYPE_CHECKING:
    import ssl

    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from .._auth import BasicAuth, BearerToken
    from ..types import ServiceDiscovery


__all__ = ["ThreadedMetricsHTTPServer", "start_http_server_in_thread"]

_log = logging.getLogger("promloop")

EXIT_TIMEOUT_SECONDS = 5.0
"""How long closing the servers still open at exit may take, each."""

# Servers that have not been closed yet.  They are closed at interpreter exit:
# their daemon threads would otherwise be frozen mid-loop, and a server
# registered with service discovery would stay registered after its process.
_open_servers: set[ThreadedMetricsHTTPServer] = set()
_exit_lock = threading.Lock()
_exit_hooked = False


def _close_open_servers() -> None:
    for server in list(_open_servers):
        server.close(timeout=EXIT_TIMEOUT_SECONDS)


def _forget_after_fork() -> None:
    # A forked child (gunicorn preloading an app that started a server) has
    # the parent's servers in this set, but not their threads: closing them at
    # its exit would only wait for loops that do not run there.
    _open_servers.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch -- POSIX
    os.register_at_fork(after_in_child=_forget_after_fork)


def _terminate(signum: int, frame: object) -> None:
    """Close the open servers, then die of SIGTERM as the process would have."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _close_open_servers()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def _close_at_exit(server: ThreadedMetricsHTTPServer, *, on_sigterm: bool) -> None:
    """Close *server* at interpreter exit, and on SIGTERM if nobody handles it.

    SIGTERM is taken over only where the process would otherwise die at once
    without running anything (its default action), and only from the main
    thread, where Python runs signal handlers.  An application that handles
    SIGTERM itself keeps its handler; exiting normally closes the servers.
    """
    global _exit_hooked  # noqa: PLW0603 -- one hook per process
    with _exit_lock:
        _open_servers.add(server)
        if not _exit_hooked:
            atexit.register(_close_open_servers)
            _exit_hooked = True
        if (
            on_sigterm
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _terminate)


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
    def protected(self) -> bool:
        """Whether every request must carry credentials (``auth=``)."""
        return self._server.protected

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
        _open_servers.discard(self)
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
    created: bool = True,
    before_scrape: (
        Sequence[Callable[[], Awaitable[object]]] | Mapping[str, Callable[[], Awaitable[object]]]
    ) = (),
    before_scrape_timeout: float = 5.0,
) -> ThreadedMetricsHTTPServer:
    """Start a metrics server with an event loop of its own, in a daemon thread.

    For synchronous applications: no asyncio needed.  The arguments are
    those of :func:`start_http_server`; *before_scrape* hooks run in the
    server's own event loop, in its thread.

    A server that is still open when the interpreter exits is closed then,
    so that it deregisters from service discovery.  With
    *service_discovery*, a process whose SIGTERM has its default action
    (death, with no clean-up) closes its servers first, then dies of SIGTERM
    as before; a SIGTERM handler of the application's own is left alone.

    Returns:
        The running server.

    Raises:
        ValueError, OSError: As :func:`start_http_server`; a failure to start
            is raised here, in the caller, and leaves no thread behind.

    .. versionchanged:: 26.0.0
       Start-up failures are raised in the caller instead of hanging; open
       servers are closed at exit and on SIGTERM.
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
                created=created,
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
    threaded = ThreadedMetricsHTTPServer(server, thread, loop, stop, closed)
    _close_at_exit(threaded, on_sigterm=service_discovery is not None)
    return threaded
