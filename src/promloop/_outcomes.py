"""How a measured call ended: which exceptions are failures, and which are not.

Cancellation is how a caller stops work it no longer wants; it is not the work
failing.  Twisted's ``returnValue()`` raises to return from an
``@inlineCallbacks`` generator; it is a success.  Both are recognised by class,
looked up in :data:`sys.modules` when first needed: a library that is not
loaded cannot have raised its class, and promloop need not import it.

The answer for an exception class is remembered, so that counting a failure
costs one dictionary lookup.
"""

from __future__ import annotations

import sys

from typing import Any, Final


_CANCELLATION_CLASSES: Final = (
    ("asyncio", "CancelledError"),
    ("concurrent.futures", "CancelledError"),
    ("trio", "Cancelled"),
    ("twisted.internet.defer", "CancelledError"),
)

# Deprecated since Twisted 24.7, and still in use.
_RETURN_CLASSES: Final = (("twisted.internet.defer", "_DefGen_Return"),)

# Where an exception group may come from: the builtin (3.11+), or the
# backport that trio and anyio use on 3.10.
_GROUP_CLASSES: Final = (
    ("builtins", "BaseExceptionGroup"),
    ("exceptiongroup", "BaseExceptionGroup"),
)


# What an exception of some class means for the call it ended.  Plain
# strings, compared by identity: an Enum member costs an attribute lookup
# through its class on every use, and counting a failure is on the hot path.
FAILURE: Final = "failure"
CANCELLATION: Final = "cancellation"
RETURN: Final = "return"
GROUP: Final = "group"  # an exception group: what it means depends on its members


def _loaded_class(module_name: str, class_name: str) -> type[BaseException] | None:
    found = getattr(sys.modules.get(module_name), class_name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _any_loaded(kind: type[BaseException], classes: tuple[tuple[str, str], ...]) -> bool:
    for module_name, class_name in classes:
        loaded = _loaded_class(module_name, class_name)
        if loaded is not None and issubclass(kind, loaded):
            return True
    return False


def _classify(kind: type[BaseException]) -> str:
    if issubclass(kind, GeneratorExit) or _any_loaded(kind, _CANCELLATION_CLASSES):
        return CANCELLATION
    if _any_loaded(kind, _RETURN_CLASSES):
        return RETURN
    if _any_loaded(kind, _GROUP_CLASSES):
        return GROUP
    return FAILURE


# An exception class's ending never changes: the classes it is compared with
# were loaded before it could subclass them.  The cache is bounded so that a
# program that makes exception classes on the fly does not keep them all.
_ENDINGS: dict[type[BaseException], str] = {}
_ENDINGS_KEPT: Final = 1024


def ending_of(error: BaseException) -> str:
    """Tell what *error*'s class means for the call that it ended: one of the constants above."""
    kind = type(error)
    ending = _ENDINGS.get(kind)
    if ending is None:
        ending = _classify(kind)
        if len(_ENDINGS) < _ENDINGS_KEPT:
            _ENDINGS[kind] = ending
    return ending


def is_cancellation(error: BaseException) -> bool:
    """Tell whether *error* means "cancelled" in asyncio, trio, Twisted, or a generator.

    An exception group is cancellation when everything in it is (a cancelled
    trio nursery or asyncio TaskGroup).
    """
    ending = ending_of(error)
    if ending is GROUP:
        members: tuple[BaseException, ...] = getattr(error, "exceptions", ())
        return all(is_cancellation(member) for member in members)
    return ending is CANCELLATION


def is_return(error: BaseException) -> bool:
    """Tell whether *error* is a return in disguise (Twisted's ``returnValue()``)."""
    return ending_of(error) is RETURN


def returned_value(error: BaseException) -> Any:
    """Return the value that a return in disguise carries."""
    return vars(error).get("value")


class ExceptionFilter:
    """Decides which exceptions ``count_exceptions()`` counts.

    With *classes* None, every failure -- neither cancellation nor a return
    in disguise, nor a group of cancellations only; otherwise the
    instances of *classes*, exactly -- cancellation included -- except a
    return in disguise, which never counts.  Calling the filter gives the
    answer for an exception; ``verdicts`` remembers it per exception class
    (except for a group, whose answer depends on its members), so that a
    wrapper can look it up without a call.
    """

    __slots__ = ("classes", "verdicts")

    def __init__(self, classes: tuple[type[BaseException], ...] | None) -> None:
        self.classes = classes
        self.verdicts: dict[type[BaseException], bool] = {}

    def __call__(self, error: BaseException) -> bool:
        verdict = self.verdicts.get(type(error))
        if verdict is not None:
            return verdict
        ending = ending_of(error)
        if self.classes is not None:
            verdict = isinstance(error, self.classes) and ending is not RETURN
        elif ending is GROUP:
            return not is_cancellation(error)
        else:
            verdict = ending is FAILURE
        if len(self.verdicts) < _ENDINGS_KEPT:
            self.verdicts[type(error)] = verdict
        return verdict


FAILURES: Final = ExceptionFilter(None)
"""The default filter: every failure."""


def exception_filter(who: str, exc: object) -> ExceptionFilter:
    """Return the filter of ``exc=``; ``None`` is :data:`FAILURES`.

    An empty tuple counts nothing, as ``isinstance()`` and prometheus-async do.

    Raises:
        TypeError: *exc* is neither None, an exception class, nor a tuple of them.
    """
    if exc is None:
        return FAILURES
    candidates: tuple[object, ...] = exc if isinstance(exc, tuple) else (exc,)  # pyright: ignore[reportUnknownVariableType]
    classes = tuple(c for c in candidates if isinstance(c, type) and issubclass(c, BaseException))
    if len(classes) != len(candidates):
        msg = f"{who}: exc= must be an exception class or a tuple of them, not {exc!r}."
        raise TypeError(msg)
    return ExceptionFilter(classes)
