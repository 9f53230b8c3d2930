"""What each instrumentation records, independent of asyncio and Twisted.

A :class:`Probe` is a pair of callables: ``start(args, kwargs)`` runs when a
measured piece of work begins and returns a token; ``stop(token, args,
kwargs, error)`` runs exactly once when it ends, with the exception that ended
it or None.  ``time()``, ``count_exceptions()`` and ``track_inprogress()`` on
both sides are one probe each, and ``promloop._wrappers`` applies a probe to
any kind of callable or pending result.

The metric is validated here, when the probe is built (decoration time), so a
mistake fails at import rather than inside a ``finally`` on the first request.
"""

from __future__ import annotations

import inspect
import logging
import sys

from collections.abc import Callable, Mapping
from typing import Any, Final


_log = logging.getLogger("promloop")

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
Start = Callable[[Args, Kwargs], Any]
Stop = Callable[[Any, Args, Kwargs, "BaseException | None"], None]
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class Probe:
    """How one instrumentation starts and stops a measurement.

    ``starts_with_execution`` is True for probes that must not start before
    the work actually runs (the in-progress gauge): a coroutine object that is
    created but never awaited then leaves no trace.
    """

    __slots__ = ("start", "starts_with_execution", "stop")

    def __init__(self, start: Start, stop: Stop, *, starts_with_execution: bool = False) -> None:
        self.start = start
        self.stop = stop
        self.starts_with_execution = starts_with_execution


def timing_probe(
    who: str,
    metric: Any,
    *,
    labels: Callable[..., Any] | None,
    exemplar: Callable[..., Any] | None,
    clock: Mapping[str, Callable[[], float]],
) -> Probe:
    """Build the probe of ``time()``: ``observe(seconds)`` when the work ends.

    *clock* is the namespace of the calling decorator module: the time is read
    from its ``perf_counter`` at every measurement, so that tests can patch
    ``promloop.aio._decorators.perf_counter`` as they patch
    ``prometheus_async.aio._decorators.perf_counter``.
    """
    require_methods(who, metric, "observe", role="an Observer such as a Histogram or a Summary")
    child = child_resolver(who, metric, labels)
    if exemplar is not None:
        require_exemplar_support(who, metric, "observe", exemplar)

    if child is None and exemplar is None:

        def start(args: Args, kwargs: Kwargs) -> float:
            return clock["perf_counter"]()

        def stop(started: float, args: Args, kwargs: Kwargs, error: BaseException | None) -> None:
            elapsed = clock["perf_counter"]() - started
            try:
                metric.observe(elapsed)
            except Exception:  # noqa: BLE001 -- logged with its traceback
                _log_recording_failure(who, metric)

        return Probe(start, stop)

    def start_labelled(args: Args, kwargs: Kwargs) -> tuple[Any, float]:
        target = metric if child is None else child(args, kwargs)
        return target, clock["perf_counter"]()

    def stop_labelled(
        token: tuple[Any, float], args: Args, kwargs: Kwargs, error: BaseException | None
    ) -> None:
        target, started = token
        elapsed = clock["perf_counter"]() - started
        try:
            if exemplar is None:
                target.observe(elapsed)
            else:
                target.observe(elapsed, exemplar=exemplar(*args, **kwargs))
        except Exception:  # noqa: BLE001 -- logged with its traceback
            _log_recording_failure(who, metric)

    return Probe(start_labelled, stop_labelled)


def counting_probe(
    who: str,
    metric: Any,
    *,
    exc: ExceptionTypes | None,
    labels: Callable[..., Any] | None,
    exemplar: Callable[..., Any] | None,
) -> Probe:
    """Build the probe of ``count_exceptions()``: ``inc()`` when the work raises *exc*.

    ``exc=None`` counts every exception except cancellation.
    """
    require_methods(who, metric, "inc", role="an Incrementer such as a Counter")
    counts = exception_filter(who, exc)
    child = child_resolver(who, metric, labels)
    if exemplar is not None:
        require_exemplar_support(who, metric, "inc", exemplar)

    def start(args: Args, kwargs: Kwargs) -> Any:
        # The labels are resolved up front so that a faulty labels= callable
        # fails before the work runs, never after it.
        return metric if child is None else child(args, kwargs)

    def stop(target: Any, args: Args, kwargs: Kwargs, error: BaseException | None) -> None:
        if error is None or not counts(error):
            return
        try:
            if exemplar is None:
                target.inc()
            else:
                target.inc(exemplar=exemplar(*args, **kwargs))
        except Exception:  # noqa: BLE001 -- logged with its traceback
            _log_recording_failure(who, metric)

    return Probe(start, stop)


def tracking_probe(who: str, metric: Any, *, labels: Callable[..., Any] | None) -> Probe:
    """Build the probe of ``track_inprogress()``: ``inc()`` on start, ``dec()`` on every end."""
    require_methods(who, metric, "inc", "dec", role="a gauge")
    child = child_resolver(who, metric, labels)

    def start(args: Args, kwargs: Kwargs) -> Any:
        target = metric if child is None else child(args, kwargs)
        target.inc()
        return target

    def stop(target: Any, args: Args, kwargs: Kwargs, error: BaseException | None) -> None:
        try:
            target.dec()
        except Exception:  # noqa: BLE001 -- logged with its traceback
            _log_recording_failure(who, metric)

    return Probe(start, stop, starts_with_execution=True)


def _log_recording_failure(who: str, metric: Any) -> None:
    # The work is over by now: raising would replace the application's own
    # result or exception with ours, so the failure is logged instead.
    _log.exception(
        "%s could not record to %s; the measured call is unaffected.", who, describe(metric)
    )


# --- validation -------------------------------------------------------------


def describe(metric: Any) -> str:
    """Name *metric* for an error message: its class and, if it has one, its metric name."""
    name = getattr(metric, "_name", None)
    if isinstance(name, str):
        return f"{type(metric).__name__} {name!r}"
    return repr(metric)


def require_methods(who: str, metric: Any, *methods: str, role: str) -> None:
    """Raise TypeError unless *metric* has every one of *methods*."""
    for method in methods:
        if not callable(getattr(metric, method, None)):
            msg = f"{who}: {describe(metric)} has no {method}() method; {who} needs {role}."
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
                f"{who}: {describe(metric)} has label names {names!r}; pass labels= "
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
        msg = f"{who}: labels= was given, but {describe(metric)} has no label names left to fill."
        raise ValueError(msg)

    def child(args: Args, kwargs: Kwargs) -> Any:
        values: Any = labels(*args, **kwargs)
        if isinstance(values, Mapping):
            return metric.labels(**values)
        return metric.labels(*values)

    return child


def require_exemplar_support(who: str, metric: Any, method: str, exemplar: Any) -> None:
    """Raise unless *exemplar* is callable and ``metric.<method>`` accepts ``exemplar=``."""
    if not callable(exemplar):
        msg = f"{who}: exemplar= must be a callable returning a dict or None, not {exemplar!r}."
        raise TypeError(msg)
    try:
        parameters = inspect.signature(getattr(metric, method)).parameters.values()
    except (TypeError, ValueError):  # A builtin without a signature: trust it.
        return
    if not any(p.name == "exemplar" or p.kind is p.VAR_KEYWORD for p in parameters):
        msg = (
            f"{who}: {describe(metric)}.{method}() takes no exemplar, so exemplar= cannot be used."
        )
        raise ValueError(msg)


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


def is_cancellation(error: BaseException) -> bool:
    """Tell whether *error* means "cancelled" in asyncio, trio, Twisted, or a generator."""
    if isinstance(error, GeneratorExit):
        return True
    for module_name, class_name in _CANCELLATION_CLASSES:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


def _is_failure(error: BaseException) -> bool:
    return not is_cancellation(error)


def exception_filter(who: str, exc: object) -> Callable[[BaseException], bool]:
    """Return the predicate that decides whether an exception is counted."""
    if exc is None:
        return _is_failure
    candidates: tuple[object, ...] = exc if isinstance(exc, tuple) else (exc,)  # pyright: ignore[reportUnknownVariableType]
    classes = tuple(c for c in candidates if isinstance(c, type) and issubclass(c, BaseException))
    if not classes or len(classes) != len(candidates):
        msg = f"{who}: exc= must be an exception class or a tuple of them, not {exc!r}."
        raise TypeError(msg)

    def matches(error: BaseException) -> bool:
        return isinstance(error, classes)

    return matches
