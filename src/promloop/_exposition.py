"""Serving a registry to scrapers, independent of any web framework.

One implementation of what every mount point (aiohttp, Twisted) must do with
a scrape: check credentials, negotiate the format, apply ``name[]`` filters,
render off the event loop, share one render among concurrent scrapes of the
same view, and compress.  The adapters translate requests into
:meth:`Exposition.scrape` calls and :class:`Reply` objects into responses.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import logging
import threading
import time

from collections.abc import Callable, Collection, Hashable
from typing import Any, Final

from prometheus_client.exposition import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_PLAIN_0_0_4,
    CONTENT_TYPE_PLAIN_1_0_0,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from ._auth import BasicAuth, BearerToken
from ._registries import registry_or_default
from ._render import render


_log = logging.getLogger("promloop")

GZIP_LEVEL: Final = 1
"""Level 1 is about 13 times cheaper than level 9 at 100k series, for ~4% more bytes."""

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

Spawn = Callable[[Callable[[], None]], object]
"""Run a function in a worker thread (the adapter's thread pool)."""


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
        return render(
            registry,
            openmetrics=self.openmetrics,
            escaping=self.escaping,
            names=names,
            created=created,
        )


DEFAULT_FORMAT: Final = Format(openmetrics=False, content_type=CONTENT_TYPE_LATEST)
"""What a scrape without ``Accept`` gets: prometheus-async's answer."""


@dataclasses.dataclass(frozen=True)
class _MediaRange:
    media_type: str
    params: dict[str, str]
    quality: float


def _parse_accept(header: str) -> list[_MediaRange]:
    ranges: list[_MediaRange] = []
    for entry in header.split(","):
        media_type, *raw_params = (part.strip() for part in entry.split(";"))
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            continue  # A malformed entry is ignored, as RFC 9110 allows.
        if media_type:
            ranges.append(_MediaRange(media_type.lower(), params, min(max(quality, 0.0), 1.0)))
    return ranges


def _escaping(params: dict[str, str]) -> str | None:
    escaping = params.get("escaping")
    return escaping if escaping in _ESCAPINGS else None


def negotiate(accept: str | None) -> Format:
    """Choose the exposition format for an ``Accept`` header.

    OpenMetrics 1.0.0 when the header prefers some OpenMetrics version over
    every text type (``q=0`` means never); otherwise text, announced with the
    version the header names (0.0.4 or 1.0.0).  No header, a wildcard, or a
    text type without a version gets :data:`DEFAULT_FORMAT`.
    prometheus_client's ``choose_encoder`` differs: it ignores q-values and
    answers text to a request for OpenMetrics 0.0.1.
    """
    ranges = _parse_accept(accept or "")
    best_openmetrics = _preferred(ranges, ("application/openmetrics-text",))
    best_text = _preferred(ranges, ("text/plain", "text/*", "*/*"))

    text_quality = 0.0 if best_text is None else best_text.quality
    if best_openmetrics is not None and best_openmetrics.quality > text_quality:
        return _announced(True, _OPENMETRICS_CONTENT_TYPE, _escaping(best_openmetrics.params))
    if best_text is None or best_text.media_type != "text/plain":
        return DEFAULT_FORMAT
    version = best_text.params.get("version")
    if version == "0.0.4":
        return Format(openmetrics=False, content_type=CONTENT_TYPE_PLAIN_0_0_4)
    if version == "1.0.0":
        return _announced(False, CONTENT_TYPE_PLAIN_1_0_0, _escaping(best_text.params))
    return DEFAULT_FORMAT


def _preferred(ranges: list[_MediaRange], media_types: tuple[str, ...]) -> _MediaRange | None:
    """Return the first of the highest-quality ranges among *media_types*."""
    best = None
    for candidate in ranges:
        if candidate.media_type in media_types and (
            best is None or candidate.quality > best.quality
        ):
            best = candidate
    return best


def _announced(openmetrics: bool, content_type: str, escaping: str | None) -> Format:
    """Return a format whose content type names the escaping the scraper asked for."""
    if escaping is None:
        return Format(openmetrics, content_type)
    return Format(openmetrics, f"{content_type}; escaping={escaping}", escaping)


def gzip_accepted(accept_encoding: str | None) -> bool:
    """Tell whether an ``Accept-Encoding`` header allows gzip (q-values honoured)."""
    explicit: float | None = None
    wildcard: float | None = None
    for candidate in _parse_accept(accept_encoding or ""):
        if candidate.media_type in ("gzip", "x-gzip"):
            explicit = max(explicit or 0.0, candidate.quality)
        elif candidate.media_type == "*":
            wildcard = candidate.quality
    if explicit is not None:
        return explicit > 0
    return wildcard is not None and wildcard > 0


@dataclasses.dataclass(frozen=True)
class Reply:
    """What an adapter sends back: status, headers and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


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
        auth: object = None,  # checked here: untyped callers may pass anything
        disable_compression: bool = False,
        created: bool = True,
    ) -> None:
        registry = registry_or_default(registry)
        if not callable(getattr(registry, "collect", None)):
            msg = f"registry= must be a CollectorRegistry (or have collect()), not {registry!r}."
            raise TypeError(msg)
        if auth is not None and not isinstance(auth, (BasicAuth, BearerToken)):
            msg = f"auth= must be a promloop.BasicAuth or promloop.BearerToken, not {auth!r}."
            raise TypeError(msg)
        self.registry = registry
        self.auth = auth
        self.disable_compression = disable_compression
        self.created = created
        self._renders = SharedRenders()

    def scrape(
        self,
        *,
        authorization: str | None,
        accept: str | None,
        accept_encoding: str | None,
        names: Collection[str],
        spawn: Spawn,
    ) -> concurrent.futures.Future[Reply]:
        """Answer one scrape; the rendering runs in a thread started by *spawn*.

        Args:
            authorization: The ``Authorization`` header, if any.
            accept: The ``Accept`` header, if any.
            accept_encoding: The ``Accept-Encoding`` header, if any.
            names: The ``name[]`` query values; empty means every metric.
            spawn: Runs a function in a worker thread.
        """
        refusal = self.refusal(authorization)
        if refusal is not None:
            return _done(refusal)
        return self.render(accept=accept, accept_encoding=accept_encoding, names=names, spawn=spawn)

    def render(
        self,
        *,
        accept: str | None,
        accept_encoding: str | None,
        names: Collection[str],
        spawn: Spawn,
    ) -> concurrent.futures.Future[Reply]:
        """Render for a scrape whose credentials :meth:`refusal` has accepted."""
        view = (
            negotiate(accept),
            frozenset(names),
            not self.disable_compression and gzip_accepted(accept_encoding),
        )
        return self._renders.submit(view, lambda: self._render(*view), spawn)

    def refusal(self, authorization: str | None) -> Reply | None:
        """Return the 401 answer for a request without valid credentials, else None."""
        if self.auth is None or self.auth.accepts(authorization):
            return None
        return Reply(
            401,
            (
                ("WWW-Authenticate", self.auth.challenge()),
                ("Content-Type", "text/plain; charset=utf-8"),
            ),
            b"401 Unauthorized: valid credentials are required to read these metrics.\n",
        )

    def _render(self, fmt: Format, names: frozenset[str], compress: bool) -> Reply:
        try:
            body = fmt.render(self.registry, names or None, created=self.created)
        except Exception:  # noqa: BLE001 -- a broken collector is the scraper's 500, and logged
            _log.exception("Rendering the metrics of %r failed.", self.registry)
            return Reply(
                500,
                (("Content-Type", "text/plain; charset=utf-8"),),
                b"500 Internal Server Error: collecting the metrics failed; see the log.\n",
            )
        headers = [("Content-Type", fmt.content_type)]
        if compress:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        return Reply(200, tuple(headers), body)
