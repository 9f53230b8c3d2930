"""Every mount point of promloop's exposition, started with given options, its log captured.

:func:`start` runs one of :data:`MOUNT_POINTS` on 127.0.0.1, port 0, serving
:func:`registry` with ``auth=`` (and ``ssl_ctx=`` where the mount point takes
one), and returns a :class:`Mount`.  The in-process mount points run their
event loops in threads of their own, so that a test's clients are never
delayed by the server they measure; their log records (the ``promloop``,
``aiohttp`` and ``asyncio`` loggers, at every level) go to a
:class:`ServerLog`.  The Twisted resource runs on a real reactor in a
subprocess (``twisted_server.py``) whose stderr is its log.

A *problem* in a log is a record at ERROR or above, or any record carrying
a traceback.  One kind is tolerated, and counted apart: in an application's
own aiohttp server (the handler mount point), aiohttp's report of a request
its parser refused -- aiohttp logs those at ERROR with a traceback, the
application's server configuration decides that, and no promloop code ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


if TYPE_CHECKING:
    import ssl

    from collections.abc import Coroutine, Iterator

    from promloop import BasicAuth, BearerToken


IN_LOOP = "in-loop server"
THREADED = "threaded server"
HANDLER = "handler in an app"
TWISTED = "twisted resource"
FANIN = "fan-in"
MOUNT_POINTS = (IN_LOOP, THREADED, HANDLER, TWISTED, FANIN)

ROOT = Path(__file__).parent.parent.parent
_HANDLER_THREAD = "mount-handler-loop"


def registry() -> CollectorRegistry:
    """Return the metrics every mount point serves: a counter, a gauge and a histogram."""
    served = CollectorRegistry()
    Counter("probes", "Probes.", ["kind"], registry=served).labels("x").inc()
    Gauge("temperature", "A gauge.", registry=served).set(21.5)
    Histogram("wait_seconds", "A histogram.", registry=served).observe(0.3)
    return served


def auth_argument(auth: BasicAuth | BearerToken | None) -> str:
    """Spell *auth* for twisted_server.py's command line."""
    if auth is None:
        return "none"
    header = auth.authorization()
    scheme, _, credentials = header.partition(" ")
    if scheme == "Bearer":
        return f"bearer:{credentials}"
    import base64

    return "basic:" + base64.b64decode(credentials).decode()


class ServerLog(logging.Handler):
    """Every record of the promloop and aiohttp loggers (asyncio's from INFO) while installed."""

    LOGGERS = ("promloop", "aiohttp", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s [%(threadName)s]: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    @contextlib.contextmanager
    def installed(self) -> Iterator[ServerLog]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.addHandler(self)
            # asyncio's DEBUG records say which selector each client's loop uses.
            logger.setLevel(logging.INFO if logger.name == "asyncio" else logging.DEBUG)
        try:
            yield self
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(self)
                logger.setLevel(level)

    def since(self, start: int) -> list[logging.LogRecord]:
        with self._lock_records:
            return self.records[start:]

    def problems(self, start: int = 0) -> list[str]:
        """Return the records since *start* that are problems, formatted with their tracebacks."""
        return [
            self.format(record)
            for record in self.since(start)
            if is_problem(record) and not refused_by_the_apps_parser(record)
        ]

    def parser_refusals(self, start: int = 0) -> int:
        """Count aiohttp's tolerated reports of a refused request (see the module docstring)."""
        return sum(1 for record in self.since(start) if refused_by_the_apps_parser(record))

    def text(self, start: int = 0) -> str:
        """Return everything logged since *start*, tracebacks included, but the tolerated reports.

        Those quote the refused line -- an ``Authorization`` header included:
        see :meth:`parser_refusals`.
        """
        return "\n".join(
            self.format(record)
            for record in self.since(start)
            if not refused_by_the_apps_parser(record)
        )


def is_problem(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or bool(record.exc_info) or bool(record.exc_text)


def refused_by_the_apps_parser(record: logging.LogRecord) -> bool:
    if record.threadName != _HANDLER_THREAD or record.name != "aiohttp.server":
        return False
    from aiohttp.http_exceptions import HttpProcessingError

    error = record.exc_info[1] if record.exc_info else None
    return isinstance(error, HttpProcessingError)


class Mount:
    """A running mount point: where it listens, what it logged; close() stops it."""

    name: str
    port: int
    https: bool = False
    auth: BasicAuth | BearerToken | None = None

    def close(self) -> None:
        raise NotImplementedError

    def mark(self) -> int:
        """Return a position in the log; problems() and logged() read from there on."""
        raise NotImplementedError

    def problems(self, mark: int = 0) -> list[str]:
        raise NotImplementedError

    def logged(self, mark: int = 0) -> str:
        raise NotImplementedError

    def parser_refusals(self, mark: int = 0) -> int:
        """Count the tolerated reports of the application's aiohttp server (the handler's)."""
        return 0

    def __repr__(self) -> str:
        return f"<{self.name} on port {self.port}>"


class _LoopThread:
    """An event loop running in a daemon thread; run() runs a coroutine there."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.loop.shutdown_default_executor()

        self.run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _InProcess(Mount):
    def __init__(self, log: ServerLog) -> None:
        self.log = log

    def mark(self) -> int:
        return len(self.log.records)

    def problems(self, mark: int = 0) -> list[str]:
        return self.log.problems(mark)

    def logged(self, mark: int = 0) -> str:
        return self.log.text(mark)

    def parser_refusals(self, mark: int = 0) -> int:
        return self.log.parser_refusals(mark) if self.name == HANDLER else 0


class _InLoop(_InProcess):
    name = IN_LOOP

    def __init__(self, log: ServerLog, auth: Any, ssl_ctx: ssl.SSLContext | None) -> None:
        super().__init__(log)
        from promloop.aio.web import start_http_server

        self._loop = _LoopThread("mount-in-loop")
        self._server = self._loop.run(
            start_http_server(addr="127.0.0.1", registry=registry(), auth=auth, ssl_ctx=ssl_ctx)
        )
        self.port = self._server.socket.port
        self.https = ssl_ctx is not None

    def close(self) -> None:
        self._loop.run(self._server.close())
        self._loop.stop()


class _Threaded(_InProcess):
    name = THREADED

    def __init__(self, log: ServerLog, auth: Any, ssl_ctx: ssl.SSLContext | None) -> None:
        super().__init__(log)
        from promloop.aio.web import start_http_server_in_thread

        self._server = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry(), auth=auth, ssl_ctx=ssl_ctx
        )
        self.port = self._server.socket.port
        self.https = ssl_ctx is not None

    def close(self) -> None:
        self._server.close()


class _Handler(_InProcess):
    """make_handler() in an application's own aiohttp server, reached by every method and path."""

    name = HANDLER

    def __init__(self, log: ServerLog, auth: Any, ssl_ctx: ssl.SSLContext | None) -> None:
        super().__init__(log)
        from aiohttp import web

        from promloop.aio.web import make_handler

        async def serve() -> tuple[web.AppRunner, int]:
            app = web.Application()
            app.router.add_route("*", "/{anything:.*}", make_handler(registry(), auth=auth))
            # The application keeps aiohttp's defaults: its access log, its server log.
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx).start()
            return runner, runner.addresses[0][1]

        self._loop = _LoopThread(_HANDLER_THREAD)
        self._runner, self.port = self._loop.run(serve())
        self.https = ssl_ctx is not None

    def close(self) -> None:
        self._loop.run(self._runner.cleanup())
        self._loop.stop()


class _FanIn(_InProcess):
    """start_fanin() in front of one worker: a threaded server announced by FileSD."""

    name = FANIN

    def __init__(self, log: ServerLog, auth: Any, ssl_ctx: ssl.SSLContext | None) -> None:
        super().__init__(log)
        from promloop.aio.fanin import start_fanin
        from promloop.aio.sd import FileSD
        from promloop.aio.web import start_http_server_in_thread

        self._directory = tempfile.mkdtemp(prefix="promloop-hostile-fanin-")
        self._worker = start_http_server_in_thread(
            addr="127.0.0.1", registry=registry(), service_discovery=FileSD(self._directory)
        )
        self._loop = _LoopThread("mount-fanin-loop")
        self._server = self._loop.run(
            start_fanin(self._directory, addr="127.0.0.1", auth=auth, ssl_ctx=ssl_ctx)
        )
        self.port = self._server.socket.port
        self.https = ssl_ctx is not None

    def close(self) -> None:
        self._loop.run(self._server.close())
        self._loop.stop()
        self._worker.close()
        shutil.rmtree(self._directory, ignore_errors=True)


class _Twisted(Mount):
    """MetricsResource as the root of a twisted.web Site, in a subprocess."""

    name = TWISTED

    def __init__(self, auth: Any) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.twisted_server", auth_argument(auth)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        assert self._process.stdout is not None
        announced = self._process.stdout.readline()
        if not announced:
            self._process.wait(10)
            self._drainer.join(10)
            msg = f"twisted_server did not start:\n{''.join(self._lines)}"
            raise RuntimeError(msg)
        self.port = json.loads(announced)["port"]

    def _drain(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._lines.append(line)

    def mark(self) -> int:
        return len(self._lines)

    def logged(self, mark: int = 0) -> str:
        return "".join(self._lines[mark:])

    def problems(self, mark: int = 0) -> list[str]:
        return [
            line
            for line in self._lines[mark:]
            if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line or "Unhandled" in line
        ]

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._drainer.join(10)
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._process.stdout.close()
        self._process.stderr.close()
        if self._process.returncode != 0:
            self._lines.append(f"ERROR twisted_server exited with {self._process.returncode}\n")


def start(
    name: str,
    log: ServerLog,
    *,
    auth: BasicAuth | BearerToken | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
) -> Mount:
    """Start the mount point called *name* (one of :data:`MOUNT_POINTS`)."""
    mount: Mount
    if name == TWISTED:
        if ssl_ctx is not None:
            msg = "TLS for twisted.web is the application's (listenSSL), not promloop's"
            raise ValueError(msg)
        mount = _Twisted(auth)
    else:
        kinds = {IN_LOOP: _InLoop, THREADED: _Threaded, HANDLER: _Handler, FANIN: _FanIn}
        mount = kinds[name](log, auth, ssl_ctx)
    mount.auth = auth
    return mount


@contextlib.contextmanager
def started(name: str, log: ServerLog, **options: Any) -> Iterator[Mount]:
    """Run the mount point called *name* for the duration of the block."""
    mount = start(name, log, **options)
    try:
        yield mount
    finally:
        mount.close()
