"""What each instrumentation records, independent of asyncio and Twisted.

Each wrapper is described by a :class:`Recipe`: a few lines of Python that run
when a measured piece of work begins (``enter``), when it succeeds, and when it
raises, with the names those lines use.  ``promloop._wrappers`` compiles a
recipe into wrappers that run these lines inline -- as fast as a hand-written
wrapper -- and into the ``start``/``stop`` pair used for pending results
(awaitables, Futures, Deferreds).

The metric is validated here, when the recipe is built (decoration time), so a
mistake fails at import rather than inside a ``finally`` on the first request.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys

from collections.abc import Callable, Mapping
from typing import Any, Final


_log = logging.getLogger("promloop")

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The lines that one instrumentation runs around a piece of work.

    The lines may use ``args`` and ``kwargs`` (the call's arguments), the
    names in *names*, and the globals of the decorator module they are
    compiled in (``perf_counter``, so that tests can patch it there).
    *enter* binds the names listed in *state*; *on_success* and *on_error*
    (which also sees ``error``) use them.  Failures in *on_success* and
    *on_error* go to ``recording_failed()`` instead of the caller: the work is
    over, and its own result or exception must come through.
    """

    who: str
    enter: tuple[str, ...]
    state: tuple[str, ...]
    on_success: tuple[str, ...]
    on_error: tuple[str, ...]
    names: Mapping[str, Any]
    starts_with_execution: bool = False
    """True if work must not count as started before it runs (the in-progress
    gauge): a coroutine object that is never awaited then leaves no trace."""


def timing_recipe(who: str, metric: Any, *, labels: object, exemplar: object) -> Recipe:
    """Build the recipe of ``time()``: ``observe(seconds)`` when the work ends."""
    who = subject(who, metric)
    require_methods(who, metric, "observe", role="an Observer such as a Histogram or a Summary")
    child = child_resolver(who, metric, labels)
    exemplar_of = exemplar_factory(who, metric, "observe", exemplar)

    target = "metric" if child is None else "target"
    if exemplar_of is None:
        observe: tuple[str, ...] = (f"{target}.observe(perf_counter() - started)",)
    else:  # the clock is read first: the exemplar is not part of the work
        observe = (
            "elapsed = perf_counter() - started",
            f"{target}.observe(elapsed, exemplar=exemplar_of(args, kwargs))",
        )
    return Recipe(
        who=who,
        enter=(*_pick_child(child), "started = perf_counter()"),
        state=(*_child_state(child), "started"),
        on_success=observe,
        on_error=observe,
        names=_names(who, metric, child=child, exemplar_of=exemplar_of),
    )


def counting_recipe(
    who: str, metric: Any, *, exc: object, labels: object, exemplar: object
) -> Recipe:
    """Build the recipe of ``count_exceptions()``: ``inc()`` when the work raises *exc*.

    ``exc=None`` counts every exception except cancellation.
    """
    who = subject(who, metric)
    require_methods(who, metric, "inc", role="an Incrementer such as a Counter")
    counts = exception_filter(who, exc)
    child = child_resolver(who, metric, labels)
    exemplar_of = exemplar_factory(who, metric, "inc", exemplar)

    target = "metric" if child is None else "target"
    inc = (
        f"{target}.inc()"
        if exemplar_of is None
        else f"{target}.inc(exemplar=exemplar_of(args, kwargs))"
    )
    return Recipe(
        who=who,
        # The child is picked up front so that a faulty labels= callable fails
        # before the work runs, never after it.
        enter=_pick_child(child),
        state=_child_state(child),
        on_success=(),
        on_error=("if counts(error):", f"    {inc}"),
        names=_names(who, metric, child=child, exemplar_of=exemplar_of, counts=counts),
    )


def tracking_recipe(who: str, metric: Any, *, labels: object) -> Recipe:
    """Build the recipe of ``track_inprogress()``: ``inc()`` on start, ``dec()`` on every end."""
    who = subject(who, metric)
    require_methods(who, metric, "inc", "dec", role="a gauge")
    child = child_resolver(who, metric, labels)

    target = "metric" if child is None else "target"
    return Recipe(
        who=who,
        enter=(*_pick_child(child), f"{target}.inc()"),
        state=_child_state(child),
        on_success=(f"{target}.dec()",),
        on_error=(f"{target}.dec()",),
        names=_names(who, metric, child=child),
        starts_with_execution=True,
    )


def _pick_child(child: object) -> tuple[str, ...]:
    return () if child is None else ("target = child(args, kwargs)",)


def _child_state(child: object) -> tuple[str, ...]:
    return () if child is None else ("target",)


def _names(who: str, metric: Any, **names: Any) -> dict[str, Any]:
    used = {name: value for name, value in names.items() if value is not None}
    return {
        "metric": metric,
        "recording_failed": functools.partial(_log_recording_failure, who),
        **used,
    }


def _log_recording_failure(who: str) -> None:
    # The work is over by now: raising would replace the application's own
    # result or exception with ours, so the failure is logged instead.
    _log.exception("%s could not record; the measured call is unaffected.", who)


# --- validation -------------------------------------------------------------


def describe(metric: Any) -> str:
    """Name *metric* for a message: its class, its metric name, a child's label values."""
    name = getattr(metric, "_name", None)
    if not isinstance(name, str):
        return repr(metric)
    described = f"{type(metric).__name__} {name!r}"
    label_values = getattr(metric, "_labelvalues", ())
    if label_values:
        pairs = zip(getattr(metric, "_labelnames", ()), label_values, strict=False)
        described += " {" + ", ".join(f"{k}={v!r}" for k, v in pairs) + "}"
    return described


def subject(who: str, metric: Any) -> str:
    """Name a wrapper and its metric, as every message about them starts."""
    return f"{who} for {describe(metric)}"


def require_methods(who: str, metric: Any, *methods: str, role: str) -> None:
    """Raise TypeError unless *metric* has every one of *methods*."""
    for method in methods:
        if not callable(getattr(metric, method, None)):
            msg = f"{who}: the metric has no {method}() method; it must be {role}."
            raise TypeError(msg)


def label_names(metric: Any) -> tuple[str, ...]:
    """Return the label names of a labelled *parent* metric, else ``()``.

    A prometheus_client metric created with ``labelnames`` cannot record until
    ``.labels(...)`` picks a child; a child (or an unlabelled metric) can.
    """
    names = getattr(metric, "_labelnames", ())
    if names and not getattr(metric, "_labelvalues", ()):
        return tuple(names)
    return ()


def child_resolver(
    who: str,
    metric: Any,
    labels: Any,  # checked here: callers may pass anything
) -> Callable[[Args, Kwargs], Any] | None:
    """Check *labels* against *metric*, and return the function that picks the child.

    Returns None when the metric records directly.
    """
    names = label_names(metric)
    if labels is None:
        if names:
            msg = (
                f"{who}: the metric has label names {names!r}; pass labels= "
                f"(a callable returning the label values), or a child such as "
                f"metric.labels(...)."
            )
            raise ValueError(msg)
        return None

    if not callable(labels):
        msg = f"{who}: labels= must be a callable returning label values, not {labels!r}."
        raise TypeError(msg)
    if hasattr(metric, "_labelnames"):  # prometheus_client: a parent, not a child
        fillable = bool(names)
    else:  # duck-typed: anything with a labels() method
        fillable = callable(getattr(metric, "labels", None))
    if not fillable:
        msg = f"{who}: labels= was given, but the metric has no label names left to fill."
        raise ValueError(msg)

    def child(args: Args, kwargs: Kwargs) -> Any:
        values: Any = labels(*args, **kwargs)
        try:
            if isinstance(values, Mapping):
                return metric.labels(**values)
            if isinstance(values, str):  # one label's value, not a sequence of them
                return metric.labels(values)
            return metric.labels(*values)
        except (TypeError, ValueError) as error:
            msg = f"{who}: labels= returned {values!r}, which does not fit the metric: {error}"
            raise ValueError(msg) from error

    return child


def exemplar_factory(
    who: str, metric: Any, method: str, exemplar: object
) -> Callable[[Args, Kwargs], Any] | None:
    """Check *exemplar* against ``metric.<method>``; return a never-raising caller of it.

    Returns None when no exemplar was asked for.  A failing *exemplar*
    callable is logged, and the observation is recorded without one.
    """
    if exemplar is None:
        return None
    if not callable(exemplar):
        msg = f"{who}: exemplar= must be a callable returning a dict or None, not {exemplar!r}."
        raise TypeError(msg)
    try:
        parameters = inspect.signature(getattr(metric, method)).parameters.values()
    except (TypeError, ValueError):  # A builtin without a signature: trust it.
        pass
    else:
        if not any(p.name == "exemplar" or p.kind is p.VAR_KEYWORD for p in parameters):
            msg = f"{who}: the metric's {method}() takes no exemplar, so exemplar= cannot be used."
            raise ValueError(msg)

    def exemplar_of(args: Args, kwargs: Kwargs) -> Any:
        try:
            return exemplar(*args, **kwargs)
        except Exception:  # noqa: BLE001 -- the observation goes on without it
            _log.exception("%s: exemplar= failed; recording without an exemplar.", who)
            return None

    return exemplar_of


# --- which exceptions count ---------------------------------------------------

# Cancellation is how a caller stops work it no longer wants; it is not the
# work failing.  The classes are looked up in sys.modules at the time of the
# exception: a library that is not loaded cannot have raised its class, and
# promloop need not import it.
_CANCELLATION_CLASSES: Final = (
    ("asyncio", "CancelledError"),
    ("concurrent.futures", "CancelledError"),
    ("trio", "Cancelled"),
    ("twisted.internet.defer", "CancelledError"),
)

# Where an exception group may come from: the builtin (3.11+), or the
# backport that trio and anyio use on 3.10.
_GROUP_CLASSES: Final = (
    ("builtins", "BaseExceptionGroup"),
    ("exceptiongroup", "BaseExceptionGroup"),
)


def _loaded_class(module_name: str, class_name: str) -> type[BaseException] | None:
    found = getattr(sys.modules.get(module_name), class_name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def is_cancellation(error: BaseException) -> bool:
    """Tell whether *error* means "cancelled" in asyncio, trio, Twisted, or a generator.

    An exception group is cancellation when everything in it is (a cancelled
    trio nursery or asyncio TaskGroup).
    """
    if isinstance(error, GeneratorExit):
        return True
    for module_name, class_name in _CANCELLATION_CLASSES:
        cancelled = _loaded_class(module_name, class_name)
        if cancelled is not None and isinstance(error, cancelled):
            return True
    for module_name, class_name in _GROUP_CLASSES:
        group = _loaded_class(module_name, class_name)
        if group is not None and isinstance(error, group):
            members: tuple[BaseException, ...] = getattr(error, "exceptions", ())
            return all(is_cancellation(member) for member in members)
    return False


# Twisted's returnValue() (deprecated since Twisted 24.7, still in use) returns
# from an @inlineCallbacks generator by raising this class: a success, whatever
# exc= says.
_RETURN_CLASSES: Final = (("twisted.internet.defer", "_DefGen_Return"),)


def is_return(error: BaseException) -> bool:
    """Tell whether *error* is a return in disguise (Twisted's ``returnValue()``)."""
    for module_name, class_name in _RETURN_CLASSES:
        returned = _loaded_class(module_name, class_name)
        if returned is not None and isinstance(error, returned):
            return True
    return False


def returned_value(error: BaseException) -> Any:
    """Return the value that a return in disguise carries."""
    return vars(error).get("value")


def _is_failure(error: BaseException) -> bool:
    return not (is_cancellation(error) or is_return(error))


def exception_filter(who: str, exc: object) -> Callable[[BaseException], bool]:
    """Return the predicate that decides whether an exception is counted.

    An empty tuple counts nothing, as ``isinstance()`` and prometheus-async do.
    A return in disguise never counts.
    """
    if exc is None:
        return _is_failure
    candidates: tuple[object, ...] = exc if isinstance(exc, tuple) else (exc,)  # pyright: ignore[reportUnknownVariableType]
    classes = tuple(c for c in candidates if isinstance(c, type) and issubclass(c, BaseException))
    if len(classes) != len(candidates):
        msg = f"{who}: exc= must be an exception class or a tuple of them, not {exc!r}."
        raise TypeError(msg)

    def matches(error: BaseException) -> bool:
        return isinstance(error, classes) and not is_return(error)

    return matches
