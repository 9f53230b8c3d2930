"""URLs as they may be shown: in a log line, a repr or an error message."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def shown(url: str) -> str:
    """Return *url* with the password of its user information hidden.

    ``http://user:secret@host/`` works as an address for a Pushgateway or a
    Consul agent behind a proxy that wants basic authentication; the password
    must stay out of what promloop logs and raises.
    """
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
