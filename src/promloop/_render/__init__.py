"""Rendering a registry byte for byte as prometheus_client does, faster and without its garbage.

prometheus_client's ``generate_latest()`` first collects every sample of a
metric family (a ``Sample`` tuple and a label dict per sample), then formats
them, escaping and joining every label of every line again at each scrape.
At 50k series that is well over 100k container objects alive at once:
enough to set off full runs of Python's cyclic garbage collector, which stop
every thread of the process, the event loop's included, for tens of
milliseconds.

:func:`render` streams instead, family by family:

- :mod:`.streaming` reads each child of prometheus_client's own metrics
  (``Counter``, ``Gauge``, ``Summary``, ``Histogram``, ``Info``, ``Enum``,
  and subclasses that only change how a child's samples are made) through
  the private attributes prometheus_client's own ``collect()`` reads, and
  formats it at once, so what it allocates dies young and never wakes the
  collector;
- :mod:`.families` keeps what never changes between scrapes: each family's
  header and escaped names, and each child's escaped line heads, so a
  scrape formats little more than the values;
- :mod:`.pacing` makes a render pause for half a millisecond every two, long
  enough to hand the GIL to a waiting event loop at once instead of after
  the interpreter's 5 ms switch interval;
- :mod:`.pieces` hands the output over in pieces of some tens of kilobytes,
  never joined into one large object (a C call that would hold the GIL for
  milliseconds), to be compressed and written a piece at a time;
- :mod:`.fallback` lets prometheus_client format everything else (custom
  collectors, ``MultiProcessCollector``, samples with timestamps, label
  names that collide), one family at a time; in multiprocess mode, all of
  it;
- :mod:`.self_check` makes sure, before the first render, that the
  streaming path agrees with the installed prometheus_client byte for byte
  on a registry exercising every case it formats; if a future
  prometheus_client disagrees, promloop logs a warning and leaves all
  rendering to prometheus_client.
"""

from __future__ import annotations

from typing import Any

from .collectors import registry_like
from .fallback import render_slow
from .formatting import escape_value, go_float
from .self_check import fast_path_allowed
from .streaming import render_fast


__all__ = ["escape_value", "go_float", "render", "render_pieces", "render_slow"]


def render(
    registry: Any,
    *,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None = None,
    created: bool = True,
) -> bytes:
    """Render *registry* as prometheus_client would, in one ``bytes`` object.

    The arguments are :func:`render_pieces`'; a large registry is better
    served in pieces, which this joins.
    """
    return b"".join(
        render_pieces(
            registry, openmetrics=openmetrics, escaping=escaping, names=names, created=created
        )
    )


def render_pieces(
    registry: Any,
    *,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None = None,
    created: bool = True,
) -> list[bytes]:
    """Render *registry* as prometheus_client would, in text or OpenMetrics, in pieces.

    Joined, the pieces are the bytes prometheus_client writes.

    Args:
        registry: A CollectorRegistry, or any object with ``collect()``.
        openmetrics: OpenMetrics 1.0.0 rather than the text format.
        escaping: How names outside the legacy character set are written.
        names: Render only the samples with these names (``name[]``).
        created: Keep the ``_created`` samples of counters, histograms and
            summaries; False drops them from this render alone, as
            prometheus_client's process-wide ``disable_created_metrics()``
            does for its own metrics.
    """
    if registry_like(registry) and fast_path_allowed():
        return render_fast(registry, openmetrics, escaping, names, created)
    return [render_slow(registry, openmetrics, escaping, names, created)]
