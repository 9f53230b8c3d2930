"""asyncio: instrumentation wrappers, and (with aiohttp) exposition.

The wrappers need only the standard library, and so does
:class:`promloop.aio.sd.FileSD`.  :mod:`promloop.aio.web`,
:mod:`promloop.aio.fanin` and :mod:`promloop.aio.push` need aiohttp
(``pip install 'promloop[aiohttp]'``), as does ``ConsulAgent``
(``'promloop[consul]'``).  As with prometheus_async.aio, they are imported
with this package when aiohttp can be imported, so that ``aio.web`` is there
from the start; otherwise ``aio.web`` raises the ImportError, naming the extra
to install, when it is asked for.
"""

from __future__ import annotations

import importlib

from typing import Any

from . import sd  # noqa: F401  # pyright: ignore[reportUnusedImport] -- FileSD needs no aiohttp
from ._decorators import count_exceptions, time, track_inprogress
from ._monitor import EventLoopMonitor, monitor_event_loop


# The aiohttp-based modules are left out, so that `from promloop.aio import *`
# works without aiohttp.
__all__ = [
    "EventLoopMonitor",
    "count_exceptions",
    "monitor_event_loop",
    "time",
    "track_inprogress",
]

try:
    # Imported now rather than by a module __getattr__ on first use: CPython
    # does not specialise attribute lookups on a module that has one, and
    # `aio.time(metric, coroutine)` would pay for it at every call.
    from . import fanin, push, web  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError:
    # aiohttp is missing or cannot be imported: the wrappers still work, and
    # aio.web raises the ImportError (naming the extra) when it is asked for.

    def __getattr__(name: str) -> Any:
        if name in {"fanin", "push", "web"}:
            return importlib.import_module(f"{__name__}.{name}")
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
