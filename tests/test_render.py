"""The renderer writes exactly what prometheus_client writes, faster and without its garbage."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import re
import subprocess
import sys
import types
import weakref

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

from promloop._render import (
    escape_value,
    families,
    go_float,
    pacing,
    pieces,
    render,
    render_pieces,
    render_slow,
    self_check,
    streaming,
)


ESCAPINGS = (om.UNDERSCORES, om.ALLOWUTF8, om.DOTS, om.VALUES)
FORMATS = [
    pytest.param(openmetrics, escaping, id=f"{'om' if openmetrics else 'text'}-{escaping}")
    for openmetrics in (False, True)
    for escaping in ESCAPINGS
]
TEXT = {"openmetrics": False, "escaping": om.UNDERSCORES}
OPENMETRICS = {"openmetrics": True, "escaping": om.UNDERSCORES}


def client_render(registry, openmetrics, escaping):
    """Render *registry* with prometheus_client alone."""
    if openmetrics:
        return om.generate_latest(registry, escaping=escaping)
    return generate_latest(registry, escaping=escaping)


def assert_same(registry, openmetrics, escaping, **options):
    """Render with promloop, check prometheus_client writes the same, return the bytes."""
    ours = render(registry, openmetrics=openmetrics, escaping=escaping, **options)
    assert client_render(registry, openmetrics, escaping) == ours
    return ours


class TimestampedGauge(Gauge):
    """A subclass whose samples carry timestamps: prometheus_client renders it."""

    def _child_samples(self):
        return (Sample("", {}, 1.0, 1700000000.5),)


class ValuelessGauge(Gauge):
    """A subclass that yields a sample without a value."""

    def _child_samples(self):
        return (Sample("", {}, None, None),)


class DoubledGauge(Gauge):
    """A subclass that only changes how a child's samples are made: still streamed."""

    def _child_samples(self):
        return (Sample("", {}, self._value.get() * 2, None),)


class ExemplaryCounter(Counter):
    """A subclass whose samples it makes itself, an exemplar included."""

    def _child_samples(self):
        exemplar = self._value.get_exemplar()
        return (Sample("_total", {}, self._value.get(), None, exemplar),)


class TupleGauge(Gauge):
    """A subclass whose samples are plain tuples, as prometheus_client's collect() accepts."""

    def _child_samples(self):
        return (("", {}, self._value.get(), None, None, None),)


class ShadowingGauge(Gauge):
    """A subclass whose sample repeats a series label: in prometheus_client, the sample's wins."""

    def _child_samples(self):
        return (Sample("", {"a": "inner"}, 1.0, None, None),)


class Custom:
    """A custom collector, mixed in among streamed metrics."""

    def collect(self):
        gauge = GaugeMetricFamily("custom_gauge", "Custom.", labels=["k"])
        gauge.add_metric(["v"], 7)
        histogram = HistogramMetricFamily("custom_hist", "Custom histogram.", labels=["k"])
        histogram.add_metric(["v"], [("1.0", 1), ("+Inf", 2)], sum_value=3)
        return [gauge, histogram]

    def describe(self):
        return self.collect()


def rich_registry(target_info=False):
    """Every metric kind, tricky names and values, and collectors prometheus_client renders."""
    registry = self_check.probe_registry()
    Counter("has:colon", "Colon in a name.", ["l"], registry=registry).labels("v").inc()
    Gauge("dotted.name", "A UTF-8 name.", ["label.dot", "plain"], registry=registry).labels(
        "a", "b"
    ).set(1)
    Histogram("dotted.histogram", "UTF-8 histogram.", ["x"], registry=registry).labels("1").observe(
        1
    )
    Histogram("childless_seconds", "A histogram without children.", ["x"], registry=registry)
    Summary("üñí", "Unicode name.", registry=registry).observe(1)
    Enum("dotted.enum", "UTF-8 enum.", states=["a", "b"], registry=registry)
    Info("dotted.info", "UTF-8 info.", registry=registry).info({"k.x": "v"})
    TimestampedGauge("stamped", "Timestamps.", registry=registry)
    DoubledGauge("doubled", "Doubled.", ["x"], registry=registry).labels("y").set(2)
    ExemplaryCounter("exemplary", "Exemplary.", ["x"], registry=registry).labels("y").inc(
        3, exemplar={"trace": "t"}
    )
    registry.register(Custom())
    if target_info:
        registry.set_target_info({"service": "api", "quote": '"'})
    return registry


def odd_registry():
    """Build metrics that prometheus_client accepts and a naive streamer gets wrong."""
    registry = CollectorRegistry()
    Counter("twice", "A label name twice.", ["a", "a"], registry=registry).labels("x", "y").inc()
    ShadowingGauge("shadowed", "Shadowed.", ["a", "b"], registry=registry).labels("outer", "b")
    TupleGauge("tuples", "Plain tuples.", ["a"], registry=registry).labels("x").set(3)
    lone = Counter("lone", "A child registered on its own.", ["a"], registry=None).labels("x")
    lone.inc()
    registry.register(lone)
    Info("many_keys", "Info with many keys.", registry=registry).info(
        {f"key{i}": str(i) for i in range(2 * families._LABEL_HEADS_KEPT)}
    )
    return registry


def many(kind, count, registry=None, **options):
    """Register a metric of *kind* with *count* children, labelled by number."""
    registry = CollectorRegistry() if registry is None else registry
    metric = kind(f"many_{kind.__name__.lower()}", "Many children.", ["id"], registry=registry)
    for i in range(count):
        child = metric.labels(str(i))
        if kind is Histogram:
            child.observe(i / 7, **options)
        elif kind is Summary:
            child.observe(i)
        else:
            child.inc(i, **options)
    return registry, metric


class TestRender:
    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_same_bytes_as_prometheus_client(self, openmetrics, escaping):
        """Every kind, name, value and collector is written as prometheus_client writes it."""
        ours = assert_same(rich_registry(target_info=True), openmetrics, escaping)

        assert b"doubled" in ours  # the subclass is there, streamed
        assert b"stamped" in ours  # rendered by prometheus_client

    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_same_bytes_twice(self, openmetrics, escaping):
        """The second render, from each child's remembered heads, writes the same bytes."""
        registry = rich_registry(target_info=True)
        first = assert_same(registry, openmetrics, escaping)

        assert first == assert_same(registry, openmetrics, escaping)

    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_without_created_samples(self, openmetrics, escaping):
        """prometheus_client's process-wide switch leaves out _created, and so does promloop."""
        registry = rich_registry()
        render(registry, openmetrics=openmetrics, escaping=escaping)  # heads with _created
        disable_created_metrics()
        try:
            ours = assert_same(registry, openmetrics, escaping)
        finally:
            enable_created_metrics()

        assert b"_created" not in ours

    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_created_false(self, openmetrics, escaping):
        """created=False writes what the process-wide switch writes, for this render alone."""
        registry = rich_registry()
        disable_created_metrics()
        try:
            expected = client_render(registry, openmetrics, escaping)
        finally:
            enable_created_metrics()

        ours = render(registry, openmetrics=openmetrics, escaping=escaping, created=False)

        assert expected == ours
        assert b"_created" in render(registry, openmetrics=openmetrics, escaping=escaping)

    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_odd_but_accepted_metrics(self, openmetrics, escaping):
        """Repeated label names, shadowing samples, tuples and lone children agree too."""
        ours = assert_same(odd_registry(), openmetrics, escaping)

        if escaping in (om.UNDERSCORES, om.ALLOWUTF8):  # the others rewrite legacy names too
            assert b'twice_total{a="y"} 1.0\n' in ours
            assert b'shadowed{a="inner",b="b"} 1.0\n' in ours
            assert b'tuples{a="x"} 3.0\n' in ours
            assert b"lone_total 1.0\n" in ours

    def test_sample_without_a_value(self):
        """OpenMetrics writes no value; the text format fails, as prometheus_client does."""
        registry = CollectorRegistry()
        ValuelessGauge("valueless", "No value.", ["x"], registry=registry).labels("y")

        assert b'valueless{x="y"} \n' in assert_same(registry, True, om.UNDERSCORES)
        with pytest.raises(TypeError, match="float"):
            render(registry, **TEXT)

    def test_empty_registry(self):
        """Nothing at all in the text format; only the end marker in OpenMetrics."""
        assert b"" == render(CollectorRegistry(), **TEXT)
        assert b"# EOF\n" == render(CollectorRegistry(), **OPENMETRICS)

    def test_any_object_with_collect(self):
        """Any collector is rendered by prometheus_client's formatter."""
        assert generate_latest(Custom()) == render(Custom(), **TEXT)

    def test_subclassed_registry_collect_is_respected(self):
        """A registry subclass that collects otherwise is rendered through its collect()."""

        class Reversed(CollectorRegistry):
            def collect(self):
                return reversed(list(super().collect()))

        registry = Reversed()
        Gauge("first", "First.", registry=registry)
        Gauge("second", "Second.", registry=registry)

        ours = render(registry, **TEXT)

        assert generate_latest(registry) == ours
        assert ours.index(b"second") < ours.index(b"first")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        series=st.lists(
            st.tuples(
                st.text(st.characters(codec="utf-8"), max_size=12),
                st.text(st.characters(codec="utf-8"), max_size=12),
                st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60),
            ),
            max_size=20,
        ),
        openmetrics=st.booleans(),
        escaping=st.sampled_from(ESCAPINGS),
    )
    def test_any_labels_and_values(self, series, openmetrics, escaping):
        """Any label values and any numbers, in every kind, agree with prometheus_client."""
        registry = CollectorRegistry()
        gauge = Gauge("g", "Gauge.", ["zeta", "alpha"], registry=registry)
        counter = Counter("c", "Counter.", ["zeta", "alpha"], registry=registry)
        summary = Summary("s", "Summary.", ["zeta", "alpha"], registry=registry)
        histogram = Histogram("h", "Histogram.", ["zeta", "alpha"], registry=registry)
        for first, second, value in series:
            gauge.labels(first, second).set(value)
            counter.labels(first, second).inc(abs(value) if value == value else 0)  # noqa: PLR0124
            summary.labels(first, second).observe(value)
            histogram.labels(first, second).observe(value)

        assert_same(registry, openmetrics, escaping)
        assert_same(registry, openmetrics, escaping)  # from the remembered heads


class TestRenderPieces:
    @pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "om"])
    def test_joined_they_are_the_render(self, openmetrics):
        """A large registry comes in a few pieces that join into prometheus_client's bytes."""
        registry = rich_registry()
        many(Gauge, 5000, registry)
        many(Histogram, 500, registry)

        found = render_pieces(registry, openmetrics=openmetrics, escaping=om.UNDERSCORES)

        joined = b"".join(found)
        assert client_render(registry, openmetrics, om.UNDERSCORES) == joined
        assert 4 < len(found) <= 2 * len(joined) // pieces.PIECE_BYTES + 1  # no crowd of small ones

    def test_prometheus_client_renders_in_one_piece(self):
        """What prometheus_client renders alone (any collector) is one piece."""
        assert [generate_latest(Custom())] == render_pieces(Custom(), **TEXT)

    def test_nothing_no_piece(self):
        """An empty registry renders no piece at all in the text format."""
        assert [] == render_pieces(CollectorRegistry(), **TEXT)


class TestPieces:
    def test_small_gathered(self):
        """Small bytes are gathered into pieces of at least PIECE_BYTES, in order."""
        gathered = pieces.Pieces()
        small = [bytes([i % 256]) * 1000 for i in range(150)]

        for data in small:
            gathered.add(data)
        found = gathered.done()

        assert b"".join(small) == b"".join(found)
        assert [66000, 66000, 18000] == [len(piece) for piece in found]

    def test_large_kept_whole(self, monkeypatch):
        """Bytes as large as a piece become one, the very object: copied into no other."""
        gathered = pieces.Pieces()
        large = b"x" * pieces.PIECE_BYTES

        gathered.add(b"a")
        gathered.add(large)
        gathered.add(b"")
        gathered.add(b"b")

        found = gathered.done()
        assert [b"a", large, b"b"] == found
        assert large is found[1]

    def test_nothing(self):
        """Nothing added, no piece."""
        assert [] == pieces.Pieces().done()


class TestFallback:
    def test_only_what_needs_it_goes_to_prometheus_client(self, monkeypatch):
        """prometheus_client renders only the collectors the streaming path does not read."""
        delegated = []
        original = streaming.render_collector

        def spy(collector, *args):
            delegated.append(type(collector).__name__)
            return original(collector, *args)

        monkeypatch.setattr(streaming, "render_collector", spy)

        render(rich_registry(), **OPENMETRICS)

        assert ["Custom", "TimestampedGauge"] == sorted(delegated)

    def test_a_value_that_is_not_prometheus_clients(self):
        """A child whose value object is not prometheus_client's own is rendered by it."""

        class Value:
            def get(self):
                return 5.0

        registry = CollectorRegistry()
        gauge = Gauge("replaced", "Replaced value.", ["x"], registry=registry)
        gauge.labels("a").set(1)
        gauge.labels("b")._value = Value()

        assert b'replaced{x="b"} 5.0\n' in assert_same(registry, False, om.UNDERSCORES)

    def test_a_family_changed_without_its_lock(self, monkeypatch):
        """prometheus_client renders a family changed behind its lock's back while listed."""
        registry, counter = many(Counter, 10)
        intruder = Counter("many_counter", "Many children.", ["id"], registry=None).labels("x")
        pauses = []

        def intrude(seconds):
            pauses.append(seconds)
            if len(pauses) == 2:  # the first pause comes before the family, the second in it
                counter._metrics[("x",)] = intruder

        monkeypatch.setattr(streaming, "_LIST_SLICE", 4)
        monkeypatch.setattr(pacing, "WORK_SECONDS", 0.0)
        monkeypatch.setattr(pacing.time, "sleep", intrude)
        delegated = []
        original = streaming.render_collector
        monkeypatch.setattr(
            streaming, "render_collector", lambda *args: delegated.append(1) or original(*args)
        )

        ours = render(registry, **TEXT)

        assert [1] == delegated
        assert b'many_counter_total{id="x"} 0.0\n' in ours
        assert generate_latest(registry) == ours


class TestLineHeads:
    def test_kept_on_each_child(self):
        """A child keeps one head per line it writes, and its _created line."""
        registry, histogram = many(Histogram, 1)
        render(registry, **TEXT)

        entry = getattr(histogram.labels("0"), families.HEADS_ATTRIBUTE)

        heads = entry[2:-2]
        assert next(iter(histogram._metrics)) is entry[1]  # the very key it was found under
        assert len(histogram._upper_bounds) + 3 == len(heads)
        assert 'many_histogram_bucket{id="0",le="0.005"} ' == heads[0]
        assert 'many_histogram_created{id="0"} ' == heads[-1]
        assert histogram.labels("0")._created is entry[-2]
        assert entry[-1].startswith(heads[-1] + "1.")

    @pytest.mark.parametrize("kind", [Gauge, Counter, Summary, Histogram])
    def test_reused(self, kind, monkeypatch):
        """The second render builds no head, for any kind."""
        registry, _ = many(kind, 50)
        render(registry, **TEXT)
        monkeypatch.setattr(
            families.FamilyFormat, "remember_heads", lambda *args: pytest.fail("built")
        )

        assert_same(registry, False, om.UNDERSCORES)

    def test_shared_by_formats_that_write_alike(self, monkeypatch):
        """The text format and OpenMetrics share heads where names are written alike."""
        registry, _ = many(Counter, 5)
        render(registry, **TEXT)
        monkeypatch.setattr(
            families.FamilyFormat, "remember_heads", lambda *args: pytest.fail("built")
        )

        assert_same(registry, True, om.UNDERSCORES)

    def test_formats_that_write_otherwise(self):
        """Escapings that write names otherwise never read each other's heads."""
        registry = CollectorRegistry()
        Gauge("under_scored", "Underscores.", ["label_name"], registry=registry).labels("v").set(1)

        for _ in range(2):
            for escaping in ESCAPINGS:
                assert_same(registry, False, escaping)
                assert_same(registry, True, escaping)

    def test_values_change_heads_stay(self):
        """New values are written, with the same heads, at every render."""
        registry, gauge = many(Gauge, 100)
        render(registry, **TEXT)

        for i in range(100):
            gauge.labels(str(i)).set(i * 1e6 + 0.5)

        ours = assert_same(registry, False, om.UNDERSCORES)
        assert b'many_gauge{id="99"} 9.90000005e+07\n' in ours

    def test_large_bucket_counts(self):
        """Bucket counts of a million and more are written in Go's exponent form."""
        registry, histogram = many(Histogram, 2)
        render(registry, **TEXT)

        histogram.labels("1")._buckets[0].inc(2_500_000)

        ours = assert_same(registry, False, om.UNDERSCORES)
        assert b'many_histogram_bucket{id="1",le="0.005"} 2.5e+06\n' in ours

    def test_removed_and_added_again(self):
        """A child removed and added again is written with its new value, once."""
        registry, counter = many(Counter, 3)
        render(registry, **TEXT)

        counter.remove("1")
        assert b'id="1"' not in assert_same(registry, False, om.UNDERSCORES)
        counter.labels("1").inc(42)

        ours = assert_same(registry, False, om.UNDERSCORES)
        assert 1 == ours.count(b'many_counter_total{id="1"} 42.0\n')

    def test_cleared(self):
        """After clear(), only the children added since are written."""
        registry, gauge = many(Gauge, 10)
        render(registry, **OPENMETRICS)

        gauge.clear()
        assert b"# EOF\n" == assert_same(registry, True, om.UNDERSCORES).split(b"gauge\n")[-1]
        gauge.labels("7").set(-1)

        assert assert_same(registry, True, om.UNDERSCORES).endswith(
            b'many_gauge{id="7"} -1.0\n# EOF\n'
        )

    def test_a_child_moved_to_other_label_values(self):
        """A child found under other label values (a private change) is written with those."""
        registry, gauge = many(Gauge, 2)
        render(registry, **TEXT)

        with gauge._lock:
            gauge._metrics = {("moved",): gauge._metrics[("0",)]}

        assert b'many_gauge{id="moved"} 0.0\n' in assert_same(registry, False, om.UNDERSCORES)

    def test_a_family_renamed_and_relabelled(self):
        """A family renamed or relabelled (a private change) is written with the new names."""
        registry = CollectorRegistry()
        gauge = Gauge("before", "Before.", ["b", "a"], registry=registry)
        gauge.labels("1", "2").set(3)
        render(registry, **TEXT)

        gauge._labelnames = ("a", "b")
        assert b'before{a="1",b="2"} 3.0\n' in assert_same(registry, False, om.UNDERSCORES)
        gauge._name = "after"
        assert b'after{a="1",b="2"} 3.0\n' in assert_same(registry, False, om.UNDERSCORES)

    def test_changed_info_labels(self):
        """Info's labels are its value: a new value is written at once."""
        registry = CollectorRegistry()
        info = Info("build", "Build.", ["host"], registry=registry)
        info.labels("h").info({"version": "1"})
        render(registry, **TEXT)

        info.labels("h").info({"version": "2"})

        assert b'version="2"' in assert_same(registry, False, om.UNDERSCORES)

    def test_reset_counter(self):
        """Counter.reset() sets a new _created time, and it is written."""
        registry, counter = many(Counter, 1)
        render(registry, **TEXT)
        child = counter.labels("0")
        before = getattr(child, families.HEADS_ATTRIBUTE)[-1]

        child.reset()
        child._created += 1  # the clock may not have moved since

        ours = assert_same(registry, False, om.UNDERSCORES)
        assert before.encode() not in ours
        assert getattr(child, families.HEADS_ATTRIBUTE)[-1].encode() in ours

    def test_replaced_samples_on_one_child(self):
        """A child whose _child_samples the instance replaces is written through it."""
        registry = CollectorRegistry()
        for kind in (Gauge, Counter, Summary, Histogram):
            _, metric = many(kind, 2, registry)
            child = metric.labels("1")
            child._child_samples = types.MethodType(
                lambda _: (Sample("_extra", {}, 8.0, None),), child
            )

        for _ in range(2):
            ours = assert_same(registry, False, om.UNDERSCORES)
        assert b'many_gauge_extra{id="1"} 8.0\n' in ours
        assert b'many_histogram_extra{id="1"} 8.0\n' in ours

    def test_released_with_the_child(self):
        """A removed child takes its heads with it."""
        registry, gauge = many(Gauge, 2)
        render(registry, **TEXT)
        gone = weakref.ref(gauge.labels("1"))

        gauge.remove("1")
        gc.collect()

        assert gone() is None

    def test_released_with_the_metric(self):
        """What the renderer remembers of a family goes when the metric goes."""
        registry, gauge = many(Gauge, 1)
        render(registry, **OPENMETRICS)
        gone = weakref.ref(gauge)
        assert gauge in families._remembered

        registry.unregister(gauge)
        del gauge
        gc.collect()

        assert gone() is None

    def test_label_names_remembered_are_bounded(self):
        """A family remembers only so many of the label names its samples add."""
        registry = odd_registry()
        render(registry, **TEXT)
        [info] = [c for c in registry._collector_to_names if isinstance(c, Info)]

        family = families.family_format(info, False, om.UNDERSCORES)

        assert families._LABEL_HEADS_KEPT == len(family._label_heads)

    def test_children_changing_while_rendered(self, monkeypatch):
        """Churn mid-render never pairs one child's head with another's value, nor repeats one."""
        monkeypatch.setattr(streaming, "_LIST_SLICE", 64)
        monkeypatch.setattr(pacing, "WORK_SECONDS", 0.0)  # a pause after every batch
        registry, gauge = many(Gauge, 3000)  # a series' value is its label, as in churn()
        steps = itertools.count()
        churned = []

        def churn(_seconds):
            """Change the family at a pause, as another thread would, unless it is locked."""
            if not gauge._lock.acquire(blocking=False):  # being listed: the other thread waits
                return
            gauge._lock.release()
            for step in itertools.islice(steps, 25):
                gauge.labels(str(step % 3000)).set(step % 3000)
                if step % 3 == 0:
                    gauge.remove(str((step // 3) % 3000))
                if step % 997 == 0:
                    gauge.clear()
            churned.append(step)

        monkeypatch.setattr(pacing.time, "sleep", churn)
        for options in (TEXT, OPENMETRICS) * 3:
            lines = render(registry, **options).decode().splitlines()

            series = [line for line in lines if line.startswith("many_gauge{")]
            pairs = [re.fullmatch(r'many_gauge\{id="(\d+)"\} (\d+)\.0', s) for s in series]
            assert all(pair and pair[1] == pair[2] for pair in pairs), series
            assert len(series) == len(set(series))
        assert 6 < len(churned)  # changes came in the middle of renders, not only between


class TestLargeFamilies:
    @pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "om"])
    def test_listed_a_slice_at_a_time(self, openmetrics, monkeypatch):
        """A family larger than one slice is listed in slices, pausing between two."""
        pauses = []
        monkeypatch.setattr(streaming, "_LIST_SLICE", 100)
        monkeypatch.setattr(pacing, "WORK_SECONDS", 0.0)
        monkeypatch.setattr(pacing.time, "sleep", pauses.append)
        registry, _ = many(Counter, 3000, exemplar={"a": "b"})

        assert_same(registry, openmetrics, om.UNDERSCORES)
        assert len(pauses) >= 3000 // 100

    def test_lists_start_old(self, monkeypatch):
        """A large family is listed into lists young collections never walk."""
        monkeypatch.setattr(streaming, "_LIST_SLICE", 10)
        _, gauge = many(Gauge, 50)

        labelvalues, children = streaming._children(gauge, lambda: None)

        oldest = gc.get_objects(generation=2)
        assert any(tracked is labelvalues for tracked in oldest)
        assert any(tracked is children for tracked in oldest)
        assert 50 == len(children)

    def test_no_collection_while_the_collector_is_off(self, monkeypatch):
        """An application that turned the collector off gets no collection from a render."""
        monkeypatch.setattr(streaming, "_LIST_SLICE", 10)
        registry, _ = many(Gauge, 50)
        gc.disable()
        try:
            collections = _collections_during(lambda: render(registry, **TEXT))
        finally:
            gc.enable()

        assert 0 == collections

    def test_let_go_a_slice_at_a_time(self, monkeypatch):
        """A family's list of children is emptied a slice at a time, pausing between two."""
        monkeypatch.setattr(streaming, "_LIST_SLICE", 100)
        pauses = []
        listed = list(range(1000))

        streaming._release(listed, lambda: pauses.append(len(listed)))

        assert [] == listed
        assert [900, 800, 700, 600, 500, 400, 300, 200, 100] == pauses

    def test_pauses_let_other_threads_run(self, monkeypatch):
        """Every WORK_SECONDS the render sleeps, handing the GIL to whoever waits for it."""
        pauses = []
        monkeypatch.setattr(pacing, "WORK_SECONDS", 0.0)
        monkeypatch.setattr(pacing.time, "sleep", pauses.append)
        registry, _ = many(Gauge, 1000)

        render(registry, **TEXT)

        assert len(pauses) >= 1000 // streaming._BATCH_LINES
        assert {pacing.PAUSE_SECONDS} == set(pauses)


def _collections_during(action):
    """Count the garbage collections that run while *action* runs."""
    seen = []

    def count(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        action()
    finally:
        gc.callbacks.remove(count)
    return len(seen)


class TestGarbage:
    def test_rendering_leaves_the_garbage_collector_asleep(self):
        """prometheus_client keeps every sample of a family alive at once; promloop, one child's."""
        registry, _ = many(Gauge, 20_000)
        render(registry, **TEXT)  # each child's heads, once

        ours = _collections_during(lambda: render(registry, **TEXT))
        theirs = _collections_during(lambda: generate_latest(registry))

        assert ours <= 1  # none, measured on Python 3.10 to 3.13
        assert theirs >= 10  # 57 on Python 3.10 to 3.12; 20 on 3.13, which counts otherwise

    def test_heads_are_not_tracked(self):
        """What a child keeps is never promoted to the collector's old generation."""
        registry, counter = many(Counter, 10)
        render(registry, **TEXT)

        gc.collect()

        assert not gc.is_tracked(getattr(counter.labels("3"), families.HEADS_ATTRIBUTE))

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 gives every instance a dict")
    def test_no_dictionary_after_another_attribute(self):
        """Heads stay among a child's attributes even once a Gauge got one of its own.

        set_function() adds an attribute to one Gauge; added after it, the
        heads would give every Gauge child a dict of its own.  In a fresh
        interpreter, where promloop's import comes first.
        """
        ran = subprocess.run(
            [sys.executable, "-c", NO_DICT_APP], capture_output=True, check=True, timeout=60
        )

        assert b"0\n" == ran.stdout

    def test_making_room_fails_quietly(self):
        """A class whose instances cannot take the attribute, or that would mind, is left be."""

        class Slotted:
            __slots__ = ()

        finalized = []

        class Finalized:
            def __del__(self):
                finalized.append(type(self).__name__)

        families.make_room(Slotted)
        families.make_room(Finalized)
        families.make_room(Finalized)
        gc.collect()

        assert [] == finalized  # no instance made for the purpose, so none finalized
        assert {Slotted, Finalized} <= set(families._made_room)

    def test_children_get_no_dictionary(self):
        """Children's attributes stay where Python 3.11 and later keep them, out of a dict."""
        registry, _ = many(Gauge, 1000)
        gc.collect()
        before = sum(type(tracked) is dict for tracked in gc.get_objects())

        render(registry, **TEXT)
        gc.collect()

        assert sum(type(tracked) is dict for tracked in gc.get_objects()) - before < 100


NAME_SETS = [
    {"probe_events_total"},
    {"probe_events_total", "probe_events_created"},
    {"probe_events_created"},
    {"probe_latency_bucket", "probe_latency_sum"},
    {"probe_state", "custom_gauge", "custom_hist_bucket"},
    {"target_info"},
    {"stamped", "doubled"},
    {"nothing_like_it"},
    {"probe_empty"},
    {"childless_seconds_bucket", "childless_seconds_count", "childless_seconds_sum"},
]


class TestNames:
    @pytest.mark.parametrize("names", NAME_SETS, ids=lambda names: ",".join(sorted(names)))
    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS[:1] + FORMATS[4:5])
    @pytest.mark.parametrize("created", [True, False], ids=["created", "no-created"])
    def test_names(self, openmetrics, escaping, names, created):
        """A filtered render keeps the chosen samples, each family whole, in registration order."""
        registry = rich_registry(target_info=True)
        names_ = frozenset(names)

        ours = render(
            registry, openmetrics=openmetrics, escaping=escaping, names=names_, created=created
        )

        assert render_slow(registry, openmetrics, escaping, names_, created) == ours
        if created:  # the same lines as prometheus_client's restricted registry, in set order
            theirs = client_render(registry.restricted_registry(names), openmetrics, escaping)
            assert sorted(_without_units(theirs)) == sorted(_without_units(ours))

    def test_names_keep_units(self):
        """A filtered OpenMetrics family keeps its UNIT line."""
        registry = CollectorRegistry()
        Counter("sent_bytes", "Sent.", unit="bytes", registry=registry).inc()

        ours = render(registry, **OPENMETRICS, names=frozenset({"sent_bytes_total"}))

        assert b"# UNIT sent_bytes bytes\n" in ours

    def test_names_on_a_plain_collector(self):
        """Any object with collect() is filtered before prometheus_client formats it."""
        ours = render(Custom(), **TEXT, names=frozenset({"custom_gauge"}))

        assert (
            b'# HELP custom_gauge Custom.\n# TYPE custom_gauge gauge\ncustom_gauge{k="v"} 7.0\n'
        ) == ours


def _without_units(data):
    """prometheus_client's restricted registry drops UNIT lines; promloop keeps them."""
    return [line for line in data.splitlines() if not line.startswith(b"# UNIT ")]


class TestGoFloat:
    @settings(max_examples=2000)
    @given(st.floats() | st.integers(-(2**70), 2**70))
    def test_any_number(self, value):
        """Any float or int is written as prometheus_client's floatToGoString writes it."""
        assert floatToGoString(value) == go_float(value)

    @pytest.mark.parametrize(
        "value", [1e6, 1234567.5, 1e15, 1500000000000000.0, 1e16, 1e22, float("inf"), -1e7, 5e-324]
    )
    def test_edges(self, value):
        """Where Python's repr and Go's format part ways, Go's is written."""
        assert floatToGoString(value) == go_float(value)


class TestEscapeValue:
    def test_escapes(self):
        """Backslashes, newlines and double quotes are escaped; nothing else is."""
        assert 'a\\\\b\\nc\\"d ✓' == escape_value('a\\b\nc"d ✓')


class TestSelfCheck:
    def test_disagreement_hands_rendering_to_prometheus_client(self, monkeypatch, caplog):
        """Were a future prometheus_client to write otherwise, promloop would step aside."""
        monkeypatch.setattr(self_check, "render_fast", lambda *_: [b"# something else\n"])
        self_check.agrees_with_prometheus_client.cache_clear()
        try:
            registry = rich_registry()
            with caplog.at_level(logging.WARNING, logger="promloop"):
                assert generate_latest(registry) == render(registry, **TEXT)
        finally:
            self_check.agrees_with_prometheus_client.cache_clear()
        assert "disagrees with prometheus_client" in caplog.text

    def test_multiprocess_mode_leaves_the_shared_files_alone(self, tmp_path):
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


NO_DICT_APP = """
import gc
from prometheus_client import CollectorRegistry, Gauge
from promloop._render import render

registry = CollectorRegistry()
gauge = Gauge("g", "Many children.", ["id"], registry=registry)
for i in range(1000):
    gauge.labels(str(i)).set(i)
Gauge("f", "A function.", registry=registry).set_function(lambda: 1)
render(registry, openmetrics=False, escaping="underscores")
# A child without a dict of its own refers to its attributes' values itself.
print(sum(all(referent is not child._value for referent in gc.get_referents(child))
          for child in gauge._metrics.values()))
"""

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
