"""FileSD and the file_sd directory: target files, slots, staleness (docs: discovery, fleet).

FileSD is plain file I/O: these tests need no aiohttp (the bare tox
environments run them), except the one that registers a real server.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from typing import NamedTuple

import pytest

from promloop import _file_sd
from promloop._file_sd import Target, TargetDirectory, advertised_host
from promloop.aio.sd import FileSD


run = asyncio.run


class Address(NamedTuple):
    addr: str
    port: int


class StandIn:
    """What a ServiceDiscovery sees of a server: socket, https, metrics_path."""

    def __init__(self, addr="127.0.0.1", port=9100, *, https=False, metrics_path="/metrics"):
        self.socket = Address(addr, port)
        self.https = https
        self.metrics_path = metrics_path


def register(discovery, server=None):
    """Register *server* (a stand-in by default) in a loop of its own; return the deregisterer."""
    return run(discovery.register(server or StandIn()))


def files(directory):
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def content(path):
    return json.loads(path.read_text())


# A worker in a process of its own: registers a stand-in server, says so, then
# waits for a line on stdin.  With "fork-exit", it first forks a child that
# exits at once; with "fork-live", a child that waits for the line instead.
WORKER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from typing import NamedTuple
    from promloop.aio.sd import FileSD

    class Address(NamedTuple):
        addr: str
        port: int

    class StandIn:
        socket = Address("127.0.0.1", int(sys.argv[2]))
        https = False
        metrics_path = "/metrics"

    directory, _, mode = sys.argv[1:4]
    slot = None if mode == "noslot" else "worker"
    asyncio.run(FileSD(directory, slot=slot).register(StandIn()))
    if mode.startswith("fork"):
        child = os.fork()
        if child == 0:
            if mode == "fork-live":
                os.write(1, f"child {os.getpid()}\\n".encode())  # one write: no interleaving
                sys.stdin.readline()
            sys.exit(0)
        if mode == "fork-exit":
            os.waitpid(child, 0)
    os.write(1, f"registered {os.getpid()}\\n".encode())
    sys.stdin.readline()
    """
)


class Worker:
    """A process that registers with FileSD and waits, to be killed or ended."""

    def __init__(self, directory, port=9100, mode="slot"):
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(directory), str(port), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        count = 2 if mode == "fork-live" else 1
        self.lines = sorted(self.process.stdout.readline().split() for _ in range(count))

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.close()

    def end(self):
        """Let the process exit normally (without closing its server)."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait(timeout=10)
        self.close()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdin.close()
        self.process.stdout.close()


class TestAdvertisedHost:
    @pytest.mark.parametrize("wildcard", ["", "0.0.0.0", "::"])  # noqa: S104
    def test_wildcard_becomes_host_name(self, wildcard):
        """A server on every interface is advertised by this host's name, never 0.0.0.0 or ::."""
        assert socket.gethostname() == advertised_host(StandIn(wildcard), None)

    def test_bound_address_and_override(self):
        """A bound address is advertised as is; address= wins over it."""
        assert "127.0.0.1" == advertised_host(StandIn("127.0.0.1"), None)
        assert "metrics.example" == advertised_host(StandIn("127.0.0.1"), "metrics.example")


class TestFileSD:
    def test_writes_and_removes_its_file(self, tmp_path):
        """The target file holds the server and exactly the labels given; close removes it."""
        discovery = FileSD(tmp_path, labels={"service": "billing", "env": "test"})

        deregister = register(discovery, StandIn(port=9321))
        written = files(tmp_path)
        target = content(tmp_path / written[0])
        run(deregister())
        run(deregister())  # a second close does nothing

        assert [f"promloop-127.0.0.1-9321-{os.getpid()}.json"] == written
        assert [
            {"targets": ["127.0.0.1:9321"], "labels": {"service": "billing", "env": "test"}}
        ] == target
        assert [] == list(tmp_path.iterdir())

    def test_ipv6_and_custom_name(self, tmp_path):
        """An IPv6 target is bracketed; filename= names the file."""
        register(FileSD(tmp_path, address="::1", filename="mine.json"), StandIn("::", 80))

        assert [{"targets": ["[::1]:80"], "labels": {}}] == content(tmp_path / "mine.json")

    def test_replaces_atomically(self, tmp_path, monkeypatch):
        """The file is replaced, never rewritten in place; no temporary file is left behind."""
        replaced = []
        real_replace = os.replace
        monkeypatch.setattr(
            os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst))
        )

        register(FileSD(tmp_path, filename="t.json"))

        [(temporary, final)] = replaced
        assert str(tmp_path / "t.json") == str(final)
        assert not str(temporary).endswith((".json", ".yml", ".yaml"))
        assert ["t.json"] == [p.name for p in tmp_path.iterdir()]

    @pytest.mark.parametrize("slot", [None, "worker"])
    def test_failed_write_leaves_nothing(self, tmp_path, monkeypatch, slot):
        """A write that fails leaves neither the file nor a temporary one, nor a held slot."""

        def broken_replace(src, dst):
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", broken_replace)

        with pytest.raises(OSError, match="disk full"):
            register(FileSD(tmp_path, slot=slot))
        monkeypatch.undo()
        if slot:
            register(FileSD(tmp_path, slot=slot))  # the slot was let go

        assert (["promloop-worker-0.json"] if slot else []) == files(tmp_path)

    def test_failed_write_names_the_directory(self, tmp_path, monkeypatch):
        """A full disk's error names the directory, keeping its errno."""

        def full(descriptor, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full)

        with pytest.raises(OSError, match=f"{tmp_path}.*No space left") as info:
            register(FileSD(tmp_path))
        assert errno.ENOSPC == info.value.errno

    def test_interrupted_write_leaves_nothing(self, tmp_path, monkeypatch):
        """An interruption mid-write passes through untouched, and leaves no temporary file."""

        def interrupted(src, dst):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "replace", interrupted)

        with pytest.raises(KeyboardInterrupt):
            register(FileSD(tmp_path))
        assert [] == files(tmp_path)

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"labels": {"1bad": "x"}}, ValueError),
            ({"labels": {"__reserved": "x"}}, ValueError),
            ({"labels": {"ok": 1}}, TypeError),
            ({"filename": "targets.yml"}, ValueError),
            ({"filename": "../escape.json"}, ValueError),
            ({"slot": "1bad"}, ValueError),
            ({"slot": "__worker"}, ValueError),
            ({"slot": "worker", "labels": {"worker": "a"}}, ValueError),
            ({"slot": "worker", "filename": "w.json"}, ValueError),
        ],
    )
    def test_invalid(self, tmp_path, kwargs, error):
        """Bad labels, file names or slots fail when FileSD is made, naming the culprit."""
        with pytest.raises(error, match="FileSD"):
            FileSD(tmp_path, **kwargs)

    def test_repr(self, tmp_path):
        """The repr names the directory, the labels and the slot."""
        assert f"FileSD({str(tmp_path)!r}, labels={{'a': 'b'}})" == repr(
            FileSD(tmp_path, labels={"a": "b"})
        )
        assert f"FileSD({str(tmp_path)!r}, labels={{}}, slot='worker')" == repr(
            FileSD(tmp_path, slot="worker")
        )

    def test_missing_directory_is_named(self, tmp_path):
        """A missing directory fails the registration with a message naming it."""
        missing = tmp_path / "nowhere"

        with pytest.raises(FileNotFoundError, match=f"FileSD: the directory '{missing}'"):
            register(FileSD(missing))
        with pytest.raises(FileNotFoundError, match=f"FileSD: the directory '{missing}'"):
            register(FileSD(missing, slot="worker"))

    def test_unwritable_directory_is_named(self, tmp_path, monkeypatch):
        """A directory this process cannot write in fails the registration, naming it."""
        monkeypatch.setattr(os, "access", lambda path, mode: False)

        with pytest.raises(PermissionError, match=f"FileSD: the directory '{tmp_path}'"):
            register(FileSD(tmp_path, slot="worker"))
        assert [] == list(tmp_path.iterdir())

    def test_temporary_file_failure_names_the_directory(self, tmp_path, monkeypatch):
        """A temporary file that cannot be made is reported by its directory, not its name."""

        def refuse(**kwargs):
            raise PermissionError(13, "Permission denied", f"{kwargs['dir']}/.x.tmp")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)

        with pytest.raises(PermissionError, match=f"directory '{tmp_path}': Permission denied"):
            register(FileSD(tmp_path))

    def test_with_a_server(self, tmp_path):
        """start_http_server registers the file and removes it on close."""
        web = pytest.importorskip("promloop.aio.web")

        async def main():
            server = await web.start_http_server(
                addr="127.0.0.1", service_discovery=FileSD(tmp_path, slot="worker")
            )
            target = content(tmp_path / "promloop-worker-0.json")
            registered = server.is_registered
            await server.close()
            return server, target, registered

        server, target, registered = run(main())

        assert registered
        assert [
            {"targets": [f"127.0.0.1:{server.socket.port}"], "labels": {"worker": "0"}}
        ] == target
        assert [] == files(tmp_path)

    def test_closed_at_exit_without_error(self, tmp_path):
        """A threaded server still open at exit deregisters cleanly (no traceback).

        At interpreter exit, executors refuse new work before the servers
        still open are closed: deregistering must not need one.
        """
        pytest.importorskip("aiohttp")
        script = textwrap.dedent(
            f"""
            from promloop.aio.sd import FileSD
            from promloop.aio.web import start_http_server_in_thread

            start_http_server_in_thread(
                addr="127.0.0.1", service_discovery=FileSD({str(tmp_path)!r}, slot="worker")
            )
            """
        )

        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )

        assert (0, "") == (done.returncode, done.stderr)
        assert [] == files(tmp_path)

    def test_deregister_without_executor(self, tmp_path):
        """Deregistering in a loop whose executor is shut down removes the file in the loop."""

        async def main():
            deregister = await FileSD(tmp_path, slot="worker").register(StandIn())
            await asyncio.get_running_loop().shutdown_default_executor()
            await deregister()

        run(main())

        assert [] == files(tmp_path)

    def test_removed_at_exit(self, tmp_path):
        """A process that exits without closing its server leaves no target file."""
        for mode in ("slot", "noslot"):
            worker = Worker(tmp_path, mode=mode)
            assert 1 == len(files(tmp_path))
            worker.end()

            assert [] == files(tmp_path)


class TestProcessLifetime:
    """What happens at exit and at fork(), called here in-process (subprocess tests above)."""

    def test_end_all_removes_open_registrations(self, tmp_path):
        """At exit, the files of every server still open are removed and their slots freed."""
        register(FileSD(tmp_path, slot="worker"))
        register(FileSD(tmp_path))

        _file_sd._end_all()

        assert [] == files(tmp_path)
        register(FileSD(tmp_path, slot="worker"))
        assert ["promloop-worker-0.json"] == files(tmp_path)

    def test_fork_child_forgets(self, tmp_path):
        """A forked child closes its copies of the locks and will remove no file."""
        deregister = register(FileSD(tmp_path, slot="worker"))
        [registration] = [r for r in _file_sd._live if r.path.parent == tmp_path]
        unlocked = _file_sd._Registration(tmp_path / "x.json", None)  # a platform without flock

        _file_sd._after_fork_in_child()  # as in the child
        run(deregister())

        assert registration.descriptor is None
        assert unlocked not in _file_sd._live
        assert ["promloop-worker-0.json"] == files(tmp_path)  # still the "parent's"

    def test_registration_without_lock(self, tmp_path):
        """Where there is no flock(), ending a registration just removes its file."""
        write(tmp_path, "x.json", [])
        _file_sd._Registration(tmp_path / "x.json", None).end()

        assert [] == files(tmp_path)


class TestSlots:
    def test_lowest_free_slot(self, tmp_path):
        """Each registration takes the lowest free number and publishes it as the label."""
        discovery = FileSD(tmp_path, labels={"app": "billing"}, slot="worker")
        first = register(discovery, StandIn(port=1))
        second = register(FileSD(tmp_path, slot="worker"), StandIn(port=2))
        run(first())
        third = register(discovery, StandIn(port=3))

        assert [
            {"targets": ["127.0.0.1:3"], "labels": {"app": "billing", "worker": "0"}}
        ] == content(tmp_path / "promloop-worker-0.json")
        assert [{"targets": ["127.0.0.1:2"], "labels": {"worker": "1"}}] == content(
            tmp_path / "promloop-worker-1.json"
        )
        run(second())
        run(third())
        assert [] == files(tmp_path)
        assert {".promloop-worker-0.lock", ".promloop-worker-1.lock"} == {
            p.name for p in tmp_path.iterdir()
        }  # lock files stay: deleting one could let two processes own its slot

    def test_slot_names_are_separate(self, tmp_path):
        """Two slot labels in one directory count independently."""
        register(FileSD(tmp_path, slot="worker"))
        register(FileSD(tmp_path, slot="shard"))

        assert ["promloop-shard-0.json", "promloop-worker-0.json"] == files(tmp_path)

    def test_killed_worker_frees_its_slot(self, tmp_path):
        """A worker killed with SIGKILL frees its slot at once; its replacement takes it."""
        first = Worker(tmp_path, port=1)
        second = Worker(tmp_path, port=2)
        first.kill()
        try:
            replacement = Worker(tmp_path, port=3)
            replacement.close()
        finally:
            second.close()

        assert ["127.0.0.1:3"] == content(tmp_path / "promloop-worker-0.json")[0]["targets"]

    def test_forked_child_keeps_no_slot(self, tmp_path):
        """A child forked by a worker does not keep the slot alive after the worker died."""
        worker = Worker(tmp_path, port=1, mode="fork-live")
        (_, child_pid), (_, worker_pid) = worker.lines
        try:
            os.kill(int(worker_pid), signal.SIGKILL)  # the child lives on
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with os.fdopen(os.open(tmp_path / ".promloop-worker-0.lock", os.O_RDONLY)) as f:
                    if _file_sd._lock(f.fileno(), fcntl.LOCK_SH):
                        break
                time.sleep(0.05)
            replacement = Worker(tmp_path, port=2)
            replacement.close()
        finally:
            worker.end()  # the child reads the line and exits

        assert ["127.0.0.1:2"] == content(tmp_path / "promloop-worker-0.json")[0]["targets"]
        assert child_pid != worker_pid

    def test_forked_child_leaves_the_file(self, tmp_path):
        """A child forked by a worker does not remove the worker's file when it exits."""
        worker = Worker(tmp_path, port=1, mode="fork-exit")  # the child has exited
        try:
            written = files(tmp_path)
        finally:
            worker.end()

        assert ["promloop-worker-0.json"] == written
        assert [] == files(tmp_path)

    def test_waits_out_a_staleness_probe(self, tmp_path):
        """A slot that only a fan-in's shared probe holds is claimed once the probe lets go."""
        run(register(FileSD(tmp_path, slot="worker"))())  # makes the lock file of slot 0
        lock = tmp_path / ".promloop-worker-0.lock"
        probe = os.open(lock, os.O_RDONLY)
        fcntl.flock(probe, fcntl.LOCK_SH)
        releaser = threading.Timer(0.02, os.close, (probe,))
        releaser.start()

        register(FileSD(tmp_path, slot="worker"))
        releaser.join()

        assert ["promloop-worker-0.json"] == files(tmp_path)

    def test_gives_up_on_a_probe_that_stays(self, tmp_path, monkeypatch):
        """A shared lock held past the retries makes the claim move on to the next slot."""
        monkeypatch.setattr(_file_sd, "CLAIM_ATTEMPTS", 3)
        (tmp_path / ".promloop-worker-0.lock").touch()
        with open(tmp_path / ".promloop-worker-0.lock") as probe:  # noqa: PTH123
            fcntl.flock(probe, fcntl.LOCK_SH)

            register(FileSD(tmp_path, slot="worker"))

        assert ["promloop-worker-1.json"] == files(tmp_path)


def write(directory, name, groups):
    (directory / name).write_text(json.dumps(groups))


class TestTargetDirectory:
    def test_reads_every_json_file(self, tmp_path):
        """Targets come by file name, then in file order; dot files and *.yml are not read."""
        write(tmp_path, "b.json", [{"targets": ["h:2", "h:3"], "labels": {"worker": "1"}}])
        write(tmp_path, "a.json", [{"targets": ["h:1"]}])
        write(tmp_path, ".hidden.json", [{"targets": ["h:9"]}])
        write(tmp_path, "c.yml", [{"targets": ["h:9"]}])

        targets = TargetDirectory(tmp_path).read()

        assert [
            Target("a.json", "h:1", {}),
            Target("b.json", "h:2", {"worker": "1"}),
            Target("b.json", "h:3", {"worker": "1"}),
        ] == targets
        assert "b.json|h:3" == targets[2].identity

    def test_slots_in_numeric_order(self, tmp_path):
        """Slot 2 comes before slot 10: the lowest slot wins conflicts and orders families."""
        for number in (10, 2, 1):
            write(tmp_path, f"promloop-worker-{number}.json", [{"targets": [f"h:{number}"]}])

        targets = TargetDirectory(tmp_path).read()

        assert ["h:1", "h:2", "h:10"] == [target.address for target in targets]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("{", "not JSON"),
            ("\xff", "not JSON"),
            ('{"targets": []}', "not a list of target groups"),
            ('["h:1"]', 'a target group without a list of "targets"'),
            ('[{"targets": "h:1"}]', 'a target group without a list of "targets"'),
            ('[{"targets": [1]}]', 'a target group without a list of "targets"'),
            ('[{"targets": ["h:1"], "labels": []}]', '"labels" is not a mapping'),
            ('[{"targets": ["h:1"], "labels": {"a": 1}}]', '"labels" is not a mapping'),
            ('[{"targets": ["h:1"], "labels": {"": "v"}}]', "an empty label name"),
            ('[{"targets": ["h:1"], "labels": {"a": "\\ud800"}}]', "text that is not UTF-8"),
            ('[{"targets": ["h:1"], "labels": {"\\udc00": "v"}}]', "text that is not UTF-8"),
            ('[{"targets": ["\\ud800:1"]}]', "text that is not UTF-8"),
        ],
    )
    def test_malformed_file_is_skipped_with_one_log_line(self, tmp_path, caplog, text, problem):
        """A malformed file is skipped and logged once, however often the directory is read."""
        (tmp_path / "bad.json").write_bytes(text.encode("latin-1"))
        write(tmp_path, "good.json", [{"targets": ["h:1"]}])
        directory = TargetDirectory(tmp_path)

        with caplog.at_level(logging.WARNING, logger="promloop"):
            first = directory.read()
            second = directory.read()

        assert [Target("good.json", "h:1", {})] == first == second
        [record] = caplog.records
        assert f"Skipping the target file {tmp_path / 'bad.json'}: {problem}" in record.message

    def test_changed_file_is_read_again(self, tmp_path, caplog):
        """A file is parsed again when it changes; broken, it keeps its last valid targets.

        As Prometheus's file_sd keeps them: a file being rewritten by hand
        does not make its targets leave (and, counted again when it is
        fixed, double an aggregate's counters).
        """
        directory = TargetDirectory(tmp_path)
        write(tmp_path, "t.json", [{"targets": ["h:1"]}])
        before = directory.read()
        (tmp_path / "t.json").write_text("oops")
        with caplog.at_level(logging.WARNING, logger="promloop"):
            broken = directory.read()
            again = directory.read()
        write(tmp_path, "t.json", [{"targets": ["h:2"]}])

        assert [Target("t.json", "h:1", {})] == before == broken == again
        assert 1 == len(caplog.records)
        assert [Target("t.json", "h:2", {})] == directory.read()

    def test_unreadable_entries_are_skipped(self, tmp_path, caplog):
        """A *.json entry that cannot be read is skipped, logged once; the others are read."""
        (tmp_path / "directory.json").mkdir()
        (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
        write(tmp_path, "good.json", [{"targets": ["h:1"]}])
        directory = TargetDirectory(tmp_path)

        with caplog.at_level(logging.WARNING, logger="promloop"):
            first = directory.read()
            second = directory.read()

        assert [Target("good.json", "h:1", {})] == first == second
        assert ["directory.json", "loop.json"] == sorted(
            record.message.split(": ")[0].rsplit("/", 1)[1] for record in caplog.records
        )

    def test_identity_of_a_process(self, tmp_path):
        """A file FileSD wrote names its writer: a new process, a new identity."""
        register(FileSD(tmp_path, slot="worker"), StandIn(port=1))
        first = TargetDirectory(tmp_path).read()
        _file_sd._end_all()
        register(FileSD(tmp_path, slot="worker"), StandIn(port=1))  # same name, same port
        second = TargetDirectory(tmp_path).read()
        stat = (tmp_path / "promloop-worker-0.json").stat()
        writer = f"{stat.st_ino}.{stat.st_mtime_ns}"

        assert [f"promloop-worker-0.json@{writer}|127.0.0.1:1"] == [t.identity for t in second]
        assert first[0].identity != second[0].identity
        assert "static.json|h:1" == Target("static.json", "h:1", {}).identity

    def test_file_gone_while_reading(self, tmp_path):
        """A file removed between listing and reading is left out (a dangling link stands in)."""
        (tmp_path / "gone.json").symlink_to(tmp_path / "nothing")

        assert [] == TargetDirectory(tmp_path).read()

    def test_check_names_the_directory(self, tmp_path, monkeypatch):
        """check() fails on a missing or unwritable directory, naming it and who asked."""
        with pytest.raises(FileNotFoundError, match=f"fan-in: the directory '{tmp_path / 'x'}'"):
            TargetDirectory(tmp_path / "x").check("fan-in")
        TargetDirectory(tmp_path).check("fan-in")
        monkeypatch.setattr(os, "access", lambda path, mode: False)
        with pytest.raises(PermissionError, match="is not writable"):
            TargetDirectory(tmp_path).check("fan-in")


class TestRemoveIfStale:
    def test_dead_slot_worker(self, tmp_path, caplog):
        """A slot file whose worker died is removed; a live worker's is kept."""
        dead = Worker(tmp_path, port=1)
        live = Worker(tmp_path, port=2)
        dead.kill()
        directory = TargetDirectory(tmp_path)
        try:
            with caplog.at_level(logging.INFO, logger="promloop"):
                removed = [directory.remove_if_stale(t) for t in directory.read()]
        finally:
            live.close()

        assert [True, False] == removed
        assert ["promloop-worker-1.json"] == files(tmp_path)
        assert "Removed the target file" in caplog.text

    def test_dead_process_without_slot(self, tmp_path):
        """A default-named file locks its own inode: removed once its process died."""
        dead = Worker(tmp_path, port=1, mode="noslot")
        live = Worker(tmp_path, port=2, mode="noslot")
        dead.kill()
        directory = TargetDirectory(tmp_path)
        try:
            removed = {t.address: directory.remove_if_stale(t) for t in directory.read()}
        finally:
            live.close()

        assert {"127.0.0.1:1": True, "127.0.0.1:2": False} == removed
        assert 1 == len(files(tmp_path))

    def test_files_promloop_did_not_write(self, tmp_path):
        """A file of another name, or a slot file without a lock file, is never removed."""
        write(tmp_path, "static.json", [{"targets": ["h:1"]}])
        write(tmp_path, "promloop-worker-7.json", [{"targets": ["h:2"]}])
        directory = TargetDirectory(tmp_path)

        assert [False, False] == [directory.remove_if_stale(t) for t in directory.read()]
        assert 2 == len(files(tmp_path))

    def test_replaced_meanwhile(self, tmp_path, monkeypatch):
        """A default-named file replaced after its staleness was asked is kept."""
        name = "promloop-h-1-1.json"
        write(tmp_path, name, [{"targets": ["h:1"]}])
        [target] = TargetDirectory(tmp_path).read()
        real_open = os.open

        def open_then_replace(path, *args):
            descriptor = real_open(path, *args)
            write(tmp_path, "new", [{"targets": ["h:1"]}])
            (tmp_path / "new").replace(tmp_path / name)
            return descriptor

        monkeypatch.setattr(os, "open", open_then_replace)
        removed = TargetDirectory(tmp_path).remove_if_stale(target)
        monkeypatch.undo()

        assert not removed
        assert [name] == files(tmp_path)

    def test_removed_meanwhile(self, tmp_path, monkeypatch):
        """A default-named file already gone, or gone after it was opened, is not removed twice."""
        name = "promloop-h-1-1.json"
        write(tmp_path, name, [{"targets": ["h:1"]}])
        [target] = TargetDirectory(tmp_path).read()
        real_open = os.open

        def open_then_remove(path, *args):
            descriptor = real_open(path, *args)
            (tmp_path / name).unlink()
            return descriptor

        monkeypatch.setattr(os, "open", open_then_remove)
        removed_after_open = TargetDirectory(tmp_path).remove_if_stale(target)
        monkeypatch.undo()

        assert not removed_after_open
        assert not TargetDirectory(tmp_path).remove_if_stale(target)

    @pytest.mark.parametrize("call", ["open", "unlink"])
    def test_cannot_ask_or_remove(self, tmp_path, monkeypatch, call):
        """A lock this process may not open, or a file it may not remove, is kept: no error.

        (A fan-in running as another user than the workers.)
        """
        dead = Worker(tmp_path, port=1)
        dead.kill()
        [target] = TargetDirectory(tmp_path).read()

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(os if call == "open" else type(tmp_path), call, refuse)
        removed = TargetDirectory(tmp_path).remove_if_stale(target)
        monkeypatch.undo()

        assert not removed
        assert ["promloop-worker-0.json"] == files(tmp_path)

    def test_locks_readable_by_others(self, tmp_path):
        """Lock files can be opened by a fan-in running as another user, whatever the umask."""
        before = os.umask(0o077)
        try:
            register(FileSD(tmp_path, slot="worker"))
        finally:
            os.umask(before)
        _file_sd._end_all()

        assert 0o644 == (tmp_path / ".promloop-worker-0.lock").stat().st_mode & 0o777
