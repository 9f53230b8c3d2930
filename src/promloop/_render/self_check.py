"""Checking, once per process, that the streaming path writes what prometheus_client writes."""

from __future__ import annotations

import functools
import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    values,
)
from prometheus_client.openmetrics import exposition as om

from .fallback import render_slow
from .streaming import render_fast


_log = logging.getLogger("promloop")


def fast_path_allowed() -> bool:
    """Tell whether metric objects may be streamed: not in multiprocess mode, and checked.

    In prometheus_client's multiprocess mode every metric created writes to the
    shared files, the self-check's probe metrics included; and the metrics an
    application serves there are read by ``MultiProcessCollector`` anyway.
    """
    return values.ValueClass is values.MutexValue and agrees_with_prometheus_client()


@functools.cache
def agrees_with_prometheus_client() -> bool:
    """Check, once, that the streaming path writes what prometheus_client writes.

    Every format, escaping, filter and ``created`` choice is rendered twice:
    once building each child's line heads, once reusing them.
    """
    registry = probe_registry()
    names = frozenset({"probe_events_total", "probe_latency_bucket", "probe_state"})
    try:
        for openmetrics in (False, True):
            for escaping in (om.UNDERSCORES, om.ALLOWUTF8, om.DOTS, om.VALUES):
                for only in (None, names):
                    for created in (True, False):
                        expected = render_slow(registry, openmetrics, escaping, only, created)
                        for _ in range(2):
                            ours = render_fast(registry, openmetrics, escaping, only, created)
                            if b"".join(ours) != expected:
                                msg = f"{'OpenMetrics' if openmetrics else 'text'}, {escaping}"
                                raise _DisagreementError(msg)  # noqa: TRY301 -- logged below
    except Exception:  # noqa: BLE001 -- whatever breaks, prometheus_client renders
        _log.warning(
            "promloop's renderer disagrees with prometheus_client %s, or could not be checked "
            "against it; prometheus_client renders every scrape instead.",
            _client_version(),
            exc_info=True,
        )
        return False
    return True


class _DisagreementError(Exception):
    """The streaming path and prometheus_client wrote different bytes."""


def _client_version() -> str:
    from importlib.metadata import version  # noqa: PLC0415 -- only on a rare path

    return version("prometheus-client")


def probe_registry() -> CollectorRegistry:
    """Build a registry with every kind of sample the streaming path formats."""
    registry = CollectorRegistry()
    tricky = ('quote " back \\ newline \n', "ünïcode ✓", "")
    counter = Counter(
        "probe_events", 'Help with "quotes",\\ and \n.', ["b", "a"], registry=registry
    )
    for value in tricky:
        counter.labels(value, "x").inc(1.5)
    counter.labels("ex", "y").inc(2, exemplar={"trace_id": 'a"b'})
    counter.labels("reset", "z").reset()  # an int zero, not a float
    Counter("probe_plain", "No labels.", unit="bytes", registry=registry).inc(1e7)
    gauge = Gauge("probe_gauge", "Gauge.", ["z"], registry=registry)
    for number, level in enumerate((-0.0, 1e-7, 123456789.0, float("inf"), float("nan"), -1e300)):
        gauge.labels(str(number)).set(level)
    gauge.labels("function").set_function(lambda: 4)
    Gauge("probe_function", "Function.", registry=registry).set_function(lambda: 3)
    Gauge("probe_empty", "Labelled, no children.", ["k"], registry=registry)
    summary = Summary("probe_summary", "Summary.", ["m", "q"], registry=registry)
    summary.labels("a", "b").observe(0.25)
    Summary("probe_bare_summary", "Unlabelled summary.", registry=registry).observe(2e6)
    histogram = Histogram(
        "probe_latency", "Histogram.", ["m", "z"], buckets=(-1, 0.5, 1e7), registry=registry
    )
    histogram.labels("a", "b").observe(0.3, exemplar={"id": "1"})
    Histogram("probe_bare", "Unlabelled histogram.", registry=registry).observe(1.5e10)
    Enum("probe_state", "Enum.", ["a", "z"], states=["on", "off"], registry=registry).labels(
        "x", "y"
    ).state("off")
    Info("probe_build", "Info.", ["host"], registry=registry).labels("h").info({"v": "1", "a": "2"})
    return registry
