"""asyncio: instrumentation wrappers, and (with aiohttp) exposition and discovery.

The wrappers need only the standard library.
"""

from __future__ import annotations

from ._decorators import count_exceptions, time, track_inprogress


__all__ = ["count_exceptions", "time", "track_inprogress"]
