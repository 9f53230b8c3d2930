"""A WSGI app for gunicorn's sync workers; see gunicorn.conf.py."""

from __future__ import annotations

from prometheus_client import Counter


REQUESTS = Counter("app_requests", "Requests handled.")


def app(environ, start_response):
    REQUESTS.inc()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello!\n"]
