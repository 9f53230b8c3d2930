"""Pre-scrape hooks: coroutine functions awaited before each render."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import weakref

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, cast

from prometheus_client import Counter, values

from .._registries import registry_or_default


_log = logging.getLogger("promloop")

Hook = Callable[[], Awaitable[object]]

_FAILURES: Final = "promloop_before_scrape_failures"

# One failure counter per registry, however many handlers serve it.
_counters: weakref.WeakKeyDictionary[Any, Counter] = weakref.WeakKeyDictionary()
# In multiprocess mode, one per process (see _failure_counter).
_shared: list[Counter] = []


def _multiprocess_mode() -> bool:
    """Tell whether prometheus_client writes every metric to the multiprocess files."""
    return values.ValueClass is not values.MutexValue


def _new_failure_counter(registry: Any) -> Counter:
    return Counter(
        _FAILURES,
        "Pre-scrape hooks that raised or timed out, by hook.",
        ["hook"],
        registry=registry,
    )


def _failure_counter(registry: Any) -> Counter:
    if _multiprocess_mode():
        # The counter goes to the multiprocess files like every other metric,
        # and the served registry's MultiProcessCollector reads it from there,
        # summed over the processes.  Registered in that registry as well, it
        # would be served twice.  One per process: two counters of one name
        # would overwrite each other's values in this process's file.
        if not _shared:
            _shared.append(_new_failure_counter(None))
        return _shared[0]
    counter = _counters.get(registry)
    if counter is None:
        counter = _counters[registry] = _new_failure_counter(registry)
    return counter


def hook_name(hook: object) -> str:
    """Return the name that *hook*'s failures are counted under, the same in every run.

    The module and qualified name of a function (``myapp.jobs.refresh``), of
    a method (``myapp.jobs.Queue.refresh``), of the function a
    ``functools.partial`` calls, or of the class of a callable object.  A
    lambda has no such name.

    Raises:
        ValueError: *hook* is a lambda.
    """
    target = hook
    while isinstance(target, functools.partial):
        target = target.func
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):  # an object with a __call__ method
        target = type(target)
        qualname = target.__qualname__
    if "<lambda>" in qualname:
        msg = (
            f"before_scrape=: {hook!r} is a lambda, which has no name to count its failures "
            f'under; name it with a mapping: before_scrape={{"refresh_queue": hook}}.'
        )
        raise ValueError(msg)
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def _named(hooks: object) -> tuple[tuple[str, Hook], ...]:
    """Pair each hook with its name: a mapping's key, or :func:`hook_name`."""
    # Checked here, for callers without a type checker.
    if isinstance(hooks, Mapping):
        pairs: list[tuple[object, object]] = list(cast("Mapping[object, object]", hooks).items())
        for name, _ in pairs:
            if not isinstance(name, str) or not name:
                msg = f"before_scrape=: a hook's name must be a non-empty string, not {name!r}."
                raise TypeError(msg)
    else:
        pairs = [(None, hook) for hook in cast("Iterable[object]", hooks)]
    named: dict[str, Hook] = {}
    for given, hook in pairs:
        if not callable(hook):
            msg = f"before_scrape= must hold coroutine functions, not {hook!r}."
            raise TypeError(msg)
        name = given if isinstance(given, str) else hook_name(hook)
        if name in named:
            msg = (
                f"before_scrape=: two hooks would be counted as {name!r}; name them with a "
                f'mapping: before_scrape={{"first": hook, "second": other_hook}}.'
            )
            raise ValueError(msg)
        named[name] = cast("Hook", hook)  # that it returns an awaitable is not checkable
    return tuple(named.items())


class BeforeScrape:
    """Await every hook, concurrently, each within *timeout* seconds.

    A hook that raises or times out (and is then cancelled) is logged at
    WARNING and counted; the scrape goes on with the values as they are.
    """

    def __init__(self, hooks: object, timeout: object, registry: Any) -> None:
        self._hooks = _named(hooks)
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            msg = f"before_scrape_timeout= must be a positive number of seconds, not {timeout!r}."
            raise ValueError(msg)
        self._timeout: float = timeout
        self._failures = _failure_counter(registry_or_default(registry))

    async def run(self) -> None:
        """Await every hook; never raise for a hook's failure."""
        await asyncio.gather(*(self._run(name, hook) for name, hook in self._hooks))

    async def _run(self, name: str, hook: Hook) -> None:
        try:
            await asyncio.wait_for(_own_timeouts_marked(hook), self._timeout)
        except asyncio.TimeoutError:
            _log.warning(
                "before_scrape hook %s timed out after %s s; scraping the last values.",
                name,
                self._timeout,
            )
            self._failures.labels(name).inc()
        except Exception as error:  # noqa: BLE001 -- logged with its traceback, counted
            failure = error.__cause__ if isinstance(error, _HookTimedOut) else error
            _log.warning(
                "before_scrape hook %s failed; scraping the last values.", name, exc_info=failure
            )
            self._failures.labels(name).inc()


class _HookTimedOut(Exception):  # noqa: N818 -- a marker, never seen outside
    """A timeout that the hook raised itself: its failure, not before_scrape_timeout's."""


async def _own_timeouts_marked(hook: Hook) -> object:
    # A hook's own timeout (its HTTP client's, a wait_for() of its own) would
    # otherwise be reported as its running out of before_scrape_timeout.
    try:
        return await hook()
    except (asyncio.TimeoutError, TimeoutError) as error:
        raise _HookTimedOut from error
