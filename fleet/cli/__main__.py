"""``python -m fleet.cli``: the ``fleet`` command."""

import sys

from fleet.cli.main import main

sys.exit(main())
