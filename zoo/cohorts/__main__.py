"""``python -m zoo.cohorts``: see :mod:`zoo.cohorts.cli`."""

import sys

from zoo.cohorts.cli import main

sys.exit(main())
