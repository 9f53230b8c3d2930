"""Hypothesis settings shared by the hostile-input and security suites."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from .resources import LONG, scaled


EXAMPLES = scaled(25, 500)
"""Requests hypothesis makes per property and mount point."""

HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The short form runs in CI: the same examples every time.  The long form explores.
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
