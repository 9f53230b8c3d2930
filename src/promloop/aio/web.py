"""Expose metrics over aiohttp: a handler to mount, or a server of its own.

Every entry point follows the rules of :mod:`promloop`'s exposition core:
content negotiation, ``name[]`` filters, gzip, credentials, and rendering in
a worker thread so that a large registry never stalls the event loop.

The parts live in modules of their own, one job each: the handler
(``_handler``), binding sockets (``_sockets``), the server's lifecycle
(``_server``) and the thread that runs a server for synchronous programs
(``_thread``).
"""

from __future__ import annotations

from .._optional import import_extra


import_extra("aiohttp", "aiohttp", needed_by=__name__)

from ._handler import make_handler, server_stats  # noqa: E402
from ._middleware import metrics_middleware  # noqa: E402
from ._server import MetricsHTTPServer, Socket, start_http_server  # noqa: E402
from ._thread import ThreadedMetricsHTTPServer, start_http_server_in_thread  # noqa: E402


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
