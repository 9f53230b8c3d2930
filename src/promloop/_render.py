"""Rendering a registry byte for byte as prometheus_client does, without its garbage.

prometheus_client's ``generate_latest()`` first collects every sample of a
metric family (a ``Sample`` tuple and a label dict per sample), then formats
them.  At 50k series that is well over 100k container objects alive at once:
enough to set off full runs of Python's cyclic garbage collector, which stop
every thread of the process, the event loop's included, for tens of
milliseconds.

:func:`render` streams instead.  It formats each child of a metric as soon as
it reads it, so what it allocates dies young and never wakes the collector;
it escapes each family's names once; and every :data:`WORK_SECONDS` it sleeps
for :data:`PAUSE_SECONDS`, which hands the GIL to a waiting event loop at once
instead of after the interpreter's 5 ms switch interval.

It reads prometheus_client's metric objects (``Counter``, ``Gauge``,
``Summary``, ``Histogram``, ``Info``, ``Enum``, and subclasses that only
change how a child's samples are made) through the same private attributes
prometheus_client's own ``collect()`` reads.  Everything else (custom
collectors, ``MultiProcessCollector``, samples with timestamps, label names
that collide) is formatted by prometheus_client itself, one family at a time;
in multiprocess mode, all of it is.  Before its first
use, :func:`render` checks that it agrees with prometheus_client byte for byte
on a registry exercising every case it formats; if a future prometheus_client
disagrees, promloop logs a warning and leaves all rendering to
prometheus_client.
"""

# This module reads prometheus_client's internals on purpose (see above).
# ruff: noqa: SLF001
# pyright: reportPrivateUsage=false

from __future__ import annotations

import bisect
import functools
import logging
import threading
import time
import weakref

from typing import TYPE_CHECKING, Any, Final, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    utils,
    validation,
    values,
)
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator


_log = logging.getLogger("promloop")

WORK_SECONDS: Final = 0.001
"""How long a render runs before it pauses: the longest it keeps the GIL from the loop.

Measured at 50k series (``benchmarks/bench_scrape.py``): 1 ms keeps the
event loop's worst stall under 5 ms for ~15% more render time; 2 ms, under
7 ms for ~5%; without pauses the loop waits a full switch interval (5 ms)
for the GIL at nearly every wake-up, and twice as long at worst.
"""

PAUSE_SECONDS: Final = 0.0
"""``time.sleep(0)`` releases the GIL for the ~50 µs the kernel sleeps: time
enough for a thread waiting for it to take it."""

_CHUNK_LINES: Final = 2048
"""Lines joined and encoded at a time, so no single C call holds the GIL long."""

_PACE_EVERY: Final = 64
"""Children rendered between two looks at the clock."""

_NATIVE: Final = 5
"""Where a sample holds its native histogram, in prometheus_client versions that have one."""

_LABEL_HEADS_KEPT: Final = 64
"""Sample label names (``le``, an Enum's name, Info's keys) remembered per family."""

_ALLOWUTF8: Final[str] = om.ALLOWUTF8
_MOVED_TO_GAUGES: Final = ("_created", "_gsum", "_gcount")
"""Samples the text format moves into gauge families of their own."""
_WITH_CREATED: Final = frozenset({"counter", "histogram", "summary"})
"""The family types whose ``<name>_created`` sample ``created=False`` drops."""

# prometheus_client's formatting helpers lack annotations: typed once, here.
_escape_metric_name = cast("Callable[[str, str], str]", om.escape_metric_name)
_escape_label_name = cast("Callable[[str, str], str]", om.escape_label_name)
_escape_name = cast("Callable[[str, str, Callable[[str, int], bool]], str]", om._escape)
_legacy_label_rune = cast("Callable[[str, int], bool]", om._is_legacy_labelname_rune)
_legacy_metric_name = cast("Callable[[str], bool]", validation._is_valid_legacy_metric_name)
_compose_exemplar = cast(
    "Callable[[Any, Any, Any], str]",
    om._compose_exemplar_string,  # pyright: ignore[reportUnknownMemberType]
)
_generate_openmetrics = cast(
    "Callable[..., bytes]",
    om.generate_latest,  # pyright: ignore[reportUnknownMemberType]
)
_float_to_go = cast(
    "Callable[[float], str]",
    utils.floatToGoString,  # pyright: ignore[reportUnknownMemberType]
)

_OM_EOF: Final = b"# EOF\n"
_INF: Final = float("inf")
_REPR_LIMIT: Final = 1e6
"""From here on, the Go format writes an exponent where Python's repr does not."""
_EXPONENT: Final = "e+0{}" if _float_to_go(1e10) == "1e+010" else "e+{:02d}"
"""How the installed prometheus_client writes exponents (0.26 stopped padding 10 and up)."""


def go_float(value: float) -> str:
    """Format *value* as prometheus_client's ``floatToGoString`` does, faster."""
    value = float(value)
    if -_INF < value < _REPR_LIMIT:  # neither infinite nor NaN, and short enough for repr
        return repr(value)
    whole, dot, fraction = repr(value).partition(".")
    if not dot or "e" in fraction:  # inf, nan, or an exponent already
        return _float_to_go(value)
    # Go writes 1234567.5 as 1.2345675e+06: a mantissa, and an exponent.
    mantissa = f"{whole[0]}.{whole[1:]}{fraction}".rstrip("0").rstrip(".")
    return mantissa + _EXPONENT.format(len(whole) - 1)


def escape_value(value: str) -> str:
    """Escape a label value (or OpenMetrics help text) for both text formats."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


class _Unusual(Exception):  # noqa: N818 -- a signal, not an error
    """A sample the fast path does not format: prometheus_client renders the family."""


class _Families:
    """A collector that yields the given families: prometheus_client's formatters take one."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Pacer:
    """Let other threads have the GIL every :data:`WORK_SECONDS` of rendering."""

    def __init__(self, work: float, pause: float) -> None:
        self._work = work
        self._pause = pause
        self._mark = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self._mark >= self._work:
            time.sleep(self._pause)
            self._mark = time.perf_counter()


class _Output:
    """Lines in, UTF-8 chunks out, a bounded number of lines at a time."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lines: list[str] = []

    def flush(self) -> None:
        if self.lines:
            self.chunks.append("".join(self.lines).encode())
            self.lines.clear()


class _Line:
    """The fixed parts of a sample line: what comes before and after its labels."""

    __slots__ = ("bare", "close", "moved", "name", "open")

    def __init__(self, name: str, suffix: str, openmetrics: bool, escaping: str) -> None:
        full = name + suffix
        self.name = full
        self.moved = not openmetrics and suffix in _MOVED_TO_GAUGES
        if escaping == _ALLOWUTF8 and not _legacy_metric_name(full):
            quoted = _escape_metric_name(full, escaping)
            self.open, self.close, self.bare = "{" + quoted + ",", "} ", "{" + quoted + "} "
        else:
            if openmetrics:  # prometheus_client's OpenMetrics writer escapes names so
                written = _escape_name(full, escaping, _legacy_label_rune)
            else:
                written = _escape_metric_name(full, escaping)
            self.open, self.close, self.bare = written + "{", "} ", written + " "


class _Spec:
    """What one metric family renders the same way at every scrape, in one format."""

    def __init__(self, metric: Any, openmetrics: bool, escaping: str) -> None:
        self.openmetrics = openmetrics
        self.escaping = escaping
        self.family = metric._get_metric()  # no samples: the header, and exemplars' context
        self.name: str = metric._name
        self.header = _render_families([self.family], openmetrics, escaping)
        labelnames: tuple[str, ...] = metric._labelnames
        self.order = sorted(range(len(labelnames)), key=labelnames.__getitem__)
        self.sorted_names = [labelnames[i] for i in self.order]
        self.label_heads = [_escape_label_name(labelnames[i], escaping) + '="' for i in self.order]
        self.label_set = frozenset(labelnames)
        self.repeated_label = len(self.label_set) < len(labelnames)
        self._lines: dict[str, _Line] = {}
        self._label_heads: dict[str, str] = {}
        self._moved_headers: dict[str, str] = {}

    def line(self, suffix: str) -> _Line:
        line = self._lines.get(suffix)
        if line is None:
            line = self._lines[suffix] = _Line(self.name, suffix, self.openmetrics, self.escaping)
        return line

    def label_head(self, name: str) -> str:
        head = self._label_heads.get(name)
        if head is None:
            head = _escape_label_name(name, self.escaping) + '="'
            if len(self._label_heads) < _LABEL_HEADS_KEPT:  # Info's keys may be anything
                self._label_heads[name] = head
        return head

    def moved_header(self, suffix: str) -> str:
        """Return the header of the text format's gauge family for *suffix* samples."""
        header = self._moved_headers.get(suffix)
        if header is None:
            name = _escape_metric_name(self.name + suffix, self.escaping)
            help_text = self.family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
            header = f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
            self._moved_headers[suffix] = header
        return header


_specs: weakref.WeakKeyDictionary[Any, dict[tuple[bool, str], _Spec]] = weakref.WeakKeyDictionary()
_specs_lock = threading.Lock()


def _spec(metric: Any, openmetrics: bool, escaping: str) -> _Spec:
    with _specs_lock:
        per_format = _specs.get(metric)
        if per_format is None:
            per_format = _specs[metric] = {}
    spec = per_format.get((openmetrics, escaping))
    if spec is None:
        spec = per_format[openmetrics, escaping] = _Spec(metric, openmetrics, escaping)
    return spec


def _streamable(collector: object) -> bool:
    """Tell whether the fast path may read *collector*'s children directly."""
    cls = type(collector)
    if not isinstance(collector, MetricWrapperBase):
        return False
    own = vars(collector)
    return all(
        getattr(cls, method) is getattr(MetricWrapperBase, method) and method not in own
        for method in ("collect", "_samples", "_multi_samples", "_get_metric")
    )


def _render_families(families: Iterable[Metric], openmetrics: bool, escaping: str) -> str:
    """Render *families* with prometheus_client's own formatter."""
    if openmetrics:
        data = _generate_openmetrics(_Families(families), escaping=escaping)
        return data[: -len(_OM_EOF)].decode()
    return generate_text(_Families(families), escaping=escaping).decode()


def _restricted(
    family: Metric, names: frozenset[str] | None, created: bool = True
) -> Metric | None:
    if names is None and created:
        return family
    dropped = family.name + "_created" if not created and family.type in _WITH_CREATED else None
    samples = [
        sample
        for sample in family.samples
        if (names is None or sample.name in names) and sample.name != dropped
    ]
    if names is None and len(samples) == len(family.samples):
        return family
    if not samples and names is not None:
        return None
    restricted = Metric(family.name, family.documentation, family.type, family.unit)
    restricted.samples = samples
    return restricted


def _render_collector(
    collector: Any,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> str:
    """Render a collector the fast path does not read, family by family."""
    families = [
        restricted
        for family in collector.collect()
        if (restricted := _restricted(family, names, created)) is not None
    ]
    return _render_families(families, openmetrics, escaping) if families else ""


def _render_metric(  # noqa: C901, PLR0912, PLR0915 -- one loop, kept flat for speed
    metric: Any,
    output: _Output,
    pace: Callable[[], None],
    *,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> None:
    """Stream one prometheus_client metric (a family) into *output*."""
    spec = _spec(metric, openmetrics, escaping)
    children: dict[tuple[str, ...], Any]
    if metric._is_parent():
        if spec.repeated_label:  # one value wins, in prometheus_client's dict
            raise _Unusual
        with metric._lock:
            children = metric._metrics.copy()
        order, heads, sorted_names = spec.order, spec.label_heads, spec.sorted_names
        taken = spec.label_set
    else:  # unlabelled, or one child registered on its own: its samples carry no labels
        children = {(): metric}
        order, heads, sorted_names, taken = [], [], [], frozenset[str]()
    lines: list[str] = []
    moved: dict[str, list[str]] = {}
    line_of = spec.line
    count = 0
    for labelvalues, child in children.items():
        count += 1
        if count % _PACE_EVERY == 0:
            pace()
        series = [heads[n] + escape_value(labelvalues[i]) + '"' for n, i in enumerate(order)]
        labels = ",".join(series)
        for sample in child._samples():
            if not created and sample[0] == "_created":
                continue
            line = line_of(sample[0])
            if names is not None and line.name not in names:
                continue
            # Samples may be plain tuples: name, labels, value, timestamp, exemplar[, native].
            if (
                sample[2] is None
                or sample[3] is not None
                or (len(sample) > _NATIVE and sample[_NATIVE] is not None)
            ):
                raise _Unusual
            extra: dict[str, str] = sample[1]
            if extra:
                if not taken.isdisjoint(extra):  # the sample's value wins, in a dict
                    raise _Unusual
                merged = series.copy()
                for name, value in sorted(extra.items()):
                    at = bisect.bisect(sorted_names, name) + len(merged) - len(series)
                    merged.insert(at, spec.label_head(name) + escape_value(value) + '"')
                text = f"{line.open}{','.join(merged)}{line.close}{go_float(sample[2])}"
            elif labels:
                text = f"{line.open}{labels}{line.close}{go_float(sample[2])}"
            else:
                text = f"{line.bare}{go_float(sample[2])}"
            if openmetrics and sample[4]:
                text += _compose_exemplar(spec.family, _Named(line.name), sample[4])
            if line.moved:
                moved.setdefault(sample[0], []).append(text + "\n")
            else:
                lines.append(text + "\n")
    if names is not None and not lines and not moved:
        return
    output.lines.append(spec.header)
    _extend(output, lines)
    for suffix in sorted(moved):
        output.lines.append(spec.moved_header(suffix))
        _extend(output, moved[suffix])


def _extend(output: _Output, lines: list[str]) -> None:
    output.flush()
    for start in range(0, len(lines), _CHUNK_LINES):
        output.chunks.append("".join(lines[start : start + _CHUNK_LINES]).encode())


class _Named:
    """What the exemplar formatter reads of a sample: its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _collectors(registry: Any, names: frozenset[str] | None) -> tuple[Metric | None, list[Any]]:
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


def _registry_like(registry: object) -> bool:
    """Tell whether *registry* collects exactly as a CollectorRegistry does."""
    return (
        isinstance(registry, CollectorRegistry)
        and type(registry).collect is CollectorRegistry.collect
        and "collect" not in vars(registry)
    )


def _render_fast(
    registry: Any,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> bytes:
    output = _Output()
    pace = _Pacer(WORK_SECONDS, PAUSE_SECONDS)
    target_info, collectors = _collectors(registry, names)
    if target_info is not None:
        output.lines.append(_render_families([target_info], openmetrics, escaping))
    for collector in collectors:
        pace()
        if _streamable(collector):
            try:  # writes to output only once the whole family is read
                _render_metric(
                    collector,
                    output,
                    pace,
                    openmetrics=openmetrics,
                    escaping=escaping,
                    names=names,
                    created=created,
                )
                continue
            except _Unusual:
                pass
        output.lines.append(_render_collector(collector, openmetrics, escaping, names, created))
    if openmetrics:
        output.lines.append(_OM_EOF.decode())
    output.flush()
    return b"".join(output.chunks)


def render_slow(
    registry: Any,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> bytes:
    """Render with prometheus_client's formatters alone."""
    source = (
        registry if names is None and created else _Families(_filtered(registry, names, created))
    )
    if openmetrics:
        return _generate_openmetrics(source, escaping=escaping)
    return generate_text(source, escaping=escaping)


def _filtered(registry: Any, names: frozenset[str] | None, created: bool) -> Iterator[Metric]:
    if names is not None and _registry_like(registry):
        target_info, collectors = _collectors(registry, names)
        if target_info is not None:
            yield target_info
        families: Iterable[Metric] = (f for c in collectors for f in c.collect())
    else:
        families = registry.collect()
    for family in families:
        restricted = _restricted(family, names, created)
        if restricted is not None:
            yield restricted


def render(
    registry: Any,
    *,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None = None,
    created: bool = True,
) -> bytes:
    """Render *registry* as prometheus_client would, in text or OpenMetrics.

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
    if _registry_like(registry) and _fast_path_allowed():
        return _render_fast(registry, openmetrics, escaping, names, created)
    return render_slow(registry, openmetrics, escaping, names, created)


def _fast_path_allowed() -> bool:
    """Tell whether metric objects may be streamed: not in multiprocess mode, and checked.

    In prometheus_client's multiprocess mode every metric created writes to the
    shared files, the self-check's probe metrics included; and the metrics an
    application serves there are read by ``MultiProcessCollector`` anyway.
    """
    return values.ValueClass is values.MutexValue and _agrees_with_prometheus_client()


@functools.cache
def _agrees_with_prometheus_client() -> bool:
    """Check, once, that the fast path writes what prometheus_client writes."""
    registry = _probe_registry()
    names = frozenset({"probe_events_total", "probe_latency_bucket", "probe_state"})
    try:
        for openmetrics in (False, True):
            for escaping in (om.UNDERSCORES, om.ALLOWUTF8, om.DOTS, om.VALUES):
                for only in (None, names):
                    fast = _render_fast(registry, openmetrics, escaping, only)
                    if fast != render_slow(registry, openmetrics, escaping, only):
                        msg = f"{'OpenMetrics' if openmetrics else 'text'}, {escaping}"
                        raise _DisagreementError(msg)  # noqa: TRY301 -- logged with the others
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
    """The fast path and prometheus_client wrote different bytes."""


def _client_version() -> str:
    from importlib.metadata import version  # noqa: PLC0415 -- only on a rare path

    return version("prometheus-client")


def _probe_registry() -> CollectorRegistry:
    """Build a registry with every kind of sample the fast path formats."""
    registry = CollectorRegistry()
    tricky = ('quote " back \\ newline \n', "ünïcode ✓", "")
    counter = Counter(
        "probe_events", 'Help with "quotes",\\ and \n.', ["b", "a"], registry=registry
    )
    for value in tricky:
        counter.labels(value, "x").inc(1.5)
    counter.labels("ex", "y").inc(2, exemplar={"trace_id": 'a"b'})
    Counter("probe_plain", "No labels.", unit="bytes", registry=registry).inc(1e7)
    gauge = Gauge("probe_gauge", "Gauge.", ["z"], registry=registry)
    for number, level in enumerate((-0.0, 1e-7, 123456789.0, float("inf"), float("nan"), -1e300)):
        gauge.labels(str(number)).set(level)
    Gauge("probe_function", "Function.", registry=registry).set_function(lambda: 3)
    Gauge("probe_empty", "Labelled, no children.", ["k"], registry=registry)
    summary = Summary("probe_summary", "Summary.", ["m", "q"], registry=registry)
    summary.labels("a", "b").observe(0.25)
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
