"""Wrappers: what a decorator returns in place of the callable it measures.

A wrapper keeps the kind of what it wraps -- a coroutine function stays a
coroutine function, an async generator function an async generator function,
a generator function a generator function -- so that frameworks which inspect
handlers (aiohttp, pytest, Klein) see what they expect.  The wrapper of a
Python function is a plain function: bound as a method like any function, and
picklable by qualified name.  Any other callable gets a
:class:`MeasuredCallable`, a proxy that binds (or not) as that callable does.

Which wrapper measures a call depends on the recipe and the callable's kind:

- a recipe that records on the metric itself, on a coroutine function or a
  plain function: a template with the metric calls inline
  (:mod:`promloop._templates`), specialized to the function's exact parameters
  (:mod:`promloop._templating`);
- any other: a wrapper that drives the recipe's probe (:mod:`promloop._probes`).

What a plain function returns is handed to the side's *settle* when it is
pending (a coroutine, a Future, a Deferred, any awaitable), which measures it
until it completes; anything else is measured as a plain value and returned
untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import types

from typing import TYPE_CHECKING, Any, SupportsIndex, TypeVar

from ._outcomes import is_return, returned_value
from ._probes import make_probe
from ._templates import COROUTINE_FUNCTION_TEMPLATES, FUNCTION_TEMPLATES
from ._templating import specialize


if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

    from ._probes import Probe
    from ._recipes import Args, Kwargs, Recipe


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Side:
    """What a framework side (``promloop.aio``, ``promloop.tx``) brings to its wrappers."""

    clock: types.ModuleType
    """The decorator module, whose ``perf_counter`` every wrapper reads: tests patch it there."""
    pending: Any
    """A class, or a tuple of classes, of results that complete later."""
    settle: Callable[[Probe, Any, Any, Args, Kwargs], Any]
    """``settle(probe, result, state, args, kwargs)`` measures a pending result until it
    completes, continuing the measurement that *state* began, and returns what the caller
    gets."""


def instrument(recipe: Recipe, side: Side, func: Any) -> Any:
    """Return *func* wrapped so that every call is measured by *recipe*.

    ``classmethod`` and ``staticmethod`` objects are unwrapped, instrumented
    and wrapped again, so the decorator works above or below them; one inside
    another decorator's proxy (wrapt's) gets a :class:`MeasuredCallable`,
    which the proxy binds.

    Raises:
        TypeError: *func* cannot be called.
    """
    if type(func) in (classmethod, staticmethod):
        descriptor: Any = func
        return type(descriptor)(instrument(recipe, side, descriptor.__func__))
    if not callable(func):
        msg = f"{recipe.who}: only callables can be decorated, not {func!r}."
        raise TypeError(msg)

    wrap = _wrapper_maker(recipe, side, func)
    if type(func) is types.FunctionType:
        return functools.update_wrapper(wrap(func), func)
    return functools.update_wrapper(MeasuredCallable(func, wrap(func), wrap), func)


def _wrapper_maker(recipe: Recipe, side: Side, func: Any) -> Callable[[Any], Callable[..., Any]]:
    """Return ``wrap(callee)``, which makes the wrapper of a callable of *func*'s kind."""
    probe = make_probe(recipe, side.clock)
    if _is_method_descriptor(func):
        # Another decorator's proxy (wrapt) around one: its kind is its function's.
        func = func.__func__
    if inspect.isasyncgenfunction(func):
        return functools.partial(probed_async_generator_function, probe=probe)
    if inspect.isgeneratorfunction(func):
        return functools.partial(probed_generator_function, probe=probe)
    is_coroutine_function = inspect.iscoroutinefunction(func)
    if not recipe.plain:
        if is_coroutine_function:
            return functools.partial(probed_coroutine_function, probe=probe)
        return functools.partial(probed_function, probe=probe, side=side)

    templates = COROUTINE_FUNCTION_TEMPLATES if is_coroutine_function else FUNCTION_TEMPLATES
    template = templates[recipe.kind]

    def wrap(callee: Any) -> Callable[..., Any]:
        wrapper: Callable[..., Any] = specialize(template, callee)(callee, recipe, probe, side)
        return wrapper

    return wrap


def _is_method_descriptor(func: object) -> bool:
    # A bool, not a narrowing: what the proxy holds is not known to the type checkers.
    return isinstance(func, (classmethod, staticmethod))


# --- wrappers that drive a probe ----------------------------------------------------


def probed_coroutine_function(
    func: Callable[..., Awaitable[Any]], probe: Probe
) -> Callable[..., Any]:
    """Wrap a coroutine function: measured from when its coroutine starts running to its end."""
    start, stop = probe.start, probe.stop

    async def measured(*args: Any, **kwargs: Any) -> Any:
        state = start(args, kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as error:
            stop(state, args, kwargs, error)
            raise
        stop(state, args, kwargs, None)
        return result

    return measured


def probed_function(func: Callable[..., Any], probe: Probe, side: Side) -> Callable[..., Any]:
    """Wrap a plain function: measured during the call, and until a pending result completes."""
    start, stop = probe.start, probe.stop
    pending, settle = side.pending, side.settle

    def measured(*args: Any, **kwargs: Any) -> Any:
        state = start(args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            stop(state, args, kwargs, error)
            raise
        if isinstance(result, pending):
            return settle(probe, result, state, args, kwargs)
        stop(state, args, kwargs, None)
        return result

    return measured


def probed_generator_function(
    func: Callable[..., Generator[Any, Any, Any]], probe: Probe
) -> Callable[..., Any]:
    """Wrap a generator function: measured from its first step to its end."""
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


def probed_async_generator_function(
    func: Callable[..., AsyncGenerator[Any, Any]], probe: Probe
) -> Callable[..., Any]:
    """Wrap an async generator function: measured from its first step to its end or aclose()."""
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


# --- other callables ----------------------------------------------------------------


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
        wrap: Callable[[Any], Callable[..., Any]],
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
        # The callee is bound already; the measurement (labels=, exemplar=)
        # still sees what it was bound to among the arguments, as the function
        # receives it: the instance, or the class of a classmethod (inside
        # another decorator's proxy), and nothing for a staticmethod.
        receiver: object = instance
        if isinstance(wrapped, classmethod):
            receiver = type(instance) if owner is None else owner
        elif isinstance(wrapped, staticmethod):
            receiver = None
        if receiver is None:
            call = self._wrap(bound)
        else:
            call = types.MethodType(self._wrap(functools.partial(_call_bound, bound)), receiver)
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
