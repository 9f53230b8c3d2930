"""Rendering alone, in CPU instructions: promloop beside prometheus_client, free of noise.

Run:  python benchmarks/count_render.py [SERIES]   (needs valgrind; 20000 series by default)

Timings on a machine that other processes share wander from run to run;
instruction counts do not.  For each variant, valgrind's callgrind counts
the instructions of two processes that build the same registry (one gauge,
a series per child) and render it once, then one and four more times: the
difference, divided by three, is what one render costs once promloop's
line heads exist.  "+ gzip" adds the compression each server applies:
prometheus_client's ``gzip.compress()`` at level 9, promloop's level 1, a piece
of its output at a time, as its servers do.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import tempfile

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from promloop._exposition import gzipped
from promloop._render import render, render_pieces


VARIANTS = {
    "text": (
        generate_latest,
        lambda r: render(r, openmetrics=False, escaping="underscores"),
    ),
    "openmetrics": (
        generate_openmetrics,
        lambda r: render(r, openmetrics=True, escaping="underscores"),
    ),
    "text + gzip": (
        lambda r: gzip.compress(generate_latest(r), 9),
        lambda r: gzipped(render_pieces(r, openmetrics=False, escaping="underscores")),
    ),
}


def child(variant: str, who: int, series: int, renders: int) -> None:
    """In a process valgrind watches: build the registry, render *renders* + 1 times."""
    render(CollectorRegistry(), openmetrics=False, escaping="underscores")  # the self-check
    registry = CollectorRegistry()
    gauge = Gauge("bench_series", "One series per label value.", ["id"], registry=registry)
    for i in range(series):
        gauge.labels(str(i)).set(i)
    action = VARIANTS[variant][who]
    for _ in range(renders + 1):  # the first builds promloop's heads
        action(registry)


def instructions(variant: str, who: int, series: int, renders: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("count_render.py needs valgrind")
    with tempfile.NamedTemporaryFile() as out:
        ran = subprocess.run(  # noqa: S603 -- valgrind running this very script
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={out.name}",
                sys.executable,
                __file__,
                "--child",
                variant,
                str(who),
                str(series),
                str(renders),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return int(re.search(r"Collected : (\d+)", ran.stderr)[1])  # type: ignore[index]


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        variant, who, series, renders = sys.argv[2:]
        child(variant, int(who), int(series), int(renders))
        return
    series = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(f"Python {sys.version.split()[0]}; {series} series of one gauge; instructions per render")
    print(f"{'format':14} {'prometheus_client':>18} {'promloop':>10} {'ratio':>7}")
    for variant in VARIANTS:
        per_render = [
            (instructions(variant, who, series, 4) - instructions(variant, who, series, 1)) / 3
            for who in (0, 1)
        ]
        print(
            f"{variant:14} {per_render[0] / 1e6:16.1f} M {per_render[1] / 1e6:8.1f} M"
            f" {per_render[0] / per_render[1]:6.1f}x"
        )


if __name__ == "__main__":
    main()
