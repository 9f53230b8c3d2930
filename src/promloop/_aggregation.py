"""Aggregate mode: workers' series combined, and counters carried past departed workers.

See the merging rules in :mod:`promloop._merge`.  Sums are exact
(:func:`math.fsum`, and Shewchuk's partials for what departed workers left):
the sum of the same values is the same whatever the order of the workers, so
a worker leaving can never lower a counter by a rounding error.
"""

from __future__ import annotations

import math
import operator

from typing import TYPE_CHECKING, Final

from ._merged_writer import Family, Summed, labelled
from ._openmetrics_reader import Block, Exposition


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from ._openmetrics_reader import Header, Key


GAUGE_RULES: Final = ("sum", "max", "min", "per-worker")

# How the samples of one series combine.
_SUM_CARRIED: Final = 0  # counter-like: summed, and carried when a worker departs
_EARLIEST: Final = 1  # _created: the earliest, carried too
_SUM_LIVE: Final = 2  # gauge histograms: summed over live workers
_GAUGE: Final = 3  # by the gauges rule, over live workers
_ANY: Final = 4  # info, stateset: 1 if any live worker has it
_DROPPED: Final = 5  # summary quantiles
_CARRIED: Final = frozenset({_SUM_CARRIED, _EARLIEST})

_PER_WORKER_KINDS: Final = frozenset({"gauge", "unknown", "info", "stateset"})
"""Families that ``gauges="per-worker"`` keeps per worker."""
_COUNTING_KINDS: Final = frozenset({"counter", "histogram", "summary"})
"""Families with counter-like samples."""
_GRACE_MERGES: Final = 2
"""Merges after which a departed worker's values are carried for good (it may yet return)."""


def _combination(kind: str, suffix: str) -> int:
    """Return how samples of a *kind* family with *suffix* combine."""
    if kind in _COUNTING_KINDS:
        if suffix == "_created":
            return _EARLIEST
        return _DROPPED if suffix == "" else _SUM_CARRIED
    if kind == "gaugehistogram":
        return _SUM_LIVE
    return _ANY if kind in ("info", "stateset") else _GAUGE


def carried(key: Key, kind: str) -> bool:
    """Tell whether a departed worker's sample of *key* is carried."""
    return _combination(kind, key.suffix) in _CARRIED


def _fsum(values: Iterable[float]) -> float:
    values = list(values)
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):  # inf - inf, or an intermediate overflow
        return sum(values)


def _max(values: Iterable[float]) -> float:
    numbers = [v for v in values if not math.isnan(v)]
    return max(numbers) if numbers else math.nan


def _min(values: Iterable[float]) -> float:
    numbers = [v for v in values if not math.isnan(v)]
    return min(numbers) if numbers else math.nan


_RULES: Final[Mapping[str, Callable[[Iterable[float]], float]]] = {
    "sum": _fsum,
    "max": _max,
    "min": _min,
    "per-worker": _fsum,  # not used for gauges: they stay per worker
}


def _combiner(combination: int, rule: str) -> Callable[[Iterable[float]], float]:
    if combination == _GAUGE:
        return _RULES[rule]
    return _min if combination == _EARLIEST else _max if combination == _ANY else _fsum


Gathered = tuple["Header", list[tuple[tuple[tuple[str, str], ...], "Block"]]]
"""A family's header (the first worker's) and every worker's labels and block."""
_Contribution = tuple["Sequence[Key]", "Sequence[float]", "Mapping[int, str]"]
"""A worker's keys, values, and exemplars by line."""


class Carry:
    """What aggregate mode remembers across scrapes, and the combining itself.

    Not thread-safe: the merger calls :meth:`aggregate` under a lock.

    Args:
        rule: How gauges combine (one of :data:`GAUGE_RULES`).
    """

    def __init__(self, rule: str) -> None:
        self._rule = rule
        self._last: dict[str, Exposition] = {}  # each live target's last readable answer
        self._departed: dict[str, tuple[int, Exposition]] = {}  # lately, not yet for good
        self._carried: dict[str, _Carried] = {}  # family name -> what departed workers left
        self._plans: dict[str, _Plan] = {}
        self._merges = 0

    def aggregate(
        self,
        families: Mapping[str, Gathered],
        answers: Mapping[str, Exposition],
        listed: Sequence[str],
        failed: Mapping[str, str],
        *,
        whole: bool = True,
    ) -> list[Family]:
        """Combine one scrape's families; remember what the next ones need.

        Args:
            families: The families of the live workers that answered.
            answers: Those workers' answers, by target.
            listed: Every target listed for this scrape.
            failed: The listed targets left out, and why.
            whole: The answers hold every sample (no ``name[]``): what they
                lack is gone, rather than not asked for.
        """
        self._merges += 1
        for target, exposition in answers.items():
            self._departed.pop(target, None)  # back after all: it had not departed
            last = self._last.get(target)
            _keep_peaks(exposition, last)
            slim = exposition.slim()  # the text would double the memory kept
            self._last[target] = slim if whole or last is None else _updated(last, slim)
        listed_set = set(listed)
        for target in [t for t in self._last if t not in listed_set]:
            self._departed[target] = (self._merges, self._last.pop(target))
        for target, (when, exposition) in list(self._departed.items()):
            if when <= self._merges - _GRACE_MERGES and target not in listed_set:
                del self._departed[target]
                self._fold(exposition)
        frozen = [self._last[t] for t in listed if t in failed and t in self._last]
        frozen.extend(exposition for _, exposition in self._departed.values())
        return self._combine_all(families, frozen)

    def _fold(self, exposition: Exposition) -> None:
        """Carry a departed worker's counter-like values for good."""
        for name, block in exposition.blocks.items():
            kind = block.header.kind
            if kind not in _COUNTING_KINDS:
                continue
            peaks = exposition.peaks.get(name) or {}
            kept = self._carried.get(name)
            if kept is None or kept.header.kind != kind:
                kept = self._carried[name] = _Carried(block.header)
            for key, value in zip(block.keys, block.values, strict=True):
                if carried(key, kind):
                    kept.add(key, peaks.get(key.canonical, value))

    def _combine_all(
        self, families: Mapping[str, Gathered], frozen: list[Exposition]
    ) -> list[Family]:
        names = list(families)
        names.extend(n for e in frozen for n in e.blocks if n not in families)
        names.extend(n for n in self._carried if n not in families)
        result: list[Family] = []
        owners: set[str] = set()
        for name in dict.fromkeys(names):
            family = self._family(name, families.get(name), frozen)
            if family is None or not owners.isdisjoint(family.header.sample_names()):
                continue  # a departed family that clashes with a live one: the live one wins
            owners |= family.header.sample_names()
            result.append(family)
        return result

    def _family(
        self, name: str, gathered: Gathered | None, frozen: list[Exposition]
    ) -> Family | None:
        header = None
        live: list[_Contribution] = []
        if gathered is not None:
            header, blocks = gathered
            if self._rule == "per-worker" and header.kind in _PER_WORKER_KINDS:
                return Family(header, [labelled(block, labels) for labels, block in blocks])
            for _, block in blocks:
                exemplars = {i: odd.exemplar for i, odd in block.odd.items() if odd.exemplar}
                live.append((block.keys, block.values, exemplars))
        stale: list[_Contribution] = []
        for exposition in frozen:
            found = exposition.blocks.get(name)
            if found is None or (header is not None and found.header.kind != header.kind):
                continue
            contribution = _frozen(found, exposition.peaks.get(name) or {})
            if contribution[0]:
                header = header or found.header
                stale.append(contribution)
        kept = self._carried.get(name)
        if kept is not None and (header is None or kept.header.kind == header.kind):
            header = header or kept.header
        else:
            kept = None
        if header is None:
            return None
        return Family(header, [self._combine(header, live, stale, kept)])

    def _combine(
        self,
        header: Header,
        live: list[_Contribution],
        stale: list[_Contribution],
        kept: _Carried | None,
    ) -> Summed:
        """Combine one family's series over workers, key by key."""
        first = live[0][0] if live else ()
        plan = self._plans.get(header.name)
        if plan is None or plan.keys != first or plan.kind != header.kind:
            plan = self._plans[header.name] = _Plan(first, header.kind, self._rule)
        if (
            all(keys == first for keys, _, _ in live)
            and all(plan.index.keys() >= {k.canonical for k in keys} for keys, _, _ in stale)
            and (kept is None or plan.index.keys() >= kept.partials.keys())
        ):
            return plan.combine(live, stale, kept)
        return _align(header, self._rule, live, stale, kept)


def _updated(last: Exposition, answer: Exposition) -> Exposition:
    """Return a worker's *last* known values, updated with those of a partial *answer*."""
    blocks = dict(last.blocks)
    peaks = dict(last.peaks)
    for name, block in answer.blocks.items():
        before = blocks.get(name)
        present = {key.canonical for key in block.keys}
        kept: dict[str, float] = {}
        blocks[name] = block
        if before is not None and before.header.kind == block.header.kind:
            pairs = {k.canonical: (k, v) for k, v in zip(before.keys, before.values, strict=True)}
            pairs.update(
                (k.canonical, (k, v)) for k, v in zip(block.keys, block.values, strict=True)
            )
            blocks[name] = Block(
                block.header,
                keys=[k for k, _ in pairs.values()],
                rests=[],
                values=[v for _, v in pairs.values()],
                odd={},
            )
            kept = {k: p for k, p in peaks.get(name, {}).items() if k not in present}
        peaks[name] = {**kept, **answer.peaks.get(name, {})}
    updated = Exposition(blocks)
    updated.peaks = {name: found for name, found in peaks.items() if found}
    return updated


def _frozen(block: Block, peaks: Mapping[str, float]) -> _Contribution:
    """Return a block's counter-like series, at their highest values seen."""
    kind = block.header.kind
    pairs = [
        (key, peaks.get(key.canonical, value))
        for key, value in zip(block.keys, block.values, strict=True)
        if carried(key, kind)
    ]
    return [k for k, _ in pairs], [v for _, v in pairs], {}


class _Plan:
    """How to combine a family whose workers all write the same keys in the same order."""

    def __init__(self, keys: Sequence[Key], kind: str, rule: str) -> None:
        self.keys = keys
        self.kind = kind
        combinations = [_combination(kind, key.suffix) for key in keys]
        self.index = {key.canonical: i for i, key in enumerate(keys)}
        # math.fsum does most keys; these do the others.
        self.others = [
            (i, _combiner(c, rule))
            for i, c in enumerate(combinations)
            if _combiner(c, rule) is not _fsum and c != _DROPPED
        ]
        self.kept = [i for i, c in enumerate(combinations) if c != _DROPPED]
        self.dropping = len(self.kept) < len(keys)
        self.out_keys = [keys[i] for i in self.kept]
        self.texts = [key.canonical for key in self.out_keys]
        self.legacy = all(key.legacy for key in keys)
        self._carried_for: tuple[_Carried, int] | None = None
        self._carried_columns: list[tuple[float, ...]] = []

    def combine(
        self, live: list[_Contribution], stale: list[_Contribution], kept: _Carried | None
    ) -> Summed:
        sources = [values for _, values, _ in live]
        extra = None if kept is None else self._columns_of(kept)
        if stale:
            extra = self._with_stale(extra, stale)

        def columns() -> Iterator[tuple[float, ...]]:
            # zip reuses its tuple when nothing else holds it: no tuple per key lives on
            # (thousands would wake the garbage collector).
            joined = zip(*sources, strict=True)
            return joined if extra is None else map(operator.add, joined, extra)

        try:
            values = list(map(math.fsum, columns()))
        except (ValueError, OverflowError):  # inf - inf somewhere, or an overflow
            values = list(map(_fsum, columns()))
        for index, combine in self.others:
            column = tuple(source[index] for source in sources)
            values[index] = combine(column if extra is None else column + extra[index])
        exemplars: dict[int, str] = {}
        for _, _, found in live:
            for index, exemplar in found.items():
                exemplars.setdefault(index, exemplar)
        if self.dropping:
            values = [values[i] for i in self.kept]
            position = {old: new for new, old in enumerate(self.kept)}
            exemplars = {position[i]: e for i, e in exemplars.items()}
        return Summed(self.out_keys, self.texts, values, exemplars, legacy=self.legacy)

    def _with_stale(
        self, extra: list[tuple[float, ...]] | None, stale: list[_Contribution]
    ) -> list[tuple[float, ...]]:
        """Return *extra* (if any) with the values of frozen workers added, by key."""
        columns: list[tuple[float, ...]] = (
            [() for _ in self.keys] if extra is None else extra.copy()
        )
        for keys, values, _ in stale:
            for key, value in zip(keys, values, strict=True):
                index = self.index[key.canonical]
                columns[index] = (*columns[index], value)
        return columns

    def _columns_of(self, kept: _Carried) -> list[tuple[float, ...]]:
        """Return what departed workers left, lined up with the keys (cached)."""
        if self._carried_for != (kept, kept.version):
            columns: list[tuple[float, ...]] = [()] * len(self.keys)
            for canonical, partials in kept.partials.items():
                columns[self.index[canonical]] = tuple(partials)
            self._carried_columns = columns
            self._carried_for = (kept, kept.version)
        return self._carried_columns


class _Carried:
    """What departed workers left of one family's counter-like series, exactly."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.keys: dict[str, Key] = {}
        self.partials: dict[str, list[float]] = {}
        self.version = 0

    def add(self, key: Key, value: float) -> None:
        self.version += 1
        self.keys.setdefault(key.canonical, key)
        partials = self.partials.setdefault(key.canonical, [])
        if key.suffix == "_created":
            partials[:] = [_min((*partials, value))]
        else:
            _add_exactly(partials, value)


def _add_exactly(partials: list[float], value: float) -> None:
    """Add *value* to the non-overlapping *partials* whose sum is exact (Shewchuk)."""
    if not math.isfinite(value) or not all(map(math.isfinite, partials)):
        partials[:] = [_fsum([*partials, value])]
        return
    kept = 0
    for partial in partials:
        low, high = (value, partial) if abs(value) < abs(partial) else (partial, value)
        total = high + low
        error = low - (total - high)
        if error:
            partials[kept] = error
            kept += 1
        value = total
    partials[kept:] = [value]


def _keep_peaks(exposition: Exposition, last: Exposition | None) -> None:
    """Remember, per key, the highest counter value a worker's answers had.

    Two scrapes running at once may merge in either order: an answer older
    than the last one merged has lower counters, and carrying those would
    make a sum go down.
    """
    if last is None:
        return
    for name, block in exposition.blocks.items():
        before = last.blocks.get(name)
        kind = block.header.kind
        if before is None or kind not in _COUNTING_KINDS or before.header.kind != kind:
            continue
        old_peaks = last.peaks.get(name)
        if (
            not old_peaks
            and before.keys == block.keys
            and all(map(operator.le, before.values, block.values))
        ):
            continue  # the usual case: nothing went down
        old = {
            k.canonical: v
            for k, v in zip(before.keys, before.values, strict=True)
            if carried(k, kind)
        }
        for canonical, peak in (old_peaks or {}).items():
            old[canonical] = max(old.get(canonical, peak), peak)
        peaks = {}
        for key, value in zip(block.keys, block.values, strict=True):
            highest = old.get(key.canonical)
            if highest is not None and highest > value:
                peaks[key.canonical] = highest
        if peaks:
            exposition.peaks[name] = peaks


def _align(
    header: Header,
    rule: str,
    live: list[_Contribution],
    stale: list[_Contribution],
    kept: _Carried | None,
) -> Summed:
    """Combine workers' series that differ: their union, grouped as OpenMetrics requires."""
    order = _union(header, (*live, *stale), kept)
    columns: dict[str, list[float]] = {canonical: [] for canonical in order}
    if kept is not None:
        for canonical, partials in kept.partials.items():
            columns[canonical].extend(partials)
    exemplars: dict[str, str] = {}
    for keys, values, found in (*live, *stale):
        for index, (key, value) in enumerate(zip(keys, values, strict=True)):
            if key.canonical in columns:
                columns[key.canonical].append(value)
            if index in found:
                exemplars.setdefault(key.canonical, found[index])
        if header.kind in ("histogram", "gaugehistogram"):
            _fill_buckets(keys, values, order, columns)
    groups: dict[tuple[tuple[str, str], ...], list[Key]] = {}
    for key in order.values():
        groups.setdefault(key.group, []).append(key)
    ordered = [key for group in groups.values() for key in sorted(group, key=_rank)]
    values = [
        _combiner(_combination(header.kind, key.suffix), rule)(columns[key.canonical])
        for key in ordered
    ]
    at = {key.canonical: index for index, key in enumerate(ordered)}
    return Summed(
        ordered,
        [key.canonical for key in ordered],
        values,
        {at[canonical]: exemplar for canonical, exemplar in exemplars.items()},
        legacy=all(key.legacy for key in ordered),
    )


def _union(
    header: Header, contributions: Iterable[_Contribution], kept: _Carried | None
) -> dict[str, Key]:
    """Return every key of the contributions and the carried values, in order of appearance."""
    order: dict[str, Key] = {}
    for keys, _, _ in contributions:
        for key in keys:
            order.setdefault(key.canonical, key)
    for canonical, key in (kept.keys if kept is not None else {}).items():
        order.setdefault(canonical, key)
    return {c: k for c, k in order.items() if _combination(header.kind, k.suffix) != _DROPPED}


def _rank(key: Key) -> tuple[int, float]:
    return key.rank


def _fill_buckets(
    keys: Sequence[Key],
    values: Sequence[float],
    order: Mapping[str, Key],
    columns: dict[str, list[float]],
) -> None:
    """Count a worker's observations at the bounds others have and it lacks (a step function)."""
    mine: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for key, value in zip(keys, values, strict=True):
        if key.suffix == "_bucket":
            mine.setdefault(key.group, []).append((key.rank[1], value))
    have = {key.canonical for key in keys}
    for canonical, key in order.items():
        own = mine.get(key.group)
        if key.suffix != "_bucket" or own is None or canonical in have:
            continue
        below = [value for bound, value in own if bound <= key.rank[1]]
        columns[canonical].append(max(below) if below else 0.0)
