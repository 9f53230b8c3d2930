"""Register a metrics server with service discovery: Consul, or Prometheus's file_sd.

Pass an instance as ``service_discovery=`` to
:func:`promloop.aio.web.start_http_server` (or the threaded variant): the
server registers once it listens, and deregisters when it is closed.  Any
object with the :class:`promloop.types.ServiceDiscovery` method works too.

:class:`FileSD` is plain file I/O and needs no framework; :class:`ConsulAgent`
needs aiohttp (``pip install 'promloop[consul]'``).  (When aiohttp is
installed, :mod:`promloop.aio` imports it anyway, with :mod:`promloop.aio.web`.)
"""

from __future__ import annotations

import importlib

from typing import TYPE_CHECKING, Any

from .._file_sd import FileSD


if TYPE_CHECKING:
    from ._consul import ConsulAgent


__all__ = ["ConsulAgent", "FileSD"]


def __getattr__(name: str) -> Any:
    if name == "ConsulAgent":
        # Raises an ImportError naming the extra when aiohttp is missing.
        return importlib.import_module(f"{__package__}._consul").ConsulAgent
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
