"""Exit: a process that is told to stop leaves no registration, socket or file behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from pathlib import Path

import pytest

from ..peers import port_is_free, wait_for


pytest.importorskip("aiohttp")

from ..fake_consul import FakeConsul


ROOT = Path(__file__).parent.parent.parent


def run_app(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.sigterm_app", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail(f"the app did not start: {process.communicate()[1]}")
    return process, json.loads(line)["port"]


def terminate(process: subprocess.Popen[str]) -> tuple[float, str]:
    """Send SIGTERM; return how long the process took to die, and what it logged."""
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    return time.perf_counter() - started, stderr


class TestSigterm:
    """SIGTERM to a synchronous program with a threaded server and discovery cleans up."""

    def test_file_sd(self, tmp_path, figure):
        """The target file is removed and the port freed; the process still dies of SIGTERM."""
        process, port = run_app("filesd", str(tmp_path))
        wait_for(lambda: list(tmp_path.glob("*.json")), timeout=10, what="the target file")

        seconds, stderr = terminate(process)

        figure("SIGTERM to exit", round(seconds, 3), "s", discovery="FileSD")
        assert -signal.SIGTERM == process.returncode, stderr
        assert [] == list(tmp_path.glob("*.json"))
        assert port_is_free(port)
        assert "" == stderr

    def test_consul(self, figure):
        """The service is deregistered from the agent before the process dies."""
        consul = FakeConsul().start()
        try:
            process, port = run_app("consul", consul.url)
            wait_for(lambda: consul.services, timeout=10, what="the registration")

            seconds, stderr = terminate(process)

            figure("SIGTERM to exit", round(seconds, 3), "s", discovery="ConsulAgent")
            assert -signal.SIGTERM == process.returncode, stderr
            assert {} == consul.services
            assert port_is_free(port)
            assert "" == stderr
        finally:
            consul.close()
