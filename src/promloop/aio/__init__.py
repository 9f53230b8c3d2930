"""asyncio: instrumentation wrappers, and (with aiohttp) exposition.

The wrappers need only the standard library, and so does
:class:`promloop.aio.sd.FileSD`.  :mod:`promloop.aio.web`,
:mod:`promloop.aio.fanin` and :mod:`promloop.aio.push` need aiohttp
(``pip install 'promloop[aiohttp]'``), as does ``ConsulAgent``
(``'promloop[consul]'``).  As with prometheus_async.aio, they are imported
with this package when aiohttp is installed, so that ``aio.web`` is there
from the start.
"""

from __future__ import annotations

import importlib
import importlib.util

from typing import Any

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

if importlib.util.find_spec("aiohttp") is not None:
    # Imported now rather than by a module __getattr__ on first use: CPython
    # does not specialise attribute lookups on a module that has one, and
    # `aio.time(metric, coroutine)` would pay for it at every call.
    from . import fanin, push, sd, web  # noqa: F401  # pyright: ignore[reportUnusedImport]
else:
    # FileSD needs no aiohttp.
    from . import sd  # noqa: F401  # pyright: ignore[reportUnusedImport]

    def __getattr__(name: str) -> Any:
        if name in {"fanin", "push", "web"}:
            # Raises the ModuleNotFoundError that names the extra to install.
            return importlib.import_module(f"{__name__}.{name}")
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
