"""promloop.aio's wrappers, as docs/asyncio.md describes them."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import gc
import linecache
import logging
import sys
import traceback
import weakref

import pytest
import trio

from prometheus_client import Counter, Gauge, Histogram, Summary

import promloop._recipes

from promloop import aio

from .conftest import FakeGauge, FakeObserver


if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


run = asyncio.run


async def succeed(value: object = 42) -> object:
    await asyncio.sleep(0)
    return value


async def fail(error: BaseException) -> None:
    await asyncio.sleep(0)
    raise error


async def block_forever() -> None:
    await asyncio.Event().wait()


async def cancel_soon(coroutine: object) -> asyncio.Task[object]:
    task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return task


class Request:
    """Like what aiohttp's session.get() returns: awaitable, and an async context manager.

    *on_event* is called when the response arrives and when it is released.
    """

    def __init__(self, on_event=lambda event: None, *, error=None, exit_error=None, suppress=False):
        self.url = "http://example.invalid/"
        self.on_event = on_event
        self.error = error
        self.exit_error = exit_error
        self.suppress = suppress

    def headers(self):
        return {"Accept": "*/*"}

    def __await__(self):
        return self._respond().__await__()

    async def _respond(self):
        await asyncio.sleep(0)
        self.on_event("response")
        if self.error is not None:
            raise self.error
        return "response"

    async def __aenter__(self):
        return await self._respond()

    async def __aexit__(self, *exc_info):
        self.on_event("released")
        if self.exit_error is not None:
            raise self.exit_error
        return self.suppress


class CoroutineLike(collections.abc.Coroutine):
    """An awaitable that is a Coroutine without being a native one, as aiohttp's requests are."""

    def __init__(self, value="done", *, waiting=None):
        self.closed = False
        self._coroutine = waiting if waiting is not None else succeed(value)

    def send(self, value):
        return self._coroutine.send(value)

    def throw(self, *args):
        return self._coroutine.throw(*args)

    def close(self):
        self.closed = True
        self._coroutine.close()

    def __await__(self):
        return self._coroutine.__await__()


def sample(metric: object, suffix: str = "", **labels: str) -> float | None:
    """Read one sample of a real prometheus_client metric."""
    for family in metric.collect():  # type: ignore[attr-defined]
        for s in family.samples:
            if s.name == family.name + suffix and s.labels == labels:
                return float(s.value)
    return None


class TestTime:
    def test_coroutine_function(self, observer, clock):
        """A coroutine function's runtime is observed once, and its result returned."""
        decorated = aio.time(observer)(succeed)

        assert 42 == run(decorated())
        assert [1.0] == observer.observed
        assert 2 == clock.reads

    def test_exception(self, observer, clock):
        """A raising call is observed, and its exception propagates unchanged."""
        error = ValueError("boom")

        with pytest.raises(ValueError) as info:
            run(aio.time(observer)(fail)(error))

        assert error is info.value
        assert [1.0] == observer.observed

    def test_cancellation(self, observer, clock):
        """A cancelled call is observed: the measurement ends with the cancellation."""
        run(cancel_soon(aio.time(observer)(block_forever)()))

        assert [1.0] == observer.observed

    def test_not_started(self, observer, clock):
        """A coroutine that is created but never awaited measures nothing."""
        aio.time(observer)(succeed)().close()

        assert [] == observer.observed
        assert 0 == clock.reads

    def test_async_generator(self, observer, clock):
        """An async generator is measured from its first iteration to exhaustion."""

        @aio.time(observer)
        async def numbers():
            yield 1
            assert [] == observer.observed
            yield 2

        async def consume():
            return [n async for n in numbers()]

        assert [1, 2] == run(consume())
        assert [1.0] == observer.observed

    def test_async_generator_aclose(self, observer, clock):
        """Closing an async generator early ends its measurement, and runs its cleanup."""
        cleaned_up = []

        @aio.time(observer)
        async def numbers():
            try:
                yield 1
                yield 2
            finally:
                cleaned_up.append(True)

        async def take_one():
            agen = numbers()
            first = await agen.__anext__()
            await agen.aclose()
            assert [True] == cleaned_up  # by aclose() itself, not by garbage collection
            return first

        assert 1 == run(take_one())
        assert [1.0] == observer.observed

    def test_async_generator_asend_athrow(self, observer, clock):
        """Values sent and exceptions thrown reach the inner async generator."""

        @aio.time(observer)
        async def echo():
            received = None
            while True:
                try:
                    received = yield received
                except KeyError:
                    received = "caught"

        async def talk():
            agen = echo()
            await agen.asend(None)
            sent = await agen.asend("hello")
            thrown = await agen.athrow(KeyError())
            await agen.aclose()
            return sent, thrown

        assert ("hello", "caught") == run(talk())
        assert [1.0] == observer.observed

    def test_async_generator_raises(self, observer, clock):
        """An exception inside an async generator is observed and propagates."""

        @aio.time(observer)
        async def broken():
            yield 1
            raise ValueError

        async def consume():
            return [n async for n in broken()]

        with pytest.raises(ValueError):
            run(consume())
        assert [1.0] == observer.observed

    def test_async_generator_thrown_exception_escapes(self, observer, clock):
        """An exception thrown in and not handled ends the generator and the measurement."""

        @aio.time(observer)
        async def numbers():
            yield 1

        async def throw():
            agen = numbers()
            await agen.__anext__()
            await agen.athrow(KeyError("in"))

        with pytest.raises(KeyError):
            run(throw())
        assert [1.0] == observer.observed

    def test_async_generator_returns_after_throw(self, observer, clock):
        """An inner generator that ends when an exception is thrown in stops cleanly."""

        @aio.time(observer)
        async def numbers():
            try:
                yield 1
            except KeyError:
                return

        async def throw():
            agen = numbers()
            await agen.__anext__()
            with pytest.raises(StopAsyncIteration):
                await agen.athrow(KeyError())

        run(throw())
        assert [1.0] == observer.observed

    def test_generator_function(self, observer, clock):
        """A generator function is measured from its first next() to exhaustion."""

        @aio.time(observer)
        def numbers():
            yield 1
            yield 2
            return "done"

        gen = numbers()
        assert 0 == clock.reads
        assert [1, 2] == list(gen)
        assert [1.0] == observer.observed

    def test_generator_close(self, observer, clock):
        """Closing a generator early ends its measurement."""

        @aio.time(observer)
        def numbers():
            yield 1
            yield 2

        gen = numbers()
        next(gen)
        gen.close()

        assert [1.0] == observer.observed

    def test_plain_function_value(self, observer, clock):
        """A plain function returning a value is measured synchronously."""
        decorated = aio.time(observer)(lambda: "value")

        assert "value" == decorated()
        assert [1.0] == observer.observed

    def test_plain_function_raises(self, observer, clock):
        """A plain function that raises is observed, and the exception propagates."""

        @aio.time(observer)
        def broken():
            raise ValueError

        with pytest.raises(ValueError):
            broken()
        assert [1.0] == observer.observed

    def test_plain_function_returning_coroutine(self, observer, clock):
        """A plain function's coroutine result is measured until it completes."""

        @aio.time(observer)
        def deferred_work():
            return succeed("later")

        pending = deferred_work()
        assert [] == observer.observed

        assert "later" == run(pending)
        assert [1.0] == observer.observed

    def test_plain_function_returning_future(self, observer, clock):
        """A plain function's Future comes back as is, measured until it completes."""

        async def main():
            future = asyncio.get_running_loop().create_future()

            returned = aio.time(observer)(lambda: future)()
            assert returned is future
            future.set_result("done")
            await asyncio.sleep(0)

        run(main())
        assert [1.0] == observer.observed

    def test_plain_function_returning_deferred(self, observer, clock):
        """A plain function's Twisted Deferred comes back as is, measured until it fires.

        ensureDeferred() takes it, and callbacks alone, without an await, see it observed.
        """
        defer = pytest.importorskip("twisted.internet.defer")
        deferred: defer.Deferred[str] = defer.Deferred()
        fired = []

        returned = aio.time(observer)(lambda: deferred)()
        returned.addCallback(lambda value: fired.append((value, list(observer.observed))))

        assert returned is deferred
        assert deferred is defer.ensureDeferred(returned)
        assert [] == observer.observed
        deferred.callback("fired")
        assert [("fired", [1.0])] == fired

    def test_awaitable_clock_starts_at_call(self, observer, clock):
        """In the awaitable form, the clock starts when time() is called."""
        wrapper = aio.time(observer, succeed("value"))
        assert 1 == clock.reads

        assert "value" == run(wrapper)
        assert [1.0] == observer.observed
        assert 2 == clock.reads

    def test_awaitable_exception(self, observer, clock):
        """The awaitable form observes a failure and re-raises it."""
        with pytest.raises(ZeroDivisionError):
            run(aio.time(observer, fail(ZeroDivisionError())))
        assert [1.0] == observer.observed

    def test_awaitable_task(self, observer, clock):
        """A Task is measured until it completes, even if the wrapper is never awaited."""

        async def main():
            task = asyncio.ensure_future(succeed())
            aio.time(observer, task).close()
            await task
            await asyncio.sleep(0)

        run(main())
        assert [1.0] == observer.observed

    def test_awaitable_task_awaited(self, observer, clock):
        """Awaiting the wrapper of a Task returns the Task's result."""

        async def main():
            return await aio.time(observer, asyncio.ensure_future(succeed("task")))

        assert "task" == run(main())

    def test_awaitable_checks_metric_once(self, observer, monkeypatch):
        """Repeated one-shot calls on the same metric check it once."""
        checked = []
        check = promloop._recipes._check
        monkeypatch.setattr(
            promloop._recipes,
            "_check",
            lambda kind, metric: checked.append(metric) or check(kind, metric),
        )

        for _ in range(3):
            run(aio.time(observer, succeed()))

        assert [observer] == checked
        assert 3 == len(observer.observed)

    def test_awaitable_keeps_no_metric_alive(self):
        """The check that a one-shot call remembers does not keep its metric alive."""
        observer = FakeObserver()
        run(aio.time(observer, succeed()))
        run(aio.time(observer, succeed()))
        gone = weakref.ref(observer)

        del observer
        gc.collect()

        assert gone() is None

    @pytest.mark.parametrize("form", [aio.time, aio.count_exceptions, aio.track_inprogress])
    def test_awaitable_check_gone_with_its_metric(self, form):
        """A metric's remembered check goes when it does: a new metric at its id is checked."""
        kind = {
            aio.time: promloop._recipes.TIME,
            aio.count_exceptions: promloop._recipes.COUNT,
            aio.track_inprogress: promloop._recipes.TRACK,
        }[form]
        metric = FakeObserver() if form is aio.time else FakeGauge()
        run(form(metric, succeed()))
        key = id(metric)
        assert key in kind.plain

        del metric
        gc.collect()

        assert key not in kind.plain
        assert key not in kind.checks

    # The refused coroutines are never awaited: Python warns about them.
    @pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
    def test_awaitable_labelled_child(self, registry):
        """A labelled child records in the one-shot form, call after call; its parent cannot."""
        histogram = Histogram("work_seconds", "Work.", ["route"], registry=registry)

        for _ in range(2):
            run(aio.time(histogram.labels("/a"), succeed()))
            with pytest.raises(ValueError, match="the metric has label names"):
                aio.time(histogram, succeed())

        assert 2.0 == sample(histogram, "_count", route="/a")

    def test_awaitable_metric_without_weak_references(self, clock):
        """A metric that cannot be weakly referenced is checked, and works, on every call."""

        class Slotted:
            __slots__ = ("observed",)

            def __init__(self):
                self.observed = []

            def observe(self, value):
                self.observed.append(value)

        metric = Slotted()
        for _ in range(2):
            run(aio.time(metric, succeed()))

        assert [1.0, 1.0] == metric.observed

    def test_not_awaitable(self, registry):
        """A second argument that is not awaitable fails at once, naming metric and problem."""
        histogram = Histogram("work_seconds", "Work.", registry=registry)

        with pytest.raises(
            TypeError,
            match=r"time\(\) for Histogram 'work_seconds': the second argument must be an "
            r"awaitable .* not 42",
        ):
            aio.time(histogram, 42)  # type: ignore[call-overload]

    def test_no_observe(self):
        """A metric without observe() fails at decoration time, naming it."""
        with pytest.raises(
            TypeError, match=r"time\(\) for .*: the metric has no observe\(\) method"
        ):
            aio.time(object())  # type: ignore[arg-type]

    def test_real_histogram(self, registry):
        """A real Histogram receives one observation per call."""
        histogram = Histogram("work_seconds", "Work.", registry=registry)

        run(aio.time(histogram)(succeed)())

        assert 1.0 == sample(histogram, "_count")

    def test_labelled_parent_without_labels(self, registry):
        """A parent metric with label names and no labels= fails at decoration time."""
        histogram = Histogram("work_seconds", "Work.", ["route"], registry=registry)

        with pytest.raises(
            ValueError,
            match=r"time\(\) for Histogram 'work_seconds': the metric has label names \('route',\)",
        ):
            aio.time(histogram)

    def test_labels_tuple(self, registry):
        """labels= receives the call's arguments and returns values in label-name order."""
        histogram = Histogram("work_seconds", "Work.", ["route", "method"], registry=registry)

        @aio.time(histogram, labels=lambda route, *, method: (route, method))
        async def handle(route, *, method):
            return route

        run(handle("/a", method="GET"))

        assert 1.0 == sample(histogram, "_count", route="/a", method="GET")

    def test_labels_dict(self, registry):
        """labels= may return a dict by label name."""
        histogram = Histogram("work_seconds", "Work.", ["route"], registry=registry)

        run(aio.time(histogram, labels=lambda: {"route": "/b"})(succeed)())

        assert 1.0 == sample(histogram, "_count", route="/b")

    def test_labels_method(self, registry):
        """On a method, labels= receives self like the method does."""
        histogram = Histogram("work_seconds", "Work.", ["who"], registry=registry)

        class Service:
            name = "svc"

            @aio.time(histogram, labels=lambda self: (self.name,))
            async def work(self):
                return self.name

        assert "svc" == run(Service().work())
        assert 1.0 == sample(histogram, "_count", who="svc")

    def test_labels_awaitable_form(self, registry):
        """In the awaitable form, labels= is called without arguments."""
        histogram = Histogram("work_seconds", "Work.", ["route"], registry=registry)

        run(aio.time(histogram, succeed(), labels=lambda: ("/c",)))

        assert 1.0 == sample(histogram, "_count", route="/c")

    def test_labels_single_string(self, registry):
        """labels= may return a plain string for a metric with one label name."""
        histogram = Histogram("work_seconds", "Work.", ["method"], registry=registry)

        run(aio.time(histogram, labels=lambda: "GET")(succeed)())

        assert 1.0 == sample(histogram, "_count", method="GET")

    def test_labels_wrong_values(self, registry):
        """Label values that do not fit fail before the work, naming metric and labels=."""
        histogram = Histogram("work_seconds", "Work.", ["method", "route"], registry=registry)

        with pytest.raises(
            ValueError, match=r"'work_seconds': labels= returned \('GET',\), which does not fit"
        ):
            run(aio.time(histogram, labels=lambda: ("GET",))(succeed)())

    def test_labelled_child_named_in_errors(self, registry):
        """Errors about a labelled child name its label values."""
        summary = Summary("work_seconds", "Work.", ["route"], registry=registry)

        with pytest.raises(ValueError, match=r"Summary 'work_seconds' \{route='/a'\}"):
            aio.time(summary.labels("/a"), exemplar=lambda: None)

    def test_labels_on_unlabelled_metric(self, registry):
        """labels= for a metric without label names fails at decoration time."""
        histogram = Histogram("work_seconds", "Work.", registry=registry)

        with pytest.raises(
            ValueError, match="'work_seconds': labels= was given, but the metric has no"
        ):
            aio.time(histogram, labels=lambda: ("x",))

    def test_labels_not_callable(self, registry):
        """labels= must be callable."""
        histogram = Histogram("work_seconds", "Work.", ["route"], registry=registry)

        with pytest.raises(TypeError, match="'work_seconds': labels= must be a callable"):
            aio.time(histogram, labels=("x",))  # type: ignore[arg-type]

    def test_labels_duck_typed(self, observer):
        """A duck-typed metric with a labels() method accepts labels=."""
        seen = []

        class Family:
            def observe(self, value):
                raise AssertionError

            def labels(self, *values):
                seen.append(values)
                return observer

        run(aio.time(Family(), labels=lambda: ("v",))(succeed)())

        assert [("v",)] == seen
        assert 1 == len(observer.observed)

    def test_labels_fails_before_work(self, observer):
        """A labels= callable that raises fails the call before the work runs."""
        ran = []

        class Family:
            observe = labels = None

        family = Family()
        family.observe = lambda value: None  # type: ignore[assignment]
        family.labels = lambda *values: observer  # type: ignore[assignment]

        @aio.time(family, labels=lambda: 1 / 0)
        async def work():
            ran.append(True)

        with pytest.raises(ZeroDivisionError):
            run(work())
        assert [] == ran

    def test_exemplar(self, registry):
        """exemplar= is called after the work, with the call's arguments."""
        histogram = Histogram("work_seconds", "Work.", registry=registry)
        calls = []

        def exemplar(trace_id):
            calls.append(trace_id)
            return {"trace_id": trace_id}

        run(aio.time(histogram, exemplar=exemplar)(succeed)("abc"))

        exemplars = [s.exemplar for s in next(iter(histogram.collect())).samples if s.exemplar]
        assert ["abc"] == calls
        assert [{"trace_id": "abc"}] == [e.labels for e in exemplars]

    def test_exemplar_none(self, registry):
        """An exemplar= callable returning None records no exemplar."""
        histogram = Histogram("work_seconds", "Work.", registry=registry)

        run(aio.time(histogram, exemplar=lambda: None)(succeed)())

        assert [] == [s for s in next(iter(histogram.collect())).samples if s.exemplar]
        assert 1.0 == sample(histogram, "_count")

    def test_exemplar_unsupported(self, registry):
        """exemplar= on a metric whose observe() takes no exemplar fails at decoration time."""
        summary = Summary("work_seconds", "Work.", registry=registry)

        with pytest.raises(
            ValueError, match=r"Summary 'work_seconds': the metric's observe\(\) takes no exemplar"
        ):
            aio.time(summary, exemplar=lambda: None)

    def test_exemplar_not_callable(self, observer):
        """exemplar= must be callable."""
        with pytest.raises(TypeError, match="exemplar= must be a callable"):
            aio.time(observer, exemplar={"a": "b"})  # type: ignore[arg-type]

    def test_exemplar_on_builtin_observe(self):
        """A metric whose observe() has no inspectable signature is trusted with exemplars."""

        class Builtin:
            def __init__(self):
                self.observe = {}.update  # inspect.signature() cannot read it

        aio.time(Builtin(), exemplar=lambda: None)  # type: ignore[arg-type]

    def test_recording_failure_keeps_result(self, caplog):
        """If observe() fails after the work, the failure is logged and the result kept."""

        class Broken:
            _name = "broken_seconds"

            def observe(self, value):
                raise RuntimeError("metric broke")

        with caplog.at_level(logging.ERROR, logger="promloop"):
            assert 42 == run(aio.time(Broken())(succeed)())
        assert "time() for Broken 'broken_seconds' could not record" in caplog.text

    @pytest.mark.parametrize(
        ("form", "who"),
        [
            (aio.time, "time()"),
            (aio.count_exceptions, "count_exceptions()"),
            (aio.track_inprogress, "track_inprogress()"),
        ],
    )
    def test_awaitable_recording_failure_names_metric(self, form, who, caplog):
        """A one-shot form names its metric when it fails to record, on later calls too."""

        class Broken:
            _name = "broken"

            def observe(self, value=None):
                raise RuntimeError("metric broke")

            def inc(self):
                if form is aio.count_exceptions:  # else it goes up before the work
                    self.observe()

            dec = observe

        metric = Broken()
        for _ in range(2):  # the second call finds its check by id() alone
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="promloop"), pytest.raises(KeyError):
                run(form(metric, fail(KeyError())))  # type: ignore[arg-type]

            assert f"{who} for Broken 'broken' could not record" in caplog.text

    def test_recording_failure_keeps_exception(self, caplog):
        """If observe() fails after the work raised, the work's exception propagates."""

        class Broken:
            def observe(self, value):
                raise RuntimeError("metric broke")

        with caplog.at_level(logging.ERROR, logger="promloop"), pytest.raises(KeyError):
            run(aio.time(Broken())(fail)(KeyError()))

    def test_exemplar_failure(self, registry, caplog):
        """A failing exemplar= callable is logged; the observation is kept, without it."""
        histogram = Histogram("work_seconds", "Work.", registry=registry)

        with caplog.at_level(logging.ERROR, logger="promloop"):
            assert 42 == run(aio.time(histogram, exemplar=lambda: 1 / 0)(succeed)())

        assert "time() for Histogram 'work_seconds': exemplar= failed" in caplog.text
        assert 1.0 == sample(histogram, "_count")

    def test_other_awaitable_awaited(self, observer, clock):
        """Another awaitable that a plain function returns is measured until it completes."""
        seen = []
        request = Request(lambda event: seen.append((event, list(observer.observed))))
        decorated = aio.time(observer)(lambda: request)

        async def main():
            return await decorated()

        assert "response" == run(main())
        assert [("response", [])] == seen
        assert [1.0] == observer.observed
        assert 2 == clock.reads

    def test_other_awaitable_async_with(self, observer, clock):
        """An async context manager is measured until its async with block has ended."""
        seen = []
        request = Request(lambda event: seen.append((event, list(observer.observed))))
        decorated = aio.time(observer)(lambda: request)

        async def main():
            async with decorated() as response:
                seen.append(("body", list(observer.observed)))
                return response

        assert "response" == run(main())
        assert [("response", []), ("body", []), ("released", [])] == seen
        assert [1.0] == observer.observed

    def test_other_awaitable_unused(self, observer, clock):
        """Another awaitable that is neither awaited nor entered records nothing."""
        aio.time(observer)(Request)()
        gc.collect()

        assert [] == observer.observed

    def test_other_awaitable_attributes(self, observer):
        """Every other attribute of the awaitable is the awaitable's own."""
        returned = aio.time(observer)(Request)()

        assert ("http://example.invalid/", {"Accept": "*/*"}) == (
            returned.url,
            returned.headers(),
        )
        assert isinstance(returned.__wrapped__, Request)

    def test_other_awaitable_repr(self, observer):
        """The proxy of another awaitable says what it measures."""
        returned = aio.time(observer)(Request)()

        assert repr(returned).startswith("<promloop measurement of <tests.")

    def test_other_awaitable_raises(self, observer, clock):
        """Another awaitable that raises is observed, and its exception propagates."""
        decorated = aio.time(observer)(lambda: Request(error=KeyError("gone")))

        async def main():
            await decorated()

        with pytest.raises(KeyError, match="gone"):
            run(main())
        assert [1.0] == observer.observed

    def test_other_awaitable_awaited_twice(self, observer, clock):
        """Each await of the same awaitable is a measurement of its own."""
        returned = aio.time(observer)(Request)()

        async def main():
            return [await returned, await returned]

        assert ["response", "response"] == run(main())
        assert [1.0, 1.0] == observer.observed
        assert 4 == clock.reads

    def test_other_awaitable_without_async_with(self, observer):
        """An awaitable that is no async context manager does not become one."""

        class Awaitable:
            def __await__(self):
                return succeed("done").__await__()

        returned = aio.time(observer)(Awaitable)()

        async def enter():
            async with returned:  # type: ignore[attr-defined]
                pass

        async def wait():
            return await returned

        assert not hasattr(returned, "__aenter__")
        # Python 3.10 says AttributeError: __aenter__; later versions, TypeError.
        with pytest.raises(
            (TypeError, AttributeError), match=r"asynchronous context manager|__aenter__"
        ):
            run(enter())
        assert "done" == run(wait())

    def test_other_coroutine_as_task(self, observer, clock):
        """A coroutine-like awaitable stays one: a Task can run it, measured."""
        decorated = aio.time(observer)(CoroutineLike)

        async def main():
            returned = decorated("task")
            assert asyncio.iscoroutine(returned)
            return await asyncio.create_task(returned)

        assert "task" == run(main())
        assert [1.0] == observer.observed

    def test_other_coroutine_cancelled(self, observer, clock):
        """A coroutine-like awaitable cancelled while it runs in a Task is observed."""
        decorated = aio.time(observer)(lambda: CoroutineLike(waiting=block_forever()))

        run(cancel_soon(decorated()))

        assert [1.0] == observer.observed

    # The application's own coroutine is never awaited either: Python warns about it.
    @pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
    def test_other_coroutine_closed(self, observer, clock):
        """Closing a coroutine-like awaitable before it runs closes it, and records nothing."""
        returned = aio.time(observer)(CoroutineLike)()

        returned.close()

        assert returned.__wrapped__.closed
        assert [] == observer.observed

    def test_other_coroutine_closed_while_running(self, observer, clock):
        """Closing a coroutine-like awaitable that has started ends its measurement."""
        returned = aio.time(observer)(lambda: CoroutineLike(waiting=block_forever()))()

        async def main():
            returned.send(None)
            returned.close()

        run(main())
        assert [1.0] == observer.observed

    def test_aiohttp_request(self, observer, clock):
        """Aiohttp's session.get(), awaited, in async with or as a Task, is measured to the end."""
        aiohttp = pytest.importorskip("aiohttp")
        from aiohttp import web

        served = []

        async def hello(request):
            served.append(list(observer.observed))
            return web.Response(text="hello")

        async def main():
            app = web.Application()
            app.router.add_get("/", hello)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
            seen = []
            try:
                async with aiohttp.ClientSession() as session:

                    @aio.time(observer)
                    def fetch():
                        return session.get(url)

                    response = await fetch()
                    seen.append((await response.text(), list(observer.observed)))
                    response.release()
                    async with fetch() as response:
                        seen.append((await response.text(), list(observer.observed)))
                    response = await asyncio.create_task(fetch())
                    response.release()
            finally:
                await runner.cleanup()
            return seen

        assert [("hello", [1.0]), ("hello", [1.0])] == run(main())
        assert [[], [1.0], [1.0, 1.0]] == served
        assert [1.0, 1.0, 1.0] == observer.observed

    def test_done_future_observed_on_return(self, observer, clock):
        """Await time(metric, future) has observed when it returns, even for a done future."""

        async def main():
            future = asyncio.get_running_loop().create_future()
            future.set_result("ready")
            result = await aio.time(observer, future)
            return result, list(observer.observed)

        assert ("ready", [1.0]) == run(main())
        assert [1.0] == observer.observed

    def test_async_generator_open_at_shutdown(self, observer, clock):
        """An async generator still open when the loop shuts down closes cleanly."""
        cleaned_up = []
        loop_errors = []
        kept = []

        @aio.time(observer)
        async def numbers():
            try:
                yield 1
                yield 2
            finally:
                await asyncio.sleep(0)
                cleaned_up.append(True)

        async def main():
            asyncio.get_running_loop().set_exception_handler(
                lambda loop, context: loop_errors.append(context)
            )
            agen = numbers()
            await agen.__anext__()
            kept.append(agen)  # alive when asyncio.run() shuts down async generators

        run(main())

        assert [] == loop_errors
        assert [True] == cleaned_up
        assert [1.0] == observer.observed

    def test_traceback_shows_wrapper_source(self, observer):
        """Tracebacks through a wrapper show its source, even after linecache.clearcache()."""
        linecache.clearcache()

        with pytest.raises(KeyError) as info:
            run(aio.time(observer)(fail)(KeyError()))

        assert "return await func(error)" in "".join(traceback.format_tb(info.tb))

    def test_trio(self, observer, clock):
        """Decorated coroutines run under trio: no asyncio-only API is used."""

        @aio.time(observer)
        async def work():
            await trio.sleep(0)
            return "trio"

        assert "trio" == trio.run(work)
        assert [1.0] == observer.observed


class TestCountExceptions:
    def test_success(self, counter):
        """A call that succeeds counts nothing."""
        assert 42 == run(aio.count_exceptions(counter)(succeed)())
        assert 0 == counter.count

    def test_exception(self, counter):
        """A call that raises counts once, and the exception propagates unchanged."""
        error = ValueError()

        with pytest.raises(ValueError) as info:
            run(aio.count_exceptions(counter)(fail)(error))

        assert error is info.value
        assert 1 == counter.count

    def test_cancellation_not_counted(self, counter):
        """By default a cancelled call is not a failure."""
        run(cancel_soon(aio.count_exceptions(counter)(block_forever)()))

        assert 0 == counter.count

    def test_cancellation_counted_when_asked(self, counter):
        """exc=BaseException counts cancellation too, as prometheus-async did."""
        run(cancel_soon(aio.count_exceptions(counter, exc=BaseException)(block_forever)()))

        assert 1 == counter.count

    def test_aclose_not_counted(self, counter):
        """Closing an async generator early (GeneratorExit) is not a failure."""

        @aio.count_exceptions(counter)
        async def numbers():
            yield 1
            yield 2

        async def take_one():
            agen = numbers()
            await agen.__anext__()
            await agen.aclose()

        run(take_one())
        assert 0 == counter.count

    def test_trio_cancellation_not_counted(self, counter):
        """Trio's cancellation is not a failure either."""

        @aio.count_exceptions(counter)
        async def sleepy():
            await trio.sleep_forever()

        async def main():
            with trio.move_on_after(0):
                await sleepy()

        trio.run(main)
        assert 0 == counter.count

    def test_exc_empty_tuple(self, counter):
        """exc=() counts nothing, as isinstance() and prometheus-async do."""
        with pytest.raises(KeyError):
            run(aio.count_exceptions(counter, exc=())(fail)(KeyError()))

        assert 0 == counter.count

    def test_unawaited_failed_task(self, counter, caplog):
        """A failed Task nobody awaits is counted, and asyncio still reports it."""

        async def boom():
            raise KeyError("lost")

        @aio.count_exceptions(counter)
        def spawn():
            return asyncio.ensure_future(boom())

        async def main():
            spawn()
            await asyncio.sleep(0.01)

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            run(main())
            gc.collect()

        assert 1 == counter.count
        assert "Task exception was never retrieved" in caplog.text

    def test_trio_nursery_cancellation_not_counted(self, counter):
        """A cancelled trio nursery (an exception group of cancellations) is not a failure."""

        @aio.count_exceptions(counter)
        async def fan_out():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                nursery.start_soon(trio.sleep_forever)

        async def main():
            with trio.move_on_after(0.01):
                await fan_out()

        trio.run(main, strict_exception_groups=True)
        assert 0 == counter.count

    def test_exception_group_with_a_failure_counted(self, counter):
        """An exception group holding a real failure is counted."""
        group = BaseExceptionGroup("mixed", [asyncio.CancelledError(), KeyError()])

        with pytest.raises(BaseExceptionGroup):
            run(aio.count_exceptions(counter)(fail)(group))

        assert 1 == counter.count

    def test_exc_class(self, counter):
        """Only exceptions of the given class count."""
        decorated = aio.count_exceptions(counter, exc=KeyError)(fail)

        with pytest.raises(ValueError):
            run(decorated(ValueError()))
        with pytest.raises(KeyError):
            run(decorated(KeyError()))

        assert 1 == counter.count

    def test_exc_tuple(self, counter):
        """A tuple of classes is honoured exactly."""
        decorated = aio.count_exceptions(counter, exc=(KeyError, IndexError))(fail)

        for error in (KeyError(), IndexError(), ValueError()):
            with pytest.raises(type(error)):
                run(decorated(error))

        assert 2 == counter.count

    @pytest.mark.parametrize("exc", [42, (KeyError, "x"), str])
    def test_exc_invalid(self, counter, exc):
        """exc= that is not an exception class or a tuple of them fails at decoration time."""
        with pytest.raises(
            TypeError, match=r"count_exceptions\(\) for .*: exc= must be an exception class"
        ):
            aio.count_exceptions(counter, exc=exc)

    def test_plain_function_raises(self, counter):
        """A plain function's synchronous raise counts."""

        @aio.count_exceptions(counter)
        def broken():
            raise ValueError

        with pytest.raises(ValueError):
            broken()
        assert 1 == counter.count

    def test_generator_raises(self, counter):
        """A generator that raises while iterated counts."""

        @aio.count_exceptions(counter)
        def numbers():
            yield 1
            raise ValueError

        with pytest.raises(ValueError):
            list(numbers())
        assert 1 == counter.count

    def test_awaitable(self, counter):
        """The awaitable form counts a failure and re-raises it."""
        with pytest.raises(KeyError):
            run(aio.count_exceptions(counter, fail(KeyError())))
        assert 1 == counter.count

    def test_awaitable_success(self, counter):
        """The awaitable form passes a result through."""
        assert "ok" == run(aio.count_exceptions(counter, succeed("ok")))
        assert 0 == counter.count

    def test_failed_task(self, counter):
        """A failed Task counts once, when it completes, awaited through the wrapper or not."""

        async def main():
            task = asyncio.ensure_future(fail(KeyError()))
            with pytest.raises(KeyError):
                await aio.count_exceptions(counter, task)
            await asyncio.sleep(0)

        run(main())
        assert 1 == counter.count

    def test_cancelled_task(self, counter):
        """A cancelled Task is not counted by default."""

        async def main():
            task = asyncio.ensure_future(block_forever())
            wrapper = aio.count_exceptions(counter, task)
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await wrapper

        run(main())
        assert 0 == counter.count

    def test_plain_function_returning_deferred(self, counter):
        """A Deferred that a plain function returns counts when it fails, not when cancelled."""
        defer = pytest.importorskip("twisted.internet.defer")
        failing: defer.Deferred[None] = defer.Deferred()
        cancelled: defer.Deferred[None] = defer.Deferred()
        decorated = aio.count_exceptions(counter)(lambda deferred: deferred)

        decorated(failing).addErrback(lambda _: None)
        decorated(cancelled).addErrback(lambda _: None)
        cancelled.cancel()
        assert 0 == counter.count
        failing.errback(KeyError("gone"))
        assert 1 == counter.count

    def test_other_awaitable(self, counter):
        """Another awaitable counts when awaiting it raises, not when it succeeds."""
        succeeding = aio.count_exceptions(counter)(Request)
        failing = aio.count_exceptions(counter)(lambda: Request(error=KeyError()))

        async def main():
            await succeeding()
            with pytest.raises(KeyError):
                await failing()

        run(main())
        assert 1 == counter.count

    @pytest.mark.parametrize(
        ("request_options", "raised", "expected"),
        [
            ({}, None, 0),
            ({"error": KeyError()}, None, 1),
            ({}, KeyError(), 1),
            ({"suppress": True}, KeyError(), 0),
            ({"exit_error": KeyError()}, None, 1),
        ],
        ids=["success", "enter-fails", "block-raises", "suppressed", "exit-fails"],
    )
    def test_other_awaitable_async_with(self, counter, request_options, raised, expected):
        """An async with block counts when it ends with an exception, unless it is suppressed."""
        decorated = aio.count_exceptions(counter)(lambda: Request(**request_options))

        async def main():
            async with decorated():
                if raised is not None:
                    raise raised

        with contextlib.suppress(KeyError):
            run(main())
        assert expected == counter.count

    def test_awaitable_cancelled(self, counter):
        """The awaitable form does not count a cancelled coroutine."""
        for _ in range(2):
            run(cancel_soon(aio.count_exceptions(counter, block_forever())))

        assert 0 == counter.count

    def test_exception_classes_made_on_the_fly(self, counter):
        """Exception classes made on the fly are counted right, and not all kept alive."""
        made = [type(f"Made{n}", (KeyError,), {}) for n in range(1100)]
        cancelled = [type(f"Cancelled{n}", (asyncio.CancelledError,), {}) for n in range(1100)]
        decorated = aio.count_exceptions(counter)(fail)

        for error_class in made + cancelled:
            # A Task on Python 3.10 ends a cancellation with a plain CancelledError.
            with pytest.raises((error_class, asyncio.CancelledError)):
                run(decorated(error_class()))
        last = weakref.ref(made[-1])
        del made, cancelled, error_class
        gc.collect()

        assert 1100 == counter.count
        assert last() is None

    def test_no_inc(self):
        """A metric without inc() fails at decoration time."""
        with pytest.raises(
            TypeError, match=r"count_exceptions\(\) for .*: the metric has no inc\(\)"
        ):
            aio.count_exceptions(object())  # type: ignore[arg-type]

    def test_labels_and_exemplar(self, registry):
        """A real Counter gets the labelled child and the exemplar computed from the call."""
        counter = Counter("failures", "Failures.", ["op"], registry=registry)

        decorated = aio.count_exceptions(
            counter,
            labels=lambda error: {"op": type(error).__name__},
            exemplar=lambda error: {"trace_id": "t1"},
        )(fail)
        with pytest.raises(KeyError):
            run(decorated(KeyError()))

        assert 1.0 == sample(counter, "_total", op="KeyError")
        [total] = [s for s in next(iter(counter.collect())).samples if s.name == "failures_total"]
        assert {"trace_id": "t1"} == total.exemplar.labels

    def test_exemplar_without_labels(self, registry):
        """exemplar= works on an unlabelled Counter."""
        counter = Counter("failures", "Failures.", registry=registry)

        with pytest.raises(KeyError):
            run(aio.count_exceptions(counter, exemplar=lambda error: None)(fail)(KeyError()))

        assert 1.0 == sample(counter, "_total")

    def test_exemplar_unsupported(self, counter):
        """exemplar= on an inc() without an exemplar parameter fails at decoration time."""
        with pytest.raises(ValueError, match="takes no exemplar"):
            aio.count_exceptions(counter, exemplar=lambda: None)

    def test_recording_failure_keeps_exception(self, caplog):
        """If inc() fails, the work's own exception still propagates."""

        class Broken:
            def inc(self):
                raise RuntimeError

        with caplog.at_level(logging.ERROR, logger="promloop"), pytest.raises(KeyError):
            run(aio.count_exceptions(Broken())(fail)(KeyError()))
        assert "count_exceptions() for " in caplog.text
        assert " could not record" in caplog.text


class TestTrackInprogress:
    def test_up_while_running(self, gauge):
        """The gauge is up while the call runs and down afterwards."""

        @aio.track_inprogress(gauge)
        async def work():
            return gauge.value

        assert 1 == run(work())
        assert 0 == gauge.value

    @pytest.mark.parametrize("error", [ValueError(), KeyboardInterrupt()])
    def test_exception(self, gauge, error):
        """The gauge comes down when the call raises anything."""
        with pytest.raises(type(error)):
            run(aio.track_inprogress(gauge)(fail)(error))
        assert (0, 1) == (gauge.value, gauge.highest)

    def test_cancellation(self, gauge):
        """The gauge comes down when the call is cancelled."""
        run(cancel_soon(aio.track_inprogress(gauge)(block_forever)()))

        assert (0, 1) == (gauge.value, gauge.highest)

    def test_plain_function_raises(self, gauge):
        """The gauge comes down when a plain function raises synchronously."""

        @aio.track_inprogress(gauge)
        def broken():
            raise ValueError

        with pytest.raises(ValueError):
            broken()
        assert (0, 1) == (gauge.value, gauge.highest)

    # The application's own coroutine is never awaited either: Python warns about it.
    @pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
    def test_plain_function_coroutine_never_awaited(self, gauge):
        """A plain function's coroutine result that nobody awaits leaves the gauge at 0."""

        @aio.track_inprogress(gauge)
        def start_work():
            return succeed()

        start_work().close()

        assert 0 == gauge.value

    def test_plain_function_coroutine_awaited(self, gauge):
        """A plain function's coroutine result is tracked while it runs."""

        async def work():
            return gauge.value

        decorated = aio.track_inprogress(gauge)(lambda: work())

        assert 1 == run(decorated())
        assert 0 == gauge.value

    def test_async_generator_aclose(self, gauge):
        """An async generator closed early brings the gauge down."""

        @aio.track_inprogress(gauge)
        async def numbers():
            yield gauge.value
            yield 2

        async def take_one():
            agen = numbers()
            first = await agen.__anext__()
            await agen.aclose()
            return first

        assert 1 == run(take_one())
        assert 0 == gauge.value

    def test_future_up_at_once(self, gauge):
        """For a Future the gauge goes up at once and down on completion, unawaited."""

        async def main():
            future = asyncio.get_running_loop().create_future()
            wrapper = aio.track_inprogress(gauge, future)
            assert 1 == gauge.value
            future.set_result(None)
            await asyncio.sleep(0)
            assert 0 == gauge.value
            wrapper.close()

        run(main())

    def test_plain_function_returning_deferred(self, gauge):
        """A Deferred that a plain function returns keeps the gauge up until it fires."""
        defer = pytest.importorskip("twisted.internet.defer")
        deferred: defer.Deferred[None] = defer.Deferred()

        aio.track_inprogress(gauge)(lambda: deferred)()

        assert 1 == gauge.value
        deferred.callback(None)
        assert 0 == gauge.value

    def test_cancelled_future(self, gauge):
        """A cancelled Future brings the gauge down."""

        async def main():
            future = asyncio.get_running_loop().create_future()
            wrapper = aio.track_inprogress(gauge, future)
            future.cancel()
            await asyncio.sleep(0)
            wrapper.close()

        run(main())
        assert (0, 1) == (gauge.value, gauge.highest)

    def test_coroutine_up_when_running(self, gauge):
        """For a coroutine object the gauge goes up when it starts running."""

        async def main():
            wrapper = aio.track_inprogress(gauge, succeed())
            assert 0 == gauge.value
            return await wrapper

        assert 42 == run(main())
        assert (0, 1) == (gauge.value, gauge.highest)

    # The application's own coroutine is never awaited either: Python warns about it.
    @pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
    def test_coroutine_never_awaited(self, gauge):
        """A wrapped coroutine that is never awaited leaves no trace."""
        aio.track_inprogress(gauge, succeed()).close()
        gc.collect()

        assert (0, 0) == (gauge.value, gauge.highest)

    def test_other_awaitable(self, gauge):
        """For another awaitable the gauge is up while it is awaited, and only then."""
        seen = []
        decorated = aio.track_inprogress(gauge)(
            lambda: Request(lambda event: seen.append(gauge.value))
        )

        async def main():
            returned = decorated()
            seen.append(gauge.value)
            await returned

        run(main())
        assert [0, 1] == seen
        assert (0, 1) == (gauge.value, gauge.highest)

    def test_other_awaitable_async_with(self, gauge):
        """For another awaitable the gauge is up for the whole async with block."""
        seen = []
        decorated = aio.track_inprogress(gauge)(
            lambda: Request(lambda event: seen.append(gauge.value))
        )

        async def main():
            async with decorated():
                seen.append(gauge.value)

        run(main())
        assert [1, 1, 1] == seen
        assert 0 == gauge.value

    def test_other_awaitable_unused(self, gauge):
        """Another awaitable that nobody awaits or enters leaves the gauge down after the call."""
        aio.track_inprogress(gauge)(Request)()

        assert 0 == gauge.value

    def test_missing_dec(self, counter):
        """A metric without dec() fails at decoration time."""
        with pytest.raises(
            TypeError, match=r"track_inprogress\(\) for .*: the metric has no dec\(\)"
        ):
            aio.track_inprogress(counter)  # type: ignore[arg-type]

    def test_labels(self, registry):
        """labels= picks the child that goes up and comes down."""
        gauge = Gauge("busy", "Busy.", ["queue"], registry=registry)

        @aio.track_inprogress(gauge, labels=lambda queue: (queue,))
        async def work(queue):
            return sample(gauge, queue=queue)

        assert 1.0 == run(work("q1"))
        assert 0.0 == sample(gauge, queue="q1")

    def test_recording_failure(self, caplog):
        """If dec() fails, the failure is logged and the result kept."""

        class Broken:
            def inc(self):
                pass

            def dec(self):
                raise RuntimeError

        with caplog.at_level(logging.ERROR, logger="promloop"):
            assert 42 == run(aio.track_inprogress(Broken())(succeed)())
        assert "track_inprogress() for " in caplog.text
        assert " could not record" in caplog.text
