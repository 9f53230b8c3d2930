"""Prometheus instrumentation and exposition for asyncio and Twisted.

``import promloop`` is cheap: it loads neither aiohttp nor Twisted.  The
framework packages :mod:`promloop.aio` and :mod:`promloop.tx` load on first
attribute access (``promloop.aio.time``) or on explicit import.
"""

from __future__ import annotations

import importlib

from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from . import aio, tx

    __version__: str


__all__ = ["__version__", "aio", "tx"]

_LAZY_SUBPACKAGES = frozenset({"aio", "tx"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBPACKAGES:
        # import_module binds the subpackage as an attribute of this module,
        # so __getattr__ runs once per name.
        return importlib.import_module(f"{__name__}.{name}")

    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 -- only when asked for

        return version("promloop")

    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
