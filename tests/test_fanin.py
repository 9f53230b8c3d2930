"""The fan-in: one scrape for a fleet of workers registered in a file_sd directory (docs: fleet).

Workers are real promloop servers on 127.0.0.1 (registered with FileSD), and
misbehaving targets are a small aiohttp app; the fan-in runs in the test's
event loop, and is scraped over HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gzip
import json
import logging
import os
import pathlib
import socket
import threading
import time

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

import aiohttp
import yarl

from aiohttp import web
from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

from promloop import BasicAuth, BearerToken, _exposition, _merge
from promloop._file_sd import Target
from promloop.aio import _fleet
from promloop.aio.fanin import start_fanin
from promloop.aio.sd import FileSD
from promloop.aio.web import start_http_server

from .conftest import CountingClock
from .peers import free_port, port_is_free
from .test_file_sd import StandIn, Worker


run = asyncio.run
OPENMETRICS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "Accept-Encoding": "identity",
}
TEXT = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "identity"}


async def fetch(url, headers=None, *, auth=None):
    """Return (status, headers, raw body) of a GET, without decompressing."""
    headers = CIMultiDict(headers or TEXT)  # a header may be repeated
    if auth is not None:
        headers["Authorization"] = auth.authorization()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers=headers) as response,
    ):
        return response.status, response.headers, await response.read()


def samples(body, *, openmetrics=False):
    """Map (sample name, sorted labels) to value."""
    parse = openmetrics_families if openmetrics else text_families
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(body.decode())
        for s in family.samples
    }


def jobs(count, *, registry=None):
    """Return a worker's registry: a counter of jobs done and a gauge of jobs waiting."""
    registry = registry or CollectorRegistry()
    Counter("jobs", "Jobs done.", registry=registry).inc(count)
    Gauge("queue", "Jobs waiting.", registry=registry).set(count)
    return registry


async def worker(directory, registry, **kwargs):
    """Start a worker's own server, registered in *directory* with a slot."""
    return await start_http_server(
        addr="127.0.0.1",
        registry=registry,
        service_discovery=FileSD(directory, slot="worker", **kwargs),
    )


@contextlib.asynccontextmanager
async def fanin(directory, **kwargs):
    server = await start_fanin(directory, addr="127.0.0.1", **kwargs)
    try:
        yield server
    finally:
        await server.close()


def target_file(directory, name, address, **labels):
    """Write a target file by hand, as something other than FileSD would."""
    (directory / name).write_text(json.dumps([{"targets": [address], "labels": labels}]))


# Targets that answer badly, or not at all, each on a path of its own.


async def garbage(request):
    return web.Response(
        body=b"this is not OpenMetrics\n",
        headers={"Content-Type": "application/openmetrics-text; version=1.0.0"},
    )


async def text(request):
    return web.Response(
        body=b"# TYPE x counter\nx_total 1\n", headers={"Content-Type": "text/plain"}
    )


async def error(request):
    return web.Response(status=500, text="broken")


async def silent(request):
    await asyncio.sleep(3600)


async def drip(request):
    # 10 MB, slowly: cut at the deadline.
    response = web.StreamResponse(
        headers={"Content-Type": "application/openmetrics-text; version=1.0.0"}
    )
    response.content_length = 10 * 1024 * 1024
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the fan-in hung up, as it should
        for _ in range(160):
            await response.write(b"#" * 65536)
            await asyncio.sleep(0.05)
    return response


async def large(request):
    return web.Response(
        body=b"# EOF\n" * 1000,
        headers={"Content-Type": "application/openmetrics-text; version=1.0.0"},
    )


async def unannounced(request):
    # As large, but chunked: no Content-Length to refuse it by.
    response = web.StreamResponse(
        headers={"Content-Type": "application/openmetrics-text; version=1.0.0"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        for _ in range(100):
            await response.write(b"# EOF\n" * 10)
    return response


BAD_TARGETS = (garbage, text, error, silent, drip, large, unannounced)


@contextlib.asynccontextmanager
async def misbehaving():
    """Serve the bad targets; yield their address."""
    app = web.Application()
    for handler in BAD_TARGETS:
        app.router.add_get(f"/{handler.__name__}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def hang_up(reader, writer):
    """Answer the start of a 100 kB OpenMetrics answer, then hang up."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
        b"Content-Type: application/openmetrics-text; version=1.0.0\r\n\r\n# HELP a"
    )
    await writer.drain()
    writer.transport.abort()


@contextlib.contextmanager
def targets_elsewhere():
    """Serve the bad targets, and one that hangs up mid-answer, from a thread's event loop.

    Yield the bad targets' address and the other's.
    """
    ready = concurrent.futures.Future()
    stop = threading.Event()

    async def serve():
        cutting = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        async with misbehaving() as address:
            ready.set_result((address, f"127.0.0.1:{cutting.sockets[0].getsockname()[1]}"))
            while not stop.is_set():
                await asyncio.sleep(0.05)
        cutting.close()
        await cutting.wait_closed()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="bad-targets")
    thread.start()
    try:
        yield ready.result(30)
    finally:
        stop.set()
        thread.join(30)


class TestMerging:
    def test_per_worker(self, tmp_path):
        """Each worker's samples carry its slot label; one HELP and TYPE per family."""

        async def main():
            first = await worker(tmp_path, jobs(3))
            second = await worker(tmp_path, jobs(5))
            async with fanin(tmp_path) as server:
                answer = await fetch(server.metrics_url)
            await first.close()
            await second.close()
            return answer

        status, headers, body = run(main())
        values = samples(body)

        assert 200 == status
        assert "text/plain; version=0.0.4; charset=utf-8" == headers["Content-Type"]
        assert 3.0 == values["jobs_total", (("worker", "0"),)]
        assert 5.0 == values["jobs_total", (("worker", "1"),)]
        assert 5.0 == values["queue", (("worker", "1"),)]
        assert 1 == body.count(b"# TYPE jobs_total counter")
        assert 1.0 == values["promloop_fanin_target_up", (("worker", "0"),)]
        assert 1.0 == values["promloop_fanin_target_up", (("worker", "1"),)]
        assert 0.0 == values["promloop_fanin_conflicts_total", ()]
        assert ("promloop_fanin_target_scrape_duration_seconds", (("worker", "0"),)) in values

    def test_aggregate_carries_departed_counters(self, tmp_path):
        """With aggregate=True, counters are summed, and a worker that left still counts."""

        async def main():
            first = await worker(tmp_path, jobs(3))
            second = await worker(tmp_path, jobs(5))
            async with fanin(tmp_path, aggregate=True, gauges="max") as server:
                both = samples((await fetch(server.metrics_url))[2])
                await second.close()
                one = samples((await fetch(server.metrics_url))[2])
            await first.close()
            return both, one

        both, one = run(main())

        assert 8.0 == both["jobs_total", ()]
        assert 5.0 == both["queue", ()]
        assert 8.0 == one["jobs_total", ()]  # carried forward: no false reset
        assert 3.0 == one["queue", ()]  # a departed worker's gauge goes
        assert ("promloop_fanin_target_up", (("worker", "1"),)) not in one

    def test_aggregate_after_a_filtered_scrape(self, tmp_path):
        """A name[] scrape does not make a worker's other counters vanish when it leaves."""

        def registry(count):
            both = jobs(count)
            Counter("other", "Other work.", registry=both).inc(10 * count)
            return both

        async def main():
            first = await worker(tmp_path, registry(1))
            second = await worker(tmp_path, registry(2))
            async with fanin(tmp_path, aggregate=True) as server:
                await fetch(server.metrics_url)
                await fetch(f"{server.metrics_url}?name[]=jobs_total")
                await second.close()
                after = samples((await fetch(server.metrics_url))[2])
            await first.close()
            return after

        after = run(main())

        assert 3.0 == after["jobs_total", ()]
        assert 30.0 == after["other_total", ()]  # the departed worker's 20 carried

    def test_conflicting_types_are_counted(self, tmp_path, caplog):
        """A family typed differently by two workers is kept from the first and counted."""
        as_gauge = CollectorRegistry()
        Gauge("jobs", "Jobs.", registry=as_gauge).set(1)

        async def main():
            first = await worker(tmp_path, jobs(3))
            second = await worker(tmp_path, as_gauge)
            async with fanin(tmp_path) as server:
                answer = await fetch(server.metrics_url)
            await first.close()
            await second.close()
            return answer

        with caplog.at_level(logging.WARNING, logger="promloop"):
            _, _, body = run(main())
        values = samples(body)

        assert 1.0 == values["promloop_fanin_conflicts_total", ()]
        assert ("jobs", (("worker", "1"),)) not in values
        assert "jobs" in caplog.text


class TestNegotiation:
    def test_openmetrics_gzip_and_names(self, tmp_path):
        """The fan-in answers as every mount point does: OpenMetrics, gzip, name[]."""
        registry = jobs(2)
        Histogram("latency_seconds", "Latency.", registry=registry).observe(0.1)

        async def main():
            one = await worker(tmp_path, registry)
            async with fanin(tmp_path) as server:
                url = f"{server.metrics_url}?name[]=jobs_total&name[]=promloop_fanin_target_up"
                answers = (
                    await fetch(server.metrics_url, OPENMETRICS),
                    await fetch(url, {**TEXT, "Accept-Encoding": "gzip"}),
                    await fetch(server.metrics_url, {}),
                )
            await one.close()
            return answers

        (om_status, om_headers, om_body), (_, gz_headers, gz_body), (_, plain, _) = run(main())
        filtered = samples(gzip.decompress(gz_body))

        assert 200 == om_status
        assert (
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
            == om_headers["Content-Type"]
        )
        assert om_body.endswith(b"# EOF\n")
        assert 1 == om_body.count(b"# EOF")
        assert ("latency_seconds_bucket", (("le", "0.25"), ("worker", "0"))) in samples(
            om_body, openmetrics=True
        )
        assert ("jobs_created", (("worker", "0"),)) in samples(om_body, openmetrics=True)
        assert "gzip" == gz_headers["Content-Encoding"]
        assert {
            ("jobs_total", (("worker", "0"),)): 2.0,
            ("promloop_fanin_target_up", (("worker", "0"),)): 1.0,
        } == filtered
        assert "text/plain; version=0.0.4; charset=utf-8" == plain["Content-Type"]

    def test_created_false(self, tmp_path):
        """created=False drops the workers' _created samples, and the fan-in's own."""

        async def main():
            one = await worker(tmp_path, jobs(2))
            async with fanin(tmp_path, created=False) as server:
                answer = await fetch(server.metrics_url, OPENMETRICS)
            await one.close()
            return answer

        _, _, body = run(main())

        assert b"_created" not in body

    def test_hundreds_of_names(self, tmp_path):
        """A filter too long to forward (encoded again, it passes a worker's 8 kB) is applied here.

        600 short name[] values fit in the fan-in's own request line, not in the
        one it would send: the workers are asked for everything instead of
        answering 400, and the answer still holds only the series named.
        """
        names = "&".join(f"name[]=n{n}" for n in range(600))

        async def main():
            one = await worker(tmp_path, jobs(2))
            async with fanin(tmp_path) as server:
                # As sent: aiohttp's client would encode the brackets, and pass 8 kB itself.
                url = yarl.URL(f"{server.metrics_url}?{names}&name[]=jobs_total", encoded=True)
                answer = await fetch(url)
            await one.close()
            return answer

        status, _, body = run(main())

        assert (200, {("jobs_total", (("worker", "0"),)): 2.0}) == (status, samples(body))

    def test_bad_name_is_refused(self, tmp_path):
        """A name[] value that is not UTF-8 gets 400, as everywhere."""

        async def main():
            async with fanin(tmp_path) as server:
                return await fetch(f"{server.metrics_url}?name[]=%ff")

        status, _, _ = run(main())

        assert 400 == status

    @pytest.mark.parametrize(
        ("lines", "read"), [(["5"], "5"), (["1", "30"], None), (["30", "1"], None)]
    )
    def test_repeated_timeout_is_malformed(self, tmp_path, monkeypatch, lines, read):
        """A scrape timeout stated twice is read as none, whatever the order, as everywhere."""
        seen = []
        scrape = _fleet.Fleet.scrape

        def spy(self, **kwargs):
            seen.append(kwargs["scraper_timeout"])
            return scrape(self, **kwargs)

        monkeypatch.setattr(_fleet.Fleet, "scrape", spy)
        stated = CIMultiDict(
            [*TEXT.items(), *((_exposition.SCRAPE_TIMEOUT_HEADER, v) for v in lines)]
        )

        async def main():
            async with fanin(tmp_path) as server:
                return await fetch(server.metrics_url, stated)

        status, _, _ = run(main())

        assert (200, [read]) == (status, seen)

    def test_header_lines_read_together(self, tmp_path):
        """Accept and Accept-Encoding sent on several lines are read whole, as everywhere."""
        lines = CIMultiDict(
            [
                ("Accept", "text/plain;q=0.1"),
                ("Accept", "application/openmetrics-text"),
                ("Accept-Encoding", "identity;q=0.5"),
                ("Accept-Encoding", "gzip"),
            ]
        )

        async def main():
            one = await worker(tmp_path, jobs(1))
            async with (
                fanin(tmp_path) as server,
                aiohttp.ClientSession(auto_decompress=False) as session,
                session.get(server.metrics_url, headers=lines) as answer,
            ):
                result = answer.status, answer.headers, await answer.read()
            await one.close()
            return result

        status, headers, body = run(main())

        assert 200 == status
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert "gzip" == headers["Content-Encoding"]
        assert gzip.decompress(body).endswith(b"# EOF\n")


class TestOffTheLoop:
    """Work that grows with the answers or the targets is done outside the event loop."""

    def test_heavy_work_runs_in_render_threads(self, tmp_path, monkeypatch):
        """Reading, joining, merging, encoding, gzip and /targets JSON never run on the loop."""
        where: dict[str, set[int]] = {}

        def spy(owner, name):
            original = getattr(owner, name)

            def recorded(*args, **kwargs):
                where.setdefault(name, set()).add(threading.get_ident())
                return original(*args, **kwargs)

            monkeypatch.setattr(owner, name, recorded)

        spy(_fleet.TargetDirectory, "read")
        spy(_fleet._Outcome, "take")
        spy(_merge.Merger, "merge")
        spy(_merge.Merged, "expose_pieces")
        spy(_merge, "_encode")
        spy(_fleet, "encoded")
        spy(_fleet.Fleet, "_targets_json")
        registry = jobs(1)
        big = Gauge("big", "Many series.", ["n"], registry=registry)
        for n in range(2000):
            big.labels(str(n)).set(n)

        async def main():
            one = await worker(tmp_path, registry)
            async with fanin(tmp_path) as server:
                await fetch(server.metrics_url, {**OPENMETRICS, "Accept-Encoding": "gzip"})
                await fetch(server.metrics_url)
                await fetch(server.url + "targets")
            await one.close()
            return threading.get_ident()

        loop_thread = run(main())

        assert {
            "read",
            "take",
            "merge",
            "expose_pieces",
            "_encode",
            "encoded",
            "_targets_json",
        } == set(where)
        assert all(loop_thread not in threads for threads in where.values()), where

    def test_large_answer_is_sent_a_piece_per_turn(self, tmp_path, monkeypatch):
        """A large answer goes out a piece at a time, other tasks running between two."""
        ticks = 0
        seen: list[tuple[int, int]] = []  # (piece size, ticks so far) at each write

        def record(data):
            seen.append((len(data), ticks))

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async def main():
            one = await worker(tmp_path, big_registry())
            async with fanin(tmp_path) as server:
                spy_on_answers(monkeypatch, server, record)
                task = asyncio.ensure_future(ticker())
                answer = await fetch(server.metrics_url)
                head = await fetch_head(server.metrics_url)
                task.cancel()
            await one.close()
            return answer, head

        (status, headers, body), (head_status, head_length) = run(main())
        sizes = [size for size, _ in seen]
        counts = [count for _, count in seen]

        assert 200 == status
        assert BIG_SERIES == len([k for k in samples(body) if k[0] == "big"])
        assert len(body) == sum(sizes) == int(headers["Content-Length"])  # sized, not chunked
        assert 1 < len(sizes)
        assert len(counts) == len(set(counts))  # the ticker ran between every two pieces
        assert 200 == head_status  # HEAD: the headers of the whole answer, no body
        assert max(sizes) < int(head_length)

    def test_scraper_hanging_up_mid_answer(self, tmp_path, monkeypatch, caplog):
        """A scraper that hangs up mid-answer is no error: nothing logged, the next one served."""
        writes = 0

        def hang_up_at_the_second_piece(_data):
            nonlocal writes
            writes += 1
            if writes == 2:
                raise ConnectionResetError("Cannot write to closing transport")

        async def main():
            one = await worker(tmp_path, big_registry())
            async with fanin(tmp_path) as server:
                spy_on_answers(monkeypatch, server, hang_up_at_the_second_piece)
                with contextlib.suppress(aiohttp.ClientError):
                    await fetch(server.metrics_url)
                answer = await fetch(server.metrics_url)
            await one.close()
            return answer

        with caplog.at_level(logging.DEBUG):
            status, _, body = run(main())

        assert 2 < writes  # the first answer was cut short, the second one sent whole
        assert 200 == status
        assert BIG_SERIES == len([k for k in samples(body) if k[0] == "big"])
        assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    def test_scraper_gone_before_the_answer(self, tmp_path, monkeypatch, caplog):
        """A scraper that hangs up while the fan-in merges (its own timeout) is no error."""
        merge = _merge.Merger.merge

        def slow_merge(self, *args, **kwargs):
            time.sleep(0.3)
            return merge(self, *args, **kwargs)

        monkeypatch.setattr(_merge.Merger, "merge", slow_merge)

        async def main():
            one = await worker(tmp_path, big_registry())
            async with fanin(tmp_path) as server:
                url = yarl.URL(server.metrics_url)
                _, writer = await asyncio.open_connection(url.host, url.port)
                writer.write(f"GET {url.path} HTTP/1.1\r\nHost: fanin\r\n\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.close()  # before the answer is ready
                await asyncio.sleep(0.5)
                answer = await fetch(server.metrics_url)
            await one.close()
            return answer

        with caplog.at_level(logging.DEBUG):
            status, _, body = run(main())

        assert 200 == status
        assert BIG_SERIES == len([k for k in samples(body) if k[0] == "big"])
        assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


BIG_SERIES = 20_000
"""Series in big_registry(): an answer of several pieces (about 600 kB)."""


def big_registry():
    """Return a worker's registry whose answer is large."""
    registry = jobs(1)
    big = Gauge("big", "Many series.", ["n"], registry=registry)
    for n in range(BIG_SERIES):
        big.labels(str(n)).set(n)
    return registry


def spy_on_answers(monkeypatch, server, spy):
    """Call *spy* with each piece of body the fan-in *server* writes, before writing it."""
    port = yarl.URL(server.metrics_url).port
    original = StreamWriter.write

    async def write(self, chunk, **kwargs):
        if self.transport.get_extra_info("sockname")[1] == port:  # not the worker's answers
            spy(chunk)
        await original(self, chunk, **kwargs)

    monkeypatch.setattr(StreamWriter, "write", write)


async def settled(condition, within=10.0):
    """Tell whether *condition()* holds, now or within *within* seconds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def fetch_head(url):
    """Return the status and Content-Length of a HEAD request."""
    async with aiohttp.ClientSession() as session, session.head(url, headers=TEXT) as response:
        return response.status, response.headers["Content-Length"]


class TestPages:
    def test_targets_and_index(self, tmp_path):
        """/targets lists the live workers for http_sd_configs; / links to both."""

        async def main():
            one = await worker(tmp_path, jobs(1), labels={"app": "billing"})
            async with fanin(tmp_path) as server:
                targets = await fetch(server.url + "targets")
                index = await fetch(server.url)
            await one.close()
            return one, targets, index

        one, (status, headers, body), (_, index_headers, index) = run(main())

        assert 200 == status
        assert "application/json" in headers["Content-Type"]
        assert [
            {
                "targets": [f"127.0.0.1:{one.socket.port}"],
                "labels": {"app": "billing", "worker": "0"},
            }
        ] == json.loads(body)
        assert "text/html" in index_headers["Content-Type"]
        assert b'href="/metrics"' in index
        assert b'href="/targets"' in index

    @pytest.mark.parametrize("auth", [BasicAuth("prometheus", "s3cret"), BearerToken("t0ken")])
    def test_every_path_needs_credentials(self, tmp_path, auth):
        """With auth=, every path answers 401 without valid credentials, 200 with them."""

        async def main():
            async with fanin(tmp_path, auth=auth) as server:
                paths = ("", "metrics", "targets", "nowhere")
                refused = [await fetch(server.url + p) for p in paths]
                allowed = [await fetch(server.url + p, auth=auth) for p in paths[:3]]
            return refused, allowed

        refused, allowed = run(main())

        assert [401] * 4 == [status for status, _, _ in refused]
        assert all(auth.scheme in headers["WWW-Authenticate"] for _, headers, _ in refused)
        assert [200] * 3 == [status for status, _, _ in allowed]


class TestFaults:
    def test_bad_targets_never_fail_the_scrape(self, tmp_path, caplog):
        """Refusing, silent, erring, garbage- and text-speaking targets are left out, and said."""

        async def main():
            good = await worker(tmp_path, jobs(4))
            async with misbehaving() as address, fanin(tmp_path, scrape_timeout=0.5) as server:
                target_file(tmp_path, "refused.json", f"127.0.0.1:{free_port()}", worker="r")
                for path in ("garbage", "text", "error", "silent", "drip"):
                    target_file(
                        tmp_path, f"{path}.json", address, worker=path, __metrics_path__=f"/{path}"
                    )
                first = await fetch(server.metrics_url)
                second = await fetch(server.metrics_url)
            await good.close()
            return first, second

        with caplog.at_level(logging.WARNING, logger="promloop"):
            (status, _, body), (second_status, _, _) = run(main())
        values = samples(body)
        up = {
            dict(labels)["worker"]: value
            for (name, labels), value in values.items()
            if name == "promloop_fanin_target_up"
        }

        assert (200, 200) == (status, second_status)
        assert 4.0 == values["jobs_total", (("worker", "0"),)]
        assert {
            "0": 1.0,
            "r": 0.0,
            "garbage": 0.0,
            "text": 0.0,
            "error": 0.0,
            "silent": 0.0,
            "drip": 0.0,
        } == up
        for file, reason in (
            ("refused.json", "scrape failed"),
            ("garbage.json", ""),  # what is wrong with it is the merger's to say
            ("text.json", "not OpenMetrics"),
            ("error.json", "HTTP 500"),
            ("silent.json", "no answer within 0.5 s"),
            ("drip.json", "no answer within 0.5 s"),
        ):
            [line] = [line for line in caplog.messages if f"({file})" in line]  # once, not twice
            assert reason in line

    @pytest.mark.parametrize("path", ["/large", "/unannounced"])
    def test_large_answer_is_cut(self, tmp_path, monkeypatch, caplog, path):
        """An answer larger than the limit is left out, whether announced or not."""
        monkeypatch.setattr(_fleet, "MAX_ANSWER_BYTES", 100)

        async def main():
            async with misbehaving() as address, fanin(tmp_path) as server:
                target_file(tmp_path, "large.json", address, worker="w", __metrics_path__=path)
                return await fetch(server.metrics_url)

        with caplog.at_level(logging.WARNING, logger="promloop"):
            _, _, body = run(main())

        assert 0.0 == samples(body)["promloop_fanin_target_up", (("worker", "w"),)]
        assert "answer larger than 100 bytes" in caplog.text

    def test_deadline_follows_the_scraper(self, tmp_path, caplog):
        """The workers get 3/4 of the time the scraper waits, when that is shorter."""

        async def main():
            async with misbehaving() as address, fanin(tmp_path) as server:
                target_file(tmp_path, "silent.json", address, __metrics_path__="/silent")
                return await fetch(
                    server.metrics_url, {**TEXT, "X-Prometheus-Scrape-Timeout-Seconds": "2.5"}
                )

        with caplog.at_level(logging.WARNING, logger="promloop"):
            status, _, _ = run(main())

        assert 200 == status
        assert "no answer within 1.6875 s" in caplog.text

    def test_slow_merge_answers_503(self, tmp_path, monkeypatch, caplog):
        """A merge that outlasts the scrape's time answers 503 before the scraper gives up."""
        slow = threading.Event()
        real_merge = _merge.Merger.merge

        def slow_merge(self, scrapes, **kwargs):
            slow.wait(5)  # until the scrape has been answered
            return real_merge(self, scrapes, **kwargs)

        monkeypatch.setattr(_merge.Merger, "merge", slow_merge)

        async def main():
            one = await worker(tmp_path, jobs(1))
            async with fanin(tmp_path) as server:
                answer = await fetch(
                    server.metrics_url, {**TEXT, "X-Prometheus-Scrape-Timeout-Seconds": "0.4"}
                )
                slow.set()
            await one.close()
            return answer

        with caplog.at_level(logging.WARNING, logger="promloop"):
            status, _, body = run(main())

        assert 503 == status
        assert b"took longer than 0.2 s" in body
        assert "<Fleet " in caplog.text

    def test_stale_file_is_removed(self, tmp_path):
        """A worker that died leaves a file: ignored and removed at the next scrape."""
        port = free_port()

        async def main():
            async with fanin(tmp_path) as server:
                alive = samples((await fetch(server.metrics_url))[2])
                dead.kill()
                gone = samples((await fetch(server.metrics_url))[2])
            return alive, gone

        dead = Worker(tmp_path, port=port)  # registered, but serves nothing
        try:
            alive, gone = run(main())
        finally:
            dead.close()

        assert 0.0 == alive["promloop_fanin_target_up", (("worker", "0"),)]
        assert ("promloop_fanin_target_up", (("worker", "0"),)) not in gone
        assert [".promloop-worker-0.lock"] == [p.name for p in tmp_path.iterdir()]

    def test_malformed_file_is_skipped(self, tmp_path, caplog):
        """A malformed target file is skipped, with one log line however many scrapes."""
        (tmp_path / "bad.json").write_text("{")

        async def main():
            one = await worker(tmp_path, jobs(1))
            async with fanin(tmp_path) as server:
                answers = [await fetch(server.metrics_url) for _ in range(3)]
            await one.close()
            return answers

        with caplog.at_level(logging.WARNING, logger="promloop"):
            answers = run(main())

        assert [200] * 3 == [status for status, _, _ in answers]
        assert 1 == caplog.text.count("bad.json")

    def test_missing_directory(self, tmp_path):
        """A missing directory fails at start, naming it, and leaves nothing behind."""
        registry = CollectorRegistry()

        with pytest.raises(FileNotFoundError, match=f"fan-in: the directory '{tmp_path / 'x'}'"):
            run(start_fanin(tmp_path / "x", registry=registry))
        assert [] == [t.name for t in threading.enumerate() if t.name.startswith("promloop-fanin")]
        assert [] == list(registry.collect())

    def test_unwritable_directory(self, tmp_path, monkeypatch):
        """A directory the fan-in cannot clean up fails at start, naming it."""
        monkeypatch.setattr(os, "access", lambda path, mode: False)

        with pytest.raises(PermissionError, match=f"'{tmp_path}' is not writable"):
            run(start_fanin(tmp_path))

    def test_directory_removed_while_serving(self, tmp_path, caplog):
        """A directory that goes away leaves the fan-in answering with its own metrics."""
        directory = tmp_path / "targets"
        directory.mkdir()

        async def main():
            async with fanin(directory) as server:
                directory.rmdir()
                return await fetch(server.metrics_url)

        with caplog.at_level(logging.WARNING, logger="promloop"):
            status, _, body = run(main())

        assert 200 == status
        assert b"promloop_fanin_conflicts_total" in body
        assert "cannot read the directory" in caplog.text

    def test_directory_unreadable_for_a_while(self, tmp_path, caplog):
        """Workers do not leave while the directory cannot be read, nor count twice after."""
        directory = tmp_path / "targets"
        directory.mkdir()

        async def main():
            one = await worker(directory, jobs(1))
            two = await worker(directory, jobs(2))
            async with fanin(directory, aggregate=True) as server:
                before = await fetch(server.metrics_url)
                directory.rename(tmp_path / "away")
                during = [await fetch(server.metrics_url) for _ in range(3)]
                (tmp_path / "away").rename(directory)
                after = await fetch(server.metrics_url)
            await one.close()
            await two.close()
            return [before, *during, after]

        with caplog.at_level(logging.WARNING, logger="promloop"):
            answers = run(main())
        values = [samples(body) for _, _, body in answers]

        assert [3.0] * 5 == [found["jobs_total", ()] for found in values]
        assert [1.0] * 5 == [
            found["promloop_fanin_target_up", (("worker", "1"),)] for found in values
        ]
        assert 1 == caplog.text.count("cannot read the directory")

    def test_two_fanins_one_directory(self, tmp_path):
        """Two fan-ins on one directory both answer with every worker."""

        async def main():
            one = await worker(tmp_path, jobs(1))
            two = await worker(tmp_path, jobs(2))
            async with fanin(tmp_path) as first, fanin(tmp_path, aggregate=True) as second:
                answers = await asyncio.gather(
                    *(fetch(s.metrics_url) for s in (first, second, first, second))
                )
            await one.close()
            await two.close()
            return answers

        answers = run(main())

        assert [200] * 4 == [status for status, _, _ in answers]
        assert 1.0 == samples(answers[0][2])["jobs_total", (("worker", "0"),)]
        assert 3.0 == samples(answers[1][2])["jobs_total", ()]

    def test_directory_changing_while_scraped(self, tmp_path):
        """Targets come and go while the fan-in is scraped: every scrape answers."""

        async def churn(stop, port):
            # Registrations without servers of their own: the files change
            # under the fan-in, and the targets answer (with the steady
            # worker's port) or do not, as they happen to be read.
            while not stop.is_set():
                deregister = await FileSD(tmp_path, slot="worker").register(StandIn(port=port))
                await asyncio.sleep(0)
                await deregister()

        async def main():
            steady = await worker(tmp_path, jobs(7))
            stop = asyncio.Event()
            async with fanin(tmp_path) as server:
                port = steady.socket.port
                churning = asyncio.gather(churn(stop, port), churn(stop, free_port()))
                answers = [await fetch(server.metrics_url) for _ in range(20)]
                stop.set()
                await churning
            await steady.close()
            return answers

        answers = run(main())

        assert [200] * 20 == [status for status, _, _ in answers]
        assert all(7.0 == samples(body)["jobs_total", (("worker", "0"),)] for _, _, body in answers)


class TestLifecycle:
    def test_close_leaves_nothing(self, tmp_path):
        """Closing frees the port, ends the fan-in's threads and tasks, and leaves the registry."""
        registry = CollectorRegistry()

        async def main():
            one = await worker(tmp_path, jobs(1))
            server = await start_fanin(tmp_path, addr="127.0.0.1", registry=registry)
            await fetch(server.metrics_url)
            await server.close()
            await server.close()
            await one.close()
            return server, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        server, tasks = run(main())

        assert port_is_free(server.socket.port)
        assert [] == list(registry.collect())  # the same registry can serve another fan-in
        assert [] == tasks
        assert [] == [t.name for t in threading.enumerate() if t.name.startswith("promloop-fanin")]

    def test_bad_targets_leak_nothing(self, tmp_path):
        """Bad targets leave no descriptor, thread or task behind, running or closed.

        Targets that refuse, hang, send 10 MB or garbage, or hang up
        mid-answer; they run in a loop of their own, so that every task left
        in the test's loop would be the fan-in's.
        """
        refusing = socket.socket()
        refusing.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused

        def descriptors():
            return len(list(pathlib.Path("/proc/self/fd").iterdir()))

        def fanin_threads():
            return [t.name for t in threading.enumerate() if t.name.startswith("promloop-fanin")]

        async def main(address, cutting):
            for handler in BAD_TARGETS:
                path = f"/{handler.__name__}"
                target_file(tmp_path, f"{handler.__name__}.json", address, __metrics_path__=path)
            target_file(tmp_path, "refused.json", "{}:{}".format(*refusing.getsockname()))
            target_file(tmp_path, "cut.json", cutting)
            one = await worker(tmp_path, jobs(1))
            before = descriptors()
            server = await start_fanin(tmp_path, addr="127.0.0.1", scrape_timeout=0.3)
            for _ in range(8):
                assert 200 == (await fetch(server.metrics_url))[0]
            # Sockets are closed a turn or two of the loop after their answers:
            # what is left once they are is the listening socket.
            running = await settled(lambda: descriptors() == before + 1)
            threads = fanin_threads()
            await server.close()
            closed = await settled(lambda: descriptors() == before)
            await one.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            return running, threads, closed, tasks

        with targets_elsewhere() as (address, cutting):
            running, threads, closed, tasks = run(main(address, cutting))
        refusing.close()

        assert running  # no descriptor left by the scrapes
        assert len(threads) <= _fleet.RENDER_THREADS
        assert closed
        assert [] == tasks
        assert [] == fanin_threads()

    def test_close_during_a_scrape(self, tmp_path):
        """A scrape waiting for a silent worker ends when the fan-in closes; close is prompt."""

        async def main():
            async with misbehaving() as address:
                target_file(tmp_path, "silent.json", address, __metrics_path__="/silent")
                server = await start_fanin(tmp_path, addr="127.0.0.1", scrape_timeout=60)
                scrape = asyncio.ensure_future(fetch(server.metrics_url))
                await asyncio.sleep(0.2)
                await asyncio.wait_for(server.close(), 10)
                with contextlib.suppress(aiohttp.ClientError):
                    return (await scrape)[0]
                return None

        status = run(main())

        assert status in (503, None)

    def test_failed_start_leaves_nothing(self, tmp_path):
        """A port in use fails the start and leaves no thread behind."""

        async def main():
            async with fanin(tmp_path) as first:
                with pytest.raises(OSError, match="in use"):
                    await start_fanin(tmp_path, addr="127.0.0.1", port=first.socket.port)

        run(main())

        assert [] == [t.name for t in threading.enumerate() if t.name.startswith("promloop-fanin")]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"path": "/"},
            {"path": "/targets"},
            {"path": "x"},
            {"gauges": "avg"},
            {"scrape_timeout": 0},
        ],
    )
    def test_invalid_arguments(self, tmp_path, kwargs):
        """Invalid arguments fail at start."""
        with pytest.raises(ValueError):
            run(start_fanin(tmp_path, **kwargs))

    def test_registers_itself(self, tmp_path):
        """service_discovery= registers the fan-in, as any promloop server."""
        own = tmp_path / "fanin"
        own.mkdir()

        async def main():
            async with fanin(tmp_path, service_discovery=FileSD(own)) as server:
                return server.is_registered, [p.name for p in own.iterdir()]

        registered, files = run(main())

        assert registered
        assert 1 == len(files)


class TestFleet:
    """The engine without its server: what reaches the workers, and what happens at close."""

    def fleet(self, directory):
        return _fleet.Fleet(
            directory, aggregate=False, gauges="sum", created=True, scrape_timeout=1, registry=None
        )

    def scrape(self, fleet):
        answer = fleet.scrape(accept=None, accept_encoding=None, query="", scraper_timeout=None)
        return answer.result(30)

    def test_names_reach_the_workers_and_rounds_are_shared(self, tmp_path, monkeypatch):
        """name[] is forwarded; concurrent scrapes of one view share one round of scrapes."""
        asked = []

        async def recorder(request):
            asked.append(sorted(request.rel_url.query.getall("name[]", [])))
            return web.Response(
                body=b"# EOF\n",
                headers={"Content-Type": "application/openmetrics-text; version=1.0.0"},
            )

        fleet = self.fleet(tmp_path)
        fleet._renders = _exposition.SharedRenders(gather=0.5)  # room to arrive together

        async def main():
            app = web.Application()
            app.router.add_get("/metrics", recorder)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            target_file(tmp_path, "r.json", f"127.0.0.1:{runner.addresses[0][1]}")
            await fleet.start()
            query = "name[]=b_total&name[]=a"
            replies = await asyncio.gather(
                *(
                    asyncio.wrap_future(
                        fleet.scrape(
                            accept=None, accept_encoding=None, query=query, scraper_timeout=None
                        )
                    )
                    for _ in range(3)
                )
            )
            await fleet.close()
            await runner.cleanup()
            return replies

        replies = run(main())

        assert [200] * 3 == [reply.status for reply in replies]
        assert [["a", "b_total"]] == asked  # one round for the three scrapes

    def test_called_off(self, tmp_path):
        """A scrape that starts once the fleet is called off answers 503."""
        target_file(tmp_path, "t.json", f"127.0.0.1:{free_port()}")
        fleet = self.fleet(tmp_path)

        async def main():
            await fleet.start()
            fleet.call_off()
            reply = await asyncio.wrap_future(
                fleet.scrape(accept=None, accept_encoding=None, query="", scraper_timeout=None)
            )
            await fleet.close()
            return reply

        assert 503 == run(main()).status

    def test_loop_gone(self, tmp_path):
        """A scrape after the fleet's event loop has ended answers 503."""
        target_file(tmp_path, "t.json", f"127.0.0.1:{free_port()}")
        fleet = self.fleet(tmp_path)

        async def main():
            await fleet.start()
            await fleet._session.close()

        run(main())
        try:
            reply = self.scrape(fleet)
        finally:
            fleet._executor.shutdown()

        assert 503 == reply.status


class TestDeadline:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (None, 3.0),
            ("10", 3.0),
            ("2", 1.3125),
            ("0.4", 0.15000000000000002),
            ("soon", 3.0),
            ("0", 3.0),
            ("-1", 3.0),
            ("inf", 3.0),
            ("nan", 3.0),
        ],
    )
    def test_scraper_timeout(self, tmp_path, header, expected):
        """The workers get scrape_timeout, or 3/4 of the scrape's time if shorter."""
        fleet = _fleet.Fleet(
            tmp_path, aggregate=False, gauges="sum", created=True, scrape_timeout=3.0, registry=None
        )
        try:
            assert expected == fleet.deadline(header)
        finally:
            run(fleet.close())

    def test_duration(self, tmp_path, monkeypatch):
        """The duration of a target's scrape is measured around it (a counting clock here)."""
        monkeypatch.setattr(_fleet, "perf_counter", CountingClock())

        async def main():
            one = await worker(tmp_path, jobs(1))
            async with fanin(tmp_path) as server:
                answer = await fetch(server.metrics_url)
            await one.close()
            return answer

        _, _, body = run(main())

        assert (
            1.0
            == samples(body)["promloop_fanin_target_scrape_duration_seconds", (("worker", "0"),)]
        )


class TestWorkerNames:
    def test_slot_else_address(self):
        """The worker label, else host:port, also when two targets share a worker label."""
        targets = [
            Target("a.json", "h:1", {"worker": "0"}),
            Target("b.json", "h:2", {}),
            Target("c.json", "h:3", {"worker": "x"}),
            Target("c.json", "h:4", {"worker": "x"}),
        ]

        assert ["0", "h:2", "h:3", "h:4"] == _fleet.worker_names(targets)
