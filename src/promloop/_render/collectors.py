"""Reading a CollectorRegistry's collectors in the order its ``collect()`` visits them."""

# This module reads prometheus_client's internals on purpose (see the package docstring).
# ruff: noqa: SLF001
# pyright: reportPrivateUsage=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry


if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


def registry_like(registry: object) -> bool:
    """Tell whether *registry* collects exactly as a CollectorRegistry does."""
    return (
        isinstance(registry, CollectorRegistry)
        and type(registry).collect is CollectorRegistry.collect
        and "collect" not in vars(registry)
    )


def collectors(registry: Any, names: frozenset[str] | None) -> tuple[Metric | None, list[Any]]:
    """Return the registry's target_info family and collectors, as ``collect()`` would."""
    with registry._lock:
        everything: list[Any] = list(registry._collector_to_names)
        target_info = registry._target_info
        if names is None:
            return (registry._target_info_metric() if target_info else None), everything
        chosen = set(getattr(registry, "_collectors_without_names", ()))  # 0.25 and later
        chosen.update(
            registry._names_to_collectors[name]
            for name in names
            if name != "target_info" and name in registry._names_to_collectors
        )
        info = registry._target_info_metric() if target_info and "target_info" in names else None
    return info, [collector for collector in everything if collector in chosen]
