"""Results that complete later: measuring an awaitable until it completes.

Three cases meet here.  The one-awaitable form, ``time(metric, awaitable)``,
returns a coroutine that awaits the awaitable, measured by a probe (without
``labels=`` or ``exemplar=``, ``promloop.aio`` has coroutines of its own with
the metric calls inline).  A plain function that returns a coroutine has it
wrapped in such a coroutine.  A plain function
that returns another awaitable, such as the request that aiohttp's
``session.get()`` returns, gets a proxy, :class:`MeasuredAwaitable`, which
measures the awaitable when it is awaited (or entered with ``async with``)
and otherwise behaves as the awaitable does.

Nothing here is asyncio's: trio's and Twisted's coroutines are measured alike.
Futures and Deferreds are the framework sides' (``promloop.aio``,
``promloop.tx``), which measure them by a completion callback.
"""

from __future__ import annotations

import types

from collections.abc import Awaitable, Coroutine, Generator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar


if TYPE_CHECKING:
    from ._probes import Probe
    from ._recipes import Args, Kwargs


T = TypeVar("T")

NOT_STARTED: Final[Any] = object()
"""A token meaning "the measurement has not started yet"."""


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
