"""``python -m zoo.export``: see :mod:`zoo.export.cli`."""

import sys

from zoo.export.cli import main

sys.exit(main())
