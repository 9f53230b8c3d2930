"""The one rule for ``registry=`` everywhere: None means prometheus_client's global REGISTRY."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY


def registry_or_default(registry: Any) -> Any:
    """Return *registry*, or the global ``REGISTRY`` for None."""
    return REGISTRY if registry is None else registry
