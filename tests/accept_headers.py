"""Accept headers that real scrapers and clients send, and what promloop answers to each.

The Prometheus headers are the ones its scrape code builds from
``scrape_protocols`` (one q-value step per protocol it knows, ``*/*`` last);
the Prometheus 2.42 one is also captured from Debian's binary by the
end-to-end suite.  See docs/exposition.md for the rules.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, CONTENT_TYPE_PLAIN_1_0_0
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_1_0_0


PROTOBUF = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)

PROMETHEUS_2_42 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""What Debian's Prometheus 2.42 sends (captured end to end)."""

PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
"""Prometheus 3's default: ``escaping=`` on the 1.0.0 entries only."""

VICTORIA_METRICS = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
"""What VictoriaMetrics's scraper sends (captured end to end)."""


class Case(NamedTuple):
    """An Accept header and the answer it gets."""

    accept: str | None
    content_type: str
    openmetrics: bool
    escaping: str


def _om(escaping: str) -> Case:
    return Case(None, f"{OPENMETRICS_1_0_0}; escaping={escaping}", True, escaping)


def _text(escaping: str) -> Case:
    return Case(None, f"{CONTENT_TYPE_PLAIN_1_0_0}; escaping={escaping}", False, escaping)


_TEXT_0_0_4 = Case(None, CONTENT_TYPE_PLAIN_0_0_4, False, "underscores")
_LATEST = Case(None, CONTENT_TYPE_LATEST, False, "underscores")

REAL_ACCEPT_HEADERS: dict[str, Case] = {
    name: case._replace(accept=accept)
    for name, accept, case in [
        ("prometheus-2.42", PROMETHEUS_2_42, _om("underscores")),
        (
            "prometheus-2.49-default",
            (
                "application/openmetrics-text;version=1.0.0;q=0.5,"
                "application/openmetrics-text;version=0.0.1;q=0.4,"
                "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            ),
            _om("underscores"),
        ),
        (
            "prometheus-2.49-protobuf-first",
            (
                f"{PROTOBUF};q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,"
                "application/openmetrics-text;version=0.0.1;q=0.3,"
                "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
            ),
            _om("underscores"),
        ),
        (
            "prometheus-2.49-text-0.0.4-only",
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.4",
            _TEXT_0_0_4,
        ),
        (
            "prometheus-3.0-default",  # 3.0 put escaping= on every entry
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                "application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,"
                "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
                "text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2"
            ),
            _om("allow-utf-8"),
        ),
        ("prometheus-3-default", PROMETHEUS_3, _om("allow-utf-8")),
        (
            "prometheus-3-escaping-underscores",
            PROMETHEUS_3.replace("allow-utf-8", "underscores"),
            _om("underscores"),
        ),
        ("prometheus-3-escaping-dots", PROMETHEUS_3.replace("allow-utf-8", "dots"), _om("dots")),
        (
            "prometheus-3-escaping-values",
            PROMETHEUS_3.replace("allow-utf-8", "values"),
            _om("values"),
        ),
        (
            "prometheus-3-protobuf-first",
            (
                f"{PROTOBUF};q=0.6,"
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
                "application/openmetrics-text;version=0.0.1;q=0.4,"
                "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
                "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
            ),
            _om("allow-utf-8"),
        ),
        (
            "prometheus-3-text-1.0.0-only",
            "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.6,*/*;q=0.5",
            _text("allow-utf-8"),
        ),
        (
            "prometheus-3-text-1.0.0-then-0.0.4-dots",
            "text/plain;version=1.0.0;escaping=dots;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.4",
            _text("dots"),
        ),
        (
            "prometheus-3-text-0.0.4-only",
            "text/plain;version=0.0.4;q=0.6,*/*;q=0.5",
            _TEXT_0_0_4,
        ),
        (
            "prometheus-3.0-text-0.0.4-only",  # escaping= on a 0.0.4 entry: not echoed
            "text/plain;version=0.0.4;escaping=allow-utf-8;q=0.6,*/*;q=0.5",
            _TEXT_0_0_4,
        ),
        (
            "prometheus-3-openmetrics-0.0.1-first",
            (
                "application/openmetrics-text;version=0.0.1;q=0.6,"
                "text/plain;version=0.0.4;q=0.5,*/*;q=0.4"
            ),
            _om("underscores"),  # 1.0.0, as prometheus-async answers: the same lines
        ),
        (
            "prometheus-3-openmetrics-1.0.0-only",
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,*/*;q=0.5",
            _om("allow-utf-8"),
        ),
        ("prometheus-3-protobuf-only", f"{PROTOBUF};q=0.6,*/*;q=0.5", _LATEST),
        ("text-1.0.0-no-scheme", "text/plain;version=1.0.0", _text("underscores")),
        (
            "text-1.0.0-unknown-scheme",
            "text/plain;version=1.0.0;escaping=allow-utf8",
            _text("underscores"),
        ),
        (
            "openmetrics-1.0.0-no-scheme",
            "application/openmetrics-text;version=1.0.0",
            _om("underscores"),
        ),
        ("openmetrics-2.0.0", "application/openmetrics-text;version=2.0.0", _om("underscores")),
        (
            "openmetrics-2.0.0-utf-8",
            (
                "application/openmetrics-text;version=2.0.0;escaping=allow-utf-8;q=0.7,"
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,*/*;q=0.5"
            ),
            _om("allow-utf-8"),
        ),
        ("openmetrics-no-version", "application/openmetrics-text", _om("underscores")),
        ("victoria-metrics", VICTORIA_METRICS, _TEXT_0_0_4),
        ("no-accept", None, _LATEST),
        ("curl-wget-requests", "*/*", _LATEST),
        (
            "firefox",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            _LATEST,
        ),
        (
            "chrome",
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
            ),
            _LATEST,
        ),
        ("text-no-version", "text/plain", _LATEST),
    ]
}
