"""Expose metrics from Twisted: a resource for twisted.web and Klein."""

# twisted.web's Request and Resource are not annotated; mypy and pyright are
# told so once, here, rather than on every call.
# mypy: disable-error-code="no-untyped-call"
# pyright: reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .._exposition import (
    SCRAPE_TIMEOUT_HEADER,
    Exposition,
    Reply,
    joined,
    scrape_seconds,
    single,
    too_slow,
)


if TYPE_CHECKING:
    import concurrent.futures

    from collections.abc import Iterator

    from twisted.python.failure import Failure
    from twisted.web.server import Request

    from .._auth import BasicAuth, BearerToken


__all__ = ["MetricsResource"]


class MetricsResource(Resource):
    """A twisted.web resource that serves a registry's metrics.

    Mount it with ``root.putChild(b"metrics", MetricsResource())``, or return
    it from a Klein route.  It answers GET and HEAD with promloop's exposition
    rules (content negotiation, ``name[]`` filters, gzip, credentials), any
    other method with 405 (401 first, without valid credentials), and
    renders in the reactor's thread pool so that the reactor never stalls.
    Wrapped in twisted.web's ``EncodingResourceWrapper`` (with
    ``GzipEncoderFactory``), it leaves compression to the wrapper, so that the
    body is compressed once.

    Args:
        registry: The ``CollectorRegistry`` to serve; the global ``REGISTRY``
            by default.
        auth: A :class:`promloop.BasicAuth` or :class:`promloop.BearerToken`
            that every request must carry; others get 401.
        disable_compression: Never gzip the answer.
        created: Serve the ``_created`` series of counters, histograms and
            summaries; False leaves them out of this resource's answers only.
        reactor: The reactor whose thread pool renders; the global one by
            default.

    Raises:
        TypeError: *registry* has no ``collect()``, or *auth* is not one of
            promloop's credential types.

    .. versionadded:: 26.0.0
    """

    isLeaf = True  # noqa: N815 -- twisted.web's name

    def __init__(
        self,
        registry: Any = None,
        *,
        auth: BasicAuth | BearerToken | None = None,
        disable_compression: bool = False,
        created: bool = True,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        self._exposition = Exposition(
            registry, auth=auth, disable_compression=disable_compression, created=created
        )
        if reactor is None:
            # Imported here, not at the top: importing the global reactor
            # installs the default one, which must not happen before an
            # application has chosen its own (asyncioreactor, for example).
            from twisted.internet import reactor  # noqa: PLC0415
        self._reactor = reactor

    def render(self, request: Request) -> Any:
        """Answer a request of any method, checking its credentials first.

        GET and HEAD get the metrics; any other method gets 405, but only once
        its credentials are accepted: twisted.web's own dispatch would answer
        405 (or 501, to a method it does not know) before they were checked.
        """
        return self._answer(request)

    def render_GET(self, request: Request) -> Any:  # noqa: N802 -- twisted.web's name
        """Answer a scrape; HEAD is answered the same way, without the body."""
        return self._answer(request)

    def _answer(self, request: Request) -> Any:
        reactor = self._reactor
        # An encoding wrapper (EncodingResourceWrapper) announces its
        # Content-Encoding before the resource renders, and then encodes
        # whatever the resource writes.
        encoded_elsewhere = request.responseHeaders.hasHeader(b"Content-Encoding")
        lines = request.requestHeaders.getRawHeaders
        rendering = self._exposition.scrape(
            authorization=single(lines(b"Authorization")),
            accept=joined(lines(b"Accept")),
            accept_encoding=joined(lines(b"Accept-Encoding")),
            query=request.uri.partition(b"?")[2],
            spawn=reactor.getThreadPool().callInThread,
            may_compress=not encoded_elsewhere,
            method=request.method,
        )
        answered = False

        def gone(_: Failure | None) -> None:
            nonlocal answered
            answered = True  # the client went away: nothing more to answer

        request.notifyFinish().addBoth(gone)

        def answer(reply: Reply) -> None:
            nonlocal answered
            if not answered:
                answered = True
                _write(request, reply, sized=not encoded_elsewhere)

        seconds = scrape_seconds(single(lines(SCRAPE_TIMEOUT_HEADER.encode("ascii"))))
        deadline = reactor.callLater(
            seconds, lambda: answer(too_slow(self._exposition.registry, seconds))
        )

        def rendered(done: concurrent.futures.Future[Reply]) -> None:
            if deadline.active():
                deadline.cancel()
            answer(done.result())

        rendering.add_done_callback(lambda done: reactor.callFromThread(rendered, done))
        return NOT_DONE_YET


def _write(request: Request, reply: Reply, *, sized: bool) -> None:
    request.setResponseCode(reply.status)
    for name, value in reply.headers:
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    if sized:  # an encoder wrapper changes the length
        request.setHeader(b"Content-Length", str(reply.length).encode("ascii"))
    if request.method == b"HEAD":
        request.finish()
    elif len(reply.pieces) > 1:
        _Pieces(request, reply.pieces).start()
    else:
        request.write(reply.body)  # one piece, or none
        request.finish()


class _Pieces:
    """Write a body a piece at a time, as fast as the transport sends them: a push producer.

    Written at once, a body of many megabytes would be copied whole into the
    transport's buffer, in the reactor's thread.  The transport pauses its
    producer as soon as a write fills its buffer, and resumes it once the
    buffer is sent: so each turn of the reactor writes a piece or two.
    """

    def __init__(self, request: Request, pieces: tuple[bytes, ...]) -> None:
        self._request = request
        self._pieces: Iterator[bytes] | None = iter(pieces)
        self._paused = False

    def start(self) -> None:
        """Register with the request, and write until paused."""
        self._request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._request.registerProducer(self, True)
        self._write()

    def _write(self) -> None:
        while not self._paused and self._pieces is not None:
            piece = next(self._pieces, None)
            if piece is None:
                self._pieces = None
                self._request.unregisterProducer()
                self._request.finish()
            else:
                self._request.write(piece)  # may pause this producer at once

    def pauseProducing(self) -> None:  # noqa: N802 -- Twisted's name
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802 -- Twisted's name
        self._paused = False
        self._write()

    def stopProducing(self) -> None:  # noqa: N802 -- Twisted's name
        self._pieces = None  # the client went away
