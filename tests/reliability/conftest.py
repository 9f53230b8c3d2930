"""The reliability suite: tests that attack promloop and report a figure each.

Every test here is marked ``reliability`` and records what it measured with
the ``figure`` fixture; the figures are printed at the end of the run and,
with ``PROMLOOP_FIGURES=path.json``, written to a file (docs/reliability.md
shows the latest ones).  ``PROMLOOP_RELIABILITY=long`` runs the long form:
more cycles, more load, longer soaks.
"""

from __future__ import annotations

import json
import os

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .resources import LONG, Figure


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


_FIGURES: list[Figure] = []
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """Record a measured figure of this test: ``figure("fd growth", 0, "fds")``."""
    recorded: list[Figure] = []

    def record(name: str, value: float, unit: str = "", **context: Any) -> None:
        recorded.append(Figure(request.node.nodeid, name, value, unit, context))

    yield record
    _FIGURES.extend(recorded)
    report = getattr(request.node, "outcome_of_call", None)
    if report is not None and report.passed:
        # A reliability test that measured nothing has nothing to show for itself.
        assert recorded, f"{request.node.nodeid} recorded no figure"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.outcome_of_call = report  # type: ignore[attr-defined]  # read by figure()
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    form = "long" if LONG else "short"
    terminalreporter.section(f"reliability figures ({form} form)")
    for entry in _FIGURES:
        terminalreporter.write_line(entry.line())
    destination = os.environ.get("PROMLOOP_FIGURES")
    if destination:
        Path(destination).write_text(
            json.dumps({"form": form, "figures": [f.as_json() for f in _FIGURES]}, indent=1)
        )
