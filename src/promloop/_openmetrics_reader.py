"""Reading workers' OpenMetrics answers fast, for the fan-in's merge.

prometheus_client's parser builds a ``Sample`` with a label dict for every
line: far too slow for a fan-in that reads tens of thousands of lines from
each worker on every scrape.  This reader keeps each line's name and labels
as the text the worker wrote (its *key*), checks each key once and remembers
what it says (:class:`Key`), and on later scrapes only splits lines at their
last space, looks their keys up and reads their values.

It reads exactly what prometheus_client's OpenMetrics writer writes; any
other valid OpenMetrics answer (families without metadata, say) is first
rewritten by prometheus_client's own parser and writer, up to
:data:`FALLBACK_LIMIT` bytes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading

from typing import TYPE_CHECKING, Final, cast

from prometheus_client.openmetrics import exposition as _om
from prometheus_client.openmetrics import parser as _om_parser


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from prometheus_client.metrics_core import Metric


ALLOWUTF8: Final[str] = _om.ALLOWUTF8
EOF: Final = "# EOF\n"
FALLBACK_LIMIT: Final = 1 << 20
"""Largest answer that prometheus_client's (slow) parser may rewrite, in bytes."""
CACHE_SLACK: Final = 4
"""A family's checked keys are forgotten when they are this many times its series..."""
CACHE_FLOOR: Final = 256
"""... plus this many."""

SUFFIXES: Final[Mapping[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
"""The sample names (after the family's name) of each type, in the order they are written."""

_EXEMPLARS: Final[Mapping[str, str]] = {
    "counter": "_total",
    "histogram": "_bucket",
    "gaugehistogram": "_bucket",
}
"""The one kind of sample of a type that may carry an exemplar."""

# prometheus_client's helpers lack annotations: typed once, here.
escape_metric_name = cast("Callable[[str, str], str]", _om.escape_metric_name)
escape_label_name = cast("Callable[[str, str], str]", _om.escape_label_name)
generate_openmetrics = cast(
    "Callable[..., bytes]",
    _om.generate_latest,  # pyright: ignore[reportUnknownMemberType]
)
_parse_openmetrics = cast(
    "Callable[[str], Iterable[Metric]]",
    _om_parser.text_string_to_metric_families,  # pyright: ignore[reportUnknownMemberType]
)
_unescape_help_text = cast(
    "Callable[[str], str]",
    _om_parser._unescape_help,  # noqa: SLF001  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
)

# --- the grammar ----------------------------------------------------------------------------

_LEGACY_METRIC: Final = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LEGACY_LABEL: Final = r"[a-zA-Z_][a-zA-Z0-9_]*"
_QUOTED: Final = r'"(?:[^"\\\n]|\\[\\n"])*"'
"""A quoted string with the three escapes OpenMetrics has (and prometheus_client writes)."""
_LABEL: Final = rf"(?:{_LEGACY_LABEL}|{_QUOTED})={_QUOTED}"
_LABELS: Final = rf"{_LABEL}(?:,{_LABEL})*"
_NUMBER: Final = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN"
_TIMESTAMP: Final = r"-?[0-9]+(?:\.[0-9]+)?"

_LEGACY_METRIC_RE: Final = re.compile(_LEGACY_METRIC)
_LEGACY_LABEL_RE: Final = re.compile(_LEGACY_LABEL)
_LABEL_RE: Final = re.compile(rf"({_LEGACY_LABEL}|{_QUOTED})=({_QUOTED})")
_KEY_RE: Final = re.compile(
    rf"(?:(?P<name>{_LEGACY_METRIC})(?:\{{(?P<labels>{_LABELS})?\}})?"
    rf"|\{{(?P<quoted>{_QUOTED})(?:,(?P<qlabels>{_LABELS}))?\}})"
)
_REST_RE: Final = re.compile(
    rf" (?P<value>{_NUMBER})(?: (?P<ts>{_TIMESTAMP}))?"
    rf"(?P<exemplar> # \{{(?:{_LABELS})?\}} (?:{_NUMBER})(?: {_TIMESTAMP})?)?"
)
_META_RE: Final = re.compile(
    rf"# (?P<what>HELP|TYPE|UNIT) (?P<name>{_LEGACY_METRIC}|{_QUOTED})(?: (?P<text>.*))?"
)
_ESCAPED_RE: Final = re.compile(r"\\[\\n\"]")
_UNESCAPED: Final = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_VALUE_BYTES: Final = b"0123456789.eE+-InfNa"
"""Every character a sample value may have; ``float()`` checks the rest."""


def legacy_metric(name: str) -> bool:
    """Tell whether *name* is a metric name without quotes."""
    return _LEGACY_METRIC_RE.fullmatch(name) is not None


def legacy_label(name: str) -> bool:
    """Tell whether *name* is a label name without quotes."""
    return _LEGACY_LABEL_RE.fullmatch(name) is not None


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPED_RE.sub(lambda match: _UNESCAPED[match.group()], text)


def _unquote(text: str) -> str:
    """Return a name written legacy or quoted (with escapes) as it is."""
    return _unescape(text[1:-1]) if text.startswith('"') else text


def label_text(name: str, value_text: str) -> str:
    """Write a label as prometheus_client does (allow-utf-8); *value_text* is escaped."""
    return f'{escape_label_name(name, ALLOWUTF8)}="{value_text}"'


def write_key(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """Write a sample's name and labels as prometheus_client's OpenMetrics writer does."""
    text = ",".join(label_text(n, v) for n, v in labels)
    if legacy_metric(name):
        return f"{name}{{{text}}}" if text else name
    quoted = escape_metric_name(name, ALLOWUTF8)
    return f"{{{quoted},{text}}}" if text else f"{{{quoted}}}"


def split_key(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """Return the name and labels (names unescaped, values as written) of a key, if valid."""
    match = _KEY_RE.fullmatch(text)
    if match is None:
        return None
    if match["name"] is not None:
        name, labels = match["name"], match["labels"]
    else:
        name, labels = _unescape(match["quoted"][1:-1]), match["qlabels"]
    return name, [(_unquote(m[1]), m[2][1:-1]) for m in _LABEL_RE.finditer(labels or "")]


def _numbers(texts: Sequence[str]) -> list[float] | None:
    """Return the values of *texts* if each is a number every OpenMetrics parser reads."""
    joined = "".join(texts)
    if not joined.isascii():  # float() would read other scripts' digits and spaces
        return None
    if joined.encode().translate(None, _VALUE_BYTES) or "-N" in joined or "+N" in joined:
        return None
    try:
        return list(map(float, texts))
    except ValueError:
        return None


class Unreadable(Exception):  # noqa: N818 -- a signal carrying a reason
    """A worker's answer that the merger cannot use."""


class _Unusual(Exception):  # noqa: N818 -- a signal
    """Valid OpenMetrics, perhaps, but not as prometheus_client writes it."""


# --- families and keys ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Header:
    """A family's metadata, as one worker wrote it."""

    name: str
    kind: str
    help: str
    unit: str

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Return the suffixes of the family's samples, in the order they are written."""
        return SUFFIXES[self.kind]

    def sample_names(self) -> frozenset[str]:
        """Return every sample name the family may write (which other families must avoid)."""
        return frozenset(self.name + suffix for suffix in (*self.suffixes, ""))


class Key:
    """What one sample's name and labels say, worked out once and kept across scrapes."""

    __slots__ = (
        "_segments",
        "canonical",
        "group",
        "labels",
        "legacy",
        "name",
        "rank",
        "suffix",
        "top",
    )

    def __init__(
        self, name: str, suffix: str, labels: list[tuple[str, str]], *, bound: str, order: int
    ) -> None:
        self.name = name
        self.suffix = suffix
        self.labels = tuple(sorted(labels))  # names unescaped, values as written
        self.legacy = legacy_metric(name) and all(legacy_label(n) for n, _ in self.labels)
        self.canonical = write_key(name, self.labels)
        """The key as prometheus_client writes it: the series' identity."""
        self.top = self.labels[-1][0] if self.labels else ""
        """The label name that sorts last."""
        self.group = tuple(pair for pair in self.labels if pair[0] != bound)
        """The labels that the samples of one OpenMetrics MetricPoint share."""
        numeric = bound in ("le", "quantile")
        position = float(_unescape(dict(self.labels)[bound])) if numeric else 0.0
        self.rank = (order, position)
        """Where the sample goes in its MetricPoint: by suffix, then bound."""
        self._segments: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def segments(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Return the text around the labels *names* (sorted) when added to this key.

        The labels go between the segments: ``s0 L0 s1 L1 s2`` for two.  A
        label the sample already has is renamed ``exported_<name>``, as
        Prometheus renames it (``exported_exported_<name>`` if that is taken).
        """
        if not names:
            return (self.canonical,)
        known = self._segments  # one attribute: threads may race to set it
        if known is not None and known[0] == names:
            return known[1]
        own = dict(self.labels)
        taken = set(own) | set(names)
        items: list[tuple[str, str | None]] = [(n, v) for n, v in own.items() if n not in names]
        for clash in sorted((n for n in names if n in own), key=len):
            renamed = "exported_" + clash
            while renamed in taken:
                renamed = "exported_" + renamed
            taken.add(renamed)
            items.append((renamed, own[clash]))
        items.extend((n, None) for n in names)
        items.sort(key=lambda item: item[0])
        if legacy_metric(self.name):
            text, first = self.name + "{", True
        else:
            text, first = "{" + escape_metric_name(self.name, ALLOWUTF8), False
        segments: list[str] = []
        for label, value in items:
            if not first:
                text += ","
            first = False
            if value is None:
                segments.append(text)
                text = ""
            else:
                text += label_text(label, value)
        segments.append(text + "}")
        self._segments = (names, tuple(segments))
        return self._segments[1]


def _bound(header: Header, suffix: str) -> str:
    """Return the label that tells a MetricPoint's samples apart, if any."""
    if header.kind in ("histogram", "gaugehistogram") and suffix == "_bucket":
        return "le"
    if header.kind == "summary" and suffix == "":
        return "quantile"
    return header.name if header.kind == "stateset" else ""


class KeyCache:
    """The keys of one family already checked, with what they say."""

    __slots__ = ("header", "irregular", "keys", "nonlegacy", "top")

    def __init__(self, header: Header) -> None:
        self.header = header
        self.keys: dict[str, Key] = {}
        # What every key checked so far says; never reset, so a block may trust them.
        self.top = ""  # no label name sorts after this
        self.irregular = False  # some key is not as simple as most (see Block.regular)
        self.nonlegacy = False  # some key has a name that is not a legacy one

    def examine(self, text: str) -> Key | None:
        """Check a key of this family; remember it if valid."""
        split = split_key(text)
        key = None if split is None else self._key(*split)
        if key is None:
            return None
        # Flags first: a thread that finds the key must find them set.
        self.top = max(self.top, key.top)
        self.nonlegacy = self.nonlegacy or not key.legacy
        self.irregular = self.irregular or not (
            key.labels
            and key.legacy
            and key.canonical == text
            and "\\" not in text
            and '"} ' not in text
        )
        self.keys[text] = key
        return key

    def _key(self, name: str, labels: list[tuple[str, str]]) -> Key | None:
        header = self.header
        suffix = name[len(header.name) :]
        names = [label for label, _ in labels]
        bound = _bound(header, suffix)
        if (
            not name.startswith(header.name)
            or suffix not in header.suffixes
            or len(set(names)) != len(names)
            or any(not n or n.startswith("__") for n in names)
            or (bound and bound not in names)
        ):
            return None
        order = -1 if suffix == "_bucket" else header.suffixes.index(suffix)
        try:
            key = Key(name, suffix, labels, bound=bound, order=order)
        except ValueError:  # a bucket bound or quantile that is not a number
            return None
        return None if math.isnan(key.rank[1]) else key


class Caches:
    """Checked keys of every family, shared by every worker and scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[tuple[str, str], KeyCache] = {}

    def of(self, header: Header) -> KeyCache:
        """Return the cache of *header*'s family (its help and unit do not matter)."""
        cache = self._caches.get((header.name, header.kind))
        if cache is None:
            with self._lock:
                cache = self._caches.setdefault((header.name, header.kind), KeyCache(header))
        return cache

    def trim(self, series: Mapping[str, int]) -> None:
        """Forget the keys of families whose caches outgrew their *series*."""
        with self._lock:
            for (name, _), cache in self._caches.items():
                if len(cache.keys) > CACHE_SLACK * series.get(name, 0) + CACHE_FLOOR:
                    cache.keys = {}


# --- answers --------------------------------------------------------------------------------


@dataclasses.dataclass
class Odd:
    """A sample line with a timestamp or an exemplar."""

    value: str
    timestamp: str | None
    exemplar: str  # " # {...} v [t]", or ""


class Block:
    """One family's samples in one worker's answer."""

    __slots__ = ("header", "keys", "legacy", "odd", "regular", "rests", "text", "top", "values")

    def __init__(
        self,
        header: Header,
        text: str = "",
        cache: KeyCache | None = None,
        *,
        keys: list[Key],
        rests: list[str],
        values: list[float],
        odd: dict[int, Odd],
    ) -> None:
        self.header = header
        self.text = text  # the sample lines as written, without the last newline
        self.keys = keys
        self.rests = rests  # what follows each key and a space: value, timestamp, exemplar
        self.values = values
        self.odd = odd
        # What the family's keys so far say of these ones (never less than the truth):
        self.regular = cache is not None and not cache.irregular and not odd
        """Every line is "key value"; every key has labels, legacy names, no backslash,
        no '"} ' but the one that ends it; every key is written as prometheus_client
        writes it."""
        self.top = "" if cache is None else cache.top
        """No label name sorts after this."""
        self.legacy = cache is None or not cache.nonlegacy
        """Every name is a legacy one."""


class Exposition:
    """One worker's answer, read: its families in order."""

    __slots__ = ("blocks", "peaks")

    def __init__(self, blocks: dict[str, Block]) -> None:
        self.blocks = blocks
        self.peaks: dict[str, dict[str, float]] = {}
        """Aggregate mode: each family's highest counter values seen, where higher than now."""

    def slim(self) -> Exposition:
        """Return the keys and values of this answer, without its text (a copy to keep)."""
        slim = Exposition(
            {
                name: Block(block.header, keys=block.keys, rests=[], values=block.values, odd={})
                for name, block in self.blocks.items()
            }
        )
        slim.peaks = self.peaks
        return slim


def read(body: bytes, caches: Caches) -> Exposition:
    """Read a worker's answer.

    Raises:
        Unreadable: The merger cannot use it; the message says why.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError as error:
        msg = f"not UTF-8 ({error.reason} at byte {error.start})"
        raise Unreadable(msg) from None
    try:
        return _read_text(text, caches)
    except _Unusual:
        if len(body) > FALLBACK_LIMIT:
            raise Unreadable("not OpenMetrics as prometheus_client writes it") from None
    try:
        families = list(_parse_openmetrics(text))
        rewritten = generate_openmetrics(Families(families), escaping=ALLOWUTF8).decode()
    except Exception as error:  # noqa: BLE001 -- prometheus_client raises many kinds
        msg = f"not OpenMetrics: {error}"
        raise Unreadable(msg) from None
    try:
        return _read_text(rewritten, caches)
    except _Unusual:  # pragma: no cover -- prometheus_client writes only what its parser read
        raise Unreadable("not OpenMetrics as prometheus_client writes it") from None


class Families:
    """A collector yielding the given families: prometheus_client's writers take one."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        """Return the families."""
        return self._families


def _read_text(text: str, caches: Caches) -> Exposition:
    if text.endswith(EOF):
        end = len(text) - len(EOF)
    elif text.endswith(EOF[:-1]):
        end = len(text) - len(EOF) + 1
    else:
        raise Unreadable("no # EOF at its end (cut short?)")
    if end and text[end - 1] != "\n":
        raise _Unusual
    blocks: dict[str, Block] = {}
    taken: set[str] = set()
    position = 0
    while position < end:
        header, position = _read_header(text, position, end)
        names = header.sample_names()
        if header.name in blocks or not taken.isdisjoint(names):
            raise _Unusual  # a family written twice, or clashing with another
        taken |= names
        if position < end and text[position] != "#":
            stop = _next_metadata(text, position, end)
            block = _read_block(header, text[position:stop], caches.of(header))
            position = stop + 1
        else:
            block = Block(header, keys=[], rests=[], values=[], odd={})
        blocks[header.name] = block
    return Exposition(blocks)


def _next_metadata(text: str, position: int, end: int) -> int:
    """Return where the newline before the next metadata line is (or the # EOF line)."""
    # A sample line never starts with '#', but an exemplar or a label value may hold one.
    found = text.find("#", position, end)
    while found >= 0 and text[found - 1] != "\n":
        found = text.find("#", found + 1, end)
    return (end if found < 0 else found) - 1


def _read_header(text: str, position: int, end: int) -> tuple[Header, int]:
    """Read one family's metadata lines; return them and where its samples start."""
    found: dict[str, str] = {}
    name: str | None = None
    while position < end and text.startswith("# ", position):
        stop = text.index("\n", position)
        match = _META_RE.fullmatch(text, position, stop)
        if match is None:
            raise _Unusual
        line_name = _unquote(match["name"])
        if name is not None and line_name != name:
            break
        what = match["what"]
        if what in found or match["text"] is None:
            raise _Unusual
        name = line_name
        found[what] = match["text"]
        position = stop + 1
    kind = found.get("TYPE", "")  # none: left to prometheus_client, which makes it unknown
    unit = found.get("UNIT", "")
    if (
        name is None
        or kind not in SUFFIXES
        or (unit and (not name.endswith("_" + unit) or kind in ("info", "stateset")))
    ):
        raise _Unusual
    help_text = found.get("HELP", "")
    if "\\" in help_text:
        help_text = _unescape_help_text(help_text)
    return Header(name, kind, help_text, unit), position


def _read_block(header: Header, text: str, cache: KeyCache) -> Block:
    """Read one family's sample lines (without the last newline)."""
    # The common line is "key value": split at the last space, look the key up.  No
    # tuple per line (rpartition's): so many would wake the garbage collector.
    lines = text.split("\n")
    spaces = [line.rfind(" ") for line in lines]
    texts = [line[:space] for line, space in zip(lines, spaces, strict=True)]
    rests = [line[space + 1 :] for line, space in zip(lines, spaces, strict=True)]
    keys: list[Key | None] = list(map(cache.keys.get, texts))
    odd: dict[int, Odd] = {}
    numbers = rests
    if None in keys:
        numbers = rests.copy()
        for index, key in enumerate(keys):
            if key is None:
                keys[index], rests[index], line_odd = _read_line(lines[index], spaces[index], cache)
                if line_odd is not None:
                    odd[index] = line_odd
                    numbers[index] = line_odd.value
    values = _numbers(numbers)
    if values is None:
        msg = f"a value of {header.name} is not a number"
        raise Unreadable(msg)
    return Block(
        header, text, cache, keys=cast("list[Key]", keys), rests=rests, values=values, odd=odd
    )


def _read_line(line: str, space: int, cache: KeyCache) -> tuple[Key, str, Odd | None]:
    """Read a line whose key is new, or that has a timestamp or an exemplar."""
    if space > 0:
        key = cache.examine(line[:space])
        if key is not None:
            return key, line[space + 1 :], None
    match = _KEY_RE.match(line)
    if match is None:
        raise _Unusual
    key_text = match.group()
    key = cache.keys.get(key_text) or cache.examine(key_text)
    rest = _REST_RE.fullmatch(line, match.end())
    if key is None or rest is None:
        raise _Unusual
    exemplar = rest["exemplar"] or ""
    if exemplar and _EXEMPLARS.get(cache.header.kind) != key.suffix:
        raise _Unusual
    return key, line[match.end() + 1 :], Odd(rest["value"], rest["ts"], exemplar)
