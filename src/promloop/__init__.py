"""Prometheus instrumentation and exposition for asyncio and Twisted.

``import promloop`` is cheap: it loads neither aiohttp nor Twisted.  The
framework packages :mod:`promloop.aio` and :mod:`promloop.tx` load on first
attribute access (``promloop.aio.time``) or on explicit import.
"""

from __future__ import annotations

import importlib

from typing import TYPE_CHECKING, Any

from ._auth import BasicAuth, BearerToken


if TYPE_CHECKING:
    from . import aio, tx  # noqa: F401  # pyright: ignore[reportUnusedImport]

    __version__: str


# tx is left out of __all__ so that `from promloop import *` works without
# Twisted; it loads on attribute access or `import promloop.tx`.
__all__ = ["BasicAuth", "BearerToken", "__version__", "aio"]

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
    return sorted({*globals(), *__all__, *_LAZY_SUBPACKAGES})
