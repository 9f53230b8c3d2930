"""Merging the expositions of many worker processes into one: the fan-in's engine.

A fan-in scrapes every worker of a fleet in OpenMetrics 1.0.0 (``allow-utf-8``
escaping) and hands the answers to :meth:`Merger.merge`; the
:class:`Merged` result writes the exposition a scraper asked for.  Nothing
here knows about event loops or HTTP: a merge runs in a worker thread.

Merging rules
-------------

Reading.  A worker's answer is used whole or not at all.  An answer the
merger cannot use -- not UTF-8, no ``# EOF`` at its end (cut short), a line
that is not a sample, a sample that does not belong to its family, a value
that is not a number -- leaves that worker out of the merge, as does a failed
scrape; the result names these workers in :attr:`Merged.failed`, with the
reason in :attr:`Merged.errors`.  The merger reads what prometheus_client
writes directly and fast; other valid OpenMetrics (a family without ``TYPE``,
samples without metadata, ...) is first rewritten by prometheus_client's own
parser and writer, for answers up to 1 MiB.  It checks syntax, names and
values; it trusts that a worker's samples agree with one another (histogram
buckets that add up, one line per series), as prometheus_client guarantees.

Families.  Each family is written once, with the ``HELP``, ``TYPE`` and
``UNIT`` of the first worker that has it, workers taken in the order the
fan-in lists them (slot order); families come in the order in which they first
appear.  A family whose type differs from the first worker's is left out of
the other workers, logged once and counted; so is a family whose sample names
clash with another family's (a counter ``foo`` writes ``foo_total``, which a
gauge named ``foo_total`` would write too).  The fan-in's own families win
over workers' families of the same names, and come last.

Per-worker mode (the default).  Each worker's file_sd labels are added to
every one of its samples (not to exemplars); a label the sample already has is
renamed ``exported_<name>`` (``exported_exported_<name>`` if that is taken
too), as Prometheus does with ``honor_labels: false``.  Labels whose names
start with ``__`` are Prometheus's own and are not added.  A worker whose
labels are an earlier worker's would duplicate its series: it is left out.
Values, exemplars and timestamps are copied as the worker wrote them; a
family's samples come worker after worker, so each series keeps its samples
together, as OpenMetrics requires.

Aggregate mode.  No worker labels: the samples of all workers are combined
series by series (same name and labels):

* counters, and histograms' and summaries' ``_bucket``, ``_count`` and
  ``_sum``: summed;
* ``_created``: the earliest;
* summaries' quantiles: dropped (quantiles of different workers do not add
  up; their ``_count`` and ``_sum`` do);
* gauge histograms: summed over the live workers;
* gauges and ``unknown`` families, by the *gauges* rule: ``"sum"`` (the
  default), ``"max"`` or ``"min"`` over the live workers (NaN only if every
  worker says NaN), or ``"per-worker"``: each worker's gauges keep its labels,
  as in per-worker mode;
* infos and statesets: one series per label set, 1 if any live worker has it
  (with ``"per-worker"``: per worker, like gauges);
* exemplars: the first worker's that has one for the series; timestamps are
  dropped (a sum is as of the scrape).

Histograms whose buckets differ between workers (during a deployment that
changed them) are merged over the union of their bounds, each worker counting
at a bound it lacks what it counts at its next lower one.  Sums are exact
(:func:`math.fsum`): they do not depend on the order of the workers.

Counters never go backwards (aggregate mode).  A worker that is no longer
listed has departed: the last values of its counter-like samples (everything
summed above but gauge histograms) are carried forward for the life of the
merger, so sums never decrease and ``rate()`` sees no false reset; its
gauges, infos and statesets are dropped.  A listed worker whose scrape failed
counts with its last known counter values, frozen, rather than vanishing.  A
new process in a reused slot is a new target: its counters start at 0, and
the old process's are carried.  (A target identity is never reused by a new
process: the fan-in's names the process that wrote the target file, and its
port.)  A worker that was missing
from one listing only -- taken as it started, in a concurrent scrape -- is not
counted twice, and an answer older than one already merged never lowers what
is carried.

Writing.  The text format (0.0.4 and 1.0.0) and OpenMetrics 1.0.0 are written
as prometheus_client writes one registry holding the merged samples: the
same ``HELP``, ``TYPE`` and ``UNIT`` lines, the text format's counters as
``x_total`` and ``_created`` in gauge families of their own, OpenMetrics with
exemplars and one ``# EOF``.  Names are escaped as the scraper asked
(``allow-utf-8``, ``underscores``, ``dots``, ``values``), a sample's name being
its family's escaped name followed by its suffix (``_bucket``, ``_total``, ...),
as Prometheus's own writer does: prometheus_client escapes the whole sample
name, which under ``dots`` (and ``values``, for names that need it) writes
samples that do not belong to their family.  ``name[]`` keeps the samples
named, and ``created=False`` drops ``_created``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading

from typing import TYPE_CHECKING, Any, Final

from ._aggregation import GAUGE_RULES, Carry, Gathered
from ._merged_writer import Family, Writer, labelled
from ._openmetrics_reader import (
    ALLOWUTF8,
    EOF,
    Caches,
    Exposition,
    Unreadable,
    read,
)
from ._render import render
from ._render.pacing import Pacer
from ._render.pieces import Pieces


if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence


_log = logging.getLogger("promloop")

_ESCAPINGS: Final = frozenset({ALLOWUTF8, "underscores", "dots", "values"})
_SLICE_CHARACTERS: Final = 1 << 18
"""Text encoded at a time: ``str.join`` and ``str.encode`` keep the GIL from the
event loop for as long as they take (about a millisecond here)."""
_CONFLICTS_LOGGED: Final = 4096
"""Conflicts remembered as logged: there may be many, coming and going."""

Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Scrape:
    """One target's answer to one fan-in scrape."""

    target: str
    """Identity of the process behind the target: a new process, a new identity."""
    labels: Mapping[str, str]
    """The target's file_sd labels, e.g. ``{"worker": "0"}``."""
    body: bytes | None
    """Its OpenMetrics 1.0.0 answer (``allow-utf-8`` escaping); None if the scrape failed."""


class Merger:
    """Merge workers' expositions, by the merging rules above.

    One per fan-in: it keeps state across scrapes (departed workers'
    counters, conflicts already logged).  Thread-safe: concurrent scrapes may
    merge in parallel threads.

    Args:
        aggregate: Combine the workers' series instead of labelling each
            worker's.
        gauges: In aggregate mode, how gauges combine: ``"sum"``, ``"max"``,
            ``"min"`` or ``"per-worker"``.
        on_conflict: Called with a family's name each time a worker's family
            is left out because it conflicts with another's (to count them);
            the merger logs each conflict once itself.

    Raises:
        ValueError: *gauges* is not one of the rules above.
    """

    def __init__(
        self,
        *,
        aggregate: bool = False,
        gauges: str = "sum",
        on_conflict: Callable[[str], None] | None = None,
    ) -> None:
        if gauges not in GAUGE_RULES:
            msg = f"gauges must be one of {', '.join(map(repr, GAUGE_RULES))}, not {gauges!r}"
            raise ValueError(msg)
        self.aggregate = aggregate
        self.gauges = gauges
        self._on_conflict = on_conflict
        self._caches = Caches()
        self._lock = threading.Lock()
        self._carry = Carry(gauges)
        self._warn_once = functools.lru_cache(maxsize=_CONFLICTS_LOGGED)(_warn_conflict)

    def merge(self, scrapes: Sequence[Scrape], *, names: frozenset[str] | None = None) -> Merged:
        """Merge one scrape of every target listed in the directory.

        Args:
            scrapes: Every target listed, in slot order, failed scrapes
                included; a target seen before and absent now has departed.
            names: The sample names (``name[]``) the workers were asked for,
                if not all: in aggregate mode, the samples a worker was not
                asked for keep their last known values, for when it departs.
        """
        failed: dict[str, str] = {}
        answers: dict[str, tuple[Labels, Exposition]] = {}
        owners: dict[Labels, str] = {}
        labelled_ = not self.aggregate or self.gauges == "per-worker"
        pace = Pacer()
        for scrape in scrapes:
            pace()
            labels = _target_labels(scrape.labels)
            earlier = owners.setdefault(labels, scrape.target) if labelled_ else scrape.target
            if scrape.body is None:
                failed[scrape.target] = "scrape failed"
            elif earlier != scrape.target:
                failed[scrape.target] = f"same labels as {earlier}"
            else:
                try:
                    answers[scrape.target] = (labels, read(scrape.body, self._caches))
                except Unreadable as error:
                    failed[scrape.target] = str(error)
        gathered = self._gather(answers.values())
        if self.aggregate:
            listed = [scrape.target for scrape in scrapes]
            expositions = {target: exposition for target, (_, exposition) in answers.items()}
            with self._lock:
                families = self._carry.aggregate(
                    gathered, expositions, listed, failed, whole=names is None
                )
        else:
            families = [
                Family(header, [labelled(block, labels) for labels, block in blocks])
                for header, blocks in gathered.values()
            ]
        series: dict[str, int] = {}
        for _, exposition in answers.values():
            for name, block in exposition.blocks.items():
                series[name] = max(series.get(name, 0), len(block.keys))
        self._caches.trim(series)
        return Merged(families, failed)

    def _gather(self, answers: Collection[tuple[Labels, Exposition]]) -> dict[str, Gathered]:
        """Group the workers' blocks by family, leaving conflicting ones out."""
        families: dict[str, Gathered] = {}
        owners: dict[str, str] = {}  # sample name -> the family that writes it
        for labels, exposition in answers:
            for name, block in exposition.blocks.items():
                header = block.header
                family = families.get(name)
                if family is None:
                    clash = next((owners[n] for n in header.sample_names() if n in owners), None)
                    if clash is not None:
                        self._conflict(name, header.kind, f"clashes with {clash}")
                        continue
                    family = families[name] = (header, [])
                    owners.update(dict.fromkeys(header.sample_names(), name))
                elif family[0].kind != header.kind:
                    self._conflict(name, header.kind, f"is a {family[0].kind} in an earlier worker")
                    continue
                family[1].append((labels, block))
        return families

    def _conflict(self, name: str, kind: str, why: str) -> None:
        if self._on_conflict is not None:
            self._on_conflict(name)
        self._warn_once(name, kind, why)


def _warn_conflict(name: str, kind: str, why: str) -> None:
    _log.warning("Fan-in: left out a worker's %s %s, which %s.", kind, name, why)


def _target_labels(labels: Mapping[str, str]) -> Labels:
    """Return the labels to add to a target's samples, sorted by name."""
    return tuple(sorted((n, str(v)) for n, v in labels.items() if not n.startswith("__")))


class Merged:
    """The merged metrics of one scrape of the fleet, ready to be written in any format."""

    def __init__(self, families: list[Family], failed: Mapping[str, str]) -> None:
        self._families = families
        self.errors: Mapping[str, str] = dict(failed)
        """Why each target in :attr:`failed` is left out."""
        self.failed: frozenset[str] = frozenset(failed)
        """Targets whose samples are not in the result: their scrape failed, their answer
        is unreadable, or (labelling workers) their labels are an earlier target's."""

    def expose(
        self,
        *,
        openmetrics: bool,
        escaping: str,
        names: frozenset[str] | None = None,
        created: bool = True,
        extra: Collection[Any] = (),
    ) -> bytes:
        """Write the merged metrics as :meth:`expose_pieces` does, joined."""
        return b"".join(
            self.expose_pieces(
                openmetrics=openmetrics,
                escaping=escaping,
                names=names,
                created=created,
                extra=extra,
            )
        )

    def expose_pieces(
        self,
        *,
        openmetrics: bool,
        escaping: str,
        names: frozenset[str] | None = None,
        created: bool = True,
        extra: Collection[Any] = (),
    ) -> list[bytes]:
        """Write the merged metrics as prometheus_client would write them, in pieces.

        Args:
            openmetrics: OpenMetrics 1.0.0 rather than the text format.
            escaping: How names outside the legacy character set are written:
                ``"allow-utf-8"``, ``"underscores"``, ``"dots"`` or ``"values"``.
            names: Write only the samples with these names (``name[]``).
            created: Write ``_created`` samples.
            extra: Registries (anything with ``collect()``) whose families
                are written too, last: the fan-in's own metrics.  Workers'
                families whose names clash with theirs are left out.

        Raises:
            ValueError: Unknown *escaping*, or *extra* metrics that OpenMetrics
                does not allow.
        """
        if escaping not in _ESCAPINGS:
            msg = f"unknown escaping scheme {escaping!r}"
            raise ValueError(msg)
        writer = Writer(openmetrics=openmetrics, escaping=escaping)
        own = [family for registry in extra for family in _own_families(registry)]
        taken = frozenset[str]().union(*(family.header.sample_names() for family in own))
        pace = Pacer()
        chunks: list[str] = []
        parts = Pieces()
        for family in self._families:
            if taken.isdisjoint(family.header.sample_names()):
                _write(writer, family, chunks, names, created=created)
                _encode(chunks, parts, pace)
        for family in own:
            _write(writer, family, chunks, names, created=created)
        if openmetrics:
            chunks.append(EOF)
        _encode(chunks, parts, pace)
        return parts.done()


def _encode(chunks: list[str], parts: Pieces, pace: Callable[[], None]) -> None:
    """Move *chunks* into *parts*, encoded a slice at a time, pausing between slices."""
    group: list[str] = []
    size = 0
    for chunk in chunks:
        group.append(chunk)
        size += len(chunk)
        if size >= _SLICE_CHARACTERS:
            parts.add("".join(group).encode())
            group, size = [], 0
            pace()
    if group:
        parts.add("".join(group).encode())
    chunks.clear()


def _write(
    writer: Writer,
    family: Family,
    chunks: list[str],
    names: frozenset[str] | None,
    *,
    created: bool,
) -> None:
    header = family.header
    allowed = {s for s in header.suffixes if names is None or header.name + s in names}
    if not created:
        allowed.discard("_created")
    if allowed:
        writer.family(family, frozenset(allowed), chunks, restricted=names is not None)


def _own_families(registry: Any) -> list[Family]:
    """Read a registry's families as a worker's, so that they are written the same way."""
    text = render(registry, openmetrics=True, escaping=ALLOWUTF8)
    try:
        exposition = read(text, Caches())
    except Unreadable as error:
        msg = f"the fan-in's own metrics cannot be written: {error}"
        raise ValueError(msg) from None
    return [Family(block.header, [labelled(block, ())]) for block in exposition.blocks.values()]
