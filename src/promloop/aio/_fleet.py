"""The workers of a file_sd directory, scraped on demand and merged into one answer.

The fan-in's engine room, without its HTTP server: :class:`Fleet` answers
one scrape of the fan-in by reading the directory, scraping every worker
concurrently within a deadline (on the event loop, with aiohttp's client),
and merging and rendering the answers in a thread of its own, where the file
I/O happens too.  Concurrent scrapes of the same view share one such round,
as concurrent renders share one in every other mount point.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import threading

from time import perf_counter
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

import aiohttp

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .._exposition import (
    BAD_NAMES,
    Format,
    Header,
    Reply,
    SharedRenders,
    encoded,
    gzip_accepted,
    negotiate,
    plain_reply,
    requested_names,
    scrape_seconds,
)
from .._file_sd import Target, TargetDirectory
from .._merge import Merger, Scrape


if TYPE_CHECKING:
    import os

    from collections.abc import Iterable, Sequence

    from prometheus_client.metrics_core import Metric


_log = logging.getLogger("promloop")

DEFAULT_SCRAPE_TIMEOUT: Final = 3.0
"""Seconds a worker may take to answer, by default: well under Prometheus's 10 s."""

WORKERS_SHARE: Final = 0.75
"""The part of a scrape's time (see :func:`promloop._exposition.scrape_seconds`)
left to the workers; the rest is for merging and rendering."""

MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
"""A worker's answer larger than this is cut off and left out."""

LONGEST_FORWARDED_QUERY: Final = 4096
"""The longest ``name[]`` filter forwarded to the workers; a longer one is applied here."""

RENDER_THREADS: Final = 4
"""Threads that merge and render; each scrape of a different view takes one."""

_OPENMETRICS_ACCEPT: Final = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"
_GRACE_SECONDS: Final = 5.0


class _Closing(Exception):  # noqa: N818 -- a signal, not an error
    """The fan-in is closing: the round of scrapes was called off."""


class _Outcome:
    """One worker's answer to one round: its body (None if it failed), how long, and why not.

    The body stays in the pieces that arrived until :meth:`take` joins them,
    in a render thread: joining (and freeing) megabytes is not the event
    loop's work.
    """

    __slots__ = ("chunks", "error", "seconds")

    def __init__(self, chunks: list[bytes] | None, seconds: float, error: str = "") -> None:
        self.chunks = chunks
        self.seconds = seconds
        self.error = error

    def take(self) -> bytes | None:
        """Return the body, joined, and forget the pieces (call it off the loop)."""
        chunks, self.chunks = self.chunks, None
        return None if chunks is None else b"".join(chunks)


class _TargetStatus(Collector):
    """The fan-in's view of its targets at the last round, as a collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[str, bool, float]] = []

    def update(self, rows: list[tuple[str, bool, float]]) -> None:
        with self._lock:
            self._rows = rows

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            rows = self._rows
        up = GaugeMetricFamily(
            "promloop_fanin_target_up",
            "Whether the fan-in's last scrape of the target was merged (1) or not (0).",
            labels=["worker"],
        )
        duration = GaugeMetricFamily(
            "promloop_fanin_target_scrape_duration_seconds",
            "How long the fan-in's last scrape of the target took.",
            labels=["worker"],
        )
        for worker, merged, seconds in rows:
            up.add_metric([worker], 1.0 if merged else 0.0)
            duration.add_metric([worker], seconds)
        return [up, duration]


def worker_names(targets: Sequence[Target]) -> list[str]:
    """Return the ``worker`` label of each target's own metrics.

    The target's ``worker`` label (a slot number, with ``FileSD(slot="worker")``),
    else its ``host:port``; a ``worker`` label that several targets share
    gives way to ``host:port`` too, so no two targets report as one.
    """
    given = [target.labels.get("worker") for target in targets]
    return [
        name if name is not None and given.count(name) == 1 else target.address
        for target, name in zip(targets, given, strict=True)
    ]


class Fleet:
    """Answer scrapes with the merged metrics of the workers listed in a directory.

    Args:
        directory: The file_sd directory the workers announce themselves in.
        aggregate: Sum over the workers instead of labelling each one's samples.
        gauges: How gauges combine in aggregate mode.
        created: Serve ``_created`` samples.
        scrape_timeout: Seconds each worker may take, at most.
        registry: Where the fan-in's own metrics go (until :meth:`close`);
            they are served too.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        aggregate: bool,
        gauges: str,
        created: bool,
        scrape_timeout: float,
        registry: CollectorRegistry | None,
    ) -> None:
        if not (scrape_timeout > 0 and math.isfinite(scrape_timeout)):
            msg = f"scrape_timeout= must be a positive number of seconds, not {scrape_timeout!r}."
            raise ValueError(msg)
        self.merger = Merger(
            aggregate=aggregate, gauges=gauges, on_conflict=lambda _: self._conflicts.inc()
        )
        self.directory = TargetDirectory(directory)
        self.created = created
        self.scrape_timeout = scrape_timeout
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self._conflicts = Counter(
            "promloop_fanin_conflicts",
            "Workers' families left out because another worker's family of that name "
            "has a different type.",
            registry=self.registry,
        )
        self._status = _TargetStatus()
        self.registry.register(self._status)
        self._renders = SharedRenders()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            RENDER_THREADS, thread_name_prefix="promloop-fanin"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._rounds: set[concurrent.futures.Future[list[_Outcome]]] = set()
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}
        self._listed: list[Target] = []  # the last targets read from the directory
        self._closing = False

    def __repr__(self) -> str:
        return f"<Fleet {self.directory.directory}>"

    async def start(self) -> None:
        """Check the directory and open the client that scrapes the workers.

        Raises:
            FileNotFoundError, PermissionError: The directory is missing or
                cannot be written (stale files are removed from it).
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.directory.check, "fan-in")
        self._loop = loop
        self._session = aiohttp.ClientSession(
            # A new connection per scrape: a worker's pooled connection could
            # have been closed meanwhile and fail a scrape that would succeed.
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def call_off(self) -> None:
        """Cancel the rounds in flight: their scrapes answer 503 at once."""
        self._closing = True
        with self._lock:
            rounds = list(self._rounds)
        for round_ in rounds:
            round_.cancel()

    async def close(self) -> None:
        """Close the client, wait for the render threads to end, and leave the registry.

        Calling it again does nothing.
        """
        self.call_off()
        if self._session is not None:
            await self._session.close()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        for collector in (self._conflicts, self._status):
            with contextlib.suppress(KeyError):  # closed already
                self.registry.unregister(collector)

    def scrape(
        self,
        *,
        accept: Header,
        accept_encoding: Header,
        query: str,
        scraper_timeout: Header,
    ) -> concurrent.futures.Future[Reply]:
        """Answer one scrape of the fan-in, in a thread of its own.

        Args:
            accept: The ``Accept`` header.
            accept_encoding: The ``Accept-Encoding`` header.
            query: The query string, still percent-encoded (``name[]``).
            scraper_timeout: The ``X-Prometheus-Scrape-Timeout-Seconds`` header.
        """
        try:
            names = requested_names(query)
        except ValueError:
            return _done(BAD_NAMES)
        view = (
            negotiate(accept),
            names,
            gzip_accepted(accept_encoding),
            self.deadline(scraper_timeout),
        )
        return self._renders.submit(view, lambda: self._answer(*view), self._executor.submit)

    def deadline(self, scraper_timeout: Header) -> float:
        """Return how many seconds the workers get, given the scraper's own timeout.

        *scrape_timeout*, or three quarters of the time the scrape may take
        if that is shorter: a scraper that waits one second gets its answer,
        with the silent workers left out, before it gives up.
        """
        return min(self.scrape_timeout, scrape_seconds(scraper_timeout) * WORKERS_SHARE)

    async def targets_json(self) -> bytes:
        """Return the live targets in ``http_sd_configs`` JSON; remove dead processes' files.

        Read and written in a render thread, however many targets there are.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._targets_json)

    def _targets_json(self) -> bytes:
        live = [t for t in self._read() if not self.directory.remove_if_stale(t)]
        groups = [{"targets": [t.address], "labels": dict(t.labels)} for t in live]
        return json.dumps(groups).encode()

    def _read(self) -> list[Target]:
        """Read the directory; if it cannot be read, return the last targets read.

        Workers do not leave because their directory could not be read for a
        while: in aggregate mode, their counters would be carried, then
        counted twice once they were read again.
        """
        try:
            targets = self.directory.read()
        except OSError as error:
            self._note_failure(None, f"cannot read the directory: {error}")
            return self._listed
        self._note_failure(None, "")
        self._listed = targets
        return targets

    def _answer(self, fmt: Format, names: frozenset[str], compress: bool, deadline: float) -> Reply:
        """Run one round: read, scrape, merge, render (in a render thread)."""
        targets = self._read()
        asked = forwarded(names)
        try:
            outcomes = self._scrape_all(targets, asked, deadline)
        except _Closing:
            return plain_reply(503, "503 Service Unavailable: the fan-in is closing.\n")
        scrapes: list[Scrape] = []
        kept: list[tuple[Target, _Outcome]] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            body = outcome.take()
            if body is None and self.directory.remove_if_stale(target):
                continue  # its process is dead: not a target any more
            kept.append((target, outcome))
            scrapes.append(Scrape(target.identity, target.labels, body))
        # The workers were asked for these names only: in aggregate mode, the
        # merger keeps their other samples' last values for when they leave.
        merged = self.merger.merge(scrapes, names=asked or None)
        rows: list[tuple[str, bool, float]] = []
        for worker, (target, outcome) in zip(worker_names([t for t, _ in kept]), kept, strict=True):
            error = outcome.error or merged.errors.get(target.identity, "")
            self._note_failure(target, error)
            rows.append((worker, not error, outcome.seconds))
        self._status.update(rows)
        with self._lock:  # forget the failures of targets that are gone
            current = {"", *(target.identity for target, _ in kept)}
            self._failing = {k: v for k, v in self._failing.items() if k in current}
        pieces = merged.expose_pieces(
            openmetrics=fmt.openmetrics,
            escaping=fmt.escaping,
            names=names or None,
            created=self.created,
            extra=(self.registry,),
        )
        return encoded(fmt, pieces, compress=compress)

    def _note_failure(self, target: Target | None, error: str) -> None:
        """Log a failure when it starts (or changes), not at every scrape."""
        identity = "" if target is None else target.identity
        with self._lock:
            before = self._failing.pop(identity, "")
            if error:
                self._failing[identity] = error
        if error and error != before:
            where = "" if target is None else f"target {target.address} ({target.file}): "
            _log.warning("Fan-in: %s%s", where, error)

    def _scrape_all(
        self, targets: list[Target], names: frozenset[str], deadline: float
    ) -> list[_Outcome]:
        """Scrape every target on the event loop; block this thread until they are done."""
        if not targets:
            return []
        loop = self._loop
        if loop is None or self._closing:
            raise _Closing
        query = _filter_query(names)
        coroutine = self._round(targets, query, deadline)
        try:
            round_ = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop is closed
            coroutine.close()
            raise _Closing from None
        with self._lock:
            self._rounds.add(round_)
        try:
            return round_.result(deadline + _GRACE_SECONDS)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
            round_.cancel()
            raise _Closing from None
        finally:
            with self._lock:
                self._rounds.discard(round_)

    async def _round(self, targets: list[Target], query: str, deadline: float) -> list[_Outcome]:
        tasks = [asyncio.ensure_future(self._scrape_one(t, query)) for t in targets]
        try:
            _, pending = await asyncio.wait(tasks, timeout=deadline)
        finally:
            for task in tasks:
                task.cancel()
        if pending:
            await asyncio.wait(pending)
        return [
            _Outcome(None, deadline, f"no answer within {deadline:g} s")
            if task.cancelled()
            else task.result()
            for task in tasks
        ]

    async def _scrape_one(self, target: Target, query: str) -> _Outcome:
        assert self._session is not None  # noqa: S101 -- start() opened it
        scheme = target.labels.get("__scheme__", "http")
        path = target.labels.get("__metrics_path__", "/metrics")
        url = f"{scheme}://{target.address}{path}{'?' if query else ''}{query}"
        started = perf_counter()
        try:
            async with self._session.get(
                url,
                headers={"Accept": _OPENMETRICS_ACCEPT, "Accept-Encoding": "identity"},
                allow_redirects=False,
            ) as response:
                error = _refusal(response)
                chunks = None if error else await _read_body(response)
        except (aiohttp.ClientError, OSError, ValueError) as failure:
            error, chunks = f"scrape failed: {str(failure) or type(failure).__name__}", None
        except _TooLarge:
            error, chunks = f"answer larger than {MAX_ANSWER_BYTES} bytes", None
        return _Outcome(chunks, perf_counter() - started, error)


def forwarded(names: frozenset[str]) -> frozenset[str]:
    """Return the ``name[]`` filter to forward to the workers: *names*, or none (all series).

    Encoded again, a filter can outgrow the request line a worker's server
    reads (aiohttp's 8190 bytes) although the scraper's fitted in the
    fan-in's: then every series is asked for, and the merged answer filtered
    here, instead of the worker's 400.
    """
    return names if len(_filter_query(names)) <= LONGEST_FORWARDED_QUERY else frozenset()


def _filter_query(names: frozenset[str]) -> str:
    return urlencode([("name[]", name) for name in sorted(names)])


class _TooLarge(Exception):  # noqa: N818 -- a signal, not an error
    pass


def _refusal(response: aiohttp.ClientResponse) -> str:
    """Say why a worker's response cannot be merged, or return ``""``."""
    if response.status != 200:  # noqa: PLR2004 -- HTTP's OK
        return f"answered HTTP {response.status}"
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("application/openmetrics-text"):
        return f"answered {content_type!r}, not OpenMetrics"
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        return f"answer larger than {MAX_ANSWER_BYTES} bytes"
    return ""


async def _read_body(response: aiohttp.ClientResponse) -> list[bytes]:
    """Return the body in the pieces that arrived (a render thread joins them)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _TooLarge
    return chunks


def _done(reply: Reply) -> concurrent.futures.Future[Reply]:
    future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
    future.set_result(reply)
    return future
