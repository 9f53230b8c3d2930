"""asyncio: instrumentation wrappers, and (with aiohttp) exposition.

The wrappers need only the standard library, and so does
:class:`promloop.aio.sd.FileSD`.  :mod:`promloop.aio.web`,
:mod:`promloop.aio.fanin` and :mod:`promloop.aio.push` need aiohttp
(``pip install 'promloop[aiohttp]'``), as does ``ConsulAgent``
(``'promloop[consul]'``); they load on first use, as ``promloop.aio.web`` or
``import promloop.aio.web``.
"""

from __future__ import annotations

import importlib

from typing import TYPE_CHECKING, Any

from ._decorators import count_exceptions, time, track_inprogress
from ._monitor import EventLoopMonitor, monitor_event_loop


if TYPE_CHECKING:
    from . import fanin, push, sd, web  # noqa: F401  # pyright: ignore[reportUnusedImport]


# The aiohttp-based modules are left out, so that `from promloop.aio import *`
# works without aiohttp.
__all__ = [
    "EventLoopMonitor",
    "count_exceptions",
    "monitor_event_loop",
    "time",
    "track_inprogress",
]

_LAZY_SUBMODULES = frozenset({"fanin", "push", "sd", "web"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
