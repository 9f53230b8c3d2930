"""Register with a Consul agent through its HTTP API: :class:`ConsulAgent`.

Needs aiohttp (``pip install 'promloop[consul]'``); :mod:`promloop.aio.sd`
loads this module when ``ConsulAgent`` is first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random

from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import quote

from .._file_sd import advertised_host, host_port
from .._optional import import_extra
from .._urls import shown


import_extra("aiohttp", "consul", needed_by="promloop.aio.sd.ConsulAgent")

import aiohttp  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
    from types import SimpleNamespace

    from ..types import Deregisterer, MetricsServer


__all__ = ["ConsulAgent"]

_log = logging.getLogger("promloop")

# keep_registered's schedule, in seconds: a failed attempt is retried after
# base * [0.5, 1] (jitter), the base doubling from the first retry's to the
# longest; a registered service is looked for in the agent's list this often.
_FIRST_RETRY: Final = 0.5
_LONGEST_RETRY: Final = 5.0
_LIST_CHECK: Final = 5.0

_ABANDON_SECONDS: Final = 1.0
"""How long a failed start spends telling the agent to forget a registration it never
answered: a slow agent acts on the deregistration after the registration, in order."""


class ConsulAgent:
    """Register with a Consul agent, through its HTTP API.

    Registers a service whose health check is the server's root URL, and
    deregisters it when the server closes.  The arguments of
    prometheus-async's ``ConsulAgent`` come first and mean the same.

    Args:
        name: The service name (what ``consul_sd_configs`` select by).
        service_id: The service ID; by default ``<name>-<host>-<port>``, unique
            per process, so that a fleet registers one service each.
        tags: Service tags.
        token: An ACL token; by default ``CONSUL_HTTP_TOKEN``.  Sent in the
            ``X-Consul-Token`` header, never in a URL or a log line.
        deregister: Deregister when the server closes.
        agent_url: The agent's address; by default ``CONSUL_HTTP_ADDR`` (in any
            of Consul's forms: ``host:port``, ``http://host:port``,
            ``https://host:port``), else ``http://127.0.0.1:8500``.  A
            password in it (``https://user:password@host``, for a proxy that
            wants basic authentication) is never shown.
        meta: Service metadata; promloop adds ``metrics_path`` (the path to
            scrape) and ``scheme`` (``http`` or ``https``).
        address: The advertised host; by default the address the server is
            bound to, or this host's name when it listens on every interface.
        check_interval: How often the agent checks the server.
        check_timeout: The check's timeout; Consul's default if None.
        deregister_critical_after: Let the agent remove the service after it
            has been critical this long (``"1m"``), for processes that die
            without deregistering.
        keep_registered: Never fail the server's start: retry in the
            background while the agent is unreachable or refuses (first
            retry within a second, exponential backoff with jitter, capped
            at 5 s), and re-register whenever the agent no longer lists the
            service (its list is checked every 5 s).
        timeout: Seconds each request to the agent may take, from connecting
            to reading its answer.

    Raises:
        ValueError: *agent_url* (or ``CONSUL_HTTP_ADDR``) is not an HTTP(S)
            address, or *timeout* is not a positive number.

    .. versionchanged:: 26.0.0
       *agent_url*, *meta*, *address*, the check settings,
       *keep_registered* and *timeout*; a unique default *service_id*.
    """

    def __init__(
        self,
        *,
        name: str = "app-metrics",
        service_id: str | None = None,
        tags: tuple[str, ...] = (),
        token: str | None = None,
        deregister: bool = True,
        agent_url: str | None = None,
        meta: Mapping[str, str] | None = None,
        address: str | None = None,
        check_interval: str = "10s",
        check_timeout: str | None = None,
        deregister_critical_after: str | None = None,
        keep_registered: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.service_id = service_id
        self.tags = tuple(tags)
        self.token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN") or None
        self.deregister = deregister
        self.agent_url = _agent_url(agent_url or os.environ.get("CONSUL_HTTP_ADDR"))
        self.meta = dict(meta or {})
        self.address = address
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.deregister_critical_after = deregister_critical_after
        self.keep_registered = keep_registered
        given = cast("object", timeout)  # checked: callers without a type checker exist
        if not isinstance(given, (int, float)) or not math.isfinite(given) or given <= 0:
            msg = f"ConsulAgent: timeout= must be a positive number of seconds, not {timeout!r}."
            raise ValueError(msg)
        self.timeout: float = timeout
        self._session: aiohttp.ClientSession | None = None
        self._registrations = 0
        # How keep_registered waits between attempts; tests step through the
        # schedule with a stand-in instead of sleeping for seconds.
        self._sleep: Callable[[float], Awaitable[object]] = asyncio.sleep

    def _open_session(self) -> aiohttp.ClientSession:
        """Return this agent's one HTTP session, opening it for the first registration."""
        if self._session is None or self._session.closed:
            headers = {"X-Consul-Token": self.token} if self.token else {}
            tracing = aiohttp.TraceConfig()
            tracing.on_request_headers_sent.append(_note_sent)
            self._session = aiohttp.ClientSession(
                self.agent_url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trace_configs=[tracing],
            )
        self._registrations += 1
        return self._session

    async def _release_session(self) -> None:
        """Close the session once the last registration is over."""
        self._registrations -= 1
        if self._registrations == 0 and self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        # Neither the token nor a password in the agent's URL is ever shown.
        return f"ConsulAgent(name={self.name!r}, agent_url={shown(self.agent_url)!r})"

    def _payload(self, metrics_server: MetricsServer) -> dict[str, Any]:
        host = advertised_host(metrics_server, self.address)
        port = metrics_server.socket.port
        scheme = "https" if metrics_server.https else "http"
        # A server that wants credentials answers the check's GET with 401;
        # putting them in the check would show them to every reader of the
        # agent's API.  Such a server is checked by connecting to it.
        check: dict[str, Any] = (
            {"TCP": host_port(host, port)}
            if metrics_server.protected
            else {"HTTP": f"{scheme}://{host_port(host, port)}/"}
        )
        check["Interval"] = self.check_interval
        if self.check_timeout is not None:
            check["Timeout"] = self.check_timeout
        if self.deregister_critical_after is not None:
            check["DeregisterCriticalServiceAfter"] = self.deregister_critical_after
        return {
            "Name": self.name,
            "ID": self.service_id or f"{self.name}-{host}-{port}",
            "Tags": list(self.tags),
            "Address": host,
            "Port": port,
            "Meta": {**self.meta, "metrics_path": metrics_server.metrics_path, "scheme": scheme},
            "Check": check,
        }

    async def register(self, metrics_server: MetricsServer) -> Deregisterer | None:
        """Register *metrics_server*; return the coroutine function that deregisters it.

        Returns None when the agent refused the registration (the refusal is
        logged at WARNING with the agent's status and reply).

        Raises:
            aiohttp.ClientError, OSError: The agent is unreachable (unless
                *keep_registered*).
            TimeoutError: The agent did not answer within *timeout* seconds
                (unless *keep_registered*); the message names the agent and
                the limit.
        """
        registration = _Registration(self, self._payload(metrics_server), self._open_session())
        if self.keep_registered:
            registration.keep()
            return registration.close
        try:
            registered = await registration.register_once()
        except BaseException:
            if registration.unanswered:
                # The agent may yet act on the registration it did not answer.
                await self._abandon(registration)
            else:
                await self._release_session()
            raise
        if not registered:
            await self._release_session()
            return None
        return registration.close

    async def _abandon(self, registration: _Registration) -> None:
        """Deregister a registration whose start failed, spending a second at most."""
        try:
            await asyncio.wait_for(registration.close(), _ABANDON_SECONDS)
        except Exception as error:  # noqa: BLE001 -- the start's own error is what is raised
            _log.warning(
                "Consul agent %s may keep service %r, whose registration it never answered: "
                "deregistering failed too (%s).  Its health check will fail.",
                shown(self.agent_url),
                registration.service_id,
                type(error).__name__,
            )


def _agent_url(address: str | None) -> str:
    if not address:
        return "http://127.0.0.1:8500"
    url = address if "://" in address else f"http://{address}"
    if not url.startswith(("http://", "https://")):
        msg = f"ConsulAgent: the agent's address must be http:// or https://, not {address!r}."
        raise ValueError(msg)
    return url.rstrip("/")


class _Registration:
    """One service registered with one agent."""

    def __init__(
        self, agent: ConsulAgent, payload: dict[str, Any], session: aiohttp.ClientSession
    ) -> None:
        self.agent = agent
        self.payload = payload
        self.service_id: str = payload["ID"]
        self.session = session
        self.keeper: asyncio.Task[None] | None = None
        self.registered = False
        # The agent accepted a registration: it lists the service until told otherwise.
        self.confirmed = False
        # A registration was sent, and its answer never came (the request was
        # cancelled, timed out, or lost its connection): the agent may list
        # the service.
        self.unanswered = False

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, path: str, **options: Any
    ) -> AsyncGenerator[aiohttp.ClientResponse, None]:
        """Send one request to the agent; a timeout names the agent and the limit."""
        try:
            async with self.session.request(method, path, **options) as reply:
                yield reply
        except asyncio.TimeoutError as error:
            msg = (
                f"Consul agent {shown(self.agent.agent_url)} did not answer within "
                f"{self.agent.timeout:g} s (ConsulAgent(timeout=...))."
            )
            raise TimeoutError(msg) from error

    async def register_once(self) -> bool:
        sent = _Sent()
        try:
            async with self.request(
                "PUT", "/v1/agent/service/register", json=self.payload, trace_request_ctx=sent
            ) as reply:
                if reply.ok:
                    self.registered = self.confirmed = True
                    return True
                await _log_refusal(reply, "register", self.agent.agent_url, self.service_id)
                return False
        except BaseException:
            self.unanswered = self.unanswered or sent.value
            raise

    async def is_listed(self) -> bool:
        async with self.request("GET", "/v1/agent/services") as reply:
            if not reply.ok:
                await _log_refusal(reply, "list", self.agent.agent_url, self.service_id)
                return False
            services = await reply.json()
        return self.service_id in services

    def keep(self) -> None:
        self.keeper = asyncio.create_task(self._keep_registered())

    async def _keep_registered(self) -> None:
        sleep = self.agent._sleep  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        retry = _FIRST_RETRY
        while True:
            try:
                if not self.registered or not await self.is_listed():
                    self.registered = False
                    if await self.register_once():
                        _log.info("Registered %r with Consul.", self.service_id)
            except Exception as error:  # noqa: BLE001 -- keep trying, whatever happened
                self.registered = False
                # The error's str(), never its repr(): aiohttp's repr of a
                # response error shows the request's headers, the token among them.
                _log.warning(
                    "Consul agent %s unreachable: %s: %s",
                    shown(self.agent.agent_url),
                    type(error).__name__,
                    error,
                )
            if self.registered:
                retry = _FIRST_RETRY
                await sleep(_LIST_CHECK)
            else:
                jittered = retry * random.uniform(0.5, 1.0)  # noqa: S311 -- not for security
                await sleep(jittered)
                retry = min(retry * 2, _LONGEST_RETRY)

    async def close(self) -> None:
        """Stop keeping the service registered, deregister it once, release the session."""
        try:
            if self.keeper is not None:
                self.keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.keeper
            if self.agent.deregister and (self.confirmed or self.unanswered):
                path = f"/v1/agent/service/deregister/{quote(self.service_id, safe='')}"
                async with self.request("PUT", path) as reply:
                    # Unless a registration was confirmed, "unknown service"
                    # means that none reached the agent: nothing to report.
                    if not reply.ok and (self.confirmed or reply.status != HTTPStatus.NOT_FOUND):
                        await _log_refusal(
                            reply, "deregister", self.agent.agent_url, self.service_id
                        )
        finally:
            await self.agent._release_session()  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]


class _Sent:
    """Whether a request went out: from then on the agent may act on it, answer or not."""

    def __init__(self) -> None:
        self.value = False


async def _note_sent(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    sent = context.trace_request_ctx
    if isinstance(sent, _Sent):
        sent.value = True


async def _log_refusal(reply: aiohttp.ClientResponse, what: str, agent: str, service: str) -> None:
    _log.warning(
        "Consul agent %s refused to %s service %r: HTTP %s: %s",
        shown(agent),
        what,
        service,
        reply.status,
        (await reply.text())[:1000],
    )
