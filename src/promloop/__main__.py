"""``python -m promloop``: promloop's command line (``python -m promloop fanin --help``)."""

from __future__ import annotations

import sys

from ._cli import main


sys.exit(main())
