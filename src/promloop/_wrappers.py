"""Apply a :class:`~promloop._probes.Probe` to a callable or to one pending result.

The wrapper keeps the kind of what it wraps -- a coroutine function stays a
coroutine function, an async generator function an async generator function,
a generator function a generator function -- so that frameworks which inspect
handlers (aiohttp, pytest, Klein) see what they expect.  Wrappers are plain
closures: cheap to call, bound as methods like any function, and picklable by
qualified name.

What a plain function returns is handed to a framework-specific *settle*
function: it measures a pending result (an awaitable, a Future, a Deferred)
until it completes, or stops the measurement at once for a plain value.
"""

from __future__ import annotations

import functools
import inspect

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, Final, TypeVar, cast

from ._probes import Args, Kwargs, Probe


T = TypeVar("T")

Settle = Callable[[Probe, Any, Any, Args, Kwargs], Any]

NOT_STARTED: Final[Any] = object()
"""A token meaning "the measurement has not started yet"."""


def instrument(who: str, func: Any, probe: Probe, settle: Settle) -> Any:
    """Return *func* wrapped so that every call is measured by *probe*.

    ``classmethod`` and ``staticmethod`` objects are unwrapped, instrumented
    and wrapped again, so the decorator works above or below them.
    """
    if isinstance(func, (classmethod, staticmethod)):
        descriptor: Any = cast("Any", func)
        return type(descriptor)(instrument(who, descriptor.__func__, probe, settle))
    if not callable(func):
        msg = f"{who} decorates callables, not {func!r}."
        raise TypeError(msg)

    if inspect.isasyncgenfunction(func):
        wrapper = _async_generator_wrapper(func, probe)
    elif inspect.iscoroutinefunction(func):
        wrapper = _coroutine_wrapper(func, probe)
    elif inspect.isgeneratorfunction(func):
        wrapper = _generator_wrapper(func, probe)
    else:
        wrapper = _function_wrapper(func, probe, settle)
    return functools.update_wrapper(wrapper, func)


def _coroutine_wrapper(func: Callable[..., Awaitable[Any]], probe: Probe) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    async def measured(*args: Any, **kwargs: Any) -> Any:
        token = start(args, kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as error:
            stop(token, args, kwargs, error)
            raise
        stop(token, args, kwargs, None)
        return result

    return measured


def _generator_wrapper(
    func: Callable[..., Generator[Any, Any, Any]], probe: Probe
) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    def measured(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # A generator's body runs at its first next(): so does the measurement.
        token = start(args, kwargs)
        try:
            result = yield from func(*args, **kwargs)
        except BaseException as error:
            stop(token, args, kwargs, error)
            raise
        stop(token, args, kwargs, None)
        return result

    return measured


def _async_generator_wrapper(
    func: Callable[..., AsyncGenerator[Any, Any]], probe: Probe
) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    async def measured(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        token = start(args, kwargs)
        try:
            # There is no "yield from" for async generators: forward every
            # asend(), athrow() and aclose() to the inner generator by hand.
            inner: AsyncGenerator[Any, Any] = func(*args, **kwargs)
            advance: Callable[[Any], Awaitable[Any]] = inner.asend
            value: Any = None
            while True:
                try:
                    item = await advance(value)
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
        except BaseException as error:
            stop(token, args, kwargs, error)
            raise
        stop(token, args, kwargs, None)

    return measured


def _function_wrapper(func: Callable[..., Any], probe: Probe, settle: Settle) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    def measured(*args: Any, **kwargs: Any) -> Any:
        token = start(args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            stop(token, args, kwargs, error)
            raise
        return settle(probe, result, token, args, kwargs)

    return measured


async def measure_awaitable(
    probe: Probe, awaitable: Awaitable[T], args: Args, kwargs: Kwargs, token: Any = NOT_STARTED
) -> T:
    """Await *awaitable*, measuring until it completes.

    A *token* of :data:`NOT_STARTED` starts the measurement when this
    coroutine starts running; any other token continues a measurement that
    began earlier (the clock of ``time(metric, awaitable)`` starts at the call).
    """
    if token is NOT_STARTED:
        token = probe.start(args, kwargs)
    try:
        result = await awaitable
    except BaseException as error:
        probe.stop(token, args, kwargs, error)
        raise
    probe.stop(token, args, kwargs, None)
    return result


def settle_plain(probe: Probe, result: Any, token: Any, args: Args, kwargs: Kwargs) -> Any:
    """Settle a result that no framework owns: follow an awaitable, or stop now."""
    if inspect.isawaitable(result):
        return follow_awaitable(probe, result, token, args, kwargs)
    probe.stop(token, args, kwargs, None)
    return result


def follow_awaitable(
    probe: Probe, awaitable: Awaitable[T], token: Any, args: Args, kwargs: Kwargs
) -> Any:
    """Measure the awaitable result of a plain function until it completes.

    Returns a coroutine.  For a probe that ``starts_with_execution`` the call
    is over and is stopped now; the awaitable is measured again only when it
    runs, so a result that nobody awaits leaves no gauge behind.
    """
    if probe.starts_with_execution:
        probe.stop(token, args, kwargs, None)
        token = NOT_STARTED
    return measure_awaitable(probe, awaitable, args, kwargs, token)
