"""Real peer programs for end-to-end tests: Prometheus, promtool, and our own apps.

Each peer listens on 127.0.0.1 only and stops by itself: the tests stop it,
and a `timeout` wrapper ends it anyway if the test run dies first.

A missing binary skips the test on a developer's machine; in CI (``CI`` or
``PROMLOOP_REQUIRE_PEERS`` set to a true value) it fails the test instead,
so that a broken install can never pass as a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


APPS = Path(__file__).parent / "apps"
EXAMPLES = Path(__file__).parent.parent / "examples"
LIFETIME = 300  # seconds: the longest any peer may live


def peers_required() -> bool:
    """Tell whether a missing peer binary is a failure (CI) rather than a skip."""
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes")
        for name in ("CI", "PROMLOOP_REQUIRE_PEERS")
    )


# The Debian package of each peer binary, where its name differs.
DEBIAN_PACKAGES = {"promtool": "prometheus"}


def require_binary(name: str) -> str:
    """Return the path of *name*, or skip (fail in CI) if it is not installed."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGES.get(name, name)
        message = f"{name} is not installed (Debian: apt-get install {package})"
        if peers_required():
            pytest.fail(f"{message}; CI must install it.")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Tell whether nothing holds *port* on 127.0.0.1 (a closed server freed it)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http_get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 -- loopback only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        # The error carries the open response; wait_for() keeps errors (and so their
        # frames, in a cycle) alive, and a socket freed by the garbage collector in some
        # later test fails that test with a ResourceWarning.
        with error:
            raise


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll *condition* until it returns something true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (OSError, ValueError, KeyError) as error:
            last_error = error
        else:
            if result:
                return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


def _bounded(command: list[str], lifetime: float) -> list[str]:
    timeout = shutil.which("timeout")
    return [timeout, "--signal=KILL", str(lifetime), *command] if timeout else command


@contextlib.contextmanager
def running(
    command: list[str], *, lifetime: float = LIFETIME, **kwargs: Any
) -> Iterator[subprocess.Popen[str]]:
    """Run *command* for the duration of the block, then stop it.

    It is killed after *lifetime* seconds anyway, should the test run die first.
    """
    process = subprocess.Popen(
        _bounded(command, lifetime),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@contextlib.contextmanager
def app(script: str, *args: str, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Run one of tests/apps/ and yield what it announces on its first line (JSON)."""
    environment = {**os.environ, **(env or {})}
    with running([sys.executable, str(APPS / script), *args], env=environment) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            _, stderr = process.communicate(timeout=10)
            pytest.fail(f"{script} exited before it started:\n{stderr}")
        yield json.loads(line)


class Prometheus:
    """A real Prometheus server on 127.0.0.1, queried through its HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        _, _, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        answer = json.loads(body)
        assert "success" == answer["status"], answer
        return answer["data"]

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def wait_until_up(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until *count* targets are up; return them."""

        def all_up() -> list[dict[str, Any]] | None:
            targets = self.targets()
            up = [t for t in targets if t["health"] == "up"]
            return up if len(up) == count == len(targets) else None

        try:
            return list(wait_for(all_up, timeout=timeout, what=f"{count} targets up"))
        except pytest.fail.Exception:
            pytest.fail(f"targets not all up: {json.dumps(self.targets(), indent=1)}")

    def value(self, expression: str, timeout: float = 30) -> float:
        """Return the value of an instant query that has exactly one result."""

        def one_result() -> list[Any] | None:
            result = self.api("query", query=expression)["result"]
            return result if len(result) == 1 else None  # a list: 0.0 is a value too

        [sample] = wait_for(one_result, timeout=timeout, what=f"a result for {expression}")
        return float(sample["value"][1])


@contextlib.contextmanager
def victoria_metrics(tmp_path: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[Prometheus]:
    """Run Debian's VictoriaMetrics, scraping with *scrape_configs* every second.

    It reads Prometheus's scrape configuration (including ``consul_sd_configs``,
    which Debian's Prometheus is built without) and answers the same
    ``/api/v1/targets`` and ``/api/v1/query``.
    """
    binary = require_binary("victoria-metrics")
    config = tmp_path / "scrape.yml"
    config.write_text(
        json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs})
    )
    port = free_port()
    command = [
        binary,
        f"-promscrape.config={config}",
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={tmp_path / 'vm-data'}",
        "-promscrape.consulSDCheckInterval=1s",
        "-search.latencyOffset=0s",
        "-search.disableCache",
        "-loggerLevel=ERROR",
    ]
    with _serving(command, port, "/health") as server:
        yield server


@contextlib.contextmanager
def prometheus(
    tmp_path: Path, scrape_configs: list[dict[str, Any]], *, lifetime: float = LIFETIME
) -> Iterator[Prometheus]:
    """Run Debian's Prometheus with *scrape_configs*, scraping every second.

    A test that needs it longer than LIFETIME seconds (the long soak) says so
    with *lifetime*.
    """
    binary = require_binary("prometheus")
    config = tmp_path / "prometheus.yml"
    # JSON is YAML: no YAML library needed.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": scrape_configs,
            }
        )
    )
    port = free_port()
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with _serving(command, port, "/-/ready", lifetime) as server:
        yield server


@contextlib.contextmanager
def _serving(
    command: list[str], port: int, ready_path: str, lifetime: float = LIFETIME
) -> Iterator[Prometheus]:
    """Run a Prometheus-compatible server until the block ends, once it answers *ready_path*."""
    name = Path(command[0]).name
    with running(command, lifetime=lifetime) as process:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                _, stderr = process.communicate()
                pytest.fail(f"{name} exited with {process.returncode}:\n{stderr}")
            return http_get(f"{url}{ready_path}")[0] == 200

        wait_for(ready, timeout=60, what=f"{name} to be ready")
        yield Prometheus(url)


@contextlib.contextmanager
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """Run Debian's Pushgateway on 127.0.0.1; yield its URL."""
    binary = require_binary("prometheus-pushgateway")
    port = free_port()
    command = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={tmp_path / 'pushgateway.data'}",
        "--log.level=warn",
    ]
    with running(command):
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{url}/-/ready")[0] == 200, timeout=60, what="pushgateway")
        yield url


@contextlib.contextmanager
def example(script: str, *args: str, cwd: Path | None = None) -> Iterator[str]:
    """Run one of examples/ as a newcomer would; yield the metrics URL it announces."""
    with running([sys.executable, str(EXAMPLES / script), *args], cwd=cwd) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if "Serving metrics at " in line:
                yield line.split("Serving metrics at ", 1)[1].split()[0]
                return
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"{script} exited without serving metrics:\n{stderr}")
