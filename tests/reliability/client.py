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
