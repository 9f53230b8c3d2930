"""The file_sd directory where a fleet meets: target files, slots, and reading them back.

Plain file I/O, independent of any web framework.  Workers announce
themselves with :class:`FileSD` (one target file each, written atomically,
removed on close and at exit); a fan-in reads the directory back with
:class:`TargetDirectory` and removes the files of processes that died.

Every file promloop writes is tied to a lock that the kernel releases when
its process ends, even on ``SIGKILL``: ``flock()`` on a slot's lock file for
``slot=`` targets, on the target file itself for the others.  A reader that
can take that lock in shared mode knows the writer is gone.  ``flock()``
locks belong to an open file description, not to a process: two FileSDs in
one process exclude each other, and a forked child shares its parent's locks
until it closes its copies of the descriptors (which it does at once, see
:func:`_after_fork_in_child`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast


if sys.platform != "win32":
    import fcntl


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .types import Deregisterer, MetricsServer


_log = logging.getLogger("promloop")

_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 -- recognised, not bound
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SLOT_FILE: Final = re.compile(
    r"promloop-(?P<slot>[a-zA-Z_][a-zA-Z0-9_]*)-(?P<number>[0-9]+)\.json"
)
_PROCESS_FILE: Final = re.compile(r"promloop-[A-Za-z0-9._]+-[0-9]+-[0-9]+\.json")

CLAIM_ATTEMPTS: Final = 200
"""How often a worker retries a slot that only staleness probes hold (1 ms apart)."""


def advertised_host(metrics_server: MetricsServer, address: str | None) -> str:
    """Return the host others reach *metrics_server* at.

    *address* if given; else the address the server is bound to; else, for a
    server on every interface, this host's name: never ``0.0.0.0`` or ``::``.
    """
    if address:
        return address
    host = metrics_server.socket.addr
    return socket.gethostname() if host in _WILDCARDS else host


def host_port(host: str, port: int) -> str:
    """Return ``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def slot_file_name(slot: str, number: int) -> str:
    """Return the name of the target file of slot *number* of *slot*."""
    return f"promloop-{slot}-{number}.json"


def _slot_lock_name(slot: str, number: int) -> str:
    # A dot file that no Prometheus glob for *.json (or *.yml) matches.
    # Lock files are never deleted: a process that opened one just before it
    # was deleted could lock the orphan while another locks its replacement,
    # and both would own the slot.
    return f".promloop-{slot}-{number}.lock"


def check_directory(directory: Path, who: str) -> None:
    """Raise an OSError naming *directory* unless files can be made and removed in it."""
    if not directory.is_dir():
        msg = f"{who}: the directory {str(directory)!r} does not exist (or is not a directory)."
        raise FileNotFoundError(errno.ENOENT, msg)
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        msg = f"{who}: the directory {str(directory)!r} is not writable by this process."
        raise PermissionError(errno.EACCES, msg)


def _lock(descriptor: int, operation: int) -> bool:
    """Apply a non-blocking ``flock()`` *operation*; tell whether it was granted."""
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileSD:
    """Register with Prometheus's file-based service discovery.

    Writes ``[{"targets": ["host:port"], "labels": {...}}]`` for the server
    into a file of its own in *directory*, replacing it atomically, and
    removes the file when the server closes, or when the interpreter exits
    with the server still open.  Point Prometheus at the directory with a
    glob::

        scrape_configs:
          - job_name: my-app
            file_sd_configs:
              - files: ["/run/my-app/targets/*.json"]

    One directory serves a whole fleet: every process writes its own file.
    FileSD needs neither aiohttp nor any other framework.

    With *slot*, the server claims the lowest free slot number (0, 1, 2, ...)
    in the directory and publishes it as the label *slot* (``worker="0"``):
    a fleet of N workers uses the numbers 0 to N-1, and a worker that
    replaces a dead one takes its number, so the series stay few and stable
    across restarts.  The slot is held with an OS lock (``flock()``), which
    the kernel releases when the process dies, even by ``SIGKILL``.  The file
    is then ``promloop-<slot>-<n>.json``, next to a hidden lock file
    ``.promloop-<slot>-<n>.lock`` that is never removed.

    Args:
        directory: Where the target file goes; it must exist and be writable.
        labels: Labels Prometheus attaches to the target, exactly as given
            (plus the slot label, with *slot*).
        address: The host Prometheus should scrape; by default the address
            the server is bound to, or this host's name when it listens on
            every interface.
        filename: The file's name, ending in ``.json``; by default
            ``promloop-<host>-<port>-<pid>.json``.
        slot: The name of a label (``"worker"``) whose value is a slot number
            claimed in *directory*.

    Raises:
        ValueError: A label name is not a valid Prometheus label name (or is
            reserved: ``__...``), *filename* is not a plain ``.json`` file
            name, *slot* is not a label name or is also in *labels*, or both
            *slot* and *filename* are given.
        TypeError: A label value is not a string.

    .. versionadded:: 26.0.0

    .. versionchanged:: 26.0.0
       *slot*; no aiohttp needed; the file is removed at exit too.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        labels: Mapping[str, str] | None = None,
        address: str | None = None,
        filename: str | None = None,
        slot: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        given: dict[Any, Any] = dict(labels or {})  # checked: untyped callers exist
        for name, value in given.items():
            _check_label_name(name, "a label name")
            if not isinstance(value, str):
                msg = f"FileSD: the value of label {name!r} must be a string, not {value!r}."
                raise TypeError(msg)
        self.labels: dict[str, str] = dict(labels or {})
        if filename is not None and (
            not filename.endswith(".json") or Path(filename).name != filename
        ):
            msg = f"FileSD: filename= must be a plain file name ending in .json, not {filename!r}."
            raise ValueError(msg)
        if slot is not None:
            _check_label_name(slot, "slot=")
            if slot in self.labels:
                msg = f"FileSD: slot={slot!r} is also in labels=; the slot sets that label."
                raise ValueError(msg)
            if filename is not None:
                msg = "FileSD: slot= names the file after the slot; filename= cannot be given too."
                raise ValueError(msg)
            if sys.platform == "win32":  # pragma: no cover -- no flock()
                msg = "FileSD: slot= needs flock(), which this platform lacks."
                raise ValueError(msg)
        self.address = address
        self.filename = filename
        self.slot = slot

    def __repr__(self) -> str:
        slot = "" if self.slot is None else f", slot={self.slot!r}"
        return f"FileSD({str(self.directory)!r}, labels={self.labels!r}{slot})"

    async def register(self, metrics_server: MetricsServer) -> Deregisterer:
        """Write the target file; return the coroutine function that removes it.

        Raises:
            FileNotFoundError, PermissionError: The directory is missing or
                not writable; the message names it.
        """
        host = advertised_host(metrics_server, self.address)
        address = host_port(host, metrics_server.socket.port)
        process_name = (
            f"promloop-{re.sub(r'[^A-Za-z0-9.]', '_', host)}"
            f"-{metrics_server.socket.port}-{os.getpid()}.json"
        )
        loop = asyncio.get_running_loop()
        registration = await loop.run_in_executor(
            None, self._register, address, self.filename or process_name
        )

        async def deregister() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, registration.end)
            except RuntimeError:
                # At interpreter exit, threading shuts every executor down
                # before atexit closes the servers still open: an unlink and a
                # close() are quick enough to do here.
                registration.end()

        return deregister

    def _register(self, address: str, name: str) -> _Registration:
        check_directory(self.directory, "FileSD")
        labels = self.labels
        if self.slot is None:
            path, descriptor = self.directory / name, None
        else:
            number, descriptor = _claim_slot(self.directory, self.slot)
            path = self.directory / slot_file_name(self.slot, number)
            labels = {**labels, self.slot: str(number)}
        content = json.dumps([{"targets": [address], "labels": labels}])
        try:
            # Without a slot, the file's own inode carries the lock.
            locked = _write_atomically(path, content, lock=descriptor is None)
        except BaseException:
            if descriptor is not None:
                os.close(descriptor)
            raise
        return _Registration(path, descriptor if descriptor is not None else locked)


def _check_label_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name[:2] == "__":
        msg = f"FileSD: {name!r} is not {what} Prometheus accepts."
        raise ValueError(msg)


def _claim_slot(directory: Path, slot: str) -> tuple[int, int]:
    """Lock the lowest free slot of *slot* in *directory*; return its number and lock."""
    number = 0
    while True:
        path = directory / _slot_lock_name(slot, number)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if _take_slot(descriptor):
            # Whatever the umask: a fan-in running as another user opens the
            # lock to tell whether the slot's worker lives.
            with contextlib.suppress(OSError):  # another user's lock file
                os.fchmod(descriptor, 0o644)
            return number, descriptor
        os.close(descriptor)
        number += 1


def _take_slot(descriptor: int) -> bool:
    """Lock a slot exclusively, unless a live worker holds it."""
    for _ in range(CLAIM_ATTEMPTS):
        if _lock(descriptor, fcntl.LOCK_EX):
            return True
        # A worker holds its slot exclusively; a fan-in deciding whether the
        # slot's file is stale holds it shared, for the time of an unlink().
        # Only the latter lets a shared lock through: wait for it to finish,
        # rather than skip a free slot and grow the numbers.
        if not _lock(descriptor, fcntl.LOCK_SH):
            return False
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        time.sleep(0.001)
    return False


def _write_atomically(path: Path, content: str, *, lock: bool) -> int | None:
    """Replace *path* with *content*; with *lock*, return a descriptor locking the new file.

    Raises:
        OSError: The file cannot be written (no space left, a read-only file
            system); the message names the directory, and nothing is left in it.
    """
    try:
        # The temporary name never ends in .json (nor .yml/.yaml), so
        # Prometheus's glob never reads a half-written file.
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise _cannot_write(path, error) from error
    try:
        if lock and sys.platform != "win32":
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # a new file: nobody else can hold it
        os.write(descriptor, content.encode())
        os.fsync(descriptor)
        os.chmod(temporary, 0o644)  # noqa: PTH101 -- Prometheus may run as another user
        # The modification time tells this process's file from an earlier
        # one that had the same name and inode (see Target.writer): set it
        # to the nanosecond, finer than the file system's coarse clock.
        now = time.time_ns()
        os.utime(temporary, ns=(now, now))
        os.replace(temporary, path)  # noqa: PTH105
    except BaseException as error:
        os.close(descriptor)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # noqa: PTH108
        if isinstance(error, OSError):
            raise _cannot_write(path, error) from error
        raise
    if lock:
        return descriptor
    os.close(descriptor)
    return None


def _cannot_write(path: Path, error: OSError) -> OSError:
    reason = error.strerror or str(error)
    msg = f"FileSD: cannot write in the directory {str(path.parent)!r}: {reason}"
    return type(error)(msg) if error.errno is None else type(error)(error.errno, msg)


class _Registration:
    """One target file, and the descriptor whose lock says its process lives."""

    def __init__(self, path: Path, descriptor: int | None) -> None:
        self.path = path
        self.descriptor = descriptor
        self.pid = os.getpid()
        with _live_lock:
            _live.add(self)

    def end(self) -> None:
        """Remove the target file, then let go of the lock (in that order: see FileSD)."""
        with _live_lock:
            if self not in _live:
                return
            _live.discard(self)
        try:
            self.path.unlink(missing_ok=True)
        finally:
            if self.descriptor is not None:
                os.close(self.descriptor)
                self.descriptor = None


_live: set[_Registration] = set()
_live_lock = threading.Lock()


@atexit.register
def _end_all() -> None:
    """Remove the files of servers still open at exit (a daemon thread's, say)."""
    for registration in list(_live):
        registration.end()


def _after_fork_in_child() -> None:
    """Let a forked child forget its parent's registrations.

    The child must neither remove its parent's files at exit nor keep its
    parent's slots alive after the parent dies: it closes its copies of the
    lock descriptors (closing, unlike ``LOCK_UN``, leaves the parent's lock
    in place).
    """
    global _live_lock  # noqa: PLW0603 -- another thread may have held it at fork()
    _live_lock = threading.Lock()
    for registration in _live:
        if registration.descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(registration.descriptor)
            registration.descriptor = None
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclasses.dataclass(frozen=True)
class Target:
    """One target of a file_sd directory.

    Attributes:
        file: The name of the file it was read from.
        address: ``host:port``.
        labels: The labels of its target group, ``__`` labels included.
        writer: For a file FileSD wrote, its inode number and modification
            time: each process writes a file of its own, so a new process
            has a new writer even where the file name and (by chance) the
            port are the same.  Empty for other files, which may be
            rewritten by hand.
    """

    file: str
    address: str
    labels: Mapping[str, str]
    writer: str = ""

    @property
    def identity(self) -> str:
        """A name for the process behind the target: a new process gets a new one."""
        file = f"{self.file}@{self.writer}" if self.writer else self.file
        return f"{file}|{self.address}"


class TargetDirectory:
    """Read the targets of a file_sd directory, and remove the files of dead processes.

    Only ``*.json`` files are read, as Prometheus's file_sd reads them.  A
    file that is not valid file_sd JSON is skipped, with one log line per
    version of the file.

    Args:
        directory: The directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple[int, int, int], list[Target]]] = {}

    def check(self, who: str) -> None:
        """Raise an OSError naming the directory unless it can be read and cleaned up."""
        check_directory(self.directory, who)

    def read(self) -> list[Target]:
        """Return the targets of every target file, by file name, then in file order.

        Numbers in names sort as numbers: ``worker-2`` before ``worker-10``.
        """
        found: dict[str, tuple[tuple[int, int, int], list[Target]]] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    found[entry.name] = self._read_file(entry)
        with self._lock:
            self._parsed = found
        return [
            target for name in sorted(found, key=_numbers_in_order) for target in found[name][1]
        ]

    def _read_file(self, entry: os.DirEntry[str]) -> tuple[tuple[int, int, int], list[Target]]:
        """Read one file; one that cannot be read or parsed keeps its last valid targets.

        Prometheus's file_sd keeps them too: a file rewritten by hand, broken
        for a moment, does not make its targets leave (and an aggregate count
        them twice when they come back).
        """
        with self._lock:
            known = self._parsed.get(entry.name)
        version = (-1, 0, 0)  # until stat() tells
        try:
            stat = entry.stat()
            version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if known is not None and known[0] == version:
                return known
            with open(entry.path, "rb") as file:  # noqa: PTH123 -- a DirEntry's path
                filesd = _written_by_filesd(entry.name)
                writer = f"{stat.st_ino}.{stat.st_mtime_ns}" if filesd else ""
                return version, _parse_targets(entry.name, file.read(), writer)
        except FileNotFoundError:
            raise  # removed meanwhile: the caller leaves it out
        except OSError as error:  # a directory, a link loop, a file this process may not read
            return self._skip(entry, version, error.strerror, known)
        except ValueError as error:
            return self._skip(entry, version, str(error), known)

    @staticmethod
    def _skip(
        entry: os.DirEntry[str],
        version: tuple[int, int, int],
        reason: str | None,
        known: tuple[tuple[int, int, int], list[Target]] | None,
    ) -> tuple[tuple[int, int, int], list[Target]]:
        """Log a file that cannot be used, once per version; keep its last valid targets."""
        if known is None or known[0] != version:
            _log.warning("Skipping the target file %s: %s", entry.path, reason)
        return version, [] if known is None else known[1]

    def remove_if_stale(self, target: Target) -> bool:
        """Remove *target*'s file if the promloop process that wrote it has died.

        Files that promloop did not write (no lock to ask) are left alone.
        Returns whether the file was removed.
        """
        if sys.platform == "win32":  # pragma: no cover -- no flock(), no way to tell
            return False
        path = self.directory / target.file
        slot = _SLOT_FILE.fullmatch(target.file)
        if slot is not None:
            lock_path = self.directory / _slot_lock_name(slot["slot"], int(slot["number"]))
        elif _PROCESS_FILE.fullmatch(target.file):
            lock_path = path
        else:
            return False
        try:
            descriptor = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # gone, or not this process's to read: it cannot tell
            return False
        try:
            return self._remove_if_unlocked(descriptor, lock_path, path)
        except OSError:  # not this process's to remove (a sticky directory, say)
            return False
        finally:
            os.close(descriptor)

    @staticmethod
    def _remove_if_unlocked(descriptor: int, lock_path: Path, path: Path) -> bool:
        if not _lock(descriptor, fcntl.LOCK_SH):
            return False  # its process (or its replacement) holds it
        # Holding the lock shared, no worker can claim the slot and write
        # its file before the stale one is gone.
        if lock_path == path and not _same_file(descriptor, path):
            return False  # replaced since it was opened: a live process wrote it
        path.unlink(missing_ok=True)
        _log.info("Removed the target file %s: its process has ended.", path)
        return True


def _numbers_in_order(name: str) -> list[str | int]:
    """Sort file names with their numbers as numbers: ``worker-2`` before ``worker-10``.

    The first target in this order wins a type conflict and sets the order
    of families, so it should be the lowest slot.
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _written_by_filesd(name: str) -> bool:
    return bool(_SLOT_FILE.fullmatch(name) or _PROCESS_FILE.fullmatch(name))


def _parse_targets(name: str, content: bytes, writer: str) -> list[Target]:
    """Parse file_sd JSON; raise ValueError saying what is wrong with it."""
    try:
        groups: object = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        msg = f"not JSON ({error})"
        raise ValueError(msg) from None
    if not isinstance(groups, list):
        msg = "not a list of target groups"
        raise ValueError(msg)  # noqa: TRY004 -- the file is the bad value, not a type
    targets: list[Target] = []
    for group in cast("list[object]", groups):
        fields = cast("dict[str, object]", group) if isinstance(group, dict) else {}
        addresses = fields.get("targets")
        labels = fields.get("labels", {}) if fields else None
        if not isinstance(addresses, list) or not _all_strings(cast("list[object]", addresses)):
            msg = 'a target group without a list of "targets"'
            raise ValueError(msg)
        if not isinstance(labels, dict) or not _all_strings(
            cast("dict[object, object]", labels).values()
        ):
            msg = '"labels" is not a mapping of strings'
            raise ValueError(msg)
        valid_labels = cast("dict[str, str]", labels)
        valid_addresses = cast("list[str]", addresses)
        if "" in valid_labels:
            msg = "an empty label name"
            raise ValueError(msg)
        if not _all_utf8([*valid_addresses, *valid_labels, *valid_labels.values()]):
            # JSON can carry lone surrogates ("\\ud800"), which no exposition can.
            msg = "text that is not UTF-8"
            raise ValueError(msg)
        targets.extend(
            Target(name, address, dict(valid_labels), writer) for address in valid_addresses
        )
    return targets


def _all_strings(values: Iterable[object]) -> bool:
    return all(isinstance(value, str) for value in values)


def _all_utf8(texts: Iterable[str]) -> bool:
    try:
        "".join(texts).encode()
    except UnicodeEncodeError:
        return False
    return True
