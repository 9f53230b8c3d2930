"""The aiohttp handler that serves a registry: :func:`make_handler` and :func:`server_stats`.

It adapts aiohttp requests to the framework-free exposition core
(:class:`promloop._exposition.Exposition`) and its replies to aiohttp responses.
It reads only a request's ``headers`` and, if it has one, ``raw_path``: a
stand-in with nothing but ``headers`` (as prometheus-async's tests and many
applications' tests pass, a ``SimpleNamespace`` or a ``unittest.mock.Mock``)
is served like a real request.
"""

from __future__ import annotations

import asyncio

from typing import TYPE_CHECKING, Any, Final, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from .._exposition import (
    SCRAPE_TIMEOUT_HEADER,
    Exposition,
    Reply,
    joined,
    scrape_seconds,
    single,
    too_slow,
)
from ._hooks import BeforeScrape


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    from .._auth import BasicAuth, BearerToken

    Handler = Callable[[web.Request], Awaitable[web.Response]]


__all__ = ["make_handler", "server_stats"]

_AT_A_TIME: Final = 256 * 1024
"""The most bytes of a body handed to aiohttp in one turn of the event loop."""


def response(reply: Reply) -> web.Response:
    """Turn the core's reply into an aiohttp response.

    A body of several pieces is written a piece at a time, and still reads
    as bytes (see :class:`_PiecesResponse`).
    """
    # Headers are set as given: aiohttp's content_type= argument rejects a
    # content type with parameters (https://github.com/aio-libs/aiohttp/issues/2197).
    headers = dict(reply.headers)
    if len(reply.pieces) < 2:  # noqa: PLR2004 -- one piece is written whole
        return _Response(status=reply.status, headers=headers, body=reply.body)
    return _PiecesResponse(reply, headers)


class _Response(web.Response):
    """A response whose body an application's compression middleware encodes once only."""

    def enable_compression(self, *args: Any, **kwargs: Any) -> None:
        # A body gzipped already (the scraper accepts gzip) is not encoded twice.
        if "Content-Encoding" not in self.headers:
            super().enable_compression(*args, **kwargs)


class _PiecesResponse(_Response):
    """A response written a piece at a time that still reads as bytes.

    aiohttp writes ``_body`` (a payload that yields the pieces); code that
    reads ``body`` or ``text`` (an application's tests with
    ``make_mocked_request``, a middleware, a handler wrapping this one)
    gets the joined bytes, as before the body came in pieces.
    """

    def __init__(self, reply: Reply, headers: dict[str, str]) -> None:
        super().__init__(status=reply.status, headers=headers, body=_one_by_one(reply.pieces))
        # After the body is set (by the setter below, which drops a length):
        # not chunked, as aiohttp cannot tell the size of a body it reads a
        # piece at a time.
        self.headers["Content-Length"] = str(reply.length)
        self._pieces: tuple[bytes, ...] | None = reply.pieces
        self._compression_asked: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    @property
    def body(self) -> Any:
        return self._body if self._pieces is None else b"".join(self._pieces)

    @body.setter
    def body(self, body: Any) -> None:
        self._replaced()
        web.Response.body.fset(self, body)  # type: ignore[attr-defined]

    @property
    def text(self) -> str | None:
        if self._pieces is None:
            return cast("str | None", web.Response.text.fget(self))  # type: ignore[attr-defined]
        return b"".join(self._pieces).decode(self.charset or "utf-8")

    @text.setter
    def text(self, text: str) -> None:
        self._replaced()
        web.Response.text.fset(self, text)  # type: ignore[attr-defined]

    def enable_chunked_encoding(self, *args: Any, **kwargs: Any) -> None:
        # The length set above is the pieces', not one the caller chose:
        # chunked, as for a body of one piece.
        if self._pieces is not None:
            self.headers.pop("Content-Length", None)
        super().enable_chunked_encoding(*args, **kwargs)

    def enable_compression(self, *args: Any, **kwargs: Any) -> None:
        # Applied in prepare(), once the method is known: aiohttp compresses
        # a payload as it writes it, and would end a HEAD answer with an
        # empty compressed stream, bytes after the headers that break the
        # connection's next answer.
        self._compression_asked = (args, kwargs)

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self._compression_asked is not None and request.method != "HEAD":
            args, kwargs = self._compression_asked
            super().enable_compression(*args, **kwargs)
        return await super().prepare(request)

    def _replaced(self) -> None:
        # The pieces' length no longer applies: aiohttp works out the new one.
        self._pieces = None
        self.headers.pop("Content-Length", None)


async def _one_by_one(pieces: tuple[bytes, ...]) -> AsyncIterator[memoryview]:
    """Hand aiohttp the pieces one per turn of the event loop.

    aiohttp waits for the socket only while its buffer is full: a scraper
    that reads fast would otherwise take a body of tens of megabytes in one
    turn, every other task waiting meanwhile.
    """
    first = True
    for piece in pieces:
        # A piece may be large (the fan-in's copy of one worker's family):
        # handed over in slices, as the render's pieces are.
        view = memoryview(piece)
        for start in range(0, len(view), _AT_A_TIME):
            if not first:
                await asyncio.sleep(0)
            first = False
            yield view[start : start + _AT_A_TIME]


def _headers(headers: Mapping[str, str]) -> MultiMapping[str]:
    if isinstance(headers, (CIMultiDictProxy, CIMultiDict)):
        return headers
    # A stand-in request may carry a plain dict: names are looked up as HTTP
    # compares them, whatever their case.
    return CIMultiDict(headers)


def raw_query(request: web.Request) -> str:
    """Return the request's query string as it arrived, still percent-encoded."""
    # raw_path keeps the query as it arrived, percent-encoded, so that the
    # core decodes name[] by the same rule for aiohttp and Twisted (aiohttp's
    # request.query would turn undecodable bytes into U+FFFD).  A stand-in
    # request without one (or with a mock's made-up attribute) asks for every metric.
    raw_path: object = getattr(request, "raw_path", "")
    return raw_path.partition("?")[2] if isinstance(raw_path, str) else ""


def serve(
    exposition: Exposition,
    hooks: BeforeScrape | None,
    *,
    check_credentials: bool = True,
) -> Handler:
    """Return the aiohttp handler that answers scrapes of *exposition*.

    Args:
        exposition: What to serve, and how.
        hooks: Awaited before each authorised scrape.
        check_credentials: False where a middleware has checked them already.
    """

    async def metrics(request: web.Request) -> web.Response:
        headers = _headers(request.headers)
        if check_credentials:
            refusal = exposition.refusal(single(headers.getall("Authorization", None)))
            if refusal is not None:
                return response(refusal)
        seconds = scrape_seconds(single(headers.getall(SCRAPE_TIMEOUT_HEADER, None)))
        try:
            reply = await asyncio.wait_for(answer(headers, raw_query(request)), seconds)
        except asyncio.TimeoutError:
            reply = too_slow(exposition.registry, seconds)
        return response(reply)

    async def answer(headers: MultiMapping[str], query: str) -> Reply:
        if hooks is not None:
            await hooks.run()
        loop = asyncio.get_running_loop()
        rendering = exposition.render(
            accept=joined(headers.getall("Accept", None)),
            accept_encoding=joined(headers.getall("Accept-Encoding", None)),
            query=query,
            spawn=lambda work: loop.run_in_executor(None, work),
        )
        return await asyncio.wrap_future(rendering)

    return metrics


def make_handler(
    registry: Any = None,
    *,
    auth: BasicAuth | BearerToken | None = None,
    disable_compression: bool = False,
    created: bool = True,
    before_scrape: (
        Sequence[Callable[[], Awaitable[object]]] | Mapping[str, Callable[[], Awaitable[object]]]
    ) = (),
    before_scrape_timeout: float = 5.0,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Return an aiohttp handler that serves *registry*'s metrics.

    Mount it where you like: ``app.router.add_get("/metrics", make_handler())``
    (``add_get`` also answers HEAD).

    Args:
        registry: The ``CollectorRegistry`` to serve; the global ``REGISTRY``
            by default.  For prometheus_client's multiprocess mode, pass a
            registry holding a ``MultiProcessCollector``.
        auth: A :class:`promloop.BasicAuth` or :class:`promloop.BearerToken`
            that every request must carry; others get 401.
        disable_compression: Never gzip the answer.
        created: Serve the ``_created`` series of counters, histograms and
            summaries; False leaves them out of this handler's answers only
            (prometheus_client's ``disable_created_metrics()`` would drop
            them from the whole process).
        before_scrape: Coroutine functions, taking no arguments, awaited
            concurrently before each (authorised) scrape, so that gauges can
            be refreshed from async I/O.  One that raises or takes longer
            than *before_scrape_timeout* seconds (it is then cancelled) is
            logged at WARNING and counted in
            ``promloop_before_scrape_failures_total{hook="..."}``; the scrape
            answers with the values as they are.  A mapping names each hook
            (``{"queue_length": refresh}``); a sequence's hooks are named by
            module and qualified name (``myapp.jobs.refresh``), a
            ``functools.partial`` by the function it calls.
        before_scrape_timeout: Seconds each hook may take.

    Raises:
        TypeError: *registry* has no ``collect()``, *auth* is not one of
            promloop's credential types, or a hook is not callable.
        ValueError: *before_scrape_timeout* is not positive, a sequence holds
            a lambda (it has no name: use a mapping), or two hooks would be
            counted under one name.

    .. versionadded:: 26.0.0
    """
    exposition = Exposition(
        registry, auth=auth, disable_compression=disable_compression, created=created
    )
    return serve(exposition, before_scrape_hooks(exposition, before_scrape, before_scrape_timeout))


def before_scrape_hooks(
    exposition: Exposition,
    before_scrape: (
        Sequence[Callable[[], Awaitable[object]]] | Mapping[str, Callable[[], Awaitable[object]]]
    ),
    before_scrape_timeout: float,
) -> BeforeScrape | None:
    """Return the hooks to await before each scrape of *exposition*, or None for none."""
    if not before_scrape:
        return None
    return BeforeScrape(before_scrape, before_scrape_timeout, exposition.registry)


_serve_global_registry = make_handler()


async def server_stats(request: web.Request) -> web.Response:
    """Serve the metrics of prometheus_client's global ``REGISTRY``.

    A ready-made aiohttp handler: ``app.router.add_get("/metrics", server_stats)``.
    Use :func:`make_handler` for another registry, credentials, or no gzip.
    """
    return await _serve_global_registry(request)
