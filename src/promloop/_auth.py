"""Credentials that protect a metrics endpoint, independent of any web framework.

One rule for every mount point: credentials are compared as bytes.  The
``Authorization`` header's raw bytes must carry the UTF-8 encoding of the
token (or, for basic auth, base64 of the UTF-8 ``username:password``).  A
header value that a framework hands over as text is first turned back into
those bytes: aiohttp decodes headers as UTF-8 and keeps undecodable bytes as
surrogates, which ``surrogateescape`` restores; Twisted hands over the bytes.
"""

from __future__ import annotations

import base64
import binascii
import hmac


__all__ = ["BasicAuth", "BearerToken"]


def header_bytes(value: str | bytes) -> bytes | None:
    """Return the bytes a header value arrived as, or None if text cannot have come from bytes."""
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no decoding of bytes produces
        return None


def _credentials(authorization: str | bytes | None, scheme: bytes) -> bytes | None:
    """Return what follows *scheme* in an ``Authorization`` value, or None for another scheme."""
    raw = None if authorization is None else header_bytes(authorization)
    if raw is None:
        return None
    given_scheme, _, credentials = raw.strip().partition(b" ")
    return credentials.strip() if given_scheme.lower() == scheme else None


class BasicAuth:
    """Require HTTP basic authentication with one username and password.

    Pass it as ``auth=`` to any promloop metrics endpoint.  Prometheus sends
    these credentials when its scrape configuration has ``basic_auth``.

    Args:
        username: The expected username; it must not contain ``:``.
        password: The expected password.

    Raises:
        ValueError: *username* contains a colon, or either is empty.

    .. versionadded:: 26.0.0
    """

    __slots__ = ("_expected", "username")

    scheme = "Basic"

    def __init__(self, username: str, password: str) -> None:
        if not username or not password:
            msg = "BasicAuth needs a non-empty username and password."
            raise ValueError(msg)
        if ":" in username:
            msg = "BasicAuth's username cannot contain ':' (RFC 7617)."
            raise ValueError(msg)
        self.username = username
        self._expected = f"{username}:{password}".encode()

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=<hidden>)"

    def challenge(self) -> str:
        """Return the ``WWW-Authenticate`` value sent with a 401 answer."""
        return 'Basic realm="metrics", charset="UTF-8"'

    def authorization(self) -> str:
        """Return the ``Authorization`` value that carries these credentials (as a client)."""
        return "Basic " + base64.b64encode(self._expected).decode()

    def accepts(self, authorization: str | bytes | None) -> bool:
        """Tell whether an ``Authorization`` header value carries these credentials.

        The value may be the header's raw bytes, or text decoded from them as
        UTF-8 (undecodable bytes kept as surrogates, as aiohttp does).  The
        comparison takes the same time wherever the credentials differ.
        """
        credentials = _credentials(authorization, b"basic")
        if credentials is None:
            return False
        try:
            given = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)


class BearerToken:
    """Require an ``Authorization: Bearer <token>`` header.

    Pass it as ``auth=`` to any promloop metrics endpoint.  Prometheus sends
    it when its scrape configuration has ``authorization: {credentials: ...}``
    (or the older ``bearer_token``).

    Args:
        token: The expected token.

    Raises:
        ValueError: *token* is empty or contains whitespace.

    .. versionadded:: 26.0.0
    """

    __slots__ = ("_expected",)

    scheme = "Bearer"

    def __init__(self, token: str) -> None:
        if not token or any(c.isspace() for c in token):
            msg = "BearerToken needs a non-empty token without whitespace."
            raise ValueError(msg)
        self._expected = token.encode()

    def __repr__(self) -> str:
        return "BearerToken(token=<hidden>)"

    def challenge(self) -> str:
        """Return the ``WWW-Authenticate`` value sent with a 401 answer."""
        return 'Bearer realm="metrics"'

    def authorization(self) -> str:
        """Return the ``Authorization`` value that carries this token (as a client)."""
        return "Bearer " + self._expected.decode()

    def accepts(self, authorization: str | bytes | None) -> bool:
        """Tell whether an ``Authorization`` header value carries this token.

        The value may be the header's raw bytes, or text decoded from them as
        UTF-8 (undecodable bytes kept as surrogates, as aiohttp does): a
        non-ASCII token is accepted the same way from every framework.  The
        comparison takes the same time wherever the tokens differ.
        """
        token = _credentials(authorization, b"bearer")
        return token is not None and hmac.compare_digest(token, self._expected)
