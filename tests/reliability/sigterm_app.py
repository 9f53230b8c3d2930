"""A synchronous program with a threaded metrics server registered with discovery.

``python -m tests.reliability.sigterm_app filesd DIRECTORY`` or ``... consul
AGENT_URL``: announces its port as JSON, then sleeps until it is killed.
"""

from __future__ import annotations

import json
import sys
import time

from promloop.aio.sd import ConsulAgent, FileSD
from promloop.aio.web import start_http_server_in_thread


if __name__ == "__main__":
    kind, where = sys.argv[1:3]
    discovery = (
        FileSD(where) if kind == "filesd" else ConsulAgent(name="sigterm-app", agent_url=where)
    )
    server = start_http_server_in_thread(addr="127.0.0.1", service_discovery=discovery)
    print(json.dumps({"port": server.socket.port}), flush=True)  # noqa: T201
    while True:
        time.sleep(1)
