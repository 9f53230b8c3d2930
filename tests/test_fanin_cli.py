"""The fan-in's command line (python -m promloop fanin) and child process (docs: fleet)."""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import ssl
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

from pathlib import Path

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

import trustme

from promloop import BasicAuth, BearerToken, _cli
from promloop.aio import _fanin_process
from promloop.aio.fanin import FanInProcess, start_fanin_in_process

from .peers import http_get, port_is_free, wait_for


def cli(*args: str, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "promloop", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        **kwargs,
    )


@pytest.fixture
def closed_stdin(monkeypatch):
    """Close standard input: a fan-in run with --exit-on-eof stops as soon as it started."""
    read, write = os.pipe()
    os.close(write)
    monkeypatch.setattr(sys, "stdin", os.fdopen(read))


@pytest.fixture
def certificate(tmp_path):
    """Return (CA, certificate file, key file, client CA file) for 127.0.0.1."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    server.private_key_pem.write_to_path(tmp_path / "key.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    return ca, tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"


def child_has_exited(pid):
    """Tell whether *pid* is gone (or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/status") as status:  # noqa: PTH123
            return any(line.startswith("State:\tZ") for line in status)
    except FileNotFoundError:
        return True


class TestCommandLine:
    def test_help(self):
        """--help lists the options and says why secrets stay off the command line."""
        result = cli("fanin", "--help")

        assert 0 == result.returncode
        for option in ("--aggregate", "--gauges", "--port", "--tls-cert", "--bearer-token-file"):
            assert option in result.stdout
        assert "ps, /proc/<pid>/cmdline" in result.stdout

    def test_no_command(self):
        """Without a command, the usage is shown and the exit status is 2."""
        result = cli()

        assert 2 == result.returncode
        assert "usage: python -m promloop" in result.stderr

    def test_serves_until_terminated(self, tmp_path):
        """The fan-in announces its URL once it listens, serves, and exits 0 on SIGTERM."""
        process = subprocess.Popen(
            [sys.executable, "-m", "promloop", "fanin", str(tmp_path), "--addr", "127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = process.stdout.readline()
            url = line.removeprefix("Serving metrics at ").strip()
            status, _, body = http_get(url)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)

        assert line.startswith("Serving metrics at http://127.0.0.1:")
        assert url.endswith("/metrics")
        assert 200 == status
        assert b"promloop_fanin_conflicts_total" in body
        assert (0, "") == (process.returncode, stderr)

    def test_missing_directory(self, tmp_path):
        """A missing directory fails the start with a message naming it."""
        result = cli("fanin", str(tmp_path / "nowhere"))

        assert 1 == result.returncode
        assert f"the directory '{tmp_path / 'nowhere'}' does not exist" in result.stderr
        assert "Traceback" not in result.stderr

    def test_runs_in_process(self, tmp_path, closed_stdin, capsys):
        """main() runs the fan-in until standard input closes (--exit-on-eof)."""
        status = _cli.main(["fanin", str(tmp_path), "--addr", "127.0.0.1", "--exit-on-eof"])

        assert 0 == status
        assert capsys.readouterr().out.startswith("Serving metrics at http://127.0.0.1:")

    def test_every_option(self, tmp_path, closed_stdin, capsys, certificate, monkeypatch):
        """TLS with client certificates, credentials, and the merging options all start."""
        _, cert, key, client_ca = certificate
        monkeypatch.setenv(_cli.TOKEN_VARIABLE, "t0ken")
        status = _cli.main(
            [
                "fanin",
                str(tmp_path),
                "--addr=127.0.0.1",
                "--path=/fleet",
                "--aggregate",
                "--gauges=max",
                "--scrape-timeout=1",
                "--no-created",
                f"--tls-cert={cert}",
                f"--tls-key={key}",
                f"--tls-client-ca={client_ca}",
                "--exit-on-eof",
            ]
        )

        assert 0 == status
        assert capsys.readouterr().out.startswith("Serving metrics at https://127.0.0.1:")

    def test_stops_on_a_signal(self, tmp_path, monkeypatch):
        """Without --exit-on-eof, SIGTERM stops the fan-in, and main() returns 0."""

        def announce(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler is in place by now

        monkeypatch.setattr(_cli, "print", announce, raising=False)
        status = _cli.main(["fanin", str(tmp_path), "--addr", "127.0.0.1"])

        assert 0 == status

    def test_tls_without_client_certificates(self, tmp_path, closed_stdin, capsys, certificate):
        """--tls-cert alone serves HTTPS to any client."""
        _, cert, key, _ = certificate
        args = ["fanin", str(tmp_path), "--addr=127.0.0.1", f"--tls-cert={cert}"]

        assert 0 == _cli.main([*args, f"--tls-key={key}", "--exit-on-eof"])
        assert "https://" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--tls-key=k.pem"], "--tls-key and --tls-client-ca need --tls-cert"),
            (["--basic-auth-password-file=p"], "--basic-auth-password-file needs"),
            (["--basic-auth-user=u"], "--basic-auth-user needs a password"),
            (["--basic-auth-user=u", "--bearer-token-file={empty}"], "is empty"),
        ],
    )
    def test_usage_errors(self, tmp_path, capsys, args, message):
        """Options that do not go together fail with status 2 and say why."""
        (tmp_path / "empty").write_text("\n")
        args = [a.format(empty=tmp_path / "empty") for a in args]

        assert 2 == _cli.main(["fanin", str(tmp_path), *args])
        assert message in capsys.readouterr().err

    @pytest.mark.parametrize("stdin", ["/dev/null", "a file", "none"])
    def test_exit_on_eof_needs_a_pipe(self, tmp_path, monkeypatch, capsys, stdin):
        """--exit-on-eof on standard input that is no pipe is a usage error, not a hang."""
        (tmp_path / "a file").touch()
        args = ["fanin", str(tmp_path), "--addr=127.0.0.1", "--exit-on-eof"]
        with contextlib.ExitStack() as files:
            if stdin == "none":  # closed when the process started
                monkeypatch.setattr(sys, "stdin", None)
            else:
                path = Path(os.devnull) if stdin == "/dev/null" else tmp_path / stdin
                monkeypatch.setattr(sys, "stdin", files.enter_context(path.open()))
            status = _cli.main(args)

        assert 2 == status
        assert "--exit-on-eof needs standard input to be a pipe" in capsys.readouterr().err

    def test_exit_on_eof_on_a_terminal(self, monkeypatch):
        """--exit-on-eof on a terminal is allowed: Ctrl-D ends the input."""
        main_end, terminal_end = os.openpty()
        try:
            with os.fdopen(terminal_end) as terminal:
                monkeypatch.setattr(sys, "stdin", terminal)

                _cli._check_stdin_is_a_pipe()  # raises nothing
        finally:
            os.close(main_end)

    @pytest.mark.parametrize(
        "args",
        [
            ["--port=70000"],
            ["--port=-1"],
            ["--port=x"],
            ["--scrape-timeout=0"],
            ["--scrape-timeout=nan"],
            ["--scrape-timeout=x"],
        ],
    )
    def test_values_out_of_range(self, tmp_path, capsys, args):
        """A port or a timeout out of range is a usage error (status 2) naming the option."""
        with pytest.raises(SystemExit) as exit_info:
            _cli.main(["fanin", str(tmp_path), *args])

        assert 2 == exit_info.value.code
        assert f"argument {args[0].split('=')[0]}: " in capsys.readouterr().err

    def test_values_in_range(self):
        """The edges of the ranges are accepted."""
        options = _cli.parser().parse_args(["fanin", "d", "--port=65535", "--scrape-timeout=0.001"])

        assert (65535, 0.001) == (options.port, options.scrape_timeout)

    def test_bad_certificate(self, tmp_path, capsys):
        """A certificate that cannot be loaded fails with status 1."""
        (tmp_path / "cert.pem").write_text("not a certificate")

        assert 1 == _cli.main(["fanin", str(tmp_path), f"--tls-cert={tmp_path / 'cert.pem'}"])
        assert "error:" in capsys.readouterr().err

    def test_without_aiohttp(self, tmp_path, monkeypatch, capsys):
        """Without aiohttp, the error names the extra to install."""
        monkeypatch.setitem(sys.modules, "promloop.aio.fanin", None)

        assert 1 == _cli.main(["fanin", str(tmp_path)])
        assert "promloop.aio.fanin" in capsys.readouterr().err

    def test_module_entry_point(self, monkeypatch, capsys):
        """``python -m promloop`` runs main() and exits with its status."""
        monkeypatch.setattr(sys, "argv", ["python -m promloop", "fanin", "--help"])

        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("promloop", run_name="__main__")

        assert 0 == exit_info.value.code
        assert "DIRECTORY" in capsys.readouterr().out


class TestCredentials:
    def options(self, *args):
        return _cli.parser().parse_args(["fanin", "d", *args])

    def test_none(self, monkeypatch):
        """No option and no variable: no credentials."""
        monkeypatch.delenv(_cli.TOKEN_VARIABLE, raising=False)

        assert _cli.credentials(self.options()) is None

    def test_basic_from_file_and_variable(self, tmp_path, monkeypatch):
        """The password comes from a file (without its final newline), else the variable."""
        monkeypatch.delenv(_cli.TOKEN_VARIABLE, raising=False)
        (tmp_path / "password").write_text("s3cret\n")
        from_file = _cli.credentials(
            self.options(
                "--basic-auth-user=prometheus",
                f"--basic-auth-password-file={tmp_path / 'password'}",
            )
        )
        monkeypatch.setenv(_cli.PASSWORD_VARIABLE, "fr0m-env")
        from_variable = _cli.credentials(self.options("--basic-auth-user=prometheus"))

        assert from_file.accepts(BasicAuth("prometheus", "s3cret").authorization())
        assert from_variable.accepts(BasicAuth("prometheus", "fr0m-env").authorization())

    def test_bearer_from_file_and_variable(self, tmp_path, monkeypatch):
        """The token comes from a file, else the variable; basic auth cannot come too."""
        (tmp_path / "token").write_text("t0ken\r\n")
        monkeypatch.setenv(_cli.TOKEN_VARIABLE, "fr0m-env")
        from_file = _cli.credentials(self.options(f"--bearer-token-file={tmp_path / 'token'}"))
        from_variable = _cli.credentials(self.options())

        assert from_file.accepts("Bearer t0ken")
        assert from_variable.accepts("Bearer fr0m-env")
        with pytest.raises(_cli.UsageError, match="not both"):
            _cli.credentials(self.options("--basic-auth-user=u"))


class TestStartFaninInProcess:
    def test_serves_and_closes(self, tmp_path):
        """The child listens before the call returns, and exits when closed."""
        fanin = start_fanin_in_process(tmp_path, addr="127.0.0.1", aggregate=True, created=False)
        try:
            status, _, body = http_get(fanin.metrics_url)
            running = fanin.running
        finally:
            fanin.close()
            fanin.close()

        assert (200, True) == (status, running)
        assert b"promloop_fanin_target_up{" not in body  # no targets yet
        assert not fanin.running
        assert f"<FanInProcess {fanin.pid} {fanin.metrics_url}>" == repr(fanin)

    def test_leaves_nothing(self, tmp_path):
        """Closed, failed or too slow: no child, no pipe in this process, the port free."""

        def descriptors():
            return sorted(os.listdir("/proc/self/fd"))  # noqa: PTH208 -- names, not paths

        before = descriptors()
        fanin = start_fanin_in_process(tmp_path, addr="127.0.0.1")
        port = int(fanin.metrics_url.split(":")[2].split("/")[0])
        try:
            with pytest.raises(RuntimeError, match="exited"):
                start_fanin_in_process(tmp_path, addr="127.0.0.1", port=port)
            with pytest.raises(RuntimeError, match="did not listen within"):
                start_fanin_in_process(tmp_path, start_timeout=0.001)
        finally:
            fanin.close()

        assert before == descriptors()
        assert child_has_exited(fanin.pid)
        assert port_is_free(port)

    @pytest.mark.parametrize("auth", [BasicAuth("prometheus", "s3:cret"), BearerToken("t0ken")])
    def test_credentials_travel_in_the_environment(self, tmp_path, auth):
        """Credentials reach the child, which then refuses requests without them."""
        fanin = start_fanin_in_process(tmp_path, addr="127.0.0.1", auth=auth)
        try:
            with pytest.raises(urllib.error.HTTPError) as refused:
                http_get(fanin.metrics_url)
            status, _, _ = http_get(fanin.metrics_url, Authorization=auth.authorization())
            with open(f"/proc/{fanin.pid}/cmdline", "rb") as cmdline:  # noqa: PTH123
                arguments = cmdline.read()
        finally:
            fanin.close()

        assert 401 == refused.value.code
        assert 200 == status
        assert b"s3:cret" not in arguments
        assert b"t0ken" not in arguments

    def test_tls(self, tmp_path, certificate):
        """TLS settings travel as file names; the child serves HTTPS with them."""
        ca, cert, key, _ = certificate
        fanin = start_fanin_in_process(tmp_path, addr="127.0.0.1", tls_cert=cert, tls_key=key)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        try:
            with urllib.request.urlopen(fanin.metrics_url, context=context, timeout=10) as answer:  # noqa: S310
                status = answer.status
        finally:
            fanin.close()

        assert fanin.metrics_url.startswith("https://")
        assert 200 == status

    def test_bad_auth(self, tmp_path):
        """auth= must be one of promloop's credential types."""
        with pytest.raises(TypeError, match="auth="):
            start_fanin_in_process(tmp_path, auth=("user", "password"))

    def test_missing_directory(self, tmp_path):
        """A missing directory fails in the caller, naming it, before any child starts."""
        with pytest.raises(FileNotFoundError, match="nowhere"):
            start_fanin_in_process(tmp_path / "nowhere")

    def test_child_fails_to_start(self, tmp_path):
        """A child that cannot listen (its port is taken) fails the call."""
        first = start_fanin_in_process(tmp_path, addr="127.0.0.1")
        port = first.metrics_url.split(":")[2].split("/")[0]
        try:
            with pytest.raises(RuntimeError, match="exited"):
                start_fanin_in_process(tmp_path, addr="127.0.0.1", port=int(port))
        finally:
            first.close()

    def test_child_too_slow(self, tmp_path):
        """A child that does not listen within start_timeout is killed, and the call fails."""
        with pytest.raises(RuntimeError, match="did not listen within"):
            start_fanin_in_process(tmp_path, start_timeout=0.001)

    def test_stops_when_parent_dies(self, tmp_path):
        """The child exits by itself when its parent is killed."""
        parent = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import time
                    from promloop.aio.fanin import start_fanin_in_process
                    fanin = start_fanin_in_process({str(tmp_path)!r}, addr="127.0.0.1")
                    print(fanin.pid, flush=True)
                    time.sleep(60)
                    """
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            child = int(parent.stdout.readline())
            parent.send_signal(signal.SIGKILL)
            parent.wait(10)
            gone = wait_for(lambda: child_has_exited(child), timeout=30, what="the child to exit")
        finally:
            parent.kill()
            parent.wait()
            parent.stdout.close()

        assert gone

    def test_forked_child_lets_go_of_the_pipe(self, tmp_path):
        """A process forked by the parent closes its copy of the pipe (here: as if forked)."""
        fanin = start_fanin_in_process(tmp_path, addr="127.0.0.1")

        _fanin_process._after_fork_in_child()  # closes this process's only copy
        fanin._process.wait(30)
        fanin.close()

        assert not fanin.running

    def test_child_without_pipe(self):
        """A child without a pipe (closed already) is left alone at fork() and closed anyway."""
        quiet = FanInProcess(
            subprocess.Popen([sys.executable, "-c", "pass"]), "http://127.0.0.1:1/metrics"
        )
        _fanin_process._after_fork_in_child()
        quiet.close()

        assert 0 == quiet._process.returncode

    def test_close_kills_a_stuck_child(self):
        """A child that does not exit within the timeout is killed."""
        stuck = FanInProcess(
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE
            ),
            "http://127.0.0.1:1/metrics",
        )
        stuck.close(timeout=0.1)

        assert not stuck.running
        assert -signal.SIGKILL == stuck._process.returncode
