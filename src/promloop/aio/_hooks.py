"""Pre-scrape hooks: coroutine functions awaited before each render."""

from __future__ import annotations

import asyncio
import logging
import math
import weakref

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from prometheus_client import Counter

from .._registries import registry_or_default


_log = logging.getLogger("promloop")

Hook = Callable[[], Awaitable[object]]

_FAILURES: Final = "promloop_before_scrape_failures"

# One failure counter per registry, however many handlers serve it.
_counters: weakref.WeakKeyDictionary[Any, Counter] = weakref.WeakKeyDictionary()


def _failure_counter(registry: Any) -> Counter:
    counter = _counters.get(registry)
    if counter is None:
        counter = _counters[registry] = Counter(
            _FAILURES,
            "Pre-scrape hooks that raised or timed out, by hook.",
            ["hook"],
            registry=registry,
        )
    return counter


def _name(hook: object) -> str:
    return str(getattr(hook, "__qualname__", None) or repr(hook))


class BeforeScrape:
    """Await every hook, concurrently, each within *timeout* seconds.

    A hook that raises or times out (and is then cancelled) is logged at
    WARNING and counted; the scrape goes on with the values as they are.
    """

    def __init__(self, hooks: Sequence[object], timeout: object, registry: Any) -> None:
        # Typed as object: checked here, for callers without a type checker.
        for hook in hooks:
            if not callable(hook):
                msg = f"before_scrape= must hold coroutine functions, not {hook!r}."
                raise TypeError(msg)
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            msg = f"before_scrape_timeout= must be a positive number of seconds, not {timeout!r}."
            raise ValueError(msg)
        self._hooks: tuple[Hook, ...] = tuple(hooks)  # type: ignore[arg-type]
        self._timeout: float = timeout
        self._failures = _failure_counter(registry_or_default(registry))

    async def run(self) -> None:
        """Await every hook; never raise for a hook's failure."""
        await asyncio.gather(*(self._run(hook) for hook in self._hooks))

    async def _run(self, hook: Hook) -> None:
        try:
            await asyncio.wait_for(hook(), self._timeout)
        except asyncio.TimeoutError:
            _log.warning(
                "before_scrape hook %s timed out after %s s; scraping the last values.",
                _name(hook),
                self._timeout,
            )
            self._failures.labels(_name(hook)).inc()
        except Exception:  # noqa: BLE001 -- logged with its traceback, counted
            _log.warning(
                "before_scrape hook %s failed; scraping the last values.",
                _name(hook),
                exc_info=True,
            )
            self._failures.labels(_name(hook)).inc()
