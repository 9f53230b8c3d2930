"""Optional dependencies: import them, or explain which extra to install."""

from __future__ import annotations

import importlib

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from types import ModuleType


def import_extra(module: str, extra: str, *, needed_by: str) -> ModuleType:
    """Import *module*, or raise a ModuleNotFoundError naming the extra that installs it.

    Args:
        module: The module to import, for example ``"aiohttp"``.
        extra: promloop's extra that provides it, for example ``"aiohttp"``.
        needed_by: What needs it, for the message (``"promloop.aio.web"``).
    """
    package = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and (err.name or "").partition(".")[0] == package:
            problem = "which is not installed"
        else:  # installed, but broken: a dependency of its own is missing, say
            problem = f"which could not be imported ({err})"
        msg = f"{needed_by} needs {package}, {problem}: pip install 'promloop[{extra}]'"

        # ModuleNotFoundError, as for any missing module: pytest.importorskip()
        # and `except ImportError` both handle it.
        raise ModuleNotFoundError(msg, name=err.name) from err
