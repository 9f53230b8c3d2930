"""Writing numbers, label values and names as prometheus_client writes them."""

# prometheus_client's formatting helpers are private: promloop checks it agrees with them.
# ruff: noqa: SLF001
# pyright: reportPrivateUsage=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast

from prometheus_client import utils, validation
from prometheus_client.openmetrics import exposition as om


if TYPE_CHECKING:
    from collections.abc import Callable


# prometheus_client's formatting helpers lack annotations: typed once, here.
escape_metric_name = cast("Callable[[str, str], str]", om.escape_metric_name)
escape_label_name = cast("Callable[[str, str], str]", om.escape_label_name)
escape_name = cast("Callable[[str, str, Callable[[str, int], bool]], str]", om._escape)
legacy_label_rune = cast("Callable[[str, int], bool]", om._is_legacy_labelname_rune)
legacy_metric_name = cast("Callable[[str], bool]", validation._is_valid_legacy_metric_name)
compose_exemplar = cast(
    "Callable[[Any, Any, Any], str]",
    om._compose_exemplar_string,  # pyright: ignore[reportUnknownMemberType]
)
_float_to_go = cast(
    "Callable[[float], str]",
    utils.floatToGoString,  # pyright: ignore[reportUnknownMemberType]
)

ALLOWUTF8: Final[str] = om.ALLOWUTF8

INF: Final = float("inf")
REPR_LIMIT: Final = 1e6
"""Below this (and above -inf), a float's ``repr()`` is what the Go format writes.

From 1e6 on, Go writes an exponent where Python's ``repr()`` does not; the
renderer's loops test this bound inline before calling :func:`go_float`.
"""
_EXPONENT: Final = "e+0{}" if _float_to_go(1e10) == "1e+010" else "e+{:02d}"
"""How the installed prometheus_client writes exponents (0.26 stopped padding 10 and up)."""


def go_float(value: float) -> str:
    """Format *value* as prometheus_client's ``floatToGoString`` does, faster."""
    value = float(value)
    if -INF < value < REPR_LIMIT:  # neither infinite nor NaN, and short enough for repr
        return repr(value)
    whole, dot, fraction = repr(value).partition(".")
    if not dot or "e" in fraction:  # inf, nan, or an exponent already
        return _float_to_go(value)
    # Go writes 1234567.5 as 1.2345675e+06: a mantissa, and an exponent.
    mantissa = f"{whole[0]}.{whole[1:]}{fraction}".rstrip("0").rstrip(".")
    return mantissa + _EXPONENT.format(len(whole) - 1)


def escape_value(value: str) -> str:
    """Escape a label value (or OpenMetrics help text) for both text formats."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


class Named:
    """What the exemplar formatter reads of a sample: its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name
