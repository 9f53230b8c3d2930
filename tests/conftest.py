"""Fakes for promloop's Protocols and a deterministic clock."""

from __future__ import annotations

import itertools

import pytest

from prometheus_client import CollectorRegistry


class FakeObserver:
    """An Observer that records what it is given, and accepts nothing else."""

    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, value: float, /) -> None:
        self.observed.append(value)


class FakeCounter:
    """An Incrementer whose inc() takes no arguments at all."""

    def __init__(self) -> None:
        self.count = 0

    def inc(self) -> None:
        self.count += 1


class FakeGauge:
    """A gauge that remembers its highest value, so a test sees it went up."""

    def __init__(self) -> None:
        self.value = 0
        self.highest = 0

    def inc(self) -> None:
        self.value += 1
        self.highest = max(self.highest, self.value)

    def dec(self) -> None:
        self.value -= 1


class CountingClock:
    """A perf_counter replacement returning 1, 2, 3, ...: every duration is exact."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return float(next(self._ticks))


@pytest.fixture
def observer() -> FakeObserver:
    return FakeObserver()


@pytest.fixture
def counter() -> FakeCounter:
    return FakeCounter()


@pytest.fixture
def gauge() -> FakeGauge:
    return FakeGauge()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> CountingClock:
    """Patch the clock of both decorator modules, as prometheus-async's tests do."""
    fake = CountingClock()
    monkeypatch.setattr("promloop.aio._decorators.perf_counter", fake)
    try:
        import promloop.tx._decorators  # noqa: F401
    except ImportError:
        pass
    else:
        monkeypatch.setattr("promloop.tx._decorators.perf_counter", fake)
    return fake
