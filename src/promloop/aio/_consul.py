"""Register with a Consul agent through its HTTP API: :class:`ConsulAgent`.

Needs aiohttp (``pip install 'promloop[consul]'``); :mod:`promloop.aio.sd`
loads this module when ``ConsulAgent`` is first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._file_sd import advertised_host, host_port
from .._optional import import_extra


import_extra("aiohttp", "consul", needed_by="promloop.aio.sd.ConsulAgent")

import aiohttp  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..types import Deregisterer, MetricsServer


__all__ = ["ConsulAgent"]

_log = logging.getLogger("promloop")


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
            ``https://host:port``), else ``http://127.0.0.1:8500``.
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
            background while the agent is unreachable (first retry within a
            second, exponential backoff with jitter, capped at 5 s), and
            re-register whenever the agent no longer lists the service.

    Raises:
        ValueError: *agent_url* (or ``CONSUL_HTTP_ADDR``) is not an HTTP(S)
            address.

    .. versionchanged:: 26.0.0
       *agent_url*, *meta*, *address*, the check settings and
       *keep_registered*; a unique default *service_id*.
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
        self._session: aiohttp.ClientSession | None = None
        self._registrations = 0

    def _open_session(self) -> aiohttp.ClientSession:
        """Return this agent's one HTTP session, opening it for the first registration."""
        if self._session is None or self._session.closed:
            headers = {"X-Consul-Token": self.token} if self.token else {}
            self._session = aiohttp.ClientSession(
                self.agent_url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
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
        # The token is never shown.
        return f"ConsulAgent(name={self.name!r}, agent_url={self.agent_url!r})"

    def _payload(self, metrics_server: MetricsServer) -> dict[str, Any]:
        host = advertised_host(metrics_server, self.address)
        port = metrics_server.socket.port
        scheme = "https" if metrics_server.https else "http"
        check: dict[str, Any] = {
            "HTTP": f"{scheme}://{host_port(host, port)}/",
            "Interval": self.check_interval,
        }
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
            aiohttp.ClientError, OSError, TimeoutError: The agent is unreachable
                (unless *keep_registered*).
        """
        registration = _Registration(self, self._payload(metrics_server), self._open_session())
        if self.keep_registered:
            registration.keep()
            return registration.close
        try:
            registered = await registration.register_once()
        except BaseException:
            await self._release_session()
            raise
        if not registered:
            await self._release_session()
            return None
        return registration.close


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
        self.ever_registered = False

    async def register_once(self) -> bool:
        async with self.session.put("/v1/agent/service/register", json=self.payload) as reply:
            if reply.ok:
                self.registered = self.ever_registered = True
                return True
            await _log_refusal(reply, "register", self.agent.agent_url, self.service_id)
            return False

    async def is_listed(self) -> bool:
        async with self.session.get("/v1/agent/services") as reply:
            reply.raise_for_status()
            services = await reply.json()
        return self.service_id in services

    def keep(self) -> None:
        self.keeper = asyncio.create_task(self._keep_registered())

    async def _keep_registered(self) -> None:
        delay = 0.5
        while True:
            try:
                if not self.registered or not await self.is_listed():
                    self.registered = False
                    if await self.register_once():
                        _log.info("Registered %r with Consul.", self.service_id)
                delay = 0.5
                await asyncio.sleep(5 if self.registered else 1)
            except Exception as error:  # noqa: BLE001, PERF203 -- keep trying, whatever happened
                self.registered = False
                _log.warning("Consul agent %s unreachable: %r", self.agent.agent_url, error)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 -- jitter
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        """Stop keeping the service registered, deregister it once, release the session."""
        try:
            if self.keeper is not None:
                self.keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.keeper
            if self.agent.deregister and self.ever_registered:
                path = f"/v1/agent/service/deregister/{quote(self.service_id, safe='')}"
                async with self.session.put(path) as reply:
                    if not reply.ok:
                        await _log_refusal(
                            reply, "deregister", self.agent.agent_url, self.service_id
                        )
        finally:
            await self.agent._release_session()  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]


async def _log_refusal(reply: aiohttp.ClientResponse, what: str, agent: str, service: str) -> None:
    _log.warning(
        "Consul agent %s refused to %s service %r: HTTP %s: %s",
        agent,
        what,
        service,
        reply.status,
        (await reply.text())[:1000],
    )
