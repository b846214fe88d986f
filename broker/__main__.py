"""``python -m broker``: the mwl-broker command line."""

import sys

from broker.cli.commands import main

sys.exit(main())
