"""Per-call cost of promloop's wrappers, side by side with a bare call and a hand-written wrapper.

Run:  python benchmarks/bench_wrappers.py [--quick]

For each wrapper (time, count_exceptions, track_inprogress) and each side
(aio: a coroutine function, driven without an event loop so that only the
wrapper is measured; tx: a function returning an already-fired Deferred),
with a no-op metric and with a real prometheus_client metric, it reports
nanoseconds per call for:

- bare:     the undecorated function;
- hand:     a hand-written wrapper doing the same work (the least any wrapper
            can cost);
- promloop: the promloop decorator;
- prometheus-async: its decorator, when it is installed (a peer, never a
            dependency).

and the ratio of wrapper overheads, (promloop - bare) / (hand - bare): the
goal is at most 1.3.  Variants are timed in interleaved rounds and the
fastest round of each is kept, so that a noisy neighbour affects all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import timeit

from time import perf_counter
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from promloop import aio


if TYPE_CHECKING:
    from collections.abc import Callable


try:
    from twisted.internet.defer import succeed

    from promloop import tx
except ImportError:  # pragma: no cover
    tx = None

try:
    import prometheus_async.aio as peer_aio
    import prometheus_async.tx as peer_tx
except ImportError:  # pragma: no cover
    peer_aio = peer_tx = None


class NoOp:
    """A metric that records nothing: the wrapper's own cost stands alone."""

    def observe(self, value: float) -> None:
        pass

    def inc(self) -> None:
        pass

    def dec(self) -> None:
        pass


def drive(coroutine_function: Callable[[], Any]) -> Callable[[], None]:
    """Return a callable that runs one call of a coroutine function to completion, loop-free."""

    def call() -> None:
        with contextlib.suppress(StopIteration):
            coroutine_function().send(None)

    return call


# --- hand-written wrappers: the same work, written out ---------------------------


def hand_aio(kind: str, metric: Any, func: Callable[[], Any]) -> Callable[[], Any]:
    if kind == "time":

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                metric.observe(perf_counter() - start)

        return timed
    if kind == "count_exceptions":

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except Exception:
                metric.inc()
                raise

        return counted

    async def tracked(*args: Any, **kwargs: Any) -> Any:
        metric.inc()
        try:
            return await func(*args, **kwargs)
        finally:
            metric.dec()

    return tracked


def hand_tx(kind: str, metric: Any, func: Callable[[], Any]) -> Callable[[], Any]:
    if kind == "time":

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()

            def observe(result: Any) -> Any:
                metric.observe(perf_counter() - start)
                return result

            return func(*args, **kwargs).addBoth(observe)

        return timed
    if kind == "count_exceptions":

        def count(failure: Any) -> Any:
            metric.inc()
            return failure

        def counted(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs).addErrback(count)

        return counted

    def dec(result: Any) -> Any:
        metric.dec()
        return result

    def tracked(*args: Any, **kwargs: Any) -> Any:
        metric.inc()
        return func(*args, **kwargs).addBoth(dec)

    return tracked


def real_metric(kind: str) -> Any:
    registry = CollectorRegistry()
    if kind == "time":
        return Histogram("bench_seconds", "Benchmark.", registry=registry)
    if kind == "count_exceptions":
        return Counter("bench_failures", "Benchmark.", registry=registry)
    return Gauge("bench_in_progress", "Benchmark.", registry=registry)


def measure(variants: dict[str, Callable[[], None]], number: int, rounds: int) -> dict[str, float]:
    """Return the fastest ns/call of each variant over interleaved rounds."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, call in variants.items():
            seconds = timeit.timeit(call, number=number)
            best[name] = min(best[name], seconds / number * 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    options = parser.parse_args()
    number, rounds = (2_000, 2) if options.quick else (100_000, 7)

    async def work() -> int:
        return 1

    def tx_work() -> Any:
        return succeed(1)

    print(f"Python {sys.version.split()[0]}; ns per call, fastest of {rounds} rounds")
    header = f"{'side':4} {'wrapper':17} {'metric':7} {'bare':>6} {'hand':>6} {'promloop':>8}"
    header += f" {'peer':>6} {'overhead ratio':>15} {'peer ratio':>11}"
    print(header)
    worst = 0.0
    for side in ("aio", "tx"):
        if side == "tx" and tx is None:
            continue
        for kind in ("time", "count_exceptions", "track_inprogress"):
            for metric_kind in ("no-op", "real"):
                metric = NoOp() if metric_kind == "no-op" else real_metric(kind)
                if side == "aio":
                    wrap = drive
                    func, hand, ours = work, hand_aio(kind, metric, work), getattr(aio, kind)
                    peer = getattr(peer_aio, kind) if peer_aio else None
                else:
                    wrap = lambda f: f  # noqa: E731
                    func, hand, ours = tx_work, hand_tx(kind, metric, tx_work), getattr(tx, kind)
                    peer = getattr(peer_tx, kind) if peer_tx else None
                variants = {
                    "bare": wrap(func),
                    "hand": wrap(hand),
                    "promloop": wrap(ours(metric)(func)),
                }
                if peer is not None:
                    variants["peer"] = wrap(peer(metric)(func))
                ns = measure(variants, number, rounds)
                base = ns["hand"] - ns["bare"]
                ratio = (ns["promloop"] - ns["bare"]) / base
                worst = max(worst, ratio)
                peer_ns = ns.get("peer")
                peer_text = f"{peer_ns:6.0f}" if peer_ns else f"{'-':>6}"
                peer_ratio = f"{(peer_ns - ns['bare']) / base:11.2f}" if peer_ns else f"{'-':>11}"
                print(
                    f"{side:4} {kind:17} {metric_kind:7} {ns['bare']:6.0f} {ns['hand']:6.0f} "
                    f"{ns['promloop']:8.0f} {peer_text} {ratio:15.2f} {peer_ratio}"
                )
    print(f"worst overhead ratio (promloop vs hand-written): {worst:.2f} (goal: <= 1.3)")


if __name__ == "__main__":
    main()
