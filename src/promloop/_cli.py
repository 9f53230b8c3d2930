"""promloop's command line: ``python -m promloop fanin DIRECTORY``."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import ssl
import stat
import sys

from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._auth import BasicAuth, BearerToken


if TYPE_CHECKING:
    from collections.abc import Sequence


PASSWORD_VARIABLE: Final = "PROMLOOP_FANIN_PASSWORD"  # noqa: S105 -- a variable's name
TOKEN_VARIABLE: Final = "PROMLOOP_FANIN_BEARER_TOKEN"  # noqa: S105 -- a variable's name

_SECRETS_NOTE: Final = f"""\
Secrets never go on the command line, where every user of the host can read
them (ps, /proc/<pid>/cmdline) and shells keep them in their history: the
basic-auth password comes from --basic-auth-password-file or the environment
variable {PASSWORD_VARIABLE}, the bearer token from --bearer-token-file or
{TOKEN_VARIABLE}.
"""


class UsageError(Exception):
    """A command line that cannot be run; the message says why."""


def parser() -> argparse.ArgumentParser:
    """Return the parser of promloop's command line."""
    main = argparse.ArgumentParser(
        prog="python -m promloop", description="promloop's command-line tools."
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fanin = commands.add_parser(
        "fanin",
        help="serve the merged metrics of every worker registered in a file_sd directory",
        description=(
            "Serve the merged metrics of every live worker registered in DIRECTORY "
            "(with promloop.aio.sd.FileSD) on one port: /metrics (merged), "
            "/targets (the workers, for Prometheus's http_sd_configs) and / (an index)."
        ),
        epilog=_SECRETS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fanin.add_argument("directory", metavar="DIRECTORY", help="the workers' file_sd directory")
    fanin.add_argument(
        "--addr", default="", help="the interface to listen on (default: all of them)"
    )
    fanin.add_argument(
        "--port", type=_port, default=0, help="the port to listen on (default: a free one)"
    )
    fanin.add_argument("--path", default="/metrics", help="where to serve the merged metrics")
    fanin.add_argument(
        "--aggregate",
        action="store_true",
        help="sum over the workers instead of labelling each one's samples with its labels",
    )
    fanin.add_argument(
        "--gauges",
        choices=("sum", "max", "min", "per-worker"),
        default="sum",
        help="with --aggregate, how the workers' gauges combine (default: sum)",
    )
    fanin.add_argument(
        "--scrape-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="the most a worker may take to answer (default: 3)",
    )
    fanin.add_argument("--no-created", action="store_true", help="leave out the _created samples")
    tls = fanin.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="the certificate's key, if not in it")
    tls.add_argument(
        "--tls-client-ca", metavar="FILE", help="require client certificates signed by this CA"
    )
    auth = fanin.add_argument_group("credentials every request must carry")
    auth.add_argument("--basic-auth-user", metavar="USER", help="require basic auth as USER")
    auth.add_argument(
        "--basic-auth-password-file",
        metavar="FILE",
        help=f"USER's password (default: the variable {PASSWORD_VARIABLE})",
    )
    auth.add_argument(
        "--bearer-token-file",
        metavar="FILE",
        help=f"require this bearer token (or set the variable {TOKEN_VARIABLE})",
    )
    fanin.add_argument(
        "--exit-on-eof",
        action="store_true",
        help="exit when standard input closes (ties the fan-in to the process that started it)",
    )
    return main


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:  # noqa: PLR2004 -- TCP's range
        msg = f"{text!r} is not a port number (0 to 65535)"
        raise argparse.ArgumentTypeError(msg)
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        msg = f"{text!r} is not a positive number of seconds"
        raise argparse.ArgumentTypeError(msg)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Run promloop's command line; return the exit status."""
    options = parser().parse_args(argv)
    try:
        return asyncio.run(_fanin(options))
    except (UsageError, OSError, ValueError, ssl.SSLError) as error:
        print(f"python -m promloop fanin: error: {error}", file=sys.stderr)  # noqa: T201
        return 2 if isinstance(error, UsageError) else 1
    except ImportError as error:
        print(f"python -m promloop fanin: error: {error}", file=sys.stderr)  # noqa: T201
        return 1


def _secret(path: str | None, variable: str, what: str) -> str | None:
    """Read a secret from *path* (without its final newline), else from *variable*."""
    if path is not None:
        secret = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        if not secret:
            msg = f"the {what} file {path!r} is empty"
            raise UsageError(msg)
        return secret
    return os.environ.get(variable) or None


def credentials(options: argparse.Namespace) -> BasicAuth | BearerToken | None:
    """Return the credentials the options ask for."""
    token = _secret(options.bearer_token_file, TOKEN_VARIABLE, "bearer token")
    if options.basic_auth_user is None:
        if options.basic_auth_password_file is not None:
            msg = "--basic-auth-password-file needs --basic-auth-user"
            raise UsageError(msg)
        return None if token is None else BearerToken(token)
    if token is not None:
        msg = f"choose basic auth or a bearer token ({TOKEN_VARIABLE} is set), not both"
        raise UsageError(msg)
    password = _secret(options.basic_auth_password_file, PASSWORD_VARIABLE, "password")
    if password is None:
        msg = (
            f"--basic-auth-user needs a password: --basic-auth-password-file or {PASSWORD_VARIABLE}"
        )
        raise UsageError(msg)
    return BasicAuth(options.basic_auth_user, password)


def tls_context(options: argparse.Namespace) -> ssl.SSLContext | None:
    """Return the TLS settings the options ask for, or None for plain HTTP."""
    if options.tls_cert is None:
        if options.tls_key is not None or options.tls_client_ca is not None:
            msg = "--tls-key and --tls-client-ca need --tls-cert"
            raise UsageError(msg)
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    if options.tls_client_ca is not None:
        context.load_verify_locations(options.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _check_stdin_is_a_pipe() -> None:
    """Refuse --exit-on-eof where standard input is no pipe (closed, /dev/null, a file).

    The event loop can watch only a pipe or a socket for its end: on
    /dev/null (systemd's and docker's default) epoll refuses to watch it, and
    the fan-in would log a traceback and never exit.
    """
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        terminal = sys.stdin.isatty()  # Ctrl-D ends it
    except (AttributeError, ValueError, OSError):  # sys.stdin is None, or closed
        mode, terminal = 0, False
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or terminal):
        msg = "--exit-on-eof needs standard input to be a pipe, held open by the parent process"
        raise UsageError(msg)


async def _fanin(options: argparse.Namespace) -> int:
    from .aio.fanin import start_fanin  # noqa: PLC0415 -- needs aiohttp, only for this command

    if options.exit_on_eof:
        _check_stdin_is_a_pipe()

    extra = {} if options.scrape_timeout is None else {"scrape_timeout": options.scrape_timeout}
    server = await start_fanin(
        options.directory,
        addr=options.addr,
        port=options.port,
        ssl_ctx=tls_context(options),
        auth=credentials(options),
        path=options.path,
        aggregate=options.aggregate,
        gauges=options.gauges,
        created=not options.no_created,
        **extra,
    )
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if options.exit_on_eof:
            await _stop_at_eof(stop)
        print(f"Serving metrics at {server.metrics_url}", flush=True)  # noqa: T201
        await stop.wait()
    finally:
        await server.close()
    return 0


async def _stop_at_eof(stop: asyncio.Event) -> None:
    """Set *stop* once standard input reaches its end (its writer closed it, or died)."""

    class Watch(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
            stop.set()

    await asyncio.get_running_loop().connect_read_pipe(Watch, sys.stdin)
