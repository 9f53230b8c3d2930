"""Instrumentation wrappers for Twisted.

The semantics are those of :mod:`promloop.aio`, with Deferreds as the pending
results: a Deferred is measured until it fires, and the one-Deferred form
returns the very Deferred it was given, with a callback added.
"""

# Twisted's annotations leave Failure.value and an isinstance-narrowed Deferred
# partially unknown to pyright; mypy checks these lines fully.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false

from __future__ import annotations

from time import perf_counter  # noqa: F401  # pyright: ignore[reportUnusedImport] -- read through _CLOCK
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .._probes import Args, Kwargs, Probe, counting_probe, timing_probe, tracking_probe
from .._wrappers import instrument, settle_plain


if TYPE_CHECKING:
    from collections.abc import Callable

    from .._probes import ExceptionTypes
    from ..types import ExemplarFactory, Incrementer, InProgressGauge, LabelsFactory, Observer, P, T


__all__ = ["count_exceptions", "time", "track_inprogress"]

# The timing probe reads perf_counter from this namespace at every
# measurement, so that patching promloop.tx._decorators.perf_counter works.
_CLOCK = globals()

_Outcome = TypeVar("_Outcome")


def _watch_deferred(
    probe: Probe, deferred: Deferred[Any], token: Any, args: Args, kwargs: Kwargs
) -> Deferred[Any]:
    """Stop the measurement when *deferred* fires, and pass its outcome on untouched."""

    def on_fired(outcome: _Outcome) -> _Outcome:
        error: BaseException | None = None
        if isinstance(outcome, Failure):
            error = cast("BaseException", outcome.value)
        probe.stop(token, args, kwargs, error)
        return outcome

    return deferred.addBoth(on_fired)


def _settle(probe: Probe, result: Any, token: Any, args: Args, kwargs: Kwargs) -> Any:
    """Measure what a plain function returned: until it fires if it is a Deferred."""
    if isinstance(result, Deferred):
        pending: Deferred[Any] = result
        return _watch_deferred(probe, pending, token, args, kwargs)
    return settle_plain(probe, result, token, args, kwargs)


def _apply(who: str, probe: Probe, deferred: Any) -> Any:
    """Return a decorator, or measure one *deferred* and return it."""
    if deferred is None:

        def decorator(func: Any) -> Any:
            return instrument(who, func, probe, _settle)

        return decorator
    if not isinstance(deferred, Deferred):
        msg = (
            f"{who}'s second argument must be a Deferred to measure, not {deferred!r}; "
            f"to decorate a function, call {who} with the metric alone."
        )
        raise TypeError(msg)
    pending: Deferred[Any] = deferred
    return _watch_deferred(probe, pending, probe.start((), {}), (), {})


@overload
def time(
    metric: Observer,
    *,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


@overload
def time(
    metric: Observer,
    deferred: Deferred[T],
    *,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Deferred[T]: ...


def time(
    metric: Observer,
    deferred: Deferred[T] | None = None,
    *,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]] | Deferred[T]:
    """Observe how many seconds each call takes, with ``metric.observe(seconds)``.

    Used as ``@time(metric)`` on a function (a returned Deferred is measured
    until it fires; a plain value at once; a synchronous raise is observed
    too), an ``async def`` function (until it finishes) or a generator
    function; or as ``time(metric, deferred)``, which returns *deferred*
    itself, measured from this call until it fires.

    Args:
        metric: A Histogram, a Summary, a labelled child of one, or anything
            with ``observe(value)``.
        deferred: The Deferred to measure instead of decorating.
        labels: As for :func:`promloop.aio.time`.
        exemplar: As for :func:`promloop.aio.time`.

    Returns:
        A decorator; or, given *deferred*, that same Deferred.

    Raises:
        TypeError: *metric* has no ``observe()``, a callback is not callable,
            or *deferred* is not a Deferred.
        ValueError: As for :func:`promloop.aio.time`.

    .. versionchanged:: 26.0.0
       ``async def`` and generator functions, ``labels=`` and ``exemplar=``.
    """
    probe = timing_probe("time()", metric, labels=labels, exemplar=exemplar, clock=_CLOCK)
    return _apply("time()", probe, deferred)  # type: ignore[no-any-return]


@overload
def count_exceptions(
    metric: Incrementer,
    *,
    exc: ExceptionTypes | None = None,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


@overload
def count_exceptions(
    metric: Incrementer,
    deferred: Deferred[T],
    *,
    exc: ExceptionTypes | None = None,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Deferred[T]: ...


def count_exceptions(
    metric: Incrementer,
    deferred: Deferred[T] | None = None,
    *,
    exc: ExceptionTypes | None = None,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]] | Deferred[T]:
    """Call ``metric.inc()`` whenever the work fails, and let the failure through.

    Works as a decorator and on one Deferred, like :func:`time`; a
    synchronous raise and a failed Deferred both count.

    Args:
        metric: A Counter, a labelled child of one, or anything with ``inc()``.
        deferred: The Deferred to watch instead of decorating.
        exc: The exception class, or tuple of classes, to count, on every
            path.  The default counts everything except cancellation
            (:class:`twisted.internet.defer.CancelledError` from
            ``Deferred.cancel()``, and asyncio's).
        labels: As for :func:`promloop.aio.time`.
        exemplar: As for :func:`promloop.aio.time`.

    Returns:
        A decorator; or, given *deferred*, that same Deferred.

    Raises:
        TypeError: *metric* has no ``inc()``, *exc* is not an exception class
            or a tuple of them, or *deferred* is not a Deferred.
        ValueError: As for :func:`promloop.aio.time`.

    .. versionchanged:: 26.0.0
       Cancellation is not counted by default; a tuple *exc* works on Deferreds.
    """
    probe = counting_probe("count_exceptions()", metric, exc=exc, labels=labels, exemplar=exemplar)
    return _apply("count_exceptions()", probe, deferred)  # type: ignore[no-any-return]


@overload
def track_inprogress(
    metric: InProgressGauge,
    *,
    labels: LabelsFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


@overload
def track_inprogress(
    metric: InProgressGauge,
    deferred: Deferred[T],
    *,
    labels: LabelsFactory | None = None,
) -> Deferred[T]: ...


def track_inprogress(
    metric: InProgressGauge,
    deferred: Deferred[T] | None = None,
    *,
    labels: LabelsFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]] | Deferred[T]:
    """Call ``metric.inc()`` when work starts and ``metric.dec()`` when it ends.

    Works as a decorator and on one Deferred, like :func:`time`.  The gauge
    comes down on every way out: a returned value, a synchronous raise, a
    Deferred that fires or fails, and a cancelled Deferred.

    Args:
        metric: A Gauge, a labelled child of one, or anything with ``inc()``
            and ``dec()``.
        deferred: The Deferred to track instead of decorating.
        labels: As for :func:`promloop.aio.time`.

    Returns:
        A decorator; or, given *deferred*, that same Deferred.

    Raises:
        TypeError: *metric* lacks ``inc()`` or ``dec()``, or *deferred* is not
            a Deferred.
        ValueError: As for :func:`promloop.aio.time`.

    .. versionchanged:: 26.0.0
       A synchronous raise no longer leaves the gauge up.
    """
    probe = tracking_probe("track_inprogress()", metric, labels=labels)
    return _apply("track_inprogress()", probe, deferred)  # type: ignore[no-any-return]
