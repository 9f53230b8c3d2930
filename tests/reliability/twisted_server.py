"""A twisted.web Site whose root is MetricsResource, on a real reactor, for hostile clients.

``python -m tests.reliability.twisted_server [none | basic:USER:PASSWORD | bearer:TOKEN]``
announces its port as JSON on stdout, then serves every path with the
resource until its stdin closes (or LIFETIME seconds pass).  Everything
logged -- Twisted's events, with their tracebacks, and Python's logging at
every level -- goes to stderr, one ``LEVEL namespace: text`` line per event,
for the tests to search for tracebacks and credentials.
"""

from __future__ import annotations

import json
import logging
import sys
import threading

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogBeginner
from twisted.web.server import Site

from promloop import BasicAuth, BearerToken
from promloop.tx.web import MetricsResource

from .mounts import registry


LIFETIME = 600


def credentials(spec: str) -> BasicAuth | BearerToken | None:
    kind, _, rest = spec.partition(":")
    if kind == "basic":
        username, _, password = rest.partition(":")
        return BasicAuth(username, password)
    if kind == "bearer":
        return BearerToken(rest)
    return None


def to_stderr(event: dict) -> None:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    level = event.get("log_level")
    name = level.name.upper() if level is not None else "INFO"
    sys.stderr.write(f"{name} {event.get('log_namespace', '-')}: {text}\n")
    sys.stderr.flush()


def stop_when_stdin_closes() -> None:
    sys.stdin.read()
    reactor.callFromThread(reactor.stop)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    globalLogBeginner.beginLoggingTo([to_stderr], redirectStandardIO=False)
    resource = MetricsResource(registry(), auth=credentials(sys.argv[1]), reactor=reactor)
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    reactor.callLater(LIFETIME, reactor.stop)
    print(json.dumps({"port": port.getHost().port}), flush=True)  # noqa: T201 -- for the test
    reactor.run()
