"""The fan-in's merge engine: workers' expositions in, one exposition out."""

from __future__ import annotations

import logging
import math
import subprocess

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
)
from prometheus_client.core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample, Timestamp

from promloop import _merge
from promloop._merge import Merged, Merger, Scrape
from promloop._render import render

from . import merge_oracle as oracle
from .peers import require_binary


ESCAPINGS = (om.ALLOWUTF8, om.UNDERSCORES, om.DOTS, om.VALUES)
FORMATS = [
    pytest.param(openmetrics, escaping, id=f"{'om' if openmetrics else 'text'}-{escaping}")
    for openmetrics in (False, True)
    for escaping in ESCAPINGS
]
NASTY = (
    'quote " back \\ newline \n',
    '"} 1.0\nfake 2',
    ',worker="9"',
    '# {x="y"} 1',
    "}{=,",
    "} starts like the end",
    "ünïcode ✓",
    "",
    " ",
    '\\"',
    'x"="y',
)


def body(registry: Any) -> bytes:
    """Return what a worker answers the fan-in: OpenMetrics, allow-utf-8."""
    return om.generate_latest(registry, escaping=om.ALLOWUTF8)  # type: ignore[no-any-return]


def scrapes(workers: list[tuple[dict[str, str], Any]]) -> list[Scrape]:
    return [Scrape(f"w{i}|127.0.0.1:{1000 + i}", t, body(r)) for i, (t, r) in enumerate(workers)]


def expected_per_worker(
    workers: list[tuple[dict[str, str], Any]], openmetrics: bool, escaping: str
) -> bytes:
    return oracle.write(oracle.per_worker(workers), openmetrics=openmetrics, escaping=escaping)


class Collect:
    """A custom collector yielding fixed families."""

    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> tuple[Metric, ...]:
        return self.families


def tricky_registry(worker: int, trace: str = 'q"x') -> CollectorRegistry:
    """Return a registry with every type, exemplars, timestamps, names to escape.

    prometheus_client's OpenMetrics parser cannot read an exemplar label value
    with a quote (it takes the escaped quote for the closing one): tests that
    parse the merged output pass another *trace*.
    """
    registry = CollectorRegistry()
    requests = Counter("req", 'Help "q" \\ x\nnl', ["worker", "a"], registry=registry)
    for value in NASTY:
        requests.labels("w", value).inc(3 + worker)
    requests.labels("w2", "b").inc(1, exemplar={"trace": trace})
    nasty = Gauge("nasty", "Label values without a clash.", ["a"], registry=registry)
    for number, value in enumerate(NASTY):
        nasty.labels(value).set(number)
    utf8 = Gauge("my.gauge", "UTF-8 name.", ["la.bel", "b", 'q"l\\'], registry=registry)
    utf8.labels("1", "2", "3").set(worker)
    latency = Histogram("lat", "Latency.", ["m"], buckets=[0.5, 1], registry=registry)
    latency.labels("g").observe(0.7, exemplar={"t": "1"})
    Summary("sm", "Summary.", registry=registry).observe(2)
    Info("inf", "Info.", registry=registry).info({"v": "1"})
    Enum("en", "Enum.", states=["a", "b"], registry=registry).state("b")
    Counter("m:c", "Colon.", unit="bytes", registry=registry).inc()
    Gauge("empty", "No children yet.", ["x"], registry=registry)
    stamped = GaugeMetricFamily("cust_ts", "Timestamped.", labels=["k"])
    stamped.add_metric(['x"y'], 3.0, timestamp=1.5)
    stamped.add_metric(["z"], 4.0, timestamp=1700000000.123)
    stamped.add_metric(["n"], 5.0, timestamp=Timestamp(1700000000, 123))
    gauge_histogram = GaugeHistogramMetricFamily(
        "cust_gh", "Gauge histogram.", buckets=[("1.0", 2), ("+Inf", 5)], gsum_value=7
    )
    quantiles = Metric("cust_q", "Summary with quantiles.", "summary")
    quantiles.samples = [
        Sample("cust_q", {"quantile": "0.5"}, 1.0),
        Sample("cust_q_count", {}, 4.0),
        Sample("cust_q_sum", {}, 6.0),
    ]
    only_created = Metric("cust_c", "A counter with nothing but _created.", "counter")
    only_created.samples = [Sample("cust_c_created", {"a": "b"}, 1.0)]
    registry.register(
        Collect(
            stamped,
            gauge_histogram,
            quantiles,
            UnknownMetricFamily("cust_u", "U.", 1),
            only_created,
        )
    )
    return registry


def tricky_workers(count: int = 3, trace: str = 'q"x') -> list[tuple[dict[str, str], Any]]:
    return [({"worker": str(i), "env": 'p"x'}, tricky_registry(i, trace)) for i in range(count)]


class TestPerWorker:
    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_equals_one_registry_holding_every_worker(self, openmetrics, escaping):
        """The merge is what prometheus_client writes for all samples, worker labels added."""
        workers = tricky_workers()

        merged = Merger().merge(scrapes(workers))

        assert frozenset() == merged.failed
        expected = expected_per_worker(workers, openmetrics, escaping)
        assert expected == merged.expose(openmetrics=openmetrics, escaping=escaping)

    def test_clashing_label_renamed(self):
        """A label a sample has is renamed exported_<name>, or exported_exported_<name>."""
        registry = CollectorRegistry()
        Gauge("g", "G.", ["worker", "exported_worker"], registry=registry).labels("a", "b").set(1)

        merged = Merger().merge([Scrape("t", {"worker": "0"}, body(registry))])

        assert (
            b'g{exported_exported_worker="a",exported_worker="b",worker="0"} 1.0\n'
            in merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)
        )

    def test_reserved_target_labels_not_added(self):
        """file_sd labels starting with __ are Prometheus's own: they are not added."""
        registry = CollectorRegistry()
        Gauge("g", "G.", registry=registry).set(1)

        merged = Merger().merge([Scrape("t", {"__meta_x": "1", "worker": "0"}, body(registry))])

        assert b'g{worker="0"} 1.0\n' in merged.expose(openmetrics=False, escaping=om.UNDERSCORES)

    def test_same_labels_left_out(self):
        """A target with the same labels as an earlier one would duplicate its series."""
        registry = CollectorRegistry()
        Gauge("g", "G.", registry=registry).set(1)
        text = body(registry)

        merged = Merger().merge([Scrape("a", {"w": "0"}, text), Scrape("b", {"w": "0"}, text)])

        assert frozenset({"b"}) == merged.failed
        assert "same labels as a" == merged.errors["b"]
        assert 1 == merged.expose(openmetrics=True, escaping=om.ALLOWUTF8).count(b"g{")

    def test_family_order_first_appearance(self):
        """Families come in the order they first appear, workers taken in the given order."""
        first, second = CollectorRegistry(), CollectorRegistry()
        Gauge("b", "B.", registry=first).set(1)
        Gauge("c", "C.", registry=second).set(1)
        Gauge("a", "A.", registry=second).set(1)
        Gauge("b", "B.", registry=second).set(2)

        merged = Merger().merge(scrapes([({"w": "0"}, first), ({"w": "1"}, second)]))

        families = om_parser.text_string_to_metric_families(
            merged.expose(openmetrics=True, escaping=om.ALLOWUTF8).decode()
        )
        assert ["b", "c", "a"] == [family.name for family in families]


@st.composite
def worker_sets(draw: st.DrawFn) -> list[tuple[dict[str, str], Any]]:
    """Draw two or three workers with the same metrics and different children."""
    label_names = st.lists(
        st.sampled_from(["a", "method", "worker", "exported_worker", "env", "zz", "a.b", "ü"]),
        max_size=3,
        unique=True,
    )
    values = st.sampled_from(NASTY) | st.text(st.sampled_from('ab"\\\n}{#=, ü✓'), max_size=6)
    kinds = st.sampled_from(["counter", "gauge", "histogram", "summary", "info", "enum"])
    names = st.sampled_from(["m_a", "m_b", "m:c", "m.d", "m_e", "ü_f"])
    specs = draw(
        st.lists(st.tuples(names, kinds, label_names), max_size=4, unique_by=lambda s: s[0])
    )
    count = draw(st.integers(1, 3))
    shared = draw(st.dictionaries(st.sampled_from(["env", "zz", "a"]), values, max_size=1))
    workers = []
    for worker in range(count):
        registry = CollectorRegistry()
        for spec in specs:
            labels = spec[2]
            children = draw(st.lists(st.tuples(*[values] * len(labels)), max_size=3, unique=True))
            amounts = [draw(st.integers(0, 5)) for _ in children]
            _populate(registry, spec, (children, amounts, draw(st.booleans())))
        workers.append(({"worker": str(worker), **shared}, registry))
    return workers


def _populate(registry: CollectorRegistry, spec: tuple[str, str, list[str]], draws: Any) -> None:
    """Add a metric to *registry* with children for the drawn label values and amounts."""
    name, kind, labels = spec
    children, amounts, exemplar = draws
    trace = {"trace_id": "a\\b"} if exemplar else None
    if kind == "info":
        labels = [n for n in labels if n != "a"]
    metric = KINDS[kind](name, kind.title() + ".", labels, registry=registry)
    for values, amount in zip(children, amounts, strict=True):
        child = metric.labels(*values[: len(labels)]) if labels else metric
        if kind == "counter":
            child.inc(amount, exemplar=trace)
        elif kind == "gauge":
            child.set(amount - 2.5)
        elif kind == "histogram":
            child.observe(amount, exemplar=trace)
        elif kind == "summary":
            child.observe(amount)
        elif kind == "info":
            child.info({"a": "x"})
        else:
            child.state("xy"[amount % 2])


KINDS = {
    "counter": Counter,
    "gauge": Gauge,
    "histogram": lambda *args, **kwargs: Histogram(*args, buckets=(1, 3), **kwargs),
    "summary": Summary,
    "info": Info,
    "enum": lambda *args, **kwargs: Enum(*args, states=["x", "y"], **kwargs),
}


class TestPerWorkerProperties:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(worker_sets())
    def test_any_registries(self, workers):
        """For any registries, in any format, the merge is one registry holding them all."""
        merged = Merger().merge(scrapes(workers))

        assert frozenset() == merged.failed
        for openmetrics in (False, True):
            for escaping in ESCAPINGS:
                expected = expected_per_worker(workers, openmetrics, escaping)
                assert expected == merged.expose(openmetrics=openmetrics, escaping=escaping), (
                    openmetrics,
                    escaping,
                )


class TestAggregate:
    def test_sums(self):
        """Counters, histograms and summaries sum; _created is the earliest; quantiles go."""
        workers = tricky_workers(trace="q x")

        merged = Merger(aggregate=True).merge(scrapes(workers))

        assert expected_sums(workers) == oracle.parsed(
            merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)
        )

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(worker_sets(), st.sampled_from(["sum", "max", "min"]))
    def test_any_registries(self, workers, gauges):
        """For any registries, aggregate mode writes the combination of every worker's samples."""
        merged = Merger(aggregate=True, gauges=gauges).merge(scrapes(workers))

        actual = oracle.parsed(merged.expose(openmetrics=True, escaping=om.ALLOWUTF8))
        expected = expected_sums(workers, gauges)
        assert expected.keys() == actual.keys()
        for key, value in expected.items():
            assert oracle.same_values(value, actual[key]), key


def expected_sums(
    workers: list[tuple[dict[str, str], Any]], gauges: str = "sum"
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Combine workers' samples as aggregate mode's rules say."""
    columns: dict[tuple[str, frozenset[tuple[str, str]]], tuple[str, list[float]]] = {}
    for _, registry in workers:
        for metric in registry.collect():
            for sample in metric.samples:
                suffix = sample.name[len(metric.name) :]
                if metric.type == "summary" and suffix == "":
                    continue
                if metric.type in ("counter", "histogram", "summary"):
                    how = "min" if suffix == "_created" else "sum"
                elif metric.type in ("info", "stateset"):
                    how = "max"
                elif metric.type == "gaugehistogram":
                    how = "sum"
                else:
                    how = gauges
                key = (sample.name, frozenset(sample.labels.items()))
                columns.setdefault(key, (how, []))[1].append(float(sample.value))
    combine = {"sum": math.fsum, "max": max, "min": min}
    return {key: combine[how](values) for key, (how, values) in columns.items()}


def gauge_body(name: str = "g", value: float = 1.0) -> bytes:
    registry = CollectorRegistry()
    Gauge(name, "G.", registry=registry).set(value)
    return body(registry)


GARBAGE = {
    "binary": bytes(range(256)) * 4,
    "not UTF-8": b"# HELP g G.\n# TYPE g gauge\ng \xff\n# EOF\n",
    "truncated": gauge_body()[:-8],
    "html": b"<html><body>502 Bad Gateway</body></html>\n",
    "empty": b"",
    "10 MB": b"x" * 10_000_000,
    "10 MB of lines": b"g 1.0\n" * 1_700_000,
    "not a number": b"# HELP g G.\n# TYPE g gauge\ng abc\n# EOF\n",
    "underscored number": b"# HELP g G.\n# TYPE g gauge\ng 1_000\n# EOF\n",
    "carriage return": b"# HELP g G.\n# TYPE g gauge\r\ng 1.0\r\n# EOF\n",
    "after EOF": gauge_body() + b"g 2.0\n",
    "blank line": b"# HELP g G.\n# TYPE g gauge\n\ng 1.0\n# EOF\n",
    "twice": b"# HELP g G.\n# TYPE g gauge\ng 1.0\n# HELP g G.\n# TYPE g gauge\n# EOF\n",
    "duplicate label": b'# HELP g G.\n# TYPE g gauge\ng{a="1",a="2"} 1.0\n# EOF\n',
    "comment": b"# HELP g G.\n# TYPE g gauge\n# just saying\ng 1.0\n# EOF\n",
    "unclosed": b'# HELP g G.\n# TYPE g gauge\ng{a="1} 1.0\n# EOF\n',
    "NaN bucket": (
        b'# HELP h H.\n# TYPE h histogram\nh_bucket{le="NaN"} 1.0\nh_count 1.0\nh_sum 1.0\n# EOF\n'
    ),
    "bucket without le": b"# HELP h H.\n# TYPE h histogram\nh_bucket 1.0\n# EOF\n",
    "exemplar on a gauge": b'# HELP g G.\n# TYPE g gauge\ng 1.0 # {a="1"} 1.0\n# EOF\n',
    "reserved label": b'# HELP g G.\n# TYPE g gauge\ng{__x="1"} 1.0\n# EOF\n',
    "minus NaN": b"# HELP g G.\n# TYPE g gauge\ng -NaN\n# EOF\n",
    "other digits": "# HELP g G.\n# TYPE g gauge\ng \u0661\n# EOF\n".encode(),
    "half a number": b"# HELP g G.\n# TYPE g gauge\ng 1e\n# EOF\n",
    "bound not a number": b'# HELP h H.\n# TYPE h histogram\nh_bucket{le="x"} 1.0\n# EOF\n',
    "EOF glued": b"# HELP g G.\n# TYPE g gauge\ng 1.0# EOF\n",
    "two HELPs": b"# HELP g G.\n# HELP g G.\n# TYPE g gauge\ng 1.0\n# EOF\n",
}


class TestGarbage:
    @pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
    def test_left_out_and_named(self, answer):
        """A target answering garbage is left out, named with a reason; others merge."""
        merged = Merger().merge(
            [
                Scrape("good", {"w": "0"}, gauge_body("ok")),
                Scrape("bad", {"w": "1"}, answer),
            ]
        )

        assert frozenset({"bad"}) == merged.failed
        assert merged.errors["bad"]
        assert b'# HELP ok G.\n# TYPE ok gauge\nok{w="0"} 1.0\n# EOF\n' == merged.expose(
            openmetrics=True, escaping=om.ALLOWUTF8
        )

    def test_failed_scrape(self):
        """A scrape that failed (no body) is named too."""
        merged = Merger().merge([Scrape("gone", {"w": "0"}, None)])

        assert frozenset({"gone"}) == merged.failed
        assert {"gone": "scrape failed"} == merged.errors
        assert b"# EOF\n" == merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)
        assert b"" == merged.expose(openmetrics=False, escaping=om.UNDERSCORES)


UNUSUAL = {
    "no HELP": b"# TYPE g gauge\ng 1.0\n# EOF\n",
    "no TYPE": b"# HELP g G.\ng 1.0\n# EOF\n",
    "no metadata": b"g 1.0\n# EOF\n",
    "unsorted labels": b'# HELP g G.\n# TYPE g gauge\ng{b="1",a="2"} 1.0\n# EOF\n',
    "empty braces": b"# HELP g G.\n# TYPE g gauge\ng{} 1.0\n# EOF\n",
    "unknown escape": b'# HELP g G.\n# TYPE g gauge\ng{a="\\t"} 1.0\n# EOF\n',
    "no last newline": b"# HELP g G.\n# TYPE g gauge\ng 1.0\n# EOF",
    "quoted legacy name": b'# HELP g G.\n# TYPE g gauge\n{"g"} 1.0\n# EOF\n',
    "samples of another family": b"# HELP g G.\n# TYPE g gauge\nh 1.0\n# EOF\n",
    "samples of a family named like a suffix": b"# HELP g G.\n# TYPE g counter\ng_sum 1\n# EOF\n",
}


class TestUnusual:
    @pytest.mark.parametrize("answer", UNUSUAL.values(), ids=UNUSUAL.keys())
    def test_valid_openmetrics_merged(self, answer):
        """Valid OpenMetrics that prometheus_client would not write is merged all the same."""
        merged = Merger().merge([Scrape("odd", {"w": "0"}, answer)])

        assert frozenset() == merged.failed
        families = list(om_parser.text_string_to_metric_families(answer.decode()))
        for openmetrics in (False, True):
            expected = oracle.write(
                oracle.per_worker([({"w": "0"}, Collect(*families))]),
                openmetrics=openmetrics,
                escaping=om.ALLOWUTF8,
            )
            assert expected == merged.expose(openmetrics=openmetrics, escaping=om.ALLOWUTF8)

    def test_values_copied_as_written(self):
        """Per worker, a value is copied as the worker wrote it, if every parser reads it."""
        answer = b'# HELP g G.\n# TYPE g gauge\ng{a="1"} 1\ng{a="2"} .5e3\n# EOF\n'

        merged = Merger().merge([Scrape("odd", {"w": "0"}, answer)])

        assert (
            b'# HELP g G.\n# TYPE g gauge\ng{a="1",w="0"} 1\ng{a="2",w="0"} .5e3\n# EOF\n'
            == merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)
        )

    def test_large_unusual_answer_left_out(self):
        """prometheus_client's slow parser normalises answers up to 1 MiB only."""
        lines = b"".join(b'g{a="%d"} 1.0\n' % i for i in range(80_000))
        answer = b"# HELP g G.\n" + lines + b"# EOF\n"

        merged = Merger().merge([Scrape("big", {"w": "0"}, answer)])

        assert frozenset({"big"}) == merged.failed


class TestConflicts:
    def test_type_conflict_kept_from_first(self, caplog):
        """A family typed differently is kept from the first worker, counted, logged once."""
        first, second, third = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
        Gauge("x", "X.", registry=first).set(1)
        Counter("x", "X.", registry=second).inc()
        Counter("x", "X.", registry=third).inc()
        Gauge("y", "Y.", registry=second).set(2)
        counted: list[str] = []
        merger = Merger(on_conflict=counted.append)
        workers = [({"w": "0"}, first), ({"w": "1"}, second), ({"w": "2"}, third)]

        with caplog.at_level(logging.WARNING, logger="promloop"):
            merger.merge(scrapes(workers))
            merged = merger.merge(scrapes(workers))

        assert ["x", "x", "x", "x"] == counted
        assert 1 == len(caplog.records)
        assert "x" in caplog.records[0].getMessage()
        samples = oracle.parsed(merged.expose(openmetrics=True, escaping=om.ALLOWUTF8))
        assert {("x", frozenset({("w", "0")})), ("y", frozenset({("w", "1")}))} == set(samples)

    def test_logged_without_a_counter(self, caplog):
        """Without on_conflict, conflicts are still left out and logged."""
        first, second = CollectorRegistry(), CollectorRegistry()
        Gauge("x", "X.", registry=first).set(1)
        Counter("x", "X.", registry=second).inc()

        with caplog.at_level(logging.WARNING, logger="promloop"):
            merged = Merger().merge(scrapes([({"w": "0"}, first), ({"w": "1"}, second)]))

        assert 1 == len(caplog.records)
        assert b"x_total" not in merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)

    def test_clashing_names(self):
        """A family whose sample names clash with an earlier family's is left out."""
        first, second = CollectorRegistry(), CollectorRegistry()
        Counter("x", "X.", registry=first).inc()
        Gauge("x_total", "X.", registry=second).set(5)
        counted: list[str] = []

        merged = Merger(on_conflict=counted.append).merge(
            scrapes([({"w": "0"}, first), ({"w": "1"}, second)])
        )

        assert ["x_total"] == counted
        assert b'x_total{w="1"}' not in merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)

    def test_gauge_rule_checked(self):
        """An unknown gauges rule is refused, named in the error."""
        with pytest.raises(ValueError, match="'average'"):
            Merger(aggregate=True, gauges="average")


class TestExpose:
    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_encoded_a_slice_at_a_time(self, openmetrics, escaping, monkeypatch):
        """Encoded in slices (so that the event loop gets the GIL between them), the same bytes."""
        workers = tricky_workers()
        whole = Merger().merge(scrapes(workers)).expose(openmetrics=openmetrics, escaping=escaping)
        monkeypatch.setattr(_merge, "_SLICE_CHARACTERS", 64)
        pauses = []
        monkeypatch.setattr(_merge.Pacer, "__call__", lambda self: pauses.append(1))

        sliced = Merger().merge(scrapes(workers)).expose(openmetrics=openmetrics, escaping=escaping)

        assert whole == sliced
        assert len(pauses) > len(whole) // 256

    def test_names_restrict(self):
        """name[] keeps only the samples named, as prometheus_client does."""
        workers = tricky_workers(2)
        names = frozenset({"req_total", "lat_bucket", "sm_count", "inf_info", "empty", "nothing"})
        merged = Merger().merge(scrapes(workers))

        for openmetrics in (False, True):
            expected = oracle.write(
                restricted(oracle.per_worker(workers), names),
                openmetrics=openmetrics,
                escaping=om.UNDERSCORES,
            )
            assert expected == merged.expose(
                openmetrics=openmetrics, escaping=om.UNDERSCORES, names=names
            )

    def test_without_created(self):
        """created=False drops every _created sample, and nothing else."""
        workers = tricky_workers(2)
        merged = Merger().merge(scrapes(workers))
        families = oracle.per_worker(workers)
        for family in families:
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]

        for openmetrics in (False, True):
            expected = oracle.write(families, openmetrics=openmetrics, escaping=om.ALLOWUTF8)
            assert expected == merged.expose(
                openmetrics=openmetrics, escaping=om.ALLOWUTF8, created=False
            )

    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_extra_registry_before_the_end(self, openmetrics, escaping):
        """The fan-in's own registry is written after the workers', with one # EOF."""
        own = CollectorRegistry()
        Gauge("promloop_fanin_target_up", "Up.", ["worker"], registry=own).labels("0").set(1)
        merged = Merger().merge([Scrape("t", {"worker": "0"}, gauge_body())])

        written = merged.expose(openmetrics=openmetrics, escaping=escaping, extra=[own])

        assert written.startswith(
            merged.expose(openmetrics=openmetrics, escaping=escaping).removesuffix(b"# EOF\n")
        )
        assert (1 if openmetrics else 0) == written.count(b"# EOF")
        families = [f.name for f in parse(written, openmetrics=openmetrics)]
        names = ["g", "promloop_fanin_target_up"]
        assert [om.escape_metric_name(name, escaping) for name in names] == families

    def test_extra_registry_wins(self):
        """A worker's family named like one of the fan-in's own is left out."""
        own = CollectorRegistry()
        Gauge("g", "Mine.", registry=own).set(7)
        merged = Merger().merge([Scrape("t", {"worker": "0"}, gauge_body())])

        written = merged.expose(openmetrics=True, escaping=om.ALLOWUTF8, extra=[own])

        assert b"# HELP g Mine.\n# TYPE g gauge\ng 7.0\n# EOF\n" == written

    def test_own_metrics_unreadable(self):
        """The fan-in's own metrics that OpenMetrics forbids are refused, naming why."""
        own = CollectorRegistry()
        info = Metric("build_bytes", "Info with a unit.", "info", unit="bytes")
        info.add_sample("build_bytes_info", {"v": "1"}, 1.0)
        own.register(Collect(info))
        merged = Merger().merge([])

        with pytest.raises(ValueError, match="own metrics"):
            merged.expose(openmetrics=True, escaping=om.ALLOWUTF8, extra=[own])

    def test_unknown_escaping(self):
        """An escaping scheme that does not exist is refused."""
        merged = Merger().merge([])
        with pytest.raises(ValueError, match="'utf-16'"):
            merged.expose(openmetrics=True, escaping="utf-16")


def restricted(families: list[Metric], names: frozenset[str]) -> list[Metric]:
    kept = []
    for family in families:
        samples = [s for s in family.samples if s.name in names]
        if samples:
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = samples
            kept.append(copy)
    return kept


def parse(written: bytes, *, openmetrics: bool) -> list[Metric]:
    if openmetrics:
        return list(om_parser.text_string_to_metric_families(written.decode()))
    return list(text_string_to_metric_families(written.decode()))


class TestPeersAccept:
    @pytest.mark.parametrize("aggregate", [False, True], ids=["per-worker", "aggregate"])
    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_prometheus_client_parses(self, aggregate, openmetrics, escaping):
        """prometheus_client's text and OpenMetrics parsers read the merged output."""
        merged = Merger(aggregate=aggregate).merge(scrapes(tricky_workers(trace="q x")))

        families = parse(
            merged.expose(openmetrics=openmetrics, escaping=escaping), openmetrics=openmetrics
        )

        assert len(families) > 10

    @pytest.mark.parametrize("aggregate", [False, True], ids=["per-worker", "aggregate"])
    @pytest.mark.parametrize("escaping", [om.UNDERSCORES, om.DOTS, om.VALUES])
    def test_promtool_checks_text(self, aggregate, escaping):
        """`promtool check metrics` passes the text output without a remark."""
        promtool = require_binary("promtool")
        workers = [({"worker": str(i)}, plain_registry(i)) for i in range(3)]
        merged = Merger(aggregate=aggregate).merge(scrapes(workers))

        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=merged.expose(openmetrics=False, escaping=escaping),
            capture_output=True,
            check=False,
            timeout=60,
        )

        assert (0, b"", b"") == (result.returncode, result.stdout, result.stderr)


def plain_registry(worker: int) -> CollectorRegistry:
    """Metrics as promtool's linter likes them (units in names, _total counters...)."""
    registry = CollectorRegistry()
    requests = Counter("app_requests", "Requests.", ["method", "path"], registry=registry)
    requests.labels("GET", '/a"b').inc(worker + 1)
    latency = Histogram("app_latency_seconds", "Latency.", ["method"], registry=registry)
    latency.labels("GET").observe(0.2)
    Gauge("app_in_progress", "In progress.", registry=registry).set(worker)
    Info("app_build", "Build.", registry=registry).info({"version": "1"})
    return registry


def counting(value: float, *, gauge: float = 0.0, buckets: tuple[float, ...] = (1.0,)) -> bytes:
    """Return a worker's answer: a counter at *value*, a gauge, a histogram of one."""
    registry = CollectorRegistry()
    Counter("jobs", "Jobs.", ["kind"], registry=registry).labels("a").inc(value)
    Gauge("busy", "Busy.", registry=registry).set(gauge)
    Histogram("took", "Took.", buckets=buckets, registry=registry).observe(0.5)
    return body(registry)


def values(merged: Merged) -> dict[str, float]:
    """Return the merged samples by name (aggregate: one series each), without _created."""
    samples = oracle.parsed(merged.expose(openmetrics=True, escaping=om.ALLOWUTF8))
    return {
        name + "".join(f"{{{k}={v}}}" for k, v in sorted(labels) if k != "kind"): value
        for (name, labels), value in samples.items()
        if not name.endswith("_created")
    }


class TestCountersNeverGoBack:
    def test_departed_worker_carried(self):
        """A worker that leaves the directory keeps its counters in the sums; its gauges go."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(5, gauge=1)), Scrape("b", {}, counting(7, gauge=2))])

        for _ in range(4):  # carried while lately departed, and once folded for good
            merged = merger.merge([Scrape("a", {}, counting(6, gauge=1))])

            assert 13.0 == values(merged)["jobs_total"]
            assert 1.0 == values(merged)["busy"]
            assert 2.0 == values(merged)["took_count"]
            assert 2.0 == values(merged)["took_bucket{le=1.0}"]

    def test_every_worker_departed(self):
        """With no worker left, the carried counters are still written."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(5, gauge=1))])

        for _ in range(3):
            merged = merger.merge([])

            assert {
                "jobs_total": 5.0,
                "took_bucket{le=1.0}": 1.0,
                "took_bucket{le=+Inf}": 1.0,
                "took_count": 1.0,
                "took_sum": 0.5,
            } == values(merged)

    def test_failed_worker_frozen(self):
        """A listed worker whose scrape fails counts with its last known values."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(5, gauge=1)), Scrape("b", {}, counting(7, gauge=2))])

        merged = merger.merge([Scrape("a", {}, counting(6, gauge=1)), Scrape("b", {}, None)])

        assert 13.0 == values(merged)["jobs_total"]
        assert 1.0 == values(merged)["busy"]
        assert frozenset({"b"}) == merged.failed

    def test_unreadable_worker_frozen(self):
        """A worker that answers garbage counts with its last known values too."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(5)), Scrape("b", {}, counting(7))])

        merged = merger.merge([Scrape("a", {}, counting(6)), Scrape("b", {}, b"junk")])

        assert 13.0 == values(merged)["jobs_total"]

    def test_new_process_in_reused_slot(self):
        """A new process in a departed worker's slot is a new target: both count."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("slot0|:1", {"worker": "0"}, counting(5))])

        merged = merger.merge([Scrape("slot0|:2", {"worker": "0"}, counting(1))])

        assert 6.0 == values(merged)["jobs_total"]

    def test_worker_back_from_a_stale_listing(self):
        """A worker missing from one (concurrent, stale) listing is not counted twice."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(5)), Scrape("b", {}, counting(7))])
        merger.merge([Scrape("a", {}, counting(5))])

        merged = merger.merge([Scrape("a", {}, counting(5)), Scrape("b", {}, counting(8))])

        assert 13.0 == values(merged)["jobs_total"]
        later = merger.merge([Scrape("a", {}, counting(5)), Scrape("b", {}, counting(8))])
        assert 13.0 == values(later)["jobs_total"]

    def test_departed_listed_unanswered_stays_departed(self):
        """A departed worker listed again without an answer is still counted once."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(5)), Scrape("b", {}, counting(7))])
        merger.merge([Scrape("a", {}, counting(5))])

        for _ in range(3):
            merged = merger.merge([Scrape("a", {}, counting(5)), Scrape("b", {}, None)])

            assert 12.0 == values(merged)["jobs_total"]

    def test_late_answer_lower(self):
        """An answer older than one merged before does not lower what a worker carries."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(9)), Scrape("b", {}, counting(1))])
        merger.merge([Scrape("a", {}, counting(8)), Scrape("b", {}, counting(1))])

        for _ in range(3):
            merged = merger.merge([Scrape("b", {}, counting(1))])

            assert 10.0 == values(merged)["jobs_total"]

    def test_sums_exact_in_any_order(self):
        """Sums do not depend on the order of workers: no rounding error when one leaves."""
        parts = [0.1, 1e16, 0.3, -1e16, 0.7]
        scrapes_ = [Scrape(str(i), {}, counting(abs(v))) for i, v in enumerate(parts)]
        merger = Merger(aggregate=True)

        first = values(merger.merge(scrapes_))["jobs_total"]
        for leaving in range(len(parts)):
            merger.merge(scrapes_[leaving + 1 :])
            merger.merge(scrapes_[leaving + 1 :])
            assert first == values(merger.merge(scrapes_[leaving + 1 :]))["jobs_total"]

    def test_departed_family_of_another_type(self):
        """A departed worker's family that a live worker types differently is not written."""
        old, new = CollectorRegistry(), CollectorRegistry()
        Counter("x", "X.", registry=old).inc(3)
        Gauge("x", "X.", registry=new).set(1)
        merger = Merger(aggregate=True)
        merger.merge([Scrape("old", {}, body(old))])

        for _ in range(3):
            merged = merger.merge([Scrape("new", {}, body(new))])

            assert {"x": 1.0} == values(merged)


class TestAggregateRules:
    @pytest.mark.parametrize(("rule", "expected"), [("sum", 5.0), ("max", 3.0), ("min", 2.0)])
    def test_gauges(self, rule, expected):
        """Gauges combine by the rule chosen."""
        merged = Merger(aggregate=True, gauges=rule).merge(
            [Scrape("a", {}, counting(1, gauge=2)), Scrape("b", {}, counting(1, gauge=3))]
        )

        assert expected == values(merged)["busy"]

    def test_gauges_per_worker(self):
        """gauges="per-worker" keeps each worker's gauges with its labels; the rest is summed."""
        merged = Merger(aggregate=True, gauges="per-worker").merge(
            [
                Scrape("a", {"worker": "0"}, counting(1, gauge=2)),
                Scrape("b", {"worker": "1"}, counting(4, gauge=3)),
            ]
        )

        assert 5.0 == values(merged)["jobs_total"]
        assert 2.0 == values(merged)["busy{worker=0}"]
        assert 3.0 == values(merged)["busy{worker=1}"]

    def test_nan_gauges(self):
        """Max and min skip NaN, unless every worker says NaN."""
        merged = Merger(aggregate=True, gauges="max").merge(
            [
                Scrape("a", {}, counting(1, gauge=math.nan)),
                Scrape("b", {}, counting(1, gauge=3)),
            ]
        )
        assert 3.0 == values(merged)["busy"]
        alone = Merger(aggregate=True, gauges="min").merge(
            [Scrape("a", {}, counting(1, gauge=math.nan))]
        )
        assert math.isnan(values(alone)["busy"])

    def test_infinite_gauges(self):
        """A sum of +Inf and -Inf is NaN, and one too large is +Inf."""
        merged = Merger(aggregate=True).merge(
            [
                Scrape("a", {}, counting(1, gauge=math.inf)),
                Scrape("b", {}, counting(1, gauge=-math.inf)),
            ]
        )
        assert math.isnan(values(merged)["busy"])
        large = Merger(aggregate=True).merge(
            [Scrape("a", {}, counting(1, gauge=1e308)), Scrape("b", {}, counting(1, gauge=1e308))]
        )
        assert math.inf == values(large)["busy"]

    def test_different_buckets(self):
        """Histograms with different buckets merge over all bounds, as step functions."""
        merged = Merger(aggregate=True).merge(
            [
                Scrape("a", {}, counting(1, buckets=(1.0,))),
                Scrape("b", {}, counting(1, buckets=(0.1, 2.0))),
            ]
        )

        found = values(merged)
        assert [0.0, 1.0, 2.0, 2.0] == [
            found["took_bucket{le=0.1}"],
            found["took_bucket{le=1.0}"],
            found["took_bucket{le=2.0}"],
            found["took_bucket{le=+Inf}"],
        ]
        assert 2.0 == found["took_count"]

    def test_info_and_stateset_once(self):
        """An info or enum series present in several workers is written once, as 1."""
        workers = []
        for state in ("a", "b"):
            registry = CollectorRegistry()
            Info("build", "Build.", registry=registry).info({"version": "1"})
            Enum("mode", "Mode.", states=["a", "b"], registry=registry).state(state)
            workers.append(({"w": state}, registry))

        merged = Merger(aggregate=True).merge(scrapes(workers))

        assert {
            "build_info{version=1}": 1.0,
            "mode{mode=a}": 1.0,
            "mode{mode=b}": 1.0,
        } == values(merged)

    def test_exemplar_of_the_first_worker(self):
        """A summed series keeps the first worker's exemplar, in OpenMetrics only."""
        workers = []
        for trace in ("one", "two"):
            registry = CollectorRegistry()
            Counter("jobs", "Jobs.", registry=registry).inc(exemplar={"trace": trace})
            workers.append(({}, registry))

        merged = Merger(aggregate=True).merge(scrapes(workers))

        written = merged.expose(openmetrics=True, escaping=om.ALLOWUTF8).decode()
        assert 'jobs_total 2.0 # {trace="one"} 1.0 ' in written
        assert "trace" not in merged.expose(openmetrics=False, escaping=om.ALLOWUTF8).decode()

    def test_quantiles_dropped_from_different_series(self):
        """Quantiles go even where workers have different series."""
        workers = []
        for labelsets in ([{}], [{}, {"path": "/a"}]):
            quantiles = Metric("q", "Quantiles.", "summary")
            for labels in labelsets:
                quantiles.samples += [
                    Sample("q", {**labels, "quantile": "0.5"}, 1.0),
                    Sample("q_count", labels, 2.0),
                    Sample("q_sum", labels, 3.0),
                ]
            registry = CollectorRegistry()
            registry.register(Collect(quantiles))
            workers.append(({}, registry))

        merged = Merger(aggregate=True).merge(scrapes(workers))

        assert {"q_count": 4.0, "q_sum": 6.0, "q_count{path=/a}": 2.0, "q_sum{path=/a}": 3.0} == (
            values(merged)
        )

    def test_names_and_created(self):
        """name[] and created=False apply to sums too."""
        merged = Merger(aggregate=True).merge([Scrape("a", {}, counting(2))])

        written = merged.expose(
            openmetrics=False,
            escaping=om.UNDERSCORES,
            names=frozenset({"jobs_total", "jobs_created", "took_sum"}),
            created=False,
        )

        assert (
            b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\n"
            b'jobs_total{kind="a"} 2.0\n'
            b"# HELP took Took.\n# TYPE took histogram\ntook_sum 0.5\n"
        ) == written
        created_only = merged.expose(
            openmetrics=False, escaping=om.UNDERSCORES, names=frozenset({"jobs_created"})
        )
        assert created_only.startswith(
            b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\n"
            b"# HELP jobs_created Jobs.\n# TYPE jobs_created gauge\n"
            b'jobs_created{kind="a"} '
        )

    @pytest.mark.parametrize(("openmetrics", "escaping"), FORMATS)
    def test_names_escaped(self, openmetrics, escaping):
        """Summed series are written with names escaped as the format says."""
        registry = CollectorRegistry()
        Counter("my.jobs", "Jobs.", ["the.kind"], registry=registry).labels("a").inc(2)
        merged = Merger(aggregate=True).merge(scrapes([({}, registry), ({}, registry)]))

        families = oracle.per_worker([({}, registry)])
        for family in families:
            family.samples = [
                s._replace(value=s.value * 2) if s.name.endswith("_total") else s
                for s in family.samples
            ]
        expected = oracle.write(families, openmetrics=openmetrics, escaping=escaping)
        assert expected == merged.expose(openmetrics=openmetrics, escaping=escaping)


class TestCarriedDetails:
    def test_departed_tricky_worker(self):
        """Every counter-like sample of any type is carried when its worker departs."""
        workers = tricky_workers(2, trace="q x")
        merger = Merger(aggregate=True)
        before = values(merger.merge(scrapes(workers)))

        for _ in range(3):
            after = values(merger.merge(scrapes(workers)[:1]))

            carried = {
                name: value
                for name, value in before.items()
                if name.split("{")[0].endswith(("_total", "_count", "_sum", "_bucket"))
                and not name.startswith(("cust_gh", "cust_u"))
            }
            assert carried == {name: after[name] for name in carried}

    def test_infinite_counter_departed(self):
        """An infinite counter stays infinite once carried."""
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, counting(math.inf)), Scrape("b", {}, counting(1))])
        merger.merge([Scrape("a", {}, counting(math.inf)), Scrape("c", {}, counting(2))])

        for _ in range(3):
            merged = merger.merge([])

            assert math.inf == values(merged)["jobs_total"]

    def test_lower_answers_twice(self):
        """A worker's highest counter is remembered over several lower answers."""
        merger = Merger(aggregate=True)
        for value in (9, 8, 7):
            merger.merge([Scrape("a", {}, counting(value)), Scrape("b", {}, counting(1))])

        for _ in range(3):
            assert 10.0 == values(merger.merge([Scrape("b", {}, counting(1))]))["jobs_total"]

    def test_new_series_in_a_worker(self):
        """A worker's new series are counted, and carried when it departs."""
        first, second = CollectorRegistry(), CollectorRegistry()
        Counter("jobs", "Jobs.", ["kind"], registry=first).labels("a").inc(2)
        jobs = Counter("jobs", "Jobs.", ["kind"], registry=second)
        jobs.labels("a").inc(3)
        jobs.labels("b").inc(4)
        merger = Merger(aggregate=True)
        merger.merge([Scrape("w", {}, body(first)), Scrape("x", {}, counting(1))])
        merger.merge([Scrape("w", {}, body(second)), Scrape("x", {}, counting(1))])

        for _ in range(3):
            found = oracle.parsed(
                merger.merge([Scrape("x", {}, counting(1))]).expose(
                    openmetrics=True, escaping=om.ALLOWUTF8
                )
            )
            assert 4.0 == found["jobs_total", frozenset({("kind", "a")})]
            assert 4.0 == found["jobs_total", frozenset({("kind", "b")})]

    def test_family_changing_type(self):
        """A worker whose family changes type between answers is merged as it is now."""
        before, after = CollectorRegistry(), CollectorRegistry()
        Counter("x", "X.", registry=before).inc(4)
        Gauge("x", "X.", registry=after).set(1)
        merger = Merger(aggregate=True)
        merger.merge([Scrape("w", {}, body(before))])

        merged = merger.merge([Scrape("w", {}, body(after))])

        assert {"x": 1.0} == values(merged)

    def test_answers_to_name_filters(self):
        """Samples a worker was not asked for (name[]) keep their last values to carry."""

        def registry(jobs: float, *, new: bool = False) -> CollectorRegistry:
            found = CollectorRegistry()
            Counter("jobs", "Jobs.", registry=found).inc(jobs)
            Histogram("took", "Took.", buckets=(1.0,), registry=found).observe(0.5)
            if new:
                Counter("new", "New.", registry=found).inc(2)
            return found

        names = frozenset({"jobs_total", "new_total"})
        merger = Merger(aggregate=True)
        merger.merge([Scrape("a", {}, body(registry(5))), Scrape("b", {}, body(registry(7)))])
        filtered = merger.merge(
            [
                Scrape(
                    "a",
                    {},
                    render(registry(6), openmetrics=True, escaping="allow-utf-8", names=names),
                ),
                Scrape(
                    "b",
                    {},
                    render(registry(9), openmetrics=True, escaping="allow-utf-8", names=names),
                ),
            ],
            names=names,
        )
        assert {"jobs_total": 15.0} == values(filtered)
        lower = render(registry(8, new=True), openmetrics=True, escaping="allow-utf-8", names=names)
        merger.merge([Scrape("a", {}, body(registry(6))), Scrape("b", {}, lower)], names=names)

        for _ in range(3):
            merged = merger.merge([Scrape("a", {}, body(registry(6)))])

            assert 15.0 == values(merged)["jobs_total"]
            assert 2.0 == values(merged)["took_count"]
            assert 2.0 == values(merged)["new_total"]

    def test_checked_keys_forgotten(self):
        """A family that shrinks forgets the keys it checked, and merges stay right."""
        many, few = CollectorRegistry(), CollectorRegistry()
        gauge = Gauge("g", "G.", ["i"], registry=many)
        for i in range(1000):
            gauge.labels(str(i)).set(i)
        Gauge("g", "G.", ["i"], registry=few).labels("x").set(1)
        merger = Merger()

        for registry in (many, few, many):
            merged = merger.merge([Scrape("t", {"w": "0"}, body(registry))])

            expected = expected_per_worker([({"w": "0"}, registry)], True, om.ALLOWUTF8)
            assert expected == merged.expose(openmetrics=True, escaping=om.ALLOWUTF8)


class TestConcurrency:
    def test_parallel_merges(self):
        """Merges in parallel threads give the results they give one at a time."""
        import concurrent.futures

        workers = tricky_workers(3, trace="q x")
        answers = scrapes(workers)
        for aggregate in (False, True):
            expected = (
                Merger(aggregate=aggregate)
                .merge(answers)
                .expose(openmetrics=True, escaping=om.ALLOWUTF8)
            )
            merger = Merger(aggregate=aggregate)

            def merge(_: int, merger: Merger = merger) -> bytes:
                return merger.merge(answers).expose(openmetrics=True, escaping=om.ALLOWUTF8)

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                results = list(pool.map(merge, range(16)))
            assert [expected] * 16 == results
