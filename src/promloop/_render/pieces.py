"""A render's output as pieces of some tens of kilobytes, never joined into one.

A million series make some 35 MB of text.  Joining them into one ``bytes``
object is a single C call that holds the GIL for 10 to 20 ms (copying, and
taking the pages from the kernel), and letting go of it another; so a render
hands over its output as pieces, which are compressed and written one at a
time, each quickly enough that the event loop never waits long for the GIL.
"""

from __future__ import annotations

from typing import Final


PIECE_BYTES: Final = 65536
"""The size a piece grows to before the next begins: small families are gathered.

Large enough that writing a body costs few calls (an aiohttp write, a
Twisted producer's turn), small enough that joining one takes microseconds.
"""


class Pieces:
    """Bytes in, pieces of about :data:`PIECE_BYTES` out, in order."""

    __slots__ = ("_pending", "_pending_bytes", "pieces")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def add(self, data: bytes) -> None:
        """Append *data*: whole if it is a piece already, gathered with its neighbours if not."""
        if len(data) >= PIECE_BYTES:  # copied into no other: a large family's chunk
            self._gather()
            self.pieces.append(data)
        elif data:
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes >= PIECE_BYTES:
                self._gather()

    def done(self) -> list[bytes]:
        """Return every piece, the last one included."""
        self._gather()
        return self.pieces

    def _gather(self) -> None:
        pending = self._pending
        if pending:
            self.pieces.append(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()
            self._pending_bytes = 0
