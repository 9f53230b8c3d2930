"""Public structural types.

promloop duck-types its collaborators: any object with the right methods
works, not only prometheus_client's classes.  These Protocols say which
methods each role needs, for type checkers and for readers.
"""

from __future__ import annotations

import warnings

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeAlias, TypeVar


__all__ = [
    "Deregisterer",
    "ExceptionTypes",
    "ExemplarFactory",
    "InProgressGauge",
    "IncDecrementer",
    "Incrementer",
    "LabelsFactory",
    "ListeningAddress",
    "MetricsServer",
    "Observer",
    "ParamSpec",
    "ServiceDiscovery",
]

# Type variables, exported under the names prometheus_async.types uses.
P = ParamSpec("P")
R = TypeVar("R", bound=Awaitable[Any])
T = TypeVar("T")
C = TypeVar("C", bound=Callable[..., Any])


class Observer(Protocol):
    """A metric that records observed values: a Histogram or a Summary.

    Used by ``time()``.  ``observe`` is called with the duration in seconds,
    and with ``exemplar=`` only when the caller asked for exemplars.
    """

    def observe(self, amount: float, /) -> None:
        """Record *amount*."""


class Incrementer(Protocol):
    """A metric that counts: a Counter.

    Used by ``count_exceptions()``.  ``inc`` is called without arguments, and
    with ``exemplar=`` only when the caller asked for exemplars.
    """

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        """Add *amount*."""


class InProgressGauge(Protocol):
    """A metric that goes up and down: a Gauge.

    Used by ``track_inprogress()``, which calls ``inc()`` when work starts
    and ``dec()`` when it ends, both without arguments.

    .. versionadded:: 26.0.0
    """

    def inc(self, amount: float = 1) -> None:
        """Add *amount*."""

    def dec(self, amount: float = 1) -> None:
        """Subtract *amount*."""


LabelsFactory: TypeAlias = Callable[..., Sequence[str] | Mapping[str, str]]
"""Compute label values from a measured call's arguments.

Returns the values in label-name order, or a mapping from label name to
value.  Called with the arguments exactly as the decorated function receives
them, or with none in the one-awaitable / one-Deferred form.

.. versionadded:: 26.0.0
"""

ExemplarFactory: TypeAlias = Callable[..., dict[str, str] | None]
"""Compute an exemplar (for example ``{"trace_id": "..."}``) for one observation.

Called with the same arguments as a :data:`LabelsFactory`, after the work has
ended; ``None`` means "record this observation without an exemplar".

.. versionadded:: 26.0.0
"""

ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
"""What ``count_exceptions(exc=...)`` accepts: an exception class or a tuple of them.

.. versionadded:: 26.0.0
"""

Deregisterer: TypeAlias = Callable[[], Awaitable[None]]
"""An async callable that removes a registration made by a :class:`ServiceDiscovery`."""


class ListeningAddress(Protocol):
    """Where a server listens: :class:`promloop.aio.web.Socket` is one.

    .. versionadded:: 26.0.0
    """

    @property
    def addr(self) -> str:
        """The address, such as ``"127.0.0.1"``, ``"::1"``, or ``"::"`` for every interface."""
        ...

    @property
    def port(self) -> int:
        """The port."""
        ...


class MetricsServer(Protocol):
    """A running metrics server, as a :class:`ServiceDiscovery` sees it.

    :class:`promloop.aio.web.MetricsHTTPServer` is one.

    .. versionadded:: 26.0.0
    """

    @property
    def socket(self) -> ListeningAddress:
        """The address and port the server listens on."""
        ...

    @property
    def https(self) -> bool:
        """Whether the server speaks TLS."""
        ...

    @property
    def metrics_path(self) -> str:
        """The path the metrics are served under, such as ``/metrics``."""
        ...

    @property
    def protected(self) -> bool:
        """Whether every request must carry credentials (the server has ``auth=``).

        A health check that cannot present them must not ask for a page.
        """
        ...


class ServiceDiscovery(Protocol):
    """Registers a metrics server with a service-discovery system."""

    async def register(self, metrics_server: MetricsServer) -> Deregisterer | None:
        """Register *metrics_server*.

        Returns:
            An async callable that undoes the registration, or None when
            nothing was registered.
        """


if TYPE_CHECKING:
    IncDecrementer = InProgressGauge
    """Deprecated alias of :class:`InProgressGauge`."""


def __getattr__(name: str) -> Any:
    if name == "IncDecrementer":
        warnings.warn(
            "promloop.types.IncDecrementer is deprecated; "
            "use promloop.types.InProgressGauge instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return InProgressGauge

    # prometheus_async.types offers these when Twisted is installed; loading
    # Twisted only when they are asked for keeps this module cheap.
    if name in ("D", "F"):
        from ._optional import import_extra  # noqa: PLC0415 -- only when asked for

        import_extra("twisted", "twisted", needed_by=f"{__name__}.{name}")
        from twisted.internet.defer import Deferred  # noqa: PLC0415
        from twisted.python.failure import Failure  # noqa: PLC0415

        type_vars = {
            "D": TypeVar("D", bound=Deferred[Any]),  # pyright: ignore[reportGeneralTypeIssues]
            "F": TypeVar("F", bound=Failure),  # pyright: ignore[reportGeneralTypeIssues]
        }
        globals().update(type_vars)
        return type_vars[name]

    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
