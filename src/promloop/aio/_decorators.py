"""Instrumentation wrappers for asyncio (and any other async library).

Nothing here calls an asyncio-only API on a decorated coroutine's path: it
runs unchanged under trio or anyio.  asyncio Futures and Tasks are only
recognised, so that they can be measured by a completion callback.
"""

# Narrowing by `type(x) is CoroutineType` (the fastest test, on the one-shot
# path) or isinstance(x, Awaitable) leaves type arguments unknown to pyright;
# mypy checks these lines fully.
# pyright: reportUnknownVariableType=false, reportUnknownArgumentType=false

from __future__ import annotations

import asyncio
import functools
import sys

from collections.abc import Awaitable
from time import perf_counter
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, TypeGuard, overload

from .._outcomes import FAILURES
from .._pending import NOT_STARTED, measure_awaitable, settle_awaitable
from .._probes import make_probe
from .._recipes import COUNT, TIME, TRACK, make_recipe, report_recording_failure
from .._wrappers import Side, instrument


if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

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

# Every wrapper reads the clock as this module's perf_counter, at every
# measurement, so that tests can patch promloop.aio._decorators.perf_counter
# as they patch prometheus-async's.
_CLOCK: Final = sys.modules[__name__]

# The metrics each one-shot form has checked, by id(): an entry lives exactly
# as long as its metric (a weak reference's callback removes it before the id
# can be reused), so finding one is proof enough -- and the one-shot forms'
# fast path costs an `in` test, not a call.  On that path the call's whole
# cost is those tests and the coroutine: benchmarks/bench_wrappers.py takes
# it apart.
_TIME_CHECKED: Final = TIME.plain
_COUNT_CHECKED: Final = COUNT.plain
_TRACK_CHECKED: Final = TRACK.plain


def _error_of(future: asyncio.Future[Any]) -> BaseException | None:
    """Return the exception that ended *future*, without marking it retrieved."""
    if future.cancelled():
        try:
            future.result()
        except BaseException as cancelled:  # noqa: BLE001 -- the future's own CancelledError
            return cancelled
    # Not future.exception(): that would mark the exception retrieved, and
    # asyncio would no longer log a Task exception that nobody retrieves.
    error: BaseException | None = future._exception  # noqa: SLF001  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    return error


def _watch_future(
    probe: Probe, future: asyncio.Future[Any], state: Any, args: Args, kwargs: Kwargs
) -> Callable[[asyncio.Future[Any]], None]:
    """Stop the measurement when *future* completes, whoever awaits it (or nobody).

    Returns the stopping function; it stops once, whoever calls it first.
    """
    stopped = False

    def stop_once(done: asyncio.Future[Any]) -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            probe.stop(state, args, kwargs, _error_of(done))

    future.add_done_callback(stop_once)
    return stop_once


async def _await_future(
    future: asyncio.Future[T], stop_once: Callable[[asyncio.Future[Any]], None]
) -> T:
    try:
        return await future
    finally:
        # Record now rather than one loop iteration later, when the done
        # callback runs: `await time(metric, future)` has observed on return.
        if future.done():
            stop_once(future)


def _is_future(obj: object) -> TypeGuard[asyncio.Future[Any]]:
    return isinstance(obj, asyncio.Future)


def _is_deferred(obj: object) -> bool:
    """Tell whether *obj* is a Twisted Deferred (only a loaded Twisted can have made one)."""
    defer = sys.modules.get("twisted.internet.defer")
    return defer is not None and isinstance(obj, defer.Deferred)


def _settle(probe: Probe, result: Any, state: Any, args: Args, kwargs: Kwargs) -> Any:
    """Measure a plain function's awaitable result until it completes."""
    if _is_future(result):
        _watch_future(probe, result, state, args, kwargs)
        return result
    if _is_deferred(result):
        # Measured until it fires and handed back itself, as promloop.tx does:
        # a stand-in would be refused by ensureDeferred(), and one that is only
        # given callbacks (never awaited) would record nothing.
        from ..tx._decorators import watch_deferred  # noqa: PLC0415 -- Twisted is loaded

        return watch_deferred(probe, result, state, args, kwargs)
    return settle_awaitable(probe, result, state, args, kwargs)


# What a plain function may return that is measured until it completes: a
# coroutine, a Future, or any other awaitable (aiohttp's session.get(), which
# a proxy measures while keeping its other abilities, like ``async with``).
_SIDE: Final = Side(
    clock=_CLOCK, pending=(CoroutineType, asyncio.Future, Awaitable), settle=_settle
)


def _apply(recipe: Recipe, awaitable: Any) -> Any:
    """Return a decorator, or measure one *awaitable* and return a coroutine."""
    if awaitable is None:
        return functools.partial(instrument, recipe, _SIDE)

    probe = make_probe(recipe, _CLOCK)
    if _is_future(awaitable):
        stop_once = _watch_future(probe, awaitable, probe.start((), {}), (), {})
        return _await_future(awaitable, stop_once)
    if not isinstance(awaitable, Awaitable):
        msg = (
            f"{recipe.who}: the second argument must be an awaitable (a coroutine, Task or "
            f"Future) to measure, not {awaitable!r}; to decorate a function, pass the metric "
            f"alone."
        )
        raise TypeError(msg)
    if recipe.plain:
        return _measure_plainly(recipe, awaitable)
    state = NOT_STARTED if probe.starts_with_execution else probe.start((), {})
    return measure_awaitable(probe, awaitable, (), {}, state)


def _measure_plainly(recipe: Recipe, awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """Measure one awaitable for a recipe that records on the metric itself."""
    metric = recipe.metric
    if recipe.kind is TIME:
        return _timed(awaitable, metric, perf_counter())
    if recipe.kind is COUNT:
        return _counted(awaitable, metric, recipe.counts)
    return _tracked(awaitable, metric)


# --- one awaitable, for recipes that record on the metric itself -----------------
# The metric calls inline, as one would write them by hand: this is the
# one-shot form's whole cost, beyond the call.  A failure to record is
# logged, never raised: the work is over, and its own result or exception
# must come through.  Who failed is worked out only then, so that the common
# case passes nothing but the metric.


async def _timed(awaitable: Awaitable[T], metric: Any, started: float) -> T:
    try:
        return await awaitable
    finally:
        try:
            metric.observe(perf_counter() - started)
        except Exception:  # noqa: BLE001 -- see above
            report_recording_failure(TIME, metric)


async def _counted(
    awaitable: Awaitable[T], metric: Any, counts: Callable[[BaseException], bool]
) -> T:
    try:
        return await awaitable
    except BaseException as error:
        if counts(error):
            try:
                metric.inc()
            except Exception:  # noqa: BLE001 -- see above
                report_recording_failure(COUNT, metric)
        raise


async def _tracked(awaitable: Awaitable[T], metric: Any) -> T:
    # Up when this coroutine starts running, not before: never awaited, no trace.
    metric.inc()
    try:
        return await awaitable
    finally:
        try:
            metric.dec()
        except Exception:  # noqa: BLE001 -- see above
            report_recording_failure(TRACK, metric)


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
    future: Awaitable[T],
    *,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Coroutine[Any, Any, T]: ...


def time(
    metric: Observer,
    future: Awaitable[T] | None = None,
    *,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]] | Coroutine[Any, Any, T]:
    """Observe how many seconds each call takes, with ``metric.observe(seconds)``.

    Used as ``@time(metric)`` on a coroutine function, async generator
    function, generator function or plain function; or as
    ``await time(metric, awaitable)`` to measure one awaitable, whose clock
    starts when :func:`time` is called.

    A measurement ends however the work ends: return, exception,
    cancellation, exhaustion or ``aclose()``.  A plain function's awaitable
    result is measured until it completes; a Future or Task by a completion
    callback, whether or not anyone awaits it.

    Args:
        metric: A Histogram, a Summary, a labelled child of one, or anything
            with ``observe(value)``.
        future: The awaitable to measure instead of decorating.
        labels: For a metric with label names: computes the label values from
            the call's arguments (see :data:`promloop.types.LabelsFactory`).
        exemplar: Computes an exemplar for each observation, after the work
            (see :data:`promloop.types.ExemplarFactory`).

    Returns:
        A decorator; or, given *future*, a coroutine that returns its result.

    Raises:
        TypeError: *metric* has no ``observe()``, a callback is not callable,
            or *future* is not awaitable.
        ValueError: *metric* has label names but no *labels*, or *labels* but
            no label names, or *exemplar* but ``observe()`` takes none.

    .. versionchanged:: 26.0.0
       Plain and generator functions, ``labels=`` and ``exemplar=``.
    """
    if (
        type(future) is CoroutineType
        and labels is None
        and exemplar is None
        and id(metric) in _TIME_CHECKED
    ):
        # Checked before, and it records directly: nothing to check again.
        return _timed(future, metric, perf_counter())
    recipe = make_recipe(TIME, metric, labels=labels, exemplar=exemplar)
    return _apply(recipe, future)  # type: ignore[no-any-return]


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
    future: Awaitable[T],
    *,
    exc: ExceptionTypes | None = None,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Coroutine[Any, Any, T]: ...


def count_exceptions(
    metric: Incrementer,
    future: Awaitable[T] | None = None,
    *,
    exc: ExceptionTypes | None = None,
    labels: LabelsFactory | None = None,
    exemplar: ExemplarFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]] | Coroutine[Any, Any, T]:
    """Call ``metric.inc()`` whenever the work raises, then re-raise.

    Works as a decorator and on one awaitable, like :func:`time`.

    Args:
        metric: A Counter, a labelled child of one, or anything with ``inc()``.
        future: The awaitable to watch instead of decorating.
        exc: The exception class, or tuple of classes, to count -- honoured
            exactly.  The default counts every exception except cancellation
            (:class:`asyncio.CancelledError`, :class:`GeneratorExit`, trio's
            and Twisted's cancellation): a cancelled request is not a failure.
            ``exc=BaseException`` counts cancellation too.
        labels: As for :func:`time`.
        exemplar: As for :func:`time`.

    Returns:
        A decorator; or, given *future*, a coroutine that returns its result.

    Raises:
        TypeError: *metric* has no ``inc()``, or *exc* is not an exception
            class or a tuple of them, or *future* is not awaitable.
        ValueError: As for :func:`time`.

    .. versionchanged:: 26.0.0
       Cancellation is not counted by default; *exc* may be a tuple.
    """
    if (
        type(future) is CoroutineType
        and exc is None
        and labels is None
        and exemplar is None
        and id(metric) in _COUNT_CHECKED
    ):
        # Checked before, and it records directly: nothing to check again.
        return _counted(future, metric, FAILURES)
    recipe = make_recipe(COUNT, metric, exc=exc, labels=labels, exemplar=exemplar)
    return _apply(recipe, future)  # type: ignore[no-any-return]


@overload
def track_inprogress(
    metric: InProgressGauge,
    *,
    labels: LabelsFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


@overload
def track_inprogress(
    metric: InProgressGauge,
    future: Awaitable[T],
    *,
    labels: LabelsFactory | None = None,
) -> Coroutine[Any, Any, T]: ...


def track_inprogress(
    metric: InProgressGauge,
    future: Awaitable[T] | None = None,
    *,
    labels: LabelsFactory | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]] | Coroutine[Any, Any, T]:
    """Call ``metric.inc()`` when work starts and ``metric.dec()`` when it ends.

    Works as a decorator and on one awaitable, like :func:`time`.  The gauge
    never leaks: it comes down on every way out, and work that never runs
    never raises it.  For a Future or Task it goes up at once and down when
    the future completes, whether or not anyone awaits the returned
    coroutine; for a coroutine object, it goes up when the coroutine starts
    running.

    Args:
        metric: A Gauge, a labelled child of one, or anything with ``inc()``
            and ``dec()``.
        future: The awaitable to track instead of decorating.
        labels: As for :func:`time`.

    Returns:
        A decorator; or, given *future*, a coroutine that returns its result.

    Raises:
        TypeError: *metric* lacks ``inc()`` or ``dec()``, or *future* is not
            awaitable.
        ValueError: As for :func:`time`.

    .. versionchanged:: 26.0.0
       The awaitable form no longer leaks when the awaitable is never awaited.
    """
    if type(future) is CoroutineType and labels is None and id(metric) in _TRACK_CHECKED:
        # Checked before, and it records directly: nothing to check again.
        return _tracked(future, metric)
    recipe = make_recipe(TRACK, metric, labels=labels)
    return _apply(recipe, future)  # type: ignore[no-any-return]
