"""Probes: a recipe as a pair of calls, made when work starts and when it ends.

``start(args, kwargs)`` runs when a measured piece of work begins and returns
the probe's state; ``stop(state, args, kwargs, error)`` runs when it ends,
with the exception that ended it (or None).  Every kind of work can be
measured this way -- generators, async generators, Futures, Deferreds, and
calls whose recipe picks a labelled child or attaches an exemplar, which need
the call's arguments.  The commonest case has faster wrappers of its own
(:mod:`promloop._templates`); their state is the same as these probes', so
that a probe can finish what a template started.

A probe reads the time from ``clock.perf_counter``, where *clock* is the
decorator module that made it: tests patch the clock there.  A failure to
record in ``stop()`` is reported to the recipe's ``recording_failed()``: the
work is over, and its own result or exception must come through.
"""

from __future__ import annotations

import abc

from typing import TYPE_CHECKING, Any

from ._recipes import COUNT, TIME, TRACK


if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from ._recipes import Args, Kind, Kwargs, Recipe


class Probe(abc.ABC):
    """Measures work for one recipe: ``start()`` when it begins, ``stop()`` when it ends."""

    __slots__ = ("clock", "counts", "exemplar_of", "metric", "pick_child", "recording_failed")

    starts_with_execution = False
    """True if work must not count as started before it runs (the in-progress
    gauge): a coroutine object that is never awaited then leaves no trace."""

    records_success = True
    """False if ``stop()`` does nothing unless the work failed."""

    def __init__(self, recipe: Recipe, clock: ModuleType) -> None:
        self.clock = clock
        self.metric = recipe.metric
        self.pick_child = recipe.pick_child
        self.exemplar_of = recipe.exemplar_of
        self.counts: Callable[[BaseException], bool] = recipe.counts
        self.recording_failed = recipe.recording_failed

    def target(self, args: Args, kwargs: Kwargs) -> Any:
        """Return the metric, or the labelled child that this call records on."""
        return self.metric if self.pick_child is None else self.pick_child(args, kwargs)

    @abc.abstractmethod
    def start(self, args: Args, kwargs: Kwargs) -> Any:
        """Begin measuring a call; return the state that ``stop()`` needs."""

    @abc.abstractmethod
    def stop(self, state: Any, args: Args, kwargs: Kwargs, error: BaseException | None) -> None:
        """End the measurement that *state* began; *error* is what ended the work, if anything."""


class TimingProbe(Probe):
    """``time()``: observe the seconds between start and stop."""

    __slots__ = ()

    def start(self, args: Args, kwargs: Kwargs) -> tuple[Any, float]:
        target = self.target(args, kwargs)
        return target, self.clock.perf_counter()

    def stop(
        self,
        state: Any,
        args: Args,
        kwargs: Kwargs,
        error: BaseException | None,  # noqa: ARG002 -- one signature for every probe
    ) -> None:
        target, started = state
        # The clock is read first: the exemplar is not part of the work.
        elapsed = self.clock.perf_counter() - started
        try:
            if self.exemplar_of is None:
                target.observe(elapsed)
            else:
                target.observe(elapsed, exemplar=self.exemplar_of(args, kwargs))
        except Exception:  # noqa: BLE001 -- reported, see the module docstring
            self.recording_failed()


class CountingProbe(Probe):
    """``count_exceptions()``: increment when the work ends with an exception that counts."""

    __slots__ = ()

    records_success = False

    def start(self, args: Args, kwargs: Kwargs) -> Any:
        # The child is picked up front, so that a faulty labels= callable fails
        # before the work runs, never after it.
        return self.target(args, kwargs)

    def stop(self, state: Any, args: Args, kwargs: Kwargs, error: BaseException | None) -> None:
        if error is None or not self.counts(error):
            return
        try:
            if self.exemplar_of is None:
                state.inc()
            else:
                state.inc(exemplar=self.exemplar_of(args, kwargs))
        except Exception:  # noqa: BLE001 -- reported, see the module docstring
            self.recording_failed()


class TrackingProbe(Probe):
    """``track_inprogress()``: increment on start, decrement on every stop."""

    __slots__ = ()

    starts_with_execution = True

    def start(self, args: Args, kwargs: Kwargs) -> Any:
        target = self.target(args, kwargs)
        target.inc()
        return target

    def stop(
        self,
        state: Any,
        args: Args,  # noqa: ARG002 -- one signature for every probe
        kwargs: Kwargs,  # noqa: ARG002
        error: BaseException | None,  # noqa: ARG002
    ) -> None:
        try:
            state.dec()
        except Exception:  # noqa: BLE001 -- reported, see the module docstring
            self.recording_failed()


_PROBES: dict[Kind, type[Probe]] = {
    TIME: TimingProbe,
    COUNT: CountingProbe,
    TRACK: TrackingProbe,
}


def make_probe(recipe: Recipe, clock: ModuleType) -> Probe:
    """Return the probe that measures by *recipe*, reading the time from *clock*."""
    return _PROBES[recipe.kind](recipe, clock)
