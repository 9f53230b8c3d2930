"""What a merge of workers' expositions must equal, built with prometheus_client alone.

The per-worker oracle is "one registry holding every worker's metrics with the
worker's labels added": the workers' own Metric objects, relabelled as
Prometheus relabels (``honor_labels: false``), written by prometheus_client.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics import parser as om_parser


if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence


class Families:
    """A collector yielding the given families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


def relabel(labels: Mapping[str, str], target: Mapping[str, str]) -> dict[str, str]:
    """Add *target*'s labels to a sample's, renaming clashes as Prometheus does."""
    result = dict(labels)
    clashes = sorted((name for name in target if name in labels), key=len)
    result.update(target)
    for name in clashes:
        renamed = "exported_" + name
        while renamed in result:
            renamed = "exported_" + renamed
        result[renamed] = labels[name]
    return result


def per_worker(workers: Sequence[tuple[Mapping[str, str], Any]]) -> list[Metric]:
    """Return the families of one registry holding every worker's samples, relabelled."""
    families: dict[str, Metric] = {}
    for target, registry in workers:
        for metric in registry.collect():
            merged = families.get(metric.name)
            if merged is None:
                merged = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                families[metric.name] = merged
            elif merged.type != metric.type:
                continue
            merged.samples.extend(
                sample._replace(labels=relabel(sample.labels, target)) for sample in metric.samples
            )
    return list(families.values())


MOVED = ("_created", "_gcount", "_gsum")


def write(families: list[Metric], *, openmetrics: bool, escaping: str) -> bytes:
    """Write *families* as prometheus_client does, with Prometheus's sample names.

    prometheus_client escapes each sample's whole name (so under ``dots`` a
    histogram ``a_b`` has the sample ``a__b__bucket`` beneath ``# TYPE a__b``,
    which no parser accepts); the merger writes the family's escaped name and
    then the suffix, as Prometheus's own writer does.  Everything else is
    prometheus_client's.
    """
    if openmetrics:
        written: bytes = om.generate_latest(Families(families), escaping=escaping)
    else:
        written = text_latest(Families(families), escaping=escaping)
    if escaping == om.ALLOWUTF8:
        return written
    lines = written.decode().split("\n")
    at = 0
    for samples, family_name in _written_order(families, openmetrics=openmetrics):
        while lines[at].startswith("# "):
            at += 1
        right = om.escape_metric_name(family_name, escaping)
        for sample in samples:
            if openmetrics:
                wrong = om._escape(sample.name, escaping, om._is_legacy_labelname_rune)
            else:
                wrong = om.escape_metric_name(sample.name, escaping)
            assert lines[at].startswith(wrong), (lines[at], wrong)
            lines[at] = right + sample.name[len(family_name) :] + lines[at][len(wrong) :]
            at += 1
    return "\n".join(lines).encode()


def _written_order(families: list[Metric], *, openmetrics: bool) -> Iterator[tuple[list[Any], str]]:
    """Yield the samples of each family as written, with the family they are written in."""
    for family in families:
        if openmetrics:
            yield family.samples, family.name
            continue
        own = {"counter": "_total", "info": "_info"}.get(family.type, "")
        yield (
            [s for s in family.samples if s.name[len(family.name) :] not in MOVED],
            (family.name + own),
        )
        for suffix in sorted(MOVED):
            moved = [s for s in family.samples if s.name == family.name + suffix]
            if moved:
                yield moved, family.name + suffix


def parsed(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of an OpenMetrics body by name and labels."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in om_parser.text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, key
            samples[key] = float(sample.value)
    return samples


def same_values(expected: float, actual: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return expected == actual
