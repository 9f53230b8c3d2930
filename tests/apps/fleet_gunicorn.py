"""gunicorn settings for the fleet end-to-end tests: each sync worker serves its metrics."""

from __future__ import annotations


def post_fork(server: object, worker: object) -> None:
    # Imported in the worker, after fork(): its metrics are its own.
    import fleet_sync

    fleet_sync.start_metrics()
