"""Plot the scrape benchmark's stalls: benchmarks/results/scrape.png.

Run:  python benchmarks/plot_scrape.py   (needs matplotlib; reads results/scrape.json,
which ``python benchmarks/bench_scrape.py --json benchmarks/results/scrape.json`` writes)
"""

from __future__ import annotations

import json
import pathlib

from typing import Any

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

    figure, (stalls, large, shares) = plt.subplots(
        1, 3, figsize=(16, 4.8), layout="constrained", width_ratios=(3, 2, 2)
    )
    rows = range(len(names))
    stalls.barh(rows, worst, color=colors, xerr=[[0] * len(names), highest], capsize=3)
    stalls.scatter(frozen, rows, color="black", marker="|", s=200, label="with gc.freeze()")
    _stall_axis(stalls)
    stalls.set_yticks(list(rows), names)
    stalls.invert_yaxis()
    stalls.set_xlabel(
        "worst event-loop stall while scraping 50k series, ms\n"
        "(median of 3 runs; the whisker reaches the highest)"
    )
    stalls.legend(loc="lower right")

    measured = [n for n in names if "large" in results[n]]
    series = results[measured[0]]["large"]["series"]
    big = [results[n]["large"] for n in measured]
    big_rows = range(len(measured))
    large.barh(
        big_rows,
        [b["worst_stall_ms"] for b in big],
        color=[colors[names.index(n)] for n in measured],
        xerr=[[0] * len(big), [b["max_stall_ms"] - b["worst_stall_ms"] for b in big]],
        capsize=3,
    )
    if all("ours_worst_stall_ms" in b for b in big):
        large.scatter(
            [max(b["ours_worst_stall_ms"], 1) for b in big],
            big_rows,
            color="black",
            marker="|",
            s=200,
            label="less the machine's CPU waits",
        )
        large.scatter(
            [max(b["idle_worst_stall_ms"], 1) for b in big],
            big_rows,
            color="#d08020",
            marker="x",
            label="no scrape (the machine)",
        )
        large.legend(loc="upper right", fontsize="small")
    _stall_axis(large)
    large.set_yticks(list(big_rows), measured)
    large.invert_yaxis()
    large.set_xlabel(
        "the same while scraping " + f"{series // 1000:,}k".replace(",", " ") + " series, ms\n"
        "(median of 3 runs; the whisker reaches the highest)"
    )

    shares.barh(rows, concurrent, color=colors)
    shares.set_yticks(list(rows), [""] * len(names))
    shares.invert_yaxis()
    shares.axvline(1.5, color="black", linestyle=":", linewidth=1)  # the goal: 1.5 at most
    shares.set_xlabel("8 concurrent scrapes ÷ 1 scrape\nat 50k series (wall time)")

    figure.suptitle("Scraping promloop (blue) and the alternatives, side by side")
    figure.savefig(RESULTS / "scrape.png", dpi=100)


def _stall_axis(axes: Any) -> None:
    """A log scale from 1 ms to 3 s, with the goal (10 ms at most) dotted."""
    axes.set_xscale("log")
    axes.minorticks_off()
    axes.set_xlim(1, 3000)
    ticks = [1, 3, 10, 30, 100, 300, 1000, 3000]
    axes.set_xticks(ticks, [str(t) for t in ticks])
    axes.axvline(10, color="black", linestyle=":", linewidth=1)


if __name__ == "__main__":
    main()
