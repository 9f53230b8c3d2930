"""Twisted: instrumentation wrappers for Deferreds and the functions returning them."""

from __future__ import annotations

from .._optional import import_extra


import_extra("twisted.internet.defer", "twisted", needed_by=__name__)

from ._decorators import count_exceptions, time, track_inprogress  # noqa: E402
from ._monitor import ReactorMonitor, monitor_reactor  # noqa: E402


__all__ = ["ReactorMonitor", "count_exceptions", "monitor_reactor", "time", "track_inprogress"]
