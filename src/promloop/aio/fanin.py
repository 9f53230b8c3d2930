"""One scrape for a fleet of worker processes: the fan-in.

Every worker keeps its own registry and serves it on a port of its own
(``port=0``), announced in a file_sd directory with
:class:`promloop.aio.sd.FileSD`; the fan-in serves the merged metrics of every
live worker on one fixed port.  Run it with ``python -m promloop fanin``, in
an event loop with :func:`start_fanin`, or as a child process of a
supervisor (gunicorn's master) with :func:`start_fanin_in_process`.  The
guide, :doc:`/fleet`, shows them in gunicorn, in a container and in
Kubernetes, and states the merging rules.

Needs aiohttp: ``pip install 'promloop[aiohttp]'``.
"""

from __future__ import annotations

from .._optional import import_extra


import_extra("aiohttp", "aiohttp", needed_by=__name__)

from ._fanin_process import FanInProcess, start_fanin_in_process  # noqa: E402
from ._fanin_server import start_fanin  # noqa: E402


__all__ = ["FanInProcess", "start_fanin", "start_fanin_in_process"]
