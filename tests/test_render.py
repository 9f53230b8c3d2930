"""The streaming renderer writes exactly what prometheus_client writes, without its garbage."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import time
import weakref

from typing import Any

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import disable_created_metrics, enable_created_metrics
from prometheus_client.openmetrics import exposition as om
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from promloop import _render
from promloop._render import go_float, render, render_slow


ESCAPINGS = (om.UNDERSCORES, om.ALLOWUTF8, om.DOTS, om.VALUES)
FORMATS = [
    pytest.param(openmetrics, escaping, id=f"{'om' if openmetrics else 'text'}-{escaping}")
    for openmetrics in (False, True)
    for escaping in ESCAPINGS
]


def client_render(registry: Any, openmetrics: bool, escaping: str) -> bytes:
    """Render *registry* with prometheus_client alone."""
    if openmetrics:
        return om.generate_latest(registry, escaping=escaping)  # type: ignore[no-any-return]
    return generate_latest(registry, escaping=escaping)


def assert_same(registry: Any, openmetrics: bool, escaping: str) -> bytes:
    ours = render(registry, openmetrics=openmetrics, escaping=escaping)
    assert ours == client_render(registry, openmetrics, escaping)
    return ours


class TimestampedGauge(Gauge):
    """A subclass whose samples carry timestamps: the fast path leaves it to prometheus_client."""

    def _child_samples(self) -> Any:
        return (Sample("", {}, 1.0, 1700000000.5),)


class ValuelessGauge(Gauge):
    """A subclass that yields a sample without a value."""

    def _child_samples(self) -> Any:
        return (Sample("", {}, None, None),)


class DoubledGauge(Gauge):
    """A subclass that only changes how a child's samples are made: still streamed."""

    def _child_samples(self) -> Any:
        return (Sample("", {}, self._value.get() * 2, None),)


class Custom:
    """A custom collector, mixed in among streamed metrics."""

    def collect(self) -> Any:
        gauge = GaugeMetricFamily("custom_gauge", "Custom.", labels=["k"])
        gauge.add_metric(["v"], 7)
        histogram = HistogramMetricFamily("custom_hist", "Custom histogram.", labels=["k"])
        histogram.add_metric(["v"], [("1.0", 1), ("+Inf", 2)], sum_value=3)
        return [gauge, histogram]

    def describe(self) -> Any:
        return self.collect()


def rich_registry(**options: Any) -> CollectorRegistry:
    """Every metric kind, tricky names and values, and collectors the fast path delegates."""
    registry = _render._probe_registry()
    Counter("has:colon", "Colon in a name.", ["l"], registry=registry).labels("v").inc()
    Gauge("dotted.name", "A UTF-8 name.", ["label.dot", "plain"], registry=registry).labels(
        "a", "b"
    ).set(1)
    Histogram("dotted.histogram", "UTF-8 histogram.", ["x"], registry=registry).labels("1").observe(
        1
    )
    Summary("üñí", "Unicode name.", registry=registry).observe(1)
    Enum("dotted.enum", "UTF-8 enum.", states=["a", "b"], registry=registry)
    Info("dotted.info", "UTF-8 info.", registry=registry).info({"k.x": "v"})
    TimestampedGauge("stamped", "Timestamps.", registry=registry)
    DoubledGauge("doubled", "Doubled.", ["x"], registry=registry).labels("y").set(2)
    registry.register(Custom())
    if options.get("target_info"):
        registry.set_target_info({"service": "api", "quote": '"'})
    return registry


@pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
def test_same_bytes_as_prometheus_client(openmetrics: bool, escaping: str) -> None:
    ours = assert_same(rich_registry(target_info=True), openmetrics, escaping)
    assert b"doubled" in ours  # the subclass is there, from the fast path
    assert b"stamped" in ours  # delegated, from prometheus_client


@pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
def test_without_created_samples(openmetrics: bool, escaping: str) -> None:
    disable_created_metrics()
    try:
        ours = assert_same(rich_registry(), openmetrics, escaping)
    finally:
        enable_created_metrics()
    assert b"_created" not in ours


def test_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the collectors that need it are rendered by prometheus_client."""
    delegated: list[str] = []
    original = _render._render_collector

    def spy(collector: Any, *args: Any) -> str:
        delegated.append(type(collector).__name__)
        return original(collector, *args)

    monkeypatch.setattr(_render, "_render_collector", spy)
    render(rich_registry(), openmetrics=True, escaping=om.UNDERSCORES)
    assert sorted(delegated) == ["Custom", "TimestampedGauge"]


def test_sample_without_a_value() -> None:
    """OpenMetrics writes it without a value; the text format fails, as prometheus_client does."""
    registry = CollectorRegistry()
    ValuelessGauge("valueless", "No value.", ["x"], registry=registry).labels("y")
    assert b'valueless{x="y"} \n' in assert_same(registry, True, om.UNDERSCORES)
    with pytest.raises(TypeError, match="float"):
        render(registry, openmetrics=False, escaping=om.UNDERSCORES)


def test_empty_registry() -> None:
    assert render(CollectorRegistry(), openmetrics=False, escaping=om.UNDERSCORES) == b""
    assert render(CollectorRegistry(), openmetrics=True, escaping=om.UNDERSCORES) == b"# EOF\n"


label_values = st.text(st.characters(codec="utf-8"), max_size=12)
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    series=st.lists(st.tuples(label_values, label_values, values), max_size=20),
    openmetrics=st.booleans(),
    escaping=st.sampled_from(ESCAPINGS),
)
def test_any_labels_and_values(
    series: list[tuple[str, str, float]], openmetrics: bool, escaping: str
) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("g", "Gauge.", ["zeta", "alpha"], registry=registry)
    counter = Counter("c", "Counter.", ["zeta", "alpha"], registry=registry)
    histogram = Histogram("h", "Histogram.", ["zeta", "alpha"], registry=registry)
    for first, second, value in series:
        gauge.labels(first, second).set(value)
        counter.labels(first, second).inc(abs(value) if value == value else 0)  # noqa: PLR0124
        histogram.labels(first, second).observe(value)
    assert_same(registry, openmetrics, escaping)


@settings(max_examples=2000)
@given(st.floats() | st.integers(-(2**70), 2**70))
def test_go_float(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


@pytest.mark.parametrize(
    "value", [1e6, 1234567.5, 1e15, 1500000000000000.0, 1e16, 1e22, float("inf"), -1e7, 5e-324]
)
def test_go_float_edges(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


NAME_SETS = [
    {"probe_events_total"},
    {"probe_events_created"},
    {"probe_latency_bucket", "probe_latency_sum"},
    {"probe_state", "custom_gauge", "custom_hist_bucket"},
    {"target_info"},
    {"stamped", "doubled"},
    {"nothing_like_it"},
    {"probe_empty"},
]


@pytest.mark.parametrize("names", NAME_SETS, ids=lambda names: ",".join(sorted(names)))
@pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS[:1] + FORMATS[4:5])
def test_names(openmetrics: bool, escaping: str, names: set[str]) -> None:
    """A filtered render keeps the chosen samples, each family whole, in registration order."""
    registry = rich_registry(target_info=True)
    names_ = frozenset(names)
    ours = render(registry, openmetrics=openmetrics, escaping=escaping, names=names_)
    assert ours == render_slow(registry, openmetrics, escaping, names_)
    # The same lines as prometheus_client's restricted registry, whose order is a set's.
    theirs = client_render(registry.restricted_registry(names), openmetrics, escaping)
    assert sorted(_without_units(ours)) == sorted(_without_units(theirs))


def _without_units(data: bytes) -> list[bytes]:
    """prometheus_client's restricted registry drops UNIT lines; promloop keeps them."""
    return [line for line in data.splitlines() if not line.startswith(b"# UNIT ")]


def test_names_keep_units() -> None:
    registry = CollectorRegistry()
    Counter("sent_bytes", "Sent.", unit="bytes", registry=registry).inc()
    ours = render(
        registry, openmetrics=True, escaping=om.UNDERSCORES, names=frozenset({"sent_bytes_total"})
    )
    assert b"# UNIT sent_bytes bytes\n" in ours


def test_names_on_a_plain_collector() -> None:
    """Any object with collect() is rendered, and filtered, by prometheus_client's formatter."""
    ours = render(
        Custom(), openmetrics=False, escaping=om.UNDERSCORES, names=frozenset({"custom_gauge"})
    )
    assert ours == (
        b'# HELP custom_gauge Custom.\n# TYPE custom_gauge gauge\ncustom_gauge{k="v"} 7.0\n'
    )
    assert render(Custom(), openmetrics=False, escaping=om.UNDERSCORES) == generate_latest(Custom())  # type: ignore[arg-type]


def test_subclassed_registry_collect_is_respected() -> None:
    class Reversed(CollectorRegistry):
        def collect(self) -> Any:
            return reversed(list(super().collect()))

    registry = Reversed()
    Gauge("first", "First.", registry=registry)
    Gauge("second", "Second.", registry=registry)
    ours = render(registry, openmetrics=False, escaping=om.UNDERSCORES)
    assert ours == generate_latest(registry)
    assert ours.index(b"second") < ours.index(b"first")


def _collections_during(action: Any) -> int:
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        action()
    finally:
        gc.callbacks.remove(count)
    return len(seen)


def test_rendering_leaves_the_garbage_collector_asleep() -> None:
    """prometheus_client keeps every sample of a family alive at once; promloop, one child's."""
    registry = CollectorRegistry()
    gauge = Gauge("many", "Many series.", ["id"], registry=registry)
    for i in range(20_000):
        gauge.labels(str(i)).set(i)
    render(registry, openmetrics=False, escaping=om.UNDERSCORES)  # the family's spec, once

    ours = _collections_during(lambda: render(registry, openmetrics=False, escaping=om.UNDERSCORES))
    theirs = _collections_during(lambda: generate_latest(registry))
    assert ours <= 1  # none, measured on Python 3.10 to 3.13
    assert theirs >= 10  # 57 on Python 3.10 to 3.12; 20 on 3.13, whose collector counts otherwise


def test_pauses_let_other_threads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every WORK_SECONDS the render sleeps, handing the GIL to whoever waits for it."""
    pauses: list[float] = []
    monkeypatch.setattr(_render, "WORK_SECONDS", 0.0)
    monkeypatch.setattr(_render.time, "sleep", pauses.append)
    registry = CollectorRegistry()
    gauge = Gauge("paced", "Paced.", ["id"], registry=registry)
    for i in range(1000):
        gauge.labels(str(i)).set(i)
    render(registry, openmetrics=False, escaping=om.UNDERSCORES)
    assert len(pauses) >= 1000 // _render._PACE_EVERY
    assert set(pauses) == {_render.PAUSE_SECONDS}


def test_registry_changing_while_rendered() -> None:
    """Children added and removed mid-render never break it: each family is read under its lock."""
    registry = CollectorRegistry()
    gauge = Gauge("churn", "Churn.", ["id"], registry=registry)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            gauge.labels(str(i % 5000)).set(i)
            if i % 3 == 0:
                gauge.remove(str((i // 3) % 5000))
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            render(registry, openmetrics=True, escaping=om.UNDERSCORES)
    finally:
        stop.set()
        thread.join()


def test_disagreement_hands_rendering_to_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Were a future prometheus_client to write otherwise, promloop would notice and step aside."""
    monkeypatch.setattr(_render, "_render_fast", lambda *_: b"# something else\n")
    _render._agrees_with_prometheus_client.cache_clear()
    try:
        registry = rich_registry()
        with caplog.at_level(logging.WARNING, logger="promloop"):
            assert render(registry, openmetrics=False, escaping=om.UNDERSCORES) == generate_latest(
                registry
            )
    finally:
        _render._agrees_with_prometheus_client.cache_clear()
    assert "disagrees with prometheus_client" in caplog.text


def test_cached_specs_do_not_keep_metrics_alive() -> None:
    """What the renderer remembers of a family goes when the metric goes."""
    registry = CollectorRegistry()
    gauge = Gauge("short_lived", "Short-lived.", ["k"], registry=registry)
    gauge.labels("v").set(1)
    render(registry, openmetrics=True, escaping=om.UNDERSCORES)
    gone = weakref.ref(gauge)
    assert gauge in _render._specs
    registry.unregister(gauge)
    del gauge
    gc.collect()
    assert gone() is None


class TupleGauge(Gauge):
    """A subclass whose samples are plain tuples, as prometheus_client's collect() accepts."""

    def _child_samples(self) -> Any:
        return (("", {}, self._value.get(), None, None, None),)


class ShadowingGauge(Gauge):
    """A subclass whose sample repeats a series label: in prometheus_client, the sample's wins."""

    def _child_samples(self) -> Any:
        return (Sample("", {"a": "inner"}, 1.0, None, None),)


def odd_registry() -> CollectorRegistry:
    """Build metrics that prometheus_client accepts and a naive streamer gets wrong."""
    registry = CollectorRegistry()
    Counter("twice", "A label name twice.", ["a", "a"], registry=registry).labels("x", "y").inc()
    ShadowingGauge("shadowed", "Shadowed.", ["a", "b"], registry=registry).labels("outer", "b")
    TupleGauge("tuples", "Plain tuples.", ["a"], registry=registry).labels("x").set(3)
    lone = Counter("lone", "A child registered on its own.", ["a"], registry=None).labels("x")
    lone.inc()
    registry.register(lone)
    Info("many_keys", "Info with many keys.", registry=registry).info(
        {f"key{i}": str(i) for i in range(2 * _render._LABEL_HEADS_KEPT)}
    )
    return registry


@pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
def test_odd_but_accepted_metrics(openmetrics: bool, escaping: str) -> None:
    ours = assert_same(odd_registry(), openmetrics, escaping)
    if escaping not in (om.UNDERSCORES, om.ALLOWUTF8):
        return  # the other escapings rewrite these legacy names too
    assert b'twice_total{a="y"} 1.0\n' in ours
    assert b'shadowed{a="inner",b="b"} 1.0\n' in ours
    assert b'tuples{a="x"} 3.0\n' in ours
    assert b"lone_total 1.0\n" in ours


def test_label_names_remembered_are_bounded() -> None:
    registry = odd_registry()
    render(registry, openmetrics=False, escaping=om.UNDERSCORES)
    [info] = [c for c in registry._collector_to_names if isinstance(c, Info)]
    spec = _render._spec(info, False, om.UNDERSCORES)
    assert len(spec._label_heads) == _render._LABEL_HEADS_KEPT


MULTIPROCESS_APP = """
import sys
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from promloop._render import render

Counter("jobs", "Jobs.").inc(3)  # a metric of the application, in the shared files
registry = CollectorRegistry()
MultiProcessCollector(registry)
Counter("direct", "Registered directly.", registry=registry).inc()
ours = render(registry, openmetrics=False, escaping="underscores")
assert ours == generate_latest(registry), (ours, generate_latest(registry))
sys.stdout.buffer.write(ours)
"""


def test_multiprocess_mode_leaves_the_shared_files_alone(tmp_path: Any) -> None:
    """In multiprocess mode no probe metric is written to the files every process reads."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_APP],
        env=environment,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert b"jobs_total 3.0\n" in ran.stdout
    assert b"direct_total 1.0\n" in ran.stdout
    assert b"probe" not in ran.stdout
    [written] = tmp_path.iterdir()  # the application's counter, and nothing of promloop's
    assert written.name.startswith("counter_")
