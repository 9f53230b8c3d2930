"""Instrumentation wrappers for asyncio (and any other async library).

Nothing here calls an asyncio-only API: decorated coroutines run unchanged
under trio or anyio.  asyncio Futures and Tasks are only recognised, by duck
typing, so that they can be measured by a completion callback.
"""

from __future__ import annotations

import inspect

from time import perf_counter  # noqa: F401  # pyright: ignore[reportUnusedImport] -- see _GLOBALS
from typing import TYPE_CHECKING, Any, overload

from .._probes import Args, Kwargs, counting_recipe, timing_recipe, tracking_recipe
from .._wrappers import NOT_STARTED, Probe, follow_awaitable, instrument, measure_awaitable


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

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

# The wrappers are compiled in this module's namespace: they read the clock
# from this module's perf_counter at every measurement, so that tests can patch
# promloop.aio._decorators.perf_counter as they patch prometheus-async's.
_GLOBALS = globals()


def _is_future(obj: Any) -> bool:
    # asyncio.isfuture() without importing asyncio: the attribute that every
    # asyncio-compatible Future (and Task) carries.
    blocking: object = getattr(obj.__class__, "_asyncio_future_blocking", None)
    add_done_callback: object = getattr(obj, "add_done_callback", None)
    return blocking is not None and callable(add_done_callback)


def _watch_future(probe: Probe, future: Any, state: Any, args: Args, kwargs: Kwargs) -> None:
    """Stop the measurement when *future* completes, whoever awaits it (or nobody)."""

    def on_done(done: Any) -> None:
        try:
            error = done.exception()
        except BaseException as cancelled:  # noqa: BLE001 -- a cancelled future raises here
            error = cancelled
        probe.stop(state, args, kwargs, error)

    future.add_done_callback(on_done)


def _settle(probe: Probe, result: Any, state: Any, args: Args, kwargs: Kwargs) -> Any:
    """Measure a plain function's pending result until it completes."""
    if _is_future(result):
        _watch_future(probe, result, state, args, kwargs)
        return result
    return follow_awaitable(probe, result, state, args, kwargs)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _apply(who: str, probe: Probe, awaitable: Any) -> Any:
    """Return a decorator, or measure one *awaitable* and return a coroutine."""
    if awaitable is None:

        def decorator(func: Any) -> Any:
            return instrument(who, func, probe, _settle)

        return decorator

    if _is_future(awaitable):
        _watch_future(probe, awaitable, probe.start((), {}), (), {})
        return _await(awaitable)
    if not inspect.isawaitable(awaitable):
        msg = (
            f"{who}'s second argument must be an awaitable (a coroutine, Task or Future) "
            f"to measure, not {awaitable!r}; to decorate a function, call {who} with the "
            f"metric alone."
        )
        raise TypeError(msg)
    state = NOT_STARTED if probe.starts_with_execution else probe.start((), {})
    return measure_awaitable(probe, awaitable, (), {}, state)


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
    probe = Probe(timing_recipe("time()", metric, labels=labels, exemplar=exemplar), _GLOBALS)
    return _apply("time()", probe, future)  # type: ignore[no-any-return]


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
    recipe = counting_recipe(
        "count_exceptions()", metric, exc=exc, labels=labels, exemplar=exemplar
    )
    probe = Probe(recipe, _GLOBALS)
    return _apply("count_exceptions()", probe, future)  # type: ignore[no-any-return]


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
    probe = Probe(tracking_recipe("track_inprogress()", metric, labels=labels), _GLOBALS)
    return _apply("track_inprogress()", probe, future)  # type: ignore[no-any-return]
