"""Plot the scrape benchmark's stalls: benchmarks/results/scrape.png.

Run:  python benchmarks/plot_scrape.py   (needs matplotlib; reads results/scrape.json,
which ``python benchmarks/bench_scrape.py --json benchmarks/results/scrape.json`` writes)
"""

from __future__ import annotations

import json
import pathlib

import matplotlib as mpl


mpl.use("Agg")

import matplotlib.pyplot as plt


RESULTS = pathlib.Path(__file__).parent / "results"


def main() -> None:
    results = json.loads((RESULTS / "scrape.json").read_text())
    names = list(results)
    worst = [results[n]["worst_stall_ms"] for n in names]
    highest = [results[n]["max_stall_ms"] - results[n]["worst_stall_ms"] for n in names]
    frozen = [results[n]["worst_stall_frozen_ms"] for n in names]
    concurrent = [results[n]["eight_concurrent_vs_one"] for n in names]
    colors = ["#2a7ab0" if n.startswith("promloop") else "#9a9a9a" for n in names]

    figure, (stalls, shares) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    rows = range(len(names))
    stalls.barh(rows, worst, color=colors, xerr=[[0] * len(names), highest], capsize=3)
    stalls.scatter(frozen, rows, color="black", marker="|", s=200, label="with gc.freeze()")
    stalls.set_xscale("log")
    stalls.minorticks_off()
    stalls.set_xlim(1, 1500)
    stalls.set_xticks([1, 3, 10, 30, 100, 300, 1000], ["1", "3", "10", "30", "100", "300", "1000"])
    stalls.axvline(10, color="black", linestyle=":", linewidth=1)  # the goal: 10 ms at most
    stalls.set_yticks(list(rows), names)
    stalls.invert_yaxis()
    stalls.set_xlabel(
        "worst event-loop stall while scraping 50k series, ms, log scale\n"
        "(median of 3 runs; the whisker reaches the highest)"
    )
    stalls.legend(loc="lower right")

    shares.barh(rows, concurrent, color=colors)
    shares.set_yticks(list(rows), [""] * len(names))
    shares.invert_yaxis()
    shares.axvline(1.5, color="black", linestyle=":", linewidth=1)  # the goal: 1.5 at most
    shares.set_xlabel("8 concurrent scrapes ÷ 1 scrape (wall time)")

    figure.suptitle("Scraping 50k series: promloop (blue) and the alternatives, side by side")
    figure.savefig(RESULTS / "scrape.png", dpi=110)


if __name__ == "__main__":
    main()
