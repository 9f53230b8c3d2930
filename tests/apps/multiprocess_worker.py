"""A worker in prometheus_client's multiprocess mode: it records, then exits.

Run with PROMETHEUS_MULTIPROC_DIR set; the first argument is how many jobs
it does.
"""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import Counter, Histogram

from promloop import aio


JOBS = Counter("mp_jobs", "Jobs done, by all workers.")
JOB_TIME = Histogram("mp_job_seconds", "Time spent on jobs, by all workers.")


@aio.time(JOB_TIME)
async def job() -> None:
    JOBS.inc()
    await asyncio.sleep(0)


async def main(jobs: int) -> None:
    for _ in range(jobs):
        await job()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
