"""Every wrapper, on every path through it, records once and keeps the work's outcome.

The paths differ by what is measured (a coroutine function, a plain function,
its pending result, one awaitable or Deferred) and by the options (none,
``labels=``, ``exemplar=``), which choose between a template and a probe.
Each is run succeeding and failing, with a metric that records and with one
that fails to record after the work.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from promloop import aio


try:
    from twisted.internet.defer import Deferred, fail, succeed
    from twisted.python.failure import Failure

    from promloop import tx
except ImportError:  # the "no Twisted" tox environments
    tx = None  # type: ignore[assignment]


KINDS = ["time", "count_exceptions", "track_inprogress"]

# What each wrapper records when the work succeeds, and when it fails.
RECORDED = {
    "time": (["observe"], ["observe"]),
    "count_exceptions": ([], ["inc"]),
    "track_inprogress": (["inc", "dec"], ["inc", "dec"]),
}

# The method that records after the work, which a broken metric fails.
RECORDS_AFTER = {"time": "observe", "count_exceptions": "inc", "track_inprogress": "dec"}


class Recorder:
    """A metric of every kind, listing what it is asked to do; *broken* fails one method."""

    def __init__(self, broken: str | None = None) -> None:
        self.events: list[str] = []
        self.broken = broken

    def _record(self, method: str) -> None:
        self.events.append(method)
        if method == self.broken:
            msg = f"{method}() is broken"
            raise RuntimeError(msg)

    def observe(self, value, exemplar=None):
        self._record("observe")

    def inc(self, exemplar=None):
        self._record("inc")

    def dec(self):
        self._record("dec")


class Family(Recorder):
    """A labelled parent metric: records nothing itself, hands out its child."""

    def __init__(self, child: Recorder) -> None:
        super().__init__()
        self.child = child

    def labels(self, *values):
        assert ("x",) == values
        return self.child


def options_for(kind: str, option: str, metric: Recorder, *, one_shot: bool) -> tuple[object, dict]:
    """Return the metric to pass and the keyword arguments for *option*."""
    if option == "plain":
        return metric, {}
    if option == "labels":
        labels = (lambda: ("x",)) if one_shot else (lambda *args, **kwargs: ("x",))
        return Family(metric), {"labels": labels}
    exemplar = (lambda: {"trace": "t"}) if one_shot else (lambda *args, **kwargs: {"trace": "t"})
    return metric, {"exemplar": exemplar}


OPTIONS = {
    "time": ["plain", "labels", "exemplar"],
    "count_exceptions": ["plain", "labels", "exemplar"],
    "track_inprogress": ["plain", "labels"],
}


async def work(failing: bool) -> int:
    await asyncio.sleep(0)
    if failing:
        raise KeyError("work failed")
    return 42


def run_aio(kind: str, option: str, form: str, metric: Recorder, failing: bool) -> object:
    """Measure one call of *work* by *form*; return its result or raise its exception."""
    wrapper = getattr(aio, kind)
    target, options = options_for(kind, option, metric, one_shot=form == "one awaitable")
    if form == "one awaitable":
        return asyncio.run(wrapper(target, work(failing), **options))
    if form == "coroutine function":
        return asyncio.run(wrapper(target, **options)(work)(failing))
    if form == "returned coroutine":
        return asyncio.run(wrapper(target, **options)(lambda failing: work(failing))(failing))
    if form == "coroutine callable":  # not a Python function: the wrapper is a proxy
        return asyncio.run(wrapper(target, **options)(functools.partial(work))(failing))
    if form == "plain callable":
        return wrapper(target, **options)(functools.partial(plain))(failing)
    return wrapper(target, **options)(plain)(failing)


def plain(failing: bool) -> int:
    if failing:
        raise KeyError("work failed")
    return 42


def result_of(deferred: Deferred[object]) -> object:
    outcome: list[object] = []
    deferred.addBoth(outcome.append)
    [value] = outcome
    if isinstance(value, Failure):
        value.raiseException()
    return value


def run_tx(kind: str, option: str, form: str, metric: Recorder, failing: bool) -> object:
    """Measure one call by *form*, with already-fired Deferreds; return or raise its outcome."""
    wrapper = getattr(tx, kind)
    target, options = options_for(kind, option, metric, one_shot=form == "one Deferred")

    def fired(failing: bool) -> Deferred[int]:
        return fail(KeyError("work failed")) if failing else succeed(42)

    if form == "one Deferred":
        return result_of(wrapper(target, fired(failing), **options))
    if form == "returned Deferred":
        return result_of(wrapper(target, **options)(fired)(failing))
    if form == "Deferred callable":  # not a Python function: the wrapper is a proxy
        return result_of(wrapper(target, **options)(functools.partial(fired))(failing))
    if form == "async def":

        async def work_twisted(failing: bool) -> int:
            return await fired(failing)

        decorated = wrapper(target, **options)(work_twisted)
        return result_of(Deferred.fromCoroutine(decorated(failing)))
    return wrapper(target, **options)(plain)(failing)


PATHS = [
    pytest.param(run_aio, form, id=f"aio-{form}")
    for form in [
        "one awaitable",
        "coroutine function",
        "returned coroutine",
        "plain function",
        "coroutine callable",
        "plain callable",
    ]
]
if tx is not None:
    PATHS += [
        pytest.param(run_tx, form, id=f"tx-{form}")
        for form in [
            "one Deferred",
            "returned Deferred",
            "async def",
            "plain function",
            "Deferred callable",
        ]
    ]


def expected(kind: str, form: str, *, failing: bool) -> list[str]:
    events = RECORDED[kind][failing]
    if kind == "track_inprogress" and form == "returned coroutine":
        # Up during the call, then again while the coroutine runs: never while it waits.
        return events * 2
    return events


@pytest.mark.parametrize(("run", "form"), PATHS)
@pytest.mark.parametrize(("kind", "option"), [(k, o) for k in KINDS for o in OPTIONS[k]])
@pytest.mark.parametrize("failing", [False, True], ids=["succeeds", "fails"])
@pytest.mark.parametrize("broken", [False, True], ids=["records", "broken"])
class TestEveryPath:
    def test_path(self, run, form, kind, option, failing, broken, caplog):  # noqa: PLR0917 -- pytest parameters
        """The metric records as the wrapper says, on each call; a broken one is only logged."""
        metric = Recorder(RECORDS_AFTER[kind] if broken else None)
        # Twice on the same metric: the second call may take a faster path.
        for _ in range(2):
            metric.events.clear()
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="promloop"):
                if failing:
                    with pytest.raises(KeyError, match="work failed"):
                        run(kind, option, form, metric, failing)
                else:
                    assert 42 == run(kind, option, form, metric, failing)

            events = expected(kind, form, failing=failing)
            assert events == metric.events
            logged = "could not record; the measured call is unaffected" in caplog.text
            assert (broken and bool(events)) == logged
