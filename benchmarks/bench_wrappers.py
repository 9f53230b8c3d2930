"""What promloop's wrappers cost per call, next to the same metric calls written inline.

Run:  python benchmarks/bench_wrappers.py [--quick] [--rows TEXT] [--rounds N]

Each row is one way of measuring one call, with a real prometheus_client
metric.  Its variants do the same work, and are timed in interleaved rounds,
in this one process:

- bare:     the work, unmeasured;
- inline:   the work with the metric calls written into it by hand -- the
            floor: no wrapper can cost less;
- hand:     a minimal hand-written wrapper around the work (a decorator, or a
            helper for the one-shot forms);
- promloop: promloop's wrapper;
- peer:     prometheus-async's wrapper, when it is installed (a peer for the
            comparison, never a dependency of promloop).

A variant's overhead is its time above bare's.  The first table gives each
wrapper's overhead as a multiple of inline's ("x inline": 1.00 means the
wrapper costs exactly what writing the metric calls inline costs), and
promloop's as a multiple of the hand-written wrapper's: "best" from each
variant's best round, "median" the median of the ratios within each round.  The second table shows
what promloop's generated code saves: the same decorators made by a probe
(the generic start/stop pair every recipe has), by a template as written
(``*args, **kwargs``), and by the template specialized to the function's own
parameters, which is what promloop uses.

asyncio coroutines are driven without an event loop, so that the loop's
scheduling does not drown the wrapper's cost; Twisted's Deferreds have
already fired.  Many short rounds: on a shared machine, the best of them is
the least disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import timeit

from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import promloop.aio._decorators as aio_decorators

from promloop import aio
from promloop._probes import make_probe
from promloop._recipes import COUNT, TIME, TRACK, make_recipe
from promloop._templates import COROUTINE_FUNCTION_TEMPLATES
from promloop._templating import specialize
from promloop._wrappers import probed_coroutine_function
from promloop.aio import time as imported_time
from promloop.aio import track_inprogress as imported_track


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


try:
    from twisted.internet.defer import Deferred, succeed

    from promloop import tx
except ImportError:  # pragma: no cover
    tx = None

try:
    import prometheus_async.aio as peer_aio
except ImportError:  # pragma: no cover
    peer_aio = None
try:
    import prometheus_async.tx as peer_tx
except ImportError:  # pragma: no cover
    peer_tx = None


# The rows of issue 13, and their goals: promloop's overhead as a multiple of
# inline's, best round.
GOALS = {
    "aio @time": 1.2,
    "aio @track_inprogress": 1.2,
    "aio await time(m, coro)": 1.3,
    "aio await track_inprogress(m, coro)": 1.3,
    "aio @count_exceptions, raising": 1.5,
    "tx @time": 1.2,
    "tx time(m, deferred)": 1.3,
}


@dataclass
class Row:
    name: str
    variants: dict[str, Callable[[], Any]] = field(default_factory=dict)


@dataclass
class Metrics:
    histogram: Histogram
    counter: Counter
    gauge: Gauge

    @classmethod
    def fresh(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            Histogram("bench_seconds", "Benchmark.", registry=registry),
            Counter("bench_failures", "Benchmark.", registry=registry),
            Gauge("bench_in_progress", "Benchmark.", registry=registry),
        )


# --- the work, and driving it -----------------------------------------------------


def driven(coroutine_function: Callable[[], Any]) -> Callable[[], None]:
    """Run one call of a coroutine function that never suspends, loop-free."""

    def call() -> None:
        try:  # noqa: SIM105 -- contextlib.suppress() would cost more than some variants
            coroutine_function().send(None)
        except StopIteration:
            pass

    return call


def driven_raising(coroutine_function: Callable[[], Any]) -> Callable[[], None]:
    """Run one call of a coroutine function that raises ValueError, and catch it."""

    def call() -> None:
        try:  # noqa: SIM105 -- as in driven()
            coroutine_function().send(None)
        except ValueError:
            pass

    return call


async def work() -> int:
    return 1


async def broken() -> int:
    raise ValueError


async def await_work() -> int:
    return await work()


def tx_work() -> Any:
    return succeed(1)


def with_peer(variants: dict[str, Any], make_peer: Callable[[], Any] | None) -> dict[str, Any]:
    if make_peer is not None:
        variants["peer"] = make_peer()
    return variants


# --- asyncio decorators -----------------------------------------------------------


def aio_time(m: Metrics) -> Row:
    async def inline() -> int:
        started = perf_counter()
        try:
            return 1
        finally:
            m.histogram.observe(perf_counter() - started)

    def hand(func: Callable[[], Any]) -> Callable[[], Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                m.histogram.observe(perf_counter() - started)

        return timed

    peer = (lambda: driven(peer_aio.time(m.histogram)(work))) if peer_aio else None
    variants = {
        "bare": driven(work),
        "inline": driven(inline),
        "hand": driven(hand(work)),
        "promloop": driven(aio.time(m.histogram)(work)),
    }
    return Row("aio @time", with_peer(variants, peer))


def hand_counting(counter: Counter, func: Callable[[], Any]) -> Callable[[], Any]:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except Exception:
            counter.inc()
            raise

    return counted


def aio_count(m: Metrics) -> Row:
    async def inline() -> int:
        try:
            return 1
        except Exception:
            m.counter.inc()
            raise

    peer = (lambda: driven(peer_aio.count_exceptions(m.counter)(work))) if peer_aio else None
    variants = {
        "bare": driven(work),
        "inline": driven(inline),
        "hand": driven(hand_counting(m.counter, work)),
        "promloop": driven(aio.count_exceptions(m.counter)(work)),
    }
    return Row("aio @count_exceptions", with_peer(variants, peer))


def aio_count_raising(m: Metrics) -> Row:
    async def inline() -> int:
        try:
            raise ValueError  # noqa: TRY301 -- the work raises; its own code counts
        except Exception:
            m.counter.inc()
            raise

    peer = (
        (lambda: driven_raising(peer_aio.count_exceptions(m.counter)(broken))) if peer_aio else None
    )
    variants = {
        "bare": driven_raising(broken),
        "inline": driven_raising(inline),
        "hand": driven_raising(hand_counting(m.counter, broken)),
        "promloop": driven_raising(aio.count_exceptions(m.counter)(broken)),
    }
    return Row("aio @count_exceptions, raising", with_peer(variants, peer))


def aio_track(m: Metrics) -> Row:
    async def inline() -> int:
        m.gauge.inc()
        try:
            return 1
        finally:
            m.gauge.dec()

    def hand(func: Callable[[], Any]) -> Callable[[], Any]:
        async def tracked(*args: Any, **kwargs: Any) -> Any:
            m.gauge.inc()
            try:
                return await func(*args, **kwargs)
            finally:
                m.gauge.dec()

        return tracked

    peer = (lambda: driven(peer_aio.track_inprogress(m.gauge)(work))) if peer_aio else None
    variants = {
        "bare": driven(work),
        "inline": driven(inline),
        "hand": driven(hand(work)),
        "promloop": driven(aio.track_inprogress(m.gauge)(work)),
    }
    return Row("aio @track_inprogress", with_peer(variants, peer))


# --- asyncio: one awaitable -------------------------------------------------------
# A caller awaits one coroutine, measured.


def aio_one_time(m: Metrics) -> Row:
    async def inline() -> int:
        started = perf_counter()
        try:
            return await work()
        finally:
            m.histogram.observe(perf_counter() - started)

    async def timed(awaitable: Any, started: float) -> Any:
        try:
            return await awaitable
        finally:
            m.histogram.observe(perf_counter() - started)

    async def hand() -> int:
        return await timed(work(), perf_counter())

    async def ours() -> int:
        return await aio.time(m.histogram, work())

    async def peer() -> int:
        return await peer_aio.time(m.histogram, work())

    variants = {
        "bare": driven(await_work),
        "inline": driven(inline),
        "hand": driven(hand),
        "promloop": driven(ours),
    }
    return Row("aio await time(m, coro)", with_peer(variants, peer_aio and (lambda: driven(peer))))


def aio_one_count(m: Metrics) -> Row:
    async def inline() -> int:
        try:
            return await work()
        except Exception:
            m.counter.inc()
            raise

    async def counted(awaitable: Any) -> Any:
        try:
            return await awaitable
        except Exception:
            m.counter.inc()
            raise

    async def hand() -> int:
        return await counted(work())

    async def ours() -> int:
        return await aio.count_exceptions(m.counter, work())

    async def peer() -> int:
        return await peer_aio.count_exceptions(m.counter, work())

    variants = {
        "bare": driven(await_work),
        "inline": driven(inline),
        "hand": driven(hand),
        "promloop": driven(ours),
    }
    name = "aio await count_exceptions(m, coro)"
    return Row(name, with_peer(variants, peer_aio and (lambda: driven(peer))))


def aio_one_track(m: Metrics) -> Row:
    async def inline() -> int:
        m.gauge.inc()
        try:
            return await work()
        finally:
            m.gauge.dec()

    async def tracked(awaitable: Any) -> Any:
        m.gauge.inc()
        try:
            return await awaitable
        finally:
            m.gauge.dec()

    async def hand() -> int:
        return await tracked(work())

    async def ours() -> int:
        return await aio.track_inprogress(m.gauge, work())

    async def peer() -> int:
        return await peer_aio.track_inprogress(m.gauge, work())

    variants = {
        "bare": driven(await_work),
        "inline": driven(inline),
        "hand": driven(hand),
        "promloop": driven(ours),
    }
    name = "aio await track_inprogress(m, coro)"
    return Row(name, with_peer(variants, peer_aio and (lambda: driven(peer))))


# --- Twisted: decorators on a function returning a Deferred, and one Deferred ------


def tx_parts(m: Metrics) -> list[tuple[str, Any, Any, Any, Any]]:  # noqa: C901 -- one closure a variant
    """Return each wrapper's name, metric, inline work, hand-written decorator and helper."""

    def timed_inline() -> Deferred[int]:
        started = perf_counter()

        def observe(result: Any) -> Any:
            m.histogram.observe(perf_counter() - started)
            return result

        return succeed(1).addBoth(observe)

    def observe_since(result: Any, started: float) -> Any:
        m.histogram.observe(perf_counter() - started)
        return result

    def hand_time(func: Callable[[], Any]) -> Callable[[], Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs).addBoth(observe_since, perf_counter())

        return timed

    def count(failure: Any) -> Any:
        m.counter.inc()
        return failure

    def counted_inline() -> Deferred[int]:
        return succeed(1).addErrback(count)

    def hand_count(func: Callable[[], Any]) -> Callable[[], Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs).addErrback(count)

        return counted

    def dec(result: Any) -> Any:
        m.gauge.dec()
        return result

    def tracked_inline() -> Deferred[int]:
        m.gauge.inc()
        return succeed(1).addBoth(dec)

    def hand_track(func: Callable[[], Any]) -> Callable[[], Any]:
        def tracked(*args: Any, **kwargs: Any) -> Any:
            m.gauge.inc()
            return func(*args, **kwargs).addBoth(dec)

        return tracked

    def one_timed_hand() -> Deferred[int]:
        return succeed(1).addBoth(observe_since, perf_counter())

    return [
        ("time", m.histogram, timed_inline, hand_time, one_timed_hand),
        ("count_exceptions", m.counter, counted_inline, hand_count, counted_inline),
        ("track_inprogress", m.gauge, tracked_inline, hand_track, tracked_inline),
    ]


def tx_rows(m: Metrics) -> list[Row]:
    rows = []
    for name, metric, inline, hand, one_hand in tx_parts(m):
        ours = getattr(tx, name)
        decorated = {
            "bare": tx_work,
            "inline": inline,
            "hand": hand(tx_work),
            "promloop": ours(metric)(tx_work),
        }
        one = {
            "bare": tx_work,
            "inline": inline,
            "hand": one_hand,
            "promloop": one_shot(ours, metric),
        }
        if peer_tx:
            peer = getattr(peer_tx, name)
            decorated["peer"] = peer(metric)(tx_work)
            one["peer"] = one_shot(peer, metric)
        rows += [Row(f"tx @{name}", decorated), Row(f"tx {name}(m, deferred)", one)]
    return rows


def one_shot(wrapper: Callable[[Any, Any], Any], metric: Any) -> Callable[[], Any]:
    """Measure one fired Deferred with *wrapper*, in its one-shot form."""
    return lambda: wrapper(metric, succeed(1))


# --- what the generated code saves ---------------------------------------------------


def template_rows(m: Metrics) -> list[Row]:
    """The same decorators, made by a probe, by a template as written, and specialized."""
    side = aio_decorators._SIDE  # noqa: SLF001 -- the benchmark compares promloop's own parts
    inline_rows = {
        row.name: row.variants for row in (aio_time(m), aio_count_raising(m), aio_track(m))
    }
    rows = []
    for name, kind, metric, func, drive in [
        ("aio @time", TIME, m.histogram, work, driven),
        ("aio @count_exceptions, raising", COUNT, m.counter, broken, driven_raising),
        ("aio @track_inprogress", TRACK, m.gauge, work, driven),
    ]:
        recipe = make_recipe(kind, metric)
        probe = make_probe(recipe, aio_decorators)
        template = COROUTINE_FUNCTION_TEMPLATES[kind]
        variants = {
            "bare": inline_rows[name]["bare"],
            "inline": inline_rows[name]["inline"],
            "probe": drive(probed_coroutine_function(func, probe)),
            "template": drive(template(func, recipe, probe, side)),
            "specialized": drive(specialize(template, func)(func, recipe, probe, side)),
        }
        rows.append(Row(name, variants))
    return rows


# --- where the rest goes: the rows that miss their goal, taken apart -------------------


def floor_rows(m: Metrics) -> list[Row]:
    """Hand-written variants that show what the rows short of their goal pay for.

    The one-shot forms: promloop called by its imported name, and as ``aio.time``
    (an attribute of :mod:`promloop.aio`; a module ``__getattr__`` there would stop
    CPython from specializing the look-up, which is why promloop.aio has none when
    aiohttp is installed).  ``count_exceptions()`` on a raising
    call: hand-written wrappers with the function's exact parameters, counting
    every ``Exception``, or every exception but asyncio's cancellation (promloop's
    default leaves all cancellation uncounted: trio's, Twisted's, groups of them).
    """
    one_time, one_track = aio_one_time(m).variants, aio_one_track(m).variants

    async def time_imported() -> int:
        return await imported_time(m.histogram, work())

    async def track_imported() -> int:
        return await imported_track(m.gauge, work())

    raising = aio_count_raising(m).variants
    counter = m.counter

    async def exact_exception() -> int:
        try:
            return await broken()
        except Exception:
            counter.inc()
            raise

    async def exact_base_exception() -> int:
        try:
            return await broken()
        except asyncio.CancelledError:
            raise
        except BaseException:
            counter.inc()
            raise

    return [
        Row(
            "aio await time(m, coro)",
            {
                "bare": one_time["bare"],
                "inline": one_time["inline"],
                "hand helper": one_time["hand"],
                "promloop, time(...)": driven(time_imported),
                "promloop, aio.time(...)": one_time["promloop"],
            },
        ),
        Row(
            "aio await track_inprogress(m, coro)",
            {
                "bare": one_track["bare"],
                "inline": one_track["inline"],
                "hand helper": one_track["hand"],
                "promloop, track_inprogress(...)": driven(track_imported),
                "promloop, aio.track_inprogress(...)": one_track["promloop"],
            },
        ),
        Row(
            "aio @count_exceptions, raising",
            {
                "bare": raising["bare"],
                "inline": raising["inline"],
                "hand, *args, **kwargs": raising["hand"],
                "hand, exact parameters": driven_raising(exact_exception),
                "hand, exact, cancellation apart": driven_raising(exact_base_exception),
                "promloop": raising["promloop"],
            },
        ),
    ]


# --- measuring and reporting --------------------------------------------------------


class Timings:
    """The ns per call of each variant of a row, round by round."""

    def __init__(self, row: Row, number: int, rounds: int) -> None:
        self.rounds: list[dict[str, float]] = []
        for _ in range(rounds):
            self.rounds.append(
                {
                    name: timeit.timeit(call, number=number) / number * 1e9
                    for name, call in row.variants.items()
                }
            )
        self.best = {name: min(r[name] for r in self.rounds) for name in row.variants}

    def best_ratio(self, variant: str, floor: str) -> float:
        """The overhead ratio of each variant's best round: the least disturbed."""
        return ratio(self.best, variant, floor)

    def median_ratio(self, variant: str, floor: str) -> float:
        """The median of the ratios within each round, whose variants ran back to back."""
        return statistics.median(ratio(r, variant, floor) for r in self.rounds)

    def ratios(self, variant: str, floor: str) -> str:
        if variant not in self.best:
            return f"{'-':>12}"
        if self.best[floor] - self.best["bare"] < 0.05 * self.best["bare"]:  # nothing to divide by
            return f"{'(no floor)':>12}"
        return f"{self.best_ratio(variant, floor):5.2f} {self.median_ratio(variant, floor):6.2f}"


def ratio(timings: dict[str, float], variant: str, floor: str) -> float:
    return (timings[variant] - timings["bare"]) / (timings[floor] - timings["bare"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few iterations: a smoke run")
    parser.add_argument("--rows", default="", help="only the rows whose name contains this")
    parser.add_argument("--rounds", type=int, default=300, help="rounds of 500 calls per row")
    options = parser.parse_args()
    number, rounds = (500, 3) if options.quick else (500, options.rounds)

    metrics = Metrics.fresh()
    rows = [
        make(metrics)
        for make in (
            aio_time,
            aio_count,
            aio_count_raising,
            aio_track,
            aio_one_time,
            aio_one_count,
            aio_one_track,
        )
    ]
    if tx is not None:
        rows += tx_rows(Metrics.fresh())

    print_goal_table(rows, options.rows, number, rounds)
    print_template_table(options.rows, number, rounds)
    print_floor_table(options.rows, number, rounds)


def timed(rows: list[Row], only: str, number: int, rounds: int) -> Iterator[tuple[Row, Timings]]:
    """Time the rows whose name contains *only*, one after another."""
    for row in rows:
        if only in row.name:
            yield row, Timings(row, number, rounds)


def print_head(header: str, subheader: str) -> None:
    print(header)
    print(subheader)
    print("-" * len(header))


def print_goal_table(rows: list[Row], only: str, number: int, rounds: int) -> None:
    peer = "prometheus-async" if peer_aio else "prometheus-async not installed"
    print(f"Python {sys.version.split()[0]}; {rounds} interleaved rounds of {number} calls; {peer}")
    print(
        "ns per call in each variant's best round; overhead ratios from those best rounds,"
        " and the median of the ratios within each round"
    )
    print()
    header = (
        f"{'row':37} {'bare':>5} {'inline':>6} {'hand':>5} {'promloop':>8} {'peer':>5} |"
        f" {'promloop x inline':>17} {'peer x inline':>13} {'promloop x hand':>15} {'goal':>4}"
    )
    print_head(header, f"{'':72}| {'best median':>17} {'best median':>13} {'best median':>15}")
    misses = []
    for row, timings in timed(rows, only, number, rounds):
        best = timings.best
        goal = GOALS.get(row.name)
        if goal is not None and timings.best_ratio("promloop", "inline") > goal:
            misses.append(row.name)
        peer_ns = f"{best['peer']:5.0f}" if "peer" in best else f"{'-':>5}"
        print(
            f"{row.name:37} {best['bare']:5.0f} {best['inline']:6.0f} {best['hand']:5.0f}"
            f" {best['promloop']:8.0f} {peer_ns} |"
            f" {timings.ratios('promloop', 'inline'):>17}"
            f" {timings.ratios('peer', 'inline'):>13}"
            f" {timings.ratios('promloop', 'hand'):>15}"
            f" {goal if goal is not None else '':>4}"
        )
    print()
    print("Rows that miss their goal in this run (best round):", ", ".join(misses) or "none")


def print_template_table(only: str, number: int, rounds: int) -> None:
    print()
    print("What the generated code saves: the decorators above made three ways")
    print()
    header = (
        f"{'row':37} {'probe':>6} {'template':>8} {'specialized':>11} |"
        f" {'probe x inline':>14} {'template x inline':>17} {'specialized x inline':>20}"
    )
    print_head(header, f"{'':66}| {'best median':>14} {'best median':>17} {'best median':>20}")
    for row, timings in timed(template_rows(Metrics.fresh()), only, number, rounds):
        best = timings.best
        print(
            f"{row.name:37} {best['probe']:6.0f} {best['template']:8.0f}"
            f" {best['specialized']:11.0f} |"
            f" {timings.ratios('probe', 'inline'):>14}"
            f" {timings.ratios('template', 'inline'):>17}"
            f" {timings.ratios('specialized', 'inline'):>20}"
        )


def print_floor_table(only: str, number: int, rounds: int) -> None:
    print()
    print("Where the rest goes: the rows short of their goal, next to hand-written variants")
    print()
    header = f"{'row':37} {'variant':36} {'ns':>5} | {'x inline':>12}"
    print_head(header, f"{'':80}| {'best median':>12}")
    for row, timings in timed(floor_rows(Metrics.fresh()), only, number, rounds):
        for variant in row.variants:
            if variant in {"bare", "inline"}:
                continue
            print(
                f"{row.name:37} {variant:36} {timings.best[variant]:5.0f} |"
                f" {timings.ratios(variant, 'inline'):>12}"
            )


if __name__ == "__main__":
    main()
