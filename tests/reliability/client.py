"""A raw HTTP/1.1 client over asyncio streams: it sends exactly the bytes it is given.

The reliability tests need clients no library would be: hostile headers,
half-open connections, a byte a second, pipelined and smuggled requests.
Responses are read until the server closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Answer:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Answer:
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return cls(int(status_line.split()[1]), headers, body)


_NO_BODY = frozenset({204, 304})


def answers(raw: bytes, methods: Sequence[str] = ()) -> list[Answer]:
    """Split everything a connection received into its responses, in order.

    Bodies are framed by ``Content-Length`` (or chunked); a response without
    either runs to the end.  *methods* are the requests' methods, in order:
    an answer to HEAD has no body whatever its headers say.
    """
    found: list[Answer] = []
    rest = raw
    while rest.startswith(b"HTTP/"):
        head, separator, after = rest.partition(b"\r\n\r\n")
        if not separator:
            break
        answer = Answer.parse(head + separator)
        method = methods[len(found)] if len(found) < len(methods) else "GET"
        length = answer.headers.get("content-length")
        if method == "HEAD" or answer.status in _NO_BODY or 100 <= answer.status < 200:
            body, rest = b"", after
        elif answer.headers.get("transfer-encoding", "").lower() == "chunked":
            body, rest = _dechunk(after)
        elif length is not None and length.isdigit():
            body, rest = after[: int(length)], after[int(length) :]
        else:
            body, rest = after, b""
        found.append(dataclasses.replace(answer, body=body))
    return found


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            _, _, data = data.partition(b"\r\n")  # no trailers
            return body, data
        body, data = body + data[:size], data[size + 2 :]


def request_bytes(
    method: bytes = b"GET",
    target: bytes = b"/metrics",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    close: bool = True,
) -> bytes:
    """Build one request from bytes, any bytes: hostile methods, targets and header values."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if close:
        lines.append(b"Connection: close")
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def ask(port: int, raw: bytes, methods: Sequence[str] = ()) -> list[Answer]:
    """Send *raw* from synchronous code; return the answers, until the server closes or is silent.

    A server that closes the connection while the client still sends (a
    refused megabyte) may have its answer discarded by the client's TCP stack:
    then there is none.
    """
    return answers(asyncio.run(converse(port, raw)), methods)


def request(
    method: str = "GET", path: str = "/metrics", headers: dict[str, str] | None = None
) -> bytes:
    """Build one request that asks the server to close the connection after answering."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def exchange(port: int, raw: bytes, *, timeout: float = 10.0) -> bytes:
    """Send *raw* to 127.0.0.1:*port*; return everything the server sends back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # the server may have reset it
            await writer.wait_closed()


async def converse(port: int, raw: bytes, *, idle: float = 2.0, timeout: float = 15.0) -> bytes:
    """Send *raw*; return what arrives until the server closes or stays silent *idle* seconds.

    For requests that may leave the connection open (pipelined, smuggled), where
    reading until the server closes could wait for ever.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(raw)
        await writer.drain()
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), min(idle, left))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    except (ConnectionError, OSError):  # a reset after the answer: keep what arrived
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return received


async def get(
    port: int, path: str = "/metrics", *, timeout: float = 10.0, **headers: str
) -> Answer:
    """GET *path* with *headers* (underscores in names become dashes)."""
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return Answer.parse(await exchange(port, request("GET", path, named), timeout=timeout))


def blocking_get(port: int, path: str = "/metrics", timeout: float = 10.0) -> Answer:
    """GET *path* from a thread without an event loop."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request("GET", path))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return Answer.parse(b"".join(chunks))
