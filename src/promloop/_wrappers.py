"""Turn a :class:`~promloop._probes.Recipe` into wrappers.

A wrapper keeps the kind of what it wraps -- a coroutine function stays a
coroutine function, an async generator function an async generator function,
a generator function a generator function -- so that frameworks which inspect
handlers (aiohttp, pytest, Klein) see what they expect.  The wrapper of a
Python function is a plain closure: bound as a method like any function, and
picklable by qualified name.  Any other callable gets a :class:`MeasuredCallable`
proxy, which binds (or not) as that callable does.

The hot paths -- a coroutine function, a plain function -- are compiled from
the templates below with the recipe's lines inlined, the way dataclasses and
attrs generate ``__init__``: the wrapper then costs what a hand-written one
does, with no extra call per measurement.  Generators, async generators and
pending results use the compiled ``start``/``stop`` pair instead.

What a plain function returns is handed to a framework-specific *settle*
function when it is awaitable (a coroutine, a Future, a Deferred, aiohttp's
request); settle measures it until it completes, returning a Future or
Deferred as it is, a coroutine wrapped in a coroutine, and any other awaitable
in a :class:`MeasuredAwaitable` proxy.  Anything else is measured as a plain
value and returned untouched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import linecache
import sys
import textwrap
import types

from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Final, SupportsIndex, TypeVar

from ._probes import Args, Kwargs, Recipe, is_return, returned_value


T = TypeVar("T")

Start = Callable[[Args, Kwargs], Any]
Stop = Callable[[Any, Args, Kwargs, "BaseException | None"], None]
Settle = Callable[["Probe", Any, Any, Args, Kwargs], Any]

NOT_STARTED: Final[Any] = object()
"""A token meaning "the measurement has not started yet"."""


class Probe:
    """A compiled recipe: ``start(args, kwargs) -> state`` and ``stop(state, args, kwargs, error)``.

    *namespace* is the decorator module's globals, where the compiled code
    looks up ``perf_counter``.
    """

    __slots__ = ("namespace", "recipe", "start", "starts_with_execution", "stop")

    def __init__(self, recipe: Recipe, namespace: dict[str, Any]) -> None:
        self.recipe = recipe
        self.namespace = namespace
        self.starts_with_execution = recipe.starts_with_execution
        self.start: Start
        self.stop: Stop
        self.start, self.stop = compile_recipe(_PROBE, recipe, namespace)


# --- templates ------------------------------------------------------------------
#
# A line that holds only "{name}" is replaced by that block, indented like it.
# {state} is the recipe's state as one expression; {enter} binds it, and
# {unpack_state} binds it again from a value called "state".  The framework
# sides compile templates of their own with compile_recipe().

_PROBE: Final = """
def start(args, kwargs):
    {enter}
    return {state}

def stop(state, args, kwargs, error):
    {unpack_state}
    if error is None:
        {on_success}
    else:
        {on_error}

return start, stop
"""

_COROUTINE: Final = """
async def measured(*args, **kwargs):
    {enter}
    try:
        result = await func(*args, **kwargs)
    except BaseException as error:
        {on_error}
        raise
    {on_success}
    return result

return measured
"""

_FUNCTION: Final = """
def measured(*args, **kwargs):
    {enter}
    try:
        result = func(*args, **kwargs)
    except BaseException as error:
        {on_error}
        raise
    if isinstance(result, pending):
        return settle(probe, result, {state}, args, kwargs)
    {on_success}
    return result

return measured
"""


def _guarded(lines: tuple[str, ...]) -> tuple[str, ...]:
    """Wrap recording lines so that a failure is reported, not raised."""
    if not lines:
        return ("pass",)
    body = tuple("    " + line for line in lines)
    return ("try:", *body, "except Exception:", "    recording_failed()")


def _state_expression(state: tuple[str, ...]) -> str:
    if not state:
        return "None"
    if len(state) == 1:
        return state[0]
    return f"({', '.join(state)})"


def _render(template: str, blocks: Mapping[str, tuple[str, ...]]) -> str:
    lines: list[str] = []
    for line in textwrap.dedent(template).splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in blocks:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + block_line for block_line in blocks[name[1:-1]])
        else:
            lines.append(line)
    return "\n".join(lines)


def compile_recipe(template: str, recipe: Recipe, namespace: dict[str, Any], **extra: Any) -> Any:
    """Compile *template* filled with *recipe*; return the function it returns.

    The names of the recipe and *extra* become closure variables, and
    *namespace* the globals, exactly as in a hand-written decorator module.
    The compiled factory is cached by everything but those names' values, so
    a one-shot ``time(metric, awaitable)`` costs a call, not a compilation.
    """
    names = {**recipe.names, **extra}
    key = (
        template,
        recipe.enter,
        recipe.state,
        recipe.on_success,
        recipe.on_error,
        tuple(sorted(names)),
        id(namespace),
    )
    factory = _factories.get(key)
    if factory is None:
        factory = _factories[key] = _Factory(template, recipe, namespace, sorted(names))
    factory.register_source()
    return factory.make(**names)


class _Factory:
    """One compiled template: ``make(**names)`` returns what the template returns."""

    __slots__ = ("filename", "lines", "make", "source")

    def __init__(
        self, template: str, recipe: Recipe, namespace: dict[str, Any], names: list[str]
    ) -> None:
        state = _state_expression(recipe.state)
        body = _render(
            template.replace("{state}", state),
            {
                "enter": recipe.enter,
                "unpack_state": (f"{state} = state",) if recipe.state else (),
                "on_success": _guarded(recipe.on_success),
                "on_error": _guarded(recipe.on_error),
            },
        )
        self.source = f"def make({', '.join(names)}):\n{textwrap.indent(body, '    ')}\n"
        digest = hashlib.sha1(self.source.encode()).hexdigest()[:12]  # noqa: S324 -- a name
        self.filename = f"<promloop wrapper {digest}>"
        self.lines = self.source.splitlines(keepends=True)
        scope: dict[str, Any] = {}
        code = compile(self.source, self.filename, "exec")
        exec(code, namespace, scope)  # noqa: S102 -- our own template, see the module docstring
        self.make: Callable[..., Any] = scope["make"]

    def register_source(self) -> None:
        # Tracebacks through a wrapper show its lines; registered on every use
        # because linecache.clearcache() may have dropped them.
        linecache.cache[self.filename] = (len(self.source), None, self.lines, self.filename)


_factories: dict[tuple[object, ...], _Factory] = {}


# --- instrumenting callables ----------------------------------------------------


def instrument(who: str, func: Any, probe: Probe, settle: Settle, pending: Any) -> Any:
    """Return *func* wrapped so that every call is measured by *probe*.

    ``classmethod`` and ``staticmethod`` objects are unwrapped, instrumented
    and wrapped again, so the decorator works above or below them.  A plain
    function's result that is an instance of *pending* (a class or tuple of
    classes) is handed to *settle*.

    A plain Python function gets a plain function as its wrapper; any other
    callable (another library's wrapper, an ``lru_cache``, a callable object)
    gets a :class:`MeasuredCallable`, which binds and answers like it.
    """
    if type(func) in (classmethod, staticmethod):
        descriptor: Any = func
        return type(descriptor)(instrument(who, descriptor.__func__, probe, settle, pending))
    if isinstance(func, (classmethod, staticmethod)):  # a proxy (wrapt) around one
        kind = "classmethod" if isinstance(func, classmethod) else "staticmethod"
        msg = (
            f"{who}: {func!r} is a {kind} inside another decorator, which only the class "
            f"can bind; apply this decorator right above or below @{kind} instead."
        )
        raise TypeError(msg)
    if not callable(func):
        msg = f"{who}: only callables can be decorated, not {func!r}."
        raise TypeError(msg)

    wrap = _wrapper_factory(func, probe, settle, pending)
    if type(func) is types.FunctionType:
        return functools.update_wrapper(wrap(func), func)
    return functools.update_wrapper(MeasuredCallable(func, wrap(func), wrap), func)


def _wrapper_factory(
    func: Any, probe: Probe, settle: Settle, pending: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return what wraps a callable of *func*'s kind: ``wrap(callee) -> wrapper``."""
    if inspect.isasyncgenfunction(func):
        return functools.partial(_async_generator_wrapper, probe=probe)
    if inspect.iscoroutinefunction(func):
        return functools.partial(_compile_wrapper, _COROUTINE, probe, {})
    if inspect.isgeneratorfunction(func):
        return functools.partial(_generator_wrapper, probe=probe)
    names = {"probe": probe, "settle": settle, "pending": pending}
    return functools.partial(_compile_wrapper, _FUNCTION, probe, names)


def _compile_wrapper(
    template: str, probe: Probe, names: Mapping[str, Any], func: Callable[..., Any]
) -> Callable[..., Any]:
    wrapper: Callable[..., Any] = compile_recipe(
        template, probe.recipe, probe.namespace, func=func, **names
    )
    return wrapper


class MeasuredCallable:
    """The wrapper of a callable that is not a plain Python function.

    It stands in for the callable it wraps, as wrapt's proxies do: attributes
    it lacks are read from the wrapped callable (an ``lru_cache``'s
    ``cache_clear()``), it reports the wrapped callable's class (so that
    :mod:`inspect` tells its kind from the wrapped callable's, on every
    Python), and it binds as a method only as the wrapped callable does,
    through that callable's own ``__get__``.  A wrapt decorator below it on a
    method thus receives its instance, as it would undecorated.
    """

    __slots__ = ("__dict__", "__weakref__", "_call", "_wrap")
    __wrapped__: Any

    def __init__(
        self,
        wrapped: Any,
        call: Callable[..., Any],
        wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
    ) -> None:
        self.__wrapped__ = wrapped
        self._call = call
        self._wrap = wrap

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        wrapped: object = self.__wrapped__
        bind = getattr(type(wrapped), "__get__", None)
        if bind is None:  # not a method: a class attribute like any other
            return self
        bound = bind(wrapped, instance, owner)
        if bound is wrapped:
            return self
        if instance is None:
            call = self._wrap(bound)
        else:
            # The callee is bound already; the measurement (labels=, exemplar=)
            # still sees the instance among the arguments, as for a function.
            call = types.MethodType(self._wrap(functools.partial(_call_bound, bound)), instance)
        method = MeasuredCallable(bound, call, self._wrap)
        for name in ("__module__", "__doc__"):  # else the class's own would show
            with contextlib.suppress(AttributeError):
                setattr(method, name, getattr(bound, name))
        return method

    def __getattr__(self, name: str) -> Any:
        # Not self.__wrapped__: while it is unset, that would come back here.
        return getattr(object.__getattribute__(self, "__wrapped__"), name)

    # Reporting the wrapped callable's class is what makes inspect.isfunction(),
    # iscoroutinefunction() and the like answer for it (Python 3.10 checks the
    # class; later versions also accept anything function-like).
    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # pyright: ignore[reportIncompatibleMethodOverride]
        kind: type[Any] = self.__wrapped__.__class__
        return kind

    def __reduce_ex__(self, protocol: SupportsIndex) -> str:
        # By reference, like a function: by its qualified name in its module.
        qualname: str = self.__qualname__
        return qualname

    def __repr__(self) -> str:
        return f"<promloop wrapper of {self.__wrapped__!r}>"


def _call_bound(bound: Callable[..., T], instance: object, *args: Any, **kwargs: Any) -> T:
    return bound(*args, **kwargs)


def _generator_wrapper(
    func: Callable[..., Generator[Any, Any, Any]], probe: Probe
) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    def measured(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # A generator's body runs at its first next(): so does the measurement.
        state = start(args, kwargs)
        try:
            result = yield from func(*args, **kwargs)
        except BaseException as error:
            if is_return(error):
                # Twisted's returnValue(): returning its value ends this generator
                # the same way for @inlineCallbacks, without Twisted warning that
                # returnValue() was called outside the generator it ends.
                stop(state, args, kwargs, None)
                return returned_value(error)
            stop(state, args, kwargs, error)
            raise
        stop(state, args, kwargs, None)
        return result

    return measured


def _async_generator_wrapper(
    func: Callable[..., AsyncGenerator[Any, Any]], probe: Probe
) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    async def measured(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        state = start(args, kwargs)
        try:
            # There is no "yield from" for async generators: forward every
            # asend(), athrow() and aclose() to the inner generator by hand.
            inner: AsyncGenerator[Any, Any] = func(*args, **kwargs)
            advance: Callable[[Any], Awaitable[Any]] = inner.asend
            value: Any = None
            step = _unhooked_first_step(inner)
            while True:
                try:
                    item = await step
                except StopAsyncIteration:
                    break
                try:
                    value = yield item
                except GeneratorExit:
                    await inner.aclose()
                    raise
                except BaseException as thrown:  # noqa: BLE001 -- forwarded, not handled
                    advance, value = inner.athrow, thrown
                else:
                    advance = inner.asend
                step = advance(value)
        except BaseException as error:
            stop(state, args, kwargs, error)
            raise
        stop(state, args, kwargs, None)

    return measured


def _unhooked_first_step(inner: AsyncGenerator[Any, Any]) -> Awaitable[Any]:
    """Start *inner* without the event loop's async generator hooks seeing it.

    The loop closes every generator its hooks saw when it shuts down, all at
    once; the inner generator is the wrapper's to close (it is, when the
    wrapper is closed), and closing it twice fails with "aclose(): asynchronous
    generator is already running".  The hooks are per thread, and the first
    step is the only moment they apply.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        return inner.asend(None)
    finally:
        sys.set_asyncgen_hooks(*hooks)


# --- pending results -------------------------------------------------------------


async def measure_awaitable(
    probe: Probe, awaitable: Awaitable[T], args: Args, kwargs: Kwargs, state: Any = NOT_STARTED
) -> T:
    """Await *awaitable*, measuring until it completes.

    A *state* of :data:`NOT_STARTED` starts the measurement when this
    coroutine starts running; any other state continues a measurement that
    began earlier (the clock of ``time(metric, awaitable)`` starts at the call).
    """
    if state is NOT_STARTED:
        state = probe.start(args, kwargs)
    try:
        result = await awaitable
    except BaseException as error:
        probe.stop(state, args, kwargs, error)
        raise
    probe.stop(state, args, kwargs, None)
    return result


def settle_awaitable(probe: Probe, result: Any, state: Any, args: Args, kwargs: Kwargs) -> Any:
    """Measure the awaitable result of a plain function until it completes.

    A coroutine comes back as a coroutine; any other awaitable as a
    :class:`MeasuredAwaitable` that keeps its other abilities.
    """
    if isinstance(result, types.CoroutineType):
        return follow_awaitable(probe, result, state, args, kwargs)  # pyright: ignore[reportUnknownArgumentType]
    proxy = _AWAITABLE_PROXIES[
        isinstance(result, Coroutine), hasattr(type(result), "__aenter__")  # pyright: ignore[reportUnknownArgumentType]
    ]
    return proxy(probe, result, state, args, kwargs)


def follow_awaitable(
    probe: Probe, awaitable: Awaitable[T], state: Any, args: Args, kwargs: Kwargs
) -> Any:
    """Measure the awaitable result of a plain function until it completes.

    Returns a coroutine.  For a probe that ``starts_with_execution`` the call
    is over and is stopped now; the awaitable is measured again only when it
    runs, so a result that nobody awaits leaves no gauge behind.
    """
    if probe.starts_with_execution:
        probe.stop(state, args, kwargs, None)
        state = NOT_STARTED
    return measure_awaitable(probe, awaitable, args, kwargs, state)


class MeasuredAwaitable:
    """An awaitable result of a plain function, measured while it is awaited.

    A plain function may return an awaitable that is not a coroutine, such as
    the request that aiohttp's ``session.get()`` returns: it can be awaited,
    and also used with ``async with``.  Replacing it with a coroutine would take
    those other abilities away, so this proxy stands in for it instead: it
    measures each ``await`` (and, in :class:`MeasuredAwaitableContext`, each
    ``async with`` block) until it completes, and reads every other attribute
    from the wrapped awaitable.

    The measurement that the call started goes on into the first ``await`` or
    ``async with``; a later one starts a measurement of its own.  A probe that
    ``starts_with_execution`` (the in-progress gauge) counts only while the
    awaitable is awaited or entered, so a result that nobody uses leaves no
    trace.
    """

    __slots__ = ("__wrapped__", "_args", "_driver", "_entered", "_kwargs", "_probe", "_state")
    __wrapped__: Any

    def __init__(
        self, probe: Probe, awaitable: Any, state: Any, args: Args, kwargs: Kwargs
    ) -> None:
        self.__wrapped__ = awaitable
        if probe.starts_with_execution:
            probe.stop(state, args, kwargs, None)
            state = NOT_STARTED
        self._probe, self._state, self._args, self._kwargs = probe, state, args, kwargs
        self._driver: Generator[Any, Any, Any] | None = None
        self._entered: Any = NOT_STARTED

    def _begin(self) -> Any:
        state, self._state = self._state, NOT_STARTED
        if state is NOT_STARTED:
            state = self._probe.start(self._args, self._kwargs)
        return state

    def _end(self, state: Any, error: BaseException | None) -> None:
        self._probe.stop(state, self._args, self._kwargs, error)

    def __await__(self) -> Generator[Any, Any, Any]:
        # A generator: the measurement starts when the awaiting does.
        state = self._begin()
        awaitable: Awaitable[Any] = self.__wrapped__
        try:
            result = yield from awaitable.__await__()
        except BaseException as error:
            self._end(state, error)
            raise
        self._end(state, None)
        return result

    def __getattr__(self, name: str) -> Any:
        # Not self.__wrapped__: while it is unset, that would come back here.
        return getattr(object.__getattribute__(self, "__wrapped__"), name)

    def __repr__(self) -> str:
        return f"<promloop measurement of {self.__wrapped__!r}>"


class MeasuredAwaitableContext(MeasuredAwaitable):
    """A :class:`MeasuredAwaitable` that is also an async context manager.

    An ``async with`` block is measured from ``__aenter__`` to the end of
    ``__aexit__``; an exception that leaves the block ends it with that
    exception, unless the wrapped context manager suppresses it.
    """

    __slots__ = ()

    async def __aenter__(self) -> Any:
        state = self._begin()
        try:
            entered = await self.__wrapped__.__aenter__()
        except BaseException as error:
            self._end(state, error)
            raise
        self._entered = state
        return entered

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> Any:
        state, self._entered = self._entered, NOT_STARTED
        try:
            suppressed = await self.__wrapped__.__aexit__(exc_type, exc, traceback)
        except BaseException as error:
            self._end(state, error)
            raise
        self._end(state, None if suppressed else exc)
        return suppressed


class MeasuredCoroutine(MeasuredAwaitable, Coroutine[Any, Any, Any]):
    """A :class:`MeasuredAwaitable` of a coroutine-like object, which is one too.

    ``asyncio.create_task()`` and ``ensure_future()`` drive a coroutine by
    ``send()`` and ``throw()``: they drive the measured ``await`` here.
    """

    __slots__ = ()

    def _driving(self) -> Generator[Any, Any, Any]:
        if self._driver is None:
            self._driver = self.__await__()
        return self._driver

    def send(self, value: Any) -> Any:
        return self._driving().send(value)

    def throw(self, *args: Any) -> Any:
        return self._driving().throw(*args)

    def close(self) -> None:
        if self._driver is None:
            self.__wrapped__.close()
        else:
            self._driver.close()


class MeasuredCoroutineContext(MeasuredCoroutine, MeasuredAwaitableContext):
    """A :class:`MeasuredCoroutine` that is also an async context manager (aiohttp's requests)."""

    __slots__ = ()


_AWAITABLE_PROXIES: Final[Mapping[tuple[bool, bool], type[MeasuredAwaitable]]] = {
    (False, False): MeasuredAwaitable,
    (False, True): MeasuredAwaitableContext,
    (True, False): MeasuredCoroutine,
    (True, True): MeasuredCoroutineContext,
}
