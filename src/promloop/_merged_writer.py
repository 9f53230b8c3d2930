"""Writing merged families in any exposition format, as prometheus_client writes them.

A merged family is its header and *parts*: workers' blocks with the workers'
labels added (:class:`Labelled`), or series combined over workers
(:class:`Summed`).  :class:`Writer` writes them in the text format or
OpenMetrics, with any escaping scheme, ``name[]`` filter and ``_created``
choice, producing the bytes prometheus_client would produce for one registry
holding the same metrics -- except where prometheus_client writes samples that
do not belong to their own family (see :meth:`Writer.rename`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

from typing import TYPE_CHECKING, Final, cast

from prometheus_client.exposition import generate_latest as _generate_text
from prometheus_client.metrics_core import Metric

from ._openmetrics_reader import (
    ALLOWUTF8,
    EOF,
    Families,
    escape_label_name,
    escape_metric_name,
    generate_openmetrics,
    label_text,
    legacy_label,
    legacy_metric,
    split_key,
)
from ._render import escape_value, go_float


if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._openmetrics_reader import Block, Header, Key, Odd


_DOTS: Final = "dots"
MOVED: Final = frozenset({"_created", "_gsum", "_gcount"})
"""Samples that the text format writes as gauge families of their own."""
_MOVES_FROM: Final = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
"""Types with samples that the text format moves."""
_REPR_LIMIT: Final = 1e6
"""Below this, Go writes a float as Python's repr does (see ``go_float``)."""
_INF: Final = float("inf")

_text_latest = cast("Callable[..., bytes]", _generate_text)


@dataclasses.dataclass(frozen=True)
class Labelled:
    """A worker's block, the worker's labels added to every sample."""

    block: Block
    names: tuple[str, ...]
    labels: tuple[str, ...]  # each label written (allow-utf-8), sorted by name


def labelled(block: Block, labels: Sequence[tuple[str, str]]) -> Labelled:
    """Return *block* with *labels* (sorted by name) to add to its samples."""
    return Labelled(
        block,
        tuple(n for n, _ in labels),
        tuple(label_text(n, escape_value(v)) for n, v in labels),
    )


@dataclasses.dataclass(frozen=True)
class Summed:
    """Series combined over workers: one line per key."""

    keys: Sequence[Key]
    texts: Sequence[str]  # each key's canonical text
    values: list[float]
    exemplars: dict[int, str]
    legacy: bool  # every key's names are legacy ones


class Family:
    """One family of a merged result: a header, and what to write under it."""

    __slots__ = ("header", "parts")

    def __init__(self, header: Header, parts: Sequence[Labelled | Summed] = ()) -> None:
        self.header = header
        self.parts = parts


class Writer:
    """Writes merged families in one format."""

    def __init__(self, *, openmetrics: bool, escaping: str) -> None:
        self.openmetrics = openmetrics
        self.escaping = escaping
        self.moves = not openmetrics

    def family(
        self, family: Family, allowed: frozenset[str], chunks: list[str], *, restricted: bool
    ) -> None:
        """Write a family's samples whose suffixes are *allowed* into *chunks*.

        A *restricted* (``name[]``) family without samples is not written at all.
        """
        header = family.header
        lines: list[str] = []
        moved: dict[str, list[str]] = {}
        for part in family.parts:
            if isinstance(part, Labelled):
                self._labelled(header, part, allowed, lines=lines, moved=moved)
            else:
                self._summed(header, part, allowed, lines=lines, moved=moved)
        if restricted and not lines and not moved:
            return
        chunks.append(header_text(header, self.openmetrics, self.escaping))
        chunks.extend(lines)
        for suffix in sorted(moved):
            chunks.append(_moved_header(header, suffix, self.escaping))
            chunks.extend(moved[suffix])

    def _renames(self, header: Header, *, legacy: bool, names: Sequence[str]) -> bool:
        """Tell whether names must be rewritten for this escaping.

        *legacy* tells whether every key's names are legacy ones.
        """
        if self.escaping == ALLOWUTF8:
            return False
        return (
            self.escaping == _DOTS
            or not legacy
            or not legacy_metric(header.name)
            or not all(map(legacy_label, names))
        )

    def _labelled(
        self,
        header: Header,
        part: Labelled,
        allowed: frozenset[str],
        *,
        lines: list[str],
        moved: dict[str, list[str]],
    ) -> None:
        block = part.block
        if not block.keys:
            return
        renames = self._renames(header, legacy=block.legacy, names=part.names)
        if (
            block.regular
            and allowed == frozenset(header.suffixes)
            and not renames
            and (not part.names or block.top < part.names[0])
        ):
            text = block.text
            if part.names:
                # Each line's labels end with its only '"} ': add the labels there.
                text = ('",' + ",".join(part.labels) + "} ").join(text.split('"} '))
            self._regular(header, text, block.keys, lines=lines, moved=moved)
            return
        labels = part.labels
        for index, (key, rest) in enumerate(zip(block.keys, block.rests, strict=True)):
            if key.suffix not in allowed:
                continue
            segments = key.segments(part.names)
            if len(segments) == 2:  # noqa: PLR2004 -- one label added: the usual case
                text = segments[0] + labels[0] + segments[1]
            else:
                text = "".join(
                    itertools.chain.from_iterable(
                        itertools.zip_longest(segments, labels, fillvalue="")
                    )
                )
            if renames:
                text = self.rename(header, text)
            line = self._line(text, rest, block.odd.get(index))
            if self.moves and key.suffix in MOVED:
                moved.setdefault(key.suffix, []).append(line)
            else:
                lines.append(line)

    def _regular(
        self,
        header: Header,
        text: str,
        keys: Sequence[Key],
        *,
        lines: list[str],
        moved: dict[str, list[str]],
    ) -> None:
        """Write lines already in this format, moving the text format's gauges out."""
        if not (self.moves and header.kind in _MOVES_FROM):
            lines.append(text + "\n")
            return
        split = text.split("\n")
        kept = [line for line, key in zip(split, keys, strict=True) if key.suffix not in MOVED]
        if kept:
            lines.append("\n".join(kept) + "\n")
        for suffix in MOVED.intersection(header.suffixes):
            found = [line for line, key in zip(split, keys, strict=True) if key.suffix == suffix]
            if found:
                moved.setdefault(suffix, []).append("\n".join(found) + "\n")

    def _summed(
        self,
        header: Header,
        part: Summed,
        allowed: frozenset[str],
        *,
        lines: list[str],
        moved: dict[str, list[str]],
    ) -> None:
        texts = part.texts
        if self._renames(header, legacy=part.legacy, names=()):
            texts = [self.rename(header, text) for text in texts]
        if allowed == frozenset(header.suffixes) and not (part.exemplars and self.openmetrics):
            text = "\n".join(
                f"{text} {repr(value) if -_INF < value < _REPR_LIMIT else go_float(value)}"
                for text, value in zip(texts, part.values, strict=True)
            )
            if text:
                self._regular(header, text, part.keys, lines=lines, moved=moved)
            return
        for index, (key, text, value) in enumerate(zip(part.keys, texts, part.values, strict=True)):
            if key.suffix not in allowed:
                continue
            line = f"{text} {go_float(value)}"
            exemplar = part.exemplars.get(index)
            if exemplar and self.openmetrics:
                line += exemplar
            if self.moves and key.suffix in MOVED:
                moved.setdefault(key.suffix, []).append(line + "\n")
            else:
                lines.append(line + "\n")

    def _line(self, text: str, rest: str, odd: Odd | None) -> str:
        if odd is None or self.openmetrics:
            return f"{text} {rest}\n"
        if odd.timestamp is None:
            return f"{text} {odd.value}\n"
        return f"{text} {odd.value} {_text_timestamp(odd.timestamp)}\n"

    def rename(self, header: Header, text: str) -> str:
        """Rewrite a key's names for this format and escaping.

        A sample's name is its family's escaped name followed by its suffix,
        as Prometheus's own writer does: every sample then belongs to the
        family its TYPE line names.  prometheus_client escapes the whole
        sample name: under ``dots``, ``app_seconds_bucket`` becomes
        ``app__seconds__bucket`` beneath ``# TYPE app__seconds histogram``.
        """
        split = split_key(text)
        if split is None:  # pragma: no cover -- every key was checked when read
            raise AssertionError(text)
        name, labels = split
        family = _written_family(header, name[len(header.name) :], openmetrics=self.openmetrics)
        written = escape_metric_name(family, self.escaping) + name[len(family) :]
        pairs = ",".join(f'{escape_label_name(n, self.escaping)}="{v}"' for n, v in sorted(labels))
        return f"{written}{{{pairs}}}" if pairs else written


def _written_family(header: Header, suffix: str, *, openmetrics: bool) -> str:
    """Return the name of the family a sample is written in, before escaping."""
    if openmetrics:
        return header.name
    if suffix in MOVED or (header.kind, suffix) in (("counter", "_total"), ("info", "_info")):
        return header.name + suffix
    return header.name


def _text_timestamp(timestamp: str) -> str:
    """Convert an OpenMetrics timestamp (seconds) to the text format's milliseconds.

    prometheus_client writes a float timestamp as its repr, and a ``Timestamp``
    as seconds and nine digits of nanoseconds; each is converted back the way
    prometheus_client's text writer converts the object.
    """
    whole, _, fraction = timestamp.partition(".")
    if len(fraction) == 9:  # noqa: PLR2004 -- a Timestamp's nanoseconds
        sign = -1 if whole.startswith("-") else 1
        seconds = float(int(whole)) + sign * float(int(fraction)) / 1e9
    else:
        seconds = float(timestamp)
    return f"{int(seconds * 1000):d}"


@functools.lru_cache(maxsize=4096)
def header_text(header: Header, openmetrics: bool, escaping: str) -> str:
    """Return the HELP/TYPE(/UNIT) lines prometheus_client writes for a family."""
    metric = Metric(header.name, header.help, header.kind, header.unit)
    if openmetrics:
        written = generate_openmetrics(Families([metric]), escaping=escaping)
        return written[: -len(EOF)].decode()
    return _text_latest(Families([metric]), escaping=escaping).decode()


def _moved_header(header: Header, suffix: str, escaping: str) -> str:
    """Return the header of the text format's gauge family for *suffix* samples."""
    name = escape_metric_name(header.name + suffix, escaping)
    help_text = header.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
