"""Serving a registry to scrapers, independent of any web framework.

One implementation of what every mount point (aiohttp, Twisted) must do with
a scrape: check credentials, negotiate the format, apply ``name[]`` filters,
render off the event loop, share one render among concurrent scrapes of the
same view, and compress.  The adapters hand over the request's headers and
query string as they arrived (text or bytes), translate them into
:meth:`Exposition.scrape` calls and :class:`Reply` objects into responses;
every parsing rule lives here, so that no two mount points can disagree.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import zlib

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final, cast
from urllib.parse import unquote_to_bytes

from prometheus_client.exposition import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_PLAIN_0_0_4,
    CONTENT_TYPE_PLAIN_1_0_0,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from ._auth import BasicAuth, BearerToken, header_bytes
from ._registries import registry_or_default
from ._render import render_pieces
from ._render.pieces import Pieces


_log = logging.getLogger("promloop")

GZIP_LEVEL: Final = 1
"""Level 1 is about 13 times cheaper than level 9 at 100k series, for ~4% more bytes."""

_GZIP_WBITS: Final = 31
"""zlib's gzip container, with mtime 0: what ``gzip.compress(body, mtime=0)`` writes."""

GATHER_SECONDS: Final = 0.002
"""How long a render waits for concurrent scrapes of the same view to join it.

Scrapes that arrive together are parsed in the same few event-loop
iterations; 2 ms lets them share one render, and costs a single scrape less
than a millisecond of a render that takes tens of them.
"""

_ESCAPINGS: Final = frozenset(
    {
        openmetrics_exposition.ALLOWUTF8,
        openmetrics_exposition.UNDERSCORES,
        openmetrics_exposition.DOTS,
        openmetrics_exposition.VALUES,
    }
)

# prometheus_client's OpenMetrics module has no annotations: typed once, here.
_UNDERSCORES: Final[str] = openmetrics_exposition.UNDERSCORES
_OPENMETRICS_CONTENT_TYPE: Final[str] = openmetrics_exposition.CONTENT_TYPE_LATEST

SCRAPE_TIMEOUT_HEADER: Final = "X-Prometheus-Scrape-Timeout-Seconds"
"""How long the scraper waits for an answer; Prometheus sends it with every scrape."""

DEFAULT_SCRAPE_SECONDS: Final = 30.0
"""How long a scrape that does not say waits for its render before it gets 503."""

_LONGEST_SCRAPE_SECONDS: Final = 300.0
_ANSWER_MARGIN_SECONDS: Final = 0.25
"""Answer this much before the scraper gives up, so that it reads the 503."""

Header = str | bytes | None
"""A header's value as the framework hands it over: text, raw bytes, or absent."""

Spawn = Callable[[Callable[[], None]], object]
"""Run a function in a worker thread (the adapter's thread pool)."""


def joined(lines: Sequence[str] | Sequence[bytes] | None) -> Header:
    """Return the lines of a list-valued header (``Accept``) as one value, as they arrived.

    A header sent on several lines means what one line holding their values,
    separated by commas, means (RFC 9110, section 5.3).  Reading one line
    only would make mount points disagree: aiohttp's ``get()`` reads the
    first, Twisted's ``getHeader()`` the last.
    """
    if not lines:
        return None
    if isinstance(lines[0], bytes):
        return b", ".join(cast("Sequence[bytes]", lines))
    return ", ".join(cast("Sequence[str]", lines))


def single(lines: Sequence[str] | Sequence[bytes] | None) -> Header:
    """Return the value of a header that is sent once (``Authorization``); None if repeated.

    Two ``Authorization`` lines are malformed credentials, not a choice
    between them that each framework would make its own way.
    """
    return lines[0] if lines is not None and len(lines) == 1 else None


@dataclasses.dataclass(frozen=True)
class Format:
    """An exposition format and the content type that announces it."""

    openmetrics: bool
    content_type: str
    escaping: str = _UNDERSCORES

    def render(
        self, registry: Any, names: frozenset[str] | None = None, *, created: bool = True
    ) -> bytes:
        """Render *registry* in this format, only the samples in *names* if given.

        ``created=False`` leaves out the ``_created`` samples.
        """
        return b"".join(self.render_pieces(registry, names, created=created))

    def render_pieces(
        self, registry: Any, names: frozenset[str] | None = None, *, created: bool = True
    ) -> list[bytes]:
        """Render as :meth:`render` does, in pieces (see :func:`gzipped`)."""
        return render_pieces(
            registry,
            openmetrics=self.openmetrics,
            escaping=self.escaping,
            names=names,
            created=created,
        )


DEFAULT_FORMAT: Final = Format(openmetrics=False, content_type=CONTENT_TYPE_LATEST)
"""What a scrape without ``Accept`` gets: prometheus-async's answer."""

_TEXT_0_0_4: Final = Format(openmetrics=False, content_type=CONTENT_TYPE_PLAIN_0_0_4)


@dataclasses.dataclass(frozen=True)
class _MediaRange:
    media_type: str
    params: dict[str, str]
    quality: float


_OWS: Final = " \t"
"""The whitespace HTTP allows around list items and parameters (RFC 9110's OWS), and no other."""


def _parse_accept(header: str) -> list[_MediaRange]:
    ranges: list[_MediaRange] = []
    for entry in header.split(","):
        media_type, *raw_params = (part.strip(_OWS) for part in entry.split(";"))
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip(_OWS).lower()] = value.strip(_OWS).strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            continue  # A malformed entry is ignored, as RFC 9110 allows.
        if media_type:
            ranges.append(_MediaRange(media_type.lower(), params, min(max(quality, 0.0), 1.0)))
    return ranges


def _text(value: Header) -> str:
    r"""Return a header value as the bytes it arrived as, one character per byte.

    aiohttp hands over text decoded as UTF-8, Twisted the bytes: reading both
    as Latin-1 gives the same bytes the same answer on every mount point
    (decoded, ``\xc2\x85`` would be whitespace to one and not to the other).
    Bytes outside ASCII can match no token anyway.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        # Text that no bytes decode to comes from a stand-in request, not a socket.
        value = header_bytes(value) or value.encode("utf-8", "surrogatepass")
    return value.decode("latin-1")


def negotiate(accept: Header) -> Format:
    """Choose the exposition format for an ``Accept`` header.

    OpenMetrics 1.0.0 when the header prefers some OpenMetrics version over
    every text type (``q=0`` means never), whichever version it names: 1.0.0
    is the newest promloop writes (a request for 2.0.0 gets 1.0.0, and is told
    so), and a request for 0.0.1 gets it too, as prometheus-async answers (the
    lines are the same; 0.0.1 names no escaping, so the answer is escaped with
    underscores).  Otherwise text, in the version the header names (0.0.4 or
    1.0.0).  A 1.0.0 answer always states its escaping scheme: the one asked
    for, or ``underscores``; 0.0.4 answers state none.  No header, a wildcard,
    or a text type without a version gets :data:`DEFAULT_FORMAT`,
    prometheus-async's answer.  prometheus_client's ``choose_encoder``
    differs: it ignores q-values and answers text to a request for
    OpenMetrics 0.0.1.
    """
    ranges = _parse_accept(_text(accept))
    best_openmetrics = _preferred(ranges, ("application/openmetrics-text",))
    best_text = _preferred(ranges, ("text/plain", "text/*", "*/*"))

    text_quality = 0.0 if best_text is None else best_text.quality
    if best_openmetrics is not None and best_openmetrics.quality > text_quality:
        params = best_openmetrics.params
        if params.get("version") == "0.0.1":
            params = {}  # escaping= belongs to 1.0.0
        return _escaped(True, _OPENMETRICS_CONTENT_TYPE, params)
    if best_text is None or best_text.media_type != "text/plain":
        return DEFAULT_FORMAT
    version = best_text.params.get("version")
    if version == "0.0.4":
        return _TEXT_0_0_4
    if version == "1.0.0":
        return _escaped(False, CONTENT_TYPE_PLAIN_1_0_0, best_text.params)
    return DEFAULT_FORMAT


def _preferred(ranges: list[_MediaRange], media_types: tuple[str, ...]) -> _MediaRange | None:
    """Return the first of the highest-quality acceptable ranges among *media_types*."""
    best = None
    for candidate in ranges:
        if (
            candidate.media_type in media_types
            and candidate.quality > 0
            and (best is None or candidate.quality > best.quality)
        ):
            best = candidate
    return best


def _escaped(openmetrics: bool, content_type: str, params: dict[str, str]) -> Format:
    """Return a 1.0.0 format whose content type states its escaping scheme.

    The scheme the scraper asked for, or ``underscores`` when it named none
    (or one promloop does not know): Prometheus 3 refuses a 1.0.0 answer
    that does not say how its names are escaped.
    """
    escaping = params.get("escaping")
    if escaping not in _ESCAPINGS:
        escaping = _UNDERSCORES
    return Format(openmetrics, f"{content_type}; escaping={escaping}", escaping)


def gzip_accepted(accept_encoding: Header) -> bool:
    """Tell whether an ``Accept-Encoding`` header allows gzip (q-values honoured)."""
    explicit: float | None = None
    wildcard: float | None = None
    for candidate in _parse_accept(_text(accept_encoding)):
        if candidate.media_type in ("gzip", "x-gzip"):
            explicit = max(explicit or 0.0, candidate.quality)
        elif candidate.media_type == "*":
            wildcard = candidate.quality
    if explicit is not None:
        return explicit > 0
    return wildcard is not None and wildcard > 0


def requested_names(query: str | bytes) -> frozenset[str]:
    """Return the ``name[]`` values of a query string as it arrived (still percent-encoded).

    Text is turned back into the bytes it was decoded from (see
    :func:`promloop._auth.header_bytes`), so that every framework's request
    yields the same names.

    Raises:
        ValueError: A value is not UTF-8 (``UnicodeDecodeError``), or the
            query is text that no bytes decode to.
    """
    raw = header_bytes(query)
    if raw is None:
        msg = "the query string is not text decoded from bytes"
        raise ValueError(msg)
    names: set[str] = set()
    for pair in raw.split(b"&"):
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == b"name[]":
            names.add(unquote_to_bytes(value.replace(b"+", b" ")).decode())
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class Reply:
    """What an adapter sends back: status, headers, and the body in pieces.

    An adapter writes the pieces one at a time, letting the event loop run
    between two: a million series are some 35 MB, or 5 MB gzipped, which
    one write would copy (twice, in aiohttp on Python 3.11) while holding
    the GIL.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    pieces: tuple[bytes, ...]

    @property
    def length(self) -> int:
        """The body's length, in bytes."""
        return sum(map(len, self.pieces))

    @property
    def body(self) -> bytes:
        """The whole body, joined: for replies known to be small."""
        return b"".join(self.pieces)


def plain_reply(status: int, text: str, *headers: tuple[str, str]) -> Reply:
    """Return a reply of plain *text* (an error's explanation) with *status*."""
    return Reply(
        status, (*headers, ("Content-Type", "text/plain; charset=utf-8")), (text.encode(),)
    )


def scrape_seconds(timeout_header: Header) -> float:
    """Return how long a scrape may wait for its answer.

    A little less than the scraper's own timeout when it states one in
    ``X-Prometheus-Scrape-Timeout-Seconds`` (as Prometheus does), so that it
    reads the 503 instead of giving up on its own; :data:`DEFAULT_SCRAPE_SECONDS`
    otherwise, or for a value that is not a positive number of seconds.
    """
    try:
        stated = float(_text(timeout_header) or "nan")
    except ValueError:
        return DEFAULT_SCRAPE_SECONDS
    if not 0 < stated < _LONGEST_SCRAPE_SECONDS:  # NaN, too, is refused here
        return DEFAULT_SCRAPE_SECONDS
    return max(stated - _ANSWER_MARGIN_SECONDS, stated / 2)


def too_slow(registry: object, seconds: float) -> Reply:
    """Return the 503 for a scrape whose render took longer than *seconds*, and log it."""
    _log.warning(
        "Rendering the metrics of %r took longer than %.3g s, as long as the scraper waits; "
        "answered 503.  A collector may be blocked.",
        registry,
        seconds,
    )
    return plain_reply(
        503,
        f"503 Service Unavailable: collecting the metrics took longer than {seconds:.3g} s.\n",
    )


BAD_NAMES: Final = plain_reply(400, "400 Bad Request: name[] values must be UTF-8.\n")
"""The answer to a scrape whose ``name[]`` values are not UTF-8."""


def encoded(fmt: Format, pieces: list[bytes], *, compress: bool) -> Reply:
    """Return the 200 reply carrying a body in *fmt*, gzipped if *compress*.

    Args:
        fmt: The format the body is written in.
        pieces: The body, in pieces (a render's, or the fan-in's); emptied if
            compressed.
        compress: Gzip the body.
    """
    headers = [("Content-Type", fmt.content_type)]
    if compress:
        pieces = gzipped(pieces)
        headers.append(("Content-Encoding", "gzip"))
    return Reply(200, tuple(headers), tuple(pieces))


def gzipped(pieces: list[bytes]) -> list[bytes]:
    """Compress a body given in pieces, a piece at a time, emptying *pieces*.

    The result, joined, is what compressing the joined body at once gives,
    byte for byte (on Python 3.11 and later, ``gzip.compress(b"".join(pieces),
    GZIP_LEVEL, mtime=0)``).  But zlib lets go of the GIL while it
    compresses each piece, where compressing the joined body would first
    copy it whole while holding the GIL; and each piece is let go as soon as
    it is compressed.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    output = Pieces()
    pieces.reverse()
    while pieces:
        output.add(compressor.compress(pieces.pop()))
    output.add(compressor.flush())
    return output.done()


SCRAPE_METHODS: Final = frozenset({"GET", "HEAD"})
"""The methods that read metrics; any other gets 405, once its credentials are checked."""


class Guard:
    """Refuse requests without valid credentials, on any path of any mount point.

    Args:
        auth: Credentials every request must carry, or None for none.

    Raises:
        TypeError: *auth* is not one of promloop's credential types.
    """

    def __init__(self, auth: object) -> None:  # checked here: untyped callers may pass anything
        if auth is not None and not isinstance(auth, (BasicAuth, BearerToken)):
            # The type alone: a token passed as a string must not reach a log in the message.
            msg = (
                "auth= must be a promloop.BasicAuth or promloop.BearerToken, "
                f"not {type(auth).__name__}."
            )
            raise TypeError(msg)
        self.auth: BasicAuth | BearerToken | None = auth

    def refusal(self, authorization: Header) -> Reply | None:
        """Return the 401 answer for a request without valid credentials, else None.

        Args:
            authorization: The ``Authorization`` header as it arrived: raw
                bytes, or text decoded from them as UTF-8 (with
                ``surrogateescape``, as aiohttp does).
        """
        if self.auth is None or self.auth.accepts(authorization):
            return None
        return plain_reply(
            401,
            "401 Unauthorized: valid credentials are required to read these metrics.\n",
            ("WWW-Authenticate", self.auth.challenge()),
        )


class SharedRenders:
    """Let concurrent scrapes of one view share one render.

    A scrape joins a render only while that render has not started reading
    the registry: so every scrape reflects every change made before it
    arrived, and no output is ever cached.  Before it starts reading, a render
    waits *gather* seconds in its worker thread for the scrapes that arrive
    with it (Prometheus HA pairs, a burst of clients); a scrape arriving
    mid-render starts a render of its own.

    Args:
        gather: How long a render waits for company before reading.
    """

    def __init__(self, gather: float = GATHER_SECONDS) -> None:
        self._gather = gather
        self._lock = threading.Lock()
        self._joinable: dict[Hashable, concurrent.futures.Future[Reply]] = {}

    def submit(
        self, view: Hashable, render: Callable[[], Reply], spawn: Spawn
    ) -> concurrent.futures.Future[Reply]:
        """Return the future of a render of *view*, joining one that has not started."""
        with self._lock:
            future = self._joinable.get(view)
            if future is not None:
                return future
            future = concurrent.futures.Future[Reply]()
            # Nobody may cancel a render that other scrapes wait for: a client
            # that goes away (asyncio.wrap_future() propagates cancellation)
            # must not fail the others.
            future.set_running_or_notify_cancel()
            self._joinable[view] = future

        def run() -> None:
            if self._gather:
                time.sleep(self._gather)
            # From here on the registry is being read: later scrapes start anew.
            self._forget(view, future)
            try:
                future.set_result(render())
            except BaseException as error:  # noqa: BLE001 -- handed to every waiter
                future.set_exception(error)

        try:
            spawn(run)
        except BaseException:
            self._forget(view, future)
            raise
        return future

    def _forget(self, view: Hashable, future: concurrent.futures.Future[Reply]) -> None:
        with self._lock:
            if self._joinable.get(view) is future:
                del self._joinable[view]


def _done(reply: Reply) -> concurrent.futures.Future[Reply]:
    future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
    future.set_result(reply)
    return future


class Exposition:
    """A registry served with the rules every promloop mount point shares.

    Args:
        registry: The registry (any Collector) to serve; the global
            ``REGISTRY`` by default.
        auth: Credentials every scrape must carry, or None.
        disable_compression: Never gzip, even when the scraper allows it.
        created: Serve the ``_created`` samples of counters, histograms and
            summaries; False leaves them out of this endpoint's answers only.
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        auth: object = None,  # checked by Guard: untyped callers may pass anything
        disable_compression: bool = False,
        created: bool = True,
    ) -> None:
        registry = registry_or_default(registry)
        if not callable(getattr(registry, "collect", None)):
            msg = f"registry= must be a CollectorRegistry (or have collect()), not {registry!r}."
            raise TypeError(msg)
        self.registry = registry
        self.guard = Guard(auth)
        self.disable_compression = disable_compression
        self.created = created
        self._renders = SharedRenders()

    def scrape(
        self,
        *,
        authorization: Header,
        accept: Header,
        accept_encoding: Header,
        query: str | bytes,
        spawn: Spawn,
        may_compress: bool = True,
        method: str | bytes = "GET",
    ) -> concurrent.futures.Future[Reply]:
        """Answer one scrape; the rendering runs in a thread started by *spawn*.

        Credentials are checked first: a request without valid ones gets 401
        before anything else of it is parsed, whatever its method; then a
        method other than GET or HEAD gets 405.  Every header is passed as it
        arrived, text or raw bytes.

        Args:
            authorization: The ``Authorization`` header, if any.
            accept: The ``Accept`` header, if any.
            accept_encoding: The ``Accept-Encoding`` header, if any.
            query: The query string, still percent-encoded; its ``name[]``
                values restrict the answer.
            spawn: Runs a function in a worker thread.
            may_compress: False when something else (a wrapping resource)
                compresses the answer: then promloop does not.
            method: The request's method (case matters, as in HTTP).
        """
        refusal = self.refusal(authorization)
        if refusal is not None:
            return _done(refusal)
        if _text(method) not in SCRAPE_METHODS:
            return _done(
                plain_reply(
                    405,
                    "405 Method Not Allowed: metrics are read with GET or HEAD.\n",
                    ("Allow", "GET, HEAD"),
                )
            )
        return self.render(
            accept=accept,
            accept_encoding=accept_encoding,
            query=query,
            spawn=spawn,
            may_compress=may_compress,
        )

    def render(
        self,
        *,
        accept: Header,
        accept_encoding: Header,
        query: str | bytes,
        spawn: Spawn,
        may_compress: bool = True,
    ) -> concurrent.futures.Future[Reply]:
        """Render for a scrape whose credentials :meth:`refusal` has accepted.

        A ``name[]`` value that is not UTF-8 gets 400.
        """
        try:
            names = requested_names(query)
        except ValueError:
            return _done(BAD_NAMES)
        view = (
            negotiate(accept),
            names,
            may_compress and not self.disable_compression and gzip_accepted(accept_encoding),
        )
        return self._renders.submit(view, lambda: self._render(*view), spawn)

    def refusal(self, authorization: Header) -> Reply | None:
        """Return the 401 answer for a request without valid credentials, else None."""
        return self.guard.refusal(authorization)

    def _render(self, fmt: Format, names: frozenset[str], compress: bool) -> Reply:
        try:
            body = fmt.render_pieces(self.registry, names or None, created=self.created)
        except Exception:  # noqa: BLE001 -- a broken collector is the scraper's 500, and logged
            _log.exception("Rendering the metrics of %r failed.", self.registry)
            return plain_reply(
                500, "500 Internal Server Error: collecting the metrics failed; see the log.\n"
            )
        return encoded(fmt, body, compress=compress)
