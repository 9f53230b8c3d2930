"""What the event-loop and reactor monitors share: the histogram and its checks."""

from __future__ import annotations

import math

from typing import Any, Final

from prometheus_client import Histogram

from ._registries import registry_or_default


LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: from a healthy millisecond to a loop blocked for ten seconds."""


def lag_histogram(
    who: str, name: str, documentation: str, registry: Any, interval: object
) -> Histogram:
    """Validate *interval* and create the lag histogram in *registry*.

    Raises:
        ValueError: *interval* is not a positive number of seconds, or
            *registry* already has a metric called *name*.
    """
    if not isinstance(interval, (int, float)) or not math.isfinite(interval) or interval <= 0:
        msg = f"{who}: interval= must be a positive number of seconds, not {interval!r}."
        raise ValueError(msg)
    try:
        return Histogram(
            name,
            documentation,
            buckets=LAG_BUCKETS,
            registry=registry_or_default(registry),
        )
    except ValueError as error:
        msg = f"{who}: the registry already has {name}; stop the other monitor first ({error})."
        raise ValueError(msg) from error


def unregister(registry: Any, histogram: Histogram) -> None:
    """Remove *histogram* from *registry*, once."""
    registry_or_default(registry).unregister(histogram)
