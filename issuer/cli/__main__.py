"""``python -m issuer.cli``."""

from __future__ import annotations

import sys

from issuer.cli import main

sys.exit(main())
