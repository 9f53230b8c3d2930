"""promloop.tx's wrappers, as docs/twisted.md describes them, without a running reactor."""

from __future__ import annotations

import logging

import pytest


pytest.importorskip("twisted", reason="the 'no Twisted' tox environments test the ImportError")

from prometheus_client import Counter, Histogram
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    inlineCallbacks,
    returnValue,
    succeed,
)
from twisted.python.failure import Failure

from promloop import tx


def result_of(deferred: Deferred[object]) -> object:
    """Return the result of an already-fired Deferred, or raise its failure."""
    outcome: list[object] = []
    deferred.addBoth(outcome.append)
    [value] = outcome
    if isinstance(value, Failure):
        value.raiseException()
    return value


def run_coroutine(coroutine) -> object:
    """Drive a coroutine that awaits only fired Deferreds, as Twisted would."""
    return result_of(Deferred.fromCoroutine(coroutine))


class TestTime:
    def test_deferred_result(self, observer, clock):
        """A returned Deferred is measured until it fires; its result passes through."""
        pending: Deferred[str] = Deferred()
        decorated = tx.time(observer)(lambda: pending)

        returned = decorated()
        assert returned is pending
        assert [] == observer.observed

        pending.callback("fired")
        assert "fired" == result_of(returned)
        assert [1.0] == observer.observed

    def test_failed_deferred(self, observer, clock):
        """A Deferred that fails is observed, and the failure passes through."""
        with pytest.raises(KeyError):
            result_of(tx.time(observer)(lambda: fail(KeyError()))())
        assert [1.0] == observer.observed

    def test_plain_value(self, observer, clock):
        """A plain value is measured synchronously and returned as is."""
        assert 42 == tx.time(observer)(lambda: 42)()
        assert [1.0] == observer.observed

    def test_synchronous_raise(self, observer, clock):
        """A synchronous raise is observed, and propagates."""

        @tx.time(observer)
        def broken():
            raise ValueError

        with pytest.raises(ValueError):
            broken()
        assert [1.0] == observer.observed

    def test_async_def(self, observer, clock):
        """An async def function is measured until it finishes, not until it is created."""

        @tx.time(observer)
        async def work():
            return await succeed("done")

        coroutine = work()
        assert [] == observer.observed
        assert "done" == run_coroutine(coroutine)
        assert [1.0] == observer.observed

    def test_plain_function_returning_coroutine(self, observer, clock):
        """A plain function's coroutine result is measured until it finishes."""

        async def later():
            return await succeed("later")

        assert "later" == run_coroutine(tx.time(observer)(lambda: later())())
        assert [1.0] == observer.observed

    def test_deferred_form(self, observer, clock):
        """time(metric, d) returns d itself, measured from the call until it fires."""
        pending: Deferred[str] = Deferred()

        returned = tx.time(observer, pending)
        assert returned is pending
        assert 1 == clock.reads

        pending.callback("x")
        assert [1.0] == observer.observed

    def test_not_a_deferred(self, observer):
        """A second argument that is not a Deferred fails at once."""
        with pytest.raises(
            TypeError, match=r"time\(\) for .*: the second argument must be a Deferred"
        ):
            tx.time(observer, 42)  # type: ignore[call-overload]

    def test_no_observe(self):
        """A metric without observe() fails at decoration time."""
        with pytest.raises(TypeError, match=r"time\(\) for .*: the metric has no observe\(\)"):
            tx.time(object())  # type: ignore[arg-type]

    def test_labels_and_exemplar(self, registry):
        """labels= and exemplar= work on the Twisted side too."""
        histogram = Histogram("render_seconds", "Rendering.", ["page"], registry=registry)

        decorated = tx.time(
            histogram, labels=lambda page: (page,), exemplar=lambda page: {"page_id": page}
        )(lambda page: succeed(page))
        assert "home" == result_of(decorated("home"))

        samples = next(iter(histogram.collect())).samples
        [count] = [s for s in samples if s.name == "render_seconds_count"]
        assert ({"page": "home"}, 1.0) == (count.labels, count.value)
        assert [{"page_id": "home"}] == [s.exemplar.labels for s in samples if s.exemplar]

    def test_recording_failure(self, caplog):
        """A metric that fails after the work is logged; the Deferred's result is kept."""

        class Broken:
            def observe(self, value):
                raise RuntimeError

        with caplog.at_level(logging.ERROR, logger="promloop"):
            assert "ok" == result_of(tx.time(Broken(), succeed("ok")))
        assert "time() for " in caplog.text
        assert " could not record" in caplog.text


class TestCountExceptions:
    def test_failed_deferred(self, counter):
        """A failed Deferred counts once, and the failure passes through."""
        with pytest.raises(KeyError):
            result_of(tx.count_exceptions(counter)(lambda: fail(KeyError()))())
        assert 1 == counter.count

    def test_success(self, counter):
        """A Deferred that succeeds counts nothing."""
        assert "ok" == result_of(tx.count_exceptions(counter)(lambda: succeed("ok"))())
        assert 0 == counter.count

    def test_synchronous_raise(self, counter):
        """A synchronous raise counts, and propagates."""

        @tx.count_exceptions(counter)
        def broken():
            raise ValueError

        with pytest.raises(ValueError):
            broken()
        assert 1 == counter.count

    def test_exc_tuple_on_deferred(self, counter):
        """A tuple exc= matches on the Deferred path too."""
        decorator = tx.count_exceptions(counter, exc=(KeyError, IndexError))

        for error in (KeyError(), IndexError(), ValueError()):
            with pytest.raises(type(error)):
                result_of(decorator(lambda error=error: fail(error))())

        assert 2 == counter.count

    def test_exc_class_sync(self, counter):
        """exc= is honoured on the synchronous path."""
        decorator = tx.count_exceptions(counter, exc=KeyError)

        def raiser(error):
            raise error

        for error in (KeyError(), ValueError()):
            with pytest.raises(type(error)):
                decorator(raiser)(error)

        assert 1 == counter.count

    def test_cancelled_deferred_not_counted(self, counter):
        """A cancelled Deferred is not a failure by default."""
        pending: Deferred[None] = Deferred()
        tx.count_exceptions(counter, pending)

        pending.cancel()

        with pytest.raises(CancelledError):
            result_of(pending)
        assert 0 == counter.count

    def test_cancelled_deferred_counted_when_asked(self, counter):
        """exc=BaseException counts a cancelled Deferred too."""
        pending: Deferred[None] = Deferred()
        tx.count_exceptions(counter, pending, exc=BaseException)

        pending.cancel()

        with pytest.raises(CancelledError):
            result_of(pending)
        assert 1 == counter.count

    def test_deferred_form_returns_same(self, counter):
        """count_exceptions(metric, d) returns d itself."""
        pending: Deferred[None] = Deferred()

        assert pending is tx.count_exceptions(counter, pending)

    def test_real_counter(self, registry):
        """A real Counter is incremented by a failure."""
        failures = Counter("failures", "Failures.", registry=registry)

        with pytest.raises(KeyError):
            result_of(tx.count_exceptions(failures, fail(KeyError())))
        assert 1.0 == registry.get_sample_value("failures_total")


class TestTrackInprogress:
    def test_deferred(self, gauge):
        """The gauge is up until a returned Deferred fires."""
        pending: Deferred[str] = Deferred()
        decorated = tx.track_inprogress(gauge)(lambda: pending)

        decorated()
        assert 1 == gauge.value

        pending.callback("done")
        assert 0 == gauge.value

    def test_plain_value(self, gauge):
        """A plain value brings the gauge down at once."""

        @tx.track_inprogress(gauge)
        def work():
            return gauge.value

        assert 1 == work()
        assert 0 == gauge.value

    def test_synchronous_raise(self, gauge):
        """A synchronous raise brings the gauge down (prometheus-async leaks here)."""

        @tx.track_inprogress(gauge)
        def broken():
            raise ValueError

        with pytest.raises(ValueError):
            broken()
        assert (0, 1) == (gauge.value, gauge.highest)

    def test_cancelled_deferred(self, gauge):
        """A cancelled Deferred brings the gauge down."""
        pending: Deferred[None] = Deferred()
        tx.track_inprogress(gauge, pending)
        assert 1 == gauge.value

        pending.cancel()
        pending.addErrback(lambda failure: failure.trap(CancelledError))

        assert 0 == gauge.value

    def test_async_def(self, gauge):
        """An async def function is tracked while it runs."""

        @tx.track_inprogress(gauge)
        async def work():
            return gauge.value

        assert 1 == run_coroutine(work())
        assert 0 == gauge.value

    # The application's own coroutine is never awaited either: Python warns about it.
    @pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
    def test_plain_function_coroutine_never_awaited(self, gauge):
        """A coroutine result that nobody runs leaves the gauge at 0."""

        async def later():
            return None

        coroutine = tx.track_inprogress(gauge)(lambda: later())()
        coroutine.close()

        assert 0 == gauge.value

    def test_missing_inc(self, observer):
        """A metric without inc() fails at decoration time."""
        with pytest.raises(
            TypeError, match=r"track_inprogress\(\) for .*: the metric has no inc\(\)"
        ):
            tx.track_inprogress(observer)  # type: ignore[arg-type]


# returnValue() is deprecated since Twisted 24.7, but code written before then still calls it.
RETURN_VALUE = pytest.mark.filterwarnings(
    "ignore:twisted.internet.defer.returnValue was deprecated:DeprecationWarning"
)


@RETURN_VALUE
class TestInlineCallbacks:
    @pytest.mark.parametrize("exc", [None, BaseException])
    @pytest.mark.parametrize("below", [True, False], ids=["below", "above"])
    def test_return_value_not_counted(self, counter, exc, below):
        """returnValue() is a success for count_exceptions(), above or below @inlineCallbacks."""
        counted = tx.count_exceptions(counter, exc=exc)

        def lookup():
            yield succeed(None)
            returnValue("found")

        decorated = inlineCallbacks(counted(lookup)) if below else counted(inlineCallbacks(lookup))

        assert "found" == result_of(decorated())
        assert 0 == counter.count

    @pytest.mark.parametrize("below", [True, False], ids=["below", "above"])
    def test_return_value_timed_and_tracked(self, observer, gauge, clock, below):
        """time() observes a returnValue() once, and track_inprogress() brings its gauge down."""

        def lookup():
            yield succeed(None)
            returnValue(gauge.value)

        def decorate(func):
            return tx.time(observer)(tx.track_inprogress(gauge)(func))

        decorated = (
            inlineCallbacks(decorate(lookup)) if below else decorate(inlineCallbacks(lookup))
        )

        assert 1 == result_of(decorated())
        assert ([1.0], 0, 1) == (observer.observed, gauge.value, gauge.highest)

    # Twisted warns about a returnValue() outside the generator it ends, with or without promloop.
    @pytest.mark.filterwarnings(
        "ignore:returnValue.. in 'finish' causing 'lookup' to exit:DeprecationWarning"
    )
    def test_return_value_from_a_helper(self, counter):
        """A decorated helper that calls returnValue() for its generator is not a failure."""

        @tx.count_exceptions(counter)
        def finish(value):
            returnValue(value)

        @inlineCallbacks
        def lookup():
            yield succeed(None)
            finish("found")

        assert "found" == result_of(lookup())
        assert 0 == counter.count

    def test_failure_below_counted(self, counter):
        """An exception in a generator below @inlineCallbacks still counts."""

        @inlineCallbacks
        @tx.count_exceptions(counter)
        def lookup():
            yield succeed(None)
            raise KeyError("missing")

        with pytest.raises(KeyError):
            result_of(lookup())
        assert 1 == counter.count
