"""Every wrapper, on both sides, keeps the kind and identity of what it decorates."""

from __future__ import annotations

import asyncio
import functools
import inspect
import pickle

import pytest
import wrapt

from prometheus_client import Histogram

from promloop import aio

from .conftest import FakeCounter, FakeGauge, FakeObserver


try:
    from promloop import tx
except ImportError:  # the "no Twisted" tox environments
    tx = None  # type: ignore[assignment]

SIDES = [aio] if tx is None else [aio, tx]


def _decorators() -> list[object]:
    """One decorator of each wrapper on each side, with fresh fakes."""
    return [
        pytest.param(factory, id=f"{side.__name__}.{name}")
        for side in SIDES
        for name, factory in [
            ("time", lambda side=side: side.time(FakeObserver())),
            ("count_exceptions", lambda side=side: side.count_exceptions(FakeCounter())),
            ("track_inprogress", lambda side=side: side.track_inprogress(FakeGauge())),
        ]
    ]


@aio.time(FakeObserver())
async def module_level_coroutine(x: int) -> int:
    """Double x."""
    return 2 * x


@aio.count_exceptions(FakeCounter())
def module_level_function(x: int) -> int:
    return x


def functools_decorator(func):
    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        return await func(*args, **kwargs)

    return wrapper


@wrapt.decorator
async def wrapt_decorator(wrapped, instance, args, kwargs):
    return await wrapped(*args, **kwargs)


@wrapt.decorator
def wrapt_sync_decorator(wrapped, instance, args, kwargs):
    return wrapped(*args, **kwargs)


@aio.time(FakeObserver())
@wrapt_sync_decorator
def module_level_wrapt_function(x: int) -> int:
    return x


@aio.track_inprogress(FakeGauge())
@functools.lru_cache
def module_level_cached_function(x: int) -> int:
    return x


if tx is None:
    TX_FUNCTIONS: tuple[object, ...] = ()
else:

    @tx.time(FakeObserver())
    def module_level_tx_function(x: int) -> int:
        return x

    @tx.count_exceptions(FakeCounter())
    @wrapt_sync_decorator
    def module_level_tx_wrapt_function(x: int) -> int:
        return x

    TX_FUNCTIONS = (module_level_tx_function, module_level_tx_wrapt_function)


def recording_decorators(calls: list[tuple[object, tuple[object, ...]]]) -> tuple[object, object]:
    """Return a sync and an async wrapt decorator that record the instance they are given."""

    @wrapt.decorator
    def record(wrapped, instance, args, kwargs):
        calls.append((instance, args))
        return wrapped(*args, **kwargs)

    @wrapt.decorator
    async def record_async(wrapped, instance, args, kwargs):
        calls.append((instance, args))
        return await wrapped(*args, **kwargs)

    return record, record_async


@pytest.mark.parametrize("decorator", _decorators())
class TestWrapperShape:
    def test_coroutine_function(self, decorator):
        """A coroutine function stays one, with its signature and names."""

        async def handler(request: str, *, verbose: bool = False) -> str:
            """Handle it."""
            return request

        decorated = decorator()(handler)

        assert inspect.iscoroutinefunction(decorated)
        assert inspect.signature(handler) == inspect.signature(decorated)
        assert ("handler", handler.__qualname__, "Handle it.") == (
            decorated.__name__,
            decorated.__qualname__,
            decorated.__doc__,
        )
        assert handler is decorated.__wrapped__
        assert "r" == asyncio.run(decorated("r"))

    def test_async_generator_function(self, decorator):
        """An async generator function stays one."""

        async def numbers():
            yield 1

        decorated = decorator()(numbers)

        assert inspect.isasyncgenfunction(decorated)
        assert not inspect.iscoroutinefunction(decorated)

    def test_generator_function(self, decorator):
        """A generator function stays one, and returns its value through yield from."""

        def numbers():
            yield 1
            return "end"

        def outer(gen):
            return (yield from gen)

        decorated = decorator()(numbers)

        assert inspect.isgeneratorfunction(decorated)
        with pytest.raises(StopIteration) as info:
            gen = outer(decorated())
            next(gen)
            next(gen)
        assert "end" == info.value.value

    def test_plain_function(self, decorator):
        """A plain function stays plain and returns its value directly."""

        def add(a, b):
            return a + b

        decorated = decorator()(add)

        assert not inspect.iscoroutinefunction(decorated)
        assert 3 == decorated(1, 2)

    def test_methods(self, decorator):
        """Instance methods, classmethods and staticmethods work, decorated either side."""

        class Service:
            factor = 3

            @decorator()
            async def instance(self, x):
                return self.factor * x

            @decorator()
            @classmethod
            async def class_inner(cls, x):
                return cls.factor * x

            @classmethod
            @decorator()
            async def class_outer(cls, x):
                return cls.factor * x

            @decorator()
            @staticmethod
            async def static_inner(x):
                return x

            @staticmethod
            @decorator()
            async def static_outer(x):
                return x

        service = Service()

        async def call_all():
            return [
                await service.instance(1),
                await Service.class_inner(2),
                await service.class_outer(3),
                await Service.static_inner(4),
                await service.static_outer(5),
            ]

        assert [3, 6, 9, 4, 5] == asyncio.run(call_all())
        assert inspect.iscoroutinefunction(Service.class_inner)
        assert inspect.iscoroutinefunction(service.instance)

    @pytest.mark.parametrize("other", [functools_decorator, wrapt_decorator])
    def test_stacking(self, decorator, other):
        """Stacks with functools and wrapt decorators, in either order."""

        async def work(x):
            return x

        below = decorator()(other(work))
        above = other(decorator()(work))

        assert [1, 2] == [asyncio.run(below(1)), asyncio.run(above(2))]
        assert inspect.iscoroutinefunction(below)
        assert inspect.iscoroutinefunction(above)
        assert "work" == below.__name__ == above.__name__

    def test_wrapt_decorator_below_method(self, decorator):
        """A wrapt decorator below promloop on a method receives the bound instance."""
        calls: list[tuple[object, tuple[object, ...]]] = []
        record, record_async = recording_decorators(calls)

        class Service:
            @decorator()
            @record_async
            async def fetch(self, x):
                return x

            @decorator()
            @record
            def compute(self, x):
                return x

        service = Service()

        assert [1, 2, 3] == [
            asyncio.run(service.fetch(1)),
            service.compute(2),
            Service.compute(service, 3),
        ]
        assert [(service, (1,)), (service, (2,)), (service, (3,))] == calls
        assert inspect.iscoroutinefunction(service.fetch)
        assert inspect.signature(Service.fetch) == inspect.signature(Service.fetch.__wrapped__)
        assert "(x)" == str(inspect.signature(service.fetch))
        assert "fetch" == service.fetch.__name__

    def test_callable_object_attributes(self, decorator):
        """The attributes of a decorated callable object stay reachable through the wrapper."""

        @decorator()
        @functools.lru_cache
        def square(x):
            return x * x

        assert [4, 4] == [square(2), square(2)]
        assert 1 == square.cache_info().hits
        square.cache_clear()
        assert 0 == square.cache_info().currsize
        assert "square" == square.__name__
        assert repr(square).startswith("<promloop wrapper of <functools._lru_cache_wrapper")

    def test_cached_method(self, decorator):
        """A method cached with functools.lru_cache binds as it does undecorated."""

        class Service:
            @decorator()
            @functools.lru_cache  # noqa: B019 -- the test's instances are short-lived
            def double(self, x):
                return 2 * x

        service = Service()

        assert [4, 4] == [service.double(2), service.double(2)]
        assert 1 == Service.double.cache_info().hits
        service.double.cache_clear()
        assert 0 == service.double.cache_info().currsize

    def test_callable_object_not_bound(self, decorator):
        """A callable object that is not a method does not receive the instance, as undecorated."""

        class Echo:
            def __call__(self, *args):
                return args

        class Service:
            echo = decorator()(Echo())

        assert () == Service().echo()

    # Python 3.13 warns that a partial will bind as a method (as it does from 3.14 on).
    @pytest.mark.filterwarnings("ignore:functools.partial will be a method:FutureWarning")
    def test_partial_binds_as_undecorated(self, decorator):
        """A functools.partial in a class binds as the undecorated partial does on this Python."""

        def echo(*args):
            return args

        class Service:
            plain = functools.partial(echo, "p")
            decorated = decorator()(functools.partial(echo, "p"))

        service = Service()

        assert service.plain() == service.decorated()

    def test_not_callable(self, decorator):
        """Decorating something that cannot be called fails at once."""
        with pytest.raises(TypeError, match="only callables can be decorated, not 42"):
            decorator()(42)


class TestPickling:
    def test_module_level_functions(self):
        """Decorated module-level functions pickle by reference, to themselves."""
        for func in (
            module_level_coroutine,
            module_level_function,
            module_level_wrapt_function,
            module_level_cached_function,
            *TX_FUNCTIONS,
        ):
            assert func is pickle.loads(pickle.dumps(func))
        assert 4 == asyncio.run(pickle.loads(pickle.dumps(module_level_coroutine))(2))


@pytest.mark.parametrize("side", SIDES, ids=lambda side: side.__name__)
class TestMethodsAreMeasured:
    def test_every_kind_of_method(self, side):
        """Instance, class and static methods are measured, decorated above or below."""
        observer = FakeObserver()
        timed = side.time(observer)

        class Service:
            @timed
            def instance(self):
                return 1

            @timed
            @classmethod
            def class_inner(cls):
                return 2

            @classmethod
            @timed
            def class_outer(cls):
                return 3

            @timed
            @staticmethod
            def static_inner():
                return 4

            @staticmethod
            @timed
            def static_outer():
                return 5

        service = Service()
        results = [
            service.instance(),
            Service.class_inner(),
            service.class_outer(),
            Service.static_inner(),
            service.static_outer(),
        ]

        assert [1, 2, 3, 4, 5] == results
        assert 5 == len(observer.observed)

    def test_wrapt_decorated_method_labels(self, side, registry):
        """labels= of a method receives self, with a wrapt decorator below promloop too."""
        histogram = Histogram("work_seconds", "Work.", ["who"], registry=registry)

        class Service:
            name = "svc"

            @side.time(histogram, labels=lambda self, x: (self.name,))
            @wrapt_sync_decorator
            def work(self, x):
                return x

        assert 1 == Service().work(1)
        assert 1.0 == registry.get_sample_value("work_seconds_count", {"who": "svc"})

    def test_wrapt_decorated_method_measured(self, side):
        """A method below a wrapt decorator is measured on every call, bound or not."""
        observer = FakeObserver()
        calls: list[tuple[object, tuple[object, ...]]] = []
        record, _ = recording_decorators(calls)

        class Service:
            @side.time(observer)
            @record
            def work(self, x):
                return x

        service = Service()

        assert [1, 2] == [service.work(1), Service.work(service, 2)]
        assert 2 == len(observer.observed)

    def test_proxied_classmethod_and_staticmethod(self, side, registry):
        """A class or static method inside a wrapt decorator's proxy binds as undecorated.

        The wrapt decorator receives the class (or None) as its instance, and
        labels= the arguments the method itself receives.
        """
        histogram = Histogram("work_seconds", "Work.", ["who"], registry=registry)
        calls: list[tuple[object, tuple[object, ...]]] = []
        record, _ = recording_decorators(calls)

        class Service:
            name = "svc"

            @side.time(histogram, labels=lambda cls, x: (cls.name,))
            @record
            @classmethod
            def build(cls, x):
                return cls, x

            @side.time(histogram, labels=lambda x: (x,))
            @record
            @staticmethod
            def echo(x):
                return x

        service = Service()

        assert [(Service, 1), (Service, 2), "a", "b"] == [
            Service.build(1),
            service.build(2),
            Service.echo("a"),
            service.echo("b"),
        ]
        assert [(Service, (1,)), (Service, (2,)), (None, ("a",)), (None, ("b",))] == calls
        assert [2.0, 1.0, 1.0] == [
            registry.get_sample_value("work_seconds_count", {"who": who})
            for who in ("svc", "a", "b")
        ]

    def test_proxied_classmethod_kind(self, side):
        """A generator classmethod inside a wrapt proxy is measured to its end."""
        observer = FakeObserver()

        class Service:
            @side.time(observer)
            @wrapt_sync_decorator
            @classmethod
            def numbers(cls):
                yield 1
                yield 2

        numbers = Service.numbers()

        assert [] == observer.observed
        assert [1, 2] == list(numbers)
        assert 1 == len(observer.observed)
