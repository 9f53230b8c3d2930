"""The fan-in as a child process: :func:`start_fanin_in_process`, for supervisors.

A process that forks workers (gunicorn's master) must not run the fan-in
itself: every worker would be forked with a copy of its listening socket and
of the state of its threads (Python 3.12 warns about fork() with threads
running).  A child process, started with fork() *and* exec(), owns all of
that instead; the parent keeps one pipe to it, whose end tells the child to
stop, even when the parent dies without a word.
"""

from __future__ import annotations

import base64
import contextlib
import os
import selectors
import subprocess
import sys
import time
import weakref

from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from .._auth import BasicAuth, BearerToken
from .._cli import PASSWORD_VARIABLE, TOKEN_VARIABLE
from .._file_sd import check_directory
from ._fleet import DEFAULT_SCRAPE_TIMEOUT


if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = ["FanInProcess", "start_fanin_in_process"]

_ANNOUNCEMENT: Final = "Serving metrics at "


class FanInProcess:
    """A fan-in running in a child process; :func:`start_fanin_in_process` returns it.

    Attributes:
        pid: The child's process ID.
        metrics_url: The URL of the merged metrics.
    """

    def __init__(self, process: subprocess.Popen[bytes], metrics_url: str) -> None:
        self._process = process
        self.pid = process.pid
        self.metrics_url = metrics_url
        _children.add(self)

    def __repr__(self) -> str:
        return f"<FanInProcess {self.pid} {self.metrics_url}>"

    @property
    def running(self) -> bool:
        """Whether the child is still running."""
        return self._process.poll() is None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the fan-in and wait for it to exit; kill it if it takes over *timeout* seconds.

        Calling it again does nothing.
        """
        _children.discard(self)
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()  # the child's cue to close its server and exit
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


_children: weakref.WeakSet[FanInProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A worker forked by the parent (gunicorn's master) must not hold the
    # pipe open: the fan-in would then outlive the parent until every
    # worker had exited too.
    for child in list(_children):
        stdin = child._process.stdin  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
    _children.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def start_fanin_in_process(
    directory: str | os.PathLike[str],
    *,
    addr: str = "",
    port: int = 0,
    aggregate: bool = False,
    gauges: str = "sum",
    created: bool = True,
    scrape_timeout: float = DEFAULT_SCRAPE_TIMEOUT,
    path: str = "/metrics",
    auth: BasicAuth | BearerToken | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_client_ca: str | os.PathLike[str] | None = None,
    start_timeout: float = 30.0,
) -> FanInProcess:
    """Start a fan-in (``python -m promloop fanin``) in a child process; return once it listens.

    For a supervisor that forks workers, such as gunicorn's master: start it
    in the ``when_ready`` hook, close it in ``on_exit``.  The child stops by
    itself when this process ends, however it ends.  Its log goes to this
    process's standard error.

    The arguments are those of :func:`start_fanin`, except that TLS takes
    file names (``tls_cert``, ``tls_key``, and ``tls_client_ca`` to require
    client certificates signed by that CA).  Credentials travel to the child
    in its environment, never on its command line.

    Args:
        directory: The file_sd directory the workers register in.
        addr: The interface to listen on; ``""`` means all of them.
        port: The port; 0 picks a free one (see ``metrics_url``).
        aggregate: Sum over the workers.
        gauges: How gauges combine with *aggregate*.
        created: Serve ``_created`` samples.
        scrape_timeout: The most seconds a worker may take to answer.
        path: Where the merged metrics are served.
        auth: Credentials every request must carry.
        tls_cert: Serve HTTPS with this certificate chain (PEM).
        tls_key: Its private key, if not in *tls_cert*.
        tls_client_ca: Require client certificates signed by this CA.
        start_timeout: Seconds to wait for the child to listen.

    Returns:
        The running child.

    Raises:
        FileNotFoundError, PermissionError: *directory* is missing or not
            writable.
        RuntimeError: The child exited, or did not listen in time; its error
            output says why.

    .. versionadded:: 26.0.0
    """
    check_directory(Path(directory), "fan-in")
    command = [sys.executable, "-m", "promloop", "fanin", os.fspath(directory), "--exit-on-eof"]
    command += ["--addr", addr, "--port", str(port), "--path", path, "--gauges", gauges]
    command += ["--scrape-timeout", repr(scrape_timeout)]
    command += ["--aggregate"] if aggregate else []
    command += [] if created else ["--no-created"]
    for option, value in (
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
        ("--tls-client-ca", tls_client_ca),
    ):
        if value is not None:
            command += [option, os.fspath(value)]
    environment = dict(os.environ)
    environment.pop(PASSWORD_VARIABLE, None)
    environment.pop(TOKEN_VARIABLE, None)
    credentials: object = auth  # checked: untyped callers may pass anything
    if isinstance(credentials, BasicAuth):
        basic = base64.b64decode(credentials.authorization().partition(" ")[2]).decode()
        username, _, password = basic.partition(":")
        command += ["--basic-auth-user", username]
        environment[PASSWORD_VARIABLE] = password
    elif isinstance(credentials, BearerToken):
        environment[TOKEN_VARIABLE] = credentials.authorization().partition(" ")[2]
    elif credentials is not None:
        msg = f"auth= must be a promloop.BasicAuth or promloop.BearerToken, not {auth!r}."
        raise TypeError(msg)
    return _spawn(command, environment, start_timeout)


def _spawn(command: Sequence[str], environment: dict[str, str], timeout: float) -> FanInProcess:
    process = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment
    )
    assert process.stdout is not None  # noqa: S101 -- stdout=PIPE
    try:
        line = _first_line(process.stdout, timeout)
    except BaseException:
        process.kill()
        _reap(process)
        raise
    finally:
        process.stdout.close()
    if not line.startswith(_ANNOUNCEMENT):
        status = _reap(process)
        msg = f"The fan-in exited (status {status}) before it listened; its error output says why."
        raise RuntimeError(msg)
    return FanInProcess(process, line[len(_ANNOUNCEMENT) :].strip())


def _reap(process: subprocess.Popen[bytes]) -> int:
    status = process.wait()
    assert process.stdin is not None  # noqa: S101 -- stdin=PIPE
    process.stdin.close()
    return status


def _first_line(stream: IO[bytes], timeout: float) -> str:
    """Read one line within *timeout* seconds, without a thread (the caller may fork later)."""
    deadline = time.monotonic() + timeout
    descriptor = stream.fileno()
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(descriptor, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                msg = f"The fan-in did not listen within {timeout} s."
                raise RuntimeError(msg)
            chunk = os.read(descriptor, 4096)
            if not chunk:
                break
            line += chunk
    return line.decode(errors="replace")
