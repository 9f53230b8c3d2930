"""Instrumentation wrappers for Twisted.

The semantics are those of :mod:`promloop.aio`, with Deferreds as the pending
results: a Deferred is measured until it fires, and the one-Deferred form
returns the very Deferred it was given, with a callback added.
"""

# Twisted's annotations leave Deferred.addBoth() and an isinstance-narrowed Deferred
# partially unknown to pyright; mypy checks these lines fully.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

import functools
import sys

from collections.abc import Awaitable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, overload

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .._outcomes import FAILURES
from .._pending import settle_awaitable
from .._probes import make_probe
from .._recipes import COUNT, TIME, TRACK, make_recipe
from .._wrappers import Side, instrument


if TYPE_CHECKING:
    from collections.abc import Callable

    from .._probes import Probe
    from .._recipes import Args, Kwargs, Recipe
    from ..types import (
        ExceptionTypes,
        ExemplarFactory,
        Incrementer,
        InProgressGauge,
        LabelsFactory,
        Observer,
        P,
        T,
    )


__all__ = ["count_exceptions", "time", "track_inprogress"]

_O = TypeVar("_O")  # a Deferred's outcome, passed on as it came

# Every wrapper reads the clock as this module's perf_counter, at every
# measurement, so that tests can patch promloop.tx._decorators.perf_counter
# as they patch prometheus-async's.
_CLOCK: Final = sys.modules[__name__]


def _fired(outcome: object, probe: Probe, state: Any, args: Args, kwargs: Kwargs) -> object:
    """Stop a probe's measurement with a Deferred's outcome, and pass the outcome on."""
    probe.stop(state, args, kwargs, outcome.value if isinstance(outcome, Failure) else None)
    return outcome


def watch_deferred(
    probe: Probe, deferred: Deferred[Any], state: Any, args: Args, kwargs: Kwargs
) -> Any:
    """Stop the measurement when *deferred* fires; return *deferred*.

    :mod:`promloop.aio` measures a Deferred that a decorated function returns
    here too.
    """
    if probe.records_success:
        return deferred.addBoth(_fired, probe, state, args, kwargs)
    # Nothing to do on success (counting exceptions): an errback only.
    return deferred.addErrback(_fired, probe, state, args, kwargs)


def _settle(probe: Probe, result: Any, state: Any, args: Args, kwargs: Kwargs) -> Any:
    """Measure a plain function's pending result until it fires or completes."""
    if isinstance(result, Deferred):
        # As watch_deferred() does, one call fewer: a Deferred is the usual result.
        if probe.records_success:
            return result.addBoth(_fired, probe, state, args, kwargs)
        return result.addErrback(_fired, probe, state, args, kwargs)
    return settle_awaitable(probe, result, state, args, kwargs)


# What a plain function may return that is measured until it completes: a
# Deferred, or any awaitable (see promloop.aio's).
_SIDE: Final = Side(clock=_CLOCK, pending=(Deferred, Awaitable), settle=_settle)


def _apply(recipe: Recipe, deferred: Any) -> Any:
    """Return a decorator, or measure one *deferred* and return it."""
    if deferred is None:
        return functools.partial(instrument, recipe, _SIDE)
    if not isinstance(deferred, Deferred):
        msg = (
            f"{recipe.who}: the second argument must be a Deferred to measure, not "
            f"{deferred!r}; to decorate a function, pass the metric alone."
        )
        raise TypeError(msg)
    if recipe.plain:
        return _watch_plainly(recipe, deferred)
    probe = make_probe(recipe, _CLOCK)
    return watch_deferred(probe, deferred, probe.start((), {}), (), {})


def _watch_plainly(recipe: Recipe, deferred: Deferred[T]) -> Deferred[T]:
    """Measure one Deferred for a recipe that records on the metric itself."""
    metric, recording_failed = recipe.metric, recipe.recording_failed
    if recipe.kind is TIME:
        return deferred.addBoth(_observed, metric, perf_counter(), recording_failed)
    if recipe.kind is COUNT:
        return deferred.addErrback(_counted, metric, recipe.counts, recording_failed)
    metric.inc()
    return deferred.addBoth(_decremented, metric, recording_failed)


# --- one Deferred, for recipes that record on the metric itself -----------------
# The metric calls inline, as in a hand-written callback.


def _observed(outcome: _O, metric: Any, started: float, recording_failed: Callable[[], None]) -> _O:
    try:
        metric.observe(perf_counter() - started)
    except Exception:  # noqa: BLE001 -- the work is over: reported, never raised
        recording_failed()
    return outcome


def _counted(
    failure: Failure,
    metric: Any,
    counts: Callable[[BaseException], bool],
    recording_failed: Callable[[], None],
) -> Failure:
    if counts(cast("BaseException", failure.value)):
        try:
            metric.inc()
        except Exception:  # noqa: BLE001 -- the work is over: reported, never raised
            recording_failed()
    return failure


def _decremented(outcome: _O, metric: Any, recording_failed: Callable[[], None]) -> _O:
    try:
        metric.dec()
    except Exception:  # noqa: BLE001 -- the work is over: reported, never raised
        recording_failed()
    return outcome


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
    if isinstance(deferred, Deferred) and labels is None and exemplar is None:
        # Called before on this metric, which records directly: nothing to check.
        check = TIME.plain.get(id(metric))
        if check is not None and check.metric_ref() is metric:
            return deferred.addBoth(_observed, metric, perf_counter(), check.recording_failed)
    recipe = make_recipe(TIME, metric, labels=labels, exemplar=exemplar)
    return _apply(recipe, deferred)  # type: ignore[no-any-return]


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
    if isinstance(deferred, Deferred) and exc is None and labels is None and exemplar is None:
        # Called before on this metric, which records directly: nothing to check.
        check = COUNT.plain.get(id(metric))
        if check is not None and check.metric_ref() is metric:
            return deferred.addErrback(_counted, metric, FAILURES, check.recording_failed)
    recipe = make_recipe(COUNT, metric, exc=exc, labels=labels, exemplar=exemplar)
    return _apply(recipe, deferred)  # type: ignore[no-any-return]


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
    if isinstance(deferred, Deferred) and labels is None:
        # Called before on this metric, which records directly: nothing to check.
        check = TRACK.plain.get(id(metric))
        if check is not None and check.metric_ref() is metric:
            metric.inc()
            return deferred.addBoth(_decremented, metric, check.recording_failed)
    recipe = make_recipe(TRACK, metric, labels=labels)
    return _apply(recipe, deferred)  # type: ignore[no-any-return]
