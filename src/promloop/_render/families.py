"""What a metric family renders the same way at every scrape, and each child's line heads.

A sample line is a *head* -- the sample's name and its labels, escaped, up
to the space before the value -- and the value.  Escaping and joining the
labels cost several times what formatting the value does, and they never
change: a head depends on the family's name and label names, on the format
and escaping, and on the child's label values, nothing else.

So :class:`FamilyFormat` keeps what is fixed for a family in one format (its
``# HELP``/``# TYPE`` header, the escaped name of each sample, the escaped
label names), and each child of prometheus_client's own metric kinds keeps
its line heads in an attribute of its own, :data:`HEADS_ATTRIBUTE`::

    (layout, labelvalues, head, head, ...)

*labelvalues* is the key the child was found under in its parent's
dictionary -- the label values prometheus_client writes -- and *layout*
stands for everything else a head was made of.  A head is used only when
both are the very objects the render holds (compared with ``is``); anything
else (a child moved to other label values, a family renamed or relabelled
through private attributes, another format whose names escape otherwise)
builds the heads anew.  Heads cannot go stale: the label values of a key
never change, a removed child takes its heads with it, and a re-added one
(after ``remove()`` or ``clear()``) is a new child that builds its own.
The memory they take is released with the child, or with the metric, and
grows with one tuple and one string per sample line of each live child.
Formats whose heads are the same (the text format and OpenMetrics, for
names in the legacy character set) share one layout, so one set of heads.
"""

# This module reads prometheus_client's internals on purpose (see the package docstring).
# ruff: noqa: SLF001
# pyright: reportPrivateUsage=false

from __future__ import annotations

import bisect
import contextlib
import operator
import threading
import weakref

from typing import TYPE_CHECKING, Any, Final, cast

from .fallback import render_families
from .formatting import (
    ALLOWUTF8,
    escape_label_name,
    escape_metric_name,
    escape_name,
    escape_value,
    go_float,
    legacy_label_rune,
    legacy_metric_name,
)


if TYPE_CHECKING:
    from collections.abc import Sequence


HEADS_ATTRIBUTE: Final = "_promloop_line_heads"
"""The attribute of a prometheus_client child that holds its line heads."""

_made_room: weakref.WeakSet[type] = weakref.WeakSet()


def make_room(cls: type) -> None:
    """Let *cls*'s instances keep their heads among their attributes, without a dict of their own.

    Since Python 3.11 an instance keeps its attributes in an array laid out
    by keys that its class shares with all its instances.  A new attribute
    finds a place in that array only if it is the first one added to those
    keys after the instances were made; any later one gives each instance
    that receives it a dictionary of its own.  prometheus_client's
    ``set_function()`` adds such an attribute to a Gauge (promloop's own
    self-check calls it), and then a million Gauge children, each given its
    heads, each got a dictionary: a million more objects for the garbage
    collector, whose full collection during the first render took a second.
    So the heads' name is added first, through an instance made for the
    purpose and dropped at once; done after another attribute was added,
    it changes nothing.
    """
    if cls in _made_room:
        return
    _made_room.add(cls)
    if getattr(cls, "__del__", None) is not None:  # it might mind a half-made instance
        return
    with contextlib.suppress(Exception):  # instances made otherwise: no room to make
        placeholder = cast("object", object.__new__(cls))
        object.__setattr__(placeholder, HEADS_ATTRIBUTE, None)


MOVED_TO_GAUGES: Final = ("_created", "_gsum", "_gcount")
"""Samples the text format moves into gauge families of their own."""

_LABEL_HEADS_KEPT: Final = 64
"""Sample label names (``le``, an Enum's name, Info's keys) remembered per family."""


class Line:
    """The fixed parts of a sample line: what comes before and after its labels."""

    __slots__ = ("bare", "close", "moved", "name", "open")

    def __init__(self, name: str, suffix: str, openmetrics: bool, escaping: str) -> None:
        full = name + suffix
        self.name = full
        self.moved = not openmetrics and suffix in MOVED_TO_GAUGES
        if escaping == ALLOWUTF8 and not legacy_metric_name(full):
            quoted = escape_metric_name(full, escaping)
            self.open, self.close, self.bare = "{" + quoted + ",", "} ", "{" + quoted + "} "
        else:
            if openmetrics:  # prometheus_client's OpenMetrics writer escapes names so
                written = escape_name(full, escaping, legacy_label_rune)
            else:
                written = escape_metric_name(full, escaping)
            self.open, self.close, self.bare = written + "{", "} ", written + " "

    def head(self, labels: str) -> str:
        """Return the head of a line with these (escaped, joined) labels."""
        return f"{self.open}{labels}{self.close}" if labels else self.bare


def _source(metric: Any) -> tuple[object, ...]:
    """Return what a family's format is made of, to be compared by identity."""
    return (metric._name, metric._labelnames, metric._documentation, metric._unit)


class FamilyFormat:
    """What one metric family renders the same way at every scrape, in one format."""

    def __init__(self, metric: Any, openmetrics: bool, escaping: str, layouts: _Layouts) -> None:
        self.openmetrics = openmetrics
        self.escaping = escaping
        self.source = _source(metric)
        self.family = metric._get_metric()  # no samples: the header, and exemplars' context
        self.name: str = metric._name
        self.header = render_families([self.family], openmetrics, escaping)
        labelnames: tuple[str, ...] = metric._labelnames
        self.order = sorted(range(len(labelnames)), key=labelnames.__getitem__)
        self.sorted_names = [labelnames[i] for i in self.order]
        self.label_heads = [escape_label_name(labelnames[i], escaping) + '="' for i in self.order]
        self.label_set = frozenset(labelnames)
        self.repeated_label = len(self.label_set) < len(labelnames)
        self._layouts = layouts
        self._lines: dict[str, Line] = {}
        self._label_heads: dict[str, str] = {}
        self._moved_headers: dict[str, str] = {}

    def current(self, metric: Any) -> bool:
        """Tell whether *metric* still has the name, labels and help this was made of."""
        return all(map(operator.is_, self.source, _source(metric)))

    def line(self, suffix: str) -> Line:
        """Return the fixed parts of the lines of the *suffix* samples."""
        line = self._lines.get(suffix)
        if line is None:
            line = self._lines[suffix] = Line(self.name, suffix, self.openmetrics, self.escaping)
        return line

    def label_head(self, name: str) -> str:
        """Return ``name="``, escaped, for a label a sample adds (``le``, Info's keys)."""
        head = self._label_heads.get(name)
        if head is None:
            head = escape_label_name(name, self.escaping) + '="'
            if len(self._label_heads) < _LABEL_HEADS_KEPT:  # Info's keys may be anything
                self._label_heads[name] = head
        return head

    def moved_header(self, suffix: str) -> str:
        """Return the header of the text format's gauge family for *suffix* samples."""
        header = self._moved_headers.get(suffix)
        if header is None:
            name = escape_metric_name(self.name + suffix, self.escaping)
            help_text = self.family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
            header = f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
            self._moved_headers[suffix] = header
        return header

    def label_parts(self, labelvalues: tuple[str, ...]) -> list[str]:
        """Return a child's ``name="value"`` labels, escaped, in prometheus_client's order."""
        if not labelvalues:  # unlabelled, or a child registered on its own
            return []
        heads = self.label_heads
        return [heads[n] + escape_value(labelvalues[i]) + '"' for n, i in enumerate(self.order)]

    def merged(self, parts: list[str], extra: dict[str, str]) -> str:
        """Join a child's labels with the labels a sample adds, in sorted order."""
        if not extra:
            return ",".join(parts)
        merged = parts.copy()
        for name, value in sorted(extra.items()):
            at = bisect.bisect(self.sorted_names, name) + len(merged) - len(parts)
            merged.insert(at, self.label_head(name) + escape_value(value) + '"')
        return ",".join(merged)

    def layout(self, suffixes: Sequence[str], extra_labels: Sequence[str] = ()) -> object:
        """Return the token for heads of lines with these suffixes and added label names.

        Formats of the same family whose heads would be written alike get the
        same token, so they share the heads each child keeps.
        """
        key = (
            tuple((self.line(s).open, self.line(s).bare) for s in suffixes),
            tuple(self.label_heads),
            tuple(self.order),
            tuple(self.sorted_names),
            tuple(self.label_head(name) for name in extra_labels),
        )
        return self._layouts.intern(key)

    def remember_heads(
        self,
        child: Any,
        layout: object,
        labelvalues: tuple[str, ...],
        samples: Sequence[tuple[str, dict[str, str]]],
    ) -> tuple[Any, ...]:
        """Build a child's line heads, keep them on the child, and return its entry.

        A kind that writes a ``_created`` sample lists it last; its entry then
        ends with two more places, for the ``_created`` value and its whole
        line (see :meth:`remember_created`).

        Args:
            child: The prometheus_client child (or unlabelled metric).
            layout: The token :meth:`layout` returned for these samples.
            labelvalues: The key the child was found under.
            samples: Each line's suffix and the labels its sample adds.
        """
        parts = self.label_parts(labelvalues)
        heads: list[Any] = [
            self.line(suffix).head(self.merged(parts, extra)) for suffix, extra in samples
        ]
        if samples[-1][0] == "_created":
            heads += [None, ""]
        entry = (layout, labelvalues, *heads)
        setattr(child, HEADS_ATTRIBUTE, entry)
        return entry

    @staticmethod
    def remember_created(child: Any, entry: tuple[Any, ...], created: float) -> tuple[Any, ...]:
        """Keep a child's whole ``_created`` line, for this very *created* value object.

        A ``_created`` value is set once per child (and again by
        ``Counter.reset()``, as a new float object), and is large enough
        that Go's format takes the slow path: it is formatted once per value
        object, and the line is kept next to the child's heads.
        """
        entry = (*entry[:-2], created, entry[-3] + go_float(created))
        setattr(child, HEADS_ATTRIBUTE, entry)
        return entry


class _Layouts:
    """One token per distinct layout of a metric's heads, shared by its formats.

    A token is a bare ``object()``: the garbage collector does not track it,
    so a child's entry (the token, strings, and the child's key) is untracked
    at the first collection that meets it, and never promoted to the old
    generation, whose growth would set off a full collection.
    """

    def __init__(self) -> None:
        self._tokens: dict[tuple[object, ...], object] = {}

    def intern(self, key: tuple[object, ...]) -> object:
        token = self._tokens.get(key)
        if token is None:
            token = self._tokens.setdefault(key, object())
        return token


class _MetricFormats:
    """Everything remembered of one metric: its formats, and their layouts."""

    def __init__(self) -> None:
        self.formats: dict[tuple[bool, str], FamilyFormat] = {}
        self.layouts = _Layouts()


_remembered: weakref.WeakKeyDictionary[Any, _MetricFormats] = weakref.WeakKeyDictionary()
_remembered_lock = threading.Lock()


def family_format(metric: Any, openmetrics: bool, escaping: str) -> FamilyFormat:
    """Return what *metric* renders the same way at every scrape in this format."""
    with _remembered_lock:
        formats = _remembered.get(metric)
        if formats is None:
            formats = _remembered[metric] = _MetricFormats()
    found = formats.formats.get((openmetrics, escaping))
    if found is None or not found.current(metric):
        found = FamilyFormat(metric, openmetrics, escaping, formats.layouts)
        formats.formats[openmetrics, escaping] = found
    return found
