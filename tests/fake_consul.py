"""A faithful fake Consul agent, for tests: an aiohttp app on 127.0.0.1.

It implements what promloop's ConsulAgent calls (the agent's service
endpoints, validating payloads as Consul does) and what a scraper's
``consul_sd_configs`` reads (``/v1/agent/self``, the catalog and health
endpoints, with blocking queries), so that a real client --
VictoriaMetrics -- can discover through it.  Modes: an ACL token required,
the agent down, 5xx replies, forgetting every service, a garbled service
list, and registrations whose reply never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading

from typing import Any

from aiohttp import web


_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
NODE = "fake-node"
DATACENTER = "dc1"


class FakeConsul:
    """A fake agent running in a thread of its own; start() and stop() may repeat."""

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.services: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.fail_status: int | None = None
        self.garble_next_service_list = False
        # "after-registering": the service is registered, but the reply does
        # not come; "before-registering": neither happens.  The request hangs
        # until the agent stops.
        self.hang_registrations: str | None = None
        self.delay = 0.0  # seconds every answer waits: a slow agent
        self.port: int | None = None
        self._index = 1
        self._changed: asyncio.Condition | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._reservation: socket.socket | None = None

    # --- control, from the test's thread --------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeConsul:
        """Listen (again, on the same port once it has one)."""
        if self._reservation is None:
            # A bound socket that never listens keeps the port while the agent
            # is down: connections are refused, and no other test's server
            # can take the port and stop the agent from coming back.
            self._reservation = socket.socket()
            self._reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._reservation.bind(("127.0.0.1", 0))
            self.port = self._reservation.getsockname()[1]
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._changed = asyncio.Condition()
            self._stopping = asyncio.Event()
            app = web.Application(middlewares=[self._slow])
            app.router.add_put("/v1/agent/service/register", self._register)
            app.router.add_put("/v1/agent/service/deregister/{id}", self._deregister)
            app.router.add_get("/v1/agent/services", self._agent_services)
            app.router.add_get("/v1/agent/self", self._agent_self)
            app.router.add_get("/v1/catalog/services", self._catalog_services)
            app.router.add_get("/v1/catalog/service/{name}", self._catalog_service)
            app.router.add_get("/v1/health/service/{name}", self._health_service)
            # Going down must be quick: open connections get 0.1 s, not aiohttp's 60.
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=0.1
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_port=True)
            await site.start()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            # Announced from inside run_forever(): a stop() that came sooner
            # would be spent on run_until_complete(), and this loop never end.
            self._loop.call_soon(started.set)
            self._loop.run_forever()
            self._stopping.set()  # type: ignore[union-attr] # hanging requests end
            self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            # Connections cut by the cleanup end in a later iteration: let them,
            # or they are destroyed pending (and asyncio logs it, in some later test).
            self._loop.run_until_complete(_finish_all())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-consul", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake Consul agent did not start")
        return self

    def stop(self) -> None:
        """Stop listening: the agent is down (its services are kept, as Consul keeps them)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if self._thread.is_alive():
                raise RuntimeError("the fake Consul agent did not stop")
            self._loop = self._thread = None

    def close(self) -> None:
        """Stop, and give the port back."""
        self.stop()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def forget_all(self) -> None:
        """Forget every service, as an agent restarted without its data does."""
        self.services.clear()
        self._bump()

    def registered(self, service_id: str) -> dict[str, Any] | None:
        return self.services.get(service_id)

    def calls(self, method: str, path: str) -> int:
        """Count the requests received for paths that start with *path*."""
        return sum(1 for m, p, _, _ in self.requests if m == method and p.startswith(path))

    def _bump(self) -> None:
        self._index += 1
        if self._loop is not None and self._changed is not None:
            asyncio.run_coroutine_threadsafe(self._notify(), self._loop)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # --- the HTTP API ---------------------------------------------------------

    @web.middleware
    async def _slow(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        response: web.StreamResponse = await handler(request)
        return response

    async def _hang(self) -> None:
        """Wait until the agent stops."""
        assert self._stopping is not None
        await self._stopping.wait()

    def _check_request(self, request: web.Request) -> web.Response | None:
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="fake Consul: simulated failure")
        if self.token is not None and request.headers.get("X-Consul-Token") != self.token:
            return web.Response(status=403, text="ACL not found")
        return None

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("PUT", request.path_qs, dict(request.headers), body))
        if self.hang_registrations == "before-registering":
            await self._hang()
            return web.Response(status=503, text="fake Consul: stopping")
        refusal = self._check_request(request)
        if refusal is not None:
            return refusal
        problem = _invalid_registration(body)
        if problem:
            return web.Response(status=400, text=f"Invalid service registration: {problem}")
        service_id = body.get("ID") or body["Name"]
        self.services[service_id] = body
        self._bump()
        if self.hang_registrations == "after-registering":
            await self._hang()
        return web.Response(status=200)

    async def _deregister(self, request: web.Request) -> web.Response:
        self.requests.append(("PUT", request.path_qs, dict(request.headers), None))
        refusal = self._check_request(request)
        if refusal is not None:
            return refusal
        service_id = request.match_info["id"]
        if service_id not in self.services:
            return web.Response(status=404, text=f'Unknown service ID "{service_id}"')
        del self.services[service_id]
        self._bump()
        return web.Response(status=200)

    async def _agent_services(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path_qs, dict(request.headers), None))
        refusal = self._check_request(request)
        if refusal is not None:
            return refusal
        if self.garble_next_service_list:
            # As a proxy in front of the agent might answer.
            self.garble_next_service_list = False
            return web.Response(text="<html>Bad Gateway", content_type="text/html")
        return web.json_response({sid: _agent_service(sid, s) for sid, s in self.services.items()})

    async def _agent_self(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "Config": {"Datacenter": DATACENTER, "NodeName": NODE, "NodeID": "0" * 36},
                "Member": {"Name": NODE, "Addr": "127.0.0.1", "Port": 8301, "Tags": {}},
                "Meta": {},
            }
        )

    async def _blocking(self, request: web.Request) -> None:
        """Hold a blocking query (?index=N&wait=...) until the index passes N."""
        index = int(request.query.get("index", "0"))
        wait = _seconds(request.query.get("wait", "5m"))
        assert self._changed is not None
        async with self._changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._index > index), min(wait, 10)
                )

    def _indexed(self, payload: Any) -> web.Response:
        return web.json_response(payload, headers={"X-Consul-Index": str(self._index)})

    async def _catalog_services(self, request: web.Request) -> web.Response:
        await self._blocking(request)
        names: dict[str, list[str]] = {}
        for service in self.services.values():
            names.setdefault(service["Name"], []).extend(service.get("Tags") or [])
        return self._indexed(names)

    def _matching(self, request: web.Request) -> list[tuple[str, dict[str, Any]]]:
        name = request.match_info["name"]
        tags = request.query.getall("tag", [])
        return [
            (sid, s)
            for sid, s in self.services.items()
            if s["Name"] == name and all(tag in (s.get("Tags") or []) for tag in tags)
        ]

    async def _catalog_service(self, request: web.Request) -> web.Response:
        await self._blocking(request)
        return self._indexed(
            [
                {
                    "ID": "0" * 36,
                    "Node": NODE,
                    "Address": "127.0.0.1",
                    "Datacenter": DATACENTER,
                    "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
                    "NodeMeta": {},
                    "ServiceID": sid,
                    "ServiceName": s["Name"],
                    "ServiceTags": s.get("Tags") or [],
                    "ServiceAddress": s.get("Address", ""),
                    "ServicePort": s.get("Port", 0),
                    "ServiceMeta": s.get("Meta") or {},
                }
                for sid, s in self._matching(request)
            ]
        )

    async def _health_service(self, request: web.Request) -> web.Response:
        await self._blocking(request)
        entries = [
            {
                "Node": {
                    "ID": "0" * 36,
                    "Node": NODE,
                    "Address": "127.0.0.1",
                    "Datacenter": DATACENTER,
                    "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
                    "Meta": {},
                },
                "Service": _agent_service(sid, s),
                "Checks": [
                    {
                        "Node": NODE,
                        "CheckID": f"service:{sid}",
                        "Name": f"Service '{s['Name']}' check",
                        "Status": "passing",
                        "ServiceID": sid,
                        "ServiceName": s["Name"],
                    }
                ],
            }
            for sid, s in self._matching(request)
        ]
        return self._indexed(entries)


async def _finish_all() -> None:
    """Cancel every other task of the running loop, and wait until each has ended."""
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)


def _agent_service(service_id: str, service: dict[str, Any]) -> dict[str, Any]:
    return {
        "ID": service_id,
        "Service": service["Name"],
        "Tags": service.get("Tags") or [],
        "Address": service.get("Address", ""),
        "Meta": service.get("Meta") or {},
        "Port": service.get("Port", 0),
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "Datacenter": DATACENTER,
    }


def _seconds(duration: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(number) * units[unit]
        for number, _, unit in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", duration)
    )


def _invalid_registration(body: Any) -> str | None:  # noqa: C901, PLR0911 -- one rule a line
    """Return what Consul would reject in a registration, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("Name"), str) or not body["Name"]:
        return "missing service name"
    if "ID" in body and not isinstance(body["ID"], str):
        return "ID must be a string"
    if not isinstance(body.get("Tags") or [], list) or not all(
        isinstance(tag, str) for tag in body.get("Tags") or []
    ):
        return "Tags must be a list of strings"
    port = body.get("Port", 0)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        return "Port must be an integer from 0 to 65535"
    meta = body.get("Meta") or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and _META_KEY.fullmatch(k) and isinstance(v, str)
        for k, v in meta.items()
    ):
        return "Meta keys must match [A-Za-z0-9_-]{1,128} and values be strings"
    check = body.get("Check")
    if check is not None:
        if not isinstance(check, dict):
            return "Check must be an object"
        if ("HTTP" in check or "TCP" in check) and not check.get("Interval"):
            return "Interval must be > 0 for Script, HTTP, or TCP checks"
        for field in ("Interval", "Timeout", "DeregisterCriticalServiceAfter"):
            if field in check and not _DURATION.fullmatch(str(check[field])):
                return f'time: invalid duration "{check[field]}" in Check.{field}'
    return None


def dump(fake: FakeConsul) -> str:
    """Describe what the fake holds, for a failing assertion."""
    return json.dumps(fake.services, indent=1)
