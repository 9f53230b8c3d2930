"""Wrappers with the measurement written inline, for the commonest recipes.

A recipe without ``labels=`` or ``exemplar=`` records on the metric itself and
needs nothing from the call's arguments.  For those, on a coroutine function
or a plain function, each template below makes the wrapper: a complete
function, written out as one would by hand, with the metric calls inline --
no probe in between.  Measured side by side (``benchmarks/bench_wrappers.py``),
a wrapper made by a probe costs a quarter to two fifths more than one of these.

Every template takes ``(func, recipe, probe, side)`` and returns the wrapper.
The wrapper's parameters are ``*args, **kwargs``, passed on to *func* as they
came.  :func:`promloop._templating.specialize` recompiles a template with the
exact parameters of the Python function it wraps in those two places, which
saves packing them into a tuple and a dict on every call; nothing else in a
template may use ``args`` or ``kwargs``.

The time is read from ``clock.perf_counter``, where *clock* is the decorator
module (``side.clock``): tests patch the clock there.  A failure to record
after the work is reported to ``recording_failed()``, never raised: the work
is over, and its own result or exception must come through.  A result of a
pending type (a coroutine, a Future, a Deferred, ...) is handed to
``side.settle`` with the state a :class:`~promloop._probes.Probe` of the same
recipe would have, and measured until it completes.
"""

from __future__ import annotations

import sys

from typing import TYPE_CHECKING, Any, Final, cast

from ._recipes import COUNT, TIME, TRACK


if TYPE_CHECKING:
    from collections.abc import Callable

    from ._probes import Probe
    from ._recipes import Kind, Recipe
    from ._wrappers import Side

    Template = Callable[[Callable[..., Any], Recipe, Probe, Side], Callable[..., Any]]


# The exception being handled (never None inside an except block).  Read this
# way rather than bound by ``except ... as error``, whose clean-up on the way
# out costs a tenth of a failing call's overhead in count_exceptions()
# (benchmarks/bench_wrappers.py).
def _handled_exception_on_3_10() -> BaseException:  # pragma: no cover -- Python 3.10 only
    return cast("BaseException", sys.exc_info()[1])


# One line whichever branch is taken: each Python version covers every line.
handled_exception = cast(
    "Callable[[], BaseException]", getattr(sys, "exception", _handled_exception_on_3_10)
)


# --- coroutine functions ----------------------------------------------------------


def timed_coroutine_function(func: Any, recipe: Recipe, probe: Probe, side: Side) -> Any:
    """Make ``time()``'s wrapper of a coroutine function."""
    metric, clock, recording_failed = recipe.metric, side.clock, recipe.recording_failed

    async def measured(*args: Any, **kwargs: Any) -> Any:
        started = clock.perf_counter()
        try:
            return await func(*args, **kwargs)
        finally:
            try:
                metric.observe(clock.perf_counter() - started)
            except Exception:  # noqa: BLE001 -- see the module docstring
                recording_failed()

    return measured


def counted_coroutine_function(func: Any, recipe: Recipe, probe: Probe, side: Side) -> Any:
    """Make ``count_exceptions()``'s wrapper of a coroutine function."""
    metric, counts, recording_failed = recipe.metric, recipe.counts, recipe.recording_failed
    verdicts = counts.verdicts

    async def measured(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except BaseException:
            error = handled_exception()
            # The verdict on a known exception class, without calling the filter.
            if verdicts.get(type(error)) or counts(error):
                try:
                    metric.inc()
                except Exception:  # noqa: BLE001 -- see the module docstring
                    recording_failed()
            del error  # it would hold this frame, through its traceback
            raise

    return measured


def tracked_coroutine_function(func: Any, recipe: Recipe, probe: Probe, side: Side) -> Any:
    """Make ``track_inprogress()``'s wrapper of a coroutine function."""
    metric, recording_failed = recipe.metric, recipe.recording_failed

    async def measured(*args: Any, **kwargs: Any) -> Any:
        metric.inc()
        try:
            return await func(*args, **kwargs)
        finally:
            try:
                metric.dec()
            except Exception:  # noqa: BLE001 -- see the module docstring
                recording_failed()

    return measured


# --- plain functions --------------------------------------------------------------


def timed_function(func: Any, recipe: Recipe, probe: Probe, side: Side) -> Any:
    """Make ``time()``'s wrapper of a plain function."""
    metric, clock, recording_failed = recipe.metric, side.clock, recipe.recording_failed
    pending, settle = side.pending, side.settle

    def measured(*args: Any, **kwargs: Any) -> Any:
        started = clock.perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException:
            try:
                metric.observe(clock.perf_counter() - started)
            except Exception:  # noqa: BLE001 -- see the module docstring
                recording_failed()
            raise
        if isinstance(result, pending):
            return settle(probe, result, (metric, started), (), {})
        try:
            metric.observe(clock.perf_counter() - started)
        except Exception:  # noqa: BLE001 -- see the module docstring
            recording_failed()
        return result

    return measured


def counted_function(func: Any, recipe: Recipe, probe: Probe, side: Side) -> Any:
    """Make ``count_exceptions()``'s wrapper of a plain function."""
    metric, counts, recording_failed = recipe.metric, recipe.counts, recipe.recording_failed
    verdicts, pending, settle = counts.verdicts, side.pending, side.settle

    def measured(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
        except BaseException:
            error = handled_exception()
            # The verdict on a known exception class, without calling the filter.
            if verdicts.get(type(error)) or counts(error):
                try:
                    metric.inc()
                except Exception:  # noqa: BLE001 -- see the module docstring
                    recording_failed()
            del error  # it would hold this frame, through its traceback
            raise
        if isinstance(result, pending):
            return settle(probe, result, metric, (), {})
        return result

    return measured


def tracked_function(func: Any, recipe: Recipe, probe: Probe, side: Side) -> Any:
    """Make ``track_inprogress()``'s wrapper of a plain function."""
    metric, recording_failed = recipe.metric, recipe.recording_failed
    pending, settle = side.pending, side.settle

    def measured(*args: Any, **kwargs: Any) -> Any:
        metric.inc()
        try:
            result = func(*args, **kwargs)
        except BaseException:
            try:
                metric.dec()
            except Exception:  # noqa: BLE001 -- see the module docstring
                recording_failed()
            raise
        if isinstance(result, pending):
            return settle(probe, result, metric, (), {})
        try:
            metric.dec()
        except Exception:  # noqa: BLE001 -- see the module docstring
            recording_failed()
        return result

    return measured


COROUTINE_FUNCTION_TEMPLATES: Final[dict[Kind, Template]] = {
    TIME: timed_coroutine_function,
    COUNT: counted_coroutine_function,
    TRACK: tracked_coroutine_function,
}

FUNCTION_TEMPLATES: Final[dict[Kind, Template]] = {
    TIME: timed_function,
    COUNT: counted_function,
    TRACK: tracked_function,
}
