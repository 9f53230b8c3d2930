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


async def scraper(
    port: int, until: float, number: int, tally: Tally
) -> list[tuple[bytes, Callable[[str], Any]]]:
    """Scrape back to back until *until*; return the bodies, checked afterwards.

    Parsing while scraping would make this process the bottleneck, and its
    latencies its own: the answers are kept, and parsed once the load is over.
    """
    answers = []
    turn = number
    while time.monotonic() < until:
        headers, parse = FORMATS[turn % len(FORMATS)]
        turn += 1
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


_SAMPLE = re.compile(
    rb'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})?'
    rb" (\S+)(?: \S+)?(?: # \{.*\} \S+(?: \S+)?)?"
)
_COMMENT = re.compile(rb"# (?:HELP|TYPE|UNIT) [a-zA-Z_:][a-zA-Z0-9_:]* .*|# EOF")

FULL_PARSE_EVERY = 16
"""prometheus_client's parsers read every 16th answer of each scraper, and its last; every
answer is checked line by line against the exposition grammar, which is ~50x faster."""


def check(answers: list[tuple[bytes, Callable[[str], Any]]], tally: Tally) -> None:
    """Check one scraper's answers in order: each line well formed, no counter going down."""
    seen: dict[bytes, float] = {}
    for number, (body, parse) in enumerate(answers):
        if number % FULL_PARSE_EVERY == 0 or number == len(answers) - 1:
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
        check_lines(body, seen, tally)


def check_lines(body: bytes, seen: dict[bytes, float], tally: Tally) -> None:
    """Check every line of one answer against the grammar, and counters against *seen*."""
    for line in body.splitlines():
        if line.startswith(b"#"):
            if not _COMMENT.fullmatch(line):
                tally.errors.append(f"malformed: {line!r}")
            continue
        sample = _SAMPLE.fullmatch(line)
        if sample is None:
            tally.errors.append(f"malformed: {line!r}")
            continue
        name = sample[1]
        if not name.endswith(COUNTER_SUFFIXES) or name.endswith(b"_created"):
            continue
        key = name + (sample[2] or b"")
        value = float(sample[3])
        previous = seen.get(key)
        if previous is not None and value < previous:
            tally.decreases.append(f"{key!r}: {previous} -> {value}")
        seen[key] = value


async def main(port: int, concurrency: int, seconds: float) -> None:
    tally = Tally()
    until = time.monotonic() + seconds
    per_scraper = await asyncio.gather(
        *(scraper(port, until, n, tally) for n in range(concurrency))
    )
    for answers in per_scraper:
        check(answers, tally)
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
