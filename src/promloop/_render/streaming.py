"""Streaming a registry's metrics straight from prometheus_client's metric objects.

One function per metric kind (gauges, counters, summaries, histograms) reads
each child's values from the attributes its ``_child_samples()`` reads, and
writes each line as the child's cached head (see :mod:`.families`) and the
formatted value; everything else prometheus_client's own metric classes
make (Info, Enum, subclasses that only change how a child's samples are
made, a gauge child with ``set_function()``) goes through the child's
``_samples()``, as prometheus_client's ``collect()`` does, one child at a
time.  Whatever this module does not format (timestamps, label names that
collide, a family changed without its lock) raises :class:`Unusual`, and
prometheus_client renders that family.
"""

# This module reads prometheus_client's internals on purpose (see the package docstring).
# ruff: noqa: SLF001
# pyright: reportPrivateUsage=false

from __future__ import annotations

import gc

from itertools import islice
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client import metrics as client_metrics
from prometheus_client.metrics import MetricWrapperBase

from .collectors import collectors
from .fallback import OM_EOF, WITH_CREATED, render_collector, render_families
from .families import HEADS_ATTRIBUTE, FamilyFormat, family_format, make_room
from .formatting import INF, REPR_LIMIT, Named, compose_exemplar, go_float
from .pacing import Pacer
from .pieces import Pieces


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import TypeAlias

    _Pace: TypeAlias = Callable[[], None]
    _Writer: TypeAlias = Callable[["_Job", Sequence[tuple[str, ...]], Sequence[Any], _Pace], None]


_BATCH_LINES: Final = 128
"""Lines written between two looks at the clock (a few tens of microseconds)."""

_CHUNK_LINES: Final = 2048
"""Lines joined and encoded at a time, so no single C call holds the GIL long.

About 70 kB of a gauge's lines, or 150 kB of a histogram's: each becomes a
piece of the body (see :mod:`.pieces`).
"""

_LIST_SLICE: Final = 1024
"""Children listed (or let go) at a time from a large family, between two looks at the clock.

Listing a child touches it (its reference count).  Some 60 µs for 1024
children usually; but on a virtual machine, memory left untouched for a few
seconds costs about a microsecond per object at its next touch, and 8192
children then held the GIL for 10 to 20 ms (``benchmarks/bench_scrape.py``,
the first scrape after ten idle seconds).
"""

_NATIVE: Final = 5
"""Where a sample holds its native histogram, in prometheus_client versions that have one."""


class Unusual(Exception):  # noqa: N818 -- a signal, not an error
    """A family the streaming path does not format: prometheus_client renders it."""


class _Lines:
    """Lines in, UTF-8 chunks out, a bounded number of lines at a time."""

    __slots__ = ("chunks", "lines")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lines: list[str] = []

    def empty(self) -> bool:
        return not (self.chunks or self.lines)

    def flush(self) -> None:
        if self.lines:
            self.lines.append("")  # so that the joined text ends with a newline
            self.chunks.append("\n".join(self.lines).encode())
            self.lines.clear()


class _FamilyOutput:
    """One family's lines: its own, and the text format's moved ``_created`` ones."""

    def __init__(self) -> None:
        self.main = _Lines()
        self.moved: dict[str, _Lines] = {}

    def moved_lines(self, suffix: str) -> _Lines:
        lines = self.moved.get(suffix)
        if lines is None:
            lines = self.moved[suffix] = _Lines()
        return lines

    def batches(
        self,
        labelvalues: Sequence[tuple[str, ...]],
        children: Sequence[Any],
        lines_per_child: int,
        pace: Callable[[], None],
    ) -> Iterator[Iterator[tuple[tuple[str, ...], Any]]]:
        """Yield the children in batches, pausing and encoding between two."""
        size = max(1, _BATCH_LINES // lines_per_child)
        pairs = zip(labelvalues, children, strict=True)
        for _ in range(0, len(children), size):
            pace()
            yield islice(pairs, size)
            if len(self.main.lines) >= _CHUNK_LINES:
                self.main.flush()
            for moved in self.moved.values():
                if len(moved.lines) >= _CHUNK_LINES:
                    moved.flush()

    def empty(self) -> bool:
        return self.main.empty() and all(moved.empty() for moved in self.moved.values())

    def write(self, family: FamilyFormat, output: Pieces) -> None:
        """Append the family's header and lines to *output*."""
        output.add(family.header.encode())
        self.main.flush()
        for chunk in self.main.chunks:
            output.add(chunk)
        for suffix in sorted(self.moved):
            moved = self.moved[suffix]
            if moved.empty():
                continue
            output.add(family.moved_header(suffix).encode())
            moved.flush()
            for chunk in moved.chunks:
                output.add(chunk)


class _Job:
    """One family's render: what it writes, and what it needs to know."""

    def __init__(
        self,
        family: FamilyFormat,
        names: frozenset[str] | None,
        created: bool,
        dropped: str | None,
    ) -> None:
        self.family = family
        self.names = names
        self.created = created
        self.dropped = dropped
        self.out = _FamilyOutput()
        self.created_lines = (
            self.out.main.lines if family.openmetrics else self.out.moved_lines("_created").lines
        )


def _generic_child(job: _Job, labelvalues: tuple[str, ...], child: Any) -> None:
    """Render one child through its ``_samples()``, as prometheus_client's ``collect()`` does."""
    family, names, out = job.family, job.names, job.out
    parts = family.label_parts(labelvalues)
    labels = ",".join(parts)
    taken = family.label_set if labelvalues else frozenset[str]()
    for sample in child._samples():
        suffix: str = sample[0]
        if suffix == job.dropped:
            continue
        line = family.line(suffix)
        if names is not None and line.name not in names:
            continue
        # Samples may be plain tuples: name, labels, value, timestamp, exemplar[, native].
        if (
            sample[2] is None
            or sample[3] is not None
            or (len(sample) > _NATIVE and sample[_NATIVE] is not None)
        ):
            raise Unusual
        extra: dict[str, str] = sample[1]
        if extra and not taken.isdisjoint(extra):  # the sample's value wins, in a dict
            raise Unusual
        text = line.head(family.merged(parts, extra) if extra else labels) + go_float(sample[2])
        if family.openmetrics and sample[4]:
            text += compose_exemplar(family.family, Named(line.name), sample[4])
        (out.moved_lines(suffix) if line.moved else out.main).lines.append(text)


def _write_generic(
    job: _Job, labelvalues: Sequence[tuple[str, ...]], children: Sequence[Any], pace: _Pace
) -> None:
    for batch in job.out.batches(labelvalues, children, 4, pace):
        for key, child in batch:
            _generic_child(job, key, child)


def _write_gauges(
    job: _Job, labelvalues: Sequence[tuple[str, ...]], children: Sequence[Any], pace: _Pace
) -> None:
    family = job.family
    layout = family.layout(("",))
    samples: tuple[tuple[str, dict[str, str]], ...] = (("", {}),)
    append = job.out.main.lines.append
    own = Gauge._child_samples
    for batch in job.out.batches(labelvalues, children, 1, pace):
        for key, child in batch:
            if child._child_samples.__func__ is not own:  # set_function()
                _generic_child(job, key, child)
                continue
            entry = getattr(child, HEADS_ATTRIBUTE, None)
            if entry is None or entry[0] is not layout or entry[1] is not key:
                entry = family.remember_heads(child, layout, key, samples)
            value = child._value._value
            if type(value) is float and -INF < value < REPR_LIMIT:
                append(entry[2] + repr(value))
            else:  # an int, or a number that Go writes otherwise
                append(entry[2] + go_float(value))


def _write_counters(
    job: _Job, labelvalues: Sequence[tuple[str, ...]], children: Sequence[Any], pace: _Pace
) -> None:
    family, created = job.family, job.created
    remember_created = family.remember_created
    layout = family.layout(("_total", "_created"))
    samples: tuple[tuple[str, dict[str, str]], ...] = (("_total", {}), ("_created", {}))
    exemplars = family.openmetrics
    total = Named(family.line("_total").name)
    append, append_created = job.out.main.lines.append, job.created_lines.append
    own = Counter._child_samples
    for batch in job.out.batches(labelvalues, children, 2, pace):
        for key, child in batch:
            if child._child_samples.__func__ is not own:
                _generic_child(job, key, child)
                continue
            entry = getattr(child, HEADS_ATTRIBUTE, None)
            if entry is None or entry[0] is not layout or entry[1] is not key:
                entry = family.remember_heads(child, layout, key, samples)
            counted = child._value
            value = counted._value
            if type(value) is float and -INF < value < REPR_LIMIT:
                text = entry[2] + repr(value)
            else:
                text = entry[2] + go_float(value)
            if exemplars and (exemplar := counted._exemplar):
                text += compose_exemplar(family.family, total, exemplar)
            append(text)
            if created:
                if entry[-2] is not child._created:
                    entry = remember_created(child, entry, child._created)
                append_created(entry[-1])


def _write_summaries(
    job: _Job, labelvalues: Sequence[tuple[str, ...]], children: Sequence[Any], pace: _Pace
) -> None:
    family, created = job.family, job.created
    remember_created = family.remember_created
    layout = family.layout(("_count", "_sum", "_created"))
    samples: tuple[tuple[str, dict[str, str]], ...] = (
        ("_count", {}),
        ("_sum", {}),
        ("_created", {}),
    )
    append, append_created = job.out.main.lines.append, job.created_lines.append
    own = Summary._child_samples
    for batch in job.out.batches(labelvalues, children, 3, pace):
        for key, child in batch:
            if child._child_samples.__func__ is not own:
                _generic_child(job, key, child)
                continue
            entry = getattr(child, HEADS_ATTRIBUTE, None)
            if entry is None or entry[0] is not layout or entry[1] is not key:
                entry = family.remember_heads(child, layout, key, samples)
            append(entry[2] + go_float(child._count._value))
            append(entry[3] + go_float(child._sum._value))
            if created:
                if entry[-2] is not child._created:
                    entry = remember_created(child, entry, child._created)
                append_created(entry[-1])


def _write_histograms(  # noqa: C901 -- one loop, kept flat for speed
    job: _Job, labelvalues: Sequence[tuple[str, ...]], children: Sequence[Any], pace: _Pace
) -> None:
    family, created = job.family, job.created
    remember_created = family.remember_created
    layout = family.layout(("_bucket", "_count", "_sum", "_created"), ("le",))
    exemplars = family.openmetrics
    bucket = Named(family.line("_bucket").name)
    append, append_created = job.out.main.lines.append, job.created_lines.append
    lines_per_child = len(children[0]._upper_bounds) + 3 if children else 1
    own = Histogram._child_samples
    for batch in job.out.batches(labelvalues, children, lines_per_child, pace):
        for key, child in batch:
            if child._child_samples.__func__ is not own:
                _generic_child(job, key, child)
                continue
            bounds = child._upper_bounds
            entry = getattr(child, HEADS_ATTRIBUTE, None)
            if entry is None or entry[0] is not layout or entry[1] is not key:
                samples = [("_bucket", {"le": go_float(bound)}) for bound in bounds]
                samples += [("_count", {}), ("_sum", {}), ("_created", {})]
                entry = family.remember_heads(child, layout, key, samples)
            at = 2
            cumulative = 0.0
            for counted in child._buckets:
                cumulative += counted._value
                if -INF < cumulative < REPR_LIMIT:
                    text = entry[at] + repr(cumulative)
                else:
                    text = entry[at] + go_float(cumulative)
                if exemplars and (exemplar := counted._exemplar):
                    text += compose_exemplar(family.family, bucket, exemplar)
                append(text)
                at += 1
            append(entry[at] + go_float(cumulative))
            if bounds[0] >= 0:
                append(entry[at + 1] + go_float(child._sum._value))
            if created:
                if entry[-2] is not child._created:
                    entry = remember_created(child, entry, child._created)
                append_created(entry[-1])


_KINDS: Final[tuple[tuple[type[Any], _Writer, tuple[str, ...]], ...]] = (
    (Gauge, _write_gauges, ("",)),
    (Counter, _write_counters, ("_total", "_created")),
    (Summary, _write_summaries, ("_count", "_sum", "_created")),
    (Histogram, _write_histograms, ("_bucket", "_count", "_sum", "_created")),
)
"""prometheus_client's metric kinds whose children are read directly, and their suffixes."""


def _kind(metric: object) -> tuple[_Writer, tuple[str, ...]] | None:
    """Return the writer and suffixes for *metric*'s kind, or None if it makes its own samples."""
    cls: Any = type(metric)
    for base, writer, suffixes in _KINDS:
        if isinstance(metric, base):
            if cls._child_samples is base._child_samples and cls._metric_init is base._metric_init:
                make_room(cls)
                return writer, suffixes
            return None
    return None


for _kind_of in _KINDS:  # before anything else adds an attribute, promloop's self-check too
    make_room(_kind_of[0])


def streamable(collector: object) -> bool:
    """Tell whether the streaming path may read *collector*'s children directly."""
    cls = type(collector)
    if not isinstance(collector, MetricWrapperBase):
        return False
    own = vars(collector)
    return all(
        getattr(cls, method) is getattr(MetricWrapperBase, method) and method not in own
        for method in ("collect", "_samples", "_multi_samples", "_get_metric")
    )


def _children(metric: Any, pace: Callable[[], None]) -> tuple[list[Any], list[Any]]:
    """Return the label values and children of *metric*, as its lock protects them.

    prometheus_client copies the dictionary under the metric's lock.  A
    million children take tens of milliseconds to copy, too long to keep the
    GIL: a large family is listed a slice at a time, pausing between two,
    still holding the lock, so that no child is added or removed meanwhile.
    Only a thread that calls ``labels()``, ``remove()`` or ``clear()`` on
    this very family waits, at most as long as the listing takes (less than
    a tenth of a second for a million children, pauses included).
    """
    if not metric._is_parent():  # unlabelled, or one child registered on its own
        return [()], [metric]
    if len(metric._metrics) <= _LIST_SLICE:
        with metric._lock:
            return list(metric._metrics), list(metric._metrics.values())
    keys, values = _old_lists()  # outside the lock: a collection may run finalizers
    with metric._lock:
        children: dict[tuple[str, ...], Any] = metric._metrics
        key_iterator, child_iterator = iter(children), iter(children.values())
        try:
            for _ in range(0, len(children), _LIST_SLICE):
                keys.extend(islice(key_iterator, _LIST_SLICE))
                values.extend(islice(child_iterator, _LIST_SLICE))
                pace()
        except RuntimeError:  # changed without its lock: prometheus_client copies it
            raise Unusual from None
    return keys, values


def _old_lists() -> tuple[list[Any], list[Any]]:
    """Return two new, empty lists, already in the garbage collector's oldest generation.

    A young collection (every few hundred allocations, in whichever thread
    makes them) walks every item of every young list, and a list of a
    million children costs it tens of milliseconds with the GIL held.  Lists
    moved to the oldest generation while still empty are never walked by one.
    """
    lists: tuple[list[Any], list[Any]] = ([], [])
    if gc.isenabled():
        gc.collect(1)  # the young generations, and these lists with them
    return lists


def _render_metric(
    metric: Any,
    output: Pieces,
    pace: Callable[[], None],
    *,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool,
) -> None:
    """Stream one prometheus_client metric (a family) into *output*."""
    family = family_format(metric, openmetrics, escaping)
    if metric._is_parent() and family.repeated_label:  # one value wins, in prometheus_client
        raise Unusual
    kind = _kind(metric)
    dropped = "_created" if not created and metric._type in WITH_CREATED else None
    writer: _Writer = _write_generic
    if kind is not None:
        suffixes = kind[1]
        if dropped or not client_metrics._use_created:
            suffixes = tuple(suffix for suffix in suffixes if suffix != "_created")
        written = {family.line(suffix).name for suffix in suffixes}
        if names is not None and written.isdisjoint(names):
            return
        if names is None or written <= names:
            writer = kind[0]
    job = _Job(
        family,
        names if writer is _write_generic else None,
        created=dropped is None and client_metrics._use_created,
        dropped=dropped,
    )
    labelvalues, children = _children(metric, pace)
    try:
        writer(job, labelvalues, children, pace)
    except AttributeError:  # not the attributes prometheus_client's own classes have
        raise Unusual from None
    finally:
        _release(labelvalues, pace)
        _release(children, pace)
    if names is not None and job.out.empty():
        return
    job.out.write(family, output)


def _release(listed: list[Any], pace: Callable[[], None]) -> None:
    """Empty a family's list a slice at a time, pausing between two.

    Dropping a reference to each of a million children touches a million
    objects scattered over the heap: tens of milliseconds in one C call, had
    the list simply been let go.
    """
    while len(listed) > _LIST_SLICE:
        del listed[-_LIST_SLICE:]
        pace()
    listed.clear()


def render_fast(
    registry: Any,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> list[bytes]:
    """Render a CollectorRegistry, streaming prometheus_client's own metrics, in pieces."""
    output = Pieces()
    pace = Pacer()
    target_info, chosen = collectors(registry, names)
    if target_info is not None:
        output.add(render_families([target_info], openmetrics, escaping).encode())
    for collector in chosen:
        pace()
        if streamable(collector):
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
            except Unusual:
                pass
        output.add(render_collector(collector, openmetrics, escaping, names, created).encode())
    if openmetrics:
        output.add(OM_EOF)
    return output.done()
