"""Rendering with prometheus_client's own formatters: for what the streaming path does not read.

Custom collectors, ``MultiProcessCollector`` and anything unusual are
rendered here, one family at a time, and so is every registry when the
streaming path may not be used at all.  The ``name[]`` filter and
``created=False`` are applied to the families before prometheus_client
formats them.
"""

# pyright: reportPrivateUsage=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast

from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om

from .collectors import collectors, registry_like


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator


OM_EOF: Final = b"# EOF\n"
WITH_CREATED: Final = frozenset({"counter", "histogram", "summary"})
"""The family types whose ``<name>_created`` sample ``created=False`` drops."""

_generate_openmetrics = cast(
    "Callable[..., bytes]",
    om.generate_latest,  # pyright: ignore[reportUnknownMemberType]
)


class Families:
    """A collector that yields the given families: prometheus_client's formatters take one."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render_families(families: Iterable[Metric], openmetrics: bool, escaping: str) -> str:
    """Render *families* with prometheus_client's own formatter."""
    if openmetrics:
        data = _generate_openmetrics(Families(families), escaping=escaping)
        return data[: -len(OM_EOF)].decode()
    return generate_text(Families(families), escaping=escaping).decode()


def restricted(family: Metric, names: frozenset[str] | None, created: bool = True) -> Metric | None:
    """Return *family* with only the samples *names* and *created* keep, or None if none is."""
    if names is None and created:
        return family
    dropped = family.name + "_created" if not created and family.type in WITH_CREATED else None
    samples = [
        sample
        for sample in family.samples
        if (names is None or sample.name in names) and sample.name != dropped
    ]
    if names is None and len(samples) == len(family.samples):
        return family
    if not samples and names is not None:
        return None
    kept = Metric(family.name, family.documentation, family.type, family.unit)
    kept.samples = samples
    return kept


def render_collector(
    collector: Any,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> str:
    """Render a collector the streaming path does not read, family by family."""
    families = [
        kept
        for family in collector.collect()
        if (kept := restricted(family, names, created)) is not None
    ]
    return render_families(families, openmetrics, escaping) if families else ""


def render_slow(
    registry: Any,
    openmetrics: bool,
    escaping: str,
    names: frozenset[str] | None,
    created: bool = True,
) -> bytes:
    """Render with prometheus_client's formatters alone."""
    source = (
        registry if names is None and created else Families(_filtered(registry, names, created))
    )
    if openmetrics:
        return _generate_openmetrics(source, escaping=escaping)
    return generate_text(source, escaping=escaping)


def _filtered(registry: Any, names: frozenset[str] | None, created: bool) -> Iterator[Metric]:
    if names is not None and registry_like(registry):
        target_info, chosen = collectors(registry, names)
        if target_info is not None:
            yield target_info
        families: Iterable[Metric] = (f for c in chosen for f in c.collect())
    else:
        families = registry.collect()
    for family in families:
        kept = restricted(family, names, created)
        if kept is not None:
            yield kept
