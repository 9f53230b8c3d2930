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

from collections.abc import Awaitable
from time import perf_counter  # noqa: F401  # pyright: ignore[reportUnusedImport] -- see _GLOBALS
from typing import TYPE_CHECKING, Any, Final, overload

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .._probes import Args, Kwargs, Recipe, counting_recipe, timing_recipe, tracking_recipe
from .._wrappers import Probe, compile_recipe, instrument, settle_awaitable


if TYPE_CHECKING:
    from collections.abc import Callable

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
# promloop.tx._decorators.perf_counter as they patch prometheus-async's.
_GLOBALS = globals()


# Called with a Deferred's outcome: the recipe's lines run inline, as in a
# hand-written callback.  A recipe with nothing to do on success (counting
# exceptions) is attached as an errback only.
_ON_FIRED: Final = """
def on_fired(outcome, state, args, kwargs):
    {unpack_state}
    if isinstance(outcome, Failure):
        error = outcome.value
        {on_error}
    else:
        {on_success}
    return outcome

return on_fired
"""


class _DeferredProbe:
    """A probe, and how it watches a Deferred until it fires."""

    __slots__ = ("on_fired", "probe", "success_matters")

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.on_fired: Callable[..., Any] = compile_recipe(
            _ON_FIRED, probe.recipe, _GLOBALS, Failure=Failure
        )
        self.success_matters = bool(probe.recipe.on_success)

    def watch(self, deferred: Deferred[Any], state: Any, args: Args, kwargs: Kwargs) -> Any:
        """Stop the measurement when *deferred* fires; its outcome passes on untouched."""
        if self.success_matters:
            return deferred.addBoth(self.on_fired, state, args, kwargs)
        return deferred.addErrback(self.on_fired, state, args, kwargs)

    def settle(self, probe: Probe, result: Any, state: Any, args: Args, kwargs: Kwargs) -> Any:
        """Measure a plain function's pending result until it fires or completes."""
        if isinstance(result, Deferred):
            return self.watch(result, state, args, kwargs)
        return settle_awaitable(probe, result, state, args, kwargs)


# What a plain function may return that is measured until it completes: a
# Deferred, a coroutine, or any other awaitable (see promloop.aio's).
_PENDING: Final = Awaitable


def _apply(recipe: Recipe, deferred: Any) -> Any:
    """Return a decorator, or measure one *deferred* and return it."""
    watcher = _DeferredProbe(Probe(recipe, _GLOBALS))
    if deferred is None:

        def decorator(func: Any) -> Any:
            return instrument(recipe.who, func, watcher.probe, watcher.settle, _PENDING)

        return decorator
    if not isinstance(deferred, Deferred):
        msg = (
            f"{recipe.who}: the second argument must be a Deferred to measure, not "
            f"{deferred!r}; to decorate a function, pass the metric alone."
        )
        raise TypeError(msg)
    return watcher.watch(deferred, watcher.probe.start((), {}), (), {})


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
    recipe = timing_recipe("time()", metric, labels=labels, exemplar=exemplar)
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
    recipe = counting_recipe(
        "count_exceptions()", metric, exc=exc, labels=labels, exemplar=exemplar
    )
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
    recipe = tracking_recipe("track_inprogress()", metric, labels=labels)
    return _apply(recipe, deferred)  # type: ignore[no-any-return]
