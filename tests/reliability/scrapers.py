"""Many concurrent scrapers, in a process of their own, checking every answer.

``python -m tests.reliability.scrapers PORT CONCURRENCY SECONDS``: each of
CONCURRENCY scrapers GETs /metrics back to back for SECONDS, alternating text
and OpenMetrics (and gzip), parses every answer with prometheus_client's
parsers, and checks that no counter sample it saw before has gone down.
Prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sys
import time

from typing import TYPE_CHECKING, Any

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from .client import get


if TYPE_CHECKING:
    from collections.abc import Callable


FORMATS: tuple[tuple[dict[str, str], Callable[[str], Any]], ...] = (
    ({}, parse_text),
    ({"accept": "application/openmetrics-text;version=1.0.0"}, parse_openmetrics),
    ({"accept_encoding": "gzip"}, parse_text),
)
COUNTER_SUFFIXES = (b"_total", b"_count", b"_sum", b"_bucket")


class Tally:
    def __init__(self) -> None:
        self.scrapes = 0
        self.parsed = 0
        self.errors: list[str] = []
        self.decreases: list[str] = []
        self.latencies: list[float] = []


class Scraper:
    """One scraper's state across rounds: its next format, and what it has seen."""

    def __init__(self, number: int) -> None:
        self.turn = number
        self.answered = 0
        self.seen: dict[bytes, float] = {}
        """Each counter series' last value, by the start of its line (name and labels)."""
        self.heads: dict[bytes, bool] = {}
        """Line starts checked against the grammar already, and whether each is a counter's."""

    async def scrape(
        self, port: int, until: float, tally: Tally
    ) -> list[tuple[bytes, Callable[[str], Any]]]:
        """Scrape back to back until *until*; return the bodies, checked afterwards.

        Parsing while scraping would make this process the bottleneck, and its
        latencies its own: the answers are kept, and checked once the round is over.
        """
        answers = []
        while time.monotonic() < until:
            headers, parse = FORMATS[self.turn % len(FORMATS)]
            self.turn += 1
            started = time.perf_counter()
            try:
                answer = await get(port, timeout=30, **headers)
            except Exception as error:
                tally.errors.append(repr(error))
                continue
            tally.latencies.append(time.perf_counter() - started)
            if answer.status != 200:
                tally.errors.append(f"status {answer.status}: {answer.body[:200]!r}")
                continue
            body = answer.body
            if answer.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            answers.append((body, parse))
        return answers

    def check(
        self, answers: list[tuple[bytes, Callable[[str], Any]]], tally: Tally, *, last: bool
    ) -> None:
        """Check answers in order: each line well formed, no counter going down.

        prometheus_client's parsers read every FULL_PARSE_EVERY-th answer, and
        the very last one (*last*).
        """
        for number, (body, parse) in enumerate(answers):
            self.answered += 1
            if self.answered % FULL_PARSE_EVERY == 1 or (last and number == len(answers) - 1):
                try:
                    for _ in parse(body.decode()):
                        pass
                except Exception as error:
                    tally.errors.append(f"unparsable: {error!r}")
                    continue
                tally.parsed += 1
            if not body.endswith(b"\n"):
                tally.errors.append(f"truncated: {body[-100:]!r}")
                continue
            tally.scrapes += 1
            self.check_lines(body, tally)

    def check_lines(self, body: bytes, tally: Tally) -> None:
        """Check every line of one answer against the grammar, and counters against *seen*.

        A line whose start (name and labels) passed the grammar before needs
        only its value checked: that keeps the long form's checks from taking
        many times as long as its scrapes.
        """
        for line in body.splitlines():
            if line.startswith(b"#"):
                if not _COMMENT.fullmatch(line):
                    tally.errors.append(f"malformed: {line!r}")
                continue
            head, _, text = line.rpartition(b" ")
            counter = self.heads.get(head)
            if counter is None:
                sample = _SAMPLE.fullmatch(line)
                if sample is None:
                    tally.errors.append(f"malformed: {line!r}")
                    continue
                name = sample[1]
                counter = name.endswith(COUNTER_SUFFIXES) and not name.endswith(b"_created")
                if sample[1] + (sample[2] or b"") == head:  # no timestamp, no exemplar
                    self.heads[head] = counter
                else:
                    head, text = sample[1] + (sample[2] or b""), sample[3]
            try:
                value = float(text)
            except ValueError:
                tally.errors.append(f"malformed: {line!r}")
                continue
            if not counter:
                continue
            previous = self.seen.get(head)
            if previous is not None and value < previous:
                tally.decreases.append(f"{head!r}: {previous} -> {value}")
            self.seen[head] = value


_SAMPLE = re.compile(
    rb'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})?'
    rb" (\S+)(?: \S+)?(?: # \{.*\} \S+(?: \S+)?)?"
)
_COMMENT = re.compile(rb"# (?:HELP|TYPE|UNIT) [a-zA-Z_:][a-zA-Z0-9_:]* .*|# EOF")

FULL_PARSE_EVERY = 16
"""prometheus_client's parsers read every 16th answer of each scraper, and its last; every
answer is checked line by line against the exposition grammar, which is ~50x faster."""

ROUND_SECONDS = 5.0
"""The scrapers pause together every ROUND_SECONDS to check what they got, so that the
long form holds one round's answers at a time, not two minutes' worth (gigabytes)."""


async def main(port: int, concurrency: int, seconds: float) -> None:
    tally = Tally()
    scrapers = [Scraper(number) for number in range(concurrency)]
    remaining = seconds
    while remaining > 0:
        scraping = min(ROUND_SECONDS, remaining)
        remaining -= scraping
        until = time.monotonic() + scraping
        rounds = await asyncio.gather(*(each.scrape(port, until, tally) for each in scrapers))
        for each, answers in zip(scrapers, rounds, strict=True):
            each.check(answers, tally, last=remaining <= 0)
    latencies = sorted(tally.latencies) or [0.0]
    print(  # noqa: T201 -- the result, for the test
        json.dumps(
            {
                "scrapes": tally.scrapes,
                "parsed": tally.parsed,
                "errors": tally.errors[:20],
                "error_count": len(tally.errors),
                "decreases": tally.decreases[:20],
                "latency_p50": latencies[len(latencies) // 2],
                "latency_max": latencies[-1],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
