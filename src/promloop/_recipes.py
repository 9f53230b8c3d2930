"""What each wrapper records, checked when the wrapper is made.

A :class:`Recipe` holds one wrapper's instructions: the metric, or how to pick
its labelled child from a call's arguments; the exemplar to attach; which
exceptions count; and where a metric that fails to record is reported.  It is
built, and everything in it validated, when the wrapper is made -- at
decoration time -- so that a mistake fails at import rather than inside a
``finally`` on the first request.

What is checked about the metric itself (its methods, its label names, whether
it takes exemplars) is remembered per metric, as a :class:`MetricCheck` that
holds the metric only weakly: the one-awaitable and one-Deferred forms, called
on the same metric again and again, check it once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import weakref

from collections.abc import Callable, Mapping
from typing import Any, Final

from ._outcomes import FAILURES, ExceptionFilter, exception_filter


_log = logging.getLogger("promloop")

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


class Kind:
    """One of the three wrappers, and what it needs of a metric.

    The instances are :data:`TIME`, :data:`COUNT` and :data:`TRACK` (plain
    objects rather than an Enum, whose members cost an attribute lookup
    through their class at every use on the one-shot path).
    """

    __slots__ = ("checks", "exemplar_method", "methods", "name", "plain", "role")

    def __init__(
        self, name: str, methods: tuple[str, ...], role: str, exemplar_method: str | None
    ) -> None:
        self.name = name
        """The wrapper's name, as its messages start."""
        self.methods = methods
        self.role = role
        self.exemplar_method = exemplar_method
        """The method that may take an exemplar, if any."""
        self.checks: dict[int, MetricCheck] = {}
        """The metrics checked so far, by id(): see :func:`check_metric`."""
        self.plain: dict[int, MetricCheck] = {}
        """Those of them that record directly (no label names).  The one-awaitable and
        one-Deferred forms without options look their metric up here first, as
        ``check_metric()`` does, inline: that is all they need."""


TIME: Final = Kind(
    "time()", ("observe",), "an Observer such as a Histogram or a Summary", "observe"
)
COUNT: Final = Kind("count_exceptions()", ("inc",), "an Incrementer such as a Counter", "inc")
TRACK: Final = Kind("track_inprogress()", ("inc", "dec"), "a gauge", None)


@dataclasses.dataclass(frozen=True)
class MetricCheck:
    """What one wrapper kind found out about one metric.

    It never holds the metric itself (only *metric_ref*, a weak reference),
    so that remembering it keeps no metric alive.
    """

    who: str
    """The wrapper and its metric, as every message about them starts."""
    label_names: tuple[str, ...]
    """The label names of a labelled parent metric; ``()`` for one that records."""
    takes_exemplar: bool
    recording_failed: Callable[[], None]
    metric_ref: Callable[[], Any] = lambda: None
    """The metric, while it lives, once the check is kept in its kind's ``checks``."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One wrapper's validated instructions.

    *pick_child* and *exemplar_of* receive the call's arguments as
    ``(args, kwargs)``; both are None without ``labels=`` / ``exemplar=``.
    *counts* decides which exceptions ``count_exceptions()`` counts.
    """

    kind: Kind
    check: MetricCheck
    metric: Any
    pick_child: Callable[[Args, Kwargs], Any] | None
    exemplar_of: Callable[[Args, Kwargs], Any] | None
    counts: ExceptionFilter

    @property
    def who(self) -> str:
        """Name the wrapper and its metric, as every message about them starts."""
        return self.check.who

    @property
    def recording_failed(self) -> Callable[[], None]:
        """Report that the metric failed to record, after the work."""
        return self.check.recording_failed

    @property
    def plain(self) -> bool:
        """Tell whether the recipe records on the metric itself, without arguments."""
        return self.pick_child is None and self.exemplar_of is None


def make_recipe(
    kind: Kind,
    metric: Any,
    *,
    labels: object = None,
    exemplar: object = None,
    exc: object = None,
) -> Recipe:
    """Validate a wrapper's arguments and return its recipe.

    Raises:
        TypeError: The metric lacks a method the wrapper needs, or an option
            is of the wrong type.
        ValueError: The metric and the options do not fit together.
    """
    check = check_metric(kind, metric)
    who = check.who
    counts = exception_filter(who, exc) if kind is COUNT else FAILURES
    return Recipe(
        kind=kind,
        check=check,
        metric=metric,
        pick_child=_child_picker(check, metric, labels),
        exemplar_of=_exemplar_caller(kind, check, exemplar),
        counts=counts,
    )


# --- checking a metric, once ------------------------------------------------------


def check_metric(kind: Kind, metric: Any) -> MetricCheck:
    """Return what *kind* needs to know about *metric*, checked at most once per metric.

    Checks are kept in ``kind.checks`` by ``id(metric)``, each with a weak
    reference to its metric: a check whose metric has gone is forgotten by
    the reference's callback, and never mistaken for that of a new metric
    with the same id.  A metric that cannot be weakly referenced is checked
    at every use.

    Raises:
        TypeError: *metric* lacks a method that *kind* needs.
    """
    checks = kind.checks
    check = checks.get(id(metric))
    if check is not None and check.metric_ref() is metric:
        return check
    check = _check(kind, metric)
    try:
        ref = weakref.ref(metric, functools.partial(_forget, kind, id(metric)))
    except TypeError:
        return check
    check = dataclasses.replace(check, metric_ref=ref)
    checks[id(metric)] = check
    if not check.label_names:
        kind.plain[id(metric)] = check
    return check


def _forget(kind: Kind, key: int, ref: weakref.ref[Any]) -> None:
    for checks in (kind.checks, kind.plain):
        if (check := checks.get(key)) is not None and check.metric_ref is ref:
            del checks[key]


def _check(kind: Kind, metric: Any) -> MetricCheck:
    who = _who(kind, metric)
    for method in kind.methods:
        if not callable(getattr(metric, method, None)):
            msg = f"{who}: the metric has no {method}() method; it must be {kind.role}."
            raise TypeError(msg)
    exemplar_method = kind.exemplar_method
    return MetricCheck(
        who=who,
        label_names=label_names(metric),
        takes_exemplar=exemplar_method is not None and _takes_exemplar(metric, exemplar_method),
        recording_failed=functools.partial(_log_recording_failure, who),
    )


def _who(kind: Kind, metric: Any) -> str:
    return f"{kind.name} for {describe(metric)}"


def _log_recording_failure(who: str) -> None:
    # The work is over by now: raising would replace the application's own
    # result or exception with ours, so the failure is logged instead.
    _log.exception("%s could not record; the measured call is unaffected.", who)


def report_recording_failure(kind: Kind, metric: Any) -> None:
    """Log that *metric* failed to record for *kind*, as its check's ``recording_failed()`` does.

    For wrappers that hold the metric but not its check: the one-awaitable
    forms' fast path, which finds the check by id() alone.
    """
    _log_recording_failure(_who(kind, metric))


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


def label_names(metric: Any) -> tuple[str, ...]:
    """Return the label names of a labelled *parent* metric, else ``()``.

    A prometheus_client metric created with ``labelnames`` cannot record until
    ``.labels(...)`` picks a child; a child (or an unlabelled metric) can.
    """
    names = getattr(metric, "_labelnames", ())
    if names and not getattr(metric, "_labelvalues", ()):
        return tuple(names)
    return ()


def _takes_exemplar(metric: Any, method: str) -> bool:
    try:
        parameters = inspect.signature(getattr(metric, method)).parameters.values()
    except (TypeError, ValueError):  # A builtin without a signature: trust it.
        return True
    return any(p.name == "exemplar" or p.kind is p.VAR_KEYWORD for p in parameters)


# --- the options ------------------------------------------------------------------


def _child_picker(
    check: MetricCheck,
    metric: Any,
    labels: Any,  # checked here: callers may pass anything
) -> Callable[[Args, Kwargs], Any] | None:
    """Check *labels* against the metric, and return the function that picks the child.

    Returns None when the metric records directly.
    """
    who, names = check.who, check.label_names
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

    def pick_child(args: Args, kwargs: Kwargs) -> Any:
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

    return pick_child


def _exemplar_caller(
    kind: Kind, check: MetricCheck, exemplar: object
) -> Callable[[Args, Kwargs], Any] | None:
    """Check *exemplar* against the metric; return a never-raising caller of it.

    Returns None when no exemplar was asked for.  A failing *exemplar*
    callable is logged, and the observation is recorded without one.
    """
    if exemplar is None:
        return None
    who = check.who
    if not callable(exemplar):
        msg = f"{who}: exemplar= must be a callable returning a dict or None, not {exemplar!r}."
        raise TypeError(msg)
    if not check.takes_exemplar:
        msg = (
            f"{who}: the metric's {kind.exemplar_method}() takes no exemplar, so exemplar= "
            f"cannot be used."
        )
        raise ValueError(msg)

    def exemplar_of(args: Args, kwargs: Kwargs) -> Any:
        try:
            return exemplar(*args, **kwargs)
        except Exception:  # noqa: BLE001 -- the observation goes on without it
            _log.exception("%s: exemplar= failed; recording without an exemplar.", who)
            return None

    return exemplar_of
