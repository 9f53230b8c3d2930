"""monitor_event_loop() and monitor_reactor(): lag, observed while the loop is blocked."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from promloop import aio


def lag(registry, name, suffix):
    return registry.get_sample_value(f"{name}{suffix}")


class TestMonitorEventLoop:
    def test_blocked_loop_shows_lag(self, registry):
        """A loop blocked for 0.3 s records about 0.3 s of lag; a free one almost none."""

        async def main():
            monitor = aio.monitor_event_loop(registry=registry, interval=0.01)
            await asyncio.sleep(0.1)
            free = lag(registry, "promloop_event_loop_lag_seconds", "_sum")
            time.sleep(0.3)  # block the loop on purpose
            await asyncio.sleep(0.05)
            blocked = lag(registry, "promloop_event_loop_lag_seconds", "_sum") - free
            count = lag(registry, "promloop_event_loop_lag_seconds", "_count")
            monitor.stop()
            return free, blocked, count

        free, blocked, count = run_loop(main())

        assert 0.25 <= blocked <= 1.0
        assert free < 0.1
        assert count >= 5

    def test_buckets_reach_past_a_second(self, registry):
        """The histogram's buckets go beyond 1 s."""

        async def main():
            monitor = aio.monitor_event_loop(registry=registry)
            try:
                return registry.get_sample_value(
                    "promloop_event_loop_lag_seconds_bucket", {"le": "2.5"}
                )
            finally:
                monitor.stop()

        assert 0.0 == run_loop(main())

    def test_stop(self, registry):
        """stop() ends the observations and removes the histogram; a new monitor may start."""

        async def main():
            monitor = aio.monitor_event_loop(registry=registry, interval=0.01)
            await asyncio.sleep(0.05)
            monitor.stop()
            monitor.stop()
            gone = lag(registry, "promloop_event_loop_lag_seconds", "_count")
            again = aio.monitor_event_loop(registry=registry, interval=0.01)
            again.stop()
            return monitor.running, gone

        running, gone = run_loop(main())

        assert not running
        assert gone is None

    def test_stop_from_another_thread(self, registry):
        """stop() is safe from another thread."""

        async def main():
            monitor = aio.monitor_event_loop(registry=registry, interval=0.01)
            thread = threading.Thread(target=monitor.stop)
            thread.start()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            await asyncio.sleep(0.05)
            return monitor.running

        assert not run_loop(main())

    def test_stop_after_the_loop_closed(self, registry):
        """A monitor whose loop has ended can still be stopped."""

        async def main():
            return aio.monitor_event_loop(registry=registry)

        monitor = run_loop(main())
        monitor.stop()

        assert not monitor.running
        assert lag(registry, "promloop_event_loop_lag_seconds", "_count") is None

    def test_late_tick_after_stop(self, registry):
        """A tick that races with stop() from another thread observes nothing."""

        async def main():
            monitor = aio.monitor_event_loop(registry=registry, interval=60)
            monitor.stop()
            monitor._tick()  # what a timer already running in the loop would do
            return monitor._histogram.collect()[0].samples

        samples = run_loop(main())

        assert 0.0 == next(s.value for s in samples if s.name.endswith("_count"))

    def test_one_per_registry(self, registry):
        """A second running monitor on one registry is refused, clearly."""

        async def main():
            monitor = aio.monitor_event_loop(registry=registry)
            try:
                with pytest.raises(ValueError, match="already has promloop_event_loop_lag"):
                    aio.monitor_event_loop(registry=registry)
            finally:
                monitor.stop()

        run_loop(main())

    @pytest.mark.parametrize("interval", [0, -1, float("nan"), "1"])
    def test_bad_interval(self, registry, interval):
        """A non-positive or non-numeric interval fails at once."""

        async def main():
            with pytest.raises(ValueError, match="interval= must be a positive number"):
                aio.monitor_event_loop(registry=registry, interval=interval)

        run_loop(main())

    def test_needs_a_running_loop(self, registry):
        """Outside a running loop there is nothing to monitor."""
        with pytest.raises(RuntimeError):
            aio.monitor_event_loop(registry=registry)


def run_loop(coroutine):
    return asyncio.run(coroutine)


class TestMonitorReactor:
    def test_lag_with_a_clock(self, registry):
        """Each late call is observed with exactly how late it ran (a deterministic clock)."""
        pytest.importorskip("twisted")
        from twisted.internet.task import Clock

        from promloop import tx

        clock = Clock()
        monitor = tx.monitor_reactor(registry=registry, interval=0.1, reactor=clock)

        clock.advance(0.1)  # on time
        clock.advance(0.5)  # 0.4 s late

        assert 2.0 == lag(registry, "promloop_reactor_lag_seconds", "_count")
        assert 0.4 == pytest.approx(lag(registry, "promloop_reactor_lag_seconds", "_sum"))
        assert monitor.running

        monitor.stop()
        monitor.stop()
        clock.advance(1)

        assert not monitor.running
        assert lag(registry, "promloop_reactor_lag_seconds", "_count") is None
        assert [] == clock.getDelayedCalls()

    def test_default_reactor(self, registry):
        """Without reactor=, the global reactor is watched."""
        pytest.importorskip("twisted")
        from twisted.internet import reactor

        from promloop import tx

        monitor = tx.monitor_reactor(registry=registry)
        try:
            assert monitor._reactor is reactor
        finally:
            monitor.stop()
