"""Push a registry to a Prometheus Pushgateway, without blocking the event loop.

For batch jobs and short-lived tasks that Prometheus cannot scrape.  The
three coroutine functions mirror prometheus_client's ``push_to_gateway``,
``pushadd_to_gateway`` and ``delete_from_gateway``: the rendering runs in a
worker thread and the request goes through aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import functools

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._optional import import_extra
from .._render import render
from .._urls import shown


import_extra("aiohttp", "aiohttp", needed_by=__name__)

import aiohttp  # noqa: E402

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # noqa: E402
from prometheus_client.openmetrics.exposition import UNDERSCORES  # noqa: E402


if TYPE_CHECKING:
    import ssl

    from collections.abc import Mapping

    from .._auth import BasicAuth, BearerToken


__all__ = ["PushgatewayError", "delete_from_gateway", "push_to_gateway", "pushadd_to_gateway"]


class PushgatewayError(Exception):
    """The Pushgateway answered with an error; the message quotes its answer.

    Attributes:
        status: The HTTP status.
        body: What the gateway said.

    .. versionadded:: 26.0.0
    """

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} failed with HTTP {status}: {body.strip()}")
        self.status = status
        self.body = body


async def push_to_gateway(
    gateway: str,
    job: str,
    registry: Any,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float | None = 30,
    *,
    auth: BasicAuth | BearerToken | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    created: bool = True,
) -> None:
    """Replace every metric of the group (*job* and *grouping_key*) with *registry*'s.

    Args:
        gateway: ``host:port`` (HTTP is assumed) or a URL (``https://...``);
            ``https://user:password@host:port`` sends basic authentication,
            and errors show it without the password.
        job: The job's name.
        registry: What to push: a ``CollectorRegistry``.
        grouping_key: More labels that identify the group.  Any string
            works as a value -- spaces, ``+``, ``%``, non-ASCII, ``/``: it
            arrives unchanged (``/`` and the empty string travel in the
            Pushgateway's ``@base64`` form).
        timeout: Seconds for the whole request, or None for no limit.
        auth: Credentials for the gateway.
        ssl_ctx: TLS settings for an ``https://`` gateway; certificates are
            checked in any case.
        created: Push the ``_created`` series of counters, histograms and
            summaries; False leaves them out of this push only.

    Raises:
        PushgatewayError: The gateway answered with anything but 2xx.
        aiohttp.ClientError, TimeoutError: The gateway is unreachable or
            too slow.

    .. versionadded:: 26.0.0
    """
    await _send("PUT", gateway, job, registry, grouping_key, timeout, auth, ssl_ctx, created)


async def pushadd_to_gateway(
    gateway: str,
    job: str,
    registry: Any,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float | None = 30,
    *,
    auth: BasicAuth | BearerToken | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    created: bool = True,
) -> None:
    """Replace only the group's metrics that *registry* has, keeping the others.

    The arguments are those of :func:`push_to_gateway`.

    .. versionadded:: 26.0.0
    """
    await _send("POST", gateway, job, registry, grouping_key, timeout, auth, ssl_ctx, created)


async def delete_from_gateway(
    gateway: str,
    job: str,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float | None = 30,
    *,
    auth: BasicAuth | BearerToken | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
) -> None:
    """Delete every metric of the group (*job* and *grouping_key*).

    The arguments are those of :func:`push_to_gateway`, without a registry.

    .. versionadded:: 26.0.0
    """
    await _send("DELETE", gateway, job, None, grouping_key, timeout, auth, ssl_ctx, True)


def group_path(job: str, grouping_key: Mapping[str, str] | None) -> str:
    """Return the Pushgateway path of a group, every value escaped as it requires."""
    if not job:
        msg = "job must not be empty."
        raise ValueError(msg)
    parts = ["metrics", *_label_segment("job", job)]
    for name, value in (grouping_key or {}).items():
        parts.extend(_label_segment(name, str(value)))
    return "/" + "/".join(parts)


def _label_segment(name: str, value: str) -> tuple[str, str]:
    if "/" in value or value in ("", ".", ".."):
        # The only form that carries "/", the empty string ("="), and the
        # dot segments that a URL library would resolve away.
        encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
        return f"{name}@base64", encoded
    return name, quote(value, safe="")


def _base_url(gateway: str) -> str:
    url = gateway if "://" in gateway else f"http://{gateway}"
    if not url.startswith(("http://", "https://")):
        msg = f"gateway must be host:port or an http(s) URL, not {shown(gateway)!r}."
        raise ValueError(msg)
    return url.rstrip("/")


def _authorization(auth: BasicAuth | BearerToken | None) -> dict[str, str]:
    if auth is None:
        return {}
    return {"Authorization": auth.authorization()}


async def _send(  # noqa: PLR0917 -- the public functions' arguments, passed along
    method: str,
    gateway: str,
    job: str,
    registry: Any,
    grouping_key: Mapping[str, str] | None,
    timeout: float | None,
    auth: BasicAuth | BearerToken | None,
    ssl_ctx: ssl.SSLContext | None,
    created: bool,
) -> None:
    url = _base_url(gateway) + group_path(job, grouping_key)
    headers = _authorization(auth)
    body = None
    if registry is not None:
        body = await asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                render, registry, openmetrics=False, escaping=UNDERSCORES, created=created
            ),
        )
        headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(
                method, url, data=body, headers=headers, ssl=True if ssl_ctx is None else ssl_ctx
            ) as reply,
        ):
            if reply.ok:
                return
            answer = await reply.text()
    except asyncio.TimeoutError as error:
        # aiohttp's own timeout error says nothing at all.
        msg = f"{method} {shown(url)}: the Pushgateway did not answer within timeout={timeout} s"
        raise TimeoutError(msg) from error
    raise PushgatewayError(method, shown(url), reply.status, answer)
