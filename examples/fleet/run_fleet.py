"""Start three workers, each registered in examples/fleet/targets/, until Ctrl-C.

Then run Prometheus with ``prometheus --config.file=examples/fleet/prometheus.yml``
from the repository's root: it discovers all three.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time


HERE = pathlib.Path(__file__).parent


def main() -> None:
    targets = HERE / "targets"
    targets.mkdir(exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    workers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), "--targets", str(targets), "--name", name]
        )
        for name in ("alpha", "beta", "gamma")
    ]
    try:
        while all(worker.poll() is None for worker in workers):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()


if __name__ == "__main__":
    main()
