"""promloop.aio.push against a real Pushgateway (Debian's prometheus-pushgateway)."""

from __future__ import annotations

import asyncio

import pytest


pytest.importorskip("aiohttp", reason="the no-aiohttp tox environments test the ImportError")

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from promloop import BasicAuth, BearerToken
from promloop.aio.push import (
    PushgatewayError,
    delete_from_gateway,
    group_path,
    push_to_gateway,
    pushadd_to_gateway,
)

from .peers import http_get, pushgateway


run = asyncio.run


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with pushgateway(tmp_path_factory.mktemp("pushgateway")) as url:
        yield url


def pushed(gateway, name):
    """Return the samples called *name* that the gateway serves, as {labels: value}."""
    _, _, body = http_get(f"{gateway}/metrics")
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == name
    }


def batch_registry(processed=3.0):
    registry = CollectorRegistry()
    Gauge("batch_processed", "Rows processed.", registry=registry).set(processed)
    return registry


class TestPushToGateway:
    def test_arbitrary_grouping_values_arrive_unchanged(self, gateway):
        """Spaces, +, %, non-ASCII and / in grouping-key values reach the gateway unchanged."""
        value = "a b+c%d/é"
        run(push_to_gateway(gateway, "nightly", batch_registry(), {"dots": ".."}))
        dots = pushed(gateway, "batch_processed")
        run(delete_from_gateway(gateway, "nightly", {"dots": ".."}))
        assert {(("dots", ".."), ("instance", ""), ("job", "nightly")): 3.0} == dots

        run(push_to_gateway(gateway, "nightly", batch_registry(), {"instance": value}))

        assert {(("instance", value), ("job", "nightly")): 3.0} == pushed(
            gateway, "batch_processed"
        )
        run(delete_from_gateway(gateway, "nightly", {"instance": value}))

    def test_push_replaces_pushadd_adds(self, gateway):
        """PUT replaces the whole group; POST replaces only the metrics it brings."""
        group = {"instance": "replace-test"}
        first = batch_registry()
        Counter("batch_runs", "Runs.", registry=first).inc()
        run(push_to_gateway(gateway, "replacing", first, group))

        run(pushadd_to_gateway(gateway, "replacing", batch_registry(5), group))
        after_add = pushed(gateway, "batch_runs_total")
        run(push_to_gateway(gateway, "replacing", batch_registry(7), group))
        after_push = pushed(gateway, "batch_runs_total")
        processed = pushed(gateway, "batch_processed")

        key = (("instance", "replace-test"), ("job", "replacing"))
        assert {key: 1.0} == {k: v for k, v in after_add.items() if k == key}
        assert key not in after_push
        assert 7.0 == processed[key]
        run(delete_from_gateway(gateway, "replacing", group))

    def test_delete(self, gateway):
        """delete_from_gateway removes the group."""
        run(push_to_gateway(gateway, "deleting", batch_registry(), {"instance": "x"}))
        run(delete_from_gateway(gateway, "deleting", {"instance": "x"}))

        assert not [k for k in pushed(gateway, "batch_processed") if ("job", "deleting") in k]

    def test_host_port_and_job_with_slash(self, gateway):
        """A gateway given as host:port works, and a job name may hold a slash."""
        host_port = gateway.removeprefix("http://")

        run(push_to_gateway(host_port, "team/nightly", batch_registry(1)))

        assert {(("instance", ""), ("job", "team/nightly")): 1.0} == {
            k: v
            for k, v in pushed(gateway, "batch_processed").items()
            if ("job", "team/nightly") in k
        }
        run(delete_from_gateway(host_port, "team/nightly"))

    def test_created(self, gateway):
        """created=False pushes no _created series; the default pushes them."""
        registry = batch_registry()
        Counter("batch_rows", "Rows.", registry=registry).inc(2)

        run(push_to_gateway(gateway, "created", registry, {"instance": "without"}, created=False))
        run(pushadd_to_gateway(gateway, "created", registry, {"instance": "with"}))
        created = pushed(gateway, "batch_rows_created")
        run(delete_from_gateway(gateway, "created", {"instance": "without"}))
        run(delete_from_gateway(gateway, "created", {"instance": "with"}))

        assert [(("instance", "with"), ("job", "created"))] == [
            key for key in created if ("job", "created") in key
        ]

    def test_error_quotes_the_gateway(self, gateway):
        """A refused push raises an error quoting the gateway's answer."""
        with pytest.raises(PushgatewayError, match=r"HTTP 400: .*") as info:
            run(push_to_gateway(gateway, "bad", batch_registry(), {"0not-a-label": "x"}))

        assert 400 == info.value.status
        assert info.value.body


class TestClientBehaviour:
    def test_auth_header_and_timeout(self):
        """auth= sends the credentials; timeout= bounds the whole request."""
        seen = []

        async def main():
            async def record(request):
                seen.append(request.headers.get("Authorization"))
                if request.path.endswith("/job/slow"):
                    await asyncio.sleep(5)
                return web.Response()

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", record)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            try:
                await push_to_gateway(url, "j", batch_registry(), auth=BasicAuth("u", "p"))
                await delete_from_gateway(url, "j", auth=BearerToken("t0k"))
                with pytest.raises(
                    TimeoutError,
                    match=r"/job/slow: the Pushgateway did not answer within timeout=0.2 s",
                ):
                    await push_to_gateway(url, "slow", batch_registry(), timeout=0.2)
            finally:
                await runner.cleanup()

        run(main())

        assert ["Basic dTpw", "Bearer t0k"] == seen[:2]

    def test_password_in_the_url_is_not_in_the_error(self):
        """A gateway URL's user:password authenticates; the error shows it without the password."""
        seen = []

        async def main():
            async def refuse(request):
                seen.append(request.headers.get("Authorization"))
                return web.Response(status=403, text="forbidden")

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", refuse)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            try:
                with pytest.raises(PushgatewayError) as info:
                    await push_to_gateway(
                        f"http://u:s3cret@127.0.0.1:{port}", "j", batch_registry()
                    )
            finally:
                await runner.cleanup()
            return info.value, port

        error, port = run(main())

        assert ["Basic dTpzM2NyZXQ="] == seen
        assert f"PUT http://u:***@127.0.0.1:{port}/metrics/job/j failed with HTTP 403" in str(error)
        assert "s3cret" not in f"{error} {error!r}"

    @pytest.mark.parametrize(
        ("job", "key", "path"),
        [
            ("j", None, "/metrics/job/j"),
            ("j", {"a": ""}, "/metrics/job/j/a@base64/="),
            ("j", {"a": "x y"}, "/metrics/job/j/a/x%20y"),
            ("a/b", None, "/metrics/job@base64/YS9i"),
            ("j", {"k": "."}, "/metrics/job/j/k@base64/Lg=="),
            ("..", {"k": ".."}, "/metrics/job@base64/Li4=/k@base64/Li4="),
        ],
    )
    def test_paths(self, job, key, path):
        """Grouping keys are escaped as the Pushgateway requires."""
        assert path == group_path(job, key)

    def test_passwords_in_urls_never_shown(self):
        """A password written into the gateway's URL appears in no error message."""
        with pytest.raises(ValueError, match=r"ftp://user:\*\*\*@gateway") as info:
            run(push_to_gateway("ftp://user:s3cret@gateway", "j", batch_registry()))

        assert "s3cret" not in str(info.value)

    def test_bad_arguments(self):
        """An empty job or a non-HTTP gateway fails at once."""
        with pytest.raises(ValueError, match="job must not be empty"):
            group_path("", None)
        with pytest.raises(ValueError, match="gateway must be host:port or an http"):
            run(push_to_gateway("ftp://gateway", "j", batch_registry()))
