"""``python -m ragzip`` is the ``ragzip`` command."""

from __future__ import annotations

import sys

from ragzip.cli import main

sys.exit(main())
